//! Writing a complete Hugging Face model folder with LoRA adapters folded into the base
//! weights (config, safetensors, tokenizer files copied from the source): the output of
//! `pairwise-train merge` and of full fine-tunes.

use std::path::Path;

use anyhow::Context;

use crate::model::LlamaModel;
use crate::model::tokenizer::ChatTokenizer;

/// Files copied unchanged from the source model folder when present.
const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];

/// Writes `model` (adapters merged, quantized weights dequantized) as `out/config.json` +
/// `out/model.safetensors`, copying tokenizer files from `source` when it is a folder.
pub fn write_model_folder(model: &LlamaModel, source: Option<&Path>, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&model.config.to_hf_json())?)?;
    crate::tensor::io::save_safetensors(&out.join("model.safetensors"), &model.merged_weights()?)?;
    if let Some(source) = source.filter(|s| s.is_dir()) {
        for name in TOKENIZER_FILES {
            let from = source.join(name);
            if from.exists() {
                std::fs::copy(&from, out.join(name)).with_context(|| format!("copying {}", from.display()))?;
            }
        }
    }
    Ok(())
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `out` when `source` is not a
/// folder whose files [`write_model_folder`] copied (a GGUF file, whose tokenizer was rebuilt).
pub fn write_rebuilt_tokenizer(tokenizer: &ChatTokenizer, source: &Path, out: &Path) -> anyhow::Result<()> {
    if source.is_dir() {
        return Ok(());
    }
    tokenizer
        .inner
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    std::fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tokenizer.config_json())?)?;
    Ok(())
}
