//! Campaign statistics: progress, inter-rater agreement (percent agreement and
//! Krippendorff's alpha), gold accuracy and agreement per rater, position bias and
//! time per vote — read from the campaign's running tallies (`tallies`), so their cost does
//! not grow with the number of votes.
//!
//! Krippendorff's alpha treats the choice as ordinal: `a` better < no preference
//! (`tie` or `both_bad`) < `b` better, with the ordinal distance metric, over the
//! non-gold pairs that have at least two votes. Times per vote are tallied to the nearest
//! 100 ms, so medians are of times rounded to 100 ms. Per-aspect figures (same metric, per
//! aspect) are computed in SQL from the aspect choices. Rankings and ratings have their own
//! agreement (ordinal on ranks and on the 1-5 scale, nominal on thumbs), read from their
//! votes counted per task.

use std::collections::HashMap;

use pairwise_api::campaigns::Campaign;
use pairwise_api::campaigns::CampaignKind;
use pairwise_api::stats::{
    Agreement, AspectStats, CampaignStats, PositionBias, Progress, RankingStats, RaterStats, RatingStats, SlotStats,
    VotesOverTime,
};

use crate::args;
use crate::campaigns::get_campaign;
use crate::error::ApiResult;
use crate::store::{Db, SqlRow};
use crate::tallies;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Votes per hour (`(hour start, votes)`, in order) → the chart's buckets: hours while
/// the votes span at most two days, days after that.
pub fn votes_over_time(hours: &[(i64, i64)]) -> VotesOverTime {
    let (Some(&(first, _)), Some(&(last, _))) = (hours.first(), hours.last()) else {
        return VotesOverTime { bucket_ms: HOUR_MS, buckets: Vec::new() };
    };
    let bucket_ms = if last - first <= 2 * DAY_MS { HOUR_MS } else { DAY_MS };
    let start = first.div_euclid(bucket_ms) * bucket_ms;
    let mut counts = vec![0i64; ((last - start) / bucket_ms + 1) as usize];
    for &(hour, votes) in hours {
        counts[((hour - start) / bucket_ms) as usize] += votes;
    }
    let buckets = counts.into_iter().enumerate().map(|(i, n)| (start + i as i64 * bucket_ms, n)).collect();
    VotesOverTime { bucket_ms, buckets }
}

