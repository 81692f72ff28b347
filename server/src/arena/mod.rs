//! Arena campaigns: contenders (OpenAI-compatible endpoints) and battles. A rater sends a
//! prompt; two active contenders are drawn (`pick_contenders`) and answer it live, streamed
//! to the page (`contend`); the rater may continue the conversation with both, then votes.
//! Only the vote stores anything lasting: the battle becomes a prompt, two responses (model
//! = contender name, checkpoint = the endpoint's model, sampling parameters), a pair and a
//! vote, in one transaction through the same vote path as leased pairs. So stats, the
//! leaderboard, exports, schedules and runs read arena votes like any other, and a battle
//! whose contender failed, or that nobody voted on, leaves no pair behind.

pub mod contend;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use pairwise_api::arena::{
    ArenaSettings, ArenaState, Battle, BattleEvent, BattleStatus, BattleTurn, BattleVote, BattleVoteOutcome, Contender,
    ContenderUpdate, NewContender, Pairing, Side,
};
use pairwise_api::campaigns::{Campaign, CampaignKind, CampaignStatus};
use pairwise_api::votes::{Message, VoteRequest};
use rand::Rng;
use serde_json::json;

use self::contend::{Answer, Endpoint, Live};
use crate::args;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::import::{ImportItem, ItemBody, ResponseIn};
use crate::leaderboard::campaign_leaderboard;
use crate::store::{Db, SqlRow, Store, now_ms, tx_body};
use crate::votes::{Sequencer, number_vote, vote_in};

/// Exchanges one battle may have before it must be voted on.
pub const MAX_TURNS: usize = 8;

fn contender_from_row(row: &SqlRow) -> ApiResult<Contender> {
    Ok(Contender {
        id: row.int("id")?,
        campaign_id: row.int("campaign_id")?,
        name: row.text("name")?,
        base_url: row.text("base_url")?,
        model: row.text("model")?,
        has_api_key: row.opt_text("api_key")?.is_some(),
        active: row.int("active")? != 0,
        source_run_id: row.opt_int("source_run_id")?,
        created_at: row.int("created_at")?,
    })
}

fn endpoint_from_row(row: &SqlRow) -> ApiResult<Endpoint> {
    Ok(Endpoint {
        name: row.text("name")?,
        base_url: row.text("base_url")?,
        model: row.text("model")?,
        api_key: row.opt_text("api_key")?,
    })
}

/// Refuses a campaign that is not an arena (for a run that is to join it).
pub async fn check_arena_campaign(db: &Db, campaign_id: i64) -> ApiResult<()> {
    arena_campaign(db, campaign_id).await.map(|_| ())
}

async fn arena_campaign(db: &Db, campaign_id: i64) -> ApiResult<Campaign> {
    let campaign = get_campaign(db, campaign_id, 0).await?;
    if campaign.kind != CampaignKind::Arena {
        return Err(ApiError::conflict("not_arena", format!("campaign {campaign_id} is not an arena campaign")));
    }
    Ok(campaign)
}

fn validate_endpoint(base_url: &str, model: &str) -> ApiResult<()> {
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) || base_url.len() > 2000 {
        return Err(ApiError::bad_request(
            "base_url: must be an http:// or https:// URL (e.g. http://127.0.0.1:8081/v1)",
        ));
    }
    if model.trim().is_empty() || model.len() > 200 {
        return Err(ApiError::bad_request("model: must be 1-200 characters"));
    }
    Ok(())
}

pub async fn add_contender(
    db: &Db,
    campaign_id: i64,
    new: &NewContender,
    source_run: Option<i64>,
) -> ApiResult<Contender> {
    arena_campaign(db, campaign_id).await?;
    let name = new.name.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request("name: must be 1-200 characters"));
    }
    validate_endpoint(&new.base_url, &new.model)?;
    let key = new.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(str::to_string);
    let row = db
        .write_returning(
            "INSERT INTO contenders (campaign_id, name, base_url, model, api_key, active, source_run_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7) \
             RETURNING id, campaign_id, name, base_url, model, api_key, active, source_run_id, created_at",
            args![campaign_id, name.as_str(), new.base_url.trim(), new.model.trim(), key, source_run, now_ms()],
        )
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::conflict("name_taken", format!("this campaign already has a contender named `{name}`"))
            } else {
                e.into()
            }
        })?;
    contender_from_row(&row)
}

