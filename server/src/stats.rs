//! Campaign statistics: progress, inter-rater agreement (percent agreement and
//! Krippendorff's alpha), gold accuracy and agreement per rater, position bias and
//! time per vote.
//!
//! Krippendorff's alpha treats the choice as ordinal: `a` better < no preference
//! (`tie` or `both_bad`) < `b` better, with the ordinal distance metric, over the
//! non-gold pairs that have at least two votes.

use std::collections::HashMap;

use pairwise_api::stats::{Agreement, CampaignStats, PositionBias, Progress, RaterStats, VotesOverTime};
use pairwise_api::votes::Choice;

use crate::args;
use crate::campaigns::get_campaign;
use crate::error::ApiResult;
use crate::store::Db;

#[derive(Debug, Clone)]
pub struct VoteRecord {
    pub pair_id: i64,
    pub rater_id: i64,
    pub choice: Choice,
    pub swapped: bool,
    pub time_ms: Option<i64>,
    pub gold: Option<Choice>,
    pub is_gold: bool,
    /// When the vote was stored (ms since the epoch).
    pub created_at: i64,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub fn votes_over_time(votes: &[VoteRecord]) -> VotesOverTime {
    let (Some(first), Some(last)) =
        (votes.iter().map(|v| v.created_at).min(), votes.iter().map(|v| v.created_at).max())
    else {
        return VotesOverTime { bucket_ms: HOUR_MS, buckets: Vec::new() };
    };
    let bucket_ms = if last - first <= 2 * DAY_MS { HOUR_MS } else { DAY_MS };
    let start = first.div_euclid(bucket_ms) * bucket_ms;
    let mut counts = vec![0i64; ((last - start) / bucket_ms + 1) as usize];
    for vote in votes {
        counts[((vote.created_at - start) / bucket_ms) as usize] += 1;
    }
    let buckets = counts.into_iter().enumerate().map(|(i, n)| (start + i as i64 * bucket_ms, n)).collect();
    VotesOverTime { bucket_ms, buckets }
}

pub fn median(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] as f64 } else { (values[mid - 1] + values[mid]) as f64 / 2.0 })
}

fn ordinal_value(choice: Choice) -> usize {
    match choice {
        Choice::A => 0,
        Choice::Tie | Choice::BothBad => 1,
        Choice::B => 2,
    }
}

/// Krippendorff's alpha with the ordinal metric. `units` holds the ordinal values
/// (0..levels) given to each item; items with fewer than two values are not pairable.
pub fn krippendorff_alpha_ordinal(units: &[Vec<usize>], levels: usize) -> Option<f64> {
    let mut coincidence = vec![vec![0.0f64; levels]; levels];
    for values in units.iter().filter(|v| v.len() >= 2) {
        let m = values.len() as f64;
        for (i, &c) in values.iter().enumerate() {
            for (j, &k) in values.iter().enumerate() {
                if i != j {
                    coincidence[c][k] += 1.0 / (m - 1.0);
                }
            }
        }
    }
    let marginals: Vec<f64> = coincidence.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = marginals.iter().sum();
    if n <= 1.0 {
        return None;
    }
    let delta2 = |c: usize, k: usize| -> f64 {
        if c == k {
            return 0.0;
        }
        let (lo, hi) = (c.min(k), c.max(k));
        let between: f64 = marginals[lo..=hi].iter().sum();
        let d = between - (marginals[c] + marginals[k]) / 2.0;
        d * d
    };
    let mut observed = 0.0;
    let mut expected = 0.0;
    for c in 0..levels {
        for k in 0..levels {
            let d = delta2(c, k);
            observed += coincidence[c][k] * d;
            expected += marginals[c] * marginals[k] * d;
        }
    }
    expected /= n - 1.0;
    if expected == 0.0 { None } else { Some(1.0 - observed / expected) }
}

