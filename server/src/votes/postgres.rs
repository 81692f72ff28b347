//! `next`, votes and skips on Postgres: one call each of the server-side functions of
//! `migrations/postgres/0005_vote_functions.sql`, which run the same steps as the SQLite
//! transactions in `votes/mod.rs` in one round trip. A new vote then gets its sequence
//! number from the server's `Sequencer`: one numbering call at a time for every vote this
//! server's requests are waiting on, so that concurrent votes share a call instead of
//! queueing one by one on the campaign's lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use pairwise_api::campaigns::CampaignStatus;
use pairwise_api::votes::{Choice, Next, ScreenChoice, StoredVote, VoteOutcome, VoteRequest};

use super::{Dice, Rater, served_from_texts};
use crate::accounts::sessions::HashedCredential;
use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::feedback;
use crate::store::{Db, DbError, SqlRow, SqlValue, Store, now_ms, tx_body};
use crate::{ranking, rating};

// The caller's credential (kind, hash) is checked by `pairwise_rater` in the same statement.
const NEXT_SQL: &str = "SELECT * FROM pairwise_next($1, pairwise_rater($2, $3, $4), $4, $5, $6)";
const SKIP_SQL: &str = "SELECT * FROM pairwise_skip($1, pairwise_rater($2, $3, $4), $4, $5, $6)";
/// A vote by a known user (inside a Rust transaction that looked them up).
const VOTE_SQL: &str =
    "SELECT * FROM pairwise_vote_feedback($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
/// A vote by the holder of a credential: $1 its kind, $15 its hash.
const VOTE_AS_SQL: &str = "SELECT * FROM pairwise_vote_feedback(pairwise_rater($1, $15, $10), \
                           $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const SEQUENCE_SQL: &str = "SELECT * FROM pairwise_sequence_votes($1, $2)";

pub(super) async fn next_pair(db: &Db, campaign_id: i64, rater: &HashedCredential, dice: Dice) -> ApiResult<Next> {
    let row = call(db, NEXT_SQL, || {
        args![campaign_id, rater.kind.as_str(), rater.hash.as_str(), now_ms(), dice.gold_roll, dice.swap]
    })
    .await?;
    with_ranked_responses(db, next_from_row(&row)?).await
}

pub(super) async fn skip(db: &Db, rater: &HashedCredential, assignment_id: i64, dice: Dice) -> ApiResult<Next> {
    let row = call(db, SKIP_SQL, || {
        args![assignment_id, rater.kind.as_str(), rater.hash.as_str(), now_ms(), dice.gold_roll, dice.swap]
    })
    .await?;
    with_ranked_responses(db, next_from_row(&row)?).await
}

/// A ranking task handed out gets its responses (a second round trip, for rankings only).
async fn with_ranked_responses(db: &Db, mut next: Next) -> ApiResult<Next> {
    if let Next::Assigned { pair } = &mut next
        && db.campaign_feedback(pair.campaign_id).await? == "ranking"
    {
        ranking::show_responses(pair, &db.fetch_all(ranking::TASK_RESPONSES_SQL, args![pair.pair_id]).await?)?;
    }
    Ok(next)
}

pub(super) async fn submit_vote(
    db: &Db,
    sequencer: &Sequencer,
    rater: &Rater,
    req: &VoteRequest,
    dice: Dice,
) -> ApiResult<VoteOutcome> {
    let (mut outcome, campaign_id) = match (&req.correction, &req.ranks, req.rating) {
        (None, None, None) => {
            let credential = &rater.0;
            let row = call(db, VOTE_AS_SQL, || {
                let mut args = vote_args(credential.kind.as_str().into(), req, dice);
                args.push(credential.hash.as_str().into());
                args
            })
            .await
            .map_err(already_voted)?;
            (outcome_from_row(&row)?, row.int("campaign_id")?)
        }
        // A correction, ranks or a rating are written by Rust code, so the vote and they
        // share a transaction (and the caller is looked up first).
        _ => {
            let rater = rater.user_id(db).await?;
            let req = Arc::new(req.clone());
            let outcome = db
                .transact(tx_body(move |tx| {
                    let req = req.clone();
                    Box::pin(async move {
                        let mut outcome = vote_in(tx, rater, &req, dice).await?;
                        if !outcome.duplicate {
                            if let Some(correction) = &req.correction {
                                feedback::store_correction(tx, outcome.vote.id, rater, correction, now_ms()).await?;
                            }
                            if let Some(ranks) = &req.ranks {
                                outcome.vote.choice =
                                    ranking::store_ranking(tx, outcome.vote.id, ranks, req.all_bad).await?;
                            }
                            if let Some(rating) = req.rating {
                                rating::store_rating(tx, outcome.vote.id, rating).await?;
                            }
                        }
                        Ok::<_, ApiError>(outcome)
                    })
                }))
                .await?;
            let campaign_id = db
                .fetch_one("SELECT campaign_id FROM comparisons WHERE id = $1", args![outcome.vote.id])
                .await?
                .int("campaign_id")?;
            (outcome, campaign_id)
        }
    };
    // A new vote, or a resubmission whose first copy has not been numbered yet.
    if outcome.vote.seq == 0 {
        outcome.vote.seq = sequencer.number(campaign_id, outcome.vote.id).await?;
    }
    outcome.next = with_ranked_responses(db, outcome.next).await?;
    Ok(outcome)
}

