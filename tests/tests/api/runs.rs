//! Training runs: the server starts the real `pairwise-train` on a snapshot of the votes,
//! streams its metrics into the database and records the outcome with its lineage; one
//! run per campaign; cancel; runs whose server stopped (no heartbeat) become `interrupted`;
//! and a threshold schedule fires by itself once enough pairs have new votes.

use std::path::PathBuf;
use std::time::Duration;

use pairwise_server::accounts::Role;
use pairwise_tests::{
    ApiClient, Backend, TestServer, both_backends, create_campaign, import, runs_once_one_succeeded, trainer_binary,
    vote_all, with_threshold_schedule,
};
use pairwise_trainer::synthetic::{rule_pairs, tiny_config, write_tiny_model};
use serde_json::{Value, json};

/// A campaign of rule pairs (chosen praises, rejected disparages), each voted once by a
/// rater who follows the rule. Returns the campaign id and the rater's user id.
async fn voted_campaign(server: &TestServer, admin: &ApiClient, pairs: usize) -> (i64, i64) {
    let campaign = create_campaign(admin, json!({"name": "runs", "status": "active", "overlap": 1})).await;
    let lines: Vec<Value> = rule_pairs(pairs, 9)
        .iter()
        .map(|line| {
            let pair: Value = serde_json::from_str(line).unwrap();
            json!({"prompt": pair["prompt"], "response_a": pair["chosen"], "response_b": pair["rejected"],
                   "model_a": "good", "model_b": "bad"})
        })
        .collect();
    import(admin, campaign, &lines).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    let praise = ["great", "lovely", "useful", "fun", "kind", "bright"];
    vote_all(&rater, campaign, |pair| {
        if praise.iter().any(|w| pair["left"].as_str().unwrap().contains(w)) { "left" } else { "right" }
    })
    .await;
    (campaign, rater.user_id)
}

/// A server that runs the real trainer into `dir/runs`, a voted campaign of `pairs` rule
/// pairs (see [`voted_campaign`]) and a tiny model folder in `dir/model`.
struct RunsSetup {
    server: TestServer,
    admin: ApiClient,
    campaign: i64,
    rater: i64,
    model: PathBuf,
}

async fn runs_setup(backend: Backend, dir: &std::path::Path, pairs: usize) -> RunsSetup {
    let runs_dir = dir.join("runs");
    let server = TestServer::start_with(backend, |c| {
        c.trainer_command = trainer_binary();
        c.runs_dir = runs_dir.display().to_string();
        c.run_heartbeat_seconds = 1;
    })
    .await;
    let admin = server.client_for("admin", Role::Admin).await;
    let (campaign, rater) = voted_campaign(&server, &admin, pairs).await;
    let model = dir.join("model");
    write_tiny_model(&model, &tiny_config(), 2).unwrap();
    RunsSetup { server, admin, campaign, rater, model }
}

