//! Campaigns: creating, reading, listing and updating them. A campaign is a set of pairs
//! to rate with its guidelines, overlap (votes wanted per pair), status and gold-check rate.
//!
//! Ranking, thumbs and scale campaigns are stored with `kind = 'pairwise'` (their tasks are
//! imported like pairs) and `feedback` saying what raters answer: `ranking`, `thumbs` or
//! `scale` (migration 0009 says why).

use pairwise_api::arena::ArenaSettings;
use pairwise_api::campaigns::{Aspect, Campaign, CampaignKind, CampaignStatus, CampaignUpdate, NewCampaign};

use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::feedback::{self, aspects_json, validate_aspects};
use crate::store::{Backend, Db, SqlRow, Store, now_ms, tx_body};

macro_rules! campaign_select {
    () => {
        "SELECT c.id, c.name, c.kind, c.feedback, c.arena, c.aspects, c.guidelines, c.guidelines_version, c.overlap, c.status, \
         c.gold_rate, c.lease_seconds, c.free_votes, c.created_at, c.updated_at, c.source_run_id, \
         (SELECT COUNT(*) FROM pairs p WHERE p.campaign_id = c.id AND p.is_gold = 0) AS pair_count, \
         (SELECT COALESCE(CAST(SUM(p.vote_count) AS BIGINT), 0) FROM pairs p WHERE p.campaign_id = c.id AND p.is_gold = 0) AS vote_total, \
         COALESCE((SELECT r.votes FROM rater_progress r WHERE r.campaign_id = c.id AND r.rater_id = $1), 0) AS my_votes \
         FROM campaigns c"
    };
}

fn campaign_from_row(row: &SqlRow) -> ApiResult<Campaign> {
    let status = row.text("status")?;
    let kind = row.text("kind")?;
    let overlap = row.int("overlap")?;
    let pairs = row.int("pair_count")?;
    Ok(Campaign {
        id: row.int("id")?,
        name: row.text("name")?,
        kind: match row.text("feedback")?.as_str() {
            "pair" => CampaignKind::parse(&kind).ok_or_else(|| anyhow::anyhow!("unknown campaign kind {kind}"))?,
            feedback => {
                CampaignKind::parse(feedback).ok_or_else(|| anyhow::anyhow!("unknown campaign feedback {feedback}"))?
            }
        },
        arena: serde_json::from_str(&row.text("arena")?)
            .map_err(|e| anyhow::anyhow!("campaign arena settings: {e}"))?,
        aspects: feedback::parse_aspects(&row.text("aspects")?)?,
        guidelines: row.text("guidelines")?,
        guidelines_version: row.int("guidelines_version")?,
        overlap,
        status: CampaignStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown status {status}"))?,
        gold_rate: row.real("gold_rate")?,
        lease_seconds: row.int("lease_seconds")?,
        free_votes: row.int("free_votes")? != 0,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        pairs,
        target_votes: pairs * overlap,
        votes: row.int("vote_total")?,
        my_votes: row.int("my_votes")?,
        source_run_id: row.opt_int("source_run_id")?,
    })
}

fn validate(name: &str, overlap: i64, gold_rate: f64, lease_seconds: i64) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request("name: must be 1-200 characters"));
    }
    if !(1..=100).contains(&overlap) {
        return Err(ApiError::bad_request("overlap: must be between 1 and 100"));
    }
    if !(0.0..=1.0).contains(&gold_rate) {
        return Err(ApiError::bad_request("gold_rate: must be between 0 and 1"));
    }
    if !(10..=86_400).contains(&lease_seconds) {
        return Err(ApiError::bad_request("lease_seconds: must be between 10 and 86400"));
    }
    Ok(())
}