/// The vote function in the caller's transaction; the vote's `seq` is 0 until numbered.
pub(super) async fn vote_in(tx: &mut dyn Store, rater: i64, req: &VoteRequest, dice: Dice) -> ApiResult<VoteOutcome> {
    let row =
        tx.fetch_one(VOTE_SQL, vote_args(rater.into(), req, dice)).await.map_err(raised).map_err(already_voted)?;
    outcome_from_row(&row)
}

/// The vote function's arguments; the first is the rater's id, or the kind of their
/// credential (`VOTE_AS_SQL`).
fn vote_args(rater: SqlValue, req: &VoteRequest, dice: Dice) -> Vec<SqlValue> {
    // A ranking vote's choice is set from its ranks afterwards (`ranking::store_ranking`); a
    // rating vote is about response a, shown on the left (single responses are never swapped).
    let choice = match req.choice {
        _ if req.rating.is_some() => "left",
        Some(ScreenChoice::Left) => "left",
        Some(ScreenChoice::Right) => "right",
        Some(ScreenChoice::Tie) | None => "tie",
        Some(ScreenChoice::BothBad) => "both_bad",
    };
    let rationale = req.rationale.as_deref().filter(|r| !r.trim().is_empty());
    let aspects = req.aspects.as_ref().map(|a| serde_json::to_string(a).expect("aspect choices serialize"));
    args![
        rater,
        req.assignment_id,
        req.pair_id,
        // A rating is of the task's one response, never swapped.
        req.swapped && req.rating.is_none(),
        choice,
        req.strength,
        rationale,
        req.time_ms,
        req.client_key.as_str(),
        now_ms(),
        dice.gold_roll,
        dice.swap,
        aspects,
        // What the vote answers, checked against the campaign by the vote function.
        match (&req.ranks, req.rating) {
            (Some(_), _) => 1i64,
            (None, Some(_)) => 2,
            (None, None) => 0,
        }
    ]
}

/// Still a unique violation after the retries: the rater voted on this pair already.
fn already_voted(e: ApiError) -> ApiError {
    match e {
        ApiError::Database(e) if e.is_unique_violation() => {
            ApiError::conflict("already_voted", "you have already voted on this pair")
        }
        other => other,
    }
}

fn outcome_from_row(row: &SqlRow) -> ApiResult<VoteOutcome> {
    let choice = row.text("vote_choice")?;
    Ok(VoteOutcome {
        vote: StoredVote {
            id: row.int("vote_id")?,
            seq: row.opt_int("vote_seq")?.unwrap_or(0),
            pair_id: row.int("vote_pair_id")?,
            choice: Choice::parse(&choice).ok_or_else(|| anyhow::anyhow!("unknown choice {choice}"))?,
            strength: row.opt_int("vote_strength")?,
            swapped: row.int("vote_swapped")? != 0,
            created_at: row.int("vote_created_at")?,
        },
        duplicate: row.int("duplicate")? != 0,
        my_votes: row.int("my_votes")?,
        next: next_from_row(row)?,
    })
}

/// Numbers the campaign's votes that have no sequence number yet.
pub(super) async fn sequence_pending(db: &Db, campaign_id: i64) -> ApiResult<()> {
    db.fetch_all(SEQUENCE_SQL, args![campaign_id, None::<String>]).await?;
    Ok(())
}

/// Hands out sequence numbers for this server's new votes: requests queue their vote and
/// wait; one task at a time numbers all queued votes, a call per campaign, then answers them.
/// A call covers every vote committed before it starts (on any server), so each vote waits
/// at most for the call in flight and the one after it.
#[derive(Clone)]
pub struct Sequencer {
    db: Db,
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// Whether a numbering task is running (it drains `waiting` until it is empty).
    running: bool,
}

struct Waiter {
    campaign_id: i64,
    vote_id: i64,
    reply: tokio::sync::oneshot::Sender<Result<i64, String>>,
}

impl Sequencer {
    pub fn new(db: Db) -> Sequencer {
        Sequencer { db, queue: Arc::default() }
    }

