//! Thumbs and scale campaigns in a real browser: a rater rates single responses with the
//! keyboard alone (thumbs 1/0 and ↑/↓, a missing rating refused, a correction typed in;
//! the 1–5 scale by number keys), and the same without JavaScript. The stored ratings are
//! checked in the database, and the admin's dashboard shows them. Screenshots:
//! `thumbs-desktop.png`, `thumbs-phone.png`.

use anyhow::{Context, Result, ensure};
use fantoccini::{Client, Locator};
use pairwise_server::accounts::{Role, users};
use pairwise_tests::browser::{
    ENTER, eventually, log_in, next_task_after, press, screenshot, wait_for, wait_hydrated, with_browser,
};
use pairwise_tests::{Backend, TestServer, create_campaign, import};
use serde_json::json;

const PASSWORD: &str = "thumbs-pass-1";
const ARROW_UP: char = '\u{e013}';
const ARROW_DOWN: char = '\u{e015}';

/// A campaign of `kind` with three answers to one question: `good`, `poor` and `fine`.
async fn single_campaign(server: &TestServer, kind: &str, overlap: i64) -> i64 {
    let admin = server.client_for("setup-admin", Role::Admin).await;
    let campaign = create_campaign(
        &admin,
        json!({"name": format!("Rate {kind}"), "kind": kind, "status": "active", "overlap": overlap}),
    )
    .await;
    let responses: Vec<_> = ["good", "poor", "fine"]
        .iter()
        .map(|q| json!({"text": format!("A {q} answer about tea."), "model": q}))
        .collect();
    import(&admin, campaign, &[json!({"prompt": "Tell me about **tea**.", "responses": responses})]).await;
    campaign
}

/// The quality word of the response on screen and the task's assignment.
async fn response_on_screen(client: &Client) -> Result<(String, String)> {
    let prompt = wait_for(client, "section.prompt[data-assignment]").await?;
    let assignment = prompt.attr("data-assignment").await?.context("data-assignment")?;
    let text = wait_for(client, "#response-a").await?.text().await?;
    let quality = ["good", "poor", "fine"].into_iter().find(|q| text.contains(&format!("A {q} answer")));
    Ok((assignment, quality.context("a quality word in the response")?.to_string()))
}