pub async fn list_contenders(db: &Db, campaign_id: i64) -> ApiResult<Vec<Contender>> {
    arena_campaign(db, campaign_id).await?;
    let rows = db
        .fetch_all(
            "SELECT id, campaign_id, name, base_url, model, api_key, active, source_run_id, created_at \
             FROM contenders WHERE campaign_id = $1 ORDER BY id",
            args![campaign_id],
        )
        .await?;
    rows.iter().map(contender_from_row).collect()
}

/// Changes a contender; battles already fought keep the names and texts they had.
pub async fn update_contender(db: &Db, id: i64, update: &ContenderUpdate) -> ApiResult<Contender> {
    let update = update.clone();
    let row = db
        .transact(tx_body(move |tx| {
            let update = update.clone();
            Box::pin(async move {
                let row = tx
                    .fetch_optional(
                        "SELECT id, campaign_id, name, base_url, model, api_key, active, source_run_id, created_at \
                         FROM contenders WHERE id = $1",
                        args![id],
                    )
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("contender {id}")))?;
                let base_url = update.base_url.clone().unwrap_or(row.text("base_url")?);
                let model = update.model.clone().unwrap_or(row.text("model")?);
                validate_endpoint(&base_url, &model)?;
                let key = match &update.api_key {
                    Some(key) => Some(key.trim().to_string()).filter(|k| !k.is_empty()),
                    None => row.opt_text("api_key")?,
                };
                let active = update.active.unwrap_or(row.int("active")? != 0);
                Ok::<_, ApiError>(
                    tx.fetch_one(
                        "UPDATE contenders SET base_url = $1, model = $2, api_key = $3, active = $4 WHERE id = $5 \
                         RETURNING id, campaign_id, name, base_url, model, api_key, active, source_run_id, created_at",
                        args![base_url.trim(), model.trim(), key, active, id],
                    )
                    .await?,
                )
            })
        }))
        .await?;
    contender_from_row(&row)
}

/// Removes a contender that never fought; one that did is deactivated instead (its battles
/// keep pointing at it).
pub async fn remove_contender(db: &Db, id: i64) -> ApiResult<()> {
    db.transact(tx_body(move |tx| {
        Box::pin(async move {
            let fought = tx
                .fetch_optional(
                    "SELECT id FROM battles WHERE left_contender_id = $1 OR right_contender_id = $1 LIMIT 1",
                    args![id],
                )
                .await?
                .is_some();
            let changed = if fought {
                tx.execute("UPDATE contenders SET active = 0 WHERE id = $1", args![id]).await?
            } else {
                tx.execute("DELETE FROM contenders WHERE id = $1", args![id]).await?
            };
            if changed == 0 {
                return Err(ApiError::NotFound(format!("contender {id}")));
            }
            Ok(())
        })
    }))
    .await
}

macro_rules! battle_select {
    ($where:literal) => {
        concat!(
            "SELECT b.id, b.campaign_id, b.rater_id, b.status, b.turns, b.error, b.pair_id, b.created_at, ",
            "b.updated_at, b.left_contender_id, b.right_contender_id, l.name AS left_name, r.name AS right_name ",
            "FROM battles b JOIN contenders l ON l.id = b.left_contender_id ",
            "JOIN contenders r ON r.id = b.right_contender_id ",
            $where
        )
    };
}

/// A battle row as its rater may see it: names only once voted.
fn battle_from_row(row: &SqlRow) -> ApiResult<Battle> {
    let status = row.text("status")?;
    let status = BattleStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown battle status {status}"))?;
    let voted = status == BattleStatus::Voted;
    let turns: Vec<BattleTurn> = serde_json::from_str(&row.text("turns")?).map_err(anyhow::Error::from)?;
    Ok(Battle {
        id: row.int("id")?,
        campaign_id: row.int("campaign_id")?,
        status,
        can_continue: status == BattleStatus::Ready && turns.len() < MAX_TURNS,
        turns,
        error: row.opt_text("error")?,
        left_model: if voted { Some(row.text("left_name")?) } else { None },
        right_model: if voted { Some(row.text("right_name")?) } else { None },
        pair_id: row.opt_int("pair_id")?,
        created_at: row.int("created_at")?,
    })
}

