//! Feedback beyond the overall choice, written in the vote's own transaction: a campaign's
//! aspects (checked when an admin sets them; every vote then chooses on each) and raters'
//! corrections of a response (a new response row of the same prompt, linked to the one it
//! revises by `corrections`; the original is never touched). A correction on a thumbs or
//! scale task is of its one response.
//!
//! Postgres checks and stores aspects inside its vote function (`pairwise_vote_feedback`,
//! migration 0012) with the same rules and messages as `store_aspects` here.

use std::collections::BTreeMap;

use pairwise_api::campaigns::Aspect;
use pairwise_api::votes::{Choice, Correction, ScreenChoice, Side, VoteRequest};

use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::import::write::content_hash;
use crate::store::Store;

const MAX_ASPECTS: usize = 8;
const MAX_CORRECTION_BYTES: usize = 32_768;

/// The first problem with a campaign's aspects, naming the aspect.
pub fn validate_aspects(aspects: &[Aspect]) -> ApiResult<()> {
    if aspects.len() > MAX_ASPECTS {
        return Err(ApiError::bad_request(format!("aspects: at most {MAX_ASPECTS}")));
    }
    for (i, aspect) in aspects.iter().enumerate() {
        let name = &aspect.name;
        let valid = (1..=40).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(ApiError::bad_request(format!(
                "aspects[{i}].name: `{name}` must be 1-40 characters of a-z, 0-9 and _"
            )));
        }
        if aspects[..i].iter().any(|a| a.name == *name) {
            return Err(ApiError::bad_request(format!("aspects[{i}].name: `{name}` is listed twice")));
        }
        if aspect.description.len() > 300 {
            return Err(ApiError::bad_request(format!("aspects[{i}].description: at most 300 bytes")));
        }
    }
    Ok(())
}

pub fn aspects_json(aspects: &[Aspect]) -> ApiResult<String> {
    Ok(serde_json::to_string(aspects).map_err(anyhow::Error::from)?)
}

pub fn parse_aspects(json: &str) -> ApiResult<Vec<Aspect>> {
    Ok(serde_json::from_str(json).map_err(|e| anyhow::anyhow!("campaign aspects: {e}"))?)
}

/// What can be checked of a vote's feedback before its transaction.
pub fn validate_feedback(req: &VoteRequest) -> ApiResult<()> {
    if let Some(correction) = &req.correction {
        if correction.text.trim().is_empty() {
            return Err(ApiError::bad_request("correction.text: must not be empty (leave the correction out instead)"));
        }
        if correction.text.len() > MAX_CORRECTION_BYTES {
            return Err(ApiError::bad_request(format!("correction.text: at most {MAX_CORRECTION_BYTES} bytes")));
        }
    }
    Ok(())
}

/// Checks a new vote's aspect choices against the campaign's aspects and stores them.
pub(crate) async fn store_aspects(
    tx: &mut dyn Store,
    aspects: &[Aspect],
    vote: &VoteRow,
    chosen: Option<&BTreeMap<String, ScreenChoice>>,
) -> ApiResult<()> {
    if aspects.is_empty() {
        if chosen.is_some() {
            return Err(ApiError::bad_request("aspects: this campaign asks only for the overall choice"));
        }
        return Ok(());
    }
    let chosen = chosen.cloned().unwrap_or_default();
    if let Some(missing) = aspects.iter().find(|a| !chosen.contains_key(&a.name)) {
        return Err(ApiError::bad_request(format!(
            "aspects.{}: missing; this campaign asks for a choice on each of its aspects",
            missing.name
        )));
    }
    if let Some(unknown) = chosen.keys().find(|name| !aspects.iter().any(|a| &a.name == *name)) {
        return Err(ApiError::bad_request(format!("aspects.{unknown}: not an aspect of this campaign")));
    }
    for (name, choice) in chosen {
        tx.execute(
            "INSERT INTO aspect_votes (comparison_id, campaign_id, pair_id, aspect, choice) VALUES ($1, $2, $3, $4, $5)",
            args![vote.id, vote.campaign_id, vote.pair_id, name, choice.to_stored(vote.swapped).as_str()],
        )
        .await?;
    }
    Ok(())
}

/// A stored vote as the feedback tables refer to it.
pub(crate) struct VoteRow {
    pub id: i64,
    pub campaign_id: i64,
    pub pair_id: i64,
    pub swapped: bool,
}

/// Stores a new vote's correction: the corrected text as a response of the pair's prompt
/// (reused when the same text is already one) and the link to the response it revises.
pub(crate) async fn store_correction(
    tx: &mut dyn Store,
    vote_id: i64,
    rater: i64,
    correction: &Correction,
    now: i64,
) -> ApiResult<()> {
    let vote = tx
        .fetch_one(
            "SELECT c.campaign_id, c.pair_id, c.swapped, c.choice, p.prompt_id, p.response_a_id, p.response_b_id \
             FROM comparisons c JOIN pairs p ON p.id = c.pair_id WHERE c.id = $1",
            args![vote_id],
        )
        .await?;
    let swapped = vote.int("swapped")? != 0;
    let screen = match correction.side {
        Side::Left => ScreenChoice::Left,
        Side::Right => ScreenChoice::Right,
    };
    let side = screen.to_stored(swapped);
    if side == Choice::B && vote.opt_int("response_b_id")?.is_none() {
        return Err(ApiError::bad_request("correction.side: this task has one response, `left`"));
    }
    let choice = vote.text("choice")?;
    if matches!(choice.as_str(), "a" | "b") && choice != side.as_str() {
        let chosen = if screen == ScreenChoice::Left { "right" } else { "left" };
        return Err(ApiError::bad_request(format!(
            "correction.side: correct the response you chose as better ({chosen})"
        )));
    }
    let original_id = vote.int(if side == Choice::A { "response_a_id" } else { "response_b_id" })?;
    let original =
        tx.fetch_one("SELECT text, model, model_version FROM responses WHERE id = $1", args![original_id]).await?;
    if original.text("text")?.trim() == correction.text.trim() {
        return Err(ApiError::bad_request(
            "correction.text: is the same as the response (leave the correction out to keep it)",
        ));
    }
    let prompt_id = vote.int("prompt_id")?;
    let hash = content_hash(&[&correction.text]);
    let params = serde_json::json!({"revision_of": original_id}).to_string();
    tx.execute(
        "INSERT INTO responses (prompt_id, content_hash, text, model, model_version, params, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (prompt_id, content_hash) DO NOTHING",
        args![
            prompt_id,
            hash.as_str(),
            correction.text.as_str(),
            original.text("model")?,
            original.opt_text("model_version")?,
            params,
            now
        ],
    )
    .await?;
    let revision = tx
        .fetch_one(
            "SELECT id FROM responses WHERE prompt_id = $1 AND content_hash = $2",
            args![prompt_id, hash.as_str()],
        )
        .await?
        .int("id")?;
    tx.execute(
        "INSERT INTO corrections (comparison_id, campaign_id, pair_id, original_response_id, response_id, rater_id, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![vote_id, vote.int("campaign_id")?, vote.int("pair_id")?, original_id, revision, rater, now],
    )
    .await?;
    Ok(())
}
