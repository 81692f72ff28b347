//! The web app in a real browser (headless Chromium) against the real server and a fresh
//! database: rating with the keyboard, the same flow without JavaScript, untrusted
//! responses staying inert, the admin gate, import errors and export downloads.
//! Screenshots land in `target/screenshots/`.

mod arena;
mod feedback;
mod rankings;
mod ratings;

use anyhow::{Context, Result, ensure};
use fantoccini::{Client, Locator};
use pairwise_server::accounts::Role;
use pairwise_server::accounts::users;
use pairwise_tests::browser::{ENTER, eventually, log_in, press, screenshot, wait_for, wait_hydrated, with_browser};
use pairwise_tests::{Backend, TestServer, create_campaign, import, jsonl, vote_all};
use serde_json::{Value, json};

const PASSWORD: &str = "browser-pass-1";
/// Raters prefer the response that says this (the "hidden rule" of these tests).
const GOOD: &str = "GOOD ANSWER";
const XSS: &str = "<script>window.__xss = 1</script> and <img src=x onerror=\"window.__xss = 2\"> inline";

/// A campaign of `pairs` ready pairs; one response of each says `GOOD`. The first pair's
/// other response carries script that must never run.
async fn campaign_with_pairs(server: &TestServer, pairs: usize, overlap: i64) -> i64 {
    let admin = server.client_for("setup-admin", Role::Admin).await;
    let campaign = create_campaign(
        &admin,
        json!({"name": "Helpfulness", "status": "active", "overlap": overlap,
               "guidelines": "Prefer the **correct** answer.\n\n<script>window.__xss = 3</script>"}),
    )
    .await;
    let lines: Vec<Value> = (0..pairs)
        .map(|i| {
            let bad = if i == 0 { format!("bad answer {i}: {XSS}") } else { format!("bad answer {i}") };
            json!({"prompt": format!("Question {i}: what is `{i} + {i}`?"),
                   "response_a": format!("{GOOD} {i}:\n\n```python\nprint({i} + {i})\n```"), "response_b": bad,
                   "model_a": "good-model", "model_b": "bad-model"})
        })
        .collect();
    import(&admin, campaign, &lines).await;
    campaign
}

async fn annotator(server: &TestServer, name: &str) {
    users::create_user(&server.db, name, PASSWORD, Role::Annotator).await.unwrap();
}

/// Every stored vote of `rater`: (choice in stored a/b order, text of a, text of b, time_ms).
async fn votes_of(server: &TestServer, rater: &str) -> Vec<(String, String, String, Option<i64>)> {
    sqlx::query_as(
        "SELECT c.choice, ra.text, rb.text, c.time_ms FROM comparisons c JOIN users u ON u.id = c.rater_id \
         JOIN pairs p ON p.id = c.pair_id JOIN responses ra ON ra.id = p.response_a_id \
         JOIN responses rb ON rb.id = p.response_b_id WHERE u.username = $1 ORDER BY c.seq",
    )
    .bind(rater)
    .fetch_all(&server.sql)
    .await
    .unwrap()
}

