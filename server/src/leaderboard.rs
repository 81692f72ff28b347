//! Model leaderboard: a Bradley–Terry fit of the votes with bootstrap 95% confidence
//! intervals, reported on the Elo-like scale Chatbot Arena uses.
//!
//! Models are keyed `model@model_version` (or the model name alone), so checkpoints of
//! one model are ranked against each other. A vote for `a` is a win of response a's model over response b's; `tie` and `both_bad`
//! count as half a win each. Votes between two responses of the same model are ignored.
//! The fit maximises the Bradley–Terry log-likelihood (Newton's method) with a very weak
//! Gaussian prior (λ = 1e-3) so a model that never won still gets a finite score.

use std::collections::BTreeMap;

use pairwise_api::campaigns::CampaignKind;
use pairwise_api::leaderboard::{Fit, Leaderboard, ModelScore};
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};

use crate::args;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::store::Db;
use crate::tallies;

pub(crate) const PRIOR: f64 = 1e-3;
/// Elo points per natural-log unit of strength: 400 / ln 10.
const ELO_PER_LOGIT: f64 = 400.0 / std::f64::consts::LN_10;
const ELO_BASE: f64 = 1000.0;

/// Outcome counts between two models `(i, j)` with i < j.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Matchup {
    pub i: usize,
    pub j: usize,
    pub i_wins: u64,
    pub j_wins: u64,
    pub ties: u64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The weak Gaussian prior's share of the log-posterior's gradient and Hessian at `theta`,
/// where each fit's Newton iteration starts adding its data.
pub(crate) fn prior_terms(theta: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let gradient = theta.iter().map(|t| -PRIOR * t).collect();
    let mut hessian = vec![vec![0.0; theta.len()]; theta.len()];
    for (i, row) in hessian.iter_mut().enumerate() {
        row[i] = -PRIOR;
    }
    (gradient, hessian)
}

/// One Newton step `theta -= hessian⁻¹ gradient` of a log-likelihood ascent (the Hessian
/// carries the sign); true once the step is too small to matter.
pub(crate) fn newton_step(theta: &mut [f64], hessian: Vec<Vec<f64>>, gradient: Vec<f64>) -> bool {
    let step = solve(hessian, gradient);
    let mut largest = 0.0f64;
    for (t, s) in theta.iter_mut().zip(&step) {
        *t -= s;
        largest = largest.max(s.abs());
    }
    largest < 1e-10
}

/// Strengths are identified up to a constant: report them with mean zero.
pub(crate) fn centred(theta: Vec<f64>) -> Vec<f64> {
    let mean = theta.iter().sum::<f64>() / theta.len().max(1) as f64;
    theta.iter().map(|t| t - mean).collect()
}

/// Solves `a x = b` for a small dense symmetric system (Gaussian elimination, pivoting).
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (pivot_rows, rest) = a.split_at_mut(col + 1);
        let pivot_row = &pivot_rows[col];
        for (offset, row) in rest.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            for (value, pivot_value) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= factor * pivot_value;
            }
            b[col + 1 + offset] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

/// Maximum-a-posteriori Bradley–Terry strengths (natural-log scale, mean zero).
pub fn fit_bradley_terry(models: usize, matchups: &[Matchup]) -> Vec<f64> {
    let mut theta = vec![0.0; models];
    for _ in 0..100 {
        let (mut gradient, mut hessian) = prior_terms(&theta);
        for m in matchups {
            let games = (m.i_wins + m.j_wins + m.ties) as f64;
            let score_i = m.i_wins as f64 + 0.5 * m.ties as f64;
            let p = sigmoid(theta[m.i] - theta[m.j]);
            let residual = score_i - games * p;
            gradient[m.i] += residual;
            gradient[m.j] -= residual;
            let w = games * p * (1.0 - p);
            hessian[m.i][m.i] -= w;
            hessian[m.j][m.j] -= w;
            hessian[m.i][m.j] += w;
            hessian[m.j][m.i] += w;
        }
        if newton_step(&mut theta, hessian, gradient) {
            break;
        }
    }
    centred(theta)
}

