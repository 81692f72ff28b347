//! Arena campaigns through the REST API against a real `pairwise-train serve` (a tiny
//! model and two adapters), on both databases: battles answered whole and streamed, the
//! vote storing the battle as an ordinary pair with the contenders' names (and nothing
//! before it), names revealed only after the vote, the leaderboard and exports reading
//! arena votes, follow-up turns, a contender that is down, rate and prompt limits, and
//! contenders' keys never leaving the server.

use futures::StreamExt;
use pairwise_server::accounts::Role;
use std::time::Duration;

use pairwise_tests::arena::{ADMIN_KEY, SERVED, ServedModels};
use pairwise_tests::{
    ApiClient, Backend, TestServer, both_backends, create_campaign, import, jsonl, numbered_pairs, trainer_binary,
    vote_all,
};
use serde_json::{Value, json};

/// An active arena campaign with the given contenders (and arena settings).
async fn arena(admin: &ApiClient, name: &str, contenders: &[Value], settings: Value) -> i64 {
    let campaign =
        create_campaign(admin, json!({"name": name, "kind": "arena", "status": "active", "arena": settings})).await;
    for contender in contenders {
        let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/contenders"), contender).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    campaign
}

/// Sampling that makes the tiny models' answers differ, short answers, a generous limit.
fn settings() -> Value {
    json!({"temperature": 1.0, "max_tokens": 10, "battles_per_minute": 60, "prompt_pool": ["tell me about rain ."]})
}

/// Whether a battle failed only because the tiny models' sampling gave nothing to compare
/// (an empty answer, or the same one twice): the test starts another.
fn unlucky(battle: &Value) -> bool {
    battle["error"].as_str().is_some_and(|e| e.contains("empty answer") || e.contains("same answer"))
}

/// Starts battles until one is ready. Twenty tries: the tiny models' sampling gives an unlucky
/// battle often enough that five in a row happened (well inside the campaign's 60 a minute).
async fn ready_battle(rater: &ApiClient, campaign: i64, prompt: &str) -> Value {
    for _ in 0..20 {
        let reply = rater
            .post(&format!("/api/v1/campaigns/{campaign}/battles"), &json!({"prompt": prompt, "wait": true}))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        if reply.json["status"] == "ready" {
            return reply.json;
        }
        assert!(unlucky(&reply.json), "{}", reply.text);
    }
    panic!("no ready battle in twenty tries");
}

/// The JSON events of a battle's event stream, read to its end.
async fn event_stream(server: &TestServer, rater: &ApiClient, id: i64) -> Vec<Value> {
    let url = format!("{}/api/v1/battles/{id}/events", server.base);
    let reply = rater.http.get(url).bearer_auth(rater.token.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(reply.headers()["content-type"], "text/event-stream");
    let body: Vec<u8> =
        reply.bytes_stream().flat_map(|chunk| futures::stream::iter(chunk.unwrap().to_vec())).collect().await;
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).unwrap())
        .collect()
}

async fn pair_count(server: &TestServer, campaign: i64) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM pairs WHERE campaign_id = $1")
        .bind(campaign)
        .fetch_one(&server.sql)
        .await
        .unwrap();
    n
}

