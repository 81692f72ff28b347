//! Work distribution and voting: handing a rater a pair under a lease (`next_pair`),
//! recording a vote and handing out the next pair in the same transaction (`submit_vote`),
//! and giving a pair back (`skip`).
//!
//! Invariants, per campaign: a pair's `claimed` (votes + live leases) never exceeds the
//! overlap, so no pair gets more votes than wanted and no more leases are out than needed;
//! a rater never holds or votes on the same pair twice, nor more than one lease at a time;
//! leases past their expiry return to the pool the next time anyone asks for work; votes
//! get gap-free sequence numbers in commit order (export cursors rely on it).
//!
//! SQLite runs the transactions below, one at a time (`Db::transact` group-commits them on
//! its writer thread). Postgres runs the same steps as server-side functions, one round trip
//! each, in parallel under row locks (`postgres`).

mod postgres;

pub use postgres::Sequencer;

use std::sync::Arc;

use pairwise_api::campaigns::{Aspect, CampaignKind, CampaignStatus};
use pairwise_api::votes::{Choice, Next, ServedPair, StoredVote, VoteOutcome, VoteRequest};
use rand::Rng;

use crate::accounts::sessions::{HashedCredential, lookup_caller};
use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::feedback::{self, VoteRow};
use crate::metrics::metrics;
use crate::store::{Backend, Db, SqlRow, Store, now_ms, tx_body};
use crate::{ranking, rating};

struct CampaignSettings {
    id: i64,
    aspects: Vec<Aspect>,
    /// What raters answer: a choice (`Pairwise`, arenas included), ranks or a rating.
    kind: CampaignKind,
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
        Dice { gold_roll: rng.random(), swap: rng.random_bool(0.5) }
    }
}

async fn load_campaign(tx: &mut dyn Store, id: i64) -> ApiResult<CampaignSettings> {
    let row = tx
        .fetch_optional(
            "SELECT id, status, overlap, gold_rate, lease_seconds, free_votes, aspects, feedback FROM campaigns \
             WHERE id = $1",
            args![id],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))?;
    let status = row.text("status")?;
    Ok(CampaignSettings {
        id,
        aspects: feedback::parse_aspects(&row.text("aspects")?)?,
        kind: CampaignKind::parse(&row.text("feedback")?).unwrap_or(CampaignKind::Pairwise),
        status: CampaignStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown status {status}"))?,
        overlap: row.int("overlap")?,
        gold_rate: row.real("gold_rate")?,
        lease_ms: row.int("lease_seconds")? * 1000,
        free_votes: row.int("free_votes")? != 0,
    })
}

/// Returns leases past their expiry to the pool.
async fn reclaim_expired(tx: &mut dyn Store, campaign_id: i64, now: i64) -> ApiResult<()> {
    let expired = tx
        .fetch_all(
            "UPDATE assignments SET status = 'expired' WHERE campaign_id = $1 AND status = 'active' AND expires_at <= $2 \
             RETURNING pair_id, is_gold",
            args![campaign_id, now],
        )
        .await?;
    for row in expired {
        if row.int("is_gold")? == 0 {
            tx.execute("UPDATE pairs SET claimed = claimed - 1 WHERE id = $1", args![row.int("pair_id")?]).await?;
        }
    }
    Ok(())
}

async fn served_pair(tx: &mut dyn Store, assignment: &SqlRow, campaign_id: i64) -> ApiResult<ServedPair> {
    let pair_id = assignment.int("pair_id")?;
    let swapped = assignment.int("swapped")? != 0;
    let row = tx
        .fetch_one(
            "SELECT pr.text AS prompt, pr.messages, ra.text AS text_a, rb.text AS text_b FROM pairs p \
             JOIN prompts pr ON pr.id = p.prompt_id JOIN responses ra ON ra.id = p.response_a_id \
             LEFT JOIN responses rb ON rb.id = p.response_b_id WHERE p.id = $1",
            args![pair_id],
        )
        .await?;
    let mut pair =
        served_from_texts(&row, assignment.int("id")?, campaign_id, pair_id, swapped, assignment.int("expires_at")?)?;
    // One lookup in the server's own process; none for a pair.
    ranking::show_responses(&mut pair, &tx.fetch_all(ranking::TASK_RESPONSES_SQL, args![pair_id]).await?)?;
    Ok(pair)
}

