//! The `pairwise` command line, run in-process against the test database.

use clap::Parser;
use pairwise_server::accounts::Role;
use pairwise_server::cli::{Cli, run};
use pairwise_tests::{Backend, TestServer, both_backends};

async fn pairwise(server: &TestServer, args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["pairwise", "--database-url", &server.config.database_url];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv)?).await
}

async fn cli_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    pairwise(&server, &["migrate"]).await.unwrap();
    pairwise(&server, &["user", "add", "boss", "--role", "admin", "--password", "password-123"]).await.unwrap();
    pairwise(&server, &["campaign", "create", "--name", "cli", "--overlap", "1"]).await.unwrap();
    let campaign: i64 =
        sqlx::query_scalar("SELECT id FROM campaigns WHERE name = 'cli'").fetch_one(&server.sql).await.unwrap();

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"p\",\"response_a\":\"x\",\"response_b\":\"y\"}\n{\"prompt\":\"q\"}\n").unwrap();
    let err =
        pairwise(&server, &["import", "--campaign", &campaign.to_string(), bad.to_str().unwrap()]).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("line 2 field `responses`"), "{message}");
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, "{\"prompt\":\"p\",\"response_a\":\"x\",\"response_b\":\"y\"}\n").unwrap();
    pairwise(&server, &["import", "--campaign", &campaign.to_string(), good.to_str().unwrap()]).await.unwrap();

    let rater = server.client_for("rater", Role::Annotator).await;
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let vote = serde_json::json!({"assignment_id": next["pair"]["assignment_id"], "choice": if next["pair"]["left"] == "x" { "left" } else { "right" }, "client_key": "k"});
    assert_eq!(rater.post("/api/v1/votes", &vote).await.status, 200);

    assert_eq!(
        export(&server, campaign, dir.path(), "trl", &[]).await,
        "{\"chosen\":\"x\",\"prompt\":\"p\",\"rejected\":\"y\"}\n"
    );
    pairwise(&server, &["stats", "--campaign", &campaign.to_string()]).await.unwrap();
    pairwise(&server, &["campaign", "close", &campaign.to_string()]).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
        .bind(campaign)
        .fetch_one(&server.sql)
        .await
        .unwrap();
    assert_eq!(status, "closed");

    pairwise(&server, &["token", "create", "--user", "boss"]).await.unwrap();
    let token_id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM api_tokens").fetch_one(&server.sql).await.unwrap();
    pairwise(&server, &["token", "revoke", &token_id.to_string()]).await.unwrap();
    pairwise(&server, &["user", "disable", "rater"]).await.unwrap();
    assert_eq!(rater.get("/api/v1/auth/me").await.status, 401);
    let err = pairwise(&server, &["user", "disable", "nobody"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("user `nobody` not found"));
    pairwise(&server, &["demo"]).await.unwrap();
    server.stop().await;
}
both_backends!(cli_round_trip);

/// `pairwise export` of a campaign in `format` (with `extra` flags) into `dir`; the file's text.
async fn export(server: &TestServer, campaign: i64, dir: &std::path::Path, format: &str, extra: &[&str]) -> String {
    let (campaign, out) = (campaign.to_string(), dir.join(format!("{format}.jsonl")));
    let out_path = out.display().to_string();
    let mut args = vec!["export", "--campaign", &campaign, "--format", format];
    args.extend_from_slice(extra);
    args.extend(["--out", &out_path]);
    pairwise(server, &args).await.unwrap();
    std::fs::read_to_string(&out).unwrap()
}

/// A ranking campaign from the command line: created with `--ranking`, a task imported, and
/// exported whole (`ranking`) and as the neighbouring pairs its ranking implies.
async fn cli_ranking_campaign(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    pairwise(&server, &["campaign", "create", "--name", "ranks", "--ranking", "--overlap", "1", "--status", "active"])
        .await
        .unwrap();
    let campaign: i64 =
        sqlx::query_scalar("SELECT id FROM campaigns WHERE name = 'ranks'").fetch_one(&server.sql).await.unwrap();
    let tasks = dir.path().join("tasks.jsonl");
    let line = serde_json::json!({"prompt": "p", "responses": [
        {"text": "x", "model": "m1"}, {"text": "y", "model": "m2"}, {"text": "z", "model": "m3"}]});
    std::fs::write(&tasks, format!("{line}\n")).unwrap();
    pairwise(&server, &["import", "--campaign", &campaign.to_string(), tasks.to_str().unwrap()]).await.unwrap();

    let rater = server.client_for("rater", Role::Annotator).await;
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let ranks: Vec<i64> = next["pair"]["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r.as_str().unwrap() {
            "x" => 1,
            "y" => 2,
            _ => 3,
        })
        .collect();
    let vote = serde_json::json!({"assignment_id": next["pair"]["assignment_id"], "ranks": ranks, "client_key": "k"});
    assert_eq!(rater.post("/api/v1/votes", &vote).await.status, 200);

    assert_eq!(
        export(&server, campaign, dir.path(), "ranking", &[]).await,
        "{\"all_bad\":false,\"prompt\":\"p\",\"ranks\":[1.0,2.0,3.0],\"raw\":[[1,2,3]],\"responses\":[\"x\",\"y\",\"z\"]}\n"
    );
    assert_eq!(
        export(&server, campaign, dir.path(), "trl", &["--adjacent-pairs"]).await,
        "{\"chosen\":\"x\",\"prompt\":\"p\",\"rejected\":\"y\"}\n{\"chosen\":\"y\",\"prompt\":\"p\",\"rejected\":\"z\"}\n"
    );
    assert_eq!(export(&server, campaign, dir.path(), "trl", &[]).await.lines().count(), 3);
}
both_backends!(cli_ranking_campaign);

/// A scale campaign made and filled from the command line: `campaign create --scale`, an
/// import of single responses, a rating through the API, and `export --format kto` with and
/// without `--threshold`.
async fn cli_scale_campaign(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let create = ["campaign", "create", "--name", "scale", "--scale", "--overlap", "1", "--status", "active"];
    pairwise(&server, &create).await.unwrap();
    let refused =
        pairwise(&server, &["campaign", "create", "--name", "both", "--scale", "--thumbs"]).await.unwrap_err();
    assert!(format!("{refused:#}").contains("cannot be used with"), "{refused:#}");
    let campaign: i64 =
        sqlx::query_scalar("SELECT id FROM campaigns WHERE name = 'scale'").fetch_one(&server.sql).await.unwrap();
    let tasks = dir.path().join("tasks.jsonl");
    let line = serde_json::json!({"prompt": "p", "responses": [{"text": "x", "model": "m1"}]});
    std::fs::write(&tasks, format!("{line}\n")).unwrap();
    pairwise(&server, &["import", "--campaign", &campaign.to_string(), tasks.to_str().unwrap()]).await.unwrap();

    let rater = server.client_for("rater", Role::Annotator).await;
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let vote = serde_json::json!({"assignment_id": next["pair"]["assignment_id"], "rating": 4, "client_key": "k"});
    assert_eq!(rater.post("/api/v1/votes", &vote).await.status, 200);
    assert_eq!(
        export(&server, campaign, dir.path(), "kto", &[]).await,
        "{\"completion\":\"x\",\"label\":true,\"prompt\":\"p\"}\n"
    );
    assert_eq!(
        export(&server, campaign, dir.path(), "kto", &["--threshold", "4.5"]).await,
        "{\"completion\":\"x\",\"label\":false,\"prompt\":\"p\"}\n"
    );
}
both_backends!(cli_scale_campaign);
