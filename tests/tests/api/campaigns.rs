//! Campaign updates: concurrent PATCHes of different fields must not overwrite each other
//! (the read of the current settings and the write are one transaction).

use pairwise_server::accounts::Role;
use pairwise_tests::{Backend, TestServer, both_backends, create_campaign};
use serde_json::json;

async fn concurrent_updates_keep_every_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "patched", "overlap": 1})).await;
    let path = format!("/api/v1/campaigns/{campaign}");
    // Each round, several admins change different fields at the same moment. A read of the
    // settings outside the write's transaction lets a later writer put back the old value
    // of a field another request just changed.
    for round in 0..25i64 {
        let guidelines = format!("guidelines of round {round}");
        let overlap = round % 7 + 2;
        let gold_rate = (round % 5) as f64 / 10.0;
        let lease = 60 + round;
        let bodies = [
            json!({"guidelines": guidelines}),
            json!({"overlap": overlap}),
            json!({"gold_rate": gold_rate}),
            json!({"lease_seconds": lease}),
        ];
        let replies = futures::future::join_all(bodies.iter().map(|body| admin.patch(&path, body))).await;
        for reply in &replies {
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        let now = admin.get(&path).await.json;
        assert_eq!(now["guidelines"], guidelines, "round {round}: {now}");
        assert_eq!(now["overlap"], overlap, "round {round}: {now}");
        assert_eq!(now["gold_rate"], gold_rate, "round {round}: {now}");
        assert_eq!(now["lease_seconds"], lease, "round {round}: {now}");
    }
    server.stop().await;
}

both_backends!(concurrent_updates_keep_every_field);
