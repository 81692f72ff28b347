//! Running the server: `/metrics` for Prometheus; on SQLite, a second server on the same
//! file is refused, and `pairwise backup` taken while votes are written holds every vote
//! acknowledged before it started, which `pairwise restore` brings back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use pairwise_server::accounts::Role;
use pairwise_server::cli::{Cli, run};
use pairwise_tests::{
    ApiClient, Backend, TestServer, both_backends, create_campaign, import, numbered_pairs, vote_all,
};
use serde_json::json;

/// The value of the sample `name` (with its labels, as written) in a scrape; 0 if absent.
fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn metrics_count_what_happens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let anonymous = server.anonymous();
    let before = anonymous.get("/metrics").await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert!(before.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));

    let campaign = create_campaign(&admin, json!({"name": "m", "overlap": 1, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(5)).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    let held = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await;
    assert_eq!(held.json["status"], "assigned");
    let during = anonymous.get("/metrics").await.text;
    assert_eq!(sample(&during, "pairwise_active_leases"), 1.0, "{during}");
    vote_all(&rater, campaign, |_| "left").await;
    assert_eq!(admin.get(&format!("/api/v1/campaigns/{campaign}/export?format=trl")).await.status, 200);

    let after = anonymous.get("/metrics").await.text;
    // The registry is the process's, and other tests run beside this one: compare deltas.
    let grew = |name: &str| sample(&after, name) - sample(&before.text, name);
    assert!(grew("pairwise_votes_total") >= 5.0, "{after}");
    assert!(grew("pairwise_imports_total") >= 1.0, "{after}");
    assert!(grew("pairwise_imported_pairs_total") >= 5.0, "{after}");
    assert!(grew("pairwise_exports_total") >= 1.0, "{after}");
    let votes = r#"pairwise_http_request_duration_seconds_count{method="POST",route="/api/v1/votes"}"#;
    let next = r#"pairwise_http_request_duration_seconds_count{method="GET",route="/api/v1/campaigns/{id}/next"}"#;
    assert!(grew(votes) >= 5.0, "{after}");
    assert!(grew(next) >= 1.0, "{after}");
    assert_eq!(sample(&after, "pairwise_active_leases"), 0.0, "{after}");
    assert_eq!(sample(&after, r#"pairwise_training_runs{status="running"}"#), 0.0);
    assert!(after.contains(r#"pairwise_db_pool_connections{state="open"}"#), "{after}");
    assert!(after.contains("pairwise_sqlite_writer_queue_depth"), "{after}");
    assert!(after.trim_end().ends_with("# EOF"));
    server.stop().await;

    // With a token configured, a scrape must bring it.
    let server = TestServer::start_with(backend, |c| c.metrics_token = Some("scrape-me".into())).await;
    assert_eq!(server.anonymous().get("/metrics").await.status, 401);
    let scraper = ApiClient { token: Some("scrape-me".into()), ..server.anonymous() };
    assert_eq!(scraper.get("/metrics").await.status, 200);
    server.stop().await;
}
both_backends!(metrics_count_what_happens);

async fn pairwise(database_url: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["pairwise", "--database-url", database_url];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_serves_one_server_per_file() {
    let server = TestServer::start(Backend::Sqlite).await;
    let url = server.config.database_url.clone();
    let refused = pairwise(&url, &["serve", "--demo", "--bind", "127.0.0.1:0"]).await.unwrap_err();
    let message = format!("{refused:#}");
    assert!(message.contains("in use by pairwise serve"), "{message}");
    assert!(message.contains("one server per database file"), "{message}");
    // Refused before it connected: its demo seed never reached the served database.
    let demo_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = $1")
        .bind(pairwise_server::demo::DEMO_ADMIN.0)
        .fetch_one(&server.sql)
        .await
        .unwrap();
    assert_eq!(demo_users, 0);
    // A restore under a running server is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b.db");
    pairwise(&url, &["backup", "--out", backup.to_str().unwrap()]).await.unwrap();
    let refused = pairwise(&url, &["restore", "--from", backup.to_str().unwrap(), "--force"]).await.unwrap_err();
    assert!(format!("{refused:#}").contains("in use by pairwise serve"), "{refused:#}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_voting_restores_every_acknowledged_vote() {
    let server = TestServer::start(Backend::Sqlite).await;
    let url = server.config.database_url.clone();
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "b", "overlap": 2, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(400)).await;

    // Raters vote without pause; each acknowledged vote's id is recorded as it comes back.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut voters = Vec::new();
    for i in 0..4 {
        let rater = server.client_for(&format!("rater{i}"), Role::Annotator).await;
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        voters.push(tokio::spawn(async move {
            let mut next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
            while next["status"] == "assigned" && !stop.load(Ordering::SeqCst) {
                let pair = &next["pair"];
                let body = json!({"assignment_id": pair["assignment_id"], "choice": "left",
                                  "client_key": format!("{i}-{}", pair["assignment_id"])});
                let reply = rater.post("/api/v1/votes", &body).await;
                assert_eq!(reply.status, 200, "{}", reply.text);
                acknowledged.lock().unwrap().push(reply.json["vote"]["id"].as_i64().unwrap());
                next = reply.json["next"].clone();
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("pairwise-backup.db");
    let before: HashSet<i64> = acknowledged.lock().unwrap().iter().copied().collect();
    pairwise(&url, &["backup", "--out", backup.to_str().unwrap()]).await.unwrap();
    let during_backup = acknowledged.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::SeqCst);
    for voter in voters {
        voter.await.unwrap();
    }
    let total = acknowledged.lock().unwrap().len();
    assert!(total > before.len(), "votes kept coming during and after the backup");
    // Never overwritten.
    let again = pairwise(&url, &["backup", "--out", backup.to_str().unwrap()]).await.unwrap_err();
    assert!(format!("{again:#}").contains("exists already"), "{again:#}");
    server.stop().await;

    // Restored into a new file: every vote acknowledged before the backup began is there.
    let restored_url = format!("sqlite://{}", dir.path().join("restored.db").display());
    pairwise(&restored_url, &["restore", "--from", backup.to_str().unwrap()]).await.unwrap();
    let restored = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&restored_url).await.unwrap();
    let ids: HashSet<i64> =
        sqlx::query_scalar("SELECT id FROM comparisons").fetch_all(&restored).await.unwrap().into_iter().collect();
    assert!(before.is_subset(&ids), "{} acknowledged before the backup, {} restored", before.len(), ids.len());
    // Votes acknowledged after the backup returned are not in it (up to one in flight per
    // rater, committed before the snapshot and answered after).
    assert!(ids.len() <= before.len() + during_backup + 4, "nothing acknowledged after the backup finished");
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM comparisons ORDER BY seq").fetch_all(&restored).await.unwrap();
    assert_eq!(seqs, (1..=ids.len() as i64).collect::<Vec<_>>(), "a consistent snapshot: no gap in the sequence");
    restored.close().await;

    // Restoring over a database that holds pairs needs --force; then a server serves it.
    let refused = pairwise(&restored_url, &["restore", "--from", backup.to_str().unwrap()]).await.unwrap_err();
    assert!(format!("{refused:#}").contains("--force"), "{refused:#}");
    pairwise(&restored_url, &["restore", "--from", backup.to_str().unwrap(), "--force"]).await.unwrap();
    let server = TestServer::start_with(Backend::Sqlite, |c| c.database_url = restored_url.clone()).await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM comparisons").fetch_one(&server.sql).await.unwrap();
    assert_eq!(count as usize, ids.len(), "the server serves the restored votes");
    let rater = server.client_for("late", Role::Annotator).await;
    vote_all(&rater, campaign, |_| "right").await;
    server.stop().await;

    // Something that is not a backup is refused with its name.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "not a database").unwrap();
    let refused = pairwise(&restored_url, &["restore", "--from", junk.to_str().unwrap(), "--force"]).await.unwrap_err();
    assert!(format!("{refused:#}").contains("junk.db"), "{refused:#}");
}
