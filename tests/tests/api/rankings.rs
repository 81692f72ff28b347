//! Ranking campaigns from import to export on both databases: tasks of 2-6 responses handed
//! out under leases in each lease's own screen order, ranks with ties and "all bad", the
//! checks that refuse a wrong vote (and store nothing), agreement and position figures, the
//! Plackett–Luce leaderboard, and every export format.

use pairwise_server::accounts::Role;
use pairwise_tests::{ApiClient, Backend, TestServer, both_backends, create_campaign, import, jsonl};
use serde_json::{Value, json};

async fn count(server: &TestServer, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&server.sql).await.unwrap()
}

/// The model a test response names: texts are `PROMPT from MODEL`.
fn model_of(text: &str) -> &str {
    text.rsplit(' ').next().unwrap()
}

fn responses(models: &[&str], prompt: &str) -> Value {
    Value::Array(models.iter().map(|m| json!({"text": format!("{prompt} from {m}"), "model": m})).collect())
}

/// Takes the rater's current task and ranks it: `rank_of(prompt, model)` per shown response,
/// `all_bad` when `all_bad(prompt)`. Returns the task as served.
async fn rank_next(
    rater: &ApiClient,
    campaign: i64,
    key: &str,
    rank_of: impl Fn(&str, &str) -> i64,
    all_bad: impl Fn(&str) -> bool,
) -> Value {
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(next["status"], "assigned", "{next}");
    let task = next["pair"].clone();
    let prompt = task["prompt"].as_str().unwrap();
    let shown: Vec<&str> = task["responses"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!((task["left"].as_str(), task["right"].as_str()), (Some(shown[0]), Some(shown[1])));
    let ranks: Vec<i64> = shown.iter().map(|text| rank_of(prompt, model_of(text))).collect();
    let body = json!({"assignment_id": task["assignment_id"], "ranks": ranks, "all_bad": all_bad(prompt),
                      "rationale": "ordered by model", "time_ms": 3000, "client_key": key});
    let reply = rater.post("/api/v1/votes", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let again = rater.post("/api/v1/votes", &body).await;
    assert_eq!(again.json["duplicate"], true, "{}", again.text);
    task
}

async fn ranking_campaign_from_import_to_export(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    for (extra, problem) in [
        (json!({"free_votes": true}), "free_votes: ranking campaigns take votes on leased tasks only"),
        (json!({"aspects": [{"name": "honesty"}]}), "aspects: ranking campaigns ask for one ranking per task"),
    ] {
        let mut body = json!({"name": "bad", "kind": "ranking"});
        for (field, value) in extra.as_object().unwrap() {
            body[field] = value.clone();
        }
        let reply = admin.post("/api/v1/campaigns", &body).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert!(reply.text.contains(problem), "{}", reply.text);
    }
    let campaign =
        create_campaign(&admin, json!({"name": "rankings", "kind": "ranking", "overlap": 2, "status": "active"})).await;
    assert_eq!(admin.get(&format!("/api/v1/campaigns/{campaign}")).await.json["kind"], "ranking");

    // Ready pairs and lists longer than six are refused with their line and field.
    let url = format!("/api/v1/campaigns/{campaign}/import");
    let pair_line = json!({"prompt": "p", "response_a": "a", "response_b": "b"});
    let reply = admin
        .post_body(
            &url,
            format!("{}\n{pair_line}\n", json!({"prompt": "ok", "responses": responses(&["x", "y"], "ok")})),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("line 2: field `response_a` a ranking campaign imports a prompt"), "{}", reply.text);
    let seven = json!({"prompt": "p", "responses": responses(&["a", "b", "c", "d", "e", "f", "g"], "p")});
    let reply = admin.post_body(&url, format!("{seven}\n")).await;
    assert!(reply.text.contains("has 7 responses; a ranking task has at most 6"), "{}", reply.text);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM pairs").await, 0);

    let history = json!([{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}]);
    let lines = [
        json!({"prompt": "t1", "responses": responses(&["x", "y", "z"], "t1")}),
        json!({"prompt": "t2", "messages": history, "responses": responses(&["w", "x", "y", "z"], "t2")}),
    ];
    let report = import(&admin, campaign, &lines).await;
    assert_eq!((report["pairs_created"].as_i64(), report["responses_created"].as_i64()), (Some(2), Some(7)));
    // Importing the same file again changes nothing; the same first two with others is refused.
    assert_eq!(import(&admin, campaign, &lines).await["pairs_existing"], 2);
    let clash = json!({"prompt": "t1", "responses": responses(&["x", "y", "w"], "t1")});
    let reply = admin.post_body(&url, format!("{clash}\n")).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("starts with the same two responses but lists others"), "{}", reply.text);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM ranking_responses").await, 7);

    let r0 = server.client_for("r0", Role::Annotator).await;
    let r1 = server.client_for("r1", Role::Annotator).await;
    // Wrong votes are refused and store nothing.
    let next = r0.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let task = &next["pair"];
    let k = task["responses"].as_array().unwrap().len();
    assert_eq!(
        r0.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json["pair"],
        *task,
        "a lease keeps its order"
    );
    let assignment = task["assignment_id"].clone();
    for (body, problem) in [
        (json!({"choice": "left"}), "ranks: required; this campaign ranks all of a task's responses"),
        (json!({"choice": "left", "ranks": [1, 2]}), "give choice (a pair) or ranks (a ranking task), not both"),
        (json!({"ranks": vec![1; k + 1]}), "but this task has"),
        (json!({"ranks": vec![9; k]}), "ranks[0]: 9 is not between 1 and"),
        (json!({"ranks": vec![1; k], "strength": 2}), "strength: a ranking vote has no strength"),
    ] {
        let mut body = body;
        body["assignment_id"] = assignment.clone();
        body["client_key"] = json!("bad");
        let reply = r0.post("/api/v1/votes", &body).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        assert!(reply.text.contains(problem), "{body}: {}", reply.text);
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM comparisons").await, 0);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM ranking_votes").await, 0);

    // Both raters rank by model, x best; on t2 r1 ties y and z and marks all bad.
    let order = |rater: &'static str| {
        move |prompt: &str, model: &str| match (model, rater, prompt) {
            ("x", _, _) => 1,
            ("y", _, _) => 2,
            ("z", "r1", "t2") => 2,
            ("z", _, _) => 3,
            _ => 4,
        }
    };
    let mut shown = Vec::new();
    for (rater, name) in [(&r0, "r0"), (&r1, "r1")] {
        for i in 0..2 {
            let task =
                rank_next(rater, campaign, &format!("{name}-{i}"), order(name), |p| name == "r1" && p == "t2").await;
            shown.push(task["responses"].clone());
        }
        assert_eq!(rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json["status"], "done");
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM ranking_votes").await, 14);
    // The vote's choice is what its ranking says of responses a and b (t1: x over y; t2: w
    // under x; r1's t2: all bad).
    let choices: Vec<String> = sqlx::query_scalar(
        "SELECT c.choice FROM comparisons c JOIN pairs p ON p.id = c.pair_id JOIN prompts pr ON pr.id = p.prompt_id \
         ORDER BY pr.text, c.rater_id",
    )
    .fetch_all(&server.sql)
    .await
    .unwrap();
    assert_eq!(choices, ["a", "a", "b", "both_bad"]);

    let get = |query: String| {
        let admin = admin.clone();
        async move { admin.get(&format!("/api/v1/campaigns/{campaign}/{query}")).await }
    };
    let ranking = jsonl(&get("export?format=ranking".into()).await.text);
    assert_eq!(
        ranking,
        vec![
            json!({"prompt": "t1", "responses": ["t1 from x", "t1 from y", "t1 from z"], "ranks": [1.0, 2.0, 3.0],
                   "raw": [[1, 2, 3], [1, 2, 3]], "all_bad": false}),
            json!({"messages": [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"},
                                {"role": "user", "content": "t2"}],
                   "responses": ["t2 from w", "t2 from x", "t2 from y", "t2 from z"], "ranks": [4.0, 1.0, 2.0, 2.5],
                   "raw": [[4, 1, 2, 3], [4, 1, 2, 2]], "all_bad": false}),
        ]
    );
    let pairs = |rows: Vec<Value>| -> Vec<(String, String)> {
        rows.iter()
            .map(|r| (r["chosen"].as_str().unwrap().to_string(), r["rejected"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(pairs(jsonl(&get("export?format=trl".into()).await.text)).len(), 3 + 6);
    let adjacent = pairs(jsonl(&get("export?format=trl&pairs=adjacent".into()).await.text));
    let t2 = |a: &str, b: &str| (format!("t2 from {a}"), format!("t2 from {b}"));
    let t1 = |a: &str, b: &str| (format!("t1 from {a}"), format!("t1 from {b}"));
    for expected in [t1("x", "y"), t1("y", "z"), t2("x", "y"), t2("y", "z"), t2("z", "w")] {
        assert!(adjacent.contains(&expected), "{expected:?} missing from {adjacent:?}");
    }
    assert_eq!(adjacent.len(), 5);
    // y over z on t2 has one rater of two: kept at min_agreement 0.5, left out above it.
    let strict = pairs(jsonl(&get("export?format=trl&min_agreement=0.75".into()).await.text));
    assert!(!strict.contains(&t2("y", "z")) && strict.contains(&t2("x", "z")) && strict.len() == 8, "{strict:?}");
    let trl = jsonl(&get("export?format=trl".into()).await.text);
    assert!(trl.iter().any(|r| r["prompt"] == "user: earlier\n\nassistant: reply\n\nuser: t2"), "{trl:?}");
    let messages = jsonl(&get("export?format=messages&pairs=adjacent".into()).await.text);
    assert_eq!(messages.len(), 5);
    assert_eq!(messages[0]["chosen"][1], json!({"role": "assistant", "content": "t1 from x"}));

    let sft = jsonl(&get("export?format=sft".into()).await.text);
    assert_eq!(sft[0], json!({"prompt": "t1", "completion": "t1 from x"}));
    assert_eq!(sft[1]["messages"][3], json!({"role": "assistant", "content": "t2 from x"}));
    let kto = jsonl(&get("export?format=kto&meta=true".into()).await.text);
    let labels: Vec<(&str, bool)> =
        kto.iter().map(|r| (r["completion"].as_str().unwrap_or("(chat)"), r["label"].as_bool().unwrap())).collect();
    assert_eq!(labels[..2], [("t1 from x", true), ("t1 from z", false)]);
    assert_eq!(kto.len(), 4);
    assert!(kto.iter().all(|r| r["votes"] == 2 && r["task_id"].is_i64()));

    let raw = jsonl(&get("export?format=raw&raters=id".into()).await.text);
    assert_eq!(raw.len(), 4);
    let r1_t2 = raw.iter().find(|r| r["all_bad"] == true).expect("r1's all-bad ranking");
    assert_eq!(r1_t2["ranks"], json!([4, 1, 2, 2]));
    assert_eq!(r1_t2["models"], json!(["w", "x", "y", "z"]));
    assert_eq!(r1_t2["rationale"], "ordered by model");
    // `shown_at` is where each response was on the rater's screen.
    let mut slots: Vec<i64> = r1_t2["shown_at"].as_array().unwrap().iter().map(|s| s.as_i64().unwrap()).collect();
    let seen_t2 = shown.iter().rev().find(|s| s.as_array().unwrap().len() == 4).unwrap();
    let first_shown = model_of(seen_t2[0].as_str().unwrap());
    let first_position = ["w", "x", "y", "z"].iter().position(|m| *m == first_shown).unwrap();
    assert_eq!(slots[first_position], 0);
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3]);
    // Only votes after the cursor come back with `since`; a task is re-exported whole.
    let cursor = raw.iter().map(|r| r["seq"].as_i64().unwrap()).max().unwrap();
    assert!(jsonl(&get(format!("export?format=raw&since={cursor}")).await.text).is_empty());
    assert_eq!(jsonl(&get(format!("export?format=ranking&since={}", cursor - 1)).await.text).len(), 1);

    let stats = get("stats".into()).await.json;
    let ranking = &stats["ranking"];
    assert_eq!((ranking["votes"].as_i64(), ranking["all_bad"].as_i64()), (Some(4), Some(1)), "{stats}");
    // Seven responses ranked twice: every rater pair agrees except on z of t2.
    let percent = ranking["agreement"]["percent"].as_f64().unwrap();
    assert!((percent - 6.0 / 7.0).abs() < 1e-9, "{ranking}");
    assert!(ranking["agreement"]["krippendorff_alpha"].as_f64().unwrap() > 0.8, "{ranking}");
    assert_eq!(ranking["agreement"]["pairs_with_multiple_votes"], 2);
    assert_eq!(stats["agreement"], ranking["agreement"], "the campaign's agreement is the rankings'");
    let positions = ranking["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 4);
    assert_eq!(positions.iter().map(|p| p["shown"].as_i64().unwrap()).sum::<i64>(), 14);
    assert_eq!(stats["progress"]["votes"], 4);
    // Per rater, response by response: six of the seven ranks match the other rater's.
    for rater in stats["raters"].as_array().unwrap() {
        let agreement = rater["agreement_with_others"].as_f64().unwrap();
        assert!((agreement - 6.0 / 7.0).abs() < 1e-9, "{rater}");
    }

    let board = get("leaderboard?bootstrap=50".into()).await.json;
    assert_eq!((board["fit"].as_str(), board["battles"].as_i64()), (Some("plackett_luce"), Some(4)), "{board}");
    let models: Vec<&str> = board["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(models[0], "x", "{board}");
    assert_eq!(models[1], "y", "{board}");
    let x = &board["models"][0];
    assert_eq!((x["wins"].as_i64(), x["losses"].as_i64()), (Some(2 * 2 + 3 * 2), Some(0)));
    assert_eq!(get("leaderboard?aspect=honesty".into()).await.status, 422);
}
both_backends!(ranking_campaign_from_import_to_export);

/// A pairwise campaign refuses ranks and the ranking export, and skips on a ranking task
/// hand out the next one.
async fn pairs_and_rankings_stay_apart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let pairs = create_campaign(&admin, json!({"name": "pairs", "status": "active"})).await;
    import(&admin, pairs, &[json!({"prompt": "p", "response_a": "a", "response_b": "b"})]).await;
    let rater = server.client_for("r", Role::Annotator).await;
    let next = rater.get(&format!("/api/v1/campaigns/{pairs}/next")).await.json;
    assert!(next["pair"].get("responses").is_none(), "{next}");
    let reply = rater
        .post(
            "/api/v1/votes",
            &json!({"assignment_id": next["pair"]["assignment_id"], "ranks": [1, 2], "client_key": "k"}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("ranks: this campaign asks for a choice between two responses"), "{}", reply.text);
    assert_eq!(count(&server, "SELECT COUNT(*) FROM comparisons").await, 0);
    let export = admin.get(&format!("/api/v1/campaigns/{pairs}/export?format=ranking")).await;
    assert_eq!(export.status, 422, "{}", export.text);
    assert!(export.text.contains("`ranking` needs a ranking campaign"), "{}", export.text);

    let ranking = create_campaign(&admin, json!({"name": "ranks", "kind": "ranking", "status": "active"})).await;
    import(
        &admin,
        ranking,
        &[
            json!({"prompt": "a", "responses": responses(&["x", "y"], "a")}),
            json!({"prompt": "b", "responses": responses(&["x", "y", "z"], "b")}),
        ],
    )
    .await;
    let first = rater.get(&format!("/api/v1/campaigns/{ranking}/next")).await.json;
    let skipped = rater.post(&format!("/api/v1/assignments/{}/skip", first["pair"]["assignment_id"]), &json!({})).await;
    assert_eq!(skipped.status, 200, "{}", skipped.text);
    let second = &skipped.json["pair"];
    assert_ne!(second["prompt"], first["pair"]["prompt"]);
    let k = second["responses"].as_array().unwrap().len();
    assert_eq!(k, if second["prompt"] == "a" { 2 } else { 3 });
}
both_backends!(pairs_and_rankings_stay_apart);

/// Gold checks on a ranking campaign: imported with their known ranks (bad ones refused with
/// line and field), served at the gold rate, and scored per rater: a ranking passes when it
/// orders every two responses the gold ranks order (a gold tie leaves the rater free), and
/// an "all bad" ranking fails. Gold tasks stay out of the agreement figures and exports unless
/// asked for.
async fn gold_rankings_check_the_raters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(
        &admin,
        json!({"name": "gold ranks", "kind": "ranking", "overlap": 2, "gold_rate": 1.0, "status": "active"}),
    )
    .await;
    let url = format!("/api/v1/campaigns/{campaign}/import");
    let xyz = |prompt: &str| responses(&["x", "y", "z"], prompt);
    for (gold_ranks, problem) in [
        (json!([1, 2]), "line 2: field `gold_ranks` has 2 ranks for 3 responses"),
        (json!([1, 4, 2]), "line 2: field `gold_ranks[1]` must be a whole number from 1 to 3"),
        (json!([2, 2, 2]), "line 2: field `gold_ranks` ties every response"),
        (json!("x"), "line 2: field `gold_ranks` must be a list of ranks"),
    ] {
        let body = format!(
            "{}\n{}\n",
            json!({"prompt": "fine", "responses": xyz("fine")}),
            json!({"prompt": "g", "responses": xyz("g"), "gold_ranks": gold_ranks})
        );
        let reply = admin.post_body(&url, body).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        assert!(reply.text.contains(problem), "{problem}: {}", reply.text);
    }
    let pairs = create_campaign(&admin, json!({"name": "pairs", "status": "active"})).await;
    let reply = admin
        .post_body(
            &format!("/api/v1/campaigns/{pairs}/import"),
            format!("{}\n", json!({"prompt": "g", "responses": xyz("g"), "gold_ranks": [1, 2, 3]})),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(
        reply.text.contains("line 1: field `gold_ranks` gold rankings are for ranking campaigns"),
        "{}",
        reply.text
    );
    assert_eq!(count(&server, "SELECT COUNT(*) FROM pairs").await, 0);

    let lines = [
        json!({"prompt": "task", "responses": xyz("task")}),
        json!({"prompt": "g1", "responses": xyz("g1"), "gold_ranks": [1, 2, 3]}),
        // x and y tie in the gold ranking: either order passes, z must come last.
        json!({"prompt": "g2", "responses": xyz("g2"), "gold_ranks": [1, 1, 3]}),
    ];
    let report = import(&admin, campaign, &lines).await;
    assert_eq!((report["pairs_created"].as_i64(), report["gold_pairs"].as_i64()), (Some(3), Some(2)), "{report}");

    // r0 ranks x > y > z everywhere; r1 reverses g1 and puts y over x on g2.
    let r0 = server.client_for("r0", Role::Annotator).await;
    let r1 = server.client_for("r1", Role::Annotator).await;
    let by_model = |_: &str, model: &str| match model {
        "x" => 1,
        "y" => 2,
        _ => 3,
    };
    let contrary = |prompt: &str, model: &str| match (prompt, model) {
        ("g1", "x") => 3,
        ("g1", "z") => 1,
        ("g2", "x") => 2,
        ("g2", "y") => 1,
        (_, model) => by_model(prompt, model),
    };
    let mut served = Vec::new();
    for i in 0..3 {
        served.push(rank_next(&r0, campaign, &format!("r0-{i}"), by_model, |_| false).await["prompt"].clone());
        served.push(rank_next(&r1, campaign, &format!("r1-{i}"), contrary, |_| false).await["prompt"].clone());
    }
    // At gold rate 1 the gold checks come first.
    assert!(served[..4].iter().all(|p| p.as_str().unwrap().starts_with('g')), "{served:?}");

    let stats = admin.get(&format!("/api/v1/campaigns/{campaign}/stats")).await.json;
    let gold_accuracy = |name: &str| {
        stats["raters"].as_array().unwrap().iter().find(|r| r["username"] == name).unwrap()["gold_accuracy"].as_f64()
    };
    assert_eq!((gold_accuracy("r0"), gold_accuracy("r1")), (Some(1.0), Some(0.5)), "{stats}");
    assert_eq!(stats["ranking"]["votes"], 2, "gold votes stay out of the ranking figures: {stats}");
    let export = |query: &str| {
        let admin = admin.clone();
        let url = format!("/api/v1/campaigns/{campaign}/export?{query}");
        async move { jsonl(&admin.get(&url).await.text) }
    };
    assert_eq!(export("format=ranking").await.len(), 1);
    assert_eq!(export("format=ranking&include_gold=true").await.len(), 3);
    let raw = export("format=raw&include_gold=true&raters=id").await;
    let gold: Vec<&Value> = raw.iter().map(|r| &r["gold_ranks"]).collect();
    assert_eq!(gold.iter().filter(|g| g.is_null()).count(), 2, "{raw:?}");
    assert!(gold.contains(&&json!([1, 1, 3])) && gold.contains(&&json!([1, 2, 3])), "{raw:?}");
}
both_backends!(gold_rankings_check_the_raters);
