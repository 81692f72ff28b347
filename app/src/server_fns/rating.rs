//! Server functions of the rating page: the campaign with its guidelines rendered, the
//! visitor's current pair, voting and skipping; and the view types of that page (pairs
//! with their Markdown rendered to sanitised HTML on the server).

// The vote form's fields are the server function's arguments; the lint is allowed here
// because the hydrate build does not carry a per-function allow through `#[server]`.
#![allow(clippy::too_many_arguments)]

use std::collections::BTreeMap;

use leptos::prelude::*;
use pairwise_api::campaigns::{Aspect, CampaignKind, CampaignStatus};
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use {
    crate::backend::{NO_BODY, call, get},
    crate::errors::fail,
    crate::markdown::render,
    http::Method,
    pairwise_api::campaigns::Campaign,
    pairwise_api::votes::{Correction, Next, ScreenChoice, Side, VoteOutcome, VoteRequest},
    serde::de::IntoDeserializer,
};

/// A campaign as the rating page shows it: guidelines already rendered (sanitised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingCampaign {
    pub id: i64,
    pub name: String,
    pub kind: CampaignKind,
    /// Per-aspect campaigns: the questions asked besides the overall one.
    pub aspects: Vec<Aspect>,
    pub guidelines_html: String,
}

/// One earlier turn of the conversation, rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub html: String,
}

/// A pair on screen: texts in on-screen order, Markdown rendered to sanitised HTML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairView {
    pub assignment_id: i64,
    pub turns: Vec<Turn>,
    pub prompt_html: String,
    pub left_html: String,
    pub right_html: String,
    /// The responses' own text: where a correction starts from.
    pub left_text: String,
    pub right_text: String,
    /// Ranking campaigns: every response of the task, in on-screen order, rendered.
    pub ranked_html: Vec<String>,
    /// Server time (ms) when the pair was rendered: without JavaScript the time spent on
    /// the pair is measured from here.
    pub shown_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NextView {
    Pair(PairView),
    Waiting,
    Done,
    Unavailable(CampaignStatus),
}

/// Everything the rating page shows below the guidelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateState {
    pub next: NextView,
    pub campaign_votes: i64,
    pub target_votes: i64,
    pub my_votes: i64,
}

#[server(prefix = "/ui", endpoint = "campaign_for_rating")]
pub async fn campaign_for_rating(id: i64) -> Result<RatingCampaign, ServerFnError> {
    let campaign: Campaign = get(&format!("/api/v1/campaigns/{id}")).await?;
    Ok(RatingCampaign {
        id,
        name: campaign.name,
        kind: campaign.kind,
        aspects: campaign.aspects,
        guidelines_html: render(&campaign.guidelines),
    })
}

/// The visitor's current pair (the same one until they vote or skip) and the progress.
#[server(prefix = "/ui", endpoint = "next_pair")]
pub async fn next_pair(campaign_id: i64) -> Result<RateState, ServerFnError> {
    let next: Next = get(&format!("/api/v1/campaigns/{campaign_id}/next")).await?;
    rate_state(campaign_id, next).await
}

/// Records a vote (`choice` as seen on screen: left / right / tie / both_bad) and returns
/// the next pair. The assignment id is the idempotency key: a repeated submit (double
/// click, reload after a post) is stored once. Per-aspect campaigns send `aspects[NAME]`
/// fields with the same values; a non-empty `correction` is the rater's fix of the
/// response on `correction_side` (default: the one chosen).
#[server(prefix = "/ui", endpoint = "submit_vote")]
pub async fn submit_vote(
    campaign_id: i64,
    assignment_id: i64,
    choice: String,
    strength: String,
    rationale: String,
    shown_at: i64,
    time_ms: Option<i64>,
    aspects: Option<BTreeMap<String, String>>,
    correction_side: Option<String>,
    correction: Option<String>,
) -> Result<RateState, ServerFnError> {
    let (choice, strength) = vote_fields(&choice, &strength)?;
    let aspects = aspects
        .map(|aspects| {
            aspects
                .into_iter()
                .map(|(name, value)| {
                    let chosen = ScreenChoice::deserialize(value.as_str().into_deserializer())
                        .map_err(|_: serde::de::value::Error| fail(format!("{name}: choose A, B, tie or both bad")))?;
                    Ok((name, chosen))
                })
                .collect::<Result<BTreeMap<_, _>, ServerFnError>>()
        })
        .transpose()?;
    let correction = correction_of(choice, correction_side.as_deref(), correction.as_deref())?;
    let vote = VoteRequest {
        choice: Some(choice),
        strength,
        aspects,
        correction,
        ..web_vote(assignment_id, &rationale, shown_at, time_ms)
    };
    let outcome: VoteOutcome = call(Method::POST, "/api/v1/votes", Some(&vote)).await?;
    rate_state(campaign_id, outcome.next).await
}