pub(crate) fn to_elo(theta: f64) -> f64 {
    ELO_BASE + ELO_PER_LOGIT * theta
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Fits the leaderboard and its bootstrap intervals (battles resampled with replacement,
/// drawn as one multinomial over the outcome cells).
pub fn leaderboard(campaign_id: i64, names: &[String], matchups: &[Matchup], rounds: usize, seed: u64) -> Leaderboard {
    let theta = fit_bradley_terry(names.len(), matchups);
    let cells: Vec<(usize, u64)> = matchups
        .iter()
        .enumerate()
        .flat_map(|(m, x)| [(m * 3, x.i_wins), (m * 3 + 1, x.j_wins), (m * 3 + 2, x.ties)])
        .collect();
    let battles: u64 = cells.iter().map(|(_, n)| n).sum();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); names.len()];
    for _ in 0..rounds {
        let mut resampled: Vec<Matchup> =
            matchups.iter().map(|m| Matchup { i_wins: 0, j_wins: 0, ties: 0, ..*m }).collect();
        let mut remaining = battles;
        let mut remaining_mass = battles as f64;
        for &(cell, count) in &cells {
            if remaining == 0 || count == 0 {
                remaining_mass -= count as f64;
                continue;
            }
            let p = (count as f64 / remaining_mass).clamp(0.0, 1.0);
            let drawn = Binomial::new(remaining, p).map(|b| b.sample(&mut rng)).unwrap_or(remaining);
            remaining -= drawn;
            remaining_mass -= count as f64;
            let m = &mut resampled[cell / 3];
            match cell % 3 {
                0 => m.i_wins = drawn,
                1 => m.j_wins = drawn,
                _ => m.ties = drawn,
            }
        }
        for (model, t) in fit_bradley_terry(names.len(), &resampled).into_iter().enumerate() {
            samples[model].push(to_elo(t));
        }
    }
    let mut models: Vec<ModelScore> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let mut s = samples[k].clone();
            s.sort_by(f64::total_cmp);
            let (mut wins, mut losses, mut ties) = (0, 0, 0);
            for m in matchups {
                if m.i == k {
                    wins += m.i_wins;
                    losses += m.j_wins;
                    ties += m.ties;
                } else if m.j == k {
                    wins += m.j_wins;
                    losses += m.i_wins;
                    ties += m.ties;
                }
            }
            let score = to_elo(theta[k]);
            let (ci_low, ci_high) =
                if s.is_empty() { (score, score) } else { (percentile(&s, 0.025), percentile(&s, 0.975)) };
            ModelScore { model: name.clone(), score, ci_low, ci_high, wins, losses, ties }
        })
        .collect();
    models.sort_by(|a, b| b.score.total_cmp(&a.score));
    Leaderboard { campaign_id, fit: Fit::BradleyTerry, battles, bootstrap_rounds: rounds, models }
}

/// The choices on one aspect between two models over regular pairs, as `model_matchups`
/// holds them for the overall choice.
const ASPECT_MATCHUPS_SQL: &str = "SELECT COALESCE(ra.model || '@' || ra.model_version, ra.model) AS model_a, \
     COALESCE(rb.model || '@' || rb.model_version, rb.model) AS model_b, av.choice, COUNT(*) AS n \
     FROM aspect_votes av JOIN pairs p ON p.id = av.pair_id AND p.is_gold = 0 \
     JOIN responses ra ON ra.id = p.response_a_id JOIN responses rb ON rb.id = p.response_b_id \
     WHERE av.campaign_id = $1 AND av.aspect = $2 \
     GROUP BY COALESCE(ra.model || '@' || ra.model_version, ra.model), \
     COALESCE(rb.model || '@' || rb.model_version, rb.model), av.choice";

