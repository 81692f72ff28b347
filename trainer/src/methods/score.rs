//! Evaluating a model on preference pairs without training (`pairwise-train score`):
//! policy and reference log-probs, the DPO/IPO losses they imply and, with a reward head,
//! Bradley–Terry rewards.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::Tensor;
use clap::Args;
use serde::Serialize;

use crate::data::pairs::{TokenizedPair, TokenizedSequence, Truncation, read_jsonl, tokenize_pair};
use crate::data::readout::{sequence_log_probs, sequence_rewards};
use crate::methods::reward::load_reward_head;
use crate::model::LlamaModel;
use crate::model::load::load_model_and_tokenizer;
use crate::peft::load::load_peft;
use crate::tensor::device::default_device;

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

#[derive(Args)]
/// The options of `pairwise-train score`.
pub struct ScoreConfig {
    /// Hugging Face model folder or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT LoRA adapter folder; the policy is model + adapter, the reference the model alone.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Safetensors file with `score.weight` [1, hidden]: adds reward_chosen/reward_rejected/bt_loss.
    #[arg(long)]
    pub reward_head: Option<PathBuf>,
    /// Preference pairs (JSONL, any supported format).
    #[arg(long)]
    pub data: PathBuf,
    /// Score only the first N pairs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// β for the DPO and IPO losses.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Output JSONL, one line per pair.
    #[arg(long)]
    pub out: PathBuf,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Maximum tokens per sequence (see the truncation policy in the README).
    #[arg(long, default_value_t = 1024)]
    pub max_length: usize,
    /// Maximum prompt tokens.
    #[arg(long, default_value_t = 512)]
    pub max_prompt_length: usize,
}

/// Runs `pairwise-train score`: one JSONL line per pair, a summary on stderr.
pub fn run_score(config: &ScoreConfig) -> anyhow::Result<()> {
    let device = default_device()?;
    let (mut model, tokenizer) = load_model_and_tokenizer(&config.model, &device)?;
    if let Some(dir) = &config.adapter {
        load_peft(dir, &mut model)?;
    }
    let head = config.reward_head.as_deref().map(|path| load_reward_head(path, &device)).transpose()?;
    let limits = Truncation::new(config.max_length, config.max_prompt_length);
    let pairs = read_jsonl(&config.data, config.limit)?
        .iter()
        .map(|p| tokenize_pair(&tokenizer, p, limits))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let records = score_pairs(&model, &pairs, tokenizer.pad_id, config.beta, head.as_ref(), config.batch_size)?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&config.out).with_context(|| format!("creating {}", config.out.display()))?,
    );
    for r in &records {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    out.flush()?;
    eprintln!("{}", serde_json::to_string(&summarize(&records))?);
    Ok(())
}