/// How long a battle may stay `generating` before it counts as cut off (its server
/// stopped mid-answer): the campaign's answer timeout and some slack.
fn generation_deadline(settings: &ArenaSettings, updated_at: i64) -> i64 {
    updated_at + settings.timeout_seconds as i64 * 1000 + 15_000
}

/// The rater's own battle.
async fn owned_battle(db: &Db, rater: i64, battle_id: i64) -> ApiResult<(Battle, SqlRow)> {
    let row = db
        .fetch_optional(battle_select!("WHERE b.id = $1 AND b.rater_id = $2"), args![battle_id, rater])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("battle {battle_id}")))?;
    Ok((battle_from_row(&row)?, row))
}

pub async fn get_battle(db: &Db, rater: i64, battle_id: i64) -> ApiResult<Battle> {
    let (battle, row) = owned_battle(db, rater, battle_id).await?;
    // (The page's event stream asks this every 300 ms of a battle another server generates:
    // the campaign's arena settings alone, not the whole campaign with its counts.)
    if battle.status == BattleStatus::Generating {
        let settings = db.fetch_one("SELECT arena FROM campaigns WHERE id = $1", args![battle.campaign_id]).await?;
        let settings: ArenaSettings = serde_json::from_str(&settings.text("arena")?).map_err(anyhow::Error::from)?;
        if now_ms() > generation_deadline(&settings, row.int("updated_at")?) {
            return cut_off(db, battle_id).await;
        }
    }
    Ok(battle)
}

/// Marks a battle whose generation never finished (its server stopped) as failed.
async fn cut_off(db: &Db, battle_id: i64) -> ApiResult<Battle> {
    db.execute(
        "UPDATE battles SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3 AND status = 'generating'",
        args![
            "The models' answers were cut off (the server stopped). Nothing was stored; start a new battle.",
            now_ms(),
            battle_id
        ],
    )
    .await?;
    let row = db.fetch_one(battle_select!("WHERE b.id = $1"), args![battle_id]).await?;
    battle_from_row(&row)
}

/// What the rating page of an arena shows: the rater's latest battle and the options.
pub async fn arena_state(db: &Db, rater: i64, campaign_id: i64) -> ApiResult<ArenaState> {
    let campaign = arena_campaign(db, campaign_id).await?;
    let latest = db
        .fetch_optional(
            concat!(
                "SELECT b.id FROM battles b WHERE b.rater_id = $1 AND b.campaign_id = $2 ",
                "AND b.status <> 'abandoned' ORDER BY b.id DESC LIMIT 1"
            ),
            args![rater, campaign_id],
        )
        .await?;
    let battle = match latest {
        Some(row) => Some(get_battle(db, rater, row.int("id")?).await?),
        None => None,
    };
    let contenders = db
        .fetch_one("SELECT COUNT(*) AS n FROM contenders WHERE campaign_id = $1 AND active = 1", args![campaign_id])
        .await?
        .int("n")? as usize;
    Ok(ArenaState {
        battle,
        can_draw_prompt: !campaign.arena.prompt_pool.is_empty(),
        max_prompt_chars: campaign.arena.max_prompt_chars,
        contenders,
    })
}

fn checked_prompt(prompt: &str, settings: &ArenaSettings) -> ApiResult<String> {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        return Err(ApiError::bad_request("prompt: type a message for the models first"));
    }
    let chars = prompt.chars().count();
    if chars > settings.max_prompt_chars {
        return Err(ApiError::bad_request(format!(
            "prompt: at most {} characters in this campaign (this one has {chars})",
            settings.max_prompt_chars
        )));
    }
    Ok(prompt.to_string())
}

