//! Per-aspect campaigns and corrections in a real browser: a rater answers every aspect and
//! the overall question with the keyboard alone (a missing aspect gets the focus, keys 1–4
//! answer the focused one) and corrects a response; the same without JavaScript. The
//! stored rows are checked in the database. Screenshots: `aspects-desktop.png`,
//! `aspects-phone.png`.

use anyhow::{Context, Result, ensure};
use fantoccini::{Client, Locator};
use pairwise_server::accounts::{Role, users};
use pairwise_tests::browser::{
    ENTER, eventually, log_in, next_task_after, press, press_with_control, screenshot, wait_for, wait_hydrated,
    with_browser,
};
use pairwise_tests::{Backend, TestServer, create_campaign, import};
use serde_json::json;

const PASSWORD: &str = "aspect-pass-1";

/// A per-aspect campaign of three pairs; response a always says "CORRECT".
async fn aspect_campaign(server: &TestServer) -> i64 {
    let admin = server.client_for("setup-admin", Role::Admin).await;
    let campaign = create_campaign(
        &admin,
        json!({"name": "Aspects", "status": "active", "overlap": 1,
               "aspects": [{"name": "helpfulness", "description": "Does it do what was asked?"},
                           {"name": "honesty", "description": "Does it avoid claims it cannot back?"}]}),
    )
    .await;
    let lines: Vec<_> = (0..3)
        .map(|i| {
            json!({"prompt": format!("Question {i}: what is {i} + {i}?"), "response_a": format!("CORRECT: {}", 2 * i),
                   "response_b": format!("wrong: {}", 2 * i + 1), "model_a": "good", "model_b": "bad"})
        })
        .collect();
    import(&admin, campaign, &lines).await;
    campaign
}

/// Every stored aspect choice of `rater`: `correct` or `wrong` for the response chosen, or
/// `tie` / `both_bad`.
async fn aspect_choices(server: &TestServer, rater: &str) -> Vec<(String, String)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT av.aspect, CASE av.choice WHEN 'a' THEN ra.text WHEN 'b' THEN rb.text ELSE av.choice END \
         FROM aspect_votes av JOIN comparisons c ON c.id = av.comparison_id JOIN users u ON u.id = c.rater_id \
         JOIN pairs p ON p.id = av.pair_id JOIN responses ra ON ra.id = p.response_a_id \
         JOIN responses rb ON rb.id = p.response_b_id WHERE u.username = $1 ORDER BY c.seq, av.aspect",
    )
    .bind(rater)
    .fetch_all(&server.sql)
    .await
    .unwrap();
    let kind = |chosen: &str| match chosen {
        c if c.starts_with("CORRECT") => "correct".to_string(),
        c if c.starts_with("wrong") => "wrong".to_string(),
        other => other.to_string(),
    };
    rows.into_iter().map(|(aspect, chosen)| (aspect, kind(&chosen))).collect()
}

async fn corrections(server: &TestServer) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT o.text, n.text FROM corrections k JOIN responses o ON o.id = k.original_response_id \
         JOIN responses n ON n.id = k.response_id ORDER BY k.comparison_id",
    )
    .fetch_all(&server.sql)
    .await
    .unwrap()
}

