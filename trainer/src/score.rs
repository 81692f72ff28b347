//! Evaluating a model on preference pairs without training (`pairwise-train score`):
//! policy and reference log-probs, the DPO/IPO losses they imply and, with a reward head,
//! Bradley–Terry rewards. Also the batched log-prob/reward passes the trainers reuse.

use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;

use crate::batch::{SequenceBatch, TokenizedSequence};
use crate::data::TokenizedPair;
use crate::model::{ForwardCtx, LlamaModel, completion_log_probs, last_token_rewards};

/// Summed completion log-probs of `seqs`, `batch_size` sequences per forward pass.
pub fn sequence_log_probs(
    model: &LlamaModel,
    seqs: &[TokenizedSequence],
    pad_id: u32,
    adapters: bool,
    batch_size: usize,
) -> anyhow::Result<Vec<f32>> {
    in_batches(model, seqs, pad_id, batch_size, |batch| completion_log_probs(model, batch, &ForwardCtx::eval(adapters)))
}

/// Scalar rewards `score · h_last` of `seqs`.
pub fn sequence_rewards(
    model: &LlamaModel,
    seqs: &[TokenizedSequence],
    pad_id: u32,
    score: &Tensor,
    adapters: bool,
    batch_size: usize,
) -> anyhow::Result<Vec<f32>> {
    in_batches(model, seqs, pad_id, batch_size, |batch| {
        last_token_rewards(model, batch, score, &ForwardCtx::eval(adapters))
    })
}

/// Runs `per_batch` (one value per sequence) over `seqs`, `batch_size` at a time; batches run
/// concurrently on rayon's pool and come back in order.
fn in_batches(
    model: &LlamaModel,
    seqs: &[TokenizedSequence],
    pad_id: u32,
    batch_size: usize,
    per_batch: impl Fn(&SequenceBatch) -> candle_core::Result<Tensor> + Sync,
) -> anyhow::Result<Vec<f32>> {
    let batches: Vec<anyhow::Result<Vec<f32>>> = seqs
        .par_chunks(batch_size.max(1))
        .map(|chunk| {
            let batch = SequenceBatch::new(chunk, pad_id, &model.config, model.device())?;
            Ok(per_batch(&batch)?.to_vec1::<f32>()?)
        })
        .collect();
    let mut out = Vec::with_capacity(seqs.len());
    for values in batches {
        out.extend(values?);
    }
    Ok(out)
}

/// One output line of `pairwise-train score`.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRecord {
    pub index: usize,
    pub chosen_logp: f64,
    pub rejected_logp: f64,
    pub ref_chosen_logp: f64,
    pub ref_rejected_logp: f64,
    pub dpo_sigmoid: f64,
    pub ipo: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_chosen: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_rejected: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bt_loss: Option<f64>,
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Scores pairs: policy = model with adapters, reference = model without. `score_head`
/// (`[1, hidden]`) adds rewards from the policy's final hidden state at the last token.
/// `ipo` is TRL's length-normalised IPO loss.
pub fn score_pairs(
    model: &LlamaModel,
    pairs: &[TokenizedPair],
    pad_id: u32,
    beta: f64,
    score_head: Option<&Tensor>,
    batch_size: usize,
) -> anyhow::Result<Vec<ScoreRecord>> {
    let seqs: Vec<TokenizedSequence> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let policy = sequence_log_probs(model, &seqs, pad_id, true, batch_size)?;
    let reference = sequence_log_probs(model, &seqs, pad_id, false, batch_size)?;
    let rewards = score_head.map(|head| sequence_rewards(model, &seqs, pad_id, head, true, batch_size)).transpose()?;
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let (pc, pr) = (policy[2 * i] as f64, policy[2 * i + 1] as f64);
            let (rc, rr) = (reference[2 * i] as f64, reference[2 * i + 1] as f64);
            let logits = (pc - rc) - (pr - rr);
            let normalised =
                (pc - rc) / pair.chosen.completion_len() as f64 - (pr - rr) / pair.rejected.completion_len() as f64;
            let reward = rewards.as_ref().map(|r| (r[2 * i] as f64, r[2 * i + 1] as f64));
            ScoreRecord {
                index: i,
                chosen_logp: pc,
                rejected_logp: pr,
                ref_chosen_logp: rc,
                ref_rejected_logp: rr,
                dpo_sigmoid: softplus(-beta * logits),
                ipo: (normalised - 1.0 / (2.0 * beta)).powi(2),
                reward_chosen: reward.map(|r| r.0),
                reward_rejected: reward.map(|r| r.1),
                bt_loss: reward.map(|(c, r)| softplus(r - c)),
            }
        })
        .collect())
}

/// Aggregate figures printed after scoring.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub pairs: usize,
    /// Share of pairs where the implicit DPO reward prefers chosen.
    pub implicit_reward_accuracy: f64,
    pub mean_dpo_sigmoid: f64,
    pub mean_ipo: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_bt_loss: Option<f64>,
}

pub fn summarize(records: &[ScoreRecord]) -> ScoreSummary {
    let n = records.len().max(1) as f64;
    let mean = |f: &dyn Fn(&ScoreRecord) -> f64| records.iter().map(f).sum::<f64>() / n;
    let has_rewards = records.first().is_some_and(|r| r.bt_loss.is_some());
    ScoreSummary {
        pairs: records.len(),
        implicit_reward_accuracy: mean(&|r| {
            let margin = (r.chosen_logp - r.ref_chosen_logp) - (r.rejected_logp - r.ref_rejected_logp);
            f64::from(u8::from(margin > 0.0))
        }),
        mean_dpo_sigmoid: mean(&|r| r.dpo_sigmoid),
        mean_ipo: mean(&|r| r.ipo),
        reward_accuracy: has_rewards.then(|| mean(&|r| f64::from(u8::from(r.reward_chosen > r.reward_rejected)))),
        mean_bt_loss: has_rewards.then(|| mean(&|r| r.bt_loss.unwrap_or(0.0))),
    }
}
