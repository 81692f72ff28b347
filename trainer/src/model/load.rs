//! Loading a model: a Hugging Face folder (`config.json`, safetensors weights, tokenizer files)
//! or a llama.cpp `.gguf` file (see [`crate::model::gguf`]).

use std::path::Path;

use candle_core::Device;

use crate::model::config::ModelConfig;
use crate::model::llama::LlamaModel;
use crate::model::tokenizer::ChatTokenizer;
use crate::tensor::io::load_safetensors_dir;

/// Loads a model and its tokenizer from a Hugging Face folder or a `.gguf` file.
pub fn load_model_and_tokenizer(path: &Path, device: &Device) -> anyhow::Result<(LlamaModel, ChatTokenizer)> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return crate::model::gguf::load_gguf(path, device);
    }
    Ok((load_model(path, device)?, ChatTokenizer::from_dir(path)?))
}

/// Loads a model from a Hugging Face folder.
pub fn load_model(path: &Path, device: &Device) -> anyhow::Result<LlamaModel> {
    let config = ModelConfig::from_dir(path)?;
    let tensors = load_safetensors_dir(path)?;
    LlamaModel::from_tensors(config, tensors, path, device)
}
