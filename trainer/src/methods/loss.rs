//! Preference losses on per-sequence scores: DPO (sigmoid, IPO, hinge, robust/cDPO) on
//! completion log-probs, the reference-free SimPO and ORPO losses on length-averaged
//! log-probs, the NLL term that mixes supervised fine-tuning in, and the Bradley–Terry
//! reward-model loss with margin and centering, and its listwise generalisation, the
//! Plackett–Luce loss on rankings (reward models and listwise DPO). Formulas follow TRL's `DPOTrainer.dpo_loss`,
//! `CPOTrainer.cpo_loss` (SimPO), `ORPOTrainer.odds_ratio_loss` and `RewardTrainer.compute_loss`.

use candle_core::{Result, Tensor};

use crate::train::config::DpoLossType;

/// `log σ(x) = −softplus(−x)`, computed without overflow for large |x|.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    // log σ(x) = min(x, 0) − log(1 + e^{−|x|})
    let min0 = x.minimum(0.0)?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    min0 - tail
}

/// Per-sequence summed log-probs of one batch of pairs.
pub struct PairLogps<'a> {
    pub chosen: &'a Tensor,
    pub rejected: &'a Tensor,
}

pub struct DpoOutput {
    /// Mean loss over the pairs (a scalar tensor on the graph).
    pub loss: Tensor,
    /// Per-pair loss, `[n]`.
    pub losses: Tensor,
    /// β·(π_c − ref_c), `[n]` (TRL's `rewards/chosen`).
    pub chosen_rewards: Tensor,
    /// β·(π_r − ref_r), `[n]`.
    pub rejected_rewards: Tensor,
}

/// DPO losses. `label_smoothing` `[n]` is the per-pair probability that the preference label
/// is flipped (0 = trust it; 0.5 = a tie); used by `sigmoid` and `robust` only, as in TRL.
/// `lengths` are completion token counts `(chosen, rejected)` as f32 `[n]`, used by IPO.
pub fn dpo_loss(
    kind: DpoLossType,
    beta: f64,
    policy: PairLogps<'_>,
    reference: PairLogps<'_>,
    lengths: (&Tensor, &Tensor),
    label_smoothing: &Tensor,
) -> Result<DpoOutput> {
    let chosen_ratio = (policy.chosen - reference.chosen)?;
    let rejected_ratio = (policy.rejected - reference.rejected)?;
    let logits = (&chosen_ratio - &rejected_ratio)?;
    let losses = match kind {
        DpoLossType::Sigmoid | DpoLossType::Robust => {
            let scaled = (&logits * beta)?;
            let agree = log_sigmoid(&scaled)?;
            let disagree = log_sigmoid(&scaled.neg()?)?;
            let keep = label_smoothing.affine(-1.0, 1.0)?;
            if kind == DpoLossType::Sigmoid {
                ((agree * keep)?.neg()? - (disagree * label_smoothing)?)?
            } else {
                let numerator = ((agree * keep)?.neg()? + (disagree * label_smoothing)?)?;
                numerator.broadcast_div(&label_smoothing.affine(-2.0, 1.0)?)?
            }
        }
        DpoLossType::Ipo => {
            let normalised = ((&chosen_ratio / lengths.0)? - (&rejected_ratio / lengths.1)?)?;
            (normalised - 1.0 / (2.0 * beta))?.sqr()?
        }
        DpoLossType::Hinge => (1.0 - (&logits * beta)?)?.relu()?,
        DpoLossType::Simpo | DpoLossType::Orpo => {
            candle_core::bail!("{kind:?} has no reference model: use reference_free_loss")
        }
    };
    Ok(DpoOutput {
        loss: losses.mean_all()?,
        chosen_rewards: (chosen_ratio.detach() * beta)?,
        rejected_rewards: (rejected_ratio.detach() * beta)?,
        losses,
    })
}

