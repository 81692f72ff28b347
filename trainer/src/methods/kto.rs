//! Kahneman–Tversky Optimisation (`pairwise-train kto`): a policy trained on single
//! completions labelled desirable or undesirable (thumbs, scales, `both_bad` votes) instead of
//! pairs, with TRL's `KTOTrainer` loss. The reference is the base model with adapters off; its
//! log-probs are computed once and cached, as for DPO.
//!
//! The KL term: each completion's prompt is also paired with a *mismatched* completion (the
//! previous example's in the data set, wrapping, within the train and the held-out set
//! separately; TRL rotates completions by one in the batch the same way), and the estimate
//! `z = max(0, mean(π_KL − ref_KL))` over a shard's mismatched pairs is used detached, as TRL
//! does. Fixing the mismatch in the data rather than in the batch lets the reference side of
//! it be computed once.

use candle_core::Tensor;

use crate::data::batch::SequenceBatch;
use crate::data::completions::{TokenizedCompletion, Use};
use crate::data::pairs::TokenizedSequence;
use crate::data::readout::completion_log_probs;
use crate::methods::dpo::cached_reference_log_probs;
use crate::methods::loss::kto_loss;
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::AdapterKind;
use crate::train::config::TrainConfig;
use crate::train::run::{Metrics, Objective};

pub struct KtoObjective {
    pub beta: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
    /// Reference log-probs of each example's completion, by example index (train, then eval).
    pub reference: Vec<f32>,
    /// Each example's prompt with its mismatched completion, by example index.
    pub kl_sequences: Vec<TokenizedSequence>,
    /// Reference log-probs of `kl_sequences`.
    pub reference_kl: Vec<f32>,
    pub pad_id: u32,
}

/// Each example's prompt followed by the completion of the example before it (wrapping), cut
/// to `max_length` (keeping one completion token at least).
pub fn mismatched_sequences(examples: &[TokenizedCompletion], max_length: usize) -> Vec<TokenizedSequence> {
    let n = examples.len();
    (0..n)
        .map(|i| {
            let own = &examples[i].seq;
            let other = &examples[(i + n - 1) % n].seq;
            let mut ids = own.ids[..own.prompt_len].to_vec();
            let room = max_length.saturating_sub(ids.len()).max(1);
            ids.extend(other.ids[other.prompt_len..].iter().take(room));
            TokenizedSequence { ids, prompt_len: own.prompt_len }
        })
        .collect()
}

impl Objective for KtoObjective {
    type Example = TokenizedCompletion;

    fn tokens(&self, example: &TokenizedCompletion) -> usize {
        example.seq.ids.len()
    }

    fn batch_loss(
        &self,
        model: &LlamaModel,
        examples: &[&TokenizedCompletion],
        indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)> {
        let n = examples.len();
        let device = model.device();
        // Completions and their mismatched twins in one forward pass.
        let seqs: Vec<TokenizedSequence> = examples
            .iter()
            .map(|e| e.seq.clone())
            .chain(indices.iter().map(|&i| self.kl_sequences[i].clone()))
            .collect();
        let batch = SequenceBatch::new(&seqs, self.pad_id, &model.config, device)?;
        let logps = completion_log_probs(model, &batch, ctx)?;
        let policy = logps.narrow(0, 0, n)?;
        let policy_kl = logps.narrow(0, n, n)?.detach().to_vec1::<f32>()?;
        let kl =
            indices.iter().zip(&policy_kl).map(|(&i, &p)| (p - self.reference_kl[i]) as f64).sum::<f64>() / n as f64;
        let kl = kl.max(0.0);
        let reference: Vec<f32> = indices.iter().map(|&i| self.reference[i]).collect();
        let desirable: Vec<f32> = examples.iter().map(|e| f32::from(u8::from(e.desirable))).collect();
        let (loss, rewards) = kto_loss(
            self.beta,
            &policy,
            &Tensor::from_vec(reference, n, device)?,
            &Tensor::from_vec(desirable, n, device)?,
            kl,
            (self.desirable_weight, self.undesirable_weight),
        )?;
        let rewards = rewards.to_vec1::<f32>()?;
        let policy = policy.detach().to_vec1::<f32>()?;
        let pick = |values: &[f32], want: bool| -> Vec<f32> {
            values.iter().zip(examples).filter(|(_, e)| e.desirable == want).map(|(v, _)| *v).collect()
        };
        let mut m = Metrics::default();
        m.add("rewards/chosen", &pick(&rewards, true));
        m.add("rewards/rejected", &pick(&rewards, false));
        m.add("logps/chosen", &pick(&policy, true));
        m.add("logps/rejected", &pick(&policy, false));
        m.add("kl", &vec![kl as f32; n]);
        // A completion is judged right when its implied reward has the label's sign.
        let right: Vec<f32> =
            rewards.iter().zip(examples).map(|(r, e)| f32::from(u8::from((*r > 0.0) == e.desirable))).collect();
        m.add("rewards/label_accuracy", &right);
        Ok((loss, m))
    }

    fn accuracy_metric(&self) -> &'static str {
        "rewards/label_accuracy"
    }
}

/// `pairwise-train kto`: reads labelled completions, caches reference log-probs, trains.
pub fn run_kto(config: &TrainConfig) -> anyhow::Result<crate::train::run::RunSummary> {
    let crate::train::prepare::Prepared { tokenizer, mut model, train, eval } =
        crate::train::prepare::prepare_completions(config, Use::Kto)?;
    if train.len() < 2 {
        anyhow::bail!(
            "KTO needs at least 2 training completions (its KL estimate pairs each prompt with another completion)"
        );
    }
    let desirable = train.iter().filter(|e| e.desirable).count();
    let kl_sequences: Vec<TokenizedSequence> = mismatched_sequences(&train, config.max_length)
        .into_iter()
        .chain(mismatched_sequences(&eval, config.max_length))
        .collect();
    let own: Vec<TokenizedSequence> = train.iter().chain(&eval).map(|e| e.seq.clone()).collect();
    let cache = config.output.join("ref-cache");
    let batch = config.batch_size * 2;
    let reference = cached_reference_log_probs(&model, &own, tokenizer.pad_id, batch, &cache)?;
    let reference_kl = cached_reference_log_probs(&model, &kl_sequences, tokenizer.pad_id, batch, &cache)?;
    let trainable = crate::train::prepare::prepare_trainable(&mut model, config)?;
    eprintln!(
        "KTO (beta {}, weights {}/{}): {} train ({desirable} desirable) / {} eval completions, {} trainable parameters",
        config.beta,
        config.desirable_weight,
        config.undesirable_weight,
        train.len(),
        eval.len(),
        crate::train::prepare::count_parameters(&trainable)
    );
    let objective = KtoObjective {
        beta: config.beta,
        desirable_weight: config.desirable_weight,
        undesirable_weight: config.undesirable_weight,
        reference,
        kl_sequences,
        reference_kl,
        pad_id: tokenizer.pad_id,
    };
    let summary = crate::train::run::run(&objective, &model, trainable, &train, &eval, config)?;
    if config.adapter == AdapterKind::Full {
        crate::model::merge::write_rebuilt_tokenizer(&tokenizer, &config.model, &config.output)?;
    }
    Ok(summary)
}
