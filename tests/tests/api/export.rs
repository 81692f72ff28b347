//! Export: every format, every aggregation option, the `since` cursor.

use pairwise_server::accounts::Role;
use pairwise_tests::{ApiClient, Backend, TestServer, both_backends, create_campaign, import, jsonl};
use serde_json::json;

/// Free-vote mode lets the test choose exactly which pair gets which vote.
async fn vote(rater: &ApiClient, pair: i64, screen: &str, swapped: bool, key: &str) {
    let reply = rater
        .post(
            "/api/v1/votes",
            &json!({"pair_id": pair, "choice": screen, "swapped": swapped, "strength": 2,
            "time_ms": 1000, "client_key": key}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

async fn pair_id(server: &TestServer, prompt: &str) -> i64 {
    sqlx::query_scalar("SELECT p.id FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id WHERE pr.text = $1")
        .bind(prompt)
        .fetch_one(&server.sql)
        .await
        .unwrap()
}

async fn export_formats_and_policies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign =
        create_campaign(&admin, json!({"name": "exp", "overlap": 3, "status": "active", "free_votes": true})).await;
    import(
        &admin,
        campaign,
        &[
            json!({"prompt": "p1", "response_a": "a1", "response_b": "b1", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p2", "response_a": "a2", "response_b": "b2", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p3", "response_a": "a3", "response_b": "b3", "model_a": "x", "model_b": "y",
               "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
            json!({"prompt": "gold", "response_a": "right", "response_b": "wrong", "gold": "a"}),
        ],
    )
    .await;
    let (p1, p2, p3, gold) = (
        pair_id(&server, "p1").await,
        pair_id(&server, "p2").await,
        pair_id(&server, "p3").await,
        pair_id(&server, "gold").await,
    );
    let mut r: Vec<ApiClient> = Vec::new();
    for name in ["r0", "r1", "r2"] {
        r.push(server.client_for(name, Role::Annotator).await);
    }
    // p1: a, a, b (a wins, agreement 2/3). p2: tie, tie, a (dropped). p3: b (one vote).
    vote(&r[0], p1, "left", false, "1").await;
    vote(&r[1], p1, "right", true, "2").await;
    vote(&r[2], p1, "left", true, "3").await;
    vote(&r[0], p2, "tie", false, "4").await;
    vote(&r[1], p2, "tie", true, "5").await;
    vote(&r[2], p2, "left", false, "6").await;
    vote(&r[0], p3, "right", false, "7").await;
    vote(&r[0], gold, "left", false, "8").await;

    let get = |query: &str| {
        let admin = admin.clone();
        let path = format!("/api/v1/campaigns/{campaign}/export?{query}");
        async move { admin.get(&path).await }
    };
    let trl = get("format=trl").await;
    assert_eq!(trl.status, 200, "{}", trl.text);
    assert_eq!(trl.headers["x-pairwise-cursor"], "8");
    assert!(trl.headers["content-type"].to_str().unwrap().starts_with("application/x-ndjson"));
    assert_eq!(
        jsonl(&trl.text),
        vec![
            json!({"prompt": "p1", "chosen": "a1", "rejected": "b1"}),
            json!({"prompt": "user: hi\n\nassistant: hello\n\nuser: p3", "chosen": "b3", "rejected": "a3"}),
        ]
    );
    assert_eq!(jsonl(&get("format=trl&min_votes=2").await.text).len(), 1);
    let agreed = jsonl(&get("format=trl&min_agreement=0.7").await.text);
    assert_eq!(
        agreed,
        vec![json!({"prompt": "user: hi\n\nassistant: hello\n\nuser: p3", "chosen": "b3", "rejected": "a3"})]
    );
    let with_gold = jsonl(&get("format=trl&include_gold=true&meta=true").await.text);
    assert_eq!(with_gold.len(), 3);
    assert_eq!(with_gold[0]["votes"], 3);
    assert!((with_gold[0]["agreement"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(with_gold[0]["strength"], 2.0);
    assert_eq!(with_gold[0]["pair_id"], p1);

    let messages = jsonl(&get("format=messages").await.text);
    assert_eq!(
        messages[0],
        json!({
            "chosen": [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "a1"}],
            "rejected": [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "b1"}],
        })
    );
    assert_eq!(messages[1]["chosen"][0], json!({"role": "user", "content": "hi"}));
    assert_eq!(messages[1]["chosen"][3], json!({"role": "assistant", "content": "b3"}));

    let raw = jsonl(&get("format=raw").await.text);
    assert_eq!(raw.len(), 7, "gold votes are left out by default");
    assert_eq!(raw[1]["choice"], "a");
    assert_eq!(raw[1]["swapped"], true);
    assert_eq!(raw[1]["left"], "b");
    assert_eq!(raw[1]["model_a"], "x");
    let pseudonym = raw[0]["rater"].as_str().unwrap();
    assert!(pseudonym.starts_with("r_") && raw[3]["rater"] == raw[0]["rater"] && raw[1]["rater"] != raw[0]["rater"]);
    let by_id = jsonl(&get("format=raw&raters=id&include_gold=true").await.text);
    assert_eq!(by_id.len(), 8);
    assert_eq!(by_id[0]["rater"], r[0].user_id);
    assert_eq!(by_id[7]["gold"], "a");

    // since: only pairs touched after the cursor, aggregated over all their votes.
    vote(&r[1], p3, "right", false, "9").await;
    let new = get("format=trl&since=8&meta=true").await;
    assert_eq!(new.headers["x-pairwise-cursor"], "9");
    let rows = jsonl(&new.text);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0]["pair_id"].as_i64().unwrap(), rows[0]["votes"].as_i64().unwrap()), (p3, 2));
    assert_eq!(jsonl(&get("format=raw&since=8").await.text).len(), 1);
    assert_eq!(get("format=trl&since=9").await.text, "");

    // Bad parameters are named; annotators cannot export.
    let bad = get("format=csv").await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("format"), "{}", bad.text);
    let bad = get("format=trl&min_agreement=2").await;
    assert_eq!(bad.status, 422);
    assert_eq!(r[0].get(&format!("/api/v1/campaigns/{campaign}/export?format=raw")).await.status, 403);
    server.stop().await;
}
both_backends!(export_formats_and_policies);

/// `kto` and `sft` from pairwise votes: a decided pair gives a desirable winner and an
/// undesirable loser (or nothing with `decisive=false`), a both-bad verdict two undesirable
/// answers, a tie nothing; `sft` gives the winners, as a conversation when the prompt has turns.
async fn single_completion_exports(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign =
        create_campaign(&admin, json!({"name": "kto", "overlap": 3, "status": "active", "free_votes": true})).await;
    import(
        &admin,
        campaign,
        &[
            json!({"prompt": "p1", "response_a": "a1", "response_b": "b1", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p2", "response_a": "a2", "response_b": "b2", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p3", "response_a": "a3", "response_b": "b3", "model_a": "x", "model_b": "y",
               "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
            json!({"prompt": "p4", "response_a": "a4", "response_b": "b4", "model_a": "x", "model_b": "y"}),
        ],
    )
    .await;
    let pairs = [
        pair_id(&server, "p1").await,
        pair_id(&server, "p2").await,
        pair_id(&server, "p3").await,
        pair_id(&server, "p4").await,
    ];
    let mut r: Vec<ApiClient> = Vec::new();
    for name in ["r0", "r1"] {
        r.push(server.client_for(name, Role::Annotator).await);
    }
    // p1: a, a. p2: both bad, both bad. p3: b. p4: tie.
    vote(&r[0], pairs[0], "left", false, "1").await;
    vote(&r[1], pairs[0], "left", false, "2").await;
    vote(&r[0], pairs[1], "both_bad", false, "3").await;
    vote(&r[1], pairs[1], "both_bad", false, "4").await;
    vote(&r[0], pairs[2], "right", false, "5").await;
    vote(&r[0], pairs[3], "tie", false, "6").await;
    let get = |query: &str| {
        let admin = admin.clone();
        let path = format!("/api/v1/campaigns/{campaign}/export?{query}");
        async move { admin.get(&path).await }
    };
    let kto = get("format=kto").await;
    assert_eq!(kto.status, 200, "{}", kto.text);
    let p3_prompt = "user: hi\n\nassistant: hello\n\nuser: p3";
    assert_eq!(
        jsonl(&kto.text),
        vec![
            json!({"prompt": "p1", "completion": "a1", "label": true}),
            json!({"prompt": "p1", "completion": "b1", "label": false}),
            json!({"prompt": "p2", "completion": "a2", "label": false}),
            json!({"prompt": "p2", "completion": "b2", "label": false}),
            json!({"prompt": p3_prompt, "completion": "b3", "label": true}),
            json!({"prompt": p3_prompt, "completion": "a3", "label": false}),
        ]
    );
    let only_bad = jsonl(&get("format=kto&decisive=false&meta=true").await.text);
    assert_eq!(only_bad.len(), 2);
    assert_eq!((only_bad[0]["pair_id"].as_i64(), only_bad[0]["agreement"].as_f64()), (Some(pairs[1]), Some(1.0)));
    assert_eq!(jsonl(&get("format=kto&min_votes=2").await.text).len(), 4);
    let sft = jsonl(&get("format=sft").await.text);
    assert_eq!(
        sft,
        vec![
            json!({"prompt": "p1", "completion": "a1"}),
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                {"role": "user", "content": "p3"}, {"role": "assistant", "content": "b3"}]}),
        ]
    );
}
both_backends!(single_completion_exports);
