//! Feedback beyond the overall choice, from import to export on both databases: per-aspect
//! campaigns (aspects checked, chosen with every vote, exported, counted in stats, ranked in
//! the leaderboard and trained on by a run) and corrections (a new revision linked to the
//! original; `sft`).

use pairwise_server::accounts::Role;
use pairwise_tests::{ApiClient, Backend, TestServer, both_backends, create_campaign, import, jsonl, with_trainer};
use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
use serde_json::{Value, json};

async fn pair_id(server: &TestServer, prompt: &str) -> i64 {
    sqlx::query_scalar("SELECT p.id FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id WHERE pr.text = $1")
        .bind(prompt)
        .fetch_one(&server.sql)
        .await
        .unwrap()
}

async fn count(server: &TestServer, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&server.sql).await.unwrap()
}

/// A free vote (the test picks the pair and its left/right order).
async fn vote(rater: &ApiClient, pair: i64, swapped: bool, key: &str, extra: Value) -> pairwise_tests::Reply {
    let mut body = json!({"pair_id": pair, "swapped": swapped, "choice": "left", "time_ms": 900, "client_key": key});
    for (field, value) in extra.as_object().unwrap() {
        body[field] = value.clone();
    }
    rater.post("/api/v1/votes", &body).await
}

async fn aspect_campaign_from_import_to_export(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(backend, with_trainer(dir.path())).await;
    let admin = server.client_for("admin", Role::Admin).await;
    for (aspects, problem) in [
        (json!([{"name": "Helpful"}]), "aspects[0].name: `Helpful` must be 1-40 characters"),
        (json!([{"name": "honesty"}, {"name": "honesty"}]), "aspects[1].name: `honesty` is listed twice"),
    ] {
        let reply = admin.post("/api/v1/campaigns", &json!({"name": "bad", "aspects": aspects})).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert!(reply.text.contains(problem), "{}", reply.text);
    }
    let campaign = create_campaign(
        &admin,
        json!({"name": "aspects", "overlap": 3, "status": "active", "free_votes": true,
               "aspects": [{"name": "helpfulness", "description": "Does it do what was asked?"}, {"name": "honesty"}]}),
    )
    .await;
    let shown = admin.get(&format!("/api/v1/campaigns/{campaign}")).await.json;
    assert_eq!(shown["aspects"][0], json!({"name": "helpfulness", "description": "Does it do what was asked?"}));
    import(
        &admin,
        campaign,
        &[
            json!({"prompt": "p1", "response_a": "a1", "response_b": "b1", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p2", "response_a": "a2", "response_b": "b2", "model_a": "x", "model_b": "y"}),
        ],
    )
    .await;
    let (p1, p2) = (pair_id(&server, "p1").await, pair_id(&server, "p2").await);
    let mut r: Vec<ApiClient> = Vec::new();
    for name in ["r0", "r1", "r2"] {
        r.push(server.client_for(name, Role::Annotator).await);
    }

    // Every aspect is required, unknown ones are refused, and a refused vote stores nothing.
    let missing = vote(&r[0], p1, false, "k0", json!({"aspects": {"helpfulness": "left"}})).await;
    assert_eq!(missing.status, 422, "{}", missing.text);
    assert!(missing.text.contains("aspects.honesty: missing"), "{}", missing.text);
    let none = vote(&r[0], p1, false, "k0", json!({})).await;
    assert!(none.text.contains("aspects.helpfulness: missing"), "{}", none.text);
    let unknown =
        vote(&r[0], p1, false, "k0", json!({"aspects": {"helpfulness": "left", "honesty": "left", "style": "tie"}}))
            .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    assert!(unknown.text.contains("aspects.style: not an aspect of this campaign"), "{}", unknown.text);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM comparisons").await, 0);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM aspect_votes").await, 0);

    // p1: helpfulness a, a, a; honesty b, b, tie (r1 saw the pair swapped). p2: both b.
    let votes = [
        (0, p1, false, "left", json!({"helpfulness": "left", "honesty": "right"})),
        (1, p1, true, "right", json!({"helpfulness": "right", "honesty": "left"})),
        (2, p1, false, "left", json!({"helpfulness": "left", "honesty": "tie"})),
        (0, p2, false, "right", json!({"helpfulness": "right", "honesty": "right"})),
    ];
    for (i, (rater, pair, swapped, choice, aspects)) in votes.iter().enumerate() {
        let reply =
            vote(&r[*rater], *pair, *swapped, &format!("v{i}"), json!({"choice": choice, "aspects": aspects})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // A resubmission is the stored vote, whatever it carries.
    let again = vote(&r[0], p1, false, "v0", json!({"aspects": {"helpfulness": "tie", "honesty": "tie"}})).await;
    assert_eq!((again.status, again.json["duplicate"].as_bool()), (200, Some(true)), "{}", again.text);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM aspect_votes").await, 8);

    let get = |query: String| {
        let admin = admin.clone();
        async move { admin.get(&format!("/api/v1/campaigns/{campaign}/{query}")).await }
    };
    assert_eq!(
        jsonl(&get("export?format=trl&aspect=honesty".into()).await.text),
        vec![
            json!({"prompt": "p1", "chosen": "b1", "rejected": "a1"}),
            json!({"prompt": "p2", "chosen": "b2", "rejected": "a2"}),
        ]
    );
    assert_eq!(
        jsonl(&get("export?format=trl&aspect=helpfulness".into()).await.text)[0],
        json!({"prompt": "p1", "chosen": "a1", "rejected": "b1"})
    );
    let raw = jsonl(&get("export?format=raw&aspect=honesty".into()).await.text);
    let choices: Vec<&str> = raw.iter().map(|v| v["choice"].as_str().unwrap()).collect();
    assert_eq!(choices, ["b", "b", "tie", "b"]);
    assert!(raw.iter().all(|v| v["aspect"] == "honesty" && v["strength"].is_null()));
    let overall = jsonl(&get("export?format=raw".into()).await.text);
    assert!(overall.iter().all(|v| v.get("aspect").is_none()));
    let bad = get("export?format=trl&aspect=style".into()).await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("aspect: `style` is not an aspect of this campaign (it has helpfulness, honesty)"));

    let stats = get("stats".into()).await.json;
    let helpfulness = &stats["aspects"][0];
    assert_eq!(helpfulness["name"], "helpfulness");
    assert_eq!(
        (helpfulness["a"].as_i64(), helpfulness["b"].as_i64(), helpfulness["votes"].as_i64()),
        (Some(3), Some(1), Some(4))
    );
    assert_eq!(helpfulness["agreement"]["percent"].as_f64(), Some(1.0));
    assert_eq!(helpfulness["agreement"]["pairs_with_multiple_votes"].as_i64(), Some(1));
    let honesty = &stats["aspects"][1];
    assert_eq!((honesty["b"].as_i64(), honesty["tie"].as_i64()), (Some(3), Some(1)));
    assert!((honesty["agreement"]["percent"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{honesty}");

    let by_honesty = get("leaderboard?aspect=honesty&bootstrap=20".into()).await.json;
    assert_eq!(by_honesty["models"][0]["model"], "y", "{by_honesty}");
    let by_help = get("leaderboard?aspect=helpfulness&bootstrap=20".into()).await.json;
    assert_eq!(by_help["models"][0]["model"], "x", "{by_help}");
    assert_eq!(get("leaderboard?aspect=style".into()).await.status, 422);

    // A run trains on one aspect's preferences: its snapshot is that aspect's export.
    let model = dir.path().join("model");
    write_tiny_model(&model, &tiny_config(), 2).unwrap();
    let spec = |aspect: &str| {
        json!({"method": "reward", "model": model.display().to_string(), "aspect": aspect,
               "args": ["--max-steps", "1", "--batch-size", "2", "--max-length", "48"]})
    };
    let runs = format!("/api/v1/campaigns/{campaign}/runs");
    let refused = admin.post(&runs, &spec("style")).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("aspect: `style` is not an aspect of campaign"), "{}", refused.text);
    let started = admin.post(&runs, &spec("honesty")).await;
    assert_eq!(started.status, 201, "{}", started.text);
    let mut run = started.json;
    while run["status"] == "running" {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        run = admin.get(&format!("/api/v1/runs/{}", run["id"])).await.json;
    }
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["config"]["export"]["aspect"], "honesty", "{run}");
    let data = jsonl(&admin.get(&format!("/api/v1/runs/{}/files/data.jsonl", run["id"])).await.text);
    let chosen: Vec<&str> = data.iter().map(|row| row["chosen"].as_str().unwrap()).collect();
    assert_eq!(chosen, ["b1", "b2"], "the honesty preferences: {data:?}");

    // Aspects are fixed once votes exist; a campaign without aspects refuses them.
    let locked = admin.patch(&format!("/api/v1/campaigns/{campaign}"), &json!({"aspects": [{"name": "style"}]})).await;
    assert_eq!(locked.status, 409, "{}", locked.text);
    assert!(locked.text.contains("aspects_locked"), "{}", locked.text);
    let plain = create_campaign(&admin, json!({"name": "plain", "status": "active", "free_votes": true})).await;
    import(&admin, plain, &[json!({"prompt": "q", "response_a": "qa", "response_b": "qb"})]).await;
    let q = pair_id(&server, "q").await;
    let refused = vote(&r[0], q, false, "plain-1", json!({"aspects": {"honesty": "left"}})).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("aspects: this campaign asks only for the overall choice"), "{}", refused.text);
}
both_backends!(aspect_campaign_from_import_to_export);

async fn corrections_are_new_revisions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign =
        create_campaign(&admin, json!({"name": "fixes", "overlap": 3, "status": "active", "free_votes": true})).await;
    import(
        &admin,
        campaign,
        &[
            json!({"prompt": "p1", "response_a": "a1", "response_b": "b1", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p2", "response_a": "a2", "response_b": "b2", "model_a": "x", "model_b": "y"}),
            json!({"prompt": "p3", "response_a": "a3", "response_b": "b3", "model_a": "x", "model_b": "y"}),
        ],
    )
    .await;
    let (p1, p2) = (pair_id(&server, "p1").await, pair_id(&server, "p2").await);
    let r0 = server.client_for("r0", Role::Annotator).await;
    let r1 = server.client_for("r1", Role::Annotator).await;

    for (correction, problem) in [
        (
            json!({"side": "right", "text": "b1 but better"}),
            "correction.side: correct the response you chose as better (left)",
        ),
        (json!({"side": "left", "text": "a1"}), "correction.text: is the same as the response"),
        (json!({"side": "left", "text": "  "}), "correction.text: must not be empty"),
    ] {
        let reply = vote(&r0, p1, false, "c1", json!({"correction": correction})).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert!(reply.text.contains(problem), "{}", reply.text);
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM comparisons").await, 0);

    // r0 prefers a1 and fixes it; r1 finds p2 both bad and fixes the right one, which is a2
    // on their swapped screen.
    let fixed = vote(&r0, p1, false, "c1", json!({"correction": {"side": "left", "text": "a1, fixed"}})).await;
    assert_eq!(fixed.status, 200, "{}", fixed.text);
    let again = vote(&r0, p1, false, "c1", json!({"correction": {"side": "left", "text": "a1, fixed"}})).await;
    assert_eq!(again.json["duplicate"].as_bool(), Some(true), "{}", again.text);
    let both_bad =
        vote(&r1, p2, true, "c2", json!({"choice": "both_bad", "correction": {"side": "right", "text": "a2, fixed"}}))
            .await;
    assert_eq!(both_bad.status, 200, "{}", both_bad.text);
    let plain = vote(&r1, p1, false, "c3", json!({"choice": "right"})).await;
    assert_eq!(plain.status, 200, "{}", plain.text);

    let links: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT k.pair_id, o.text, n.text, n.model, n.params FROM corrections k \
         JOIN responses o ON o.id = k.original_response_id JOIN responses n ON n.id = k.response_id ORDER BY k.pair_id",
    )
    .fetch_all(&server.sql)
    .await
    .unwrap();
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(
        (links[0].0, links[0].1.as_str(), links[0].2.as_str(), links[0].3.as_str()),
        (p1, "a1", "a1, fixed", "x")
    );
    assert_eq!((links[1].0, links[1].1.as_str(), links[1].2.as_str()), (p2, "a2", "a2, fixed"));
    let a1_id: i64 =
        sqlx::query_scalar("SELECT id FROM responses WHERE text = 'a1'").fetch_one(&server.sql).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&links[0].4).unwrap(), json!({"revision_of": a1_id}));
    // The originals stay, and the pairs still point at them.
    assert_eq!(count(&server, "SELECT COUNT(*) FROM responses WHERE text IN ('a1', 'a2')").await, 2);
    assert_eq!(
        count(
            &server,
            "SELECT COUNT(*) FROM pairs p JOIN responses r ON r.id = p.response_a_id WHERE r.text LIKE '%fixed'"
        )
        .await,
        0
    );

    let export = |query: &'static str| {
        let admin = admin.clone();
        async move { jsonl(&admin.get(&format!("/api/v1/campaigns/{campaign}/export?{query}")).await.text) }
    };
    // sft takes the corrections (p1 despite its split vote, p2 despite both bad).
    assert_eq!(
        export("format=sft").await,
        vec![json!({"prompt": "p1", "completion": "a1, fixed"}), json!({"prompt": "p2", "completion": "a2, fixed"})]
    );
    assert_eq!(export("format=sft&meta=true").await[0]["source"], "correction");
    // The preference formats are unchanged by corrections.
    assert!(export("format=trl").await.is_empty());
}
both_backends!(corrections_are_new_revisions);