/// A served pair from a row with the pair's `prompt`, `messages`, `text_a` and `text_b`:
/// the responses in the order the rater sees them (a single response is `left`).
fn served_from_texts(
    row: &SqlRow,
    assignment_id: i64,
    campaign_id: i64,
    pair_id: i64,
    swapped: bool,
    expires_at: i64,
) -> ApiResult<ServedPair> {
    let (a, b) = (row.text("text_a")?, row.opt_text("text_b")?.unwrap_or_default());
    let (left, right) = if swapped { (b, a) } else { (a, b) };
    Ok(ServedPair {
        assignment_id,
        campaign_id,
        pair_id,
        prompt: row.text("prompt")?,
        messages: serde_json::from_str(&row.text("messages")?).map_err(anyhow::Error::from)?,
        left,
        right,
        responses: Vec::new(),
        expires_at,
    })
}

/// The regular pair to hand out next: the least-voted open one this rater has not had.
const CANDIDATE_SQL: &str = "SELECT p.id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 0 AND p.claimed < $2 \
     AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = $3 AND a.status <> 'expired') \
     ORDER BY p.vote_count, p.claimed, p.shuffle_key LIMIT 1";

/// Finds (or keeps) the rater's current pair.
async fn assign(tx: &mut dyn Store, campaign: &CampaignSettings, rater: i64, now: i64, dice: Dice) -> ApiResult<Next> {
    if campaign.status != CampaignStatus::Active {
        return Ok(Next::Unavailable { campaign_status: campaign.status });
    }
    reclaim_expired(tx, campaign.id, now).await?;
    // Asking again while holding a lease returns the same pair (page reloads are harmless).
    let held = tx
        .fetch_optional(
            "SELECT id, pair_id, swapped, expires_at FROM assignments \
             WHERE rater_id = $1 AND campaign_id = $2 AND status = 'active' ORDER BY id LIMIT 1",
            args![rater, campaign.id],
        )
        .await?;
    if let Some(held) = held {
        return Ok(Next::Assigned { pair: served_pair(tx, &held, campaign.id).await? });
    }
    let regular = tx.fetch_optional(CANDIDATE_SQL, args![campaign.id, campaign.overlap, rater]).await?;
    let Some(regular) = regular.map(|row| row.int("id")).transpose()? else {
        let open = tx
            .fetch_optional(
                "SELECT p.id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 0 AND p.vote_count < $2 \
                 AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = $3 AND a.status <> 'expired') \
                 LIMIT 1",
                args![campaign.id, campaign.overlap, rater],
            )
            .await?;
        return Ok(if open.is_some() { Next::Waiting } else { Next::Done });
    };
    // Gold checks are mixed in only while there is real work, at the campaign's rate.
    let gold = if campaign.gold_rate > 0.0 && dice.gold_roll < campaign.gold_rate {
        tx.fetch_optional(
            "SELECT p.id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 1 \
             AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = $2 AND a.status <> 'expired') \
             ORDER BY p.vote_count, p.shuffle_key LIMIT 1",
            args![campaign.id, rater],
        )
        .await?
    } else {
        None
    };
    let (pair_id, is_gold) = match gold {
        Some(row) => (row.int("id")?, true),
        None => {
            tx.execute("UPDATE pairs SET claimed = claimed + 1 WHERE id = $1", args![regular]).await?;
            (regular, false)
        }
    };
    // A pair handed to the same rater again (after their lease expired) keeps its
    // assignment id and its left/right order, so a vote from the old screen still maps right.
    // A single response is never swapped.
    let swap = dice.swap && !campaign.kind.single_response();
    let assignment = tx
        .fetch_one(
            "INSERT INTO assignments (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at) \
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $7) \
             ON CONFLICT (pair_id, rater_id) DO UPDATE SET status = 'active', swapped = assignments.swapped, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             RETURNING id, pair_id, swapped, expires_at",
            args![campaign.id, pair_id, rater, swap, is_gold, now, now + campaign.lease_ms],
        )
        .await?;
    Ok(Next::Assigned { pair: served_pair(tx, &assignment, campaign.id).await? })
}

/// Who is rating: the request's credential, not looked up yet. On Postgres the vote functions
/// check it in the statement that does the work (`pairwise_rater`, migration 0014), which
/// saves each `next`, vote and skip a round trip and a pooled connection; SQLite, in process,
/// looks the caller up first.
pub struct Rater(pub HashedCredential);

