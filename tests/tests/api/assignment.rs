//! Assignment and voting: concurrency, overlap, leases, swaps, idempotency, skips.

use std::collections::{HashMap, HashSet};

use pairwise_server::accounts::Role;
use pairwise_tests::{
    ApiClient, Backend, TestServer, both_backends, create_campaign, import, numbered_pairs,
    rate_to_the_end_within_overlap,
};
use serde_json::{Value, json};

async fn raters(server: &TestServer, n: usize) -> Vec<ApiClient> {
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(server.client_for(&format!("rater{i}"), Role::Annotator).await);
    }
    clients
}

async fn concurrent_raters_respect_overlap(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "busy", "overlap": 3, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(12)).await;
    let raters = raters(&server, 50).await;

    // 50 raters ask at the same moment while only 12 × 3 = 36 slots exist.
    let first: Vec<Value> = futures::future::join_all(
        raters.iter().map(|r| async move { r.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json }),
    )
    .await;
    let assigned: Vec<&Value> = first.iter().filter(|n| n["status"] == "assigned").collect();
    assert_eq!(assigned.len(), 36, "exactly the open slots are leased");
    assert!(first.iter().filter(|n| n["status"] != "assigned").all(|n| n["status"] == "waiting"));
    let mut per_pair: HashMap<i64, usize> = HashMap::new();
    for n in &assigned {
        *per_pair.entry(n["pair"]["pair_id"].as_i64().unwrap()).or_default() += 1;
    }
    assert!(per_pair.values().all(|&held| held == 3), "{per_pair:?}");

    // Now everyone rates to the end, concurrently.
    rate_to_the_end_within_overlap(raters, campaign, &server.sql, 12, 3).await;
    server.stop().await;
}
both_backends!(concurrent_raters_respect_overlap);

async fn votes_map_swaps_and_are_idempotent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "swap", "overlap": 1, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(40)).await;
    let rater = server.client_for("rater", Role::Annotator).await;

    let mut next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    // Asking again while holding a lease returns the same pair.
    let again = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(next["pair"]["assignment_id"], again["pair"]["assignment_id"]);
    let mut swaps = HashSet::new();
    for i in 0..40 {
        let pair = next["pair"].clone();
        // Always pick the screen side that shows response a; the stored choice must be `a`.
        let a_is_left = pair["left"].as_str().unwrap().starts_with('a');
        swaps.insert(!a_is_left);
        let body = json!({"assignment_id": pair["assignment_id"], "choice": if a_is_left { "left" } else { "right" },
            "strength": 3, "rationale": "a is right", "time_ms": 100 + i, "client_key": format!("key-{i}")});
        let reply = rater.post("/api/v1/votes", &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["vote"]["choice"], "a");
        assert_eq!(reply.json["vote"]["swapped"], json!(!a_is_left));
        assert_eq!(reply.json["duplicate"], false);
        assert_eq!(reply.json["my_votes"], i + 1);
        // Resubmitting the same vote is acknowledged without a second row.
        let dup = rater.post("/api/v1/votes", &body).await;
        assert_eq!(dup.status, 200, "{}", dup.text);
        assert_eq!(dup.json["duplicate"], true);
        assert_eq!(dup.json["vote"]["id"], reply.json["vote"]["id"]);
        next = reply.json["next"].clone();
    }
    assert_eq!(next["status"], "done");
    assert_eq!(swaps.len(), 2, "left/right order is randomised");
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT choice, swapped FROM comparisons").fetch_all(&server.sql).await.unwrap();
    assert_eq!(stored.len(), 40);
    assert!(stored.iter().all(|(c, _)| c == "a"));
    let swapped_in_db = stored.iter().filter(|(_, s)| *s == 1).count();
    assert!(swapped_in_db > 0 && swapped_in_db < 40);

    // The same key on another pair is a conflict, not a silent overwrite.
    let campaign2 = create_campaign(&admin, json!({"name": "swap2", "overlap": 1, "status": "active"})).await;
    import(&admin, campaign2, &[json!({"prompt": "q", "response_a": "x", "response_b": "y"})]).await;
    let pair = rater.get(&format!("/api/v1/campaigns/{campaign2}/next")).await.json["pair"].clone();
    let reused = rater
        .post("/api/v1/votes", &json!({"assignment_id": pair["assignment_id"], "choice": "tie", "client_key": "key-0"}))
        .await;
    assert_eq!(reused.status, 409, "{}", reused.text);
    assert_eq!(reused.json["error"], "key_reused");
    // Bad input is named.
    let bad = rater
        .post(
            "/api/v1/votes",
            &json!({"assignment_id": pair["assignment_id"], "choice": "left", "strength": 5, "client_key": "k"}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.json["message"].as_str().unwrap().starts_with("strength"));
    // Another rater cannot vote on this rater's lease.
    let other = server.client_for("other", Role::Annotator).await;
    let stolen = other
        .post("/api/v1/votes", &json!({"assignment_id": pair["assignment_id"], "choice": "tie", "client_key": "s"}))
        .await;
    assert_eq!(stolen.status, 404);
    // Votes need a lease unless the campaign allows free votes.
    let free =
        rater.post("/api/v1/votes", &json!({"pair_id": pair["pair_id"], "choice": "tie", "client_key": "f"})).await;
    assert_eq!(free.status, 403, "{}", free.text);
    server.stop().await;
}
both_backends!(votes_map_swaps_and_are_idempotent);