/// Krippendorff's alpha with the ordinal metric from the coincidence matrix of the values
/// (`coincidence[c][k]`: pairable value pairs (c, k) within units, each weighted 1/(m−1)
/// for a unit of m values).
pub fn krippendorff_alpha_ordinal<const L: usize>(coincidence: &[[f64; L]; L]) -> Option<f64> {
    let levels = coincidence.len();
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

/// Krippendorff's alpha with the nominal metric (any two different values disagree fully),
/// from the same coincidence matrix.
pub fn krippendorff_alpha_nominal<const L: usize>(coincidence: &[[f64; L]; L]) -> Option<f64> {
    let marginals: Vec<f64> = coincidence.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = marginals.iter().sum();
    if n <= 1.0 {
        return None;
    }
    let observed: f64 = (0..L).map(|c| marginals[c] - coincidence[c][c]).sum();
    let expected = (n * n - marginals.iter().map(|m| m * m).sum::<f64>()) / (n - 1.0);
    if expected == 0.0 { None } else { Some(1.0 - observed / expected) }
}

/// Agreement over the regular pairs with two votes or more. Ordinal levels: 0 = `a`,
/// 1 = `tie` or `both_bad`, 2 = `b`; a unit of m votes with nᵢ at level i adds
/// nᵢ·nⱼ/(m−1) to coincidence (i, j) and nᵢ(nᵢ−1)/(m−1) to (i, i).
macro_rules! agreement_columns {
    () => {
        "COUNT(*) AS units, \
     CAST(COALESCE(SUM(votes * (votes - 1) / 2), 0) AS BIGINT) AS rater_pairs, \
     CAST(COALESCE(SUM(a * (a - 1) / 2 + b * (b - 1) / 2 + tie * (tie - 1) / 2 + both_bad * (both_bad - 1) / 2), 0) AS BIGINT) AS agreeing, \
     COALESCE(SUM(CAST(a * (a - 1) AS DOUBLE PRECISION) / (votes - 1)), 0) AS o00, \
     COALESCE(SUM(CAST((tie + both_bad) * (tie + both_bad - 1) AS DOUBLE PRECISION) / (votes - 1)), 0) AS o11, \
     COALESCE(SUM(CAST(b * (b - 1) AS DOUBLE PRECISION) / (votes - 1)), 0) AS o22, \
     COALESCE(SUM(CAST(a * (tie + both_bad) AS DOUBLE PRECISION) / (votes - 1)), 0) AS o01, \
     COALESCE(SUM(CAST(a * b AS DOUBLE PRECISION) / (votes - 1)), 0) AS o02, \
     COALESCE(SUM(CAST((tie + both_bad) * b AS DOUBLE PRECISION) / (votes - 1)), 0) AS o12"
    };
}
const AGREEMENT_SQL: &str =
    concat!("SELECT ", agreement_columns!(), " FROM pair_tallies WHERE campaign_id = $1 AND votes >= 2");

/// The same per aspect, from the aspect choices counted per regular pair.
const ASPECT_AGREEMENT_SQL: &str = concat!(
    "SELECT aspect, ",
    agreement_columns!(),
    " FROM (SELECT av.aspect, av.pair_id, COUNT(*) AS votes, \
     SUM(CASE WHEN av.choice = 'a' THEN 1 ELSE 0 END) AS a, SUM(CASE WHEN av.choice = 'b' THEN 1 ELSE 0 END) AS b, \
     SUM(CASE WHEN av.choice = 'tie' THEN 1 ELSE 0 END) AS tie, \
     SUM(CASE WHEN av.choice = 'both_bad' THEN 1 ELSE 0 END) AS both_bad \
     FROM aspect_votes av JOIN pairs p ON p.id = av.pair_id AND p.is_gold = 0 WHERE av.campaign_id = $1 \
     GROUP BY av.aspect, av.pair_id) t WHERE votes >= 2 GROUP BY aspect"
);

/// Choices per aspect over the regular pairs.
const ASPECT_CHOICES_SQL: &str = "SELECT av.aspect, av.choice, COUNT(*) AS n FROM aspect_votes av \
     JOIN pairs p ON p.id = av.pair_id AND p.is_gold = 0 WHERE av.campaign_id = $1 GROUP BY av.aspect, av.choice";

/// Per rater, the one or two 100 ms steps holding their middle vote(s): a step covers the
/// rater's votes `before + 1 ..= upto` in time order, of `total`.
const RATER_MEDIAN_SQL: &str = "SELECT rater_id, tenths, upto - votes AS before, upto, total FROM ( \
     SELECT rater_id, tenths, votes, CAST(SUM(votes) OVER (PARTITION BY rater_id ORDER BY tenths) AS BIGINT) AS upto, \
     CAST(SUM(votes) OVER (PARTITION BY rater_id) AS BIGINT) AS total FROM vote_times WHERE campaign_id = $1) x \
     WHERE upto >= (total + 1) / 2 AND upto - votes <= total / 2 ORDER BY rater_id, tenths";

/// The same over all the campaign's votes.
const MEDIAN_SQL: &str = "SELECT 0 AS rater_id, tenths, upto - votes AS before, upto, total FROM ( \
     SELECT tenths, votes, CAST(SUM(votes) OVER (ORDER BY tenths) AS BIGINT) AS upto, \
     CAST(SUM(votes) OVER () AS BIGINT) AS total FROM ( \
       SELECT tenths, CAST(SUM(votes) AS BIGINT) AS votes FROM vote_times WHERE campaign_id = $1 GROUP BY tenths) g) x \
     WHERE upto >= (total + 1) / 2 AND upto - votes <= total / 2 ORDER BY tenths";

/// Median time in ms from the middle step rows of one rater (or of the campaign).
fn median_from_steps(rows: &[&SqlRow]) -> ApiResult<Option<f64>> {
    let Some(first) = rows.first() else { return Ok(None) };
    let total = first.int("total")?;
    // 1-based positions of the middle vote(s): the same one when `total` is odd.
    let (low, high) = ((total + 1) / 2, total / 2 + 1);
    let value_at = |position: i64| -> ApiResult<f64> {
        for row in rows {
            if row.int("before")? < position && position <= row.int("upto")? {
                return Ok(row.int("tenths")? as f64 * 100.0);
            }
        }
        Err(anyhow::anyhow!("vote_times: no step holds vote {position} of {total}").into())
    };
    Ok(Some((value_at(low)? + value_at(high)?) / 2.0))
}

pub async fn campaign_stats(db: &Db, campaign_id: i64) -> ApiResult<CampaignStats> {
    let campaign = get_campaign(db, campaign_id, 0).await?;
    tallies::bring_up_to_date(db, campaign_id).await?;
    let pairs_complete = db
        .fetch_one(
            "SELECT COUNT(*) AS n FROM pairs WHERE campaign_id = $1 AND is_gold = 0 AND vote_count >= $2",
            args![campaign_id, campaign.overlap],
        )
        .await?
        .int("n")?;
    let agreement = agreement_from(&db.fetch_one(AGREEMENT_SQL, args![campaign_id]).await?)?;
    let aspects = if campaign.aspects.is_empty() { Vec::new() } else { aspect_stats(db, &campaign).await? };
    // A ranking campaign's raters agree response by response, not by the first two's order;
    // a thumbs or scale campaign's on each rating (every one of its votes chooses `a`).
    let own_agreement = match campaign.kind {
        CampaignKind::Ranking => Some(RATER_RANK_AGREEMENT_SQL),
        CampaignKind::Thumbs | CampaignKind::Scale => Some(RATER_RATING_AGREEMENT_SQL),
        CampaignKind::Pairwise | CampaignKind::Arena => None,
    };
    let mut rater_agreement: HashMap<i64, (i64, i64)> = HashMap::new();
    if let Some(sql) = own_agreement {
        for row in db.fetch_all(sql, args![campaign_id]).await? {
            rater_agreement.insert(row.int("rater_id")?, (row.int("compared")?, row.int("matches")?));
        }
    }
    let ranking = match campaign.kind {
        CampaignKind::Ranking => Some(ranking_stats(db, campaign_id).await?),
        _ => None,
    };
    let rating = match campaign.kind {
        CampaignKind::Thumbs | CampaignKind::Scale => Some(rating_stats(db, &campaign).await?),
        _ => None,
    };
    // A ranking campaign's agreement is the rankings', not that of what each says of its
    // first two; a rating campaign's is the ratings'.
    let agreement = match (&ranking, &rating) {
        (Some(ranking), _) => ranking.agreement.clone(),
        (None, Some(rating)) => rating.agreement.clone(),
        (None, None) => agreement,
    };

    let rater_medians = db.fetch_all(RATER_MEDIAN_SQL, args![campaign_id]).await?;
    let mut steps_of: HashMap<i64, Vec<&SqlRow>> = HashMap::new();
    for row in &rater_medians {
        steps_of.entry(row.int("rater_id")?).or_default().push(row);
    }
    let campaign_median = db.fetch_all(MEDIAN_SQL, args![campaign_id]).await?;
    let hours = db
        .fetch_all("SELECT hour, votes FROM vote_hours WHERE campaign_id = $1 ORDER BY hour", args![campaign_id])
        .await?
        .iter()
        .map(|row| Ok((row.int("hour")?, row.int("votes")?)))
        .collect::<ApiResult<Vec<_>>>()?;
    let tallies = db
        .fetch_all(
            "SELECT t.rater_id, u.username, t.votes, t.gold_votes, t.gold_correct, t.decisive, t.left_wins, \
             t.compared, t.matches FROM rater_tallies t JOIN users u ON u.id = t.rater_id \
             WHERE t.campaign_id = $1 ORDER BY t.rater_id",
            args![campaign_id],
        )
        .await?;
    let (mut votes, mut gold_votes, mut decisive, mut left_wins) = (0, 0, 0, 0);
    let mut raters = Vec::with_capacity(tallies.len());
    for row in &tallies {
        let rater_id = row.int("rater_id")?;
        let (gold, gold_correct) = (row.int("gold_votes")?, row.int("gold_correct")?);
        let (compared, matches) = match rater_agreement.get(&rater_id) {
            Some(&counts) => counts,
            None if own_agreement.is_some() => (0, 0),
            None => (row.int("compared")?, row.int("matches")?),
        };
        votes += row.int("votes")?;
        gold_votes += gold;
        // A single response has no left or right to favour.
        if !campaign.kind.single_response() {
            decisive += row.int("decisive")?;
            left_wins += row.int("left_wins")?;
        }
        raters.push(RaterStats {
            rater_id,
            username: row.text("username")?,
            votes: row.int("votes")?,
            median_time_ms: median_from_steps(steps_of.get(&rater_id).map_or(&[][..], Vec::as_slice))?,
            gold_votes: gold,
            gold_correct,
            gold_accuracy: (gold > 0).then(|| gold_correct as f64 / gold as f64),
            agreement_with_others: (compared > 0).then(|| matches as f64 / compared as f64),
        });
    }
    Ok(CampaignStats {
        campaign_id,
        votes_over_time: votes_over_time(&hours),
        progress: Progress {
            pairs_total: campaign.pairs,
            pairs_complete,
            target_votes: campaign.pairs * campaign.overlap,
            votes: votes - gold_votes,
            gold_votes,
            raters: raters.len() as i64,
        },
        agreement,
        position_bias: PositionBias {
            decisive_votes: decisive,
            left_wins,
            rate: (decisive > 0).then(|| left_wins as f64 / decisive as f64),
        },
        median_time_ms: median_from_steps(&campaign_median.iter().collect::<Vec<_>>())?,
        raters,
        aspects,
        ranking,
        rating,
    })
}

/// Per rater of a thumbs or scale campaign: each of their ratings of a regular task against
/// each other rater's rating of it (`compared`), and how often the two are the same.
const RATER_RATING_AGREEMENT_SQL: &str = "SELECT c.rater_id, COUNT(*) AS compared, \
     CAST(SUM(CASE WHEN x.rating = y.rating THEN 1 ELSE 0 END) AS BIGINT) AS matches FROM rating_votes x \
     JOIN rating_votes y ON y.campaign_id = x.campaign_id AND y.pair_id = x.pair_id \
     AND y.comparison_id <> x.comparison_id JOIN comparisons c ON c.id = x.comparison_id \
     JOIN pairs p ON p.id = x.pair_id AND p.is_gold = 0 WHERE x.campaign_id = $1 GROUP BY c.rater_id";

/// Each regular task's ratings, counted: `(pair, rating, votes)`.
const RATING_COUNTS_SQL: &str = "SELECT rv.pair_id, rv.rating, COUNT(*) AS n FROM rating_votes rv \
     JOIN pairs p ON p.id = rv.pair_id AND p.is_gold = 0 WHERE rv.campaign_id = $1 \
     GROUP BY rv.pair_id, rv.rating ORDER BY rv.pair_id";

/// Ratings run 0..=5 (thumbs 0-1, the scale 1-5): the levels of the metric.
const RATING_LEVELS: usize = 6;

/// A thumbs or scale campaign's ratings and agreement. A unit of the agreement is one task,
/// its values the ratings raters gave it; units with one rating are left out.
async fn rating_stats(db: &Db, campaign: &Campaign) -> ApiResult<RatingStats> {
    let mut coincidence = [[0.0f64; RATING_LEVELS]; RATING_LEVELS];
    let mut totals = [0i64; RATING_LEVELS];
    let (mut rater_pairs, mut agreeing, mut units) = (0i64, 0i64, 0i64);
    let mut fold = |unit: &[(usize, i64)]| {
        let m: i64 = unit.iter().map(|(_, n)| n).sum();
        if m < 2 {
            return;
        }
        units += 1;
        rater_pairs += m * (m - 1) / 2;
        for &(c, nc) in unit {
            agreeing += nc * (nc - 1) / 2;
            for &(k, nk) in unit {
                let pairs = if c == k { nc * (nc - 1) } else { nc * nk };
                coincidence[c][k] += pairs as f64 / (m - 1) as f64;
            }
        }
    };
    let mut unit: Vec<(usize, i64)> = Vec::new();
    let mut current = None;
    for row in db.fetch_all(RATING_COUNTS_SQL, args![campaign.id]).await? {
        let pair = row.int("pair_id")?;
        if current != Some(pair) {
            fold(&unit);
            unit.clear();
            current = Some(pair);
        }
        let level = row.int("rating")?.clamp(0, RATING_LEVELS as i64 - 1) as usize;
        let n = row.int("n")?;
        totals[level] += n;
        unit.push((level, n));
    }
    fold(&unit);
    let (range, _) = campaign.kind.rating_range().ok_or_else(|| anyhow::anyhow!("not a rating campaign"))?;
    let counts: Vec<(i64, i64)> = range.map(|rating| (rating, totals[rating as usize])).collect();
    let votes: i64 = counts.iter().map(|(_, n)| n).sum();
    let sum: i64 = counts.iter().map(|(rating, n)| rating * n).sum();
    let alpha = match campaign.kind {
        CampaignKind::Thumbs => krippendorff_alpha_nominal(&coincidence),
        _ => krippendorff_alpha_ordinal(&coincidence),
    };
    Ok(RatingStats {
        votes,
        counts,
        mean: (votes > 0).then(|| sum as f64 / votes as f64),
        agreement: Agreement {
            percent: (rater_pairs > 0).then(|| agreeing as f64 / rater_pairs as f64),
            krippendorff_alpha: alpha,
            pairs_with_multiple_votes: units,
        },
    })
}

/// Per rater of a ranking campaign: each response they ranked on a regular task, against
/// each other rater's rank of it (`compared`), and how often the two ranks are the same.
const RATER_RANK_AGREEMENT_SQL: &str = "SELECT c.rater_id, COUNT(*) AS compared, \
     CAST(SUM(CASE WHEN x.rank = y.rank THEN 1 ELSE 0 END) AS BIGINT) AS matches FROM ranking_votes x \
     JOIN ranking_votes y ON y.campaign_id = x.campaign_id AND y.pair_id = x.pair_id AND y.position = x.position \
     AND y.comparison_id <> x.comparison_id JOIN comparisons c ON c.id = x.comparison_id \
     JOIN pairs p ON p.id = x.pair_id AND p.is_gold = 0 WHERE x.campaign_id = $1 GROUP BY c.rater_id";

/// Each response's ranks per regular task, counted: `(pair, position, rank, votes)`.
const RANK_COUNTS_SQL: &str = "SELECT rv.pair_id, rv.position, rv.rank, COUNT(*) AS n FROM ranking_votes rv \
     JOIN pairs p ON p.id = rv.pair_id AND p.is_gold = 0 WHERE rv.campaign_id = $1 \
     GROUP BY rv.pair_id, rv.position, rv.rank ORDER BY rv.pair_id, rv.position";

/// Ranks per screen slot over the regular tasks.
const RANK_SLOTS_SQL: &str = "SELECT rv.shown_at, COUNT(*) AS shown, CAST(SUM(rv.rank) AS BIGINT) AS rank_sum, \
     CAST(SUM(CASE WHEN rv.rank = 1 THEN 1 ELSE 0 END) AS BIGINT) AS top FROM ranking_votes rv \
     JOIN pairs p ON p.id = rv.pair_id AND p.is_gold = 0 WHERE rv.campaign_id = $1 GROUP BY rv.shown_at ORDER BY rv.shown_at";

/// Ranks run 1..=6 (`ranking::MAX_RANKED`): the levels of the ordinal metric.
const RANK_LEVELS: usize = crate::ranking::MAX_RANKED;

/// A ranking campaign's agreement and position figures. A unit of the agreement is one
/// response of a task, its values the ranks raters gave it; units with one rank are left out.
async fn ranking_stats(db: &Db, campaign_id: i64) -> ApiResult<RankingStats> {
    let mut coincidence = [[0.0f64; RANK_LEVELS]; RANK_LEVELS];
    let (mut rater_pairs, mut agreeing) = (0i64, 0i64);
    let mut tasks_with_several = std::collections::HashSet::new();
    let mut fold = |pair: i64, unit: &[(usize, i64)]| {
        let m: i64 = unit.iter().map(|(_, n)| n).sum();
        if m < 2 {
            return;
        }
        tasks_with_several.insert(pair);
        rater_pairs += m * (m - 1) / 2;
        for &(c, nc) in unit {
            agreeing += nc * (nc - 1) / 2;
            for &(k, nk) in unit {
                let pairs = if c == k { nc * (nc - 1) } else { nc * nk };
                coincidence[c][k] += pairs as f64 / (m - 1) as f64;
            }
        }
    };
    let mut unit: Vec<(usize, i64)> = Vec::new();
    let mut current = None;
    for row in db.fetch_all(RANK_COUNTS_SQL, args![campaign_id]).await? {
        let key = (row.int("pair_id")?, row.int("position")?);
        if current != Some(key) {
            if let Some((pair, _)) = current {
                fold(pair, &unit);
            }
            unit.clear();
            current = Some(key);
        }
        let level = (row.int("rank")? - 1).clamp(0, RANK_LEVELS as i64 - 1) as usize;
        unit.push((level, row.int("n")?));
    }
    if let Some((pair, _)) = current {
        fold(pair, &unit);
    }
    let positions = db
        .fetch_all(RANK_SLOTS_SQL, args![campaign_id])
        .await?
        .iter()
        .map(|row| {
            let (shown, top) = (row.int("shown")?, row.int("top")?);
            Ok(SlotStats {
                slot: row.int("shown_at")?,
                shown,
                mean_rank: row.int("rank_sum")? as f64 / shown as f64,
                top,
                top_rate: top as f64 / shown as f64,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let totals = db
        .fetch_one(
            "SELECT COUNT(*) AS votes, CAST(COALESCE(SUM(CASE WHEN c.choice = 'both_bad' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             AS all_bad FROM comparisons c JOIN pairs p ON p.id = c.pair_id AND p.is_gold = 0 WHERE c.campaign_id = $1",
            args![campaign_id],
        )
        .await?;
    Ok(RankingStats {
        votes: totals.int("votes")?,
        all_bad: totals.int("all_bad")?,
        agreement: Agreement {
            percent: (rater_pairs > 0).then(|| agreeing as f64 / rater_pairs as f64),
            krippendorff_alpha: krippendorff_alpha_ordinal(&coincidence),
            pairs_with_multiple_votes: tasks_with_several.len() as i64,
        },
        positions,
    })
}

/// Agreement from a row of `agreement_columns!`.
fn agreement_from(row: &SqlRow) -> ApiResult<Agreement> {
    let o = |name: &str| row.real(name);
    let coincidence =
        [[o("o00")?, o("o01")?, o("o02")?], [o("o01")?, o("o11")?, o("o12")?], [o("o02")?, o("o12")?, o("o22")?]];
    let (rater_pairs, agreeing) = (row.int("rater_pairs")?, row.int("agreeing")?);
    Ok(Agreement {
        percent: (rater_pairs > 0).then(|| agreeing as f64 / rater_pairs as f64),
        krippendorff_alpha: krippendorff_alpha_ordinal(&coincidence),
        pairs_with_multiple_votes: row.int("units")?,
    })
}

/// Per aspect: its choices and agreement, computed in SQL from the aspect choices (a few
/// rows per aspect come back, whatever the number of votes).
async fn aspect_stats(db: &Db, campaign: &Campaign) -> ApiResult<Vec<AspectStats>> {
    let mut agreements = HashMap::new();
    for row in db.fetch_all(ASPECT_AGREEMENT_SQL, args![campaign.id]).await? {
        agreements.insert(row.text("aspect")?, agreement_from(&row)?);
    }
    let mut counts: HashMap<(String, String), i64> = HashMap::new();
    for row in db.fetch_all(ASPECT_CHOICES_SQL, args![campaign.id]).await? {
        counts.insert((row.text("aspect")?, row.text("choice")?), row.int("n")?);
    }
    let count =
        |aspect: &str, choice: &str| counts.get(&(aspect.to_string(), choice.to_string())).copied().unwrap_or(0);
    Ok(campaign
        .aspects
        .iter()
        .map(|aspect| {
            let name = aspect.name.as_str();
            let (a, b, tie, both_bad) =
                (count(name, "a"), count(name, "b"), count(name, "tie"), count(name, "both_bad"));
            AspectStats {
                name: aspect.name.clone(),
                votes: a + b + tie + both_bad,
                a,
                b,
                tie,
                both_bad,
                agreement: agreements.remove(name).unwrap_or(Agreement {
                    percent: None,
                    krippendorff_alpha: None,
                    pairs_with_multiple_votes: 0,
                }),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_matches_hand_computation() {
        // Two units: (0,0) and (0,2). Coincidences: o00 = 2, o02 = o20 = 1.
        // Marginals n0 = 3, n1 = 0, n2 = 1, n = 4. δ²(0,2) = (3+0+1 − (3+1)/2)² = 4.
        // D_o = 2·1·4 = 8; D_e = 2·3·1·4 / 3 = 8 → alpha = 0.
        let alpha = krippendorff_alpha_ordinal(&[[2.0, 0.0, 1.0], [0.0; 3], [1.0, 0.0, 0.0]]).unwrap();
        assert!(alpha.abs() < 1e-12, "{alpha}");
        // Perfect agreement with variation between units, (0,0) and (2,2,2), gives 1.
        let alpha = krippendorff_alpha_ordinal(&[[2.0, 0.0, 0.0], [0.0; 3], [0.0, 0.0, 3.0]]).unwrap();
        assert!((alpha - 1.0).abs() < 1e-12);
        // No variation at all, (1,1): undefined.
        assert_eq!(krippendorff_alpha_ordinal(&[[0.0; 3], [0.0, 2.0, 0.0], [0.0; 3]]), None);
    }

    #[test]
    fn alpha_on_ranks_matches_hand_computation() {
        // Two responses of one task ranked by two raters who agree: (1,1) and (2,2) → 1.
        let mut agree = [[0.0; 6]; 6];
        agree[0][0] = 2.0;
        agree[1][1] = 2.0;
        assert!((krippendorff_alpha_ordinal(&agree).unwrap() - 1.0).abs() < 1e-12);
        // The two raters disagree completely: units (1,2) and (2,1). Coincidences o01 = o10 = 2,
        // marginals 2 and 2, δ²(0,1) = (2+2 − 2)² = 4: D_o = 2·2·4 = 16, D_e = 2·2·2·4/3.
        let mut disagree = [[0.0; 6]; 6];
        disagree[0][1] = 2.0;
        disagree[1][0] = 2.0;
        let alpha = krippendorff_alpha_ordinal(&disagree).unwrap();
        assert!((alpha - (1.0 - 16.0 / (32.0 / 3.0))).abs() < 1e-12, "{alpha}");
    }

    #[test]
    fn nominal_alpha_matches_hand_computation() {
        // Thumbs on three tasks by two raters: (1,1), (0,0), (1,0). Coincidences o00 = 2,
        // o11 = 2, o01 = o10 = 1; marginals 3 and 3, n = 6. D_o = 2 (off-diagonal),
        // D_e = (36 − 18)/5 = 3.6 → alpha = 1 − 2/3.6.
        let alpha = krippendorff_alpha_nominal(&[[2.0, 1.0], [1.0, 2.0]]).unwrap();
        assert!((alpha - (1.0 - 2.0 / 3.6)).abs() < 1e-12, "{alpha}");
        // Two values only: nominal and ordinal alpha are the same.
        let ordinal = krippendorff_alpha_ordinal(&[[2.0, 1.0], [1.0, 2.0]]).unwrap();
        assert!((alpha - ordinal).abs() < 1e-12);
        assert_eq!(krippendorff_alpha_nominal(&[[2.0, 0.0], [0.0, 0.0]]), None);
    }

    #[test]
    fn votes_are_bucketed_by_hour_then_by_day() {
        let hourly = votes_over_time(&[(HOUR_MS, 2), (3 * HOUR_MS, 1)]);
        assert_eq!(
            hourly,
            VotesOverTime { bucket_ms: HOUR_MS, buckets: vec![(HOUR_MS, 2), (2 * HOUR_MS, 0), (3 * HOUR_MS, 1)] }
        );
        let daily = votes_over_time(&[(0, 1), (DAY_MS * 3, 1), (DAY_MS * 3 + HOUR_MS, 2)]);
        assert_eq!(daily.bucket_ms, DAY_MS);
        assert_eq!(daily.buckets, vec![(0, 1), (DAY_MS, 0), (2 * DAY_MS, 0), (3 * DAY_MS, 3)]);
        assert!(votes_over_time(&[]).buckets.is_empty());
    }
}
