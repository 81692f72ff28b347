//! Running tallies of each campaign's votes (migration 0006), the input of stats and the
//! leaderboard: choices per pair, per-rater counts and agreement, times per vote, votes per
//! hour and choices between models. Reading them costs the same at 5,000,000 votes as at
//! 5,000, where reading every vote grew with the campaign.
//!
//! Votes are folded in by sequence number, each exactly once: `bring_up_to_date` folds the
//! votes numbered after `campaign_tallies.tallied_seq` and moves it on, in transactions of
//! at most `FOLD_CHUNK` votes (on SQLite the fold runs on the writer thread between votes;
//! small chunks keep that pause short). Stats and the leaderboard call it before reading,
//! and every server folds new votes every few seconds (`keep_folding`), so the backlog stays a few seconds
//! of votes. The vote's own transaction does none of this work.
//!
//! Agreement between raters counts each two votes on a pair once, from the later vote
//! (`w.seq < v.seq`), crediting both raters: whatever the order votes are folded in, a pair
//! of votes is counted when the second of them is.

use crate::args;
use crate::error::ApiResult;
use crate::store::{Backend, Db, DbError, Store, tx_body};

/// Votes folded in one transaction at most.
const FOLD_CHUNK: i64 = 1_000;
/// How often a server folds new votes without being asked.
const FOLD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The fold: each statement adds the campaign's (`$1`) votes with `$2 < seq <= $3`.
const FOLD_STATEMENTS: [&str; 6] = [
    "INSERT INTO pair_tallies (pair_id, campaign_id, votes, a, b, tie, both_bad) \
     SELECT c.pair_id, $1, COUNT(*), SUM(CASE WHEN c.choice = 'a' THEN 1 ELSE 0 END), \
     SUM(CASE WHEN c.choice = 'b' THEN 1 ELSE 0 END), SUM(CASE WHEN c.choice = 'tie' THEN 1 ELSE 0 END), \
     SUM(CASE WHEN c.choice = 'both_bad' THEN 1 ELSE 0 END) \
     FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
     WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 AND p.is_gold = 0 GROUP BY c.pair_id \
     ON CONFLICT (pair_id) DO UPDATE SET votes = pair_tallies.votes + excluded.votes, a = pair_tallies.a + excluded.a, \
     b = pair_tallies.b + excluded.b, tie = pair_tallies.tie + excluded.tie, \
     both_bad = pair_tallies.both_bad + excluded.both_bad",
    // The left response won: `a` shown on the left (not swapped), or `b` when swapped.
    "INSERT INTO rater_tallies (campaign_id, rater_id, votes, gold_votes, gold_correct, decisive, left_wins, compared, matches) \
     SELECT $1, c.rater_id, COUNT(*), SUM(CASE WHEN p.is_gold = 1 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN p.is_gold = 1 AND (CASE WHEN EXISTS (SELECT 1 FROM ranking_votes g WHERE g.comparison_id = c.id) \
     THEN c.choice <> 'both_bad' AND NOT EXISTS (SELECT 1 FROM ranking_votes x \
       JOIN ranking_votes y ON y.comparison_id = x.comparison_id \
       JOIN ranking_responses gx ON gx.pair_id = x.pair_id AND gx.position = x.position \
       JOIN ranking_responses gy ON gy.pair_id = y.pair_id AND gy.position = y.position \
       WHERE x.comparison_id = c.id AND gx.gold_rank < gy.gold_rank AND x.rank >= y.rank) \
     ELSE c.choice = p.gold_choice END) THEN 1 ELSE 0 END), \
     SUM(CASE WHEN p.is_gold = 0 AND c.choice IN ('a', 'b') THEN 1 ELSE 0 END), \
     SUM(CASE WHEN p.is_gold = 0 AND ((c.choice = 'a' AND c.swapped = 0) OR (c.choice = 'b' AND c.swapped = 1)) \
     THEN 1 ELSE 0 END), 0, 0 \
     FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
     WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 GROUP BY c.rater_id \
     ON CONFLICT (campaign_id, rater_id) DO UPDATE SET votes = rater_tallies.votes + excluded.votes, \
     gold_votes = rater_tallies.gold_votes + excluded.gold_votes, \
     gold_correct = rater_tallies.gold_correct + excluded.gold_correct, \
     decisive = rater_tallies.decisive + excluded.decisive, left_wins = rater_tallies.left_wins + excluded.left_wins",
    // Each two votes on a pair once (joined once, then a row for each of the two raters).
    // `WHERE true`: SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT.
    "INSERT INTO rater_tallies (campaign_id, rater_id, votes, gold_votes, gold_correct, decisive, left_wins, compared, matches) \
     SELECT $1, CASE WHEN side.k = 0 THEN x.v_rater ELSE x.w_rater END, 0, 0, 0, 0, 0, COUNT(*), SUM(x.same) FROM ( \
       SELECT v.rater_id AS v_rater, w.rater_id AS w_rater, CASE WHEN v.choice = w.choice THEN 1 ELSE 0 END AS same \
       FROM comparisons v JOIN pairs p ON p.id = v.pair_id JOIN comparisons w ON w.pair_id = v.pair_id AND w.seq < v.seq \
       WHERE v.campaign_id = $1 AND v.seq > $2 AND v.seq <= $3 AND p.is_gold = 0 \
     ) x CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1) side WHERE true \
     GROUP BY CASE WHEN side.k = 0 THEN x.v_rater ELSE x.w_rater END \
     ON CONFLICT (campaign_id, rater_id) DO UPDATE SET compared = rater_tallies.compared + excluded.compared, \
     matches = rater_tallies.matches + excluded.matches",
    "INSERT INTO vote_times (campaign_id, rater_id, tenths, votes) \
     SELECT $1, c.rater_id, (c.time_ms + 50) / 100, COUNT(*) FROM comparisons c \
     WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 AND c.time_ms IS NOT NULL \
     GROUP BY c.rater_id, (c.time_ms + 50) / 100 \
     ON CONFLICT (campaign_id, rater_id, tenths) DO UPDATE SET votes = vote_times.votes + excluded.votes",
    "INSERT INTO vote_hours (campaign_id, hour, votes) \
     SELECT $1, (c.created_at / 3600000) * 3600000, COUNT(*) FROM comparisons c \
     WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 GROUP BY (c.created_at / 3600000) * 3600000 \
     ON CONFLICT (campaign_id, hour) DO UPDATE SET votes = vote_hours.votes + excluded.votes",
    "INSERT INTO model_matchups (campaign_id, model_a, model_b, choice, votes) \
     SELECT $1, COALESCE(ra.model || '@' || ra.model_version, ra.model), \
     COALESCE(rb.model || '@' || rb.model_version, rb.model), c.choice, COUNT(*) \
     FROM comparisons c JOIN pairs p ON p.id = c.pair_id JOIN responses ra ON ra.id = p.response_a_id \
     JOIN responses rb ON rb.id = p.response_b_id \
     WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 AND p.is_gold = 0 \
     GROUP BY COALESCE(ra.model || '@' || ra.model_version, ra.model), \
     COALESCE(rb.model || '@' || rb.model_version, rb.model), c.choice \
     ON CONFLICT (campaign_id, model_a, model_b, choice) DO UPDATE SET votes = model_matchups.votes + excluded.votes",
];