impl Rater {
    async fn user_id(&self, db: &Db) -> ApiResult<i64> {
        Ok(lookup_caller(db, &self.0).await?.ok_or(ApiError::Unauthorized)?.id)
    }
}

pub async fn next_pair(db: &Db, campaign_id: i64, rater: &Rater) -> ApiResult<Next> {
    let dice = Dice::roll();
    if db.backend() == Backend::Postgres {
        return postgres::next_pair(db, campaign_id, &rater.0, dice).await;
    }
    let rater = rater.user_id(db).await?;
    db.transact(tx_body(move |tx| {
        Box::pin(async move {
            let campaign = load_campaign(tx, campaign_id).await?;
            assign(tx, &campaign, rater, now_ms(), dice).await
        })
    }))
    .await
}

fn validate_vote(req: &VoteRequest) -> ApiResult<()> {
    if req.client_key.is_empty() || req.client_key.len() > 100 {
        return Err(ApiError::bad_request("client_key: must be 1-100 characters"));
    }
    if let Some(strength) = req.strength
        && !(1..=3).contains(&strength)
    {
        return Err(ApiError::bad_request("strength: must be 1 (slightly), 2 (clearly) or 3 (much better)"));
    }
    if req.rationale.as_ref().is_some_and(|r| r.len() > 10_000) {
        return Err(ApiError::bad_request("rationale: at most 10000 bytes"));
    }
    if req.time_ms.is_some_and(|t| !(0..=86_400_000).contains(&t)) {
        return Err(ApiError::bad_request("time_ms: must be between 0 and 86400000"));
    }
    match (req.assignment_id, req.pair_id) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err(ApiError::bad_request("give exactly one of assignment_id (leased vote) or pair_id (free vote)")),
    }?;
    if req.rating.is_some() {
        if req.choice.is_some() || req.ranks.is_some() {
            return Err(ApiError::bad_request("give rating (a single response) without choice or ranks"));
        }
        if req.strength.is_some() || req.all_bad || req.aspects.is_some() {
            return Err(ApiError::bad_request("a rating vote takes a rating, a reason and a correction only"));
        }
        return feedback::validate_feedback(req);
    }
    match (&req.choice, &req.ranks) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give choice (a pair) or ranks (a ranking task), not both"));
        }
        (None, None) => return Err(ApiError::bad_request("choice: required (left, right, tie or both_bad)")),
        (None, Some(ranks)) => {
            ranking::validate_ranks(ranks)?;
            if req.strength.is_some() {
                return Err(ApiError::bad_request("strength: a ranking vote has no strength"));
            }
            if req.aspects.is_some() || req.correction.is_some() {
                return Err(ApiError::bad_request("a ranking vote takes ranks, all_bad and a reason only"));
            }
        }
        (Some(_), None) if req.all_bad => {
            return Err(ApiError::bad_request("all_bad: only with ranks; on a pair choose both_bad"));
        }
        (Some(_), None) => {}
    }
    feedback::validate_feedback(req)
}

fn stored_vote(row: &SqlRow) -> ApiResult<StoredVote> {
    let choice = row.text("choice")?;
    Ok(StoredVote {
        id: row.int("id")?,
        seq: row.int("seq")?,
        pair_id: row.int("pair_id")?,
        choice: Choice::parse(&choice).ok_or_else(|| anyhow::anyhow!("unknown choice {choice}"))?,
        strength: row.opt_int("strength")?,
        swapped: row.int("swapped")? != 0,
        created_at: row.int("created_at")?,
    })
}

async fn my_votes(tx: &mut dyn Store, rater: i64, campaign_id: i64) -> ApiResult<i64> {
    let row = tx
        .fetch_optional(
            "SELECT votes FROM rater_progress WHERE rater_id = $1 AND campaign_id = $2",
            args![rater, campaign_id],
        )
        .await?;
    Ok(row.map_or(Ok(0), |row| row.int("votes"))?)
}

/// Counts a new vote of the rater and returns their total in the campaign.
async fn count_vote(tx: &mut dyn Store, rater: i64, campaign_id: i64) -> ApiResult<i64> {
    Ok(tx
        .fetch_one(
            "INSERT INTO rater_progress (rater_id, campaign_id, votes) VALUES ($1, $2, 1) \
         ON CONFLICT (rater_id, campaign_id) DO UPDATE SET votes = rater_progress.votes + 1 RETURNING votes",
            args![rater, campaign_id],
        )
        .await?
        .int("votes")?)
}

