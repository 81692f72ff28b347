//! Reading any PEFT adapter folder this crate supports: `adapter_config.json`'s `peft_type`
//! picks LoRA ([`crate::peft::lora`]) or prefix tuning ([`crate::peft::prefix`]).

use std::path::Path;

use anyhow::Context;

use crate::error::TrainerError;
use crate::model::LlamaModel;
use crate::peft::LoadedAdapter;
use crate::peft::lora::load_lora_peft;
use crate::peft::prefix::load_prefix_peft;

/// Reads a PEFT LoRA (or prefix-tuning) adapter folder and attaches it to `model`
/// (replacing any LoRA adapters).
pub fn load_peft(dir: &Path, model: &mut LlamaModel) -> anyhow::Result<LoadedAdapter> {
    let config_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|_| TrainerError::MissingFile {
        path: config_path.clone(),
        what: "a PEFT adapter folder needs adapter_config.json",
    })?;
    let kind: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    if kind["peft_type"] == "PREFIX_TUNING" {
        let vars = load_prefix_peft(dir, model)?;
        let score = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), model.device())?
            .remove("base_model.model.score.weight");
        return Ok(LoadedAdapter { vars, score });
    }
    load_lora_peft(dir, &config_path, &text, model)
}