async fn expired_leases_and_skips_return_pairs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "lease", "overlap": 1, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(1)).await;
    let (alice, bob) =
        (server.client_for("alice", Role::Annotator).await, server.client_for("bob", Role::Annotator).await);

    let held = alice.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(held["status"], "assigned");
    assert_eq!(bob.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json["status"], "waiting");
    // Alice's lease runs out: the pair goes to Bob.
    sqlx::query("UPDATE assignments SET expires_at = 0").execute(&server.sql).await.unwrap();
    let bobs = bob.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(bobs["status"], "assigned");
    assert_eq!(bobs["pair"]["pair_id"], held["pair"]["pair_id"]);
    // Alice's late vote is refused because the only slot is now Bob's…
    let late = alice
        .post(
            "/api/v1/votes",
            &json!({"assignment_id": held["pair"]["assignment_id"], "choice": "tie", "client_key": "late"}),
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.text);
    assert_eq!(late.json["error"], "lease_expired");
    // …Bob skips, so the slot is free again and Alice's late vote is accepted.
    let after_skip = bob.post(&format!("/api/v1/assignments/{}/skip", bobs["pair"]["assignment_id"]), &json!({})).await;
    assert_eq!(after_skip.status, 200, "{}", after_skip.text);
    assert_eq!(after_skip.json["status"], "done", "a skipped pair is not offered again");
    let late = alice
        .post(
            "/api/v1/votes",
            &json!({"assignment_id": held["pair"]["assignment_id"], "choice": "tie", "client_key": "late"}),
        )
        .await;
    assert_eq!(late.status, 200, "{}", late.text);
    let claimed: i64 = sqlx::query_scalar("SELECT claimed FROM pairs").fetch_one(&server.sql).await.unwrap();
    assert_eq!(claimed, 1);

    // Paused campaigns hand out nothing; closed ones refuse votes.
    admin.patch(&format!("/api/v1/campaigns/{campaign}"), &json!({"status": "paused"})).await;
    let paused = bob.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(paused, json!({"status": "unavailable", "campaign_status": "paused"}));
    server.stop().await;
}
both_backends!(expired_leases_and_skips_return_pairs);