/// The assignment on screen and whether the good response is on the left.
async fn pair_on_screen(client: &Client) -> Result<(String, bool)> {
    let prompt = wait_for(client, "section.prompt[data-assignment]").await?;
    let assignment = prompt.attr("data-assignment").await?.context("data-assignment")?;
    let left = client.find(Locator::Css("#response-a")).await?.text().await?;
    let right = client.find(Locator::Css("#response-b")).await?.text().await?;
    ensure!(left.contains(GOOD) != right.contains(GOOD), "exactly one side should be good: {left:?} / {right:?}");
    Ok((assignment, left.contains(GOOD)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn annotator_rates_five_pairs_with_the_keyboard() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = campaign_with_pairs(&server, 6, 1).await;
    annotator(&server, "alice").await;
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "alice", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let page = client.source().await?;
        ensure!(page.contains("Keys:") && page.contains("<kbd>S</kbd>"), "shortcuts are shown on the page");
        ensure!(page.contains("<code class=\"language-python\">"), "responses are rendered as Markdown");
        screenshot(&client, "rating-desktop", (1280, 900), None).await?;
        screenshot(&client, "rating-phone", (390, 844), None).await?;

        let url_before = client.current_url().await?;
        let mut seen = Vec::new();
        for round in 0..5 {
            let (assignment, good_on_left) = pair_on_screen(&client).await?;
            // Alternate the key that picks the good side, and use tie/both bad for none:
            // every vote here prefers the good response.
            press(&client, if good_on_left { '1' } else { '2' }).await?;
            if round == 2 {
                // Strength by mouse is optional; keyboard-only is the point here.
                ensure!(client.find(Locator::Css("label.choice.selected")).await.is_ok(), "choice shows as selected");
            }
            press(&client, ENTER).await?;
            eventually("the next pair", || async {
                let now = client.find(Locator::Css("section.prompt[data-assignment], #no-pair")).await?;
                Ok((now.attr("data-assignment").await?.as_deref() != Some(assignment.as_str())).then_some(()))
            })
            .await?;
            seen.push((assignment, good_on_left));
        }
        ensure!(client.current_url().await? == url_before, "no page load between votes");
        let progress = client.find(Locator::Css("#progress-text")).await?.text().await?;
        ensure!(progress.starts_with("5 / 6 votes"), "progress bar counts the votes: {progress}");
        let xss: Value = client.execute("return window.__xss === undefined ? null : window.__xss", vec![]).await?;
        ensure!(xss.is_null(), "script from a response or the guidelines ran: {xss}");
        Ok(())
    })
    .await;

    let votes = votes_of(&server, "alice").await;
    assert_eq!(votes.len(), 5, "five votes stored");
    for (choice, a, b, time_ms) in &votes {
        // The stored choice points at the good response, whichever side it was shown on.
        let chosen = match choice.as_str() {
            "a" => a,
            "b" => b,
            other => panic!("unexpected choice {other}"),
        };
        assert!(chosen.contains(GOOD), "vote {choice} maps to {chosen:?} (a={a:?}, b={b:?})");
        assert!(time_ms.is_some_and(|t| t > 0), "time on the pair is measured: {time_ms:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_response_html_stays_inert() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = campaign_with_pairs(&server, 1, 1).await;
    annotator(&server, "bob").await;
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "bob", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let bad_side = if pair_on_screen(&client).await?.1 { "#response-b" } else { "#response-a" };
        let shown = client.find(Locator::Css(bad_side)).await?;
        let text = shown.text().await?;
        ensure!(text.contains("<script>window.__xss = 1</script>"), "the script is shown as text: {text:?}");
        ensure!(text.contains("<img src=x onerror="), "the img tag is shown as text: {text:?}");
        let html = shown.html(true).await?;
        ensure!(!html.contains("<script") && !html.contains("<img"), "no live element: {html}");
        let elements: Value = client
            .execute("return document.querySelectorAll('main script, main img, main [onerror]').length", vec![])
            .await?;
        ensure!(elements == json!(0), "no script/img/onerror in the page body: {elements}");
        let xss: Value = client.execute("return window.__xss === undefined ? null : window.__xss", vec![]).await?;
        ensure!(xss.is_null(), "script ran: {xss}");
        Ok(())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rating_works_without_javascript() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = campaign_with_pairs(&server, 5, 1).await;
    annotator(&server, "carol").await;
    let base = server.base.clone();
    with_browser(false, async |client| {
        log_in(&client, &base, "carol", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        let hydrated = client.find(Locator::Css("#app")).await?.attr("data-hydrated").await?;
        ensure!(hydrated.as_deref() == Some("false"), "JavaScript is really off: {hydrated:?}");
        // Submitting without a choice is refused with a message, nothing stored.
        let (first, _) = pair_on_screen(&client).await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        wait_for(&client, "p.error").await?;
        // Three votes by form post, then a skip.
        let mut last = first;
        for round in 0..4 {
            let (assignment, good_on_left) = pair_on_screen(&client).await?;
            if round == 3 {
                client.find(Locator::Css("#skip")).await?.click().await?;
            } else {
                let side = if good_on_left { "left" } else { "right" };
                client.find(Locator::Css(&format!("input[name=choice][value={side}]"))).await?.click().await?;
                client.find(Locator::Css("input[name=strength][value='3']")).await?.click().await?;
                client.find(Locator::Css("textarea[name=rationale]")).await?.send_keys("correct code").await?;
                client.find(Locator::Css("#submit-vote")).await?.click().await?;
            }
            last = eventually(&format!("a new pair after the post (round {round})"), || async {
                let (next, _) = pair_on_screen(&client).await?;
                Ok((next != assignment).then_some(next))
            })
            .await?;
        }
        ensure!(!last.is_empty(), "a pair is still on screen");
        // Log out by form post too.
        client.find(Locator::Css("header button.link")).await?.click().await?;
        eventually("the login page", || async { Ok((client.current_url().await?.path() == "/login").then_some(())) })
            .await?;
        Ok(())
    })
    .await;
    let votes = votes_of(&server, "carol").await;
    assert_eq!(votes.len(), 3, "three votes stored, the skip is not a vote");
    for (choice, a, b, time_ms) in &votes {
        let chosen = if choice == "a" { a } else { b };
        assert!(chosen.contains(GOOD), "vote {choice} maps to {chosen:?}");
        assert!(time_ms.is_some(), "time is measured from when the pair was served");
    }
    let (strength, rationale): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT strength, rationale FROM comparisons ORDER BY seq LIMIT 1")
            .fetch_one(&server.sql)
            .await
            .unwrap();
    assert_eq!((strength, rationale.as_deref()), (Some(3), Some("correct code")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn annotators_are_refused_admin_pages() {
    let server = TestServer::start(Backend::Sqlite).await;
    annotator(&server, "dave").await;
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "dave", PASSWORD).await?;
        for page in ["/admin", "/admin/users", "/admin/campaigns/1"] {
            client.goto(&format!("{base}{page}")).await?;
            let refusal = wait_for(&client, ".forbidden").await?.text().await?;
            ensure!(refusal.contains("admins only"), "{page}: {refusal}");
            ensure!(client.find(Locator::Css("#new-campaign, #users, #dashboard")).await.is_err(), "{page} leaks");
        }
        Ok(())
    })
    .await;
    // The refusal is a real 403, not just a message.
    let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let login =
        http.post(server.url("/api/v1/auth/login")).json(&json!({"username": "dave", "password": PASSWORD})).send();
    assert_eq!(login.await.unwrap().status(), 200);
    assert_eq!(http.get(server.url("/admin")).send().await.unwrap().status(), 403);
    // Without a session the pages send people to the login page.
    let anonymous = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let reply = anonymous.get(server.url("/admin")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(reply.status(), 303);
    assert_eq!(reply.headers()["location"], "/login?next=%2Fadmin");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_imports_sees_errors_by_line_and_downloads_the_export() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = campaign_with_pairs(&server, 4, 2).await;
    users::create_user(&server.db, "root", PASSWORD, Role::Admin).await.unwrap();
    // Two raters vote on everything through the API, so the dashboard has data; r2
    // disagrees once, so one pair is a draw and drops out of the aggregated export.
    for name in ["r1", "r2"] {
        let rater = server.client_for(name, Role::Annotator).await;
        let mut first = true;
        vote_all(&rater, campaign, |pair| {
            let good_left = pair["left"].as_str().unwrap().contains(GOOD);
            let agree = name == "r1" || !std::mem::take(&mut first);
            if good_left == agree { "left" } else { "right" }
        })
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_file,
        "{\"prompt\": \"p\", \"response_a\": \"x\", \"response_b\": \"y\"}\n\
         {\"prompt\": \"q\", \"response_a\": \"x\", \"response_b\": \"y\"}\n\
         {\"prompt\": \"r\", \"responses\": [{\"text\": \"only one\"}]}\n",
    )
    .unwrap();
    let good_file = dir.path().join("good.jsonl");
    std::fs::write(&good_file, "{\"prompt\": \"new\", \"response_a\": \"x\", \"response_b\": \"y\"}\n").unwrap();
    let pairs =
        || async { sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pairs").fetch_one(&server.sql).await.unwrap() };
    assert_eq!(pairs().await, 4);
    let base = server.base.clone();
    let exported = with_browser_result(async |client| {
        log_in(&client, &base, "root", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        wait_hydrated(&client).await?;
        wait_for(&client, "#dashboard #raters").await?;
        screenshot(&client, "dashboard-desktop", (1280, 900), Some("dashboard")).await?;
        screenshot(&client, "dashboard-phone", (390, 844), Some("dashboard")).await?;

        client.find(Locator::Css("#import-file")).await?.send_keys(&bad_file.display().to_string()).await?;
        client.find(Locator::Css("#import-form button[type=submit]")).await?.click().await?;
        let error = wait_for(&client, "#import-result .error").await?.text().await?;
        ensure!(error.contains("line 3"), "the bad line is named: {error}");

        client.find(Locator::Css("#import-file")).await?.send_keys(&good_file.display().to_string()).await?;
        client.find(Locator::Css("#import-form button[type=submit]")).await?.click().await?;
        let ok = wait_for(&client, "#import-result .ok").await?.text().await?;
        ensure!(ok.contains("1 new pairs"), "{ok}");

        let href = client.find(Locator::Css("#export-trl")).await?.attr("href").await?.context("href")?;
        let body: Value = client
            .execute_async(
                "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done, e => done('ERR ' + e))",
                vec![json!(href)],
            )
            .await?;
        Ok(body.as_str().unwrap_or_default().to_string())
    })
    .await;
    assert_eq!(pairs().await, 5, "the bad file imported nothing, the good one its pair");
    // The export the page links to: the three pairs with a majority, the good response
    // chosen in each.
    let rows = jsonl(&exported);
    assert_eq!(rows.len(), 3, "{exported}");
    for row in &rows {
        assert!(row["prompt"].is_string() && row["rejected"].is_string(), "{row}");
        assert!(row["chosen"].to_string().contains(GOOD), "{row}");
    }
    server.stop().await;
}

/// Like `with_browser`, for a body that returns a value.
async fn with_browser_result<T: Default>(body: impl AsyncFnOnce(Client) -> Result<T>) -> T {
    let mut out = None;
    with_browser(true, async |client| {
        out = Some(body(client).await?);
        Ok(())
    })
    .await;
    out.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_import_errors_show_without_javascript() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = campaign_with_pairs(&server, 1, 1).await;
    users::create_user(&server.db, "root", PASSWORD, Role::Admin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("bad.jsonl");
    std::fs::write(&bad_file, "{\"prompt\": \"p\", \"response_a\": \"x\", \"response_b\": \"y\"}\nnot json\n").unwrap();
    let base = server.base.clone();
    with_browser(false, async |client| {
        log_in(&client, &base, "root", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        client.find(Locator::Css("#import-file")).await?.send_keys(&bad_file.display().to_string()).await?;
        client.find(Locator::Css("#import-form button[type=submit]")).await?.click().await?;
        let error = wait_for(&client, "#import-result .error").await?.text().await?;
        ensure!(error.contains("line 2"), "the bad line is named after a plain form post: {error}");
        // A settings change by plain form post.
        client.find(Locator::Css("#settings summary")).await?.click().await?;
        let name = client.find(Locator::Css("#campaign-settings input[name=name]")).await?;
        name.clear().await?;
        name.send_keys("Renamed").await?;
        client.find(Locator::Css("#campaign-settings button[type=submit]")).await?.click().await?;
        eventually("the new name", || async {
            Ok(client.find(Locator::Css("h1")).await?.text().await?.contains("Renamed").then_some(()))
        })
        .await
    })
    .await;
    let pairs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pairs").fetch_one(&server.sql).await.unwrap();
    assert_eq!(pairs, 1, "the bad file imported nothing");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_manages_users_and_tokens() {
    let server = TestServer::start(Backend::Sqlite).await;
    users::create_user(&server.db, "root", PASSWORD, Role::Admin).await.unwrap();
    let base = server.base.clone();
    let secret = with_browser_result(async |client| {
        // Without a session the page sends the admin to log in, and the login comes back to it.
        client.goto(&format!("{base}/admin/users")).await?;
        let url = client.current_url().await?;
        ensure!(url.path() == "/login" && url.query() == Some("next=%2Fadmin%2Fusers"), "sent to {url}");
        wait_hydrated(&client).await?;
        wait_for(&client, "#login-form input[name=username]").await?.send_keys("root").await?;
        client.find(Locator::Css("#login-form input[name=password]")).await?.send_keys(PASSWORD).await?;
        client.find(Locator::Css("#login-form button[type=submit]")).await?.click().await?;
        eventually("back on the users page", || async {
            Ok((client.current_url().await?.path() == "/admin/users").then_some(()))
        })
        .await?;
        wait_hydrated(&client).await?;
        let form = wait_for(&client, "#new-user").await?;
        form.find(Locator::Css("input[name=username]")).await?.send_keys("frank").await?;
        form.find(Locator::Css("input[name=password]")).await?.send_keys("frank-password").await?;
        form.find(Locator::Css("button[type=submit]")).await?.click().await?;
        let row = "//table[@id='users']//tr[td[1][text()='frank']]";
        eventually("frank's row", || async { Ok(client.find(Locator::XPath(row)).await.ok()) }).await?;
        // The new user's password does not linger in the form.
        eventually("the form to clear", || async {
            let field = client.find(Locator::Css("#new-user input[name=password]")).await?;
            Ok(field.prop("value").await?.filter(|v| v.is_empty()))
        })
        .await?;
        client.find(Locator::XPath(&format!("{row}//button[text()='Disable']"))).await?.click().await?;
        eventually("frank disabled", || async {
            let status = client.find(Locator::XPath(&format!("{row}/td[3]"))).await?.text().await?;
            Ok((status == "disabled").then_some(()))
        })
        .await?;
        screenshot(&client, "accounts-desktop", (1280, 900), None).await?;
        let token_form = client.find(Locator::Css("#new-token")).await?;
        token_form.find(Locator::Css("input[name=name]")).await?.send_keys("nightly-export").await?;
        token_form.find(Locator::Css("button[type=submit]")).await?.click().await?;
        let shown = wait_for(&client, "#new-token-secret code").await?.text().await?;
        Ok(shown)
    })
    .await;
    let active: i64 =
        sqlx::query_scalar("SELECT active FROM users WHERE username = 'frank'").fetch_one(&server.sql).await.unwrap();
    assert_eq!(active, 0, "disabled through the page");
    // The token shown once on the page works against the API.
    let http = reqwest::Client::new();
    let me = http.get(server.url("/api/v1/auth/me")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(me.status(), 200, "token {secret:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_starts_a_training_run_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Backend::Sqlite, pairwise_tests::with_trainer(dir.path())).await;
    let campaign = campaign_with_pairs(&server, 6, 1).await;
    // One rater votes for the good response everywhere.
    let rater = server.client_for("voter", Role::Annotator).await;
    vote_all(&rater, campaign, |pair| if pair["left"].as_str().unwrap().contains(GOOD) { "left" } else { "right" })
        .await;
    let model = dir.path().join("model");
    pairwise_trainer::synthetic::write_tiny_model(&model, &pairwise_trainer::synthetic::tiny_config(), 2).unwrap();
    users::create_user(&server.db, "root", PASSWORD, Role::Admin).await.unwrap();
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "root", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let form = wait_for(&client, "#start-run").await?;
        form.find(Locator::Css("input[name=model]")).await?.send_keys(&model.display().to_string()).await?;
        form.find(Locator::Css("input[name=args]"))
            .await?
            .send_keys("--max-steps 4 --batch-size 2 --max-length 64 --max-prompt-length 32")
            .await?;
        form.find(Locator::Css("button[type=submit]")).await?.click().await?;
        let link =
            eventually("the run in the list", || async { Ok(client.find(Locator::Css("#runs table a")).await.ok()) })
                .await?;
        link.click().await?;
        let status = eventually("the run to succeed", || async {
            let status = client.find(Locator::Css("#run-status")).await?.text().await?;
            Ok((status != "running").then_some(status))
        })
        .await?;
        ensure!(status == "succeeded", "run ended {status}");
        wait_for(&client, "#run-charts svg path.curve").await?;
        screenshot(&client, "run-desktop", (1280, 900), None).await?;
        let page = client.source().await?;
        ensure!(page.contains("Reward accuracy") && page.contains("Loss"), "loss and accuracy curves are drawn");
        ensure!(
            page.contains("/files/out~adapter_model.safetensors") && page.contains("/files/data.jsonl"),
            "the files the run wrote are offered for download"
        );
        Ok(())
    })
    .await;
    server.stop().await;
}