/// Records a vote (idempotent on `client_key`) and hands out the next pair. `sequencer`
/// numbers the votes of this server on Postgres.
pub async fn submit_vote(db: &Db, sequencer: &Sequencer, rater: &Rater, req: &VoteRequest) -> ApiResult<VoteOutcome> {
    let dice = Dice::roll();
    if db.backend() == Backend::Postgres {
        // The vote function checks the credential before it writes anything.
        validate_vote(req)?;
        let outcome = postgres::submit_vote(db, sequencer, rater, req, dice).await?;
        metrics().vote_stored(outcome.duplicate);
        return Ok(outcome);
    }
    let rater = rater.user_id(db).await?;
    validate_vote(req)?;
    let req = Arc::new(req.clone());
    let body = tx_body(move |tx| {
        let req = req.clone();
        Box::pin(async move { vote_once(tx, rater, &req, now_ms(), dice).await })
    });
    match db.transact(body).await {
        // A second vote on a pair already voted on (a free vote, or a stale screen).
        Err(e) if e.is_unique_violation() => {
            Err(ApiError::conflict("already_voted", "you have already voted on this pair"))
        }
        Ok(outcome) => {
            metrics().vote_stored(outcome.duplicate);
            Ok(outcome)
        }
        Err(e) => Err(e),
    }
}