async fn battles_become_pairs_when_voted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let models = ServedModels::start();
    let admin = server.client_for("admin", Role::Admin).await;
    let rater = server.client_for("rita", Role::Annotator).await;
    let contenders: Vec<Value> = SERVED.iter().map(|name| models.contender(name)).collect();
    let campaign = arena(&admin, "Arena", &contenders, settings()).await;
    let shown = admin.get(&format!("/api/v1/campaigns/{campaign}")).await.json;
    assert_eq!((shown["kind"].as_str(), shown["overlap"].as_i64()), (Some("arena"), Some(1)), "{shown}");

    let state = rater.get(&format!("/api/v1/campaigns/{campaign}/arena")).await.json;
    assert_eq!(state["battle"], Value::Null);
    assert_eq!((state["contenders"].as_i64(), state["can_draw_prompt"].as_bool()), (Some(3), Some(true)));

    // Answered whole (the page without JavaScript): nothing is stored before the vote, and
    // the names stay hidden.
    let battle = ready_battle(&rater, campaign, "tell me about cats").await;
    let id = battle["id"].as_i64().unwrap();
    let turn = &battle["turns"][0];
    assert_eq!(turn["prompt"], "tell me about cats");
    assert!(!turn["left"].as_str().unwrap().is_empty() && turn["left"] != turn["right"], "{battle}");
    assert_eq!((battle["left_model"].clone(), battle["right_model"].clone()), (Value::Null, Value::Null));
    assert_eq!(pair_count(&server, campaign).await, 0, "an unvoted battle stores no pair");
    let other = server.client_for("otto", Role::Annotator).await;
    assert_eq!(other.get(&format!("/api/v1/battles/{id}")).await.status, 404, "a battle is its rater's own");

    let vote = json!({"choice": "left", "strength": 3, "rationale": "more to the point", "time_ms": 2500});
    let reply = rater.post(&format!("/api/v1/battles/{id}/vote"), &vote).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let outcome = reply.json;
    let (left, right) =
        (outcome["battle"]["left_model"].as_str().unwrap(), outcome["battle"]["right_model"].as_str().unwrap());
    assert!(SERVED.contains(&left) && SERVED.contains(&right) && left != right, "{outcome}");
    assert_eq!(outcome["battle"]["status"], "voted");
    assert!(outcome["vote"]["seq"].as_i64().unwrap() >= 1, "{outcome}");
    assert_eq!(outcome["vote"]["choice"], "a");
    // The pair as an import would have made it: the contenders' names, the sampling.
    let (prompt, text_a, model_a, model_b, params_a, choice, strength): (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT pr.text, ra.text, ra.model, rb.model, ra.params, c.choice, c.strength FROM comparisons c \
             JOIN pairs p ON p.id = c.pair_id JOIN prompts pr ON pr.id = p.prompt_id \
             JOIN responses ra ON ra.id = p.response_a_id JOIN responses rb ON rb.id = p.response_b_id \
             WHERE c.campaign_id = $1",
    )
    .bind(campaign)
    .fetch_one(&server.sql)
    .await
    .unwrap();
    assert_eq!((prompt.as_str(), text_a.as_str()), ("tell me about cats", turn["left"].as_str().unwrap()));
    assert_eq!((model_a.as_str(), model_b.as_str(), choice.as_str(), strength), (left, right, "a", Some(3)));
    let params: Value = serde_json::from_str(&params_a).unwrap();
    assert_eq!((params["temperature"].as_f64(), params["max_tokens"].as_i64()), (Some(1.0), Some(10)), "{params}");
    assert_eq!(params["endpoint"], models.base_url.as_str());
    // A repeated submit stores nothing new.
    let again = rater.post(&format!("/api/v1/battles/{id}/vote"), &vote).await;
    assert_eq!(
        (again.status, again.json["vote"]["id"].clone()),
        (200, outcome["vote"]["id"].clone()),
        "{}",
        again.text
    );
    assert_eq!(pair_count(&server, campaign).await, 1);

    // Streamed (the page with JavaScript): the events carry the answers as they come.
    let mut streamed_battle = None;
    for _ in 0..5 {
        let started = rater.post(&format!("/api/v1/campaigns/{campaign}/battles"), &json!({"draw_prompt": true})).await;
        assert_eq!(started.status, 201, "{}", started.text);
        assert_eq!(started.json["turns"][0]["prompt"], "tell me about rain .");
        let id = started.json["id"].as_i64().unwrap();
        let events = event_stream(&server, &rater, id).await;
        let battle = rater.get(&format!("/api/v1/battles/{id}")).await.json;
        if unlucky(&battle) {
            assert_eq!(events.last().unwrap()["type"], "failed", "{events:?}");
            continue;
        }
        assert_eq!(
            (events.last().unwrap()["type"].as_str(), battle["status"].as_str()),
            (Some("ready"), Some("ready")),
            "{events:?}"
        );
        for side in ["left", "right"] {
            let pieces: Vec<&str> =
                events.iter().filter(|e| e["side"] == side).map(|e| e["text"].as_str().unwrap()).collect();
            assert!(!pieces.is_empty(), "{events:?}");
            assert_eq!(pieces.concat(), battle["turns"][0][side].as_str().unwrap(), "{events:?}");
        }
        streamed_battle = Some(battle);
        break;
    }
    assert!(streamed_battle.is_some(), "no streamed battle in five tries");

    // A follow-up turn: each side hears its own earlier answer; the pair stores the last
    // exchange, each response's conversation in its params.
    let (battle, reply) = loop {
        let battle = ready_battle(&rater, campaign, "what is really great").await;
        let id = battle["id"].as_i64().unwrap();
        let reply = rater.post(&format!("/api/v1/battles/{id}/turns"), &json!({"prompt": "music", "wait": true})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if !unlucky(&reply.json) {
            break (battle, reply);
        }
    };
    let id = battle["id"].as_i64().unwrap();
    assert_eq!(reply.json["status"], "ready", "{}", reply.text);
    {
        assert_eq!(reply.json["turns"].as_array().unwrap().len(), 2);
        let voted = rater.post(&format!("/api/v1/battles/{id}/vote"), &json!({"choice": "tie"})).await;
        assert_eq!(voted.status, 200, "{}", voted.text);
        let pair = voted.json["vote"]["pair_id"].as_i64().unwrap();
        let (prompt, messages, params): (String, String, String) = sqlx::query_as(
            "SELECT pr.text, pr.messages, rb.params FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id \
             JOIN responses rb ON rb.id = p.response_b_id WHERE p.id = $1",
        )
        .bind(pair)
        .fetch_one(&server.sql)
        .await
        .unwrap();
        assert_eq!(prompt, "music");
        let messages: Value = serde_json::from_str(&messages).unwrap();
        assert_eq!(
            messages,
            json!([{"role": "user", "content": "what is really great"},
                                    {"role": "assistant", "content": battle["turns"][0]["left"]}])
        );
        let params: Value = serde_json::from_str(&params).unwrap();
        assert_eq!(params["conversation"][1]["content"], battle["turns"][0]["right"], "{params}");
    }

    // Arena votes read like any others: the leaderboard ranks the contenders and the
    // export has the battle.
    let board = admin.get(&format!("/api/v1/campaigns/{campaign}/leaderboard")).await.json;
    let ranked: Vec<&str> = board["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert!(ranked.contains(&left) && ranked.contains(&right), "{board}");
    let export = admin.get(&format!("/api/v1/campaigns/{campaign}/export?format=trl")).await;
    let rows = jsonl(&export.text);
    assert!(
        rows.iter().any(|r| r["prompt"].as_str().unwrap().contains("tell me about cats")
            && r["chosen"].as_str().unwrap().contains(turn["left"].as_str().unwrap())),
        "{}",
        export.text
    );
}
both_backends!(battles_become_pairs_when_voted);

async fn failures_and_limits_store_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let models = ServedModels::start();
    let admin = server.client_for("admin", Role::Admin).await;
    let rater = server.client_for("rita", Role::Annotator).await;
    // Nothing listens on port 9 of the loopback.
    let down =
        json!({"name": "down", "base_url": "http://127.0.0.1:9/v1", "model": "gone", "api_key": "sk-secret-123"});
    let campaign = arena(
        &admin,
        "Down arena",
        &[models.contender("tiny"), down],
        // Answers that fit the tiny model's context: with the default 512 tokens its side would
        // fail too, and the race of the two failures made the reported one either.
        json!({"battles_per_minute": 2, "max_prompt_chars": 40, "max_tokens": 10}),
    )
    .await;

    let listed = admin.get(&format!("/api/v1/campaigns/{campaign}/contenders")).await;
    assert!(!listed.text.contains("sk-secret-123") && listed.json[1]["has_api_key"] == true, "{}", listed.text);
    assert_eq!(rater.get(&format!("/api/v1/campaigns/{campaign}/contenders")).await.status, 403);
    let reply = rater.post(&format!("/api/v1/campaigns/{campaign}/contenders"), &models.contender("warm")).await;
    assert_eq!(reply.status, 403);
    let reply = admin
        .post(
            &format!("/api/v1/campaigns/{campaign}/contenders"),
            &json!({"name": "x", "base_url": "ftp://x", "model": "m"}),
        )
        .await;
    assert_eq!(reply.status, 422);
    assert!(reply.json["message"].as_str().unwrap().starts_with("base_url"), "{}", reply.text);
    let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/contenders"), &models.contender("tiny")).await;
    assert_eq!((reply.status, reply.json["error"].as_str()), (409, Some("name_taken")));

    let battles = format!("/api/v1/campaigns/{campaign}/battles");
    let reply = rater.post(&battles, &json!({"prompt": "x".repeat(41)})).await;
    assert_eq!(reply.status, 422);
    assert!(reply.json["message"].as_str().unwrap().contains("at most 40 characters"), "{}", reply.text);
    let reply = rater.post(&battles, &json!({"draw_prompt": true})).await;
    assert_eq!(reply.status, 422, "no pool to draw from: {}", reply.text);

    // Every battle has the contender that is down on one side: it fails in plain words.
    let reply = rater.post(&battles, &json!({"prompt": "tell me about cats", "wait": true})).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json["status"], "failed");
    let error = reply.json["error"].as_str().unwrap();
    assert!(error.contains("could not be reached") && error.contains("nothing was stored"), "{error}");
    assert!(!error.contains("down") && !error.contains("127.0.0.1"), "the rater learns no names: {error}");
    let id = reply.json["id"].as_i64().unwrap();
    let reply = rater.post(&format!("/api/v1/battles/{id}/vote"), &json!({"choice": "left"})).await;
    assert_eq!((reply.status, reply.json["error"].as_str()), (409, Some("battle_not_ready")));
    assert_eq!(pair_count(&server, campaign).await, 0, "a failed battle stores no pair");
    let (votes,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM comparisons").fetch_one(&server.sql).await.unwrap();
    assert_eq!(votes, 0);
    let reply = rater.get(&format!("/api/v1/battles/{id}/events")).await;
    assert!(reply.text.contains("\"type\":\"failed\""), "a finished battle's events give its outcome: {}", reply.text);
    let metrics = server.anonymous().get("/metrics").await.text;
    assert!(metrics.contains("pairwise_arena_battles{status=\"failed\"} 1"), "{metrics}");

    // Two battles a minute in this campaign.
    assert_eq!(rater.post(&battles, &json!({"prompt": "music", "wait": true})).await.status, 201);
    let reply = rater.post(&battles, &json!({"prompt": "music", "wait": true})).await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert!(reply.headers.contains_key("retry-after") && reply.json["message"].as_str().unwrap().contains("battles"));

    // A battle whose server stopped mid-answer (nothing updates it any more) is reported
    // as cut off once the campaign's answer timeout has long passed.
    let (stale,): (i64,) = sqlx::query_as(
        "INSERT INTO battles (campaign_id, rater_id, left_contender_id, right_contender_id, status, turns, created_at, \
         updated_at) SELECT campaign_id, $1, id, id, 'generating', '[{\"prompt\":\"hi\",\"left\":\"\",\"right\":\"\"}]', 1, 1 \
         FROM contenders WHERE campaign_id = $2 LIMIT 1 RETURNING id",
    )
    .bind(rater.user_id)
    .bind(campaign)
    .fetch_one(&server.sql)
    .await
    .unwrap();
    let reply = rater.get(&format!("/api/v1/battles/{stale}")).await;
    assert_eq!(reply.json["status"], "failed", "{}", reply.text);
    assert!(reply.json["error"].as_str().unwrap().contains("cut off"), "{}", reply.text);

    // A pairwise campaign has no arena; an arena battle needs two contenders.
    let pairwise = create_campaign(&admin, json!({"name": "Pairs", "status": "active"})).await;
    let reply = rater.post(&format!("/api/v1/campaigns/{pairwise}/battles"), &json!({"prompt": "hi"})).await;
    assert_eq!((reply.status, reply.json["error"].as_str()), (409, Some("not_arena")));
    let lonely = arena(&admin, "Lonely", &[models.contender("tiny")], json!({})).await;
    let line = json!({"prompt": "p", "response_a": "a", "response_b": "b"}).to_string();
    let reply = admin.post_body(&format!("/api/v1/campaigns/{lonely}/import"), line).await;
    assert_eq!((reply.status, reply.json["error"].as_str()), (409, Some("arena_campaign")), "{}", reply.text);
    let reply = rater.post(&format!("/api/v1/campaigns/{lonely}/battles"), &json!({"prompt": "hi"})).await;
    assert_eq!((reply.status, reply.json["error"].as_str()), (409, Some("not_enough_contenders")), "{}", reply.text);
    let reply = admin.patch(&format!("/api/v1/campaigns/{lonely}"), &json!({"overlap": 3})).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
}
both_backends!(failures_and_limits_store_nothing);