fn validate_arena(arena: &ArenaSettings) -> ApiResult<()> {
    let problem = if !(1..=100_000).contains(&arena.max_prompt_chars) {
        "arena.max_prompt_chars: must be between 1 and 100000"
    } else if !(1..=600).contains(&arena.battles_per_minute) {
        "arena.battles_per_minute: must be between 1 and 600"
    } else if !(1..=600).contains(&arena.timeout_seconds) {
        "arena.timeout_seconds: must be between 1 and 600"
    } else if !(0.0..=2.0).contains(&arena.temperature) {
        "arena.temperature: must be between 0 and 2"
    } else if !(arena.top_p > 0.0 && arena.top_p <= 1.0) {
        "arena.top_p: must be in (0, 1]"
    } else if !(1..=32_768).contains(&arena.max_tokens) {
        "arena.max_tokens: must be between 1 and 32768"
    } else if let Some(i) = arena.prompt_pool.iter().position(|p| p.trim().is_empty()) {
        return Err(ApiError::bad_request(format!("arena.prompt_pool[{i}]: a prompt must not be empty")));
    } else {
        return Ok(());
    };
    Err(ApiError::bad_request(problem))
}

/// What a campaign's kind rules out: aspects outside pairwise campaigns, and free votes on
/// rankings (the screen order of a task's responses comes with its lease).
fn validate_kind(kind: CampaignKind, aspects: &[Aspect], free_votes: bool) -> ApiResult<()> {
    match kind {
        CampaignKind::Arena if !aspects.is_empty() => {
            Err(ApiError::bad_request("aspects: arena campaigns ask only for the overall choice"))
        }
        CampaignKind::Ranking if !aspects.is_empty() => {
            Err(ApiError::bad_request("aspects: ranking campaigns ask for one ranking per task"))
        }
        CampaignKind::Thumbs | CampaignKind::Scale if !aspects.is_empty() => {
            Err(ApiError::bad_request("aspects: thumbs and scale campaigns ask for one rating per response"))
        }
        CampaignKind::Ranking if free_votes => Err(ApiError::bad_request(
            "free_votes: ranking campaigns take votes on leased tasks only (the lease fixes the screen order)",
        )),
        _ => Ok(()),
    }
}

fn arena_json(arena: &ArenaSettings) -> ApiResult<String> {
    Ok(serde_json::to_string(arena).map_err(anyhow::Error::from)?)
}

fn name_taken(name: &str) -> impl Fn(ApiError) -> ApiError + '_ {
    move |e| {
        if e.is_unique_violation() {
            ApiError::conflict("name_taken", format!("a campaign named `{name}` already exists"))
        } else {
            e
        }
    }
}

pub async fn create_campaign(db: &Db, new: &NewCampaign) -> ApiResult<Campaign> {
    validate(&new.name, new.overlap, new.gold_rate, new.lease_seconds)?;
    validate_arena(&new.arena)?;
    validate_aspects(&new.aspects)?;
    validate_kind(new.kind, &new.aspects, new.free_votes)?;
    // An arena battle is voted on once, by the rater who started it: its pair never goes
    // out to other raters (see `arena`).
    let overlap = match new.kind {
        CampaignKind::Arena => 1,
        CampaignKind::Pairwise | CampaignKind::Ranking | CampaignKind::Thumbs | CampaignKind::Scale => new.overlap,
    };
    let (kind, feedback) = match new.kind {
        CampaignKind::Pairwise | CampaignKind::Arena => (new.kind.as_str(), "pair"),
        feedback => ("pairwise", feedback.as_str()),
    };
    let now = now_ms();
    let args = args![
        new.name.trim(),
        kind,
        feedback,
        arena_json(&new.arena)?,
        aspects_json(&new.aspects)?,
        &new.guidelines,
        overlap,
        new.status.as_str(),
        new.gold_rate,
        new.lease_seconds,
        new.free_votes,
        now
    ];
    let id = db
        .transact(tx_body(move |tx| {
            let args = args.clone();
            Box::pin(async move {
                let row = tx
                    .fetch_one(
                        "INSERT INTO campaigns (name, kind, feedback, arena, aspects, guidelines, overlap, status, \
                         gold_rate, lease_seconds, free_votes, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING id",
                        args,
                    )
                    .await?;
                Ok(row.int("id")?)
            })
        }))
        .await
        .map_err(name_taken(&new.name))?;
    get_campaign(db, id, 0).await
}