/// Records a ranking of a task's `responses` responses and returns the next task. `ranks`
/// holds each response's rank by the letter it is shown under (`ranks[A]` for the first; 1 =
/// best, equal ranks tie); `all_bad` is the "all bad" box. The assignment id is the
/// idempotency key, as for pairs.
#[server(prefix = "/ui", endpoint = "submit_ranking")]
pub async fn submit_ranking(
    campaign_id: i64,
    assignment_id: i64,
    responses: usize,
    ranks: Option<BTreeMap<String, String>>,
    all_bad: Option<String>,
    rationale: String,
    shown_at: i64,
    time_ms: Option<i64>,
) -> Result<RateState, ServerFnError> {
    let ranks = ranks.unwrap_or_default();
    let ranks = (0..responses)
        .map(|slot| {
            let letter = slot_letter(slot);
            match ranks.get(&letter.to_string()).map(|r| r.trim()).unwrap_or("") {
                "" => Err(fail(format!("Rank every response first: response {letter} has no rank."))),
                rank => rank.parse::<i64>().map_err(|_| fail(format!("ranks[{letter}]: `{rank}` is not a number"))),
            }
        })
        .collect::<Result<Vec<i64>, ServerFnError>>()?;
    let vote = VoteRequest {
        ranks: Some(ranks),
        all_bad: all_bad.is_some_and(|v| !v.is_empty()),
        ..web_vote(assignment_id, &rationale, shown_at, time_ms)
    };
    let outcome: VoteOutcome = call(Method::POST, "/api/v1/votes", Some(&vote)).await?;
    rate_state(campaign_id, outcome.next).await
}

/// Records a thumbs or scale rating of a single-response task and returns the next task.
/// `rating` is the value posted (thumbs: 1 up, 0 down; scale: 1-5); a non-empty
/// `correction` is the rater's fix of the response. The assignment id is the idempotency
/// key, as for pairs.
#[server(prefix = "/ui", endpoint = "submit_rating")]
pub async fn submit_rating(
    campaign_id: i64,
    assignment_id: i64,
    rating: Option<String>,
    rationale: String,
    shown_at: i64,
    time_ms: Option<i64>,
    correction: Option<String>,
) -> Result<RateState, ServerFnError> {
    let rating = match rating.as_deref().map(str::trim) {
        None | Some("") => return Err(fail("Rate the response first.")),
        Some(value) => value.parse::<i64>().map_err(|_| fail(format!("rating: `{value}` is not a number")))?,
    };
    let correction =
        correction.filter(|text| !text.trim().is_empty()).map(|text| Correction { side: Side::Left, text });
    let vote =
        VoteRequest { rating: Some(rating), correction, ..web_vote(assignment_id, &rationale, shown_at, time_ms) };
    let outcome: VoteOutcome = call(Method::POST, "/api/v1/votes", Some(&vote)).await?;
    rate_state(campaign_id, outcome.next).await
}

