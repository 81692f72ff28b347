//! The model hyper-parameters read from a Hugging Face `config.json`, normalised into one
//! [`ModelConfig`]. Every family the decoder in [`crate::model::llama`] runs is described here
//! by a few switches (q/k norm, Gemma's norms, activation, windows, RoPE per layer type,
//! soft-capping); both shapes of config in the wild are read: transformers 4.x (`rope_theta`,
//! `rope_scaling`, `rope_local_base_freq`, `sliding_window_pattern`) and 5.x
//! (`rope_parameters`, per-layer-type `rope_parameters`, `layer_types`). A setting that
//! changes the model's numbers and is not understood is an error naming the key.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::TrainerError;

/// Architecture family; decides the defaults and switches that differ between families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 1–3.x and SmolLM.
    Llama,
    /// Mistral: Llama with an optional sliding window on every layer.
    Mistral,
    /// Qwen2: like Llama but q/k/v projections carry a bias.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k before RoPE, no biases, explicit `head_dim`.
    Qwen3,
    /// Gemma 2: Gemma's `x̂·(1 + w)` norms, √hidden-scaled embeddings, GELU-tanh MLP, norms
    /// around both attention and MLP, alternating sliding / global layers, soft-capping.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 plus q/k norm and a separate RoPE base for local layers.
    Gemma3,
}

impl Architecture {
    /// The families this crate runs, as `model_type` values (for `--help` and errors).
    pub const SUPPORTED: &'static str =
        "llama (Llama 1-3.x, SmolLM), mistral, qwen2, qwen3, gemma2, gemma3_text and the text part of gemma3";

    /// Gemma's conventions: norms scale by `1 + w`, embeddings are multiplied by √hidden,
    /// and every layer normalises the attention and MLP outputs as well as their inputs.
    pub fn is_gemma(self) -> bool {
        matches!(self, Architecture::Gemma2 | Architecture::Gemma3)
    }

    fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma2 => "gemma2",
            Architecture::Gemma3 => "gemma3_text",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Gemma2 => "Gemma2ForCausalLM",
            Architecture::Gemma3 => "Gemma3ForCausalLM",
        }
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// SwiGLU: `silu(gate) · up`.
    Silu,
    /// GeGLU with the tanh approximation (`gelu_pytorch_tanh`): `gelu_tanh(gate) · up`.
    GeluTanh,
}