/// One campaign; `viewer` is the user whose own vote count fills `my_votes`.
pub async fn get_campaign(db: &Db, id: i64, viewer: i64) -> ApiResult<Campaign> {
    let row = db
        .fetch_optional(concat!(campaign_select!(), " WHERE c.id = $2"), args![viewer, id])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))?;
    campaign_from_row(&row)
}

pub async fn list_campaigns(db: &Db, viewer: i64, only_active: bool) -> ApiResult<Vec<Campaign>> {
    let sql = if only_active {
        concat!(campaign_select!(), " WHERE c.status = 'active' ORDER BY c.id")
    } else {
        concat!(campaign_select!(), " ORDER BY c.id")
    };
    let rows = db.fetch_all(sql, args![viewer]).await?;
    rows.iter().map(campaign_from_row).collect()
}

/// Applies an update: the current settings are read and the new ones written in one
/// transaction, so two concurrent updates cannot overwrite each other's fields.
pub async fn update_campaign(db: &Db, id: i64, update: &CampaignUpdate) -> ApiResult<Campaign> {
    let update = update.clone();
    db.transact(tx_body(move |tx| {
        let update = update.clone();
        Box::pin(async move { update_in(tx, id, &update).await })
    }))
    .await?;
    get_campaign(db, id, 0).await
}

async fn update_in(tx: &mut dyn Store, id: i64, update: &CampaignUpdate) -> ApiResult<()> {
    // On Postgres the row lock keeps a concurrent update waiting until this one commits; on
    // SQLite the writer thread already runs one transaction at a time.
    if tx.backend() == Backend::Postgres {
        tx.fetch_all("SELECT id FROM campaigns WHERE id = $1 FOR UPDATE", args![id]).await?;
    }
    let row = tx
        .fetch_optional(concat!(campaign_select!(), " WHERE c.id = $2"), args![0i64, id])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))?;
    let current = campaign_from_row(&row)?;
    let name = update.name.clone().unwrap_or(current.name.clone());
    let overlap = update.overlap.unwrap_or(current.overlap);
    let gold_rate = update.gold_rate.unwrap_or(current.gold_rate);
    let lease_seconds = update.lease_seconds.unwrap_or(current.lease_seconds);
    validate(&name, overlap, gold_rate, lease_seconds)?;
    if current.kind == CampaignKind::Arena && overlap != 1 {
        return Err(ApiError::bad_request("overlap: an arena battle is voted on once, by its rater (overlap 1)"));
    }
    let arena = update.arena.clone().unwrap_or(current.arena.clone());
    validate_arena(&arena)?;
    let free_votes = update.free_votes.unwrap_or(current.free_votes);
    validate_kind(current.kind, update.aspects.as_deref().unwrap_or(&current.aspects), free_votes)?;
    let aspects = match &update.aspects {
        Some(aspects) if *aspects != current.aspects => {
            validate_aspects(aspects)?;
            // Votes already stored would lack the new aspects (or keep removed ones).
            if tx
                .fetch_optional("SELECT id FROM comparisons WHERE campaign_id = $1 LIMIT 1", args![id])
                .await?
                .is_some()
            {
                return Err(ApiError::conflict("aspects_locked", "aspects: cannot change once the campaign has votes"));
            }
            aspects.clone()
        }
        _ => current.aspects.clone(),
    };
    let guidelines = update.guidelines.clone().unwrap_or(current.guidelines.clone());
    // Exported data and trained adapters record which guidelines version raters saw.
    let version = current.guidelines_version + i64::from(guidelines != current.guidelines);
    tx.execute(
        "UPDATE campaigns SET name = $1, guidelines = $2, guidelines_version = $3, overlap = $4, gold_rate = $5, \
         status = $6, lease_seconds = $7, free_votes = $8, arena = $9, aspects = $10, updated_at = $11 WHERE id = $12",
        args![
            name.trim(),
            guidelines,
            version,
            overlap,
            gold_rate,
            update.status.unwrap_or(current.status).as_str(),
            lease_seconds,
            free_votes,
            arena_json(&arena)?,
            aspects_json(&aspects)?,
            now_ms(),
            id
        ],
    )
    .await
    .map_err(ApiError::from)
    .map_err(name_taken(&name))?;
    Ok(())
}