async fn vote_once(tx: &mut dyn Store, rater: i64, req: &VoteRequest, now: i64, dice: Dice) -> ApiResult<VoteOutcome> {
    let campaign_id = match (req.assignment_id, req.pair_id) {
        (Some(assignment_id), _) => tx
            .fetch_optional(
                "SELECT campaign_id FROM assignments WHERE id = $1 AND rater_id = $2",
                args![assignment_id, rater],
            )
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("assignment {assignment_id}")))?,
        (None, Some(pair_id)) => tx
            .fetch_optional("SELECT campaign_id FROM pairs WHERE id = $1", args![pair_id])
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("pair {pair_id}")))?,
        (None, None) => unreachable!("validated"),
    }
    .int("campaign_id")?;
    let campaign = load_campaign(tx, campaign_id).await?;

    let existing = tx
        .fetch_optional(
            "SELECT id, seq, pair_id, choice, strength, swapped, created_at FROM comparisons \
             WHERE rater_id = $1 AND client_key = $2",
            args![rater, req.client_key.as_str()],
        )
        .await?;
    if let Some(existing) = existing {
        let vote = stored_vote(&existing)?;
        let same_target = match (req.assignment_id, req.pair_id) {
            (_, Some(pair_id)) => pair_id == vote.pair_id,
            (Some(assignment_id), None) => {
                let pair =
                    tx.fetch_optional("SELECT pair_id FROM assignments WHERE id = $1", args![assignment_id]).await?;
                pair.map(|row| row.int("pair_id")).transpose()? == Some(vote.pair_id)
            }
            (None, None) => false,
        };
        if !same_target {
            return Err(ApiError::conflict("key_reused", "client_key was already used for a different pair"));
        }
        let next = assign(tx, &campaign, rater, now, dice).await?;
        let my_votes = my_votes(tx, rater, campaign.id).await?;
        return Ok(VoteOutcome { vote, duplicate: true, my_votes, next });
    }
    if campaign.status == CampaignStatus::Closed {
        return Err(ApiError::conflict("campaign_closed", "the campaign is closed"));
    }

    let (assignment_id, pair_id, swapped) = match (req.assignment_id, req.pair_id) {
        (Some(assignment_id), _) => {
            let row = tx
                .fetch_optional(
                    "SELECT pair_id, status, swapped, is_gold FROM assignments WHERE id = $1",
                    args![assignment_id],
                )
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("assignment {assignment_id}")))?;
            let pair_id = row.int("pair_id")?;
            let is_gold = row.int("is_gold")? != 0;
            match row.text("status")?.as_str() {
                "active" => {}
                "voted" => {
                    return Err(ApiError::conflict("already_voted", "you have already voted on this pair"));
                }
                // The lease lapsed (or was skipped): accept the work if the pair still has room.
                _ if is_gold => {}
                _ => {
                    let reclaimed = tx
                        .execute(
                            "UPDATE pairs SET claimed = claimed + 1 WHERE id = $1 AND claimed < $2",
                            args![pair_id, campaign.overlap],
                        )
                        .await?;
                    if reclaimed == 0 {
                        return Err(ApiError::conflict(
                            "lease_expired",
                            "the lease on this pair expired and other raters completed it",
                        ));
                    }
                }
            }
            (assignment_id, pair_id, row.int("swapped")? != 0)
        }
        (None, Some(pair_id)) => {
            if !campaign.free_votes {
                return Err(ApiError::forbidden("this campaign only accepts votes on leased pairs (assignment_id)"));
            }
            if campaign.status != CampaignStatus::Active {
                return Err(ApiError::conflict("campaign_not_active", "the campaign is not open for rating"));
            }
            // A single response is never swapped.
            let swapped = req.swapped && !campaign.kind.single_response();
            let held = tx
                .fetch_optional(
                    "SELECT id, status FROM assignments WHERE pair_id = $1 AND rater_id = $2",
                    args![pair_id, rater],
                )
                .await?;
            let held_active = match &held {
                Some(row) => row.text("status")? == "active",
                None => false,
            };
            // Free votes skip the lease, not the overlap.
            if !held_active {
                let claimed = tx
                    .execute(
                        "UPDATE pairs SET claimed = claimed + 1 WHERE id = $1 AND (is_gold = 1 OR claimed < $2)",
                        args![pair_id, campaign.overlap],
                    )
                    .await?;
                if claimed == 0 {
                    return Err(ApiError::conflict("pair_full", "this pair already has the votes it needs"));
                }
            }
            let assignment = tx
                .fetch_one(
                    "INSERT INTO assignments (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at) \
                     SELECT campaign_id, id, $1, 'voted', $2, is_gold, $3, $3 FROM pairs WHERE id = $4 \
                     ON CONFLICT (pair_id, rater_id) DO UPDATE SET swapped = excluded.swapped RETURNING id",
                    args![rater, swapped, now, pair_id],
                )
                .await?;
            (assignment.int("id")?, pair_id, swapped)
        }
        (None, None) => unreachable!("validated"),
    };

    rating::check_rating(campaign.kind, req.rating)?;
    match (campaign.kind == CampaignKind::Ranking, &req.ranks) {
        (true, None) if req.rating.is_none() => {
            return Err(ApiError::bad_request(
                "ranks: required; this campaign ranks all of a task's responses (send ranks, not choice)",
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "ranks: this campaign asks for a choice between two responses, not a ranking",
            ));
        }
        _ => {}
    }
    // A ranking vote's choice is set from its ranks by `store_ranking` below; a rating vote
    // is about response a.
    let choice = match (req.choice, req.rating) {
        (_, Some(_)) => Choice::A,
        (Some(choice), None) => choice.to_stored(swapped),
        (None, None) => Choice::Tie,
    };
    let strength = match choice {
        _ if req.rating.is_some() => None,
        Choice::A | Choice::B => req.strength,
        Choice::Tie | Choice::BothBad => None,
    };
    let rationale = req.rationale.as_deref().filter(|r| !r.trim().is_empty());
    let row = tx
        .fetch_one(
            "INSERT INTO comparisons (campaign_id, pair_id, rater_id, assignment_id, choice, strength, rationale, \
             time_ms, swapped, client_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING id",
            args![
                campaign.id,
                pair_id,
                rater,
                assignment_id,
                choice.as_str(),
                strength,
                rationale,
                req.time_ms,
                swapped,
                req.client_key.as_str(),
                now
            ],
        )
        .await?;
    let vote_row = VoteRow { id: row.int("id")?, campaign_id: campaign.id, pair_id, swapped };
    feedback::store_aspects(tx, &campaign.aspects, &vote_row, req.aspects.as_ref()).await?;
    if let Some(correction) = &req.correction {
        feedback::store_correction(tx, vote_row.id, rater, correction, now).await?;
    }
    if let Some(ranks) = &req.ranks {
        ranking::store_ranking(tx, vote_row.id, ranks, req.all_bad).await?;
    }
    if let Some(rating) = req.rating {
        rating::store_rating(tx, vote_row.id, rating).await?;
    }
    tx.execute("UPDATE pairs SET vote_count = vote_count + 1 WHERE id = $1", args![pair_id]).await?;
    tx.execute("UPDATE assignments SET status = 'voted' WHERE id = $1", args![assignment_id]).await?;
    let next = assign(tx, &campaign, rater, now, dice).await?;
    let my_votes = count_vote(tx, rater, campaign.id).await?;
    // SQLite commits these transactions one at a time, so the next number of the campaign
    // keeps `seq` gap-free and in commit order.
    let seq = tx
        .fetch_one("UPDATE campaigns SET vote_seq = vote_seq + 1 WHERE id = $1 RETURNING vote_seq", args![campaign.id])
        .await?
        .int("vote_seq")?;
    let vote = tx
        .fetch_one(
            "UPDATE comparisons SET seq = $1 WHERE id = $2 RETURNING id, seq, pair_id, choice, strength, swapped, created_at",
            args![seq, row.int("id")?],
        )
        .await?;
    Ok(VoteOutcome { vote: stored_vote(&vote)?, duplicate: false, my_votes, next })
}