/// The models ranked by the overall choice, or by the choices on `aspect`; a ranking
/// campaign's by its rankings (`plackett_luce`), a thumbs or scale campaign's by mean rating.
pub async fn campaign_leaderboard(
    db: &Db,
    campaign_id: i64,
    aspect: Option<&str>,
    rounds: usize,
    seed: u64,
) -> ApiResult<Leaderboard> {
    let campaign = get_campaign(db, campaign_id, 0).await?;
    if campaign.kind.single_response() {
        if let Some(aspect) = aspect {
            return Err(ApiError::bad_request(format!(
                "aspect: `{aspect}`: a {} campaign has no aspects",
                campaign.kind.as_str()
            )));
        }
        return crate::rating::rating_leaderboard(db, &campaign, rounds, seed).await;
    }
    if campaign.kind == CampaignKind::Ranking {
        if let Some(aspect) = aspect {
            return Err(ApiError::bad_request(format!("aspect: `{aspect}`: a ranking campaign has no aspects")));
        }
        return crate::plackett_luce::ranking_leaderboard(db, campaign_id, rounds, seed).await;
    }
    let rows = match aspect {
        None => {
            tallies::bring_up_to_date(db, campaign_id).await?;
            db.fetch_all(
                "SELECT model_a, model_b, choice, votes AS n FROM model_matchups WHERE campaign_id = $1",
                args![campaign_id],
            )
            .await?
        }
        Some(aspect) => {
            if !campaign.aspects.iter().any(|a| a.name == aspect) {
                return Err(ApiError::bad_request(format!("aspect: `{aspect}` is not an aspect of this campaign")));
            }
            db.fetch_all(ASPECT_MATCHUPS_SQL, args![campaign_id, aspect]).await?
        }
    };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut tallies: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for row in rows {
        let (a, b) = (row.text("model_a")?, row.text("model_b")?);
        if a == b {
            continue;
        }
        let choice = row.text("choice")?;
        let n = row.int("n")? as u64;
        index.entry(a.clone()).or_default();
        index.entry(b.clone()).or_default();
        // Key each matchup by the models in name order.
        let (key, a_first) = if a < b { ((a, b), true) } else { ((b, a), false) };
        let t = tallies.entry(key).or_default();
        match (choice.as_str(), a_first) {
            ("a", true) | ("b", false) => t.0 += n,
            ("b", true) | ("a", false) => t.1 += n,
            _ => t.2 += n,
        }
    }
    let names: Vec<String> = index.keys().cloned().collect();
    for (k, name) in names.iter().enumerate() {
        index.insert(name.clone(), k);
    }
    let matchups: Vec<Matchup> = tallies
        .into_iter()
        .map(|((a, b), (i_wins, j_wins, ties))| Matchup { i: index[&a], j: index[&b], i_wins, j_wins, ties })
        .collect();
    Ok(leaderboard(campaign_id, &names, &matchups, rounds, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_models_recover_log_odds() {
        // 7 wins, 3 losses, 2 ties → scores 8 : 4, so θ_0 − θ_1 = ln 2.
        let m = [Matchup { i: 0, j: 1, i_wins: 7, j_wins: 3, ties: 2 }];
        let theta = fit_bradley_terry(2, &m);
        assert!((theta[0] - theta[1] - 2f64.ln()).abs() < 1e-3, "{theta:?}");
        assert!((theta[0] + theta[1]).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_interval_contains_the_estimate_and_is_seeded() {
        let names = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        let m = [
            Matchup { i: 0, j: 1, i_wins: 30, j_wins: 10, ties: 5 },
            Matchup { i: 1, j: 2, i_wins: 20, j_wins: 20, ties: 0 },
            Matchup { i: 0, j: 2, i_wins: 25, j_wins: 5, ties: 2 },
        ];
        let board = leaderboard(1, &names, &m, 100, 7);
        assert_eq!(board.models[0].model, "x");
        for s in &board.models {
            assert!(s.ci_low <= s.score && s.score <= s.ci_high, "{s:?}");
        }
        assert_eq!(board, leaderboard(1, &names, &m, 100, 7));
        assert_eq!(board.battles, 117);
    }
}
