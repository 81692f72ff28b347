//! The trainable transformer: configuration-driven Llama/Qwen2 decoder, adapter-aware linear
//! layers, model loading, and the two readouts training needs (completion log-probs and the
//! scalar reward at the last token).

pub mod input;
pub mod linear;
pub mod llama;

use candle_core::{Result, Tensor};

use crate::batch::SequenceBatch;
pub use input::ModelInput;
pub use linear::{AdaptedLinear, ForwardCtx, LoraAdapter, Param};
pub use llama::LlamaModel;

/// Summed log-probability of each sequence's completion tokens, `[S]`. Only the positions
/// that predict completion tokens are computed through the last layer and the lm_head.
pub fn completion_log_probs(model: &LlamaModel, batch: &SequenceBatch, ctx: &ForwardCtx) -> Result<Tensor> {
    let rows = model.hidden_rows(&batch.input, &batch.predict_rows, ctx)?;
    let logits = model.logits(&rows, ctx)?;
    let token_logps = crate::ops::token_log_probs(&logits, &batch.targets)?;
    batch.segments.matmul(&token_logps.unsqueeze(1)?)?.squeeze(1)
}

/// Scalar reward per sequence, `[S]`: `score · h` at the last non-padding token.
pub fn last_token_rewards(
    model: &LlamaModel,
    batch: &SequenceBatch,
    score: &Tensor,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let last = model.hidden_rows(&batch.input, &batch.last_rows, ctx)?;
    let h = last.dim(1)?;
    last.matmul(&score.reshape((h, 1))?)?.squeeze(1)
}
