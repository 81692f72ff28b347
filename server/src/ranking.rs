//! Ranking campaigns on the vote path: the screen order of a task's responses, the task as
//! served, and a ranking vote's ranks, written in the vote's own transaction.
//!
//! A ranking task is a `pairs` row whose responses are listed in `ranking_responses`
//! (migration 0009), so leases, overlap, skips and tallies treat it as a pair. Each lease
//! shows the responses in its own order, drawn from the assignment id: the page and the vote
//! agree on it without storing it, and a reloaded page shows the same order again.
//!
//! Ranks are given in screen order, 1 = best, equal numbers tie. They are stored per response
//! as standard competition ranks ("1224": a rank is one more than the number of responses
//! ranked strictly better), with where the rater saw each response. The vote's overall
//! `choice` is what the ranking says of responses a and b (`a`, `b` or `tie`), or `both_bad`
//! when the rater marked all responses bad, so every reader of choices still reads it.

use pairwise_api::votes::{Choice, ServedPair};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::store::SqlRow;
use crate::store::Store;

/// The most responses of one ranking task (see `import::parse::MAX_RANKED`).
pub const MAX_RANKED: usize = crate::import::parse::MAX_RANKED;

/// A task's responses in stored order: `(position, text)`.
pub(crate) const TASK_RESPONSES_SQL: &str = "SELECT rr.position, r.text FROM ranking_responses rr \
     JOIN responses r ON r.id = rr.response_id WHERE rr.pair_id = $1 ORDER BY rr.position";

/// Screen order of a lease's `k` responses: `order[slot]` is the stored position shown in
/// that slot (0 = first on screen).
pub fn display_order(assignment_id: i64, k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..k).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(assignment_id as u64 ^ 0x005e_ed0f_7a5c));
    order
}

/// Puts a ranking task's responses on a served pair, in its lease's screen order (`left` and
/// `right` become the first two on screen). `rows` are `TASK_RESPONSES_SQL`'s; none for a pair.
pub(crate) fn show_responses(pair: &mut ServedPair, rows: &[SqlRow]) -> ApiResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let texts = rows.iter().map(|row| row.text("text")).collect::<Result<Vec<String>, _>>()?;
    let order = display_order(pair.assignment_id, texts.len());
    pair.responses = order.iter().map(|&position| texts[position].clone()).collect();
    pair.left = pair.responses[0].clone();
    pair.right = pair.responses[1].clone();
    Ok(())
}

/// Standard competition ranks of the given ranks (lower is better).
pub fn competition_ranks(ranks: &[i64]) -> Vec<i64> {
    ranks.iter().map(|r| 1 + ranks.iter().filter(|other| *other < r).count() as i64).collect()
}

/// What can be checked of ranks before the transaction (their count needs the task).
pub fn validate_ranks(ranks: &[i64]) -> ApiResult<()> {
    if !(2..=MAX_RANKED).contains(&ranks.len()) {
        return Err(ApiError::bad_request(format!(
            "ranks: give one rank per response of the task (2-{MAX_RANKED}), got {}",
            ranks.len()
        )));
    }
    if let Some((i, rank)) = ranks.iter().enumerate().find(|(_, r)| !(1..=ranks.len() as i64).contains(r)) {
        return Err(ApiError::bad_request(format!("ranks[{i}]: {rank} is not between 1 and {}", ranks.len())));
    }
    Ok(())
}

/// Stores the ranks of a new vote (`ranks` in screen order) and sets the vote's choice from
/// them; returns that choice.
pub(crate) async fn store_ranking(tx: &mut dyn Store, vote_id: i64, ranks: &[i64], all_bad: bool) -> ApiResult<Choice> {
    let vote = tx
        .fetch_one("SELECT campaign_id, pair_id, assignment_id FROM comparisons WHERE id = $1", args![vote_id])
        .await?;
    let pair_id = vote.int("pair_id")?;
    let k = tx.fetch_all(TASK_RESPONSES_SQL, args![pair_id]).await?.len();
    if k == 0 {
        return Err(ApiError::bad_request(
            "ranks: this campaign asks for a choice between two responses, not a ranking",
        ));
    }
    if ranks.len() != k {
        return Err(ApiError::bad_request(format!(
            "ranks: {} given, but this task has {k} responses (one rank each, in screen order)",
            ranks.len()
        )));
    }
    let ranks = competition_ranks(ranks);
    let order = display_order(vote.int("assignment_id")?, k);
    let mut by_position = vec![0i64; k];
    for (slot, (&position, &rank)) in order.iter().zip(&ranks).enumerate() {
        by_position[position] = rank;
        tx.execute(
            "INSERT INTO ranking_votes (comparison_id, campaign_id, pair_id, position, shown_at, rank) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            args![vote_id, vote.int("campaign_id")?, pair_id, position as i64, slot as i64, rank],
        )
        .await?;
    }
    let choice = match (all_bad, by_position[0].cmp(&by_position[1])) {
        (true, _) => Choice::BothBad,
        (false, std::cmp::Ordering::Less) => Choice::A,
        (false, std::cmp::Ordering::Greater) => Choice::B,
        (false, std::cmp::Ordering::Equal) => Choice::Tie,
    };
    tx.execute("UPDATE comparisons SET choice = $1, strength = NULL WHERE id = $2", args![choice.as_str(), vote_id])
        .await?;
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_order_is_a_seeded_permutation() {
        let order = display_order(42, 5);
        assert_eq!(order, display_order(42, 5));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        let differ = (1..20).filter(|&id| display_order(id, 4) != display_order(id + 1, 4)).count();
        assert!(differ > 10, "orders should vary with the lease");
    }

    #[test]
    fn ranks_become_competition_ranks() {
        assert_eq!(competition_ranks(&[1, 1, 2]), vec![1, 1, 3]);
        assert_eq!(competition_ranks(&[3, 1, 2]), vec![3, 1, 2]);
        assert_eq!(competition_ranks(&[2, 2, 2]), vec![1, 1, 1]);
        assert_eq!(competition_ranks(&[4, 4, 1, 2]), vec![3, 3, 1, 2]);
    }

    #[test]
    fn ranks_are_checked() {
        assert!(validate_ranks(&[1]).is_err());
        assert!(validate_ranks(&[1, 3]).is_err());
        assert!(validate_ranks(&[0, 1]).is_err());
        assert!(validate_ranks(&[2, 1, 2]).is_ok());
    }
}
