//! Direct Preference Optimisation (`pairwise-train dpo`): chosen and rejected sequences of a
//! micro-batch go through the policy in one forward pass; the reference is the base model
//! with adapters off, its log-probs computed once before training and cached on disk under a
//! key made of the model's weights and the tokenized data. The reference-free losses (SimPO,
//! ORPO) skip the reference pass; any loss can add an NLL term on the chosen completions
//! (`--sft-weight`). Metrics carry TRL's names.

use std::path::Path;

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use crate::data::batch::SequenceBatch;
use crate::data::pairs::{TokenizedPair, TokenizedSequence};
use crate::data::readout::completion_log_probs;
use crate::methods::loss::{PairLogps, chosen_nll, dpo_loss, reference_free_loss};
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::lora::{LoraConfig, save_peft};
use crate::peft::{AdapterKind, PeftTask};
use crate::train::config::{DpoLossType, TrainConfig};
use crate::train::run::{Metrics, Objective};

pub struct DpoObjective {
    pub beta: f64,
    pub loss_type: DpoLossType,
    /// Label smoothing for every pair (cDPO / robust); replaced per pair by the rater signal
    /// when `use_rater_signal` is set.
    pub label_smoothing: f64,
    pub use_rater_signal: bool,
    /// SimPO's target margin γ.
    pub simpo_gamma: f64,
    /// Weight of the NLL term on the chosen completions (ORPO: always 1).
    pub sft_weight: f64,
    /// Reference log-probs `(chosen, rejected)` by example index (train first, then eval);
    /// empty for the reference-free losses.
    pub reference: Vec<(f32, f32)>,
    pub pad_id: u32,
}

impl DpoObjective {
    /// The objective `config` asks for, with the reference log-probs (empty when reference-free).
    pub fn new(config: &TrainConfig, reference: Vec<(f32, f32)>, pad_id: u32) -> Self {
        DpoObjective {
            beta: config.beta,
            loss_type: config.loss_type,
            label_smoothing: config.label_smoothing,
            use_rater_signal: config.use_rater_signal,
            simpo_gamma: config.simpo_gamma,
            sft_weight: if config.loss_type == DpoLossType::Orpo { 1.0 } else { config.sft_weight },
            reference,
            pad_id,
        }
    }
}

impl Objective for DpoObjective {
    type Example = TokenizedPair;

    fn tokens(&self, pair: &TokenizedPair) -> usize {
        pair.chosen.ids.len() + pair.rejected.ids.len()
    }

    fn batch_loss(
        &self,
        model: &LlamaModel,
        pairs: &[&TokenizedPair],
        indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)> {
        let n = pairs.len();
        let device = model.device();
        let batch = SequenceBatch::for_pairs(pairs, self.pad_id, &model.config, device)?;
        let logps = completion_log_probs(model, &batch, ctx)?;
        let policy_chosen = logps.narrow(0, 0, n)?;
        let policy_rejected = logps.narrow(0, n, n)?;
        let lens = |range: std::ops::Range<usize>| {
            let v: Vec<f32> = batch.completion_lens[range].iter().map(|&l| l as f32).collect();
            Tensor::from_vec(v, n, device)
        };
        let (chosen_lens, rejected_lens) = (lens(0..n)?, lens(n..2 * n)?);
        let smoothing: Vec<f32> =
            pairs
                .iter()
                .map(|p| {
                    if self.use_rater_signal { p.signal.label_smoothing() as f32 } else { self.label_smoothing as f32 }
                })
                .collect();
        let smoothing = Tensor::from_vec(smoothing, n, device)?;
        let out = if self.loss_type.is_reference_free() {
            let chosen_mean = (&policy_chosen / &chosen_lens)?;
            let rejected_mean = (&policy_rejected / &rejected_lens)?;
            let policy = PairLogps { chosen: &chosen_mean, rejected: &rejected_mean };
            reference_free_loss(self.loss_type, self.beta, self.simpo_gamma, policy, &smoothing)?
        } else {
            let refs: Vec<(f32, f32)> = indices.iter().map(|&i| self.reference[i]).collect();
            let ref_chosen = Tensor::from_vec(refs.iter().map(|r| r.0).collect(), n, device)?;
            let ref_rejected = Tensor::from_vec(refs.iter().map(|r| r.1).collect(), n, device)?;
            dpo_loss(
                self.loss_type,
                self.beta,
                PairLogps { chosen: &policy_chosen, rejected: &policy_rejected },
                PairLogps { chosen: &ref_chosen, rejected: &ref_rejected },
                (&chosen_lens, &rejected_lens),
                &smoothing,
            )?
        };
        let mut loss = out.loss.clone();
        let mut nll_value = None;
        if self.sft_weight != 0.0 {
            // A mean over this shard's chosen tokens (TRL: over the batch's; the same when
            // the batch is not split, see the README).
            let nll = chosen_nll(&policy_chosen, &chosen_lens)?;
            nll_value = Some(nll.to_scalar::<f32>()?);
            loss = (loss + (nll * self.sft_weight)?)?;
        }
        let chosen = out.chosen_rewards.to_vec1::<f32>()?;
        let rejected = out.rejected_rewards.to_vec1::<f32>()?;
        let mut m = Metrics::default();
        m.add("rewards/chosen", &chosen);
        m.add("rewards/rejected", &rejected);
        let correct: Vec<f32> = chosen.iter().zip(&rejected).map(|(c, r)| f32::from(u8::from(c > r))).collect();
        m.add("rewards/accuracies", &correct);
        let margins: Vec<f32> = chosen.iter().zip(&rejected).map(|(c, r)| c - r).collect();
        m.add("rewards/margins", &margins);
        m.add("logps/chosen", &policy_chosen.detach().to_vec1::<f32>()?);
        m.add("logps/rejected", &policy_rejected.detach().to_vec1::<f32>()?);
        if let Some(nll) = nll_value {
            m.add("nll_loss", &vec![nll; n]);
        }
        Ok((loss, m))
    }