/// A vote from the rating page with nothing chosen yet: the lease is its idempotency key, and
/// without JavaScript (no `time_ms`) the time is measured from when the task was served.
#[cfg(feature = "ssr")]
fn web_vote(assignment_id: i64, rationale: &str, shown_at: i64, time_ms: Option<i64>) -> VoteRequest {
    let rationale = rationale.trim();
    VoteRequest {
        assignment_id: Some(assignment_id),
        pair_id: None,
        swapped: false,
        choice: None,
        ranks: None,
        all_bad: false,
        rating: None,
        strength: None,
        rationale: (!rationale.is_empty()).then(|| rationale.to_string()),
        time_ms: Some(time_ms.unwrap_or_else(|| (now_ms() - shown_at).max(0))),
        client_key: format!("web-{assignment_id}"),
        aspects: None,
        correction: None,
    }
}

/// The letter a response is shown under: A, B, C, … by screen position.
pub fn slot_letter(slot: usize) -> char {
    char::from(b'A' + (slot % 26) as u8)
}

/// Gives the pair back and returns the next one.
#[server(prefix = "/ui", endpoint = "skip_pair")]
pub async fn skip_pair(campaign_id: i64, assignment_id: i64) -> Result<RateState, ServerFnError> {
    let next: Next = call(Method::POST, &format!("/api/v1/assignments/{assignment_id}/skip"), NO_BODY).await?;
    rate_state(campaign_id, next).await
}

/// The choice and strength of a vote form (`choice` as on screen, `strength` 1–3 or empty).
#[cfg(feature = "ssr")]
pub(crate) fn vote_fields(choice: &str, strength: &str) -> Result<(ScreenChoice, Option<i64>), ServerFnError> {
    // The API's own names of the choices (serde's), so the two cannot drift apart.
    let choice = ScreenChoice::deserialize(choice.into_deserializer())
        .map_err(|_: serde::de::value::Error| fail("choose A better, B better, tie or both bad first"))?;
    let strength = match strength {
        "" => None,
        s => Some(s.parse().map_err(|_| fail(format!("strength: `{s}` is not 1, 2 or 3")))?),
    };
    Ok((choice, strength))
}

/// The correction of a vote form: none when the text is empty; the side defaults to the
/// chosen response.
#[cfg(feature = "ssr")]
fn correction_of(
    choice: ScreenChoice,
    side: Option<&str>,
    text: Option<&str>,
) -> Result<Option<Correction>, ServerFnError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    let side = match (side.unwrap_or(""), choice) {
        ("left", _) | ("", ScreenChoice::Left) => Side::Left,
        ("right", _) | ("", ScreenChoice::Right) => Side::Right,
        ("", _) => return Err(fail("correction: choose which response you corrected (A or B)")),
        (other, _) => return Err(fail(format!("correction_side: `{other}` is not left or right"))),
    };
    Ok(Some(Correction { side, text: text.to_string() }))
}

#[cfg(feature = "ssr")]
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The API's answer to "what next" as the page shows it, with the campaign's progress.
#[cfg(feature = "ssr")]
async fn rate_state(campaign_id: i64, next: Next) -> Result<RateState, ServerFnError> {
    let campaign: Campaign = get(&format!("/api/v1/campaigns/{campaign_id}")).await?;
    let next = match next {
        Next::Assigned { pair } => NextView::Pair(PairView {
            assignment_id: pair.assignment_id,
            turns: pair.messages.iter().map(|m| Turn { role: m.role.clone(), html: render(&m.content) }).collect(),
            prompt_html: render(&pair.prompt),
            left_html: render(&pair.left),
            right_html: render(&pair.right),
            left_text: pair.left,
            right_text: pair.right,
            ranked_html: pair.responses.iter().map(|text| render(text)).collect(),
            shown_at: now_ms(),
        }),
        Next::Waiting => NextView::Waiting,
        Next::Done => NextView::Done,
        Next::Unavailable { campaign_status } => NextView::Unavailable(campaign_status),
    };
    Ok(RateState {
        next,
        campaign_votes: campaign.votes,
        target_votes: campaign.target_votes,
        my_votes: campaign.my_votes,
    })
}
