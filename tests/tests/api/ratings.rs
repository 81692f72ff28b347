//! Thumbs and scale campaigns from import to export on both databases: one task per
//! response, handed out under leases and never swapped, ratings checked against the
//! campaign's scale (a wrong vote stores nothing), corrections of the one response,
//! agreement (nominal for thumbs, ordinal for the scale), the mean-rating leaderboard, the
//! kto / sft / raw exports with their threshold, and runs limited to kto and sft.

use pairwise_server::accounts::Role;
use pairwise_tests::{ApiClient, Backend, TestServer, both_backends, create_campaign, import, jsonl, with_trainer};
use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
use serde_json::{Value, json};

async fn count(server: &TestServer, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&server.sql).await.unwrap()
}

fn responses(models: &[&str], prompt: &str) -> Value {
    Value::Array(models.iter().map(|m| json!({"text": format!("{prompt} from {m}"), "model": m})).collect())
}

/// Rates the rater's current task with `rating_of(response text)` (and a correction when
/// `fix` gives one); returns the task as served.
async fn rate_next(
    rater: &ApiClient,
    campaign: i64,
    key: &str,
    rating_of: impl Fn(&str) -> i64,
    fix: impl Fn(&str) -> Option<String>,
) -> Value {
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(next["status"], "assigned", "{next}");
    let task = next["pair"].clone();
    let text = task["left"].as_str().unwrap();
    assert_eq!(task["right"], "", "a single-response task has no right response: {task}");
    let mut body = json!({"assignment_id": task["assignment_id"], "rating": rating_of(text), "rationale": "by model",
                          "time_ms": 2000, "client_key": key});
    if let Some(fixed) = fix(text) {
        body["correction"] = json!({"side": "left", "text": fixed});
    }
    let reply = rater.post("/api/v1/votes", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["vote"]["choice"], "a", "{}", reply.text);
    let again = rater.post("/api/v1/votes", &body).await;
    assert_eq!(again.json["duplicate"], true, "{}", again.text);
    task
}

/// r0's fix of p1's bad answer.
fn fix_p1_bad(text: &str) -> Option<String> {
    (text == "p1 from bad").then(|| "p1, answered properly".to_string())
}

