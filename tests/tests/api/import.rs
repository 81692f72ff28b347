//! Import: good files, de-duplication, sampling, and bad files that import nothing.

use pairwise_server::accounts::Role;
use pairwise_tests::{Backend, TestServer, both_backends, create_campaign, import};
use serde_json::json;

async fn pair_count(server: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM pairs").fetch_one(&server.sql).await.unwrap()
}

async fn import_good_and_bad_files(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "c", "status": "active"})).await;

    let three = json!({"prompt": "Explain DNS", "messages": [{"role": "system", "content": "Be brief."}],
        "source": "unit", "tags": ["net"],
        "responses": [{"text": "r1", "model": "m1", "checkpoint": "step-10", "params": {"temperature": 0.7}},
                      {"text": "r2", "model": "m2"}, {"text": "r3", "model": "m3"}]});
    let ready =
        json!({"prompt": "2+2?", "response_a": "4", "response_b": "5", "model_a": "m1", "model_b": "m2", "gold": "a"});
    let report = import(&admin, campaign, &[three.clone(), ready]).await;
    assert_eq!(report["pairs_created"], 4);
    assert_eq!(report["gold_pairs"], 1);
    assert_eq!(report["prompts_created"], 2);
    assert_eq!(report["responses_created"], 5);
    let stored: (String, Option<String>) =
        sqlx::query_as("SELECT params, model_version FROM responses WHERE text = 'r1'")
            .fetch_one(&server.sql)
            .await
            .unwrap();
    assert_eq!(stored.0, r#"{"temperature":0.7}"#);
    assert_eq!(stored.1.as_deref(), Some("step-10"));

    // Same content again: everything is recognised by its hash, nothing duplicated.
    let again = import(&admin, campaign, std::slice::from_ref(&three)).await;
    assert_eq!(again["pairs_created"], 0);
    assert_eq!(again["pairs_existing"], 3);
    assert_eq!(again["prompts_reused"], 1);
    assert_eq!(again["responses_reused"], 3);
    assert_eq!(pair_count(&server).await, 4);

    // Sampled pairing: 4 responses would give 6 pairs; ask for 2.
    let four = json!({"prompt": "Name a colour", "responses": [
        {"text": "red", "model": "a"}, {"text": "blue", "model": "b"}, {"text": "green", "model": "c"}, {"text": "cyan", "model": "d"}]});
    let reply = admin
        .post_body(&format!("/api/v1/campaigns/{campaign}/import?max_pairs_per_prompt=2&seed=3"), format!("{four}\n"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["pairs_created"], 2);
    assert_eq!(pair_count(&server).await, 6);

    // A file with one bad line among good ones imports nothing and names line and field.
    let good = json!({"prompt": "new prompt", "responses": [{"text": "x", "model": "m"}, {"text": "y", "model": "m"}]});
    let body = format!(
        "{good}\n\n{}\n{}\nnot json\n",
        json!({"prompt": "p", "responses": [{"text": "x", "model": "m"}, {"text": "y"}]}),
        json!({"prompt": "", "response_a": "a", "response_b": "b", "gold": "left"})
    );
    let reply = admin.post_body(&format!("/api/v1/campaigns/{campaign}/import"), body).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(
        reply.json["message"].as_str().unwrap().starts_with("line 3: field `responses[1].model` is required"),
        "{}",
        reply.text
    );
    let errors = reply.json["details"]["errors"].as_array().unwrap();
    let located: Vec<(i64, &str)> =
        errors.iter().map(|e| (e["line"].as_i64().unwrap(), e["field"].as_str().unwrap())).collect();
    assert!(located.contains(&(4, "prompt")), "{located:?}");
    assert!(located.contains(&(4, "gold")), "{located:?}");
    assert!(located.contains(&(5, "")), "{located:?}");
    assert_eq!(pair_count(&server).await, 6, "a rejected file must not write anything");
    let prompts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM prompts WHERE text = 'new prompt'")
        .fetch_one(&server.sql)
        .await
        .unwrap();
    assert_eq!(prompts, 0);

    // Size limit: a clear 413 beyond the configured maximum.
    server.stop().await;
    let server = TestServer::start_with(backend, |c| c.max_import_bytes = 1000).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "small"})).await;
    let reply = admin.post_body(&format!("/api/v1/campaigns/{campaign}/import"), "x".repeat(2000)).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    // Unknown campaign.
    let reply = admin.post_body("/api/v1/campaigns/999/import", format!("{good}\n")).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    server.stop().await;
}
both_backends!(import_good_and_bad_files);