async fn a_trained_adapter_joins_the_arena(backend: Backend) {
    let models = ServedModels::start();
    let dir = tempfile::tempdir().unwrap();
    let runs_dir = dir.path().join("runs");
    let root = models.base_url.trim_end_matches("/v1").to_string();
    let server = TestServer::start_with(backend, |c| {
        c.trainer_command = trainer_binary();
        c.runs_dir = runs_dir.display().to_string();
        c.run_heartbeat_seconds = 1;
        c.serve_url = Some(root.clone());
        c.serve_admin_key = Some(ADMIN_KEY.into());
    })
    .await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "votes", "status": "active", "overlap": 1})).await;
    import(&admin, campaign, &numbered_pairs(8)).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    vote_all(&rater, campaign, |_| "left").await;
    let arena_id = arena(&admin, "Arena", &[models.contender("tiny"), models.contender("warm")], settings()).await;

    let runs = format!("/api/v1/campaigns/{campaign}/runs");
    let small = ["--max-steps", "2", "--batch-size", "4", "--max-length", "48", "--max-prompt-length", "24"];
    let model = models.model.display().to_string();
    let reply =
        admin.post(&runs, &json!({"method": "dpo", "model": model, "args": small, "join_arena": campaign})).await;
    assert_eq!(reply.status, 422, "a pairwise campaign is no arena: {}", reply.text);
    assert!(reply.json["message"].as_str().unwrap().starts_with("join_arena"), "{}", reply.text);

    let reply =
        admin.post(&runs, &json!({"method": "dpo", "model": model, "args": small, "join_arena": arena_id})).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.json["id"].as_i64().unwrap();
    let mut run = Value::Null;
    for _ in 0..600 {
        run = admin.get(&format!("/api/v1/runs/{id}")).await.json;
        if run["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(run["status"], "succeeded", "{run}");
    let name = format!("run-{id}");
    let contenders = admin.get(&format!("/api/v1/campaigns/{arena_id}/contenders")).await.json;
    let joined =
        contenders.as_array().unwrap().iter().find(|c| c["name"] == name.as_str()).expect("the run's contender");
    assert_eq!((joined["model"].as_str(), joined["source_run_id"].as_i64()), (Some(name.as_str()), Some(id)));
    assert_eq!(joined["base_url"], models.base_url.as_str());
    // The serve process answers as the new adapter.
    let http = reqwest::Client::new();
    let listed: Value = http.get(format!("{}/models", models.base_url)).send().await.unwrap().json().await.unwrap();
    assert!(listed["data"].as_array().unwrap().iter().any(|m| m["id"] == name.as_str()), "{listed}");
    let chat = json!({"model": name, "messages": [{"role": "user", "content": "music"}], "max_tokens": 4});
    let answer = http.post(format!("{}/chat/completions", models.base_url)).json(&chat).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}
both_backends!(a_trained_adapter_joins_the_arena);