/// How RoPE frequencies are derived from the base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's band-wise scaling: long wavelengths divided by `factor`, short ones kept,
    /// the band between interpolated smoothly.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// RoPE settings of one kind of layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl Rope {
    pub fn plain(theta: f64) -> Self {
        Rope { theta, scaling: RopeScaling::None }
    }

    /// The `head_dim / 2` inverse frequencies, computed in float32 the way transformers does
    /// (`1 / base^(2i/d)` with a float32 power, then the scaling), so the tables match its bit
    /// for bit rather than within an ulp.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let plain = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
        match self.scaling {
            RopeScaling::None => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let (factor, low, high, old) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    original_max_position_embeddings as f32,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Whether a layer attends to everything before it or to a sliding window of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerType {
    Full,
    Sliding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// RoPE of full-attention layers (and of every layer unless `local_rope` is set).
    pub rope: Rope,
    /// RoPE of sliding-window layers when it differs (Gemma 3's `rope_local_base_freq`).
    pub local_rope: Option<Rope>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (always for Qwen2, `attention_bias` for Llama).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias` for Llama; never for Qwen2).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys before RoPE (`q_norm`, `k_norm`).
    pub qk_norm: bool,
    pub activation: Activation,
    /// One entry per layer.
    pub layer_types: Vec<LayerType>,
    /// Keys a sliding layer sees: a query at position i attends to positions > i − window.
    pub sliding_window: Option<usize>,
    /// Gemma's attention scale is `query_pre_attn_scalar^-½` instead of `head_dim^-½`.
    pub query_pre_attn_scalar: Option<f64>,
    /// `cap · tanh(scores / cap)` before the softmax (Gemma 2).
    pub attn_logit_softcapping: Option<f64>,
    /// `cap · tanh(logits / cap)` on the output logits (Gemma 2).
    pub final_logit_softcapping: Option<f64>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// The subset of `config.json` we read; keys that do not change the numbers are ignored like
/// transformers does.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    rope_local_base_freq: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    layer_types: Option<Vec<String>>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    bos_token_id: Option<TokenIdField>,
    eos_token_id: Option<TokenIdField>,
    pad_token_id: Option<TokenIdField>,
}

/// `eos_token_id` may be a single id or a list (Llama 3); the first one is the one we append.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenIdField {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIdField {
    fn first(&self) -> Option<u32> {
        match self {
            TokenIdField::One(id) => Some(*id),
            TokenIdField::Many(ids) => ids.first().copied(),
        }
    }
}

/// Keys of a RoPE dict that do not change the frequencies of the types we support.
const ROPE_KEYS: [&str; 7] = [
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];

/// Reads one RoPE dict (`rope_parameters` or a `rope_scaling`), `key` naming it in errors.
/// `theta` is the base when the dict carries none.
fn parse_rope(dict: &Value, key: &str, theta: f64) -> Result<Rope, String> {
    let Some(map) = dict.as_object() else {
        return Err(format!("{key} must be an object, got {dict}"));
    };
    if let Some(unknown) = map.keys().find(|k| !ROPE_KEYS.contains(&k.as_str())) {
        return Err(format!("{key}.{unknown} is not supported (RoPE keys read: {})", ROPE_KEYS.join(", ")));
    }
    let theta = map.get("rope_theta").and_then(Value::as_f64).unwrap_or(theta);
    let kind = map.get("rope_type").or_else(|| map.get("type")).and_then(Value::as_str).unwrap_or("default");
    let number = |name: &str| -> Result<f64, String> {
        map.get(name).and_then(Value::as_f64).ok_or_else(|| format!("{key}.{name} is required for rope_type {kind:?}"))
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: number("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        },
        other => {
            return Err(format!("{key}.rope_type {other:?} is not supported (supported: default, linear, llama3)"));
        }
    };
    Ok(Rope { theta, scaling })
}

/// (full-attention RoPE, sliding-layer RoPE when different) from either config shape.
fn parse_ropes(raw: &RawConfig, architecture: Architecture) -> Result<(Rope, Option<Rope>), String> {
    let theta = raw.rope_theta.unwrap_or(if architecture == Architecture::Gemma3 { 1_000_000.0 } else { 10_000.0 });
    let local_theta = raw.rope_local_base_freq.unwrap_or(10_000.0);
    if let Some(params) = raw.rope_parameters.as_ref().filter(|v| !v.is_null()) {
        // 5.x: either one dict, or one per layer type.
        let per_type = params.get("full_attention").is_some() || params.get("sliding_attention").is_some();
        if !per_type {
            return Ok((parse_rope(params, "rope_parameters", theta)?, None));
        }
        if let Some(unknown) = params
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .find(|k| *k != "full_attention" && *k != "sliding_attention")
        {
            return Err(format!("rope_parameters.{unknown} is not a layer type (full_attention, sliding_attention)"));
        }
        let full = match params.get("full_attention") {
            Some(p) => parse_rope(p, "rope_parameters.full_attention", theta)?,
            None => Rope::plain(theta),
        };
        let local = match params.get("sliding_attention") {
            Some(p) => parse_rope(p, "rope_parameters.sliding_attention", local_theta)?,
            None => full.clone(),
        };
        let local = (local != full).then_some(local);
        return Ok((full, local));
    }
    // 4.x: `rope_theta` + `rope_scaling`; Gemma 3's scaling applies to its global layers only.
    let full = match raw.rope_scaling.as_ref().filter(|v| !v.is_null()) {
        Some(scaling) => parse_rope(scaling, "rope_scaling", theta)?,
        None => Rope::plain(theta),
    };
    let local = (architecture == Architecture::Gemma3).then(|| Rope::plain(local_theta));
    Ok((full.clone(), local.filter(|l| l != &full)))
}

/// One layer type per layer, from `layer_types` (5.x) or the family's 4.x rule.
fn parse_layer_types(raw: &RawConfig, architecture: Architecture) -> Result<Vec<LayerType>, String> {
    let n = raw.num_hidden_layers;
    if let Some(types) = &raw.layer_types {
        if types.len() != n {
            return Err(format!("layer_types has {} entries for {n} layers", types.len()));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                "full_attention" => Ok(LayerType::Full),
                "sliding_attention" => Ok(LayerType::Sliding),
                other => {
                    Err(format!("layer_types entry {other:?} is not supported (full_attention, sliding_attention)"))
                }
            })
            .collect();
    }
    let sliding = |yes: bool| if yes { LayerType::Sliding } else { LayerType::Full };
    Ok((0..n)
        .map(|i| match architecture {
            Architecture::Llama => LayerType::Full,
            Architecture::Mistral => sliding(raw.sliding_window.is_some()),
            Architecture::Qwen2 | Architecture::Qwen3 => {
                sliding(raw.use_sliding_window.unwrap_or(false) && i >= raw.max_window_layers.unwrap_or(0))
            }
            Architecture::Gemma2 => sliding(i % 2 == 0),
            Architecture::Gemma3 => sliding(!(i + 1).is_multiple_of(raw.sliding_window_pattern.unwrap_or(6))),
        })
        .collect())
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, TrainerError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|_| TrainerError::MissingFile {
            path: path.clone(),
            what: "a Hugging Face model folder needs config.json",
        })?;
        Self::from_json(&text, &path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, TrainerError> {
        let invalid = |reason: String| TrainerError::InvalidConfig { path: path.to_path_buf(), reason };
        let mut value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        // Multimodal Gemma 3 checkpoints keep the language model's settings in `text_config`.
        if value.get("model_type").and_then(Value::as_str) == Some("gemma3") {
            let mut text_config = value.get("text_config").cloned().unwrap_or(Value::Null);
            let Some(map) = text_config.as_object_mut() else {
                return Err(invalid("a gemma3 config needs a text_config object".into()));
            };
            map.insert("model_type".into(), "gemma3_text".into());
            for key in ["tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"] {
                if let Some(v) = value.get(key).filter(|_| !map.contains_key(key)) {
                    map.insert(key.into(), v.clone());
                }
            }
            value = text_config;
        }
        let raw: RawConfig = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        let model_type = raw.model_type.clone().unwrap_or_default();
        let architecture = match model_type.as_str() {
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            "gemma2" => Architecture::Gemma2,
            "gemma3_text" => Architecture::Gemma3,
            _ => {
                return Err(TrainerError::UnsupportedModelType { model_type, path: path.to_path_buf() });
            }
        };
        let gemma = architecture.is_gemma();
        // Gemma names its activation `hidden_activation` (`hidden_act` is Gemma 1's legacy key).
        let (act_key, act) = match (&raw.hidden_activation, &raw.hidden_act) {
            (Some(a), _) if gemma => ("hidden_activation", a.as_str()),
            (_, Some(a)) => ("hidden_act", a.as_str()),
            _ => ("hidden_act", if gemma { "gelu_pytorch_tanh" } else { "silu" }),
        };
        let activation = match act {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
            other => return Err(invalid(format!("{act_key} {other:?} is not supported (silu, gelu_pytorch_tanh)"))),
        };
        if raw.num_attention_heads == 0
            || (raw.head_dim.is_none() && !raw.hidden_size.is_multiple_of(raw.num_attention_heads))
        {
            return Err(invalid("hidden_size must be a multiple of num_attention_heads (or head_dim given)".into()));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(invalid("num_attention_heads must be a multiple of num_key_value_heads".into()));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if !head_dim.is_multiple_of(2) {
            return Err(invalid(format!("head_dim {head_dim} must be even for RoPE")));
        }
        let (rope, local_rope) = parse_ropes(&raw, architecture).map_err(&invalid)?;
        let layer_types = parse_layer_types(&raw, architecture).map_err(&invalid)?;
        let sliding_window = raw.sliding_window.filter(|_| layer_types.contains(&LayerType::Sliding));
        if layer_types.contains(&LayerType::Sliding) && sliding_window.is_none() {
            return Err(invalid("layer_types has sliding_attention layers but sliding_window is not set".into()));
        }
        if sliding_window == Some(0) {
            return Err(invalid("sliding_window must be at least 1".into()));
        }
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        Ok(ModelConfig {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope,
            local_rope,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(gemma),
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Gemma3),
            activation,
            layer_types,
            sliding_window,
            query_pre_attn_scalar: if gemma {
                Some(raw.query_pre_attn_scalar.unwrap_or(head_dim as f64))
            } else {
                None
            },
            attn_logit_softcapping: raw.attn_logit_softcapping.filter(|_| gemma),
            final_logit_softcapping: raw.final_logit_softcapping.filter(|_| gemma),
            bos_token_id: raw.bos_token_id.as_ref().and_then(TokenIdField::first),
            eos_token_id: raw.eos_token_id.as_ref().and_then(TokenIdField::first),
            pad_token_id: raw.pad_token_id.as_ref().and_then(TokenIdField::first),
        })
    }

    /// The `config.json` that transformers 5.x reads back for this configuration (the
    /// top-level `rope_theta` is kept for readers of the 4.x shape).
    pub fn to_hf_json(&self) -> Value {
        let rope_json = |rope: &Rope| match rope.scaling {
            RopeScaling::None => serde_json::json!({"rope_type": "default", "rope_theta": rope.theta}),
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "rope_theta": rope.theta, "factor": factor})
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                serde_json::json!({
                    "rope_type": "llama3", "rope_theta": rope.theta, "factor": factor,
                    "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position_embeddings as u64,
                })
            }
        };
        let has_sliding = self.layer_types.contains(&LayerType::Sliding);
        let rope_parameters = match (&self.local_rope, self.architecture.is_gemma() && has_sliding) {
            (Some(local), _) => {
                serde_json::json!({"full_attention": rope_json(&self.rope), "sliding_attention": rope_json(local)})
            }
            (None, true) => {
                serde_json::json!({"full_attention": rope_json(&self.rope), "sliding_attention": rope_json(&self.rope)})
            }
            (None, false) => rope_json(&self.rope),
        };
        let activation = match self.activation {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        };
        let mut json = serde_json::json!({
            "architectures": [self.architecture.class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope.theta,
            "rope_parameters": rope_parameters,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.architecture != Architecture::Qwen2 && self.qkv_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_act": activation,
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        });
        let map = json.as_object_mut().expect("an object");
        if self.architecture.is_gemma() {
            map.insert("hidden_activation".into(), activation.into());
            map.insert("query_pre_attn_scalar".into(), self.query_pre_attn_scalar.into());
            map.insert("attn_logit_softcapping".into(), self.attn_logit_softcapping.into());
            map.insert("final_logit_softcapping".into(), self.final_logit_softcapping.into());
        }
        if has_sliding || self.architecture != Architecture::Llama {
            let types: Vec<&str> = self
                .layer_types
                .iter()
                .map(|t| match t {
                    LayerType::Full => "full_attention",
                    LayerType::Sliding => "sliding_attention",
                })
                .collect();
            map.insert("layer_types".into(), types.into());
            map.insert("sliding_window".into(), self.sliding_window.into());
            if matches!(self.architecture, Architecture::Qwen2 | Architecture::Qwen3) {
                map.insert("use_sliding_window".into(), has_sliding.into());
            }
        }
        json
    }

    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The scale of the attention scores.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self.query_pre_attn_scalar.unwrap_or(self.head_dim as f64).sqrt()
    }

    /// The sliding window of layer `i`, `None` for a full-attention layer.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        (self.layer_types.get(i) == Some(&LayerType::Sliding)).then_some(self.sliding_window).flatten()
    }

    /// Weights of all decoder-layer linears (q, k, v, o, gate, up, down): the per-token
    /// matmul work is twice this many FLOPs.
    pub fn layer_linear_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * self.intermediate_size;
        self.num_hidden_layers * (attn + mlp)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig, TrainerError> {
        ModelConfig::from_json(json, Path::new("config.json"))
    }

    const BASE: &str =
        r#""vocab_size":32,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":1,"num_attention_heads":4"#;

    #[test]
    fn qwen2_gets_qkv_bias_and_llama_defaults_fill_in() {
        let qwen = parse(&format!(r#"{{"model_type":"qwen2",{BASE},"num_key_value_heads":2}}"#)).unwrap();
        assert_eq!(qwen.architecture, Architecture::Qwen2);
        assert!(qwen.qkv_bias && !qwen.o_bias);
        assert_eq!(qwen.kv_groups(), 2);
        let llama = parse(&format!(r#"{{"model_type":"llama",{BASE},"rope_theta":500000.0}}"#)).unwrap();
        assert!(!llama.qkv_bias);
        assert_eq!(llama.num_key_value_heads, 4);
        assert_eq!(llama.head_dim, 4);
        assert_eq!(llama.rope, Rope::plain(500000.0));
    }

    #[test]
    fn rope_parameters_take_precedence() {
        let c = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_theta":1.0,"rope_parameters":{{"rope_theta":7.0,"rope_type":"default"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.rope.theta, 7.0);
    }

    #[test]
    fn unsupported_model_type_is_a_clear_error() {
        let err = parse(&format!(r#"{{"model_type":"gpt2",{BASE}}}"#)).unwrap_err();
        assert!(matches!(err, TrainerError::UnsupportedModelType { .. }));
        assert!(err.to_string().contains("gpt2"), "{err}");
    }

    #[test]
    fn missing_config_names_the_file() {
        let err = ModelConfig::from_dir(Path::new("/nonexistent-dir")).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn llama3_rope_scaling_reads_in_both_shapes() {
        let v4 = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_theta":500000.0,"rope_scaling":{{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_parameters":{{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        ))
        .unwrap();
        assert_eq!(v4.rope, v5.rope);
        assert!(matches!(v4.rope.scaling, RopeScaling::Llama3 { factor: 8.0, .. }));
    }

    #[test]
    fn unknown_rope_settings_name_the_key() {
        let err = parse(&format!(r#"{{"model_type":"llama",{BASE},"rope_scaling":{{"type":"yarn","factor":2.0}}}}"#))
            .unwrap_err();
        assert!(err.to_string().contains("rope_scaling.rope_type \"yarn\""), "{err}");
        let err = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_parameters":{{"rope_type":"linear","factor":2.0,"beta_fast":32}}}}"#
        ))
        .unwrap_err();
        assert!(err.to_string().contains("rope_parameters.beta_fast"), "{err}");
        let err =
            parse(&format!(r#"{{"model_type":"llama",{BASE},"rope_scaling":{{"rope_type":"linear"}}}}"#)).unwrap_err();
        assert!(err.to_string().contains("rope_scaling.factor is required"), "{err}");
    }

    #[test]
    fn gemma3_layer_types_and_ropes_agree_between_shapes() {
        let v4 = parse(&format!(
            r#"{{"model_type":"gemma3_text",{BASE},"num_hidden_layers":6,"sliding_window":4,"sliding_window_pattern":3,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"rope_scaling":{{"rope_type":"linear","factor":8.0}}}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"model_type":"gemma3_text",{BASE},"num_hidden_layers":6,"sliding_window":4,"layer_types":["sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","full_attention"],"rope_parameters":{{"full_attention":{{"rope_type":"linear","factor":8.0,"rope_theta":1000000.0}},"sliding_attention":{{"rope_type":"default","rope_theta":10000.0}}}}}}"#
        ))
        .unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v4.layer_window(0), Some(4));
        assert_eq!(v4.layer_window(2), None);
        assert_eq!(v4.local_rope, Some(Rope::plain(10_000.0)));
        assert!(v4.tie_word_embeddings && v4.qk_norm && v4.activation == Activation::GeluTanh);
        let round_trip = parse(&v5.to_hf_json().to_string()).unwrap();
        assert_eq!(round_trip, v5);
    }

    #[test]
    fn multimodal_gemma3_reads_its_text_config() {
        let c = parse(&format!(
            r#"{{"model_type":"gemma3","text_config":{{{BASE},"sliding_window":4}},"vision_config":{{}}}}"#
        ))
        .unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert_eq!(c.hidden_size, 16);
    }

    #[test]
    fn llama3_frequencies_match_transformers() {
        // transformers' _compute_llama3_parameters for head_dim 16, theta 500000, factor 8,
        // low 1, high 4, original context 32 (float32).
        let rope = Rope {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 32.0,
            },
        };
        let theirs = [
            1.0,
            0.024_240_344_762_802_124,
            0.004_700_753_837_823_868,
            0.000_911_583_134_438_842_5,
            0.000_176_776_680_746_115_74,
            3.428_102_354_519_069e-5,
            6.647_869_668_086_059e-6,
            1.289_173_155_782_919e-6,
        ];
        for (ours, theirs) in rope.inv_freq(16).iter().zip(theirs) {
            assert!((*ours as f64 / theirs - 1.0).abs() < 1e-6, "{ours} vs {theirs}");
        }
    }
}
