//! Graceful shutdown: a request in flight when shutdown begins still completes.

use pairwise_server::accounts::Role;
use pairwise_tests::{Backend, TestServer, both_backends, create_campaign, import};
use serde_json::json;

async fn shutdown_finishes_in_flight_requests(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "bye", "overlap": 1, "status": "active"})).await;
    let lines: Vec<_> = (0..3000)
        .map(|i| json!({"prompt": format!("p{i}"), "response_a": format!("a{i} ").repeat(120), "response_b": format!("b{i}")}))
        .collect();
    import(&admin, campaign, &lines).await;
    // One vote per pair, written directly: an export of ~2 MB, far more than the socket
    // and channel buffers hold, so most of it is still to be sent when shutdown begins.
    sqlx::query(
        "INSERT INTO comparisons (campaign_id, seq, pair_id, rater_id, choice, swapped, client_key, created_at) \
         SELECT campaign_id, id, id, $1, 'a', 0, 'k' || CAST(id AS TEXT), 0 FROM pairs",
    )
    .bind(admin.user_id)
    .execute(&server.sql)
    .await
    .unwrap();
    sqlx::query("UPDATE campaigns SET vote_seq = 3000").execute(&server.sql).await.unwrap();

    let mut response = admin
        .http
        .get(server.url(&format!("/api/v1/campaigns/{campaign}/export?format=trl")))
        .bearer_auth(admin.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    server.begin_shutdown();
    // New connections are refused once shutdown has begun…
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(reqwest::Client::new().get(server.url("/healthz")).send().await.is_err());
    // …but the export already under way is delivered whole.
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().count(), 3000);
    server.stop().await;
}
both_backends!(shutdown_finishes_in_flight_requests);