/// Folds every numbered vote of the campaign into its tallies.
pub async fn bring_up_to_date(db: &Db, campaign_id: i64) -> ApiResult<()> {
    crate::votes::sequence_pending(db, campaign_id).await?;
    while !db.transact(tx_body(move |tx| Box::pin(fold_chunk(tx, campaign_id)))).await? {}
    Ok(())
}

/// Every few seconds, until the server stops: folds the votes of every campaign with new
/// ones, so that the fold stats and the leaderboard do before reading stays small.
pub async fn keep_folding(db: Db) {
    loop {
        if let Err(error) = fold_all(&db).await {
            tracing::warn!(%error, "folding votes into the campaigns' tallies");
        }
        tokio::time::sleep(FOLD_EVERY).await;
    }
}

/// Brings every campaign with votes not yet tallied up to date.
async fn fold_all(db: &Db) -> ApiResult<()> {
    let behind = db
        .fetch_all(
            "SELECT k.id FROM campaigns k LEFT JOIN campaign_tallies t ON t.campaign_id = k.id \
             WHERE k.vote_seq > COALESCE(t.tallied_seq, 0)",
            args![],
        )
        .await?;
    for row in behind {
        bring_up_to_date(db, row.int("id")?).await?;
    }
    Ok(())
}

/// Folds the next chunk of votes; returns whether the tallies have caught up.
async fn fold_chunk(tx: &mut dyn Store, campaign_id: i64) -> Result<bool, DbError> {
    tx.execute(
        "INSERT INTO campaign_tallies (campaign_id, tallied_seq) VALUES ($1, 0) ON CONFLICT (campaign_id) DO NOTHING",
        args![campaign_id],
    )
    .await?;
    // Postgres: servers folding the same campaign at once take turns on the watermark row.
    let watermark = match tx.backend() {
        Backend::Sqlite => "SELECT tallied_seq FROM campaign_tallies WHERE campaign_id = $1",
        Backend::Postgres => "SELECT tallied_seq FROM campaign_tallies WHERE campaign_id = $1 FOR UPDATE",
    };
    let from = tx.fetch_one(watermark, args![campaign_id]).await?.int("tallied_seq")?;
    // Every vote up to `vote_seq` is committed and numbered (see votes.rs).
    let latest =
        tx.fetch_one("SELECT vote_seq FROM campaigns WHERE id = $1", args![campaign_id]).await?.int("vote_seq")?;
    let to = latest.min(from + FOLD_CHUNK);
    if to <= from {
        return Ok(true);
    }
    for statement in FOLD_STATEMENTS {
        tx.execute(statement, args![campaign_id, from, to]).await?;
    }
    tx.execute("UPDATE campaign_tallies SET tallied_seq = $2 WHERE campaign_id = $1", args![campaign_id, to]).await?;
    Ok(to == latest)
}