/// Two distinct active contenders, in random left/right order.
async fn pick_contenders(db: &Db, campaign: &Campaign) -> ApiResult<(i64, i64)> {
    let rows = db
        .fetch_all(
            "SELECT id, name, model FROM contenders WHERE campaign_id = $1 AND active = 1 ORDER BY id",
            args![campaign.id],
        )
        .await?;
    if rows.len() < 2 {
        return Err(ApiError::conflict(
            "not_enough_contenders",
            "this arena has fewer than two active contenders; ask an admin to add them",
        ));
    }
    let mut contenders = Vec::with_capacity(rows.len());
    for row in &rows {
        contenders.push((row.int("id")?, leaderboard_key(&row.text("name")?, &row.text("model")?)));
    }
    let mut pairs: Vec<(usize, usize, f64)> = Vec::new();
    let seed: u64 = rand::rng().random();
    let intervals = match campaign.arena.pairing {
        Pairing::Uniform => None,
        Pairing::Overlap => Some(campaign_leaderboard(db, campaign.id, None, 100, seed).await?),
    };
    for i in 0..contenders.len() {
        for j in i + 1..contenders.len() {
            let weight = match &intervals {
                None => 1.0,
                Some(board) => {
                    let interval =
                        |key: &str| board.models.iter().find(|m| m.model == key).map(|m| (m.ci_low, m.ci_high));
                    overlap_weight(interval(&contenders[i].1), interval(&contenders[j].1))
                }
            };
            pairs.push((i, j, weight));
        }
    }
    let mut rng = rand::rng();
    let total: f64 = pairs.iter().map(|p| p.2).sum();
    let mut draw = rng.random::<f64>() * total;
    let (i, j, _) = *pairs
        .iter()
        .find(|p| {
            draw -= p.2;
            draw <= 0.0
        })
        .unwrap_or(pairs.last().expect("two contenders make a pair"));
    let (a, b) = (contenders[i].0, contenders[j].0);
    Ok(if rng.random_bool(0.5) { (a, b) } else { (b, a) })
}

/// How often `overlap` pairing draws two contenders, from their leaderboard intervals:
/// the share of the narrower interval the two overlap on, plus a little so that a settled
/// order is still checked now and then; a contender without votes overlaps fully.
fn overlap_weight(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> f64 {
    const FLOOR: f64 = 0.05;
    match (a, b) {
        (Some(a), Some(b)) => {
            let overlap = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
            let narrower = (a.1 - a.0).min(b.1 - b.0).max(1e-9);
            FLOOR + (overlap / narrower).min(1.0)
        }
        _ => FLOOR + 1.0,
    }
}

/// The leaderboard's key of a contender's responses (`model@model_version`, see tallies).
fn leaderboard_key(name: &str, model: &str) -> String {
    match checkpoint(name, model) {
        Some(model) => format!("{name}@{model}"),
        None => name.to_string(),
    }
}

/// The stored checkpoint of a contender's responses: the endpoint's model when it says
/// more than the contender's name.
fn checkpoint<'m>(name: &str, model: &'m str) -> Option<&'m str> {
    (model != name).then_some(model)
}

/// Refuses a rater who started too many battles in the last minute.
async fn check_rate(db: &Db, rater: i64, campaign: &Campaign) -> ApiResult<()> {
    let since = now_ms() - 60_000;
    let row = db
        .fetch_one(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM battles \
             WHERE rater_id = $1 AND campaign_id = $2 AND created_at > $3",
            args![rater, campaign.id, since],
        )
        .await?;
    if row.int("n")? >= i64::from(campaign.arena.battles_per_minute) {
        let oldest = row.opt_int("oldest")?.unwrap_or(since);
        let retry_after_s = ((oldest - since) / 1000 + 1).max(1) as u64;
        return Err(ApiError::TooManyRequests { what: "too many battles in the last minute", retry_after_s });
    }
    Ok(())
}

