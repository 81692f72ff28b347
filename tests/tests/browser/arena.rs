//! The arena in a real browser against the real server and a real `pairwise-train serve`
//! (a tiny model and two adapters): a rater types a prompt, watches two answers come in,
//! votes with the keyboard and sees the models' names; the vote is a stored pair with both
//! answers and the right names, the leaderboard ranks the contenders and the export has
//! the battle. A contender that is down gives the rater a plain message and stores
//! nothing; the same battle works without JavaScript. Screenshots: `arena-desktop.png`,
//! `arena-phone.png`.

use anyhow::{Result, ensure};
use fantoccini::{Client, Locator};
use pairwise_server::accounts::{Role, users};
use pairwise_tests::arena::{SERVED, ServedModels};
use pairwise_tests::browser::{ENTER, eventually, log_in, press, screenshot, wait_for, wait_hydrated, with_browser};
use pairwise_tests::{ApiClient, Backend, TestServer, create_campaign, jsonl};
use serde_json::{Value, json};

const PASSWORD: &str = "arena-pass-1";

async fn arena(admin: &ApiClient, name: &str, contenders: &[Value]) -> i64 {
    let settings = json!({"temperature": 1.0, "max_tokens": 12, "battles_per_minute": 60});
    let campaign = create_campaign(
        admin,
        json!({"name": name, "kind": "arena", "status": "active", "arena": settings,
               "guidelines": "Prefer the answer that helps more."}),
    )
    .await;
    for contender in contenders {
        let reply = admin.post(&format!("/api/v1/campaigns/{campaign}/contenders"), contender).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    campaign
}

/// The stored arena votes: (choice, model a, model b, text a, text b).
async fn arena_votes(server: &TestServer, campaign: i64) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as(
        "SELECT c.choice, ra.model, rb.model, ra.text, rb.text FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
         JOIN responses ra ON ra.id = p.response_a_id JOIN responses rb ON rb.id = p.response_b_id \
         WHERE c.campaign_id = $1 ORDER BY c.id",
    )
    .bind(campaign)
    .fetch_all(&server.sql)
    .await
    .unwrap()
}

async fn text_of(client: &Client, css: &str) -> Result<String> {
    Ok(client.find(Locator::Css(css)).await?.text().await?)
}

