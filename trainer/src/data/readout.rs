//! The two readouts training and scoring need from a batch: the summed log-probability of
//! each sequence's completion, and the scalar reward `score · h` at its last token; for one
//! batch, or for many sequences batched and run concurrently.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::data::batch::SequenceBatch;
use crate::data::pairs::TokenizedSequence;
use crate::model::{ForwardCtx, LlamaModel};

/// Summed log-probability of each sequence's completion tokens, `[S]`. Only the positions
/// that predict completion tokens are computed through the last layer and the lm_head.
pub fn completion_log_probs(model: &LlamaModel, batch: &SequenceBatch, ctx: &ForwardCtx) -> Result<Tensor> {
    let rows = model.hidden_rows(&batch.input, &batch.predict_rows, ctx)?;
    let logits = model.logits(&rows, ctx)?;
    let token_logps = crate::tensor::ops::token_log_probs(&logits, &batch.targets)?;
    batch.segments.matmul(&token_logps.unsqueeze(1)?)?.squeeze(1)
}

/// Scalar reward per sequence, `[S]`: `score · h` at the last non-padding token.
pub fn last_token_rewards(
    model: &LlamaModel,
    batch: &SequenceBatch,
    score: &Tensor,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let last = model.hidden_rows(&batch.input, &batch.last_rows, ctx)?.to_dtype(score.dtype())?;
    let h = last.dim(1)?;
    last.matmul(&score.reshape((h, 1))?)?.squeeze(1)
}

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