    /// The sequence number of a committed vote.
    pub(super) async fn number(&self, campaign_id: i64, vote_id: i64) -> ApiResult<i64> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().expect("sequencer queue");
            queue.waiting.push(Waiter { campaign_id, vote_id, reply });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
        match answer.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => Err(anyhow::anyhow!("numbering vote {vote_id}: {message}").into()),
            Err(_) => Err(anyhow::anyhow!("numbering vote {vote_id}: the sequencer stopped").into()),
        }
    }

    async fn drain(self) {
        loop {
            let batch = {
                let mut queue = self.queue.lock().expect("sequencer queue");
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let mut by_campaign: BTreeMap<i64, Vec<Waiter>> = BTreeMap::new();
            for waiter in batch {
                by_campaign.entry(waiter.campaign_id).or_default().push(waiter);
            }
            for (campaign_id, waiters) in by_campaign {
                let ids: Vec<i64> = waiters.iter().map(|w| w.vote_id).collect();
                let numbers = self.number_batch(campaign_id, &ids).await;
                for waiter in waiters {
                    let answer = match &numbers {
                        Ok(numbers) => numbers.get(&waiter.vote_id).copied().ok_or_else(|| "no number".to_string()),
                        Err(error) => Err(error.clone()),
                    };
                    let _ = waiter.reply.send(answer);
                }
            }
        }
    }

    async fn number_batch(&self, campaign_id: i64, ids: &[i64]) -> Result<HashMap<i64, i64>, String> {
        let ids = serde_json::to_string(ids).map_err(|e| e.to_string())?;
        let rows = self.db.fetch_all(SEQUENCE_SQL, args![campaign_id, ids]).await.map_err(|e| e.to_string())?;
        rows.iter()
            .filter_map(|row| match (row.int("vote_id"), row.opt_int("seq")) {
                (Ok(id), Ok(Some(seq))) => Some(Ok((id, seq))),
                (Ok(_), Ok(None)) => None,
                (Err(e), _) | (_, Err(e)) => Some(Err(e.to_string())),
            })
            .collect()
    }
}

/// One function call in a transaction of its own, run again when it lost a race (on a
/// unique index: the same rater's concurrent requests, and the re-run sees the winner's rows;
/// or a deadlock) or its connection.
async fn call(db: &Db, sql: &'static str, args: impl Fn() -> Vec<SqlValue>) -> ApiResult<SqlRow> {
    let mut conflicts = 0;
    let mut lost = 0;
    let pooled = db.pool_connections().0;
    loop {
        match db.fetch_one(sql, args()).await {
            Err(e) if conflicts < 2 && (e.is_unique_violation() || e.is_retryable()) => conflicts += 1,
            // A pooled connection that Postgres or the network dropped (connections in use are
            // not pinged before each statement, store/mod.rs). Every call here may be sent
            // again: a vote is idempotent by its client key, a `next` returns the lease held,
            // a skip of a skipped lease changes nothing. At most once per pooled connection.
            Err(e) if e.is_connection_lost() && lost <= pooled => lost += 1,
            Err(e) => return Err(raised(e)),
            Ok(row) => return Ok(row),
        }
    }
}

/// The API error for what a function raised on purpose (SQLSTATE class PW, see the
/// migration); other errors pass through.
fn raised(e: DbError) -> ApiError {
    let Some((code, message)) = e.raised() else { return e.into() };
    match code.as_str() {
        "PW401" => ApiError::Unauthorized,
        "PW404" => ApiError::NotFound(message),
        "PW403" => ApiError::forbidden(message),
        "PW400" => ApiError::bad_request(message),
        _ => {
            let (code, text) = message.split_once('|').unwrap_or(("conflict", &message));
            ApiError::conflict(conflict_code(code), text)
        }
    }
}

fn conflict_code(code: &str) -> &'static str {
    match code {
        "already_voted" => "already_voted",
        "key_reused" => "key_reused",
        "campaign_closed" => "campaign_closed",
        "campaign_not_active" => "campaign_not_active",
        "lease_expired" => "lease_expired",
        "pair_full" => "pair_full",
        _ => "conflict",
    }
}

/// The `Next` in the columns every function returns (`pairwise_assign`'s).
fn next_from_row(row: &SqlRow) -> ApiResult<Next> {
    Ok(match row.text("next_kind")?.as_str() {
        "assigned" => Next::Assigned {
            pair: served_from_texts(
                row,
                row.int("assignment_id")?,
                row.int("campaign_id")?,
                row.int("pair_id")?,
                row.int("swapped")? != 0,
                row.int("expires_at")?,
            )?,
        },
        "waiting" => Next::Waiting,
        "done" => Next::Done,
        "unavailable" => {
            let status = row.text("campaign_status")?;
            Next::Unavailable {
                campaign_status: CampaignStatus::parse(&status)
                    .ok_or_else(|| anyhow::anyhow!("unknown campaign status {status}"))?,
            }
        }
        other => return Err(anyhow::anyhow!("unknown next kind {other}").into()),
    })
}