async fn thumbs_campaign_from_import_to_export(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(backend, with_trainer(dir.path())).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let refused =
        admin.post("/api/v1/campaigns", &json!({"name": "x", "kind": "thumbs", "aspects": [{"name": "a"}]})).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("aspects: thumbs and scale campaigns ask for one rating"), "{}", refused.text);
    let campaign =
        create_campaign(&admin, json!({"name": "thumbs", "kind": "thumbs", "overlap": 2, "status": "active"})).await;
    assert_eq!(admin.get(&format!("/api/v1/campaigns/{campaign}")).await.json["kind"], "thumbs");

    // Ready pairs and gold rankings are refused with their line and field.
    let url = format!("/api/v1/campaigns/{campaign}/import");
    let fine = json!({"prompt": "ok", "responses": responses(&["good"], "ok")});
    for (line, problem) in [
        (
            json!({"prompt": "p", "response_a": "a", "response_b": "b"}),
            "line 2: field `response_a` a thumbs campaign rates",
        ),
        (
            json!({"prompt": "p", "responses": responses(&["a", "b"], "p"), "gold_ranks": [1, 2]}),
            "line 2: field `gold_ranks` thumbs and scale campaigns have no gold checks",
        ),
    ] {
        let reply = admin.post_body(&url, format!("{fine}\n{line}\n")).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert!(reply.text.contains(problem), "{problem}: {}", reply.text);
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM pairs").await, 0);

    // Each response is a task of its own; importing again changes nothing.
    let lines = [
        json!({"prompt": "p1", "responses": responses(&["good", "bad"], "p1")}),
        json!({"prompt": "p2", "responses": responses(&["good", "bad"], "p2")}),
    ];
    let report = import(&admin, campaign, &lines).await;
    assert_eq!((report["pairs_created"].as_i64(), report["responses_created"].as_i64()), (Some(4), Some(4)));
    assert_eq!(import(&admin, campaign, &lines).await["pairs_existing"], 4);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM pairs WHERE response_b_id IS NULL").await, 4);

    let r0 = server.client_for("r0", Role::Annotator).await;
    let r1 = server.client_for("r1", Role::Annotator).await;
    let next = r0.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let assignment = next["pair"]["assignment_id"].clone();
    assert!(next["pair"].get("responses").is_none(), "{next}");
    for (body, problem) in [
        (json!({"choice": "left"}), "rating: required; this campaign rates one response at a time"),
        (json!({"rating": 2}), "rating: 2 is not 1 (thumbs up) or 0 (thumbs down)"),
        (json!({"rating": 1, "choice": "left"}), "give rating (a single response) without choice or ranks"),
        (json!({"rating": 1, "strength": 2}), "a rating vote takes a rating, a reason and a correction only"),
        (json!({"ranks": [1, 2]}), "rating: required; this campaign rates one response at a time"),
        (
            json!({"rating": 0, "correction": {"side": "right", "text": "fixed"}}),
            "correction.side: this task has one response, `left`",
        ),
    ] {
        let mut body = body;
        body["assignment_id"] = assignment.clone();
        body["client_key"] = json!("bad");
        let reply = r0.post("/api/v1/votes", &body).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        assert!(reply.text.contains(problem), "{body}: {}", reply.text);
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM comparisons").await, 0);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM responses").await, 4);

    // Good answers get thumbs up, except r1's on p2; r0 fixes p1's bad answer.
    let rating = |rater: &'static str| {
        move |text: &str| i64::from(text == "p1 from good" || (text == "p2 from good" && rater == "r0"))
    };
    for (rater, name) in [(&r0, "r0"), (&r1, "r1")] {
        for i in 0..4 {
            let fix: fn(&str) -> Option<String> = if name == "r0" { fix_p1_bad } else { |_| None };
            rate_next(rater, campaign, &format!("{name}-{i}"), rating(name), fix).await;
        }
        assert_eq!(rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json["status"], "done");
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM rating_votes").await, 8);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM comparisons WHERE swapped <> 0").await, 0, "never swapped");
    assert_eq!(count(&server, "SELECT COUNT(*) FROM assignments WHERE swapped <> 0").await, 0, "never swapped");
    assert_eq!(count(&server, "SELECT COUNT(*) FROM corrections").await, 1);

    let get = |query: String| {
        let admin = admin.clone();
        async move { admin.get(&format!("/api/v1/campaigns/{campaign}/{query}")).await }
    };
    let stats = get("stats".into()).await.json;
    let rating_stats = &stats["rating"];
    assert_eq!(rating_stats["votes"], 8, "{stats}");
    assert_eq!(rating_stats["counts"], json!([[0, 5], [1, 3]]), "{stats}");
    assert!((rating_stats["mean"].as_f64().unwrap() - 3.0 / 8.0).abs() < 1e-12);
    // Units (1,1), (0,0), (1,0), (0,0): coincidences o00 = 4, o11 = 2, o01 = o10 = 1, n = 8,
    // marginals 5 and 3: nominal alpha = 1 − 2 / ((64 − 34) / 7).
    let agreement = &rating_stats["agreement"];
    assert!((agreement["krippendorff_alpha"].as_f64().unwrap() - (1.0 - 2.0 / (30.0 / 7.0))).abs() < 1e-9, "{stats}");
    assert!((agreement["percent"].as_f64().unwrap() - 0.75).abs() < 1e-12, "{stats}");
    assert_eq!(agreement["pairs_with_multiple_votes"], 4);
    assert_eq!(stats["agreement"], *agreement, "the campaign's agreement is the ratings'");
    assert_eq!(stats["position_bias"]["decisive_votes"], 0, "one response has no side to favour");
    assert_eq!(stats["progress"]["votes"], 8);
    for rater in stats["raters"].as_array().unwrap() {
        assert!((rater["agreement_with_others"].as_f64().unwrap() - 0.75).abs() < 1e-12, "{rater}");
    }

    let board = get("leaderboard?bootstrap=50".into()).await.json;
    assert_eq!((board["fit"].as_str(), board["battles"].as_i64()), (Some("mean_rating"), Some(8)), "{board}");
    let good = &board["models"][0];
    assert_eq!((good["model"].as_str(), good["score"].as_f64()), (Some("good"), Some(0.75)), "{board}");
    assert_eq!((good["wins"].as_i64(), good["losses"].as_i64()), (Some(3), Some(1)));
    assert_eq!(board["models"][1]["score"], 0.0);
    assert_eq!(get("leaderboard?aspect=honesty".into()).await.status, 422);

    // kto: p1's good answer desirable, both bad ones not; p2's good one is split, left out.
    let labels = |rows: Vec<Value>| -> Vec<(String, bool)> {
        rows.iter().map(|r| (r["completion"].as_str().unwrap().to_string(), r["label"].as_bool().unwrap())).collect()
    };
    let kto = labels(jsonl(&get("export?format=kto".into()).await.text));
    assert_eq!(
        kto,
        [("p1 from good".to_string(), true), ("p1 from bad".to_string(), false), ("p2 from bad".to_string(), false)]
    );
    let lenient = labels(jsonl(&get("export?format=kto&threshold=0.4".into()).await.text));
    assert!(lenient.contains(&("p2 from good".to_string(), true)) && lenient.len() == 4, "{lenient:?}");
    let unanimous = jsonl(&get("export?format=kto&min_agreement=1".into()).await.text);
    assert_eq!(unanimous.len(), 3);
    for (query, problem) in [
        ("export?format=kto&threshold=2", "threshold: 2 is outside the campaign's ratings (0-1)"),
        ("export?format=trl", "format: `trl` needs choices between responses; a thumbs campaign"),
        ("export?format=ranking", "exports kto, sft or raw"),
    ] {
        let reply = get(query.into()).await;
        assert_eq!(reply.status, 422, "{query}: {}", reply.text);
        assert!(reply.text.contains(problem), "{query}: {}", reply.text);
    }
    // sft: the correction of p1's bad answer, and p1's well-rated good one.
    let sft = jsonl(&get("export?format=sft&meta=true".into()).await.text);
    let sft: Vec<(&str, &str)> =
        sft.iter().map(|r| (r["completion"].as_str().unwrap(), r["source"].as_str().unwrap())).collect();
    assert_eq!(sft, [("p1 from good", "consensus"), ("p1, answered properly", "correction")]);

    let raw = jsonl(&get("export?format=raw&raters=id".into()).await.text);
    assert_eq!(raw.len(), 8);
    assert!(raw.iter().all(|r| r["rating"].is_i64() && r["model"].is_string() && r["rationale"] == "by model"));
    let fixed = raw.iter().find(|r| r.get("correction").is_some()).expect("the corrected vote");
    assert_eq!((fixed["correction"].as_str(), fixed["rating"].as_i64()), (Some("p1, answered properly"), Some(0)));
    let cursor = raw.iter().map(|r| r["seq"].as_i64().unwrap()).max().unwrap();
    assert!(jsonl(&get(format!("export?format=raw&since={cursor}")).await.text).is_empty());
    // `since`: only the task of the last vote comes back, judged on all of its votes.
    let last_task = raw.iter().find(|r| r["seq"] == cursor).unwrap()["task_id"].clone();
    let of_last_task: Vec<Value> = jsonl(&get("export?format=kto&meta=true".into()).await.text)
        .into_iter()
        .filter(|row| row["pair_id"] == last_task)
        .collect();
    assert_eq!(jsonl(&get(format!("export?format=kto&meta=true&since={}", cursor - 1)).await.text), of_last_task);

    // Runs train kto or sft on ratings; preference methods are refused before they start.
    let runs = format!("/api/v1/campaigns/{campaign}/runs");
    let refused = admin.post(&runs, &json!({"method": "dpo", "model": "/nowhere"})).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused.text.contains("a thumbs campaign rates one response at a time, so its runs are kto"),
        "{}",
        refused.text
    );
    let model = dir.path().join("model");
    write_tiny_model(&model, &tiny_config(), 2).unwrap();
    for (method, rows) in [("kto", 3), ("sft", 2)] {
        let spec = json!({"method": method, "model": model.display().to_string(),
                          "args": ["--max-steps", "1", "--batch-size", "2", "--max-length", "48"]});
        let started = admin.post(&runs, &spec).await;
        assert_eq!(started.status, 201, "{method}: {}", started.text);
        let mut run = started.json;
        while run["status"] == "running" {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            run = admin.get(&format!("/api/v1/runs/{}", run["id"])).await.json;
        }
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!((run["config"]["export"]["format"].as_str(), run["data_rows"].as_i64()), (Some(method), Some(rows)));
    }
}
both_backends!(thumbs_campaign_from_import_to_export);

