//! Ranking campaigns in a real browser: a rater ranks every response of a task with the
//! keyboard alone (number keys rank the outlined response and move on, a tie, "all bad",
//! a missing rank refused and pointed at), and the same without JavaScript. The stored
//! ranks are checked in the database. Screenshots: `ranking-desktop.png`, `ranking-phone.png`.

use anyhow::{Context, Result, ensure};
use fantoccini::{Client, Locator};
use pairwise_server::accounts::{Role, users};
use pairwise_tests::browser::{
    ENTER, eventually, log_in, next_task_after, press, screenshot, wait_for, wait_hydrated, with_browser,
};
use pairwise_tests::{Backend, TestServer, create_campaign, import};
use serde_json::json;

const PASSWORD: &str = "ranking-pass-1";

/// A ranking campaign of two tasks of four responses each; a response says how good it is
/// (`best`, `good`, `fair`, `worst`).
async fn ranking_campaign(server: &TestServer) -> i64 {
    let admin = server.client_for("setup-admin", Role::Admin).await;
    let campaign =
        create_campaign(&admin, json!({"name": "Rankings", "kind": "ranking", "status": "active", "overlap": 1})).await;
    let lines: Vec<_> = (0..2)
        .map(|i| {
            let responses: Vec<_> = ["best", "good", "fair", "worst"]
                .iter()
                .map(|q| json!({"text": format!("Answer {i}: the {q} one."), "model": q}))
                .collect();
            json!({"prompt": format!("Question {i}: explain ranking."), "responses": responses})
        })
        .collect();
    import(&admin, campaign, &lines).await;
    campaign
}

/// The quality words of the responses on screen, in screen order, and the task's assignment.
async fn task_on_screen(client: &Client) -> Result<(String, Vec<String>)> {
    let prompt = wait_for(client, "section.prompt[data-assignment]").await?;
    let assignment = prompt.attr("data-assignment").await?.context("data-assignment")?;
    let mut qualities = Vec::new();
    for card in client.find_all(Locator::Css("article.response.ranked .md")).await? {
        let text = card.text().await?;
        let quality = ["best", "good", "fair", "worst"].into_iter().find(|q| text.contains(&format!("the {q} one")));
        qualities.push(quality.context("a quality word in the response")?.to_string());
    }
    Ok((assignment, qualities))
}

fn rank_of(quality: &str) -> char {
    match quality {
        "best" => '1',
        "good" => '2',
        "fair" => '3',
        _ => '4',
    }
}

