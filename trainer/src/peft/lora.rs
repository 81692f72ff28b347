//! LoRA adapters: attaching them to the model with PEFT's initialisation, and reading/writing
//! PEFT's on-disk format (`adapter_config.json` + `adapter_model.safetensors` with names like
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`) so that Python's
//! `PeftModel.from_pretrained` loads what we train and we load what PEFT trains.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::TrainerError;
use crate::model::{LlamaModel, LoraAdapter};
use crate::peft::{LoadedAdapter, PeftTask};

/// Module names accepted in `target_modules`: short (`q`) or Hugging Face (`q_proj`).
const MODULES: [(&str, &str); 7] = [
    ("q", "self_attn.q_proj"),
    ("k", "self_attn.k_proj"),
    ("v", "self_attn.v_proj"),
    ("o", "self_attn.o_proj"),
    ("gate", "mlp.gate_proj"),
    ("up", "mlp.up_proj"),
    ("down", "mlp.down_proj"),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// Hugging Face leaf names, e.g. `q_proj`, `v_proj`.
    pub target_modules: Vec<String>,
}

impl LoraConfig {
    /// Normalises short names (`q`, `gate`) to PEFT's (`q_proj`, `gate_proj`) and rejects others.
    pub fn new(r: usize, alpha: f64, dropout: f32, targets: &[String]) -> anyhow::Result<Self> {
        if r == 0 {
            bail!("LoRA rank must be at least 1");
        }
        let mut target_modules = Vec::new();
        for t in targets {
            let leaf = t.trim().trim_end_matches("_proj");
            if !MODULES.iter().any(|(short, _)| *short == leaf) {
                bail!("unknown LoRA target module {t:?}: use any of q,k,v,o,gate,up,down");
            }
            let name = format!("{leaf}_proj");
            if !target_modules.contains(&name) {
                target_modules.push(name);
            }
        }
        if target_modules.is_empty() {
            bail!("LoRA needs at least one target module");
        }
        Ok(LoraConfig { r, alpha, dropout, target_modules })
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    fn targets(&self, full_name: &str) -> bool {
        let leaf = full_name.rsplit('.').next().unwrap_or(full_name);
        self.target_modules.iter().any(|t| t == leaf)
    }
}

/// PEFT's tensor name for one LoRA matrix.
pub fn peft_name(layer: usize, module: &str, matrix: char) -> String {
    format!("base_model.model.model.layers.{layer}.{module}.lora_{matrix}.weight")
}

/// Adds freshly initialised adapters to the targeted linears, PEFT style: `A` Kaiming-uniform
/// (a = √5, i.e. U(±1/√in)), `B` zero, so the adapted model starts equal to the base.
/// Returns the trainable variables by PEFT name.
pub fn attach_lora(model: &mut LlamaModel, config: &LoraConfig, seed: u64) -> anyhow::Result<Vec<(String, Var)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = model.device().clone();
    let mut vars = Vec::new();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (name, linear) in layer.linears_mut() {
            if !config.targets(name) {
                continue;
            }
            let bound = 1.0 / (linear.in_features as f32).sqrt();
            let a: Vec<f32> = (0..config.r * linear.in_features).map(|_| rng.random_range(-bound..bound)).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (config.r, linear.in_features), &device)?)?;
            let b = Var::zeros((linear.out_features, config.r), DType::F32, &device)?;
            vars.push((peft_name(i, name, 'A'), a.clone()));
            vars.push((peft_name(i, name, 'B'), b.clone()));
            linear.lora = Some(LoraAdapter { a, b, scale: config.scale(), dropout: config.dropout });
        }
    }
    Ok(vars)
}

/// The subset of PEFT's `adapter_config.json` we write and read.
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfigFile {
    peft_type: String,
    task_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f32,
    target_modules: TargetModules,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    rank_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default)]
    init_lora_weights: serde_json::Value,
}

/// PEFT allows a list of names or one regular expression; we support the list.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors`.
/// `score` (the reward head `[1, hidden]`) is saved as PEFT's `modules_to_save` entry.
pub fn save_peft(
    dir: &Path,
    model: &LlamaModel,
    config: &LoraConfig,
    task: PeftTask,
    base_model: &str,
    score: Option<&Tensor>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        for (name, linear) in layer.linears() {
            if let Some(lora) = &linear.lora {
                tensors.push((peft_name(i, name, 'A'), lora.a.as_tensor().clone()));
                tensors.push((peft_name(i, name, 'B'), lora.b.as_tensor().clone()));
            }
        }
    }
    if let Some(score) = score {
        tensors.push(("base_model.model.score.weight".into(), score.clone()));
    }
    let file = PeftConfigFile {
        peft_type: "LORA".into(),
        task_type: Some(
            match task {
                PeftTask::CausalLm => "CAUSAL_LM",
                PeftTask::SequenceClassification => "SEQ_CLS",
            }
            .into(),
        ),
        r: config.r,
        lora_alpha: config.alpha,
        lora_dropout: config.dropout,
        target_modules: TargetModules::List(config.target_modules.clone()),
        bias: Some("none".into()),
        use_rslora: false,
        use_dora: false,
        fan_in_fan_out: false,
        rank_pattern: HashMap::new(),
        alpha_pattern: HashMap::new(),
        modules_to_save: score.map(|_| vec!["score".to_string()]),
        base_model_name_or_path: Some(base_model.to_string()),
        inference_mode: true,
        init_lora_weights: serde_json::Value::Bool(true),
    };
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&file)?)?;
    crate::tensor::io::save_safetensors(&dir.join("adapter_model.safetensors"), &tensors)
}