/// Starts a battle: checks, draws the contenders, stores the battle as `generating` and
/// sets the contenders answering. With `wait` it returns once both answers are in.
pub async fn start_battle(
    db: &Db,
    live: &Live,
    rater: i64,
    campaign_id: i64,
    prompt: Option<&str>,
    draw_prompt: bool,
    wait: bool,
) -> ApiResult<Battle> {
    let campaign = arena_campaign(db, campaign_id).await?;
    if campaign.status != CampaignStatus::Active {
        return Err(ApiError::conflict("campaign_not_active", "the campaign is not open for rating"));
    }
    let prompt = match (prompt.filter(|p| !p.trim().is_empty()), draw_prompt) {
        (Some(prompt), _) => checked_prompt(prompt, &campaign.arena)?,
        (None, true) => {
            let pool = &campaign.arena.prompt_pool;
            if pool.is_empty() {
                return Err(ApiError::bad_request("draw_prompt: this campaign has no prompt pool; type a prompt"));
            }
            let drawn = rand::rng().random_range(0..pool.len());
            pool[drawn].clone()
        }
        (None, false) => return Err(ApiError::bad_request("prompt: type a message for the models first")),
    };
    check_rate(db, rater, &campaign).await?;
    let (left, right) = pick_contenders(db, &campaign).await?;
    let turns = serde_json::to_string(&[BattleTurn { prompt, left: String::new(), right: String::new() }])
        .map_err(anyhow::Error::from)?;
    let id = db
        .transact(tx_body(move |tx| {
            let turns = turns.clone();
            Box::pin(async move {
                let now = now_ms();
                // A battle left unvoted is given up when its rater starts another.
                tx.execute(
                    "UPDATE battles SET status = 'abandoned', updated_at = $1 WHERE rater_id = $2 AND campaign_id = $3 \
                     AND status IN ('generating', 'ready')",
                    args![now, rater, campaign_id],
                )
                .await?;
                let row = tx
                    .fetch_one(
                        "INSERT INTO battles (campaign_id, rater_id, left_contender_id, right_contender_id, status, turns, \
                         created_at, updated_at) VALUES ($1, $2, $3, $4, 'generating', $5, $6, $6) RETURNING id",
                        args![campaign_id, rater, left, right, turns, now],
                    )
                    .await?;
                Ok::<_, ApiError>(row.int("id")?)
            })
        }))
        .await?;
    generate(db, live, rater, id, campaign.arena, wait).await
}

/// Sends a follow-up message to both contenders of a ready battle.
pub async fn continue_battle(
    db: &Db,
    live: &Live,
    rater: i64,
    battle_id: i64,
    prompt: &str,
    wait: bool,
) -> ApiResult<Battle> {
    let (battle, _) = owned_battle(db, rater, battle_id).await?;
    let campaign = arena_campaign(db, battle.campaign_id).await?;
    let prompt = checked_prompt(prompt, &campaign.arena)?;
    if battle.status != BattleStatus::Ready {
        return Err(ApiError::conflict("battle_not_ready", "this battle is not waiting for a message"));
    }
    if battle.turns.len() >= MAX_TURNS {
        return Err(ApiError::conflict(
            "too_many_turns",
            format!("a battle has at most {MAX_TURNS} exchanges: vote now"),
        ));
    }
    let mut turns = battle.turns.clone();
    turns.push(BattleTurn { prompt, left: String::new(), right: String::new() });
    let turns = serde_json::to_string(&turns).map_err(anyhow::Error::from)?;
    let changed = db
        .execute(
            "UPDATE battles SET status = 'generating', turns = $1, updated_at = $2 WHERE id = $3 AND status = 'ready'",
            args![turns, now_ms(), battle_id],
        )
        .await?;
    if changed == 0 {
        return Err(ApiError::conflict("battle_not_ready", "this battle is not waiting for a message"));
    }
    generate(db, live, rater, battle_id, campaign.arena, wait).await
}

/// What one side is sent for the latest turn: every exchange so far with that side's own
/// answers, then the latest message.
fn conversation(turns: &[BattleTurn], side: Side) -> Vec<Message> {
    let mut messages = Vec::with_capacity(turns.len() * 2);
    for (i, turn) in turns.iter().enumerate() {
        messages.push(Message { role: "user".into(), content: turn.prompt.clone() });
        if i + 1 < turns.len() {
            let answer = match side {
                Side::Left => &turn.left,
                Side::Right => &turn.right,
            };
            messages.push(Message { role: "assistant".into(), content: answer.clone() });
        }
    }
    messages
}

/// The exchanges before the latest message, as one side had them.
fn history(turns: &[BattleTurn], side: Side) -> Vec<Message> {
    let mut messages = conversation(turns, side);
    messages.pop();
    messages
}

