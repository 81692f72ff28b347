//! Work distribution and voting: `GET /campaigns/{id}/next` hands a rater a pair under a
//! lease, `POST /votes` records a vote and returns the next pair in the same response,
//! `POST /assignments/{id}/skip` gives a pair back.
//!
//! Invariants, per campaign: a pair's `claimed` (votes + live leases) never exceeds the
//! overlap, so no pair gets more votes than wanted and no more leases are out than needed;
//! a rater never holds or votes on the same pair twice; leases past their expiry return to
//! the pool the next time anyone asks for work. Every transaction here first locks the
//! campaign row (`Db::lock_campaign_sql`), which makes these checks race-free on Postgres
//! and matches SQLite's single writer.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::CurrentUser;
use crate::campaigns::CampaignStatus;
use crate::db::{Db, Tx, is_retryable, is_unique_violation, now_ms};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::import::Message;
use crate::state::AppState;

/// Choice as the rater saw it on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenChoice {
    Left,
    Right,
    Tie,
    BothBad,
}

/// Choice in the stored order of the pair (`a` = response_a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    A,
    B,
    Tie,
    BothBad,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::A => "a",
            Choice::B => "b",
            Choice::Tie => "tie",
            Choice::BothBad => "both_bad",
        }
    }

    pub fn parse(s: &str) -> Option<Choice> {
        match s {
            "a" => Some(Choice::A),
            "b" => Some(Choice::B),
            "tie" => Some(Choice::Tie),
            "both_bad" => Some(Choice::BothBad),
            _ => None,
        }
    }
}

impl ScreenChoice {
    /// When the pair was shown swapped, the left response is `b`.
    pub fn to_stored(self, swapped: bool) -> Choice {
        match (self, swapped) {
            (ScreenChoice::Left, false) | (ScreenChoice::Right, true) => Choice::A,
            (ScreenChoice::Right, false) | (ScreenChoice::Left, true) => Choice::B,
            (ScreenChoice::Tie, _) => Choice::Tie,
            (ScreenChoice::BothBad, _) => Choice::BothBad,
        }
    }
}

/// A pair as shown to one rater: texts in on-screen order, no model names (blind rating).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedPair {
    pub assignment_id: i64,
    pub campaign_id: i64,
    pub pair_id: i64,
    pub prompt: String,
    /// Earlier turns of the conversation, oldest first.
    pub messages: Vec<Message>,
    pub left: String,
    pub right: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Next {
    /// A pair to rate.
    Assigned { pair: ServedPair },
    /// Nothing left for this rater.
    Done,
    /// Remaining pairs are leased to other raters; ask again later.
    Waiting,
    /// The campaign is not open for rating (draft, paused, closed).
    Unavailable { campaign_status: CampaignStatus },
}

struct LockedCampaign {
    id: i64,
    status: CampaignStatus,
    overlap: i64,
    gold_rate: f64,
    lease_ms: i64,
    free_votes: bool,
}

/// Random draws made before the transaction (the thread RNG cannot cross an await).
#[derive(Clone, Copy)]
struct Dice {
    gold_roll: f64,
    swap: bool,
}

impl Dice {
    fn roll() -> Dice {
        let mut rng = rand::rng();
        Dice {
            gold_roll: rng.random(),
            swap: rng.random_bool(0.5),
        }
    }
}

async fn lock_campaign(db: &Db, tx: &mut Tx, id: i64) -> ApiResult<LockedCampaign> {
    let row = sqlx::query(db.lock_campaign_sql())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))?;
    let status: String = row.try_get("status")?;
    Ok(LockedCampaign {
        id,
        status: CampaignStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown status {status}"))?,
        overlap: row.try_get("overlap")?,
        gold_rate: row.try_get("gold_rate")?,
        lease_ms: row.try_get::<i64, _>("lease_seconds")? * 1000,
        free_votes: row.try_get::<i64, _>("free_votes")? != 0,
    })
}