/// `log(1 − eˣ)` for x < 0 (log-probabilities); x is kept below −1e-6 so a completion the
/// model is certain of gives a large finite value instead of −∞.
fn log1m_exp(x: &Tensor) -> Result<Tensor> {
    (x.minimum(-1e-6)?.exp()?.neg()? + 1.0)?.log()
}

/// The reference-free preference losses on *length-averaged* completion log-probs
/// `policy` (sum / completion tokens, as TRL computes them for these losses):
/// - SimPO: `−(1−ε)·log σ(β·(π̄_c − π̄_r) − γ) − ε·log σ(−β·(π̄_c − π̄_r) + γ)`;
/// - ORPO: `−β · log σ(log odds_c − log odds_r)` with `log odds = π̄ − log(1 − e^π̄)`
///   (TRL's β is the paper's λ; ORPO's NLL term is added by the caller, see [`chosen_nll`]).
///
/// Rewards are `β·π̄` as in TRL.
pub fn reference_free_loss(
    kind: DpoLossType,
    beta: f64,
    simpo_gamma: f64,
    policy: PairLogps<'_>,
    label_smoothing: &Tensor,
) -> Result<DpoOutput> {
    let logits = (policy.chosen - policy.rejected)?;
    let losses = match kind {
        DpoLossType::Simpo => {
            let scaled = ((&logits * beta)? - simpo_gamma)?;
            let agree = log_sigmoid(&scaled)?;
            let disagree = log_sigmoid(&scaled.neg()?)?;
            ((agree * label_smoothing.affine(-1.0, 1.0)?)?.neg()? - (disagree * label_smoothing)?)?
        }
        DpoLossType::Orpo => {
            let log_odds = (logits - (log1m_exp(policy.chosen)? - log1m_exp(policy.rejected)?)?)?;
            (log_sigmoid(&log_odds)? * -beta)?
        }
        _ => candle_core::bail!("{kind:?} needs a reference model: use dpo_loss"),
    };
    Ok(DpoOutput {
        loss: losses.mean_all()?,
        chosen_rewards: (policy.chosen.detach() * beta)?,
        rejected_rewards: (policy.rejected.detach() * beta)?,
        losses,
    })
}

/// Negative log-likelihood of the chosen completions, the mean over all their tokens:
/// `−Σ logp_c / Σ len_c` (TRL's cross-entropy on the chosen half, as ORPO and CPO add it).
/// `chosen_sums` are summed completion log-probs, `chosen_lens` their token counts.
pub fn chosen_nll(chosen_sums: &Tensor, chosen_lens: &Tensor) -> Result<Tensor> {
    chosen_sums.sum_all()?.neg()?.broadcast_div(&chosen_lens.sum_all()?)
}

/// KTO (TRL's `KTOTrainer`, `loss_type="kto"`): with log-ratios `ρ = π − ref` of single
/// completions and the batch's KL estimate `z` (detached, ≥ 0),
/// desirable: `w_d · (1 − σ(β·(ρ − z)))`, undesirable: `w_u · (1 − σ(β·(z − ρ)))`; the loss is
/// the mean over all completions. `desirable` is 1/0 per completion. Returns the per-completion
/// losses' mean and the rewards `β·ρ`.
pub fn kto_loss(
    beta: f64,
    policy: &Tensor,
    reference: &Tensor,
    desirable: &Tensor,
    kl: f64,
    weights: (f64, f64),
) -> Result<(Tensor, Tensor)> {
    let ratio = (policy - reference)?;
    // 1 − σ(β(ρ − z)) = σ(−β(ρ − z)); 1 − σ(β(z − ρ)) = σ(β(ρ − z)). σ as exp(log σ), whose
    // pieces all carry gradients (candle-nn's fused sigmoid may not).
    let scaled = ((&ratio - kl)? * beta)?;
    let chosen = log_sigmoid(&scaled.neg()?)?.exp()?;
    let rejected = log_sigmoid(&scaled)?.exp()?;
    let undesirable = desirable.affine(-1.0, 1.0)?;
    let losses = ((chosen * (desirable * weights.0)?)? + (rejected * (undesirable * weights.1)?)?)?;
    Ok((losses.mean_all()?, (ratio.detach() * beta)?))
}