/// Stored ranks of `rater`'s votes as `(quality, rank)` by model, and whether all were bad.
async fn stored_ranks(server: &TestServer, rater: &str) -> Vec<(String, i64, String)> {
    sqlx::query_as(
        "SELECT r.model, rv.rank, c.choice FROM ranking_votes rv JOIN comparisons c ON c.id = rv.comparison_id \
         JOIN users u ON u.id = c.rater_id JOIN ranking_responses rr ON rr.pair_id = rv.pair_id \
         AND rr.position = rv.position JOIN responses r ON r.id = rr.response_id WHERE u.username = $1 \
         ORDER BY c.seq, r.model",
    )
    .bind(rater)
    .fetch_all(&server.sql)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranking_with_the_keyboard() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = ranking_campaign(&server).await;
    users::create_user(&server.db, "rhea", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    with_browser(true, async |client| {
        log_in(&client, &base, "rhea", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        wait_hydrated(&client).await?;

        // First task: the keys rank the outlined response and move on. Three ranks, then
        // Enter: the missing one is named and outlined.
        let (assignment, shown) = task_on_screen(&client).await?;
        ensure!(shown.len() == 4, "all four responses are shown: {shown:?}");
        for quality in &shown[..3] {
            press(&client, rank_of(quality)).await?;
        }
        press(&client, ENTER).await?;
        let error = wait_for(&client, "p.error").await?.text().await?;
        ensure!(error.contains("response D has no rank"), "the missing rank is named: {error}");
        let current = client.find(Locator::Css("article.response.ranked.current")).await?;
        ensure!(current.attr("data-slot").await?.as_deref() == Some("3"), "the unranked response is outlined");
        press(&client, rank_of(&shown[3])).await?;
        eventually("the message to go once every response is ranked", || async {
            Ok(client.find_all(Locator::Css("p.error")).await?.is_empty().then_some(()))
        })
        .await?;
        screenshot(&client, "ranking-desktop", (1280, 1200), None).await?;
        screenshot(&client, "ranking-phone", (390, 844), None).await?;
        press(&client, ENTER).await?;
        next_task_after(&client, &assignment).await?;

        // Second task: "good" and "fair" tie at 2, everything is marked bad (X), and a
        // wrong first key is moved back to with ↑ and fixed.
        let (assignment, shown) = task_on_screen(&client).await?;
        press(&client, '4').await?;
        press(&client, '\u{e013}').await?;
        for quality in &shown {
            let key = match quality.as_str() {
                "fair" => '2',
                other => rank_of(other),
            };
            press(&client, key).await?;
        }
        press(&client, 'x').await?;
        ensure!(client.find(Locator::Css("#all-bad")).await?.prop("checked").await?.as_deref() == Some("true"));
        press(&client, ENTER).await?;
        next_task_after(&client, &assignment).await?;
        wait_for(&client, "#no-pair").await?;
        Ok(())
    })
    .await;
    let ranks = stored_ranks(&server, "rhea").await;
    let got: Vec<(&str, i64, &str)> = ranks.iter().map(|(m, r, c)| (m.as_str(), *r, c.as_str())).collect();
    let first: Vec<(&str, i64)> = got[..4].iter().map(|(m, r, _)| (*m, *r)).collect();
    assert_eq!(first, [("best", 1), ("fair", 3), ("good", 2), ("worst", 4)]);
    let second: Vec<(&str, i64)> = got[4..].iter().map(|(m, r, _)| (*m, *r)).collect();
    assert_eq!(second, [("best", 1), ("fair", 2), ("good", 2), ("worst", 4)]);
    assert!(got[4..].iter().all(|(_, _, choice)| *choice == "both_bad"), "all bad is stored: {got:?}");
    assert!(got[..4].iter().all(|(_, _, choice)| *choice != "both_bad"), "{got:?}");

    // The admin's dashboard: the rankings' figures, position by position, and the
    // Plackett–Luce leaderboard.
    users::create_user(&server.db, "ruth", PASSWORD, Role::Admin).await.unwrap();
    with_browser(true, async |client| {
        log_in(&client, &base, "ruth", PASSWORD).await?;
        client.goto(&format!("{base}/admin/campaigns/{campaign}")).await?;
        wait_hydrated(&client).await?;
        let figures = wait_for(&client, "#ranking-agreement").await?.text().await?;
        ensure!(figures.starts_with("2 rankings (1 all bad)"), "ranking figures: {figures}");
        let tiles = client.find(Locator::Css("#dashboard .tiles")).await?.text().await?;
        ensure!(
            tiles.contains("rank agreement (0 tasks)") && tiles.contains("ranked best when shown first"),
            "the tiles read the rankings: {tiles}"
        );
        let slots = client.find_all(Locator::Css("#ranking-positions tbody tr")).await?;
        ensure!(slots.len() == 4, "one row per screen position, got {}", slots.len());
        let caption = wait_for(&client, "#leaderboard p.muted").await?.text().await?;
        ensure!(caption.starts_with("Plackett–Luce scores from 2 rankings"), "leaderboard caption: {caption}");
        let first = client.find(Locator::Css("#leaderboard tbody tr td:nth-child(2)")).await?.text().await?;
        ensure!(first == "best", "the best answers lead the leaderboard: {first}");
        Ok(())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranking_without_javascript() {
    let server = TestServer::start(Backend::Sqlite).await;
    let campaign = ranking_campaign(&server).await;
    users::create_user(&server.db, "saul", PASSWORD, Role::Annotator).await.unwrap();
    let base = server.base.clone();
    with_browser(false, async |client| {
        log_in(&client, &base, "saul", PASSWORD).await?;
        client.goto(&format!("{base}/rate/{campaign}")).await?;
        let hydrated = client.find(Locator::Css("#app")).await?.attr("data-hydrated").await?;
        ensure!(hydrated.as_deref() == Some("false"), "JavaScript is really off: {hydrated:?}");
        // One rank left out: the page comes back with the message and the same task.
        let (assignment, shown) = task_on_screen(&client).await?;
        let letters = ['A', 'B', 'C', 'D'];
        for (slot, quality) in shown.iter().enumerate().take(3) {
            let css = format!("input[name='ranks[{}]'][value='{}']", letters[slot], rank_of(quality));
            client.find(Locator::Css(&css)).await?.click().await?;
        }
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        let error = wait_for(&client, "p.error").await?.text().await?;
        ensure!(error.contains("response D has no rank"), "the missing rank is named: {error}");
        let (again, shown) = task_on_screen(&client).await?;
        ensure!(again == assignment, "the same task is still on screen");
        for (slot, quality) in shown.iter().enumerate() {
            let css = format!("input[name='ranks[{}]'][value='{}']", letters[slot], rank_of(quality));
            client.find(Locator::Css(&css)).await?.click().await?;
        }
        client.find(Locator::Css("textarea[name=rationale]")).await?.send_keys("best explains it fully").await?;
        client.find(Locator::Css("#submit-vote")).await?.click().await?;
        next_task_after(&client, &assignment).await?;
        Ok(())
    })
    .await;
    let ranks = stored_ranks(&server, "saul").await;
    let got: Vec<(&str, i64)> = ranks.iter().map(|(m, r, _)| (m.as_str(), *r)).collect();
    assert_eq!(got, [("best", 1), ("fair", 3), ("good", 2), ("worst", 4)]);
    let reason: String = sqlx::query_scalar("SELECT rationale FROM comparisons").fetch_one(&server.sql).await.unwrap();
    assert_eq!(reason, "best explains it fully");
    server.stop().await;
}