/// Sets the contenders answering the battle's latest turn, on a task of its own (a page
/// that goes away does not stop it); with `wait`, returns after it finished.
async fn generate(
    db: &Db,
    live: &Live,
    rater: i64,
    battle_id: i64,
    settings: ArenaSettings,
    wait: bool,
) -> ApiResult<Battle> {
    let row = db
        .fetch_one(
            "SELECT b.turns, b.left_contender_id, b.right_contender_id FROM battles b WHERE b.id = $1",
            args![battle_id],
        )
        .await?;
    let turns: Vec<BattleTurn> = serde_json::from_str(&row.text("turns")?).map_err(anyhow::Error::from)?;
    let endpoint = async |id: i64| -> ApiResult<Endpoint> {
        let row =
            db.fetch_one("SELECT name, base_url, model, api_key FROM contenders WHERE id = $1", args![id]).await?;
        endpoint_from_row(&row)
    };
    let left = endpoint(row.int("left_contender_id")?).await?;
    let right = endpoint(row.int("right_contender_id")?).await?;
    let task = tokio::spawn({
        let (db, live) = (db.clone(), live.clone());
        async move {
            let outcome = live
                .answer_both(
                    battle_id,
                    (&left, conversation(&turns, Side::Left)),
                    (&right, conversation(&turns, Side::Right)),
                    &settings,
                )
                .await;
            let event = match finish_turn(&db, battle_id, turns, outcome, &settings).await {
                Ok(event) => event,
                Err(error) => {
                    tracing::error!(battle = battle_id, %error, "storing a battle's answers");
                    BattleEvent::Failed {
                        message: "The answers could not be saved. Nothing was stored; start a new battle.".into(),
                    }
                }
            };
            live.end(battle_id, event);
        }
    });
    if wait {
        task.await.map_err(|e| anyhow::anyhow!("battle {battle_id}: {e}"))?;
    }
    get_battle(db, rater, battle_id).await
}

/// Stores the latest turn's answers (`ready`), or the failure (`failed`, nothing else kept).
async fn finish_turn(
    db: &Db,
    battle_id: i64,
    mut turns: Vec<BattleTurn>,
    outcome: Result<(Answer, Answer), String>,
    settings: &ArenaSettings,
) -> ApiResult<BattleEvent> {
    let outcome = outcome.and_then(|(left, right)| {
        if left.text.trim() == right.text.trim() {
            Err("Both models gave the same answer, so there is nothing to compare.".to_string())
        } else {
            Ok((left, right))
        }
    });
    match outcome {
        Ok((left, right)) => {
            let last = turns.last_mut().expect("a battle has a turn");
            last.left = left.text.clone();
            last.right = right.text.clone();
            let meta = |a: &Answer| {
                json!({"finish_reason": a.finish_reason, "latency_ms": a.latency_ms, "temperature": settings.temperature,
                       "top_p": settings.top_p, "max_tokens": settings.max_tokens})
                .to_string()
            };
            db.execute(
                "UPDATE battles SET status = 'ready', turns = $1, left_meta = $2, right_meta = $3, updated_at = $4 \
                 WHERE id = $5 AND status = 'generating'",
                args![
                    serde_json::to_string(&turns).map_err(anyhow::Error::from)?,
                    meta(&left),
                    meta(&right),
                    now_ms(),
                    battle_id
                ],
            )
            .await?;
            Ok(BattleEvent::Ready)
        }
        Err(reason) => {
            let message = format!("{reason} The battle was discarded and nothing was stored; start a new one.");
            db.execute(
                "UPDATE battles SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3 AND status = 'generating'",
                args![message.as_str(), now_ms(), battle_id],
            )
            .await?;
            Ok(BattleEvent::Failed { message })
        }
    }
}