/// The assignment on screen and whether the correct response is on the left.
async fn pair_on_screen(client: &Client) -> Result<(String, bool)> {
    let prompt = wait_for(client, "section.prompt[data-assignment]").await?;
    let assignment = prompt.attr("data-assignment").await?.context("data-assignment")?;
    let left = client.find(Locator::Css("#response-a")).await?.text().await?;
    Ok((assignment, left.contains("CORRECT")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aspects_and_a_correction_with_the_keyboard() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = aspect_campaign(&server).await;
    users::create_user(&server.db, "dana", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "dana", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let page = client.source().await?;
        ensure!(page.contains("Does it do what was asked?"), "aspect descriptions are shown");
        screenshot(&client, "aspects-desktop", (1280, 1100), None).await?;
        screenshot(&client, "aspects-phone", (390, 844), None).await?;

        // Overall first; Enter then stops at each unanswered aspect, focused, and the same
        // keys answer it: helpfulness for the correct side, honesty a tie.
        let (assignment, correct_left) = pair_on_screen(&client).await?;
        let correct_key = if correct_left { '1' } else { '2' };
        press(&client, correct_key).await?;
        press(&client, ENTER).await?;
        let error = wait_for(&client, "p.error").await?.text().await?;
        ensure!(error.contains("helpfulness has no answer"), "the missing aspect is named: {error}");
        press(&client, correct_key).await?;
        press(&client, ENTER).await?;
        eventually("the honesty message", || async {
            let text = client.find(Locator::Css("p.error")).await?.text().await?;
            Ok(text.contains("honesty has no answer").then_some(()))
        })
        .await?;
        press(&client, '3').await?;
        press(&client, ENTER).await?;
        next_task_after(&client, &assignment).await?;

        // Second pair: the same, then a correction of the chosen response, which starts
        // from that response's text; Ctrl+Enter submits from the text box.
        let (assignment, correct_left) = pair_on_screen(&client).await?;
        let correct_key = if correct_left { '1' } else { '2' };
        press(&client, correct_key).await?;
        press(&client, ENTER).await?;
        let error = wait_for(&client, "p.error").await?.text().await?;
        ensure!(error.contains("helpfulness has no answer"), "the missing aspect is named: {error}");
        press(&client, correct_key).await?;
        press(&client, ENTER).await?;
        eventually("the honesty message", || async {
            let text = client.find(Locator::Css("p.error")).await?.text().await?;
            Ok(text.contains("honesty has no answer").then_some(()))
        })
        .await?;
        press(&client, correct_key).await?;
        client.find(Locator::Css("details.correction summary")).await?.click().await?;
        let side = if correct_left { "left" } else { "right" };
        client.find(Locator::Css(&format!("input[name=correction_side][value={side}]"))).await?.click().await?;
        let field = client.find(Locator::Css("#correction")).await?;
        let started: String = field.prop("value").await?.unwrap_or_default();
        ensure!(started.starts_with("CORRECT: "), "the correction starts from the response: {started:?}");
        field.send_keys(" (shown step by step)").await?;
        press_with_control(&client, ENTER).await?;
        next_task_after(&client, &assignment).await?;
        Ok(())
    })
    .await;
    let choices = aspect_choices(&server, "dana").await;
    let expected = [("helpfulness", "correct"), ("honesty", "tie"), ("helpfulness", "correct"), ("honesty", "correct")];
    let got: Vec<(&str, &str)> = choices.iter().map(|(a, c)| (a.as_str(), c.as_str())).collect();
    assert_eq!(got, expected);
    let fixed = corrections(&server).await;
    assert_eq!(fixed.len(), 1, "{fixed:?}");
    assert_eq!(fixed[0].1, format!("{} (shown step by step)", fixed[0].0), "a revision of the chosen response");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aspects_and_a_correction_without_javascript() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = aspect_campaign(&server).await;
    users::create_user(&server.db, "erin", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    with_browser(false, async |client| {
        log_in(&client, &base, "erin", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        let hydrated = client.find(Locator::Css("#app")).await?.attr("data-hydrated").await?;
        ensure!(hydrated.as_deref() == Some("false"), "JavaScript is really off: {hydrated:?}");
        let (assignment, correct_left) = pair_on_screen(&client).await?;
        let (correct, wrong) = if correct_left { ("left", "right") } else { ("right", "left") };
        // Overall and one aspect only: the API's message comes back, nothing is stored.
        client.find(Locator::Css(&format!("input[name=choice][value={correct}]"))).await?.click().await?;
        client
            .find(Locator::Css(&format!("input[name='aspects[helpfulness]'][value={correct}]")))
            .await?
            .click()
            .await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        let error = wait_for(&client, "p.error").await?.text().await?;
        ensure!(error.contains("aspects.honesty: missing"), "the missing aspect is named: {error}");

        let (assignment_again, _) = pair_on_screen(&client).await?;
        ensure!(assignment_again == assignment, "the same pair is still on screen");
        client.find(Locator::Css(&format!("input[name=choice][value={correct}]"))).await?.click().await?;
        client
            .find(Locator::Css(&format!("input[name='aspects[helpfulness]'][value={correct}]")))
            .await?
            .click()
            .await?;
        client.find(Locator::Css(&format!("input[name='aspects[honesty]'][value={wrong}]"))).await?.click().await?;
        client.find(Locator::Css("details.correction summary")).await?.click().await?;
        client.find(Locator::Css("#correction")).await?.send_keys("CORRECT, worked out step by step").await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        next_task_after(&client, &assignment).await?;
        Ok(())
    })
    .await;
    let choices = aspect_choices(&server, "erin").await;
    let got: Vec<(&str, &str)> = choices.iter().map(|(a, c)| (a.as_str(), c.as_str())).collect();
    assert_eq!(got, [("helpfulness", "correct"), ("honesty", "wrong")]);
    // No side chosen: the correction is of the response chosen overall.
    let fixed = corrections(&server).await;
    assert_eq!(fixed.len(), 1, "{fixed:?}");
    assert!(fixed[0].0.starts_with("CORRECT"), "the chosen response was corrected: {fixed:?}");
    assert_eq!(fixed[0].1, "CORRECT, worked out step by step");
    server.stop().await;
}

/// The admin side of a per-aspect campaign: the leaderboard by each aspect (links under the
/// heading), and a run started from the form on one aspect's preferences.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaderboard_and_a_run_by_aspect() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Backend::Sqlite, pairwise_tests::with_trainer(dir.path())).await;
    let campaign = aspect_campaign(&server).await;
    // The rater prefers the correct answer overall and for helpfulness, the other for honesty.
    let rater = server.client_for("judge", Role::Annotator).await;
    for i in 0..3 {
        let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
        let pair = &next["pair"];
        let (good, bad) =
            if pair["left"].as_str().unwrap().contains("CORRECT") { ("left", "right") } else { ("right", "left") };
        let body = json!({"assignment_id": pair["assignment_id"], "choice": good, "client_key": format!("v{i}"),
                          "aspects": {"helpfulness": good, "honesty": bad}});
        let reply = rater.post("/api/v1/votes", &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let model = dir.path().join("model");
    pairwise_trainer::synthetic::write_tiny_model(&model, &pairwise_trainer::synthetic::tiny_config(), 2).unwrap();
    users::create_user(&server.db, "chief", PASSWORD, Role::Admin).await.unwrap();
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "chief", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let leader = || async {
            let caption = client.find(Locator::Css("#leaderboard p.muted")).await?.text().await?;
            let first = client.find(Locator::Css("#leaderboard tbody tr td:nth-child(2)")).await?.text().await?;
            anyhow::Ok((caption, first))
        };
        let (caption, first) = leader().await?;
        ensure!(first == "good" && !caption.contains(" by "), "overall: {first} / {caption}");
        client.find(Locator::Css("#leaderboard-aspects a[href$='aspect=honesty#leaderboard']")).await?.click().await?;
        eventually("the honesty leaderboard", || async {
            let (caption, first) = leader().await?;
            Ok((first == "bad" && caption.contains("by honesty")).then_some(()))
        })
        .await?;

        let form = wait_for(&client, "#start-run").await?;
        form.find(Locator::Css("#run-aspect")).await?.select_by_value("honesty").await?;
        form.find(Locator::Css("input[name=model]")).await?.send_keys(&model.display().to_string()).await?;
        form.find(Locator::Css("input[name=args]"))
            .await?
            .send_keys("--max-steps 1 --batch-size 2 --max-length 48")
            .await?;
        form.find(Locator::Css("button[type=submit]")).await?.click().await?;
        eventually("the run in the list", || async { Ok(client.find(Locator::Css("#runs table a")).await.ok()) })
            .await?;
        Ok(())
    })
    .await;
    let (config, status): (String, String) =
        sqlx::query_as("SELECT config, status FROM training_runs").fetch_one(&server.sql).await.unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["export"]["aspect"], "honesty", "{config} ({status})");
    server.stop().await;
}