/// Computes all statistics from the votes (pure; the handler loads the data).
pub fn compute_stats(
    campaign_id: i64,
    progress_counts: (i64, i64, i64),
    votes: &[VoteRecord],
    usernames: &HashMap<i64, String>,
) -> CampaignStats {
    let (pairs_total, pairs_complete, overlap) = progress_counts;
    let regular: Vec<&VoteRecord> = votes.iter().filter(|v| !v.is_gold).collect();
    let mut by_pair: HashMap<i64, Vec<&VoteRecord>> = HashMap::new();
    for vote in &regular {
        by_pair.entry(vote.pair_id).or_default().push(vote);
    }
    let mut agreeing_pairs = 0i64;
    let mut rater_pairs = 0i64;
    let mut units = Vec::new();
    for pair_votes in by_pair.values().filter(|v| v.len() >= 2) {
        for (i, x) in pair_votes.iter().enumerate() {
            for y in &pair_votes[i + 1..] {
                rater_pairs += 1;
                agreeing_pairs += i64::from(x.choice == y.choice);
            }
        }
        units.push(pair_votes.iter().map(|v| ordinal_value(v.choice)).collect::<Vec<_>>());
    }
    let decisive: Vec<&&VoteRecord> = regular.iter().filter(|v| matches!(v.choice, Choice::A | Choice::B)).collect();
    let left_wins = decisive.iter().filter(|v| (v.choice == Choice::A) != v.swapped).count() as i64;

    // One pass to group votes by rater (BTreeMap: raters come out in id order).
    let mut by_rater: std::collections::BTreeMap<i64, Vec<&VoteRecord>> = Default::default();
    for vote in votes {
        by_rater.entry(vote.rater_id).or_default().push(vote);
    }
    let rater_count = by_rater.len() as i64;
    let raters = by_rater
        .into_iter()
        .map(|(rater, mine)| {
            let mut times: Vec<i64> = mine.iter().filter_map(|v| v.time_ms).collect();
            let gold: Vec<&&VoteRecord> = mine.iter().filter(|v| v.is_gold && v.gold.is_some()).collect();
            let gold_correct = gold.iter().filter(|v| Some(v.choice) == v.gold).count() as i64;
            let (mut matches, mut compared) = (0i64, 0i64);
            for vote in mine.iter().filter(|v| !v.is_gold) {
                for other in by_pair.get(&vote.pair_id).into_iter().flatten().filter(|o| o.rater_id != rater) {
                    compared += 1;
                    matches += i64::from(other.choice == vote.choice);
                }
            }
            RaterStats {
                rater_id: rater,
                username: usernames.get(&rater).cloned().unwrap_or_default(),
                votes: mine.len() as i64,
                median_time_ms: median(&mut times),
                gold_votes: gold.len() as i64,
                gold_correct,
                gold_accuracy: (!gold.is_empty()).then(|| gold_correct as f64 / gold.len() as f64),
                agreement_with_others: (compared > 0).then(|| matches as f64 / compared as f64),
            }
        })
        .collect();
    let mut all_times: Vec<i64> = votes.iter().filter_map(|v| v.time_ms).collect();
    CampaignStats {
        campaign_id,
        votes_over_time: votes_over_time(votes),
        progress: Progress {
            pairs_total,
            pairs_complete,
            target_votes: pairs_total * overlap,
            votes: regular.len() as i64,
            gold_votes: (votes.len() - regular.len()) as i64,
            raters: rater_count,
        },
        agreement: Agreement {
            percent: (rater_pairs > 0).then(|| agreeing_pairs as f64 / rater_pairs as f64),
            krippendorff_alpha: krippendorff_alpha_ordinal(&units, 3),
            pairs_with_multiple_votes: units.len() as i64,
        },
        position_bias: PositionBias {
            decisive_votes: decisive.len() as i64,
            left_wins,
            rate: (!decisive.is_empty()).then(|| left_wins as f64 / decisive.len() as f64),
        },
        median_time_ms: median(&mut all_times),
        raters,
    }
}

