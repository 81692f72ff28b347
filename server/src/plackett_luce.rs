//! The leaderboard of a ranking campaign: a Plackett–Luce fit of the raters' rankings of the
//! models behind the responses, with bootstrap 95% intervals, on the same Elo-like scale as
//! the Bradley–Terry leaderboard of pairs.
//!
//! A ranking is read best first as stages: at each stage the responses ranked best among
//! those left are chosen from those left. Ties are handled as Breslow's approximation does
//! for tied events: each of the tied responses is chosen from the same set, `log w_i − log Σ
//! w_j` for each (so a tie at the bottom still says "equal"). The fit maximises that
//! log-likelihood plus the same very weak Gaussian prior as Bradley–Terry (Newton's method).
//! Rankings are gathered as distinct patterns with counts while the votes stream by, and the
//! bootstrap resamples the rankings as one multinomial over the patterns.
//!
//! `wins`/`losses`/`ties` count the pairwise orders the rankings imply between responses of
//! different models; `battles` is the number of rankings.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use pairwise_api::leaderboard::{Fit, Leaderboard, ModelScore};
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};

use crate::args;
use crate::error::ApiResult;
use crate::leaderboard::{centred, newton_step, percentile, prior_terms, to_elo};
use crate::store::Db;

/// One ranking over model indices: the groups of equal rank, best first.
pub type Pattern = Vec<Vec<usize>>;

/// Maximum-a-posteriori Plackett–Luce strengths (natural-log scale, mean zero) of `models`
/// from rankings with their counts.
pub fn fit_plackett_luce(models: usize, rankings: &[(Pattern, u64)]) -> Vec<f64> {
    let mut theta = vec![0.0; models];
    for _ in 0..100 {
        let (mut gradient, mut hessian) = prior_terms(&theta);
        for (groups, count) in rankings {
            let count = *count as f64;
            let mut remaining: Vec<usize> = groups.iter().flatten().copied().collect();
            for group in groups {
                if remaining.len() < 2 {
                    break;
                }
                // Probabilities of each model among those left (a model may hold several).
                let total: f64 = remaining.iter().map(|&m| theta[m].exp()).sum();
                let mut p = vec![0.0; models];
                for &m in &remaining {
                    p[m] += theta[m].exp() / total;
                }
                let chosen = group.len() as f64 * count;
                for &m in group {
                    gradient[m] += count;
                }
                for a in 0..models {
                    if p[a] == 0.0 {
                        continue;
                    }
                    gradient[a] -= chosen * p[a];
                    hessian[a][a] -= chosen * p[a];
                    for b in 0..models {
                        hessian[a][b] += chosen * p[a] * p[b];
                    }
                }
                remaining.retain(|m| !group.contains(m));
            }
        }
        if newton_step(&mut theta, hessian, gradient) {
            break;
        }
    }
    centred(theta)
}

/// Groups of equal rank, best first, from `(rank, model)` of one vote.
pub fn pattern(mut ranked: Vec<(i64, usize)>) -> Pattern {
    ranked.sort_unstable();
    let mut groups: Pattern = Vec::new();
    let mut last = None;
    for (rank, model) in ranked {
        if last == Some(rank) {
            groups.last_mut().expect("a group was started").push(model);
        } else {
            groups.push(vec![model]);
            last = Some(rank);
        }
    }
    for group in &mut groups {
        group.sort_unstable();
    }
    groups
}

/// Fits the leaderboard and its bootstrap intervals.
pub fn leaderboard(
    campaign_id: i64,
    names: &[String],
    rankings: &[(Pattern, u64)],
    rounds: usize,
    seed: u64,
) -> Leaderboard {
    let theta = fit_plackett_luce(names.len(), rankings);
    let total: u64 = rankings.iter().map(|(_, n)| n).sum();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); names.len()];
    for _ in 0..rounds {
        let mut resampled = Vec::with_capacity(rankings.len());
        let (mut remaining, mut remaining_mass) = (total, total as f64);
        for (groups, count) in rankings {
            if remaining == 0 {
                break;
            }
            let p = (*count as f64 / remaining_mass).clamp(0.0, 1.0);
            let drawn = Binomial::new(remaining, p).map(|b| b.sample(&mut rng)).unwrap_or(remaining);
            remaining -= drawn;
            remaining_mass -= *count as f64;
            if drawn > 0 {
                resampled.push((groups.clone(), drawn));
            }
        }
        for (model, t) in fit_plackett_luce(names.len(), &resampled).into_iter().enumerate() {
            samples[model].push(to_elo(t));
        }
    }
    let mut record = vec![(0u64, 0u64, 0u64); names.len()];
    for (groups, count) in rankings {
        for (g, group) in groups.iter().enumerate() {
            for &m in group {
                record[m].2 += count * group.iter().filter(|&&o| o != m).count() as u64;
                for worse in groups[g + 1..].iter().flatten().filter(|&&o| o != m) {
                    record[m].0 += count;
                    record[*worse].1 += count;
                }
            }
        }
    }
    let mut models: Vec<ModelScore> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let mut s = samples[k].clone();
            s.sort_by(f64::total_cmp);
            let score = to_elo(theta[k]);
            let (ci_low, ci_high) =
                if s.is_empty() { (score, score) } else { (percentile(&s, 0.025), percentile(&s, 0.975)) };
            let (wins, losses, ties) = record[k];
            ModelScore { model: name.clone(), score, ci_low, ci_high, wins, losses, ties }
        })
        .collect();
    models.sort_by(|a, b| b.score.total_cmp(&a.score));
    Leaderboard { campaign_id, fit: Fit::PlackettLuce, battles: total, bootstrap_rounds: rounds, models }
}

