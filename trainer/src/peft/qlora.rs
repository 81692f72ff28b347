//! QLoRA: the frozen base's linear weights stored quantized (candle's ggml block formats),
//! dequantized one layer at a time inside the frozen-linear op, forward and backward, so the
//! f32 copy never outlives one matmul. Adapters stay f32 and receive exact gradients.

use std::sync::Arc;

use anyhow::bail;
use candle_core::DType;
use candle_core::quantized::{GgmlDType, QTensor};

use crate::model::LlamaModel;
use crate::model::linear::LinearWeight;
use crate::peft::QuantKind;
use crate::tensor::ops::FrozenWeight;

/// candle's block format for a QLoRA quantization kind.
pub fn ggml_dtype(kind: QuantKind) -> GgmlDType {
    match kind {
        QuantKind::Q8_0 => GgmlDType::Q8_0,
        QuantKind::Q4_0 => GgmlDType::Q4_0,
    }
}

/// Replaces every frozen dense linear weight of the decoder layers by a quantized copy
/// (a no-op for weights that were quantized as the model was read, see
/// [`crate::model::load::load_model_as`]). Embeddings, norms and the lm_head stay as they
/// are (as in bitsandbytes QLoRA).
pub fn quantize_base(model: &mut LlamaModel, kind: QuantKind) -> anyhow::Result<()> {
    let dtype = ggml_dtype(kind);
    for layer in &mut model.layers {
        for (name, linear) in layer.linears_mut() {
            let LinearWeight::Frozen(FrozenWeight::Dense(w)) = &linear.weight else {
                continue;
            };
            if !linear.in_features.is_multiple_of(dtype.block_size()) {
                bail!(
                    "{name}: input size {} is not a multiple of the {:?} block size {}",
                    linear.in_features,
                    dtype,
                    dtype.block_size()
                );
            }
            let q = QTensor::quantize(&w.weight.to_dtype(DType::F32)?, dtype)?;
            linear.weight = LinearWeight::Frozen(FrozenWeight::Quantized(Arc::new(q)));
        }
    }
    Ok(())
}

/// Bytes held by the decoder's linear weights (quantized or dense), for the memory report.
pub fn linear_weight_bytes(model: &LlamaModel) -> usize {
    model
        .layers
        .iter()
        .flat_map(|l| l.linears())
        .map(|(_, linear)| match &linear.weight {
            LinearWeight::Frozen(FrozenWeight::Quantized(q)) => q.storage_size_in_bytes(),
            LinearWeight::Frozen(FrozenWeight::Dense(w)) => w.weight.elem_count() * w.weight.dtype().size_in_bytes(),
            LinearWeight::Trainable(v) => v.elem_count() * v.dtype().size_in_bytes(),
        })
        .sum()
}