pub async fn campaign_stats(db: &Db, campaign_id: i64) -> ApiResult<CampaignStats> {
    let campaign = get_campaign(db, campaign_id, 0).await?;
    let pairs_complete = db
        .fetch_one(
            "SELECT COUNT(*) AS n FROM pairs WHERE campaign_id = $1 AND is_gold = 0 AND vote_count >= $2",
            args![campaign_id, campaign.overlap],
        )
        .await?
        .int("n")?;
    let rows = db
        .fetch_all(
        "SELECT c.pair_id, c.rater_id, u.username, c.choice, c.swapped, c.time_ms, c.created_at, p.is_gold, p.gold_choice \
         FROM comparisons c JOIN pairs p ON p.id = c.pair_id JOIN users u ON u.id = c.rater_id \
         WHERE c.campaign_id = $1 ORDER BY c.seq",
            args![campaign_id],
        )
        .await?;
    let mut usernames = HashMap::new();
    let mut votes = Vec::with_capacity(rows.len());
    for row in rows {
        let rater_id = row.int("rater_id")?;
        usernames.entry(rater_id).or_insert(row.text("username")?);
        let choice = row.text("choice")?;
        let gold = row.opt_text("gold_choice")?;
        votes.push(VoteRecord {
            pair_id: row.int("pair_id")?,
            rater_id,
            choice: Choice::parse(&choice).ok_or_else(|| anyhow::anyhow!("unknown choice {choice}"))?,
            swapped: row.int("swapped")? != 0,
            time_ms: row.opt_int("time_ms")?,
            gold: gold.as_deref().and_then(Choice::parse),
            is_gold: row.int("is_gold")? != 0,
            created_at: row.int("created_at")?,
        });
    }
    Ok(compute_stats(campaign_id, (campaign.pairs, pairs_complete, campaign.overlap), &votes, &usernames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_matches_hand_computation() {
        // Two units: (0,0) and (0,2). Coincidences: o00 = 2, o02 = o20 = 1.
        // Marginals n0 = 3, n1 = 0, n2 = 1, n = 4. δ²(0,2) = (3+0+1 − (3+1)/2)² = 4.
        // D_o = 2·1·4 = 8; D_e = 2·3·1·4 / 3 = 8 → alpha = 0.
        let alpha = krippendorff_alpha_ordinal(&[vec![0, 0], vec![0, 2]], 3).unwrap();
        assert!(alpha.abs() < 1e-12, "{alpha}");
        // Perfect agreement with variation between units gives 1.
        let alpha = krippendorff_alpha_ordinal(&[vec![0, 0], vec![2, 2, 2]], 3).unwrap();
        assert!((alpha - 1.0).abs() < 1e-12);
        // No variation at all: undefined.
        assert_eq!(krippendorff_alpha_ordinal(&[vec![1, 1]], 3), None);
    }

    #[test]
    fn votes_are_bucketed_by_hour_then_by_day() {
        let vote = |created_at| VoteRecord {
            pair_id: 1,
            rater_id: 1,
            choice: Choice::A,
            swapped: false,
            time_ms: None,
            gold: None,
            is_gold: false,
            created_at,
        };
        let hourly = votes_over_time(&[vote(HOUR_MS + 5), vote(HOUR_MS + 10), vote(3 * HOUR_MS + 1)]);
        assert_eq!(
            hourly,
            VotesOverTime { bucket_ms: HOUR_MS, buckets: vec![(HOUR_MS, 2), (2 * HOUR_MS, 0), (3 * HOUR_MS, 1)] }
        );
        let daily = votes_over_time(&[vote(0), vote(DAY_MS * 3 + 1)]);
        assert_eq!(daily.bucket_ms, DAY_MS);
        assert_eq!(daily.buckets, vec![(0, 1), (DAY_MS, 0), (2 * DAY_MS, 0), (3 * DAY_MS, 1)]);
        assert!(votes_over_time(&[]).buckets.is_empty());
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3, 1, 2]), Some(2.0));
        assert_eq!(median(&mut [4, 1, 2, 3]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
