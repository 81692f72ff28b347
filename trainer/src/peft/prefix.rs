//! Prefix tuning: trainable key/value prefixes per layer on a frozen base, saved and loaded in
//! PEFT's `PREFIX_TUNING` format (`prompt_embeddings` `[virtual_tokens, layers·2·kv_heads·head_dim]`,
//! no projection), which PEFT unpacks as (layer, key|value, head, dim).

use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::model::LlamaModel;
use crate::model::llama::Prefix;
use crate::peft::PeftTask;

/// Gives every layer fresh prefixes of `virtual_tokens` entries, normal(0, 1) like PEFT's
/// `nn.Embedding` init. Returns the trainable variables.
pub fn attach_prefix(model: &mut LlamaModel, virtual_tokens: usize, seed: u64) -> anyhow::Result<Vec<(String, Var)>> {
    if virtual_tokens == 0 {
        bail!("prefix tuning needs at least one virtual token");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e3779b9);
    let normal = Normal::new(0.0f32, 1.0)?;
    let device = model.device().clone();
    let (nkv, hd) = (model.config.num_key_value_heads, model.config.head_dim);
    let mut vars = Vec::new();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let mut make = || -> anyhow::Result<Var> {
            let data: Vec<f32> = (0..nkv * virtual_tokens * hd).map(|_| normal.sample(&mut rng)).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(data, (nkv, virtual_tokens, hd), &device)?)?)
        };
        let prefix = Prefix { key: make()?, value: make()? };
        vars.push((format!("prefix.layers.{i}.key"), prefix.key.clone()));
        vars.push((format!("prefix.layers.{i}.value"), prefix.value.clone()));
        layer.self_attn.prefix = Some(prefix);
    }
    Ok(vars)
}

#[derive(Debug, Serialize, Deserialize)]
struct PrefixConfigFile {
    peft_type: String,
    task_type: Option<String>,
    num_virtual_tokens: usize,
    token_dim: usize,
    num_layers: usize,
    num_attention_heads: usize,
    num_transformer_submodules: usize,
    #[serde(default)]
    prefix_projection: bool,
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    inference_mode: bool,
}

/// Writes the model's prefixes as a PEFT prefix-tuning adapter.
pub fn save_prefix_peft(
    dir: &Path,
    model: &LlamaModel,
    task: PeftTask,
    base_model: &str,
    score: Option<&Tensor>,
) -> anyhow::Result<()> {
    let prefixes: Vec<&Prefix> = model.layers.iter().filter_map(|l| l.self_attn.prefix.as_ref()).collect();
    if prefixes.len() != model.layers.len() {
        bail!("the model has no prefixes to save");
    }
    let p = prefixes[0].key.dim(1)?;
    // Each [nkv, P, hd] → [P, nkv·hd], then (layer, key|value) blocks side by side.
    let mut columns = Vec::new();
    for prefix in &prefixes {
        for t in [&prefix.key, &prefix.value] {
            columns.push(t.transpose(0, 1)?.reshape((p, ()))?);
        }
    }
    let embeddings = Tensor::cat(&columns, 1)?;
    std::fs::create_dir_all(dir)?;
    let config = PrefixConfigFile {
        peft_type: "PREFIX_TUNING".into(),
        task_type: Some(match task {
            PeftTask::CausalLm => "CAUSAL_LM".into(),
            PeftTask::SequenceClassification => "SEQ_CLS".into(),
        }),
        num_virtual_tokens: p,
        token_dim: model.config.num_key_value_heads * model.config.head_dim,
        num_layers: model.layers.len(),
        num_attention_heads: model.config.num_key_value_heads,
        num_transformer_submodules: 1,
        prefix_projection: false,
        base_model_name_or_path: Some(base_model.into()),
        inference_mode: true,
    };
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&config)?)?;
    let mut tensors = vec![("prompt_embeddings".to_string(), embeddings)];
    if let Some(score) = score {
        tensors.push(("base_model.model.score.weight".into(), score.clone()));
    }
    crate::tensor::io::save_safetensors(&dir.join("adapter_model.safetensors"), &tensors)
}

/// Reads a PEFT prefix-tuning adapter (without projection) into the model's layers.
pub fn load_prefix_peft(dir: &Path, model: &mut LlamaModel) -> anyhow::Result<Vec<(String, Var)>> {
    let text = std::fs::read_to_string(dir.join("adapter_config.json"))?;
    let config: PrefixConfigFile =
        serde_json::from_str(&text).context("parsing a prefix-tuning adapter_config.json")?;
    if config.prefix_projection {
        bail!("prefix tuning with prefix_projection is not supported");
    }
    let (nkv, hd) = (model.config.num_key_value_heads, model.config.head_dim);
    if config.num_layers != model.layers.len() || config.token_dim != nkv * hd {
        bail!("the prefix adapter was made for another model shape");
    }
    let mut tensors = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)?;
    let embeddings =
        tensors.remove("prompt_embeddings").context("the adapter has no prompt_embeddings")?.to_dtype(DType::F32)?;
    let p = config.num_virtual_tokens;
    let device = model.device().clone();
    let mut vars = Vec::new();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let block = |which: usize| -> anyhow::Result<Var> {
            let cols = embeddings.narrow(1, (2 * i + which) * nkv * hd, nkv * hd)?;
            let t = cols.reshape((p, nkv, hd))?.transpose(0, 1)?.contiguous()?.to_device(&device)?;
            Ok(Var::from_tensor(&t)?)
        };
        let prefix = Prefix { key: block(0)?, value: block(1)? };
        vars.push((format!("prefix.layers.{i}.key"), prefix.key.clone()));
        vars.push((format!("prefix.layers.{i}.value"), prefix.value.clone()));
        layer.self_attn.prefix = Some(prefix);
    }
    Ok(vars)
}
