//! Loading a model: a Hugging Face folder (`config.json`, safetensors weights, tokenizer files)
//! or a llama.cpp `.gguf` file (see [`crate::model::gguf`]), in the run's [`Precision`].

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::model::config::ModelConfig;
use crate::model::llama::LlamaModel;
use crate::model::tokenizer::ChatTokenizer;
use crate::tensor::io::SafetensorsFolder;

/// The floating-point format of the frozen weights and the activations (`--precision`).
///
/// With `bf16` (mixed precision, meant for GPUs) the frozen base and every activation are
/// bfloat16, which halves their memory; the trained parameters stay f32 (the master weights
/// the optimizer updates), rounded to bf16 where the forward reads them, and norms, softmax,
/// log-probs and losses compute in f32. On the CPU such a run takes candle's composite ops
/// wherever a tensor is bf16 (the hand-written kernels are f32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 frozen weights and activations, f32 trained parameters.
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// Loads a model and its tokenizer from a Hugging Face folder or a `.gguf` file, in f32.
pub fn load_model_and_tokenizer(path: &Path, device: &Device) -> anyhow::Result<(LlamaModel, ChatTokenizer)> {
    load_model_and_tokenizer_as(path, device, None, Precision::F32)
}

/// [`load_model_and_tokenizer`] in `precision`, with the decoder's linear weights quantized
/// to `quant` as a Hugging Face folder is read (a GGUF file is read whole; quantize it
/// afterwards).
pub fn load_model_and_tokenizer_as(
    path: &Path,
    device: &Device,
    quant: Option<GgmlDType>,
    precision: Precision,
) -> anyhow::Result<(LlamaModel, ChatTokenizer)> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return crate::model::gguf::load_gguf(path, device, precision);
    }
    Ok((load_model_as(path, device, quant, precision)?, ChatTokenizer::from_dir(path)?))
}

/// Loads a model from a Hugging Face folder, in f32.
pub fn load_model(path: &Path, device: &Device) -> anyhow::Result<LlamaModel> {
    load_model_as(path, device, None, Precision::F32)
}

/// Loads a model from a Hugging Face folder, one tensor at a time, in `precision`, quantizing
/// the decoder's linear weights to `quant` as they are read.
pub fn load_model_as(
    path: &Path,
    device: &Device,
    quant: Option<GgmlDType>,
    precision: Precision,
) -> anyhow::Result<LlamaModel> {
    let config = ModelConfig::from_dir(path)?;
    let mut tensors = SafetensorsFolder::open(path)?;
    LlamaModel::from_tensors(config, &mut tensors, path, device, quant, precision)
}
