//! The model hyper-parameters read from a Hugging Face `config.json` (Llama, Mistral-style,
//! SmolLM and Qwen2 checkpoints), normalised into one [`ModelConfig`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainerError;

/// Architecture family; decides the defaults that differ between families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama, Mistral-style (no sliding window used at these lengths) and SmolLM.
    Llama,
    /// Qwen2: like Llama but q/k/v projections carry a bias.
    Qwen2,
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
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (always for Qwen2, `attention_bias` for Llama).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias` for Llama; never for Qwen2).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// The subset of `config.json` we read; unknown keys are ignored like transformers does.
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
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<TokenIdField>,
    eos_token_id: Option<TokenIdField>,
    pad_token_id: Option<TokenIdField>,
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
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
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let model_type = raw.model_type.clone().unwrap_or_default();
        let architecture = match model_type.as_str() {
            "llama" | "mistral" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            _ => {
                return Err(TrainerError::UnsupportedModelType { model_type, path: path.to_path_buf() });
            }
        };
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(invalid(format!("hidden_act {act:?} is not supported (only silu)")));
        }
        let rope_type = raw.rope_parameters.as_ref().and_then(|p| p.rope_type.clone());
        if rope_type.as_deref().is_some_and(|t| t != "default")
            || raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(invalid("RoPE scaling (rope_scaling / rope_type other than default) is not supported".into()));
        }
        if raw.num_attention_heads == 0
            || (raw.head_dim.is_none() && !raw.hidden_size.is_multiple_of(raw.num_attention_heads))
        {
            return Err(invalid("hidden_size must be a multiple of num_attention_heads (or head_dim given)".into()));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(invalid("num_attention_heads must be a multiple of num_key_value_heads".into()));
        }
        let rope_theta = raw.rope_parameters.as_ref().and_then(|p| p.rope_theta).or(raw.rope_theta).unwrap_or(10_000.0);
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Llama => (attention_bias, attention_bias),
            Architecture::Qwen2 => (true, false),
        };
        Ok(ModelConfig {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            bos_token_id: raw.bos_token_id.as_ref().and_then(TokenIdField::first),
            eos_token_id: raw.eos_token_id.as_ref().and_then(TokenIdField::first),
            pad_token_id: raw.pad_token_id.as_ref().and_then(TokenIdField::first),
        })
    }

    /// The `config.json` that transformers reads back for this configuration.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let model_type = match self.architecture {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        };
        let class = match self.architecture {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        };
        serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.architecture == Architecture::Llama && self.qkv_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        })
    }

    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
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
        assert_eq!(llama.rope_theta, 500000.0);
    }

    #[test]
    fn rope_parameters_take_precedence() {
        let c = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_theta":1.0,"rope_parameters":{{"rope_theta":7.0,"rope_type":"default"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.rope_theta, 7.0);
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
    fn rope_scaling_is_rejected() {
        let err = parse(&format!(r#"{{"model_type":"llama",{BASE},"rope_scaling":{{"type":"linear","factor":2.0}}}}"#))
            .unwrap_err();
        assert!(err.to_string().contains("RoPE scaling"), "{err}");
    }
}