/// Every rank of the campaign's regular ranking votes with the model of its response.
const RANKED_MODELS_SQL: &str = "SELECT rv.comparison_id, rv.rank, \
     COALESCE(r.model || '@' || r.model_version, r.model) AS model FROM ranking_votes rv \
     JOIN ranking_responses rr ON rr.pair_id = rv.pair_id AND rr.position = rv.position \
     JOIN responses r ON r.id = rr.response_id JOIN pairs p ON p.id = rv.pair_id AND p.is_gold = 0 \
     WHERE rv.campaign_id = $1 ORDER BY rv.comparison_id";

/// The models of a ranking campaign ranked by its votes (streamed; what is kept is one count
/// per distinct ranking).
pub async fn ranking_leaderboard(db: &Db, campaign_id: i64, rounds: usize, seed: u64) -> ApiResult<Leaderboard> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut counts: BTreeMap<Pattern, u64> = BTreeMap::new();
    let mut vote: Vec<(i64, usize)> = Vec::new();
    let mut current = None;
    let mut rows = db.stream(RANKED_MODELS_SQL, args![campaign_id]);
    while let Some(row) = rows.try_next().await? {
        let id = row.int("comparison_id")?;
        if current != Some(id) && !vote.is_empty() {
            *counts.entry(pattern(std::mem::take(&mut vote))).or_default() += 1;
        }
        current = Some(id);
        let next = index.len();
        let model = *index.entry(row.text("model")?).or_insert(next);
        vote.push((row.int("rank")?, model));
    }
    if !vote.is_empty() {
        *counts.entry(pattern(vote)).or_default() += 1;
    }
    let mut names = vec![String::new(); index.len()];
    for (name, &i) in &index {
        names[i] = name.clone();
    }
    let rankings: Vec<(Pattern, u64)> = counts.into_iter().collect();
    Ok(leaderboard(campaign_id, &names, &rankings, rounds, seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderboard::PRIOR;

    #[test]
    fn two_models_reduce_to_bradley_terry() {
        // With K = 2 and no ties Plackett–Luce is Bradley–Terry: 6 wins to 2 → θ₀ − θ₁ = ln 3.
        let rankings = vec![(vec![vec![0], vec![1]], 6), (vec![vec![1], vec![0]], 2)];
        let theta = fit_plackett_luce(2, &rankings);
        assert!((theta[0] - theta[1] - 3f64.ln()).abs() < 1e-3, "{theta:?}");
    }

    #[test]
    fn full_rankings_recover_the_order_and_ties_pull_together() {
        let rankings = vec![
            (vec![vec![0], vec![1], vec![2]], 10),
            (vec![vec![1], vec![0], vec![2]], 4),
            (vec![vec![0], vec![2], vec![1]], 3),
        ];
        let theta = fit_plackett_luce(3, &rankings);
        assert!(theta[0] > theta[1] && theta[1] > theta[2], "{theta:?}");
        // Adding ties between 0 and 2 moves them closer.
        let mut tied = rankings.clone();
        tied.push((vec![vec![0, 2], vec![1]], 20));
        let closer = fit_plackett_luce(3, &tied);
        assert!((closer[0] - closer[2]).abs() < (theta[0] - theta[2]).abs(), "{closer:?}");
    }

    #[test]
    fn likelihood_is_maximised() {
        // The fitted θ has zero gradient: nudging any model lowers the log-likelihood.
        let rankings = vec![(vec![vec![0], vec![1, 2]], 3), (vec![vec![2], vec![0], vec![1]], 2)];
        let log_likelihood = |theta: &[f64]| -> f64 {
            let mut total = -PRIOR / 2.0 * theta.iter().map(|t| t * t).sum::<f64>();
            for (groups, count) in &rankings {
                let mut remaining: Vec<usize> = groups.iter().flatten().copied().collect();
                for group in groups {
                    if remaining.len() < 2 {
                        break;
                    }
                    let log_sum = remaining.iter().map(|&m| theta[m].exp()).sum::<f64>().ln();
                    total += *count as f64 * group.iter().map(|&m| theta[m] - log_sum).sum::<f64>();
                    remaining.retain(|m| !group.contains(m));
                }
            }
            total
        };
        let theta = fit_plackett_luce(3, &rankings);
        let best = log_likelihood(&theta);
        for m in 0..3 {
            for delta in [-1e-3, 1e-3] {
                let mut nudged = theta.clone();
                nudged[m] += delta;
                assert!(log_likelihood(&nudged) < best, "model {m}, delta {delta}");
            }
        }
    }

    #[test]
    fn patterns_group_equal_ranks_best_first() {
        assert_eq!(pattern(vec![(3, 2), (1, 0), (1, 1)]), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn records_count_implied_orders() {
        let names = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        let board = leaderboard(1, &names, &[(vec![vec![0], vec![1, 2]], 2)], 20, 3);
        let x = board.models.iter().find(|m| m.model == "x").unwrap();
        let y = board.models.iter().find(|m| m.model == "y").unwrap();
        assert_eq!((x.wins, x.losses, x.ties), (4, 0, 0));
        assert_eq!((y.wins, y.losses, y.ties), (0, 2, 2));
        assert_eq!(board.battles, 2);
    }
}