/// Records a vote inside the caller's transaction (an arena battle stores its pair and its
/// vote together). On Postgres the vote is numbered after the commit: `number_vote`.
pub(crate) async fn vote_in(tx: &mut dyn Store, rater: i64, req: &VoteRequest) -> ApiResult<VoteOutcome> {
    validate_vote(req)?;
    let dice = Dice::roll();
    match tx.backend() {
        Backend::Sqlite => vote_once(tx, rater, req, now_ms(), dice).await,
        Backend::Postgres => postgres::vote_in(tx, rater, req, dice).await,
    }
}

/// Gives a vote from `vote_in` its sequence number once its transaction has committed.
pub(crate) async fn number_vote(sequencer: &Sequencer, campaign_id: i64, outcome: &mut VoteOutcome) -> ApiResult<()> {
    if outcome.vote.seq == 0 {
        outcome.vote.seq = sequencer.number(campaign_id, outcome.vote.id).await?;
    }
    metrics().vote_stored(outcome.duplicate);
    Ok(())
}

/// Gives every stored vote of the campaign its sequence number before a reader of `seq`
/// (exports, schedules) takes its cursor. Only Postgres numbers votes after they commit,
/// and a vote whose request died between the two steps would otherwise stay unnumbered.
pub async fn sequence_pending(db: &Db, campaign_id: i64) -> ApiResult<()> {
    match db.backend() {
        Backend::Sqlite => Ok(()),
        Backend::Postgres => postgres::sequence_pending(db, campaign_id).await,
    }
}

/// Gives a leased pair back without voting; it will not be offered to this rater again.
pub async fn skip(db: &Db, rater: &Rater, assignment_id: i64) -> ApiResult<Next> {
    let dice = Dice::roll();
    if db.backend() == Backend::Postgres {
        return postgres::skip(db, &rater.0, assignment_id, dice).await;
    }
    let rater = rater.user_id(db).await?;
    db.transact(tx_body(move |tx| {
        Box::pin(async move {
            let row = tx
                .fetch_optional(
                    "SELECT campaign_id, pair_id, status, is_gold FROM assignments WHERE id = $1 AND rater_id = $2",
                    args![assignment_id, rater],
                )
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("assignment {assignment_id}")))?;
            let campaign = load_campaign(tx, row.int("campaign_id")?).await?;
            match row.text("status")?.as_str() {
                "active" => {
                    tx.execute("UPDATE assignments SET status = 'skipped' WHERE id = $1", args![assignment_id]).await?;
                    if row.int("is_gold")? == 0 {
                        tx.execute("UPDATE pairs SET claimed = claimed - 1 WHERE id = $1", args![row.int("pair_id")?])
                            .await?;
                    }
                }
                "voted" => return Err(ApiError::conflict("already_voted", "this pair was already voted on")),
                // Its slot went back to the pool when it expired; just keep it from
                // being offered to this rater again.
                _ => {
                    tx.execute("UPDATE assignments SET status = 'skipped' WHERE id = $1", args![assignment_id]).await?;
                }
            }
            assign(tx, &campaign, rater, now_ms(), dice).await
        })
    }))
    .await
}

#[cfg(test)]
mod tests {
    use pairwise_api::votes::ScreenChoice;

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