/// Returns leases past their expiry to the pool.
async fn reclaim_expired(tx: &mut Tx, campaign_id: i64, now: i64) -> ApiResult<()> {
    let expired: Vec<AnyRow> = sqlx::query(
        "UPDATE assignments SET status = 'expired' WHERE campaign_id = $1 AND status = 'active' AND expires_at <= $2 \
         RETURNING pair_id, is_gold",
    )
    .bind(campaign_id)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    for row in expired {
        if row.try_get::<i64, _>("is_gold")? == 0 {
            sqlx::query("UPDATE pairs SET claimed = claimed - 1 WHERE id = $1")
                .bind(row.try_get::<i64, _>("pair_id")?)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

async fn served_pair(tx: &mut Tx, assignment: &AnyRow, campaign_id: i64) -> ApiResult<ServedPair> {
    let pair_id: i64 = assignment.try_get("pair_id")?;
    let swapped = assignment.try_get::<i64, _>("swapped")? != 0;
    let row = sqlx::query(
        "SELECT pr.text AS prompt, pr.messages, ra.text AS text_a, rb.text AS text_b FROM pairs p \
         JOIN prompts pr ON pr.id = p.prompt_id JOIN responses ra ON ra.id = p.response_a_id \
         JOIN responses rb ON rb.id = p.response_b_id WHERE p.id = $1",
    )
    .bind(pair_id)
    .fetch_one(&mut **tx)
    .await?;
    let messages: String = row.try_get("messages")?;
    let (a, b): (String, String) = (row.try_get("text_a")?, row.try_get("text_b")?);
    let (left, right) = if swapped { (b, a) } else { (a, b) };
    Ok(ServedPair {
        assignment_id: assignment.try_get("id")?,
        campaign_id,
        pair_id,
        prompt: row.try_get("prompt")?,
        messages: serde_json::from_str(&messages).map_err(anyhow::Error::from)?,
        left,
        right,
        expires_at: assignment.try_get("expires_at")?,
    })
}

/// Finds (or keeps) the rater's current pair. Runs inside a transaction holding the
/// campaign lock.
async fn assign(tx: &mut Tx, campaign: &LockedCampaign, rater: i64, now: i64, dice: Dice) -> ApiResult<Next> {
    if campaign.status != CampaignStatus::Active {
        return Ok(Next::Unavailable {
            campaign_status: campaign.status,
        });
    }
    reclaim_expired(tx, campaign.id, now).await?;
    // Asking again while holding a lease returns the same pair (page reloads are harmless).
    let held = sqlx::query(
        "SELECT id, pair_id, swapped, expires_at FROM assignments \
         WHERE rater_id = $1 AND campaign_id = $2 AND status = 'active' ORDER BY id LIMIT 1",
    )
    .bind(rater)
    .bind(campaign.id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(held) = held {
        return Ok(Next::Assigned {
            pair: served_pair(tx, &held, campaign.id).await?,
        });
    }
    let regular: Option<i64> = sqlx::query_scalar(
        "SELECT p.id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 0 AND p.claimed < $2 \
         AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = $3 AND a.status <> 'expired') \
         ORDER BY p.vote_count, p.claimed, p.shuffle_key LIMIT 1",
    )
    .bind(campaign.id)
    .bind(campaign.overlap)
    .bind(rater)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(regular) = regular else {
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT p.id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 0 AND p.vote_count < $2 \
             AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = $3 AND a.status <> 'expired') \
             LIMIT 1",
        )
        .bind(campaign.id)
        .bind(campaign.overlap)
        .bind(rater)
        .fetch_optional(&mut **tx)
        .await?;
        return Ok(if open.is_some() { Next::Waiting } else { Next::Done });
    };
    // Gold checks are mixed in only while there is real work, at the campaign's rate.
    let gold: Option<i64> = if campaign.gold_rate > 0.0 && dice.gold_roll < campaign.gold_rate {
        sqlx::query_scalar(
            "SELECT p.id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 1 \
             AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = $2 AND a.status <> 'expired') \
             ORDER BY p.vote_count, p.shuffle_key LIMIT 1",
        )
        .bind(campaign.id)
        .bind(rater)
        .fetch_optional(&mut **tx)
        .await?
    } else {
        None
    };
    let (pair_id, is_gold) = match gold {
        Some(id) => (id, true),
        None => {
            sqlx::query("UPDATE pairs SET claimed = claimed + 1 WHERE id = $1")
                .bind(regular)
                .execute(&mut **tx)
                .await?;
            (regular, false)
        }
    };
    let assignment = sqlx::query(
        "INSERT INTO assignments (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7) \
         ON CONFLICT (pair_id, rater_id) DO UPDATE SET status = 'active', swapped = excluded.swapped, \
         created_at = excluded.created_at, expires_at = excluded.expires_at \
         RETURNING id, pair_id, swapped, expires_at",
    )
    .bind(campaign.id)
    .bind(pair_id)
    .bind(rater)
    .bind(i64::from(dice.swap))
    .bind(i64::from(is_gold))
    .bind(now)
    .bind(now + campaign.lease_ms)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Next::Assigned {
        pair: served_pair(tx, &assignment, campaign.id).await?,
    })
}

/// Runs a write transaction, retrying on deadlock / serialization failure / SQLite busy.
async fn with_retries<T, F, Fut>(mut attempt: F) -> ApiResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(ApiError::Database(e)) if tries < 5 && is_retryable(&e) => {
                tracing::debug!(error = %e, tries, "retrying transaction");
                tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}

pub async fn next_pair(db: &Db, campaign_id: i64, rater: i64) -> ApiResult<Next> {
    with_retries(|| async {
        let mut tx = db.begin_write().await?;
        let campaign = lock_campaign(db, &mut tx, campaign_id).await?;
        let next = assign(&mut tx, &campaign, rater, now_ms(), Dice::roll()).await?;
        tx.commit().await?;
        Ok(next)
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// The lease the pair was served under (normal mode).
    pub assignment_id: Option<i64>,
    /// Free-vote mode (campaign setting): the pair voted on, without a lease.
    pub pair_id: Option<i64>,
    /// Free-vote mode: whether response b was shown on the left.
    #[serde(default)]
    pub swapped: bool,
    pub choice: ScreenChoice,
    /// 1 = slightly, 2 = clearly, 3 = much better; only meaningful for left/right.
    pub strength: Option<i64>,
    pub rationale: Option<String>,
    /// Time the rater spent on the pair, in milliseconds.
    pub time_ms: Option<i64>,
    /// Client-generated idempotency key: a resubmission with the same key is stored once.
    pub client_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredVote {
    pub id: i64,
    pub seq: i64,
    pub pair_id: i64,
    pub choice: Choice,
    pub strength: Option<i64>,
    pub swapped: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoteOutcome {
    pub vote: StoredVote,
    /// True when this key had already been stored: nothing new was written.
    pub duplicate: bool,
    /// Votes of this rater in the campaign, including this one.
    pub my_votes: i64,
    pub next: Next,
}

fn validate_vote(req: &VoteRequest) -> ApiResult<()> {
    if req.client_key.is_empty() || req.client_key.len() > 100 {
        return Err(ApiError::bad_request("client_key: must be 1-100 characters"));
    }
    if let Some(strength) = req.strength
        && !(1..=3).contains(&strength)
    {
        return Err(ApiError::bad_request(
            "strength: must be 1 (slightly), 2 (clearly) or 3 (much better)",
        ));
    }
    if req.rationale.as_ref().is_some_and(|r| r.len() > 10_000) {
        return Err(ApiError::bad_request("rationale: at most 10000 bytes"));
    }
    if req.time_ms.is_some_and(|t| !(0..=86_400_000).contains(&t)) {
        return Err(ApiError::bad_request("time_ms: must be between 0 and 86400000"));
    }
    match (req.assignment_id, req.pair_id) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err(ApiError::bad_request(
            "give exactly one of assignment_id (leased vote) or pair_id (free vote)",
        )),
    }
}

fn stored_vote(row: &AnyRow) -> ApiResult<StoredVote> {
    let choice: String = row.try_get("choice")?;
    Ok(StoredVote {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        pair_id: row.try_get("pair_id")?,
        choice: Choice::parse(&choice).ok_or_else(|| anyhow::anyhow!("unknown choice {choice}"))?,
        strength: row.try_get("strength")?,
        swapped: row.try_get::<i64, _>("swapped")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

const VOTE_COLUMNS: &str = "id, seq, pair_id, choice, strength, swapped, created_at";

async fn my_votes(tx: &mut Tx, rater: i64, campaign_id: i64) -> ApiResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM comparisons WHERE rater_id = $1 AND campaign_id = $2")
            .bind(rater)
            .bind(campaign_id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Records a vote (idempotent on `client_key`) and hands out the next pair.
pub async fn submit_vote(db: &Db, rater: i64, req: &VoteRequest) -> ApiResult<VoteOutcome> {
    validate_vote(req)?;
    let dice = Dice::roll();
    let mut tries = 0;
    loop {
        tries += 1;
        match with_retries(|| vote_once(db, rater, req, dice)).await {
            // Two copies of the same vote racing on Postgres: the loser re-runs and
            // finds the winner's row through the idempotency key.
            Err(ApiError::Database(e)) if tries < 3 && is_unique_violation(&e) => continue,
            Err(ApiError::Database(e)) if is_unique_violation(&e) => {
                return Err(ApiError::conflict(
                    "already_voted",
                    "you have already voted on this pair",
                ));
            }
            other => return other,
        }
    }
}

async fn vote_once(db: &Db, rater: i64, req: &VoteRequest, dice: Dice) -> ApiResult<VoteOutcome> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let campaign_id: i64 = match (req.assignment_id, req.pair_id) {
        (Some(assignment_id), _) => {
            sqlx::query_scalar("SELECT campaign_id FROM assignments WHERE id = $1 AND rater_id = $2")
                .bind(assignment_id)
                .bind(rater)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("assignment {assignment_id}")))?
        }
        (None, Some(pair_id)) => sqlx::query_scalar("SELECT campaign_id FROM pairs WHERE id = $1")
            .bind(pair_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("pair {pair_id}")))?,
        (None, None) => unreachable!("validated"),
    };
    let campaign = lock_campaign(db, &mut tx, campaign_id).await?;

    let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VOTE_COLUMNS} FROM comparisons WHERE rater_id = $1 AND client_key = $2"
    )))
    .bind(rater)
    .bind(&req.client_key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(existing) = existing {
        let vote = stored_vote(&existing)?;
        let same_target = match (req.assignment_id, req.pair_id) {
            (_, Some(pair_id)) => pair_id == vote.pair_id,
            (Some(assignment_id), None) => {
                let pair: Option<i64> = sqlx::query_scalar("SELECT pair_id FROM assignments WHERE id = $1")
                    .bind(assignment_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                pair == Some(vote.pair_id)
            }
            (None, None) => false,
        };
        if !same_target {
            return Err(ApiError::conflict(
                "key_reused",
                "client_key was already used for a different pair",
            ));
        }
        let next = assign(&mut tx, &campaign, rater, now, dice).await?;
        let my_votes = my_votes(&mut tx, rater, campaign.id).await?;
        tx.commit().await?;
        return Ok(VoteOutcome {
            vote,
            duplicate: true,
            my_votes,
            next,
        });
    }
    if campaign.status == CampaignStatus::Closed {
        return Err(ApiError::conflict("campaign_closed", "the campaign is closed"));
    }

    let (assignment_id, pair_id, swapped) = match (req.assignment_id, req.pair_id) {
        (Some(assignment_id), _) => {
            let row = sqlx::query("SELECT pair_id, status, swapped, is_gold FROM assignments WHERE id = $1")
                .bind(assignment_id)
                .fetch_one(&mut *tx)
                .await?;
            let pair_id: i64 = row.try_get("pair_id")?;
            let status: String = row.try_get("status")?;
            let is_gold = row.try_get::<i64, _>("is_gold")? != 0;
            match status.as_str() {
                "active" => {}
                "voted" => {
                    return Err(ApiError::conflict(
                        "already_voted",
                        "you have already voted on this pair",
                    ));
                }
                // The lease lapsed (or was skipped): accept the work if the pair still has room.
                _ if is_gold => {}
                _ => {
                    let reclaimed =
                        sqlx::query("UPDATE pairs SET claimed = claimed + 1 WHERE id = $1 AND claimed < $2")
                            .bind(pair_id)
                            .bind(campaign.overlap)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    if reclaimed == 0 {
                        return Err(ApiError::conflict(
                            "lease_expired",
                            "the lease on this pair expired and other raters completed it",
                        ));
                    }
                }
            }
            (assignment_id, pair_id, row.try_get::<i64, _>("swapped")? != 0)
        }
        (None, Some(pair_id)) => {
            if !campaign.free_votes {
                return Err(ApiError::forbidden(
                    "this campaign only accepts votes on leased pairs (assignment_id)",
                ));
            }
            let held = sqlx::query("SELECT id, status FROM assignments WHERE pair_id = $1 AND rater_id = $2")
                .bind(pair_id)
                .bind(rater)
                .fetch_optional(&mut *tx)
                .await?;
            let held_active = match &held {
                Some(row) => row.try_get::<String, _>("status")? == "active",
                None => false,
            };
            if !held_active {
                sqlx::query("UPDATE pairs SET claimed = claimed + 1 WHERE id = $1")
                    .bind(pair_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let assignment_id: i64 = sqlx::query_scalar(
                "INSERT INTO assignments (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at) \
                 SELECT campaign_id, id, $1, 'active', $2, is_gold, $3, $3 FROM pairs WHERE id = $4 \
                 ON CONFLICT (pair_id, rater_id) DO UPDATE SET swapped = excluded.swapped RETURNING id",
            )
            .bind(rater)
            .bind(i64::from(req.swapped))
            .bind(now)
            .bind(pair_id)
            .fetch_one(&mut *tx)
            .await?;
            (assignment_id, pair_id, req.swapped)
        }
        (None, None) => unreachable!("validated"),
    };

    let choice = req.choice.to_stored(swapped);
    let strength = match choice {
        Choice::A | Choice::B => req.strength,
        Choice::Tie | Choice::BothBad => None,
    };
    let seq: i64 = sqlx::query_scalar("UPDATE campaigns SET vote_seq = vote_seq + 1 WHERE id = $1 RETURNING vote_seq")
        .bind(campaign.id)
        .fetch_one(&mut *tx)
        .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO comparisons (campaign_id, seq, pair_id, rater_id, assignment_id, choice, strength, rationale, \
         time_ms, swapped, client_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         RETURNING {VOTE_COLUMNS}"
    )))
    .bind(campaign.id)
    .bind(seq)
    .bind(pair_id)
    .bind(rater)
    .bind(assignment_id)
    .bind(choice.as_str())
    .bind(strength)
    .bind(req.rationale.as_deref().filter(|r| !r.trim().is_empty()))
    .bind(req.time_ms)
    .bind(i64::from(swapped))
    .bind(&req.client_key)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE pairs SET vote_count = vote_count + 1 WHERE id = $1")
        .bind(pair_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE assignments SET status = 'voted' WHERE id = $1")
        .bind(assignment_id)
        .execute(&mut *tx)
        .await?;
    let next = assign(&mut tx, &campaign, rater, now, dice).await?;
    let my_votes = my_votes(&mut tx, rater, campaign.id).await?;
    tx.commit().await?;
    Ok(VoteOutcome {
        vote: stored_vote(&row)?,
        duplicate: false,
        my_votes,
        next,
    })
}

/// Gives a leased pair back without voting; it will not be offered to this rater again.
pub async fn skip(db: &Db, rater: i64, assignment_id: i64) -> ApiResult<Next> {
    with_retries(|| async {
        let now = now_ms();
        let mut tx = db.begin_write().await?;
        let row = sqlx::query(
            "SELECT campaign_id, pair_id, status, is_gold FROM assignments WHERE id = $1 AND rater_id = $2",
        )
        .bind(assignment_id)
        .bind(rater)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("assignment {assignment_id}")))?;
        let campaign = lock_campaign(db, &mut tx, row.try_get("campaign_id")?).await?;
        let status: String = row.try_get("status")?;
        if status == "active" {
            sqlx::query("UPDATE assignments SET status = 'skipped' WHERE id = $1")
                .bind(assignment_id)
                .execute(&mut *tx)
                .await?;
            if row.try_get::<i64, _>("is_gold")? == 0 {
                sqlx::query("UPDATE pairs SET claimed = claimed - 1 WHERE id = $1")
                    .bind(row.try_get::<i64, _>("pair_id")?)
                    .execute(&mut *tx)
                    .await?;
            }
        } else if status == "voted" {
            return Err(ApiError::conflict("already_voted", "this pair was already voted on"));
        }
        let next = assign(&mut tx, &campaign, rater, now, Dice::roll()).await?;
        tx.commit().await?;
        Ok(next)
    })
    .await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns/{id}/next", get(next_handler))
        .route("/api/v1/votes", post(vote_handler))
        .route("/api/v1/assignments/{id}/skip", post(skip_handler))
}

async fn next_handler(State(state): State<AppState>, user: CurrentUser, Path(id): Path<i64>) -> ApiResult<Json<Next>> {
    Ok(Json(next_pair(&state.db, id, user.id).await?))
}

async fn vote_handler(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(req): ApiJson<VoteRequest>,
) -> ApiResult<Json<VoteOutcome>> {
    Ok(Json(submit_vote(&state.db, user.id, &req).await?))
}

async fn skip_handler(State(state): State<AppState>, user: CurrentUser, Path(id): Path<i64>) -> ApiResult<Json<Next>> {
    Ok(Json(skip(&state.db, user.id, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_choice_maps_through_swap() {
        assert_eq!(ScreenChoice::Left.to_stored(false), Choice::A);
        assert_eq!(ScreenChoice::Left.to_stored(true), Choice::B);
        assert_eq!(ScreenChoice::Right.to_stored(true), Choice::A);
        assert_eq!(ScreenChoice::Tie.to_stored(true), Choice::Tie);
        assert_eq!(ScreenChoice::BothBad.to_stored(false), Choice::BothBad);
    }
}
