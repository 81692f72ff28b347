//! The whole loop on a tiny self-made policy, with the real server, database and trainer
//! binary: the policy's responses are pushed into a campaign (`pairwise-train generate
//! --to`), a simulated panel votes through the HTTP API by a hidden rule (two of its five
//! raters are noisy), the threshold schedules fire by themselves (a reward model and a DPO
//! run with the hand-off), the DPO adapter's responses appear in the next round next to the
//! old policy's, and there the panel prefers the new policy.

use std::path::Path;
use std::time::Duration;

use pairwise_api::runs::{Method, NextRound, RunSpec};
use pairwise_server::accounts::Role;
use pairwise_server::runs::schedule::Schedule;
use pairwise_tests::{ApiClient, Backend, TestServer, both_backends, trainer_binary};
use pairwise_trainer::model::config::ModelConfig;
use pairwise_trainer::synthetic::{tiny_config, tiny_qwen3_config, write_tiny_policy};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TOPICS: [&str; 16] = [
    "cats", "rain", "music", "tea", "trains", "books", "maps", "gardens", "rivers", "bread", "chess", "lamps", "boats",
    "clocks", "stars", "bikes",
];
const GOOD: [&str; 6] = ["great", "lovely", "useful", "fun", "kind", "bright"];
const BAD: [&str; 6] = ["awful", "boring", "useless", "dull", "rude", "broken"];

/// The panel's hidden rule: praising words count for a response, disparaging ones against.
fn praise(text: &str) -> i64 {
    text.split_whitespace().map(|w| i64::from(GOOD.contains(&w)) - i64::from(BAD.contains(&w))).sum()
}

/// A rater's choice on a served pair; a noisy rater picks at random a quarter of the time.
fn choose(pair: &Value, noisy: bool, rng: &mut StdRng) -> &'static str {
    if noisy && rng.random_bool(0.25) {
        return ["left", "right", "tie"][rng.random_range(0..3)];
    }
    let (left, right) = (praise(pair["left"].as_str().unwrap()), praise(pair["right"].as_str().unwrap()));
    match left.cmp(&right) {
        std::cmp::Ordering::Greater => "left",
        std::cmp::Ordering::Less => "right",
        std::cmp::Ordering::Equal => "tie",
    }
}

/// The panel votes in turns (one pair each per turn) until the campaign serves none of them
/// anything more. Returns the number of votes cast.
async fn panel_votes(panel: &[ApiClient], campaign: i64, rng: &mut StdRng) -> usize {
    let mut votes = 0;
    loop {
        let mut voted = false;
        for (i, rater) in panel.iter().enumerate() {
            let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
            if next["status"] != "assigned" {
                continue;
            }
            let pair = &next["pair"];
            let body = json!({"assignment_id": pair["assignment_id"], "choice": choose(pair, i >= 3, rng),
                              "time_ms": 3000, "client_key": format!("{}-{}", rater.user_id, pair["assignment_id"])});
            let reply = rater.post("/api/v1/votes", &body).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            votes += 1;
            voted = true;
        }
        if !voted {
            return votes;
        }
    }
}