/// `(model, rating, correction)` of `rater`'s votes in vote order.
async fn stored_ratings(server: &TestServer, rater: &str) -> Vec<(String, i64, Option<String>)> {
    sqlx::query_as(
        "SELECT r.model, rv.rating, rk.text FROM rating_votes rv JOIN comparisons c ON c.id = rv.comparison_id \
         JOIN users u ON u.id = c.rater_id JOIN pairs p ON p.id = c.pair_id JOIN responses r ON r.id = p.response_a_id \
         LEFT JOIN corrections k ON k.comparison_id = c.id LEFT JOIN responses rk ON rk.id = k.response_id \
         WHERE u.username = $1 ORDER BY c.seq",
    )
    .bind(rater)
    .fetch_all(&server.sql)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thumbs_with_the_keyboard() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = single_campaign(&server, "thumbs", 1).await;
    users::create_user(&server.db, "tara", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "tara", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let mut seen = Vec::new();
        for step in 0..3 {
            let (assignment, quality) = response_on_screen(&client).await?;
            if step == 0 {
                // Enter before rating: the rater is told what is missing.
                press(&client, ENTER).await?;
                let error = wait_for(&client, "p.error").await?.text().await?;
                ensure!(error.contains("Rate the response first"), "the missing rating is named: {error}");
                screenshot(&client, "thumbs-desktop", (1280, 900), None).await?;
                screenshot(&client, "thumbs-phone", (390, 844), None).await?;
            }
            match quality.as_str() {
                "good" => press(&client, '1').await?,
                "fine" => press(&client, ARROW_UP).await?,
                _ => {
                    press(&client, ARROW_DOWN).await?;
                    // The bad answer gets a correction, typed into the correction box.
                    client.find(Locator::Css("details.correction summary")).await?.click().await?;
                    client.find(Locator::Css("#start-correction")).await?.click().await?;
                    let box_ = client.find(Locator::Css("#correction")).await?;
                    box_.clear().await?;
                    box_.send_keys("A proper answer about tea.").await?;
                    box_.send_keys("\u{e009}\u{e007}").await?;
                    next_task_after(&client, &assignment).await?;
                    seen.push(quality);
                    continue;
                }
            }
            eventually("the rating to be selected", || async {
                let selected = client.find_all(Locator::Css("fieldset.ratings label.choice.selected")).await?;
                Ok((selected.len() == 1).then_some(()))
            })
            .await?;
            press(&client, ENTER).await?;
            next_task_after(&client, &assignment).await?;
            seen.push(quality);
        }
        wait_for(&client, "#no-pair").await?;
        ensure!(seen.len() == 3, "three responses rated: {seen:?}");
        Ok(())
    })
    .await;
    let mut ratings = stored_ratings(&server, "tara").await;
    ratings.sort();
    assert_eq!(
        ratings,
        [
            ("fine".to_string(), 1, None),
            ("good".to_string(), 1, None),
            ("poor".to_string(), 0, Some("A proper answer about tea.".to_string())),
        ]
    );

    // The admin's dashboard reads the ratings; the leaderboard is by mean rating; runs are
    // KTO or SFT.
    users::create_user(&server.db, "tess", PASSWORD, Role::Admin).await.unwrap();
    with_browser(true, async |client| {
        log_in(&client, &base, "tess", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let figures = wait_for(&client, "#rating-agreement").await?.text().await?;
        ensure!(figures.starts_with("3 ratings, mean 0.67"), "rating figures: {figures}");
        let tiles = client.find(Locator::Css("#dashboard .tiles")).await?.text().await?;
        ensure!(tiles.contains("(nominal)") && tiles.contains("mean rating"), "the tiles read the ratings: {tiles}");
        let rows = client.find_all(Locator::Css("#ratings tbody tr")).await?;
        ensure!(rows.len() == 2, "one row per rating, got {}", rows.len());
        let caption = wait_for(&client, "#leaderboard p.muted").await?.text().await?;
        ensure!(caption.starts_with("Mean rating scores from 3 ratings"), "leaderboard caption: {caption}");
        ensure!(client.find_all(Locator::Css("#export-kto")).await?.len() == 1, "a KTO download");
        let mut methods = Vec::new();
        for option in client.find_all(Locator::Css("#start-run select[name=method] option")).await? {
            methods.push(option.attr("value").await?.unwrap_or_default());
        }
        ensure!(methods == ["kto", "sft"], "a thumbs campaign trains KTO or SFT: {methods:?}");
        Ok(())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_with_the_keyboard_and_without_javascript() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = single_campaign(&server, "scale", 2).await;
    users::create_user(&server.db, "uma", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    let score = |quality: &str| match quality {
        "good" => '5',
        "fine" => '3',
        _ => '1',
    };
    with_browser(true, async |client| {
        log_in(&client, &base, "uma", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;
        // Two of the three with number keys (the lease on the third stays with this rater).
        for _ in 0..2 {
            let (assignment, quality) = response_on_screen(&client).await?;
            press(&client, score(&quality)).await?;
            press(&client, ENTER).await?;
            next_task_after(&client, &assignment).await?;
        }
        Ok(())
    })
    .await;
    users::create_user(&server.db, "vic", PASSWORD, Role::Annotator).await.unwrap();
    with_browser(false, async |client| {
        log_in(&client, &base, "vic", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        let hydrated = client.find(Locator::Css("#app")).await?.attr("data-hydrated").await?;
        ensure!(hydrated.as_deref() == Some("false"), "JavaScript is really off: {hydrated:?}");
        // Submitting without a rating: the page comes back with the message and the same task.
        let (assignment, quality) = response_on_screen(&client).await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        let error = wait_for(&client, "p.error").await?.text().await?;
        ensure!(error.contains("Rate the response first"), "the missing rating is named: {error}");
        let (again, _) = response_on_screen(&client).await?;
        ensure!(again == assignment, "the same task is still on screen");
        let css = format!("input[name='rating'][value='{}']", score(&quality));
        client.find(Locator::Css(&css)).await?.click().await?;
        client.find(Locator::Css("textarea[name=rationale]")).await?.send_keys("clear and short").await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        next_task_after(&client, &assignment).await?;
        Ok(())
    })
    .await;
    let expected = |model: &str| -> i64 {
        match model {
            "good" => 5,
            "fine" => 3,
            _ => 1,
        }
    };
    let uma = stored_ratings(&server, "uma").await;
    assert_eq!(uma.len(), 2);
    assert!(uma.iter().all(|(model, rating, _)| *rating == expected(model)), "{uma:?}");
    let vic = stored_ratings(&server, "vic").await;
    assert_eq!(vic.len(), 1);
    assert_eq!(vic[0].1, expected(&vic[0].0), "{vic:?}");
    let reason: String = sqlx::query_scalar(
        "SELECT c.rationale FROM comparisons c JOIN users u ON u.id = c.rater_id WHERE u.username = 'vic'",
    )
    .fetch_one(&server.sql)
    .await
    .unwrap();
    assert_eq!(reason, "clear and short");
    server.stop().await;
}