/// Types a prompt and sends it; returns both answers once they are in (a battle with an
/// empty answer or the same answer twice is started again).
async fn battle(client: &Client, prompt: &str, javascript: bool) -> Result<(String, String)> {
    for _ in 0..4 {
        let field = wait_for(client, "#arena-prompt").await?;
        field.clear().await?;
        field.send_keys(prompt).await?;
        client.find(Locator::Css("#send-prompt")).await?.click().await?;
        let outcome = eventually("both answers or an error", || async {
            if client.find(Locator::Css("#vote-form")).await.is_ok() {
                return Ok(Some(true));
            }
            Ok(client.find(Locator::Css("#battle-error")).await.is_ok().then_some(false))
        })
        .await?;
        if outcome {
            return Ok((text_of(client, "#response-a").await?, text_of(client, "#response-b").await?));
        }
        let error = text_of(client, "#battle-error").await?;
        // The tiny models' sampling now and then gives nothing to compare: try again.
        ensure!(error.contains("same answer") || error.contains("empty answer"), "unexpected failure: {error}");
        if javascript {
            wait_hydrated(client).await?;
        }
    }
    anyhow::bail!("no battle with two different answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rater_battles_in_the_arena_with_the_keyboard() {
    let server = TestServer::start(Backend::Sqlite).await;
    let models = ServedModels::start();
    let admin = server.client_for("arena-admin", Role::Admin).await;
    let contenders: Vec<Value> = SERVED.iter().map(|name| models.contender(name)).collect();
    let campaign = arena(&admin, "Arena", &contenders).await;
    let down = json!({"name": "down", "base_url": "http://127.0.0.1:9/v1", "model": "gone"});
    let broken = arena(&admin, "Broken arena", &[models.contender("tiny"), down]).await;
    users::create_user(&server.db, "ann", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    let (models_shown, left_text) = with_browser_result(true, async |client: Client| {
        log_in(&client, &base, "ann", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let page = client.source().await?;
        ensure!(!page.contains("Model A —"), "no names before the vote");
        let (left, right) = battle(&client, "tell me about cats", true).await?;
        ensure!(!left.is_empty() && left != right, "two answers: {left:?} / {right:?}");
        screenshot(&client, "arena-desktop", (1280, 900), None).await?;
        screenshot(&client, "arena-phone", (390, 844), None).await?;
        // The keyboard: 1 = A is better, Enter submits.
        client.execute("document.activeElement.blur()", vec![]).await?;
        press(&client, '1').await?;
        press(&client, ENTER).await?;
        wait_for(&client, "#reveal").await?;
        let shown = (text_of(&client, "#left-model").await?, text_of(&client, "#right-model").await?);
        // The next battle's prompt box is there right away.
        wait_for(&client, "#arena-prompt").await?;

        // A contender that is down: a plain message, nothing stored.
        client.goto(&format!("{base}/rate/{broken}")).await?;
        wait_hydrated(&client).await?;
        wait_for(&client, "#arena-prompt").await?.send_keys("tell me about rain").await?;
        client.find(Locator::Css("#send-prompt")).await?.click().await?;
        wait_for(&client, "#battle-error").await?;
        let error = text_of(&client, "#battle-error").await?;
        ensure!(error.contains("could not be reached") && error.contains("nothing was stored"), "{error}");
        ensure!(client.find(Locator::Css("#arena-prompt")).await.is_ok(), "the rater can try again");
        Ok((shown, left))
    })
    .await;
    let votes = arena_votes(&server, campaign).await;
    assert_eq!(votes.len(), 1, "{votes:?}");
    let (choice, model_a, model_b, text_a, text_b) = &votes[0];
    assert_eq!((choice.as_str(), model_a, model_b), ("a", &models_shown.0, &models_shown.1));
    assert_eq!(text_a.trim(), left_text.trim());
    assert!(!text_b.is_empty());
    let (broken_pairs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pairs WHERE campaign_id = $1")
        .bind(broken)
        .fetch_one(&server.sql)
        .await
        .unwrap();
    assert_eq!(broken_pairs, 0, "the failed battle stored nothing");
    let board = admin.get(&format!("/api/v1/campaigns/{campaign}/leaderboard")).await.json;
    let ranked: Vec<&str> = board["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(ranked.first().copied(), Some(model_a.as_str()), "the winner leads: {board}");
    assert!(ranked.contains(&model_b.as_str()), "{board}");
    let export = jsonl(&admin.get(&format!("/api/v1/campaigns/{campaign}/export?format=trl")).await.text);
    assert!(export.iter().any(|row| row["prompt"].as_str().unwrap().contains("tell me about cats")), "{export:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_arena_works_without_javascript() {
    let server = TestServer::start(Backend::Sqlite).await;
    let models = ServedModels::start();
    let admin = server.client_for("arena-admin", Role::Admin).await;
    let campaign = arena(&admin, "Arena", &[models.contender("warm"), models.contender("cold")]).await;
    users::create_user(&server.db, "nojs", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    let shown = with_browser_result(false, async |client: Client| {
        log_in(&client, &base, "nojs", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        let hydrated = client.find(Locator::Css("#app")).await?.attr("data-hydrated").await?;
        ensure!(hydrated.as_deref() == Some("false"), "JavaScript is really off: {hydrated:?}");
        let (left, right) = battle(&client, "what is really great", false).await?;
        ensure!(!left.is_empty() && !right.is_empty(), "both answers are on the page whole");
        client.find(Locator::Css("input[name=choice][value=right]")).await?.click().await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        wait_for(&client, "#reveal").await?;
        Ok((text_of(&client, "#left-model").await?, text_of(&client, "#right-model").await?))
    })
    .await;
    let votes = arena_votes(&server, campaign).await;
    assert_eq!(votes.len(), 1, "{votes:?}");
    assert_eq!((votes[0].0.as_str(), &votes[0].1, &votes[0].2), ("b", &shown.0, &shown.1));
}

/// `with_browser` for a body that hands back what it found.
async fn with_browser_result<T: Send + 'static>(javascript: bool, body: impl AsyncFnOnce(Client) -> Result<T>) -> T {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = slot.clone();
    with_browser(javascript, async move |client| {
        let value = body(client).await?;
        *out.lock().unwrap() = Some(value);
        Ok(())
    })
    .await;
    slot.lock().unwrap().take().expect("the browser body finished")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_adds_a_contender_whose_key_stays_on_the_server() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.client_for("arena-admin", Role::Admin).await;
    let campaign = arena(&admin, "Arena", &[]).await;
    users::create_user(&server.db, "boss", PASSWORD, Role::Admin).await.unwrap();
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "boss", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let form = wait_for(&client, "#add-contender").await?;
        for (field, value) in [
            ("name", "hosted"),
            ("base_url", "https://api.example.com/v1"),
            ("model", "big-1"),
            ("api_key", "sk-top-secret"),
        ] {
            form.find(Locator::Css(&format!("input[name={field}]"))).await?.send_keys(value).await?;
        }
        form.find(Locator::Css("button[type=submit]")).await?.click().await?;
        eventually("the new contender in the table", || async {
            Ok(text_of(&client, "#contenders").await?.contains("big-1").then_some(()))
        })
        .await?;
        let page = client.source().await?;
        ensure!(!page.contains("sk-top-secret"), "the key never reaches the browser");
        ensure!(text_of(&client, "#contenders").await?.contains("set"), "the table says a key is set");
        Ok(())
    })
    .await;
    let listed = admin.get(&format!("/api/v1/campaigns/{campaign}/contenders")).await.json;
    assert_eq!(
        (listed[0]["name"].as_str(), listed[0]["has_api_key"].as_bool()),
        (Some("hosted"), Some(true)),
        "{listed}"
    );
    let key: (Option<String>,) = sqlx::query_as("SELECT api_key FROM contenders").fetch_one(&server.sql).await.unwrap();
    assert_eq!(key.0.as_deref(), Some("sk-top-secret"));
}