/// Bradley–Terry loss `−log σ(r_c − r_r − margin)`, mean over pairs.
///
/// `soft_label` `[n]` (optional) is the probability that *rejected* is actually better
/// (0.5 for a tie): the loss becomes the cross-entropy against that soft label.
/// `center_coef` adds TRL's reward centering `coef · mean((r_c + r_r)²)`.
pub fn bradley_terry_loss(
    chosen: &Tensor,
    rejected: &Tensor,
    margin: Option<&Tensor>,
    soft_label: Option<&Tensor>,
    center_coef: f64,
) -> Result<Tensor> {
    let mut diff = (chosen - rejected)?;
    if let Some(m) = margin {
        diff = (diff - m)?;
    }
    let mut losses = log_sigmoid(&diff)?.neg()?;
    if let Some(eps) = soft_label {
        let flipped = log_sigmoid(&diff.neg()?)?.neg()?;
        losses = ((losses * eps.affine(-1.0, 1.0)?)? + (flipped * eps)?)?;
    }
    let mut loss = losses.mean_all()?;
    if center_coef != 0.0 {
        let centering = (chosen + rejected)?.sqr()?.mean_all()?;
        loss = (loss + (centering * center_coef)?)?;
    }
    Ok(loss)
}

/// Plackett–Luce negative log-likelihood of one ranking: `scores` `[K]` (rewards, or DPO's
/// implicit rewards β·(π − ref)), `ranks[i]` the rank of response i (lower is better).
///
/// Without ties: `−Σ_k [s_(k) − log Σ_{j ≥ k} exp s_(j)]` over the responses in rank order, the
/// log-probability of drawing them best first (for K = 2 exactly the Bradley–Terry / DPO
/// sigmoid loss). Ties use Breslow's approximation: every member of a group of equal rank
/// is drawn against the same pool (the group and everything ranked below it), i.e. a tied
/// group G contributes `−Σ_{i∈G} s_i + |G| · log Σ_{j ≥ G} exp s_j`. A tie thus asks for equal
/// scores (the group's own term is smallest there) instead of being dropped; a ranking of all
/// ties carries only that. The loss is a sum over the ranking's groups, not a mean, so a
/// longer ranking — more information — weighs more.
pub fn plackett_luce_loss(scores: &Tensor, ranks: &[f64]) -> Result<Tensor> {
    let k = ranks.len();
    if scores.dims1()? != k {
        candle_core::bail!("{} scores for {k} ranks", scores.dims1()?);
    }
    let mut levels: Vec<f64> = ranks.to_vec();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let g = levels.len();
    // members[g][j]: response j has rank level g; pool[g][j]: j is still in the pool when
    // group g is drawn (ranked the same or worse).
    let mut members = vec![0f32; g * k];
    let mut pool = vec![0f32; g * k];
    for (gi, level) in levels.iter().enumerate() {
        for (j, rank) in ranks.iter().enumerate() {
            members[gi * k + j] = f32::from(u8::from(rank == level));
            pool[gi * k + j] = f32::from(u8::from(rank >= level));
        }
    }
    let device = scores.device();
    let dtype = scores.dtype();
    let members = Tensor::from_vec(members, (g, k), device)?.to_dtype(dtype)?;
    let sizes = members.sum_keepdim(1)?;
    let outside = Tensor::from_vec(pool, (g, k), device)?.to_dtype(dtype)?.affine(-1.0, 1.0)?;
    let rows = scores.unsqueeze(0)?.broadcast_as((g, k))?;
    // Out of the pool = a score far below any other; its exp underflows to 0 (and so does
    // its gradient).
    let pooled = (&rows + (outside * -1e9)?)?;
    let top = pooled.max_keepdim(1)?.detach();
    let log_pool = (pooled.broadcast_sub(&top)?.exp()?.sum_keepdim(1)?.log()? + top)?;
    let drawn = (&rows * &members)?.sum_keepdim(1)?;
    (drawn - (log_pool * sizes)?)?.sum_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn scalar(x: &Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn log_sigmoid_is_stable_at_extremes() {
        let out = log_sigmoid(&t(&[-200.0, 0.0, 200.0])).unwrap().to_vec1::<f32>().unwrap();
        assert!((out[0] + 200.0).abs() < 1e-3);
        assert!((out[1] + std::f32::consts::LN_2).abs() < 1e-6);
        assert!(out[2].abs() < 1e-6);
    }

    #[test]
    fn dpo_variants_match_hand_computed_values() {
        // Δ = (−1 − −2) − (−3 − −2.5) = 1.5; β = 0.5 → βΔ = 0.75.
        let (pc, pr, rc, rr) = (t(&[-1.0]), t(&[-3.0]), t(&[-2.0]), t(&[-2.5]));
        let lens = (t(&[2.0]), t(&[4.0]));
        let run = |kind, eps: f32| {
            let out = dpo_loss(
                kind,
                0.5,
                PairLogps { chosen: &pc, rejected: &pr },
                PairLogps { chosen: &rc, rejected: &rr },
                (&lens.0, &lens.1),
                &t(&[eps]),
            )
            .unwrap();
            scalar(&out.loss)
        };
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let expect_sigmoid = -(sig(0.75)).ln();
        assert!((run(DpoLossType::Sigmoid, 0.0) as f64 - expect_sigmoid).abs() < 1e-6);
        let eps = 0.2;
        let smoothed = -(1.0 - eps) * sig(0.75).ln() - eps * sig(-0.75).ln();
        assert!((run(DpoLossType::Sigmoid, 0.2) as f64 - smoothed).abs() < 1e-6);
        let robust = (-(1.0 - eps) * sig(0.75).ln() + eps * sig(-0.75).ln()) / (1.0 - 2.0 * eps);
        assert!((run(DpoLossType::Robust, 0.2) as f64 - robust).abs() < 1e-6);
        assert!((run(DpoLossType::Hinge, 0.0) - 0.25).abs() < 1e-6);
        // IPO: (1/2 − (−0.5)/4 − 1)² = (0.5 + 0.125 − 1)² = 0.140625.
        assert!((run(DpoLossType::Ipo, 0.0) - 0.140625).abs() < 1e-6);
    }

    #[test]
    fn reference_free_losses_match_hand_computed_values() {
        // Averaged log-probs −0.5 (chosen) and −1.5 (rejected); β = 2.
        let (c, r) = (t(&[-0.5]), t(&[-1.5]));
        let run = |kind, gamma, eps: f32| {
            let out =
                reference_free_loss(kind, 2.0, gamma, PairLogps { chosen: &c, rejected: &r }, &t(&[eps])).unwrap();
            scalar(&out.loss) as f64
        };
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        // SimPO: β·Δ − γ = 2·1 − 0.5 = 1.5.
        assert!((run(DpoLossType::Simpo, 0.5, 0.0) + sig(1.5).ln()).abs() < 1e-6);
        let smoothed = -0.9 * sig(1.5).ln() - 0.1 * sig(-1.5).ln();
        assert!((run(DpoLossType::Simpo, 0.5, 0.1) - smoothed).abs() < 1e-6);
        // ORPO: log odds −0.5 − ln(1 − e^−0.5) and −1.5 − ln(1 − e^−1.5).
        let odds = |x: f64| x - (1.0 - x.exp()).ln();
        let expect = -2.0 * sig(odds(-0.5) - odds(-1.5)).ln();
        assert!((run(DpoLossType::Orpo, 0.0, 0.0) - expect).abs() < 1e-5);
        // The NLL is a mean over tokens, not over sequences: (3 + 1) / (2 + 6).
        let nll = chosen_nll(&t(&[-3.0, -1.0]), &t(&[2.0, 6.0])).unwrap();
        assert!((scalar(&nll) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn kto_matches_hand_computed_values() {
        // ρ = (−1 − −2, −3 − −2.5) = (1, −0.5); z = 0.2; β = 0.5; weights 1 and 1.5.
        let (loss, rewards) =
            kto_loss(0.5, &t(&[-1.0, -3.0]), &t(&[-2.0, -2.5]), &t(&[1.0, 0.0]), 0.2, (1.0, 1.5)).unwrap();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let expect = ((1.0 - sig(0.5 * (1.0 - 0.2))) + 1.5 * (1.0 - sig(0.5 * (0.2 + 0.5)))) / 2.0;
        assert!((scalar(&loss) as f64 - expect).abs() < 1e-6);
        assert_eq!(rewards.to_vec1::<f32>().unwrap(), vec![0.5, -0.25]);
    }

    #[test]
    fn bradley_terry_margin_ties_and_centering() {
        let (c, r) = (t(&[2.0]), t(&[1.0]));
        let plain = scalar(&bradley_terry_loss(&c, &r, None, None, 0.0).unwrap());
        assert!((plain as f64 - (1.0 + (-1.0f64).exp()).ln()).abs() < 1e-6);
        let margin = scalar(&bradley_terry_loss(&c, &r, Some(&t(&[1.0])), None, 0.0).unwrap());
        assert!((margin - std::f32::consts::LN_2).abs() < 1e-6);
        // A tie is symmetric: swapping chosen and rejected does not change the loss.
        let tie = t(&[0.5]);
        let ab = scalar(&bradley_terry_loss(&c, &r, None, Some(&tie), 0.0).unwrap());
        let ba = scalar(&bradley_terry_loss(&r, &c, None, Some(&tie), 0.0).unwrap());
        assert!((ab - ba).abs() < 1e-6);
        let centered = scalar(&bradley_terry_loss(&c, &r, None, None, 0.01).unwrap());
        assert!((centered - plain - 0.09).abs() < 1e-6);
    }

    #[test]
    fn plackett_luce_reduces_to_bradley_terry_and_handles_ties() {
        let pl = |s: &[f32], r: &[f64]| scalar(&plackett_luce_loss(&t(s), r).unwrap()) as f64;
        let bt = scalar(&bradley_terry_loss(&t(&[2.0]), &t(&[0.5]), None, None, 0.0).unwrap()) as f64;
        assert!((pl(&[0.5, 2.0], &[2.0, 1.0]) - bt).abs() < 1e-6);
        // Three, no ties: −[(3 − lse(3,1,0)) + (1 − lse(1,0))].
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let expect = -((3.0 - lse(&[3.0, 1.0, 0.0])) + (1.0 - lse(&[1.0, 0.0])));
        assert!((pl(&[0.0, 3.0, 1.0], &[3.0, 1.0, 2.0]) - expect).abs() < 1e-5);
        // Tied best pair over a third: −[(3 + 1) − 2·lse(3,1,0)] − 0.
        let tied = -((3.0 + 1.0) - 2.0 * lse(&[3.0, 1.0, 0.0]));
        assert!((pl(&[3.0, 1.0, 0.0], &[1.0, 1.0, 2.0]) - tied).abs() < 1e-5);
        // Fractional ranks count by order only.
        assert!((pl(&[3.0, 1.0, 0.0], &[1.5, 1.5, 2.5]) - tied).abs() < 1e-5);
        // A tie is smallest at equal scores.
        assert!(pl(&[1.0, 1.0], &[1.0, 1.0]) < pl(&[1.5, 0.5], &[1.0, 1.0]));
    }
}
