//! Stats and leaderboard against a small example computed by hand (see the comments).

use pairwise_server::accounts::Role;
use pairwise_tests::{ApiClient, Backend, TestServer, both_backends, create_campaign, import};
use serde_json::json;

async fn vote(rater: &ApiClient, pair: i64, screen: &str, swapped: bool, time_ms: i64) {
    let reply = rater
        .post(
            "/api/v1/votes",
            &json!({"pair_id": pair, "choice": screen, "swapped": swapped,
            "time_ms": time_ms, "client_key": format!("{pair}-{time_ms}")}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

fn close(actual: &serde_json::Value, expected: f64, tolerance: f64) {
    let actual = actual.as_f64().unwrap_or_else(|| panic!("not a number: {actual}"));
    assert!((actual - expected).abs() <= tolerance, "{actual} vs {expected}");
}

async fn stats_and_leaderboard_match_hand_computation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign =
        create_campaign(&admin, json!({"name": "st", "overlap": 3, "status": "active", "free_votes": true})).await;
    import(
        &admin,
        campaign,
        &[
            json!({"prompt": "p1", "response_a": "x1", "response_b": "y1", "model_a": "X", "model_b": "Y"}),
            json!({"prompt": "p2", "response_a": "x2", "response_b": "y2", "model_a": "X", "model_b": "Y"}),
            json!({"prompt": "g", "response_a": "good", "response_b": "bad", "gold": "a"}),
        ],
    )
    .await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM pairs ORDER BY id").fetch_all(&server.sql).await.unwrap();
    let (p1, p2, g) = (ids[0], ids[1], ids[2]);
    let r1 = server.client_for("r1", Role::Annotator).await;
    let r2 = server.client_for("r2", Role::Annotator).await;
    let r3 = server.client_for("r3", Role::Annotator).await;
    // Stored choices — p1: a, a, b; p2: tie, b, b; gold: r1 a (right), r2 b (wrong).
    // On screen the left response won for r1/p1 and r3/p1 only: position bias 2/5.
    vote(&r1, p1, "left", false, 1000).await;
    vote(&r2, p1, "right", true, 2000).await;
    vote(&r3, p1, "left", true, 7000).await;
    vote(&r1, p2, "tie", false, 3000).await;
    // Stats half-way fold these four votes into the running tallies; the rest are folded
    // later, and the figures below must be those of all votes at once.
    let halfway = admin.get(&format!("/api/v1/campaigns/{campaign}/stats")).await;
    assert_eq!(halfway.json["progress"]["votes"], 4, "{}", halfway.text);
    close(&halfway.json["agreement"]["percent"], 1.0 / 3.0, 1e-12);
    let r1_halfway = halfway.json["raters"].as_array().unwrap().iter().find(|r| r["username"] == "r1").unwrap().clone();
    close(&r1_halfway["agreement_with_others"], 0.5, 1e-12);
    vote(&r2, p2, "right", false, 4000).await;
    vote(&r3, p2, "right", false, 8000).await;
    vote(&r1, g, "left", false, 5000).await;
    vote(&r2, g, "right", false, 6000).await;
    // Free votes skip the lease, not the overlap: p1 already has its 3 votes.
    let r4 = server.client_for("r4", Role::Annotator).await;
    let full = r4.post("/api/v1/votes", &json!({"pair_id": p1, "choice": "left", "client_key": "x"})).await;
    assert_eq!(full.status, 409, "{}", full.text);
    assert_eq!(full.json["error"], "pair_full");

    let stats = admin.get(&format!("/api/v1/campaigns/{campaign}/stats")).await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    let s = &stats.json;
    assert_eq!(
        s["progress"],
        json!({"pairs_total": 2, "pairs_complete": 2, "target_votes": 6, "votes": 6, "gold_votes": 2, "raters": 3})
    );
    // Agreeing rater pairs: p1 (a,a) and p2 (b,b) of 3 + 3 → 1/3.
    close(&s["agreement"]["percent"], 1.0 / 3.0, 1e-12);
    // Ordinal alpha on units [0,0,2] and [1,2,2]: D_o = 32.5, D_e = 36 → 0.097222…
    // (the Python `krippendorff` package gives 0.09722222222222221 on the same data).
    close(&s["agreement"]["krippendorff_alpha"], 1.0 - 32.5 / 36.0, 1e-12);
    assert_eq!(s["position_bias"], json!({"decisive_votes": 5, "left_wins": 2, "rate": 0.4}));
    close(&s["median_time_ms"], 4500.0, 0.0);
    let raters = s["raters"].as_array().unwrap();
    let row = |name: &str| raters.iter().find(|r| r["username"] == name).unwrap().clone();
    close(&row("r1")["gold_accuracy"], 1.0, 0.0);
    close(&row("r2")["gold_accuracy"], 0.0, 0.0);
    assert_eq!(row("r3")["gold_accuracy"], json!(null));
    close(&row("r1")["agreement_with_others"], 0.25, 1e-12);
    close(&row("r2")["agreement_with_others"], 0.5, 1e-12);
    close(&row("r3")["agreement_with_others"], 0.25, 1e-12);
    close(&row("r1")["median_time_ms"], 3000.0, 0.0);
    close(&row("r3")["median_time_ms"], 7500.0, 0.0);
    assert_eq!(row("r2")["votes"], 3);

    // An annotator sees the totals and only their own row.
    let own = r1.get(&format!("/api/v1/campaigns/{campaign}/stats")).await.json;
    assert_eq!(own["raters"].as_array().unwrap().len(), 1);
    assert_eq!(own["raters"][0]["username"], "r1");

    // X vs Y: X scores 2 wins, Y 3 wins, 1 tie → 2.5 : 3.5, so the Elo gap is
    // 400·log10(3.5/2.5) = 58.45 points around 1000.
    let board = admin.get(&format!("/api/v1/campaigns/{campaign}/leaderboard?bootstrap=300&seed=1")).await;
    assert_eq!(board.status, 200, "{}", board.text);
    let models = board.json["models"].as_array().unwrap();
    assert_eq!(models[0]["model"], "Y");
    assert_eq!(
        (models[0]["wins"].as_i64(), models[0]["losses"].as_i64(), models[0]["ties"].as_i64()),
        (Some(3), Some(2), Some(1))
    );
    let gap = 400.0 * (3.5f64 / 2.5).log10();
    close(&models[0]["score"], 1000.0 + gap / 2.0, 0.1);
    close(&models[1]["score"], 1000.0 - gap / 2.0, 0.1);
    for m in models {
        assert!(m["ci_low"].as_f64().unwrap() < m["score"].as_f64().unwrap());
        assert!(m["ci_high"].as_f64().unwrap() > m["score"].as_f64().unwrap());
    }
    assert_eq!(board.json["battles"], 6);
    assert_eq!(r1.get(&format!("/api/v1/campaigns/{campaign}/leaderboard")).await.status, 403);
    server.stop().await;
}
both_backends!(stats_and_leaderboard_match_hand_computation);
