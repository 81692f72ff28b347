//! Supervised fine-tuning (`pairwise-train sft`): the policy learns to write the given
//! completions (raters' corrections, consensus-best responses), completion-only: the loss is
//! the cross-entropy of the completion tokens, averaged over all completion tokens of an
//! optimizer step (TRL's `SFTTrainer` with `completion_only_loss`), prompts masked. LoRA,
//! QLoRA, prefix or full fine-tuning, like the other methods.

use candle_core::{D, Tensor};

use crate::data::batch::SequenceBatch;
use crate::data::completions::{TokenizedCompletion, Use};
use crate::data::pairs::TokenizedSequence;
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::AdapterKind;
use crate::train::config::TrainConfig;
use crate::train::run::{Metrics, Objective};

pub struct SftObjective {
    pub pad_id: u32,
}

impl Objective for SftObjective {
    type Example = TokenizedCompletion;

    fn tokens(&self, example: &TokenizedCompletion) -> usize {
        example.seq.ids.len()
    }

    /// A token mean: each completion weighs its number of tokens.
    fn weight(&self, example: &TokenizedCompletion) -> f64 {
        example.seq.completion_len() as f64
    }

    fn batch_loss(
        &self,
        model: &LlamaModel,
        examples: &[&TokenizedCompletion],
        _indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)> {
        let seqs: Vec<TokenizedSequence> = examples.iter().map(|e| e.seq.clone()).collect();
        let batch = SequenceBatch::new(&seqs, self.pad_id, &model.config, model.device())?;
        let rows = model.hidden_rows(&batch.input, &batch.predict_rows, ctx)?;
        let logits = model.logits(&rows, ctx)?;
        let token_logps = crate::tensor::ops::token_log_probs(&logits, &batch.targets)?;
        let tokens = token_logps.dim(0)?;
        let loss = (token_logps.sum_all()?.neg()? / tokens.max(1) as f64)?;
        // Share of completion tokens the model ranks first (TRL's mean_token_accuracy), per sequence.
        let hits = logits.detach().argmax(D::Minus1)?.eq(&batch.targets)?.to_dtype(candle_core::DType::F32)?;
        let per_sequence = batch.segments.matmul(&hits.unsqueeze(1)?)?.squeeze(1)?.to_vec1::<f32>()?;
        let accuracy: Vec<f32> =
            per_sequence.iter().zip(&batch.completion_lens).map(|(h, &l)| h / l.max(1) as f32).collect();
        let mut m = Metrics::default();
        m.add("mean_token_accuracy", &accuracy);
        let per_sequence_nll = batch.segments.matmul(&token_logps.detach().unsqueeze(1)?)?.squeeze(1)?;
        let nll: Vec<f32> = per_sequence_nll
            .to_vec1::<f32>()?
            .iter()
            .zip(&batch.completion_lens)
            .map(|(s, &l)| -s / l.max(1) as f32)
            .collect();
        m.add("nll_per_token", &nll);
        Ok((loss, m))
    }

    fn accuracy_metric(&self) -> &'static str {
        "mean_token_accuracy"
    }
}

/// `pairwise-train sft`: reads the completions, trains the policy to write them.
pub fn run_sft(config: &TrainConfig) -> anyhow::Result<crate::train::run::RunSummary> {
    let crate::train::prepare::Prepared { tokenizer, mut model, train, eval } =
        crate::train::prepare::prepare_completions(config, Use::Sft)?;
    let trainable = crate::train::prepare::prepare_trainable(&mut model, config)?;
    eprintln!(
        "SFT (completion-only): {} train / {} eval completions, {} trainable parameters",
        train.len(),
        eval.len(),
        crate::train::prepare::count_parameters(&trainable)
    );
    let objective = SftObjective { pad_id: tokenizer.pad_id };
    let summary = crate::train::run::run(&objective, &model, trainable, &train, &eval, config)?;
    if config.adapter == AdapterKind::Full {
        crate::model::merge::write_rebuilt_tokenizer(&tokenizer, &config.model, &config.output)?;
    }
    Ok(summary)
}