    fn accuracy_metric(&self) -> &'static str {
        "rewards/accuracies"
    }
}

/// Writes the trained policy: a PEFT adapter for LoRA/QLoRA, a full model folder otherwise.
pub fn save_policy(
    model: &LlamaModel,
    config: &TrainConfig,
    dir: &Path,
    task: PeftTask,
    score: Option<&Tensor>,
) -> anyhow::Result<()> {
    match config.adapter {
        AdapterKind::Lora | AdapterKind::Qlora => {
            let lora = LoraConfig::new(config.lora_r, config.lora_alpha, config.lora_dropout, &config.lora_targets)?;
            save_peft(dir, model, &lora, task, &config.model.display().to_string(), score)
        }
        AdapterKind::Full => crate::model::merge::write_model_folder(model, Some(&config.model), dir),
        AdapterKind::Prefix => {
            crate::peft::prefix::save_prefix_peft(dir, model, task, &config.model.display().to_string(), score)
        }
    }
}

/// A content hash of the base weights, independent of any attached adapters.
pub fn model_fingerprint(model: &LlamaModel) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&model.config)?);
    for (name, tensor) in model.merged_weights()? {
        hasher.update(name.as_bytes());
        let flat = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for v in flat {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reference log-probs for every pair, loaded from `cache_dir` when this exact model and data
/// were seen before, computed (adapters off) and stored otherwise. Call before attaching
/// adapters or unfreezing weights so the fingerprint describes the reference model.
pub fn reference_log_probs(
    model: &LlamaModel,
    pairs: &[TokenizedPair],
    pad_id: u32,
    batch_size: usize,
    cache_dir: &Path,
) -> anyhow::Result<Vec<(f32, f32)>> {
    let seqs: Vec<TokenizedSequence> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let logps = cached_reference_log_probs(model, &seqs, pad_id, batch_size, cache_dir)?;
    Ok(logps.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Summed completion log-probs of `seqs` under the model with adapters off, cached in
/// `cache_dir` under a key of the base weights and the token ids.
pub fn cached_reference_log_probs(
    model: &LlamaModel,
    seqs: &[TokenizedSequence],
    pad_id: u32,
    batch_size: usize,
    cache_dir: &Path,
) -> anyhow::Result<Vec<f32>> {
    let mut hasher = Sha256::new();
    hasher.update(model_fingerprint(model)?.as_bytes());
    for seq in seqs {
        hasher.update((seq.prompt_len as u64).to_le_bytes());
        hasher.update((seq.ids.len() as u64).to_le_bytes());
        for id in &seq.ids {
            hasher.update(id.to_le_bytes());
        }
    }
    let key = hex::encode(hasher.finalize());
    let path = cache_dir.join(format!("ref-logps-{}.json", &key[..32]));
    // A cache file of another shape (an older version's) is recomputed and replaced.
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(cached) = serde_json::from_str::<Vec<f32>>(&text)
        && cached.len() == seqs.len()
    {
        return Ok(cached);
    }
    let logps = crate::data::readout::sequence_log_probs(model, seqs, pad_id, false, batch_size)?;
    std::fs::create_dir_all(cache_dir)?;
    std::fs::write(&path, serde_json::to_string(&logps)?)?;
    Ok(logps)
}

/// `pairwise-train dpo`: prepares data and model, caches reference log-probs, trains (on
/// rankings with `--listwise`).
pub fn run_dpo(config: &TrainConfig) -> anyhow::Result<crate::train::run::RunSummary> {
    if config.listwise {
        return crate::methods::listwise::run_listwise_dpo(config);
    }
    let crate::train::prepare::Prepared { tokenizer, mut model, train, eval } = crate::train::prepare::prepare(config)?;
    if config.loss_type == DpoLossType::Orpo && config.sft_weight != 0.0 {
        anyhow::bail!(
            "--sft-weight does not apply to --loss-type orpo: ORPO's NLL term is part of the loss (weight 1)"
        );
    }
    let reference = if config.loss_type.is_reference_free() {
        Vec::new()
    } else {
        let all: Vec<TokenizedPair> = train.iter().chain(&eval).cloned().collect();
        reference_log_probs(&model, &all, tokenizer.pad_id, config.batch_size * 2, &config.output.join("ref-cache"))?
    };
    let trainable = crate::train::prepare::prepare_trainable(&mut model, config)?;
    eprintln!(
        "DPO ({:?}, beta {}): {} train / {} eval pairs, {} trainable parameters",
        config.loss_type,
        config.beta,
        train.len(),
        eval.len(),
        crate::train::prepare::count_parameters(&trainable)
    );
    let objective = DpoObjective::new(config, reference, tokenizer.pad_id);
    let summary = crate::train::run::run(&objective, &model, trainable, &train, &eval, config)?;
    if config.adapter == AdapterKind::Full {
        crate::model::merge::write_rebuilt_tokenizer(&tokenizer, &config.model, &config.output)?;
    }
    Ok(summary)
}
