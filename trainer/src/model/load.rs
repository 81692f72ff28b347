//! Loading a model: a Hugging Face folder (`config.json`, safetensors weights, tokenizer files)
//! or a llama.cpp `.gguf` file (see [`crate::model::gguf`]).

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::GgmlDType;

use crate::model::config::ModelConfig;
use crate::model::llama::LlamaModel;
use crate::model::tokenizer::ChatTokenizer;
use crate::tensor::io::SafetensorsFolder;

/// Loads a model and its tokenizer from a Hugging Face folder or a `.gguf` file.
pub fn load_model_and_tokenizer(path: &Path, device: &Device) -> anyhow::Result<(LlamaModel, ChatTokenizer)> {
    load_model_and_tokenizer_quantized(path, device, None)
}

/// [`load_model_and_tokenizer`] with the decoder's linear weights quantized to `quant` as a
/// Hugging Face folder is read (a GGUF file is read whole; quantize it afterwards).
pub fn load_model_and_tokenizer_quantized(
    path: &Path,
    device: &Device,
    quant: Option<GgmlDType>,
) -> anyhow::Result<(LlamaModel, ChatTokenizer)> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return crate::model::gguf::load_gguf(path, device);
    }
    Ok((load_model_quantized(path, device, quant)?, ChatTokenizer::from_dir(path)?))
}

/// Loads a model from a Hugging Face folder.
pub fn load_model(path: &Path, device: &Device) -> anyhow::Result<LlamaModel> {
    load_model_quantized(path, device, None)
}

/// Loads a model from a Hugging Face folder, one tensor at a time, quantizing the decoder's
/// linear weights to `quant` as they are read.
pub fn load_model_quantized(path: &Path, device: &Device, quant: Option<GgmlDType>) -> anyhow::Result<LlamaModel> {
    let config = ModelConfig::from_dir(path)?;
    let mut tensors = SafetensorsFolder::open(path)?;
    LlamaModel::from_tensors(config, &mut tensors, path, device, quant)
}