async fn wait_until_finished(admin: &ApiClient, run: i64) -> Value {
    for _ in 0..600 {
        let reply = admin.get(&format!("/api/v1/runs/{run}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.json["status"] != "running" {
            return reply.json;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} did not finish in 60 s");
}

async fn runs_train_and_keep_their_lineage(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let RunsSetup { server, admin, campaign, rater, model } = runs_setup(backend, dir.path(), 12).await;
    let small = ["--max-steps", "3", "--batch-size", "4", "--max-length", "48", "--max-prompt-length", "24"];
    let spec = json!({"method": "dpo", "model": model.display().to_string(), "args": small});

    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &spec).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let run = wait_until_finished(&admin, reply.json["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["data_rows"], 12, "every voted pair is in the snapshot");
    assert_eq!(run["data_cursor"], 12);
    assert_eq!(run["raters"], json!([rater]));
    assert_eq!(run["guidelines_version"], 1);
    assert_eq!(run["data_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(run["artifact_sha256"].as_str().unwrap().len(), 64, "the adapter's checksum");
    let metrics = run["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 3, "one line per step streamed into the database: {run}");
    assert!(metrics.iter().all(|m| m["loss"].is_number() && m["rewards/accuracies"].is_number()));
    let out = PathBuf::from(run["output_dir"].as_str().unwrap()).join("out");
    assert!(out.join("adapter_model.safetensors").exists());
    let run_id = run["id"].as_i64().unwrap();
    let config = admin.get(&format!("/api/v1/runs/{run_id}/files/out~adapter_config.json")).await;
    assert_eq!(config.status, 200);
    assert_eq!(serde_json::from_str::<Value>(&config.text).unwrap()["peft_type"], "LORA");
    let data = admin.get(&format!("/api/v1/runs/{run_id}/files/data.jsonl")).await;
    assert_eq!(data.text.lines().count(), 12, "the snapshot it trained on");
    assert_eq!(admin.get(&format!("/api/v1/runs/{run_id}/files/..~..~secret")).await.status, 404);

    // A long run: a second one for the campaign is refused until it is cancelled.
    let long = json!({"method": "reward", "model": model.display().to_string(),
                      "args": ["--max-steps", "100000", "--batch-size", "4", "--max-length", "48"]});
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &long).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let long_id = reply.json["id"].as_i64().unwrap();
    let second = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &long).await;
    assert_eq!(second.status, 409, "{}", second.text);
    assert_eq!(second.json["error"], "run_in_progress");
    let cancelled = admin.post(&format!("/api/v1/runs/{long_id}/cancel"), &json!({})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled");

    // A trainer that fails is recorded with its last words.
    let bad = json!({"method": "dpo", "model": dir.path().join("no-such-model").display().to_string()});
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &bad).await;
    let failed = wait_until_finished(&admin, reply.json["id"].as_i64().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["exit_reason"].as_str().unwrap().contains("no-such-model"), "{failed}");

    // Bad requests and annotators are refused.
    let reply =
        admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &json!({"method": "ppo", "model": "m"})).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let annotator = server.client_for("someone", Role::Annotator).await;
    assert_eq!(annotator.get(&format!("/api/v1/campaigns/{campaign}/runs")).await.status, 403);

    // A run whose server stopped mid-run (no heartbeat since): the live server's heartbeat
    // loop marks it interrupted.
    sqlx::query(
        "INSERT INTO training_runs (campaign_id, method, config, trigger, status, guidelines_version, output_dir, started_at) \
         VALUES ($1, 'dpo', '{}', 'manual', 'running', 1, '', 0)",
    )
    .bind(campaign)
    .execute(&server.sql)
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let list = admin.get(&format!("/api/v1/campaigns/{campaign}/runs")).await.json;
        statuses = list.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect();
        if statuses[0] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, ["interrupted", "failed", "cancelled", "succeeded"]);
    server.stop().await;
}
both_backends!(runs_train_and_keep_their_lineage);

async fn threshold_schedule_starts_a_run(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(backend, with_threshold_schedule(dir.path())).await;
    let admin = server.client_for("admin", Role::Admin).await;
    // Nothing runs before the campaign and its votes exist.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_runs").fetch_one(&server.sql).await.unwrap();
    assert_eq!(runs, 0);
    let (campaign, _) = voted_campaign(&server, &admin, 8).await;
    assert_eq!(campaign, 1);
    let runs = runs_once_one_succeeded(&admin, 1).await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "one run for the threshold, not one per check: {runs:?}");
    assert_eq!(runs[0]["trigger"], "threshold");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    // No new votes since: the schedule stays quiet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(admin.get("/api/v1/campaigns/1/runs").await.json.as_array().unwrap().len(), 1);
    server.stop().await;
}
both_backends!(threshold_schedule_starts_a_run);

/// An RLHF run with the hand-off: a reward model, the policy optimised against it (both
/// phases' metrics streamed, tagged with their phase), then the new adapter's responses —
/// and the base model's, for a head-to-head — imported into a new active campaign that
/// links back to the run.
async fn rlhf_run_hands_off_to_the_next_round(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let RunsSetup { server, admin, campaign, model, .. } = runs_setup(backend, dir.path(), 8).await;
    let spec = json!({
        "method": "rlhf",
        "model": model.display().to_string(),
        "reward_args": ["--max-steps", "2", "--batch-size", "4", "--max-length", "48"],
        "args": ["--steps", "2", "--prompts-per-step", "2", "--samples", "2", "--max-new-tokens", "6"],
        "next_round": {"responses": 2, "baseline_responses": 1, "args": ["--max-new-tokens", "8", "--temperature", "1.3"]},
    });
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &spec).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let run = wait_until_finished(&admin, reply.json["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["phase"], "import", "the last phase was the hand-off");
    let phases: Vec<&str> = run["metrics"].as_array().unwrap().iter().map(|m| m["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["reward", "reward", "rlhf", "rlhf"], "{run}");
    let rlhf = &run["metrics"][3];
    for key in ["reward", "kl", "entropy", "response_length", "loss"] {
        assert!(rlhf[key].is_number(), "{key} in {rlhf}");
    }
    let files: Vec<&str> = run["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for file in ["prompts.jsonl", "reward/reward_head.safetensors", "out/adapter_model.safetensors", "next_round.jsonl"]
    {
        assert!(files.contains(&file), "{file} in {files:?}");
    }

    let next = run["next_campaign_id"].as_i64().expect("a next round");
    let round = admin.get(&format!("/api/v1/campaigns/{next}")).await.json;
    assert_eq!(round["name"], "runs · round 2");
    assert_eq!(round["status"], "active");
    assert_eq!(round["source_run_id"], run["id"]);
    assert!(round["pairs"].as_i64().unwrap() >= 1, "{round}");
    let id = run["id"].as_i64().unwrap();
    let generated = admin.get(&format!("/api/v1/runs/{id}/files/next_round.jsonl")).await;
    let checkpoints: std::collections::BTreeSet<String> = pairwise_tests::jsonl(&generated.text)
        .iter()
        .flat_map(|line| line["responses"].as_array().unwrap().clone())
        .map(|r| r["checkpoint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(checkpoints, [format!("run-{id}"), "base".to_string()].into(), "the new adapter and the base model");

    // A hand-off that fails (here: a flag generate does not know) fails the run with the
    // phase's error; the adapter it trained is still recorded, and no campaign is made.
    let campaigns_before = admin.get("/api/v1/campaigns").await.json.as_array().unwrap().len();
    let broken = json!({
        "method": "dpo",
        "model": model.display().to_string(),
        "args": ["--max-steps", "1", "--batch-size", "4", "--max-length", "48"],
        "next_round": {"args": ["--no-such-flag"]},
    });
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &broken).await;
    let failed = wait_until_finished(&admin, reply.json["id"].as_i64().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["phase"], "generate");
    assert!(failed["exit_reason"].as_str().unwrap().contains("--no-such-flag"), "{failed}");
    assert_eq!(failed["artifact_sha256"].as_str().unwrap().len(), 64, "the adapter was trained");
    assert!(failed["next_campaign_id"].is_null());
    assert_eq!(admin.get("/api/v1/campaigns").await.json.as_array().unwrap().len(), campaigns_before);

    // A reward run has no policy to hand off; the spec is refused up front.
    let bad = json!({"method": "reward", "model": "m", "next_round": {}});
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &bad).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.json["message"].as_str().unwrap().contains("next_round"), "{}", reply.text);
    server.stop().await;
}
both_backends!(rlhf_run_hands_off_to_the_next_round);