/// Waits (up to four minutes: two trainer runs in a debug build) until `done` holds for
/// the campaign's runs, and returns them.
async fn wait_for_runs(admin: &ApiClient, campaign: i64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..2400 {
        let runs = admin.get(&format!("/api/v1/campaigns/{campaign}/runs")).await.json;
        let runs = runs.as_array().unwrap().clone();
        if done(&runs) {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the scheduled runs did not finish in time");
}

fn schedules(model: &Path, threshold: i64) -> Vec<Schedule> {
    let model = model.display().to_string();
    let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let reward = RunSpec {
        method: Method::Reward,
        model: model.clone(),
        args: strings(&[
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--learning-rate",
            "3e-3",
            "--eval-fraction",
            "0.2",
            "--lora-targets",
            "q,k,v,o,gate,up,down",
        ]),
        ..RunSpec::default()
    };
    let dpo = RunSpec {
        method: Method::Dpo,
        model,
        args: strings(&[
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--learning-rate",
            "5e-4",
            "--lora-targets",
            "q,k,v,o,gate,up,down",
        ]),
        next_round: Some(NextRound {
            responses: 2,
            baseline_responses: 2,
            args: strings(&["--max-new-tokens", "8", "--temperature", "1.0"]),
        }),
        ..RunSpec::default()
    };
    [reward, dpo]
        .into_iter()
        .map(|spec| Schedule { campaign: 1, spec, daily_at: None, min_new_pairs: Some(threshold) })
        .collect()
}

async fn the_whole_loop_improves_the_policy(backend: Backend) {
    whole_loop(backend, &tiny_config()).await;
}
both_backends!(the_whole_loop_improves_the_policy);

/// The same loop on a Qwen3-shaped policy (q/k norms, explicit head_dim, a sliding layer):
/// generation, both training runs and the hand-off work on the new families too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_loop_improves_a_qwen3_policy() {
    whole_loop(Backend::Sqlite, &tiny_qwen3_config()).await;
}

async fn whole_loop(backend: Backend, config: &ModelConfig) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("policy");
    write_tiny_policy(&model, config, 7).unwrap();
    let prompts: String =
        TOPICS.iter().map(|t| format!("{}\n", json!({"prompt": format!("tell me about {t}")}))).collect();
    std::fs::write(dir.path().join("prompts.jsonl"), prompts).unwrap();
    let runs_dir = dir.path().join("runs");
    // Round 1: 16 prompts × 4 responses = up to 96 pairs; the schedules fire once 60 of them
    // have all their votes.
    let threshold = 60;
    let server = TestServer::start_with(backend, |c| {
        c.trainer_command = trainer_binary();
        c.runs_dir = runs_dir.display().to_string();
        c.schedule_check_seconds = 1;
        c.schedules = schedules(&model, threshold);
    })
    .await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = pairwise_tests::create_campaign(
        &admin,
        json!({"name": "praise", "status": "active", "overlap": 3, "guidelines": "Prefer the kinder answer."}),
    )
    .await;
    assert_eq!(campaign, 1);

    // The policy's own responses go straight into the campaign through the API.
    let generate = std::process::Command::new(trainer_binary())
        .args(["generate", "--model"])
        .arg(&model)
        .arg("--prompts")
        .arg(dir.path().join("prompts.jsonl"))
        .args(["--num-responses", "4", "--max-new-tokens", "8", "--temperature", "1.0", "--seed", "1", "--to"])
        .arg(format!("{}/api/v1/campaigns/{campaign}", server.base))
        .args(["--token", admin.token.as_deref().unwrap()])
        .output()
        .unwrap();
    assert!(generate.status.success(), "{}", String::from_utf8_lossy(&generate.stderr));
    let round1 = admin.get(&format!("/api/v1/campaigns/{campaign}")).await.json;
    let pairs = round1["pairs"].as_i64().unwrap();
    assert!(pairs >= threshold, "enough distinct responses to pair: {round1}");

    let mut rng = StdRng::seed_from_u64(11);
    let mut panel = Vec::new();
    for name in ["ana", "ben", "cai", "dev", "eli"] {
        panel.push(server.client_for(name, Role::Annotator).await);
    }
    let votes = panel_votes(&panel, campaign, &mut rng).await;
    assert_eq!(votes as i64, pairs * 3, "every pair got its overlap of votes");

    // Nobody starts anything: the threshold fires the reward run, then the DPO run.
    let runs =
        wait_for_runs(&admin, campaign, |runs| runs.len() == 2 && runs.iter().all(|r| r["status"] != "running")).await;
    let (dpo, reward) = (&runs[0], &runs[1]);
    for run in [dpo, reward] {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["trigger"], "threshold");
        // The snapshot is taken when the run starts (votes may still be coming in): pairs
        // with a majority (ties left out), from all five raters by then.
        let rows = run["data_rows"].as_i64().unwrap();
        assert!(rows >= threshold / 2 && rows <= pairs, "{run}");
        assert_eq!(run["raters"].as_array().unwrap().len(), 5, "{run}");
    }
    assert_eq!((reward["method"].as_str(), dpo["method"].as_str()), (Some("reward"), Some("dpo")));
    let reward_detail = admin.get(&format!("/api/v1/runs/{}", reward["id"])).await.json;
    let reward_metrics = reward_detail["metrics"].as_array().unwrap();
    // The reward model learned the panel's rule: on its last training batches and on the
    // held-out fifth of the pairs.
    let train: Vec<f64> = reward_metrics.iter().filter_map(|m| m["accuracy"].as_f64()).collect();
    let recent = train[train.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(recent > 0.65, "training accuracy of the last batches: {recent:.2}");
    let held_out = reward_metrics.iter().rev().find_map(|m| m["eval_accuracy"].as_f64()).expect("eval accuracy");
    assert!(held_out > 0.5, "held-out accuracy: {held_out:.2}");
    let dpo_detail = admin.get(&format!("/api/v1/runs/{}", dpo["id"])).await.json;
    let dpo_metrics = dpo_detail["metrics"].as_array().unwrap();
    assert!(dpo_metrics.iter().all(|m| m["phase"] == "dpo" && m["loss"].is_number()));
    assert!(dpo_metrics.iter().any(|m| m["rewards/accuracies"].is_number() && m["rewards/margins"].is_number()));

    // The hand-off: a new round, generated by the DPO adapter next to the old policy.
    let next = dpo["next_campaign_id"].as_i64().expect("the DPO run made the next round");
    let round2 = admin.get(&format!("/api/v1/campaigns/{next}")).await.json;
    assert_eq!(round2["source_run_id"], dpo["id"]);
    assert_eq!(round2["status"], "active");
    assert_eq!(round2["guidelines"], "Prefer the kinder answer.");
    panel_votes(&panel, next, &mut rng).await;
    let board = admin.get(&format!("/api/v1/campaigns/{next}/leaderboard")).await.json;
    let score = |key: &str| {
        board["models"].as_array().unwrap().iter().find(|m| m["model"] == key).cloned().unwrap_or_else(|| {
            panic!("{key} on the leaderboard: {board}");
        })
    };
    let new = score(&format!("policy@run-{}", dpo["id"]));
    let old = score("policy@base");
    let (wins, losses) = (new["wins"].as_f64().unwrap(), new["losses"].as_f64().unwrap());
    assert!(wins > 1.3 * losses, "the new policy wins more often than the old one: {board}");
    assert!(new["score"].as_f64().unwrap() > old["score"].as_f64().unwrap(), "{board}");
    server.stop().await;
}