/// Attaches the PEFT LoRA adapter in `dir` to `model` (replacing any LoRA adapters);
/// `text` is its `adapter_config.json`, read from `config_path`.
pub fn load_lora_peft(
    dir: &Path,
    config_path: &Path,
    text: &str,
    model: &mut LlamaModel,
) -> anyhow::Result<LoadedAdapter> {
    let file: PeftConfigFile =
        serde_json::from_str(text).with_context(|| format!("parsing {}", config_path.display()))?;
    if file.peft_type != "LORA" {
        bail!(
            "{}: only LORA and PREFIX_TUNING adapters are supported, found {}",
            config_path.display(),
            file.peft_type
        );
    }
    if file.use_dora || file.fan_in_fan_out || !file.rank_pattern.is_empty() || !file.alpha_pattern.is_empty() {
        bail!("{}: DoRA, fan_in_fan_out and per-module rank/alpha patterns are not supported", config_path.display());
    }
    let targets = match file.target_modules {
        TargetModules::List(list) => list,
        TargetModules::Regex(re) => bail!("{}: regex target_modules ({re}) are not supported", config_path.display()),
    };
    let mut config = LoraConfig::new(file.r, file.lora_alpha, file.lora_dropout, &targets)?;
    let scale = if file.use_rslora { file.lora_alpha / (file.r as f64).sqrt() } else { config.scale() };
    // rsLoRA only changes the scale; fold it into alpha so `scale()` stays the single source.
    config.alpha = scale * config.r as f64;
    let weights_path = dir.join("adapter_model.safetensors");
    if !weights_path.exists() {
        return Err(TrainerError::MissingFile {
            path: weights_path,
            what: "a PEFT adapter folder needs adapter_model.safetensors",
        }
        .into());
    }
    let mut tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    let device = model.device().clone();
    let mut vars = Vec::new();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (name, linear) in layer.linears_mut() {
            linear.lora = None;
            if !config.targets(name) {
                continue;
            }
            let mut take = |m: char| -> anyhow::Result<Var> {
                let key = peft_name(i, name, m);
                let t = tensors
                    .remove(&key)
                    .ok_or_else(|| TrainerError::MissingTensor { name: key.clone(), path: weights_path.clone() })?;
                Ok(Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(&device)?)?)
            };
            let (a, b) = (take('A')?, take('B')?);
            if a.dims() != [config.r, linear.in_features] || b.dims() != [linear.out_features, config.r] {
                bail!(
                    "adapter for layer {i} {name} has shapes {:?}/{:?}, expected [{}, {}]/[{}, {}]",
                    a.dims(),
                    b.dims(),
                    config.r,
                    linear.in_features,
                    linear.out_features,
                    config.r
                );
            }
            vars.push((peft_name(i, name, 'A'), a.clone()));
            vars.push((peft_name(i, name, 'B'), b.clone()));
            linear.lora = Some(LoraAdapter { a, b, scale: config.scale(), dropout: config.dropout });
        }
    }
    let score = tensors
        .remove("base_model.model.score.weight")
        .or_else(|| tensors.remove("base_model.model.score.modules_to_save.default.weight"))
        .map(|t| t.to_dtype(DType::F32)?.to_device(&device))
        .transpose()?;
    Ok(LoadedAdapter { vars, score })
}