/// Stores a ready battle and its vote in one transaction, reveals the names. Voting again
/// on a voted battle returns the stored vote.
pub async fn vote_battle(
    db: &Db,
    sequencer: &Sequencer,
    rater: i64,
    battle_id: i64,
    vote: &BattleVote,
) -> ApiResult<BattleVoteOutcome> {
    let (battle, _) = owned_battle(db, rater, battle_id).await?;
    if !matches!(battle.status, BattleStatus::Ready | BattleStatus::Voted) {
        return Err(ApiError::conflict("battle_not_ready", "this battle has no answers to vote on"));
    }
    let request = VoteRequest {
        assignment_id: Some(0),
        pair_id: None,
        swapped: false,
        choice: Some(vote.choice),
        ranks: None,
        all_bad: false,
        rating: None,
        strength: vote.strength,
        rationale: vote.rationale.clone(),
        time_ms: vote.time_ms,
        client_key: format!("battle-{battle_id}"),
        aspects: None,
        correction: None,
    };
    let request = Arc::new(request);
    let mut outcome = db
        .transact(tx_body(move |tx| {
            let request = request.clone();
            Box::pin(async move { store_battle(tx, rater, battle_id, &request).await })
        }))
        .await?;
    number_vote(sequencer, battle.campaign_id, &mut outcome).await?;
    let (battle, _) = owned_battle(db, rater, battle_id).await?;
    Ok(BattleVoteOutcome { battle, vote: outcome.vote, my_votes: outcome.my_votes })
}

async fn store_battle(
    tx: &mut dyn Store,
    rater: i64,
    battle_id: i64,
    request: &VoteRequest,
) -> ApiResult<pairwise_api::votes::VoteOutcome> {
    let row = tx.fetch_one(battle_select!("WHERE b.id = $1"), args![battle_id]).await?;
    let status = row.text("status")?;
    let campaign_id = row.int("campaign_id")?;
    if status == "voted" {
        // A resubmission: the vote's key finds the stored vote (and nothing new is written).
        let assignment = tx
            .fetch_one(
                "SELECT a.id FROM assignments a WHERE a.pair_id = $1 AND a.rater_id = $2",
                args![row.opt_int("pair_id")?, rater],
            )
            .await?;
        let request = VoteRequest { assignment_id: Some(assignment.int("id")?), ..request.clone() };
        return vote_in(tx, rater, &request).await;
    }
    if status != "ready" {
        return Err(ApiError::conflict("battle_not_ready", "this battle has no answers to vote on"));
    }
    let turns: Vec<BattleTurn> = serde_json::from_str(&row.text("turns")?).map_err(anyhow::Error::from)?;
    let meta = tx
        .fetch_one(
            "SELECT b.left_meta, b.right_meta, l.base_url AS left_url, l.model AS left_model, \
             r.base_url AS right_url, r.model AS right_model FROM battles b \
             JOIN contenders l ON l.id = b.left_contender_id JOIN contenders r ON r.id = b.right_contender_id \
             WHERE b.id = $1",
            args![battle_id],
        )
        .await?;
    let last = turns.last().expect("a battle has a turn");
    let multi_turn = turns.len() > 1;
    let response = |side: Side, text: &str| -> ApiResult<ResponseIn> {
        let prefix = match side {
            Side::Left => "left",
            Side::Right => "right",
        };
        let name = row.text(&format!("{prefix}_name"))?;
        let model = meta.text(&format!("{prefix}_model"))?;
        let mut params: serde_json::Value =
            serde_json::from_str(&meta.text(&format!("{prefix}_meta"))?).map_err(anyhow::Error::from)?;
        params["endpoint"] = json!(meta.text(&format!("{prefix}_url"))?);
        params["endpoint_model"] = json!(model);
        params["arena_battle"] = json!(battle_id);
        if multi_turn {
            params["conversation"] = json!(history(&turns, side));
        }
        let model_version = checkpoint(&name, &model).map(str::to_string);
        Ok(ResponseIn { text: text.to_string(), model: name, model_version, params })
    };
    let item = ImportItem {
        line: 1,
        prompt: last.prompt.clone(),
        // After several exchanges the two sides' histories differ: the pair's shared context
        // is response A's, and each response keeps its own in `params.conversation`.
        messages: history(&turns, Side::Left),
        metadata: json!({"source": "arena", "battle": battle_id}),
        body: ItemBody::Pair {
            a: Box::new(response(Side::Left, &last.left)?),
            b: Box::new(response(Side::Right, &last.right)?),
            gold: None,
        },
        gold_ranks: None,
    };
    let now = now_ms();
    let pair_id = crate::import::write::write_pair(tx, campaign_id, &item, now).await?;
    let assignment = tx
        .fetch_optional(
            "INSERT INTO assignments (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at) \
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $7) ON CONFLICT (pair_id, rater_id) DO NOTHING RETURNING id",
            args![campaign_id, pair_id, rater, false, false, now, now + 3_600_000],
        )
        .await?
        .ok_or_else(|| ApiError::conflict("already_voted", "you have already voted on these two exact answers"))?;
    tx.execute("UPDATE pairs SET claimed = claimed + 1 WHERE id = $1", args![pair_id]).await?;
    let request = VoteRequest { assignment_id: Some(assignment.int("id")?), ..request.clone() };
    let outcome = vote_in(tx, rater, &request).await?;
    tx.execute(
        "UPDATE battles SET status = 'voted', pair_id = $1, updated_at = $2 WHERE id = $3",
        args![pair_id, now, battle_id],
    )
    .await?;
    Ok(outcome)
}

