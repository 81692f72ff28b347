//! Thumbs and scale campaigns on the vote path: a single-response task's rating, checked
//! against the campaign's scale and written in the vote's own transaction.
//!
//! A single-response task is a `pairs` row without a response b (migration 0010), so leases,
//! overlap, skips and tallies treat it as a pair; it is never shown swapped. The vote's
//! `comparisons.choice` is `a` (the vote is about response a, the only one) and its rating
//! is in `rating_votes`: thumbs 1 (up) or 0 (down), or 1-5 on the scale.
//!
//! The leaderboard of such a campaign is each model's mean rating, with a bootstrap interval
//! from its ratings counted per value (resampled as one multinomial per model).

use std::collections::BTreeMap;

use pairwise_api::campaigns::{Campaign, CampaignKind};
use pairwise_api::leaderboard::{Fit, Leaderboard, ModelScore};
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};

use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::leaderboard::percentile;
use crate::store::{Db, Store};

/// What the rating field must hold on a campaign of `kind`, for error messages.
fn expected(kind: CampaignKind) -> &'static str {
    match kind {
        CampaignKind::Thumbs => "1 (thumbs up) or 0 (thumbs down)",
        _ => "a whole number from 1 to 5 (5 = best)",
    }
}

/// Checks a vote's rating against the campaign's kind: required on thumbs and scale
/// campaigns, within their scale, and refused elsewhere.
pub fn check_rating(kind: CampaignKind, rating: Option<i64>) -> ApiResult<()> {
    match (kind.rating_range(), rating) {
        (Some(_), None) => Err(ApiError::bad_request(format!(
            "rating: required; this campaign rates one response at a time ({})",
            expected(kind)
        ))),
        (Some((range, _)), Some(rating)) if !range.contains(&rating) => {
            Err(ApiError::bad_request(format!("rating: {rating} is not {}", expected(kind))))
        }
        (None, Some(_)) => Err(ApiError::bad_request(match kind {
            CampaignKind::Ranking => "rating: this campaign ranks all of a task's responses (send ranks)",
            _ => "rating: this campaign asks for a choice between two responses, not a rating",
        })),
        _ => Ok(()),
    }
}

/// Stores a new vote's rating after checking it against its campaign.
pub(crate) async fn store_rating(tx: &mut dyn Store, vote_id: i64, rating: i64) -> ApiResult<()> {
    let vote = tx
        .fetch_one(
            "SELECT c.campaign_id, c.pair_id, k.feedback FROM comparisons c JOIN campaigns k ON k.id = c.campaign_id \
             WHERE c.id = $1",
            args![vote_id],
        )
        .await?;
    let feedback = vote.text("feedback")?;
    let kind = CampaignKind::parse(&feedback).unwrap_or(CampaignKind::Pairwise);
    check_rating(kind, Some(rating))?;
    tx.execute(
        "INSERT INTO rating_votes (comparison_id, campaign_id, pair_id, rating) VALUES ($1, $2, $3, $4)",
        args![vote_id, vote.int("campaign_id")?, vote.int("pair_id")?, rating],
    )
    .await?;
    Ok(())
}

/// Ratings of regular tasks per model (`model@version`, as the other leaderboards name them).
const MODEL_RATINGS_SQL: &str = "SELECT COALESCE(r.model || '@' || r.model_version, r.model) AS model, rv.rating, \
     COUNT(*) AS n FROM rating_votes rv JOIN pairs p ON p.id = rv.pair_id AND p.is_gold = 0 \
     JOIN responses r ON r.id = p.response_a_id WHERE rv.campaign_id = $1 \
     GROUP BY COALESCE(r.model || '@' || r.model_version, r.model), rv.rating";

/// The models of a thumbs or scale campaign by mean rating, best first.
pub async fn rating_leaderboard(db: &Db, campaign: &Campaign, rounds: usize, seed: u64) -> ApiResult<Leaderboard> {
    let (_, middle) = campaign.kind.rating_range().ok_or_else(|| anyhow::anyhow!("not a rating campaign"))?;
    let mut counts: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for row in db.fetch_all(MODEL_RATINGS_SQL, args![campaign.id]).await? {
        counts.entry(row.text("model")?).or_default().push((row.int("rating")?, row.int("n")? as u64));
    }
    Ok(mean_rating_leaderboard(campaign.id, &counts, middle, rounds, seed))
}