/// The ranking sibling of the loop: a ranking campaign of four responses per prompt, a
/// panel of three (one noisy) ranks them through the HTTP API by the same hidden rule, and a
/// reward run on the campaign trains on the whole rankings (the server picks the `ranking`
/// export and `--listwise` itself); on held-out rankings the reward model orders responses
/// as the panel does. Then listwise DPO hands off to a next round that is a ranking campaign.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rankings_from_a_panel_train_listwise_models_and_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("policy");
    write_tiny_policy(&model, &tiny_config(), 7).unwrap();
    let server = TestServer::start_with(Backend::Sqlite, pairwise_tests::with_trainer(dir.path())).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = pairwise_tests::create_campaign(
        &admin,
        json!({"name": "praise ranked", "kind": "ranking", "status": "active", "overlap": 3}),
    )
    .await;

    // 80 prompts, each with four answers of different praise (+2, +1, −1, −2), shuffled.
    let mut rng = StdRng::seed_from_u64(5);
    let mut prompts = std::collections::BTreeSet::new();
    while prompts.len() < 80 {
        let (a, b) = (TOPICS[rng.random_range(0..16)], TOPICS[rng.random_range(0..16)]);
        prompts.insert(format!("tell me about {a} {b}"));
    }
    let mut lines = Vec::new();
    for prompt in &prompts {
        let topic = prompt.split(' ').nth(3).unwrap();
        let mut grades = [(2, 0), (1, 0), (0, 1), (0, 2)];
        grades.shuffle(&mut rng);
        let responses: Vec<Value> = grades
            .iter()
            .map(|&(good, bad)| {
                let mut words: Vec<&str> = GOOD.choose_multiple(&mut rng, good).copied().collect();
                words.extend(BAD.choose_multiple(&mut rng, bad).copied());
                json!({"text": format!("{topic} is {} .", words.join(" ")), "model": format!("praise{}", good as i64 - bad as i64)})
            })
            .collect();
        lines.push(json!({"prompt": prompt, "responses": responses}));
    }
    pairwise_tests::import(&admin, campaign, &lines).await;

    let mut panel = Vec::new();
    for name in ["ana", "ben", "cai"] {
        panel.push(server.client_for(name, Role::Annotator).await);
    }
    let mut votes = 0;
    for (i, rater) in panel.iter().enumerate() {
        loop {
            let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
            if next["status"] != "assigned" {
                break;
            }
            let task = &next["pair"];
            let seen: Vec<i64> =
                task["responses"].as_array().unwrap().iter().map(|r| praise(r.as_str().unwrap())).collect();
            let mut ranks: Vec<i64> =
                seen.iter().map(|&p| 1 + seen.iter().filter(|&&other| other > p).count() as i64).collect();
            // The noisy rater swaps two neighbouring ranks a third of the time.
            if i == 2 && rng.random_bool(1.0 / 3.0) {
                let rank = rng.random_range(1..4);
                for r in &mut ranks {
                    *r = if *r == rank {
                        rank + 1
                    } else if *r == rank + 1 {
                        rank
                    } else {
                        *r
                    };
                }
            }
            let body = json!({"assignment_id": task["assignment_id"], "ranks": ranks, "time_ms": 5000,
                              "client_key": format!("{}-{}", rater.user_id, task["assignment_id"])});
            let reply = rater.post("/api/v1/votes", &body).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            votes += 1;
        }
    }
    assert_eq!(votes, 80 * 3, "every task got its overlap of rankings");
    let board = admin.get(&format!("/api/v1/campaigns/{campaign}/leaderboard?bootstrap=50")).await.json;
    let order: Vec<&str> = board["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(order, ["praise2", "praise1", "praise-1", "praise-2"], "{board}");

    let args = [
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-2",
        "--eval-fraction",
        "0.25",
        "--max-length",
        "48",
        "--max-prompt-length",
        "24",
        "--lora-targets",
        "q,k,v,o,gate,up,down",
    ];
    let spec = json!({"method": "reward", "model": model.display().to_string(), "args": args});
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &spec).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let runs = wait_for_runs(&admin, campaign, |runs| runs.iter().all(|r| r["status"] != "running")).await;
    let run = admin.get(&format!("/api/v1/runs/{}", runs[0]["id"])).await.json;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["data_rows"], 80, "one aggregated ranking per task: {run}");
    assert!(run["config"]["args"].as_array().unwrap().contains(&json!("--listwise")), "{run}");
    assert_eq!(run["config"]["export"]["format"], "ranking");
    let metrics = run["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["top1_accuracy"].is_number()), "listwise metrics: {run}");
    let held_out = metrics.iter().rev().find_map(|m| m["eval_accuracy"].as_f64()).expect("eval accuracy");
    println!("listwise reward model from the panel: held-out pairwise ranking accuracy {held_out:.3}");
    assert!(held_out > 0.75, "held-out ranking accuracy: {held_out:.2}");

    // Listwise DPO with a next round: the new policy's answers are ranked too (at most six).
    let runs_url = format!("/api/v1/campaigns/{campaign}/runs");
    let dpo = |responses: i64, baseline: i64| {
        json!({"method": "dpo", "model": model.display().to_string(),
               "args": ["--max-steps", "2", "--batch-size", "4", "--max-length", "48", "--max-prompt-length", "24"],
               "next_round": {"responses": responses, "baseline_responses": baseline,
                              "args": ["--max-new-tokens", "8", "--temperature", "1.3"]}})
    };
    let refused = admin.post(&runs_url, &dpo(4, 3)).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("ranks at most 6 responses per prompt"), "{}", refused.text);
    assert_eq!(admin.post(&runs_url, &dpo(2, 1)).await.status, 201);
    let runs = wait_for_runs(&admin, campaign, |runs| runs.iter().all(|r| r["status"] != "running")).await;
    let run = &runs[0];
    assert_eq!((run["method"].as_str(), run["status"].as_str()), (Some("dpo"), Some("succeeded")), "{run}");
    assert!(run["config"]["args"].as_array().unwrap().contains(&json!("--listwise")), "{run}");
    let next = run["next_campaign_id"].as_i64().expect("the DPO run made the next round");
    let round2 = admin.get(&format!("/api/v1/campaigns/{next}")).await.json;
    assert_eq!((round2["kind"].as_str(), round2["status"].as_str()), (Some("ranking"), Some("active")), "{round2}");
    let task = panel[0].get(&format!("/api/v1/campaigns/{next}/next")).await.json;
    let shown = task["pair"]["responses"].as_array().map_or(0, Vec::len);
    assert!((2..=3).contains(&shown), "a task of the new round ranks its prompt's answers: {task}");
    server.stop().await;
}