/// A `pairwise-train serve` that takes adapters at run time (its `--admin-key`).
#[derive(Debug, Clone)]
pub struct ServeEndpoint {
    /// Its root URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    pub admin_key: Option<String>,
    /// Sent by the contenders it serves, when it asks for one.
    pub api_key: Option<String>,
}

/// A finished run's adapter joins an arena: registered with `serve` as `run-ID`, then added
/// to the campaign as a contender linked to the run.
pub async fn join_arena(
    db: &Db,
    serve: &ServeEndpoint,
    run_id: i64,
    campaign_id: i64,
    adapter: &Path,
) -> anyhow::Result<Contender> {
    let name = format!("run-{run_id}");
    let adapter = adapter.canonicalize().with_context(|| format!("the run's adapter {}", adapter.display()))?;
    let root = serve.url.trim_end_matches('/').trim_end_matches("/v1");
    let mut request = reqwest::Client::new()
        .post(format!("{root}/v1/adapters"))
        .json(&json!({"name": name, "path": adapter.display().to_string()}))
        .timeout(std::time::Duration::from_secs(120));
    if let Some(key) = &serve.admin_key {
        request = request.bearer_auth(key);
    }
    let reply = request.send().await.with_context(|| format!("reaching pairwise-train serve at {root}"))?;
    let status = reply.status();
    if !status.is_success() {
        let body: serde_json::Value = reply.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no message").to_string();
        anyhow::bail!("pairwise-train serve at {root} refused the adapter (HTTP {status}): {message}");
    }
    let contender = NewContender {
        name: name.clone(),
        base_url: format!("{root}/v1"),
        model: name,
        api_key: serve.api_key.clone(),
    };
    Ok(add_contender(db, campaign_id, &contender, Some(run_id)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_intervals_are_drawn_more_often_than_settled_ones() {
        let close = overlap_weight(Some((990.0, 1030.0)), Some((1000.0, 1040.0)));
        let apart = overlap_weight(Some((900.0, 950.0)), Some((1000.0, 1040.0)));
        let new = overlap_weight(None, Some((1000.0, 1040.0)));
        assert!((close - (0.05 + 0.75)).abs() < 1e-9, "{close}");
        assert!((apart - 0.05).abs() < 1e-9, "a settled pair keeps a small chance: {apart}");
        assert!(new > close && close > apart);
        // One interval inside the other overlaps fully.
        assert!((overlap_weight(Some((0.0, 100.0)), Some((40.0, 60.0))) - 1.05).abs() < 1e-9);
    }

    #[test]
    fn each_side_hears_its_own_answers() {
        let turns = vec![
            BattleTurn { prompt: "hi".into(), left: "L1".into(), right: "R1".into() },
            BattleTurn { prompt: "more".into(), left: String::new(), right: String::new() },
        ];
        let right: Vec<(String, String)> =
            conversation(&turns, Side::Right).into_iter().map(|m| (m.role, m.content)).collect();
        let expected = [("user", "hi"), ("assistant", "R1"), ("user", "more")];
        assert_eq!(right, expected.map(|(r, c)| (r.to_string(), c.to_string())));
        assert_eq!(history(&turns, Side::Left).len(), 2);
        assert_eq!(leaderboard_key("round 2", "run-7"), "round 2@run-7");
        assert_eq!(leaderboard_key("warm", "warm"), "warm");
    }
}