/// A 1-5 scale: its range is checked, stats count every value (ordinal alpha), kto splits at
/// the middle or the given threshold; a pairwise campaign refuses ratings.
async fn scale_campaign_and_pairs_stay_apart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign =
        create_campaign(&admin, json!({"name": "scale", "kind": "scale", "overlap": 2, "status": "active"})).await;
    let history = json!([{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}]);
    import(&admin, campaign, &[json!({"prompt": "q", "messages": history, "responses": responses(&["m", "n"], "q")})])
        .await;
    let r0 = server.client_for("r0", Role::Annotator).await;
    let r1 = server.client_for("r1", Role::Annotator).await;
    let next = r0.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let bad = json!({"assignment_id": next["pair"]["assignment_id"], "rating": 0, "client_key": "bad"});
    let reply = r0.post("/api/v1/votes", &bad).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("rating: 0 is not a whole number from 1 to 5"), "{}", reply.text);
    // m is rated 5 and 4, n 2 and 2.
    let score =
        |rater: &'static str| move |text: &str| if text.ends_with('m') { if rater == "r0" { 5 } else { 4 } } else { 2 };
    for (rater, name) in [(&r0, "r0"), (&r1, "r1")] {
        for i in 0..2 {
            rate_next(rater, campaign, &format!("{name}-{i}"), score(name), |_| None).await;
        }
    }
    let stats = admin.get(&format!("/api/v1/campaigns/{campaign}/stats")).await.json;
    assert_eq!(stats["rating"]["counts"], json!([[1, 0], [2, 2], [3, 0], [4, 1], [5, 1]]), "{stats}");
    assert!((stats["rating"]["mean"].as_f64().unwrap() - 3.25).abs() < 1e-12);
    assert!(stats["rating"]["agreement"]["krippendorff_alpha"].as_f64().unwrap() > 0.5, "{stats}");
    let export = |query: &str| {
        let admin = admin.clone();
        let url = format!("/api/v1/campaigns/{campaign}/export?{query}");
        async move { jsonl(&admin.get(&url).await.text) }
    };
    let kto = export("format=kto").await;
    assert_eq!(kto.len(), 2);
    assert_eq!((kto[0]["completion"].as_str(), kto[0]["label"].as_bool()), (Some("q from m"), Some(true)));
    assert_eq!(kto[0]["prompt"], "user: earlier\n\nassistant: reply\n\nuser: q");
    assert_eq!(kto[1]["label"], false);
    let strict = export("format=kto&threshold=4.5").await;
    assert!(strict.iter().all(|row| row["label"] == false), "{strict:?}");
    let sft = export("format=sft").await;
    assert_eq!(sft.len(), 1);
    assert_eq!(sft[0]["messages"][3], json!({"role": "assistant", "content": "q from m"}));

    let pairs = create_campaign(&admin, json!({"name": "pairs", "status": "active"})).await;
    import(&admin, pairs, &[json!({"prompt": "p", "response_a": "a", "response_b": "b"})]).await;
    let next = r0.get(&format!("/api/v1/campaigns/{pairs}/next")).await.json;
    let reply = r0
        .post("/api/v1/votes", &json!({"assignment_id": next["pair"]["assignment_id"], "rating": 1, "client_key": "k"}))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("rating: this campaign asks for a choice between two responses"), "{}", reply.text);
    let reply = admin.get(&format!("/api/v1/campaigns/{pairs}/export?format=kto&threshold=3")).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("threshold: only thumbs and scale campaigns"), "{}", reply.text);
}
both_backends!(scale_campaign_and_pairs_stay_apart);