/// Each model's mean rating and a 95% bootstrap interval (its ratings resampled with
/// replacement, `rounds` times). `counts`: per model, `(rating, votes)`.
pub fn mean_rating_leaderboard(
    campaign_id: i64,
    counts: &BTreeMap<String, Vec<(i64, u64)>>,
    middle: f64,
    rounds: usize,
    seed: u64,
) -> Leaderboard {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean = |cells: &[(i64, u64)]| {
        let n: u64 = cells.iter().map(|(_, k)| k).sum();
        cells.iter().map(|&(rating, k)| rating as f64 * k as f64).sum::<f64>() / n.max(1) as f64
    };
    let mut models: Vec<ModelScore> = counts
        .iter()
        .map(|(model, cells)| {
            let n: u64 = cells.iter().map(|(_, k)| k).sum();
            let mut samples = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let (mut remaining, mut mass) = (n, n as f64);
                let mut drawn_cells = Vec::with_capacity(cells.len());
                for &(rating, k) in cells {
                    let p = if mass > 0.0 { (k as f64 / mass).clamp(0.0, 1.0) } else { 0.0 };
                    let drawn = Binomial::new(remaining, p).map(|b| b.sample(&mut rng)).unwrap_or(remaining);
                    remaining -= drawn;
                    mass -= k as f64;
                    drawn_cells.push((rating, drawn));
                }
                samples.push(mean(&drawn_cells));
            }
            samples.sort_by(f64::total_cmp);
            let score = mean(cells);
            let (ci_low, ci_high) = if samples.is_empty() {
                (score, score)
            } else {
                (percentile(&samples, 0.025), percentile(&samples, 0.975))
            };
            let count = |keep: fn(f64, f64) -> bool| {
                cells.iter().filter(|&&(rating, _)| keep(rating as f64, middle)).map(|(_, k)| k).sum()
            };
            ModelScore {
                model: model.clone(),
                score,
                ci_low,
                ci_high,
                wins: count(|rating, middle| rating > middle),
                losses: count(|rating, middle| rating < middle),
                ties: count(|rating, middle| rating == middle),
            }
        })
        .collect();
    models.sort_by(|a, b| b.score.total_cmp(&a.score));
    let battles = counts.values().flatten().map(|(_, k)| k).sum();
    Leaderboard { campaign_id, fit: Fit::MeanRating, battles, bootstrap_rounds: rounds, models }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_are_checked_against_the_scale() {
        assert!(check_rating(CampaignKind::Thumbs, Some(1)).is_ok());
        assert!(check_rating(CampaignKind::Thumbs, Some(0)).is_ok());
        assert!(check_rating(CampaignKind::Thumbs, Some(2)).is_err());
        assert!(check_rating(CampaignKind::Scale, Some(0)).is_err());
        assert!(check_rating(CampaignKind::Scale, Some(5)).is_ok());
        assert!(check_rating(CampaignKind::Scale, None).is_err());
        assert!(check_rating(CampaignKind::Pairwise, Some(1)).is_err());
        assert!(check_rating(CampaignKind::Pairwise, None).is_ok());
    }

    #[test]
    fn models_are_ranked_by_mean_rating_with_seeded_intervals() {
        let counts = BTreeMap::from([
            ("good".to_string(), vec![(4, 6), (5, 4)]),
            ("poor".to_string(), vec![(1, 5), (2, 3), (3, 2)]),
        ]);
        let board = mean_rating_leaderboard(1, &counts, 3.0, 200, 7);
        assert_eq!(board.models[0].model, "good");
        assert!((board.models[0].score - 4.4).abs() < 1e-12);
        assert!((board.models[1].score - 1.7).abs() < 1e-12);
        let poor = &board.models[1];
        assert_eq!((poor.wins, poor.losses, poor.ties), (0, 8, 2));
        assert!(poor.ci_low <= poor.score && poor.score <= poor.ci_high && poor.ci_low < poor.ci_high);
        assert_eq!(board, mean_rating_leaderboard(1, &counts, 3.0, 200, 7));
        assert_eq!(board.battles, 20);
    }
}