/// The thumbs sibling of the loop: a thumbs campaign of two answers per prompt (one praising,
/// one disparaging), each rated alone by a panel of three (one noisy) through the HTTP API; a
/// KTO run on the campaign trains on the desirable and undesirable answers (the server picks
/// the `kto` export itself), and on held-out answers the policy's implied reward has the sign
/// the panel's thumbs gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thumbs_from_a_panel_train_kto() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("policy");
    write_tiny_policy(&model, &tiny_config(), 7).unwrap();
    let server = TestServer::start_with(Backend::Sqlite, pairwise_tests::with_trainer(dir.path())).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = pairwise_tests::create_campaign(
        &admin,
        json!({"name": "praise thumbs", "kind": "thumbs", "status": "active", "overlap": 3}),
    )
    .await;
    let mut rng = StdRng::seed_from_u64(9);
    let mut prompts = std::collections::BTreeSet::new();
    while prompts.len() < 120 {
        let (a, b) = (TOPICS[rng.random_range(0..16)], TOPICS[rng.random_range(0..16)]);
        prompts.insert(format!("tell me about {a} {b}"));
    }
    let lines: Vec<Value> = prompts
        .iter()
        .map(|prompt| {
            let topic = prompt.split(' ').nth(3).unwrap();
            let good: Vec<&str> = GOOD.choose_multiple(&mut rng, 2).copied().collect();
            let bad: Vec<&str> = BAD.choose_multiple(&mut rng, 2).copied().collect();
            json!({"prompt": prompt, "responses": [
                {"text": format!("{topic} is {} .", good.join(" ")), "model": "praising"},
                {"text": format!("{topic} is {} .", bad.join(" ")), "model": "disparaging"},
            ]})
        })
        .collect();
    pairwise_tests::import(&admin, campaign, &lines).await;

    let mut panel = Vec::new();
    for name in ["ana", "ben", "cai"] {
        panel.push(server.client_for(name, Role::Annotator).await);
    }
    let mut votes = 0;
    for (i, rater) in panel.iter().enumerate() {
        loop {
            let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
            if next["status"] != "assigned" {
                break;
            }
            let task = &next["pair"];
            let mut up = praise(task["left"].as_str().unwrap()) > 0;
            // The noisy rater flips a quarter of their thumbs.
            if i == 2 && rng.random_bool(0.25) {
                up = !up;
            }
            let body = json!({"assignment_id": task["assignment_id"], "rating": i64::from(up), "time_ms": 2000,
                              "client_key": format!("{}-{}", rater.user_id, task["assignment_id"])});
            let reply = rater.post("/api/v1/votes", &body).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            votes += 1;
        }
    }
    assert_eq!(votes, 240 * 3, "every answer got its overlap of thumbs");
    let board = admin.get(&format!("/api/v1/campaigns/{campaign}/leaderboard?bootstrap=50")).await.json;
    assert_eq!(board["models"][0]["model"], "praising", "{board}");

    let args = [
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-2",
        "--beta",
        "0.1",
        "--eval-fraction",
        "0.25",
        "--max-length",
        "48",
        "--max-prompt-length",
        "24",
        "--lora-targets",
        "q,k,v,o,gate,up,down",
    ];
    let spec = json!({"method": "kto", "model": model.display().to_string(), "args": args});
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/runs"), &spec).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let runs = wait_for_runs(&admin, campaign, |runs| runs.iter().all(|r| r["status"] != "running")).await;
    let run = admin.get(&format!("/api/v1/runs/{}", runs[0]["id"])).await.json;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["config"]["export"]["format"], "kto");
    assert_eq!(run["data_rows"], 240, "one labelled answer per task (three votes never split): {run}");
    let metrics = run["metrics"].as_array().unwrap();
    let held_out =
        metrics.iter().rev().find_map(|m| m["eval_rewards/label_accuracy"].as_f64()).expect("eval label accuracy");
    println!("KTO from the panel's thumbs: held-out reward sign accuracy {held_out:.3}");
    assert!(held_out > 0.8, "held-out reward sign accuracy: {held_out:.2}");
    server.stop().await;
}