async fn gold_checks_are_mixed_in_at_the_campaign_rate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let always =
        create_campaign(&admin, json!({"name": "gold", "overlap": 1, "gold_rate": 1.0, "status": "active"})).await;
    let mut lines = numbered_pairs(2);
    lines.push(json!({"prompt": "gold q", "response_a": "right", "response_b": "wrong", "gold": "a"}));
    import(&admin, always, &lines).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    let mut served = Vec::new();
    let mut next = rater.get(&format!("/api/v1/campaigns/{always}/next")).await.json;
    while next["status"] == "assigned" {
        served.push(next["pair"]["prompt"].as_str().unwrap().to_string());
        let body = json!({"assignment_id": next["pair"]["assignment_id"], "choice": "tie", "client_key": served.len().to_string()});
        next = rater.post("/api/v1/votes", &body).await.json["next"].clone();
    }
    // With rate 1 the gold check comes first, while regular work remains; it is never repeated.
    assert_eq!(served.len(), 3, "{served:?}");
    assert_eq!(served[0], "gold q");
    let mut rest = served[1..].to_vec();
    rest.sort();
    assert_eq!(rest, vec!["prompt 0", "prompt 1"]);
    let gold_votes: i64 =
        sqlx::query_scalar("SELECT vote_count FROM pairs WHERE is_gold = 1").fetch_one(&server.sql).await.unwrap();
    assert_eq!(gold_votes, 1);

    // Rate 0: gold pairs are never served.
    let never =
        create_campaign(&admin, json!({"name": "nogold", "overlap": 1, "gold_rate": 0.0, "status": "active"})).await;
    import(&admin, never, &lines).await;
    for i in 0..2 {
        let next = rater.get(&format!("/api/v1/campaigns/{never}/next")).await.json;
        assert_ne!(next["pair"]["prompt"], "gold q");
        let body =
            json!({"assignment_id": next["pair"]["assignment_id"], "choice": "tie", "client_key": format!("n{i}")});
        assert_eq!(rater.post("/api/v1/votes", &body).await.status, 200);
    }
    assert_eq!(rater.get(&format!("/api/v1/campaigns/{never}/next")).await.json["status"], "done");
    server.stop().await;
}
both_backends!(gold_checks_are_mixed_in_at_the_campaign_rate);

/// Postgres numbers a vote in a second step after it commits (migration 0005). A vote whose
/// request ended between the two (its server died) still gets a number, before an export
/// reads, and a retry of it by the rater gets that number back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_left_unnumbered_are_numbered_before_an_export() {
    let server = TestServer::start(Backend::Postgres).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "gap", "overlap": 1, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(3)).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let assignment = next["pair"]["assignment_id"].as_i64().unwrap();
    // The vote's first step only, as a server dying right after it leaves it.
    sqlx::query("SELECT * FROM pairwise_vote($1, $2, NULL, 0, 'left', NULL, NULL, NULL, 'k1', 1000, 0.5, 0)")
        .bind(rater.user_id)
        .bind(assignment)
        .execute(&server.sql)
        .await
        .unwrap();
    let unnumbered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM comparisons WHERE seq IS NULL").fetch_one(&server.sql).await.unwrap();
    assert_eq!(unnumbered, 1);

    let export = admin.get(&format!("/api/v1/campaigns/{campaign}/export?format=raw")).await;
    assert_eq!(export.status, 200, "{}", export.text);
    let rows: Vec<Value> = export.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{}", export.text);
    assert_eq!(rows[0]["seq"], 1);

    let retry =
        rater.post("/api/v1/votes", &json!({"assignment_id": assignment, "choice": "left", "client_key": "k1"})).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.json["duplicate"], true);
    assert_eq!(retry.json["vote"]["seq"], 1);
    server.stop().await;
}

/// The server hands out pooled Postgres connections without pinging them first (store/mod.rs).
/// When Postgres ends them (a restart, an administrator), rating goes on: `next`, a vote and
/// a skip are sent again on a working connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rating_goes_on_after_postgres_drops_the_connections() {
    let server = TestServer::start(Backend::Postgres).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "dropped", "overlap": 1, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(4)).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    let drop_server_connections = || async {
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&server.sql)
        .await
        .unwrap();
        assert!(!ended.is_empty(), "the server holds connections");
    };

    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await;
    assert_eq!(next.status, 200, "{}", next.text);
    drop_server_connections().await;
    let again = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["pair"]["assignment_id"], next.json["pair"]["assignment_id"], "the same lease");

    drop_server_connections().await;
    let assignment = next.json["pair"]["assignment_id"].as_i64().unwrap();
    let vote =
        rater.post("/api/v1/votes", &json!({"assignment_id": assignment, "choice": "left", "client_key": "k1"})).await;
    assert_eq!(vote.status, 200, "{}", vote.text);
    assert_eq!(vote.json["vote"]["seq"], 1);

    drop_server_connections().await;
    let skipped = vote.json["next"]["pair"]["assignment_id"].as_i64().unwrap();
    let skip = rater.post(&format!("/api/v1/assignments/{skipped}/skip"), &json!({})).await;
    assert_eq!(skip.status, 200, "{}", skip.text);
    let votes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM comparisons").fetch_one(&server.sql).await.unwrap();
    assert_eq!(votes, 1);
    server.stop().await;
}
