//! Writing a model as a GGUF file that llama.cpp and Ollama load: llama.cpp's `llama`
//! architecture (Llama 1–3.x, SmolLM, Mistral without a sliding window), `qwen2`, `qwen3`,
//! `gemma2` and `gemma3` (norms stored as the `1 + w` they compute, as llama.cpp's converter
//! does, and each layer's sliding window written out), weight matrices as F32, F16, Q8_0 or
//! Q4_0 (norms and biases stay F32, as llama.cpp's converter keeps them), the tokenizer (byte-level
//! BPE with its merges, or SentencePiece-style BPE with a score per piece) and the chat template
//! as `tokenizer.ggml.*` metadata, and Llama 3's RoPE scaling as the `rope_freqs.weight`
//! divisors. For `llama`, Q/K rows go into llama.cpp's interleaved-RoPE order (`gguf.rs` undoes
//! it when reading back).

use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use serde_json::Value as Json;

use crate::model::LlamaModel;
use crate::model::config::{Architecture, LayerType, ModelConfig, Rope, RopeScaling};
use crate::model::tokenizer::ChatTokenizer;

/// How the weight matrices are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GgufQuant {
    /// Lossless (four bytes a weight).
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl GgufQuant {
    fn dtype(self) -> GgmlDType {
        match self {
            GgufQuant::F32 => GgmlDType::F32,
            GgufQuant::F16 => GgmlDType::F16,
            GgufQuant::Q8_0 => GgmlDType::Q8_0,
            GgufQuant::Q4_0 => GgmlDType::Q4_0,
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            GgufQuant::F32 => 0,
            GgufQuant::F16 => 1,
            GgufQuant::Q4_0 => 2,
            GgufQuant::Q8_0 => 7,
        }
    }
}

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
const NORMAL_TOKEN: i32 = 1;
const UNKNOWN_TOKEN: i32 = 2;
const CONTROL_TOKEN: i32 = 3;
const USER_DEFINED_TOKEN: i32 = 4;
const UNUSED_TOKEN: i32 = 5;
const BYTE_TOKEN: i32 = 6;

/// llama.cpp's architecture name for the model, or why it cannot be written.
fn gguf_architecture(config: &ModelConfig) -> anyhow::Result<&'static str> {
    let arch = match config.architecture {
        Architecture::Llama => "llama",
        Architecture::Mistral if config.sliding_window.is_none() => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
        Architecture::Gemma2 => "gemma2",
        Architecture::Gemma3 => "gemma3",
        other => bail!(
            "GGUF export writes llama, mistral (without a sliding window), qwen2, qwen3, gemma2 and gemma3 models; \
             this one is {other:?}"
        ),
    };
    let unread_norms = config.qk_norm && !matches!(arch, "qwen3" | "gemma3");
    if config.o_bias || config.mlp_bias || unread_norms || (config.qkv_bias && arch != "qwen2") {
        bail!("GGUF export: this {arch} model has biases or q/k norms llama.cpp's {arch} does not read");
    }
    if config.architecture.is_gemma() {
        check_gemma(config, arch)?;
    }
    Ok(arch)
}

/// What llama.cpp's `gemma2` / `gemma3` cannot be told, and so must already hold: the score
/// scale is `head_dim^-½` (`(hidden / heads)^-½` for the 27B models, by their layer count),
/// not read from the file; RoPE scaling is linear or none; `gemma3`'s sliding layers rotate
/// unscaled and it has no attention soft-capping; `gemma2`'s sliding layers use the global
/// layers' scaling and its output is always the embedding matrix.
fn check_gemma(config: &ModelConfig, arch: &str) -> anyhow::Result<()> {
    let layers_27b = if arch == "gemma2" { 46 } else { 62 };
    let llama_cpp_scalar = if config.num_hidden_layers == layers_27b {
        (config.hidden_size / config.num_attention_heads) as f64
    } else {
        config.head_dim as f64
    };
    let scalar = config.query_pre_attn_scalar.unwrap_or(config.head_dim as f64);
    if scalar != llama_cpp_scalar {
        bail!(
            "GGUF export: query_pre_attn_scalar {scalar} is not the {llama_cpp_scalar} llama.cpp's {arch} assumes for a \
             {}-layer model (it does not read the value from the file)",
            config.num_hidden_layers
        );
    }
    let readable = |rope: &Rope| matches!(rope.scaling, RopeScaling::None | RopeScaling::Linear { .. });
    let local = config.local_rope.as_ref().unwrap_or(&config.rope);
    if !readable(&config.rope) || !readable(local) {
        bail!("GGUF export: llama.cpp's {arch} reads only linear RoPE scaling");
    }
    if arch == "gemma3" {
        if config.attn_logit_softcapping.is_some() {
            bail!("GGUF export: llama.cpp's gemma3 has no attention soft-capping (attn_logit_softcapping is set)");
        }
        if local.scaling != RopeScaling::None {
            bail!("GGUF export: llama.cpp's gemma3 rotates sliding-window layers unscaled; this model scales them");
        }
    } else {
        if local.scaling != config.rope.scaling {
            bail!("GGUF export: llama.cpp's gemma2 scales sliding-window layers' RoPE as the global ones'");
        }
        if !config.tie_word_embeddings {
            bail!("GGUF export: llama.cpp's gemma2 always uses the embeddings as the output; this model has its own");
        }
    }
    Ok(())
}

/// Writes `model` (adapters merged) and its tokenizer as one GGUF file at `out`.
pub fn write_gguf(
    model: &LlamaModel,
    tokenizer: &ChatTokenizer,
    quant: GgufQuant,
    name: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let config = &model.config;
    let arch = gguf_architecture(config)?;
    let mut metadata = model_metadata(config, arch, quant, name);
    metadata.extend(tokenizer_metadata(tokenizer, config, arch)?);

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, weight) in model.merged_weights()? {
        let gguf = gguf_name(&hf, config.architecture.is_gemma())
            .ok_or_else(|| anyhow!("GGUF export: no llama.cpp name for tensor {hf}"))?;
        let mut weight = weight.to_dtype(DType::F32)?;
        // llama.cpp multiplies by a Gemma norm's weight as stored: the `1 + w` Gemma computes.
        if config.architecture.is_gemma() && hf.ends_with("norm.weight") {
            weight = (weight + 1.0)?;
        }
        // llama.cpp's `llama` rotates interleaved pairs; `qwen2`/`qwen3` rotate halves as HF does.
        if arch == "llama" && gguf.ends_with("attn_q.weight") {
            weight = permute_rope_rows(&weight, config.num_attention_heads)?;
        } else if arch == "llama" && gguf.ends_with("attn_k.weight") {
            weight = permute_rope_rows(&weight, config.num_key_value_heads)?;
        }
        tensors.push((gguf, quantize(&weight, quant)?));
    }
    if let RopeScaling::Llama3 { .. } = config.rope.scaling {
        let divisors = rope_divisors(&config.rope, config.head_dim);
        let divisors = Tensor::from_vec(divisors, config.head_dim / 2, &candle_core::Device::Cpu)?;
        tensors.push(("rope_freqs.weight".into(), QTensor::quantize(&divisors, GgmlDType::F32)?));
    }

    let partial = out.with_extension("gguf.partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = BufWriter::new(file);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut writer, &metadata, &tensors).with_context(|| format!("writing {}", partial.display()))?;
    writer.into_inner().map_err(|e| anyhow!("writing {}: {e}", partial.display()))?.sync_all()?;
    // Renamed only once complete, so a failed export never leaves a loadable-looking file.
    std::fs::rename(&partial, out).with_context(|| format!("moving the GGUF to {}", out.display()))?;
    Ok(())
}

fn model_metadata(config: &ModelConfig, arch: &str, quant: GgufQuant, name: &str) -> Vec<(String, Value)> {
    let key = |k: &str| format!("{arch}.{k}");
    let u32_of = |n: usize| Value::U32(n as u32);
    let mut metadata = vec![
        ("general.architecture".to_string(), Value::String(arch.into())),
        ("general.name".to_string(), Value::String(name.into())),
        ("general.file_type".to_string(), Value::U32(quant.file_type())),
        ("general.quantization_version".to_string(), Value::U32(2)),
        (key("context_length"), u32_of(config.max_position_embeddings)),
        (key("embedding_length"), u32_of(config.hidden_size)),
        (key("block_count"), u32_of(config.num_hidden_layers)),
        (key("feed_forward_length"), u32_of(config.intermediate_size)),
        (key("attention.head_count"), u32_of(config.num_attention_heads)),
        (key("attention.head_count_kv"), u32_of(config.num_key_value_heads)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(config.rms_norm_eps as f32)),
        (key("rope.freq_base"), Value::F32(config.rope.theta as f32)),
        (key("rope.dimension_count"), u32_of(config.head_dim)),
        (key("vocab_size"), u32_of(config.vocab_size)),
    ];
    if config.head_dim * config.num_attention_heads != config.hidden_size {
        metadata.push((key("attention.key_length"), u32_of(config.head_dim)));
        metadata.push((key("attention.value_length"), u32_of(config.head_dim)));
    }
    if let RopeScaling::Linear { factor } = config.rope.scaling {
        metadata.push((key("rope.scaling.type"), Value::String("linear".into())));
        metadata.push((key("rope.scaling.factor"), Value::F32(factor as f32)));
    }
    if config.architecture.is_gemma() {
        // Gemma's window and which layers use it, per layer: llama.cpp otherwise assumes every
        // 6th (gemma3) or 2nd (gemma2) layer is global, and a 4096-token window for gemma2.
        let sliding = |layer: &LayerType| config.sliding_window.is_some() && *layer == LayerType::Sliding;
        if let Some(window) = config.sliding_window {
            metadata.push((key("attention.sliding_window"), u32_of(window)));
        }
        let pattern = config.layer_types.iter().map(|layer| Value::Bool(sliding(layer))).collect();
        metadata.push((key("attention.sliding_window_pattern"), Value::Array(pattern)));
        let local = config.local_rope.as_ref().unwrap_or(&config.rope);
        metadata.push((key("rope.freq_base_swa"), Value::F32(local.theta as f32)));
        if let Some(cap) = config.attn_logit_softcapping {
            metadata.push((key("attn_logit_softcapping"), Value::F32(cap as f32)));
        }
        if let Some(cap) = config.final_logit_softcapping {
            metadata.push((key("final_logit_softcapping"), Value::F32(cap as f32)));
        }
    }
    metadata
}

/// The vocabulary, token types, special tokens and chat template: byte-level BPE as llama.cpp's
/// `gpt2` (with its merges), SentencePiece-style BPE (byte fallback, spaces as `▁`: Gemma,
/// Llama 2, Mistral) as `llama` (with each piece's score).
fn tokenizer_metadata(
    tokenizer: &ChatTokenizer,
    config: &ModelConfig,
    arch: &str,
) -> anyhow::Result<Vec<(String, Value)>> {
    let json: Json =
        serde_json::from_str(&tokenizer.inner.to_string(false).map_err(|e| anyhow!("reading the tokenizer: {e}"))?)?;
    let kind = json["model"]["type"].as_str().unwrap_or("unknown");
    let byte_level =
        json["pre_tokenizer"].to_string().contains("ByteLevel") || json["decoder"].to_string().contains("ByteLevel");
    let sentencepiece = json["model"]["byte_fallback"].as_bool() == Some(true)
        && (json["normalizer"].to_string().contains('\u{2581}')
            || json["pre_tokenizer"].to_string().contains("Metaspace"));
    if kind != "BPE" || !(byte_level || sentencepiece) {
        bail!(
            "GGUF export needs a byte-level BPE tokenizer (llama.cpp's \"gpt2\") or a SentencePiece-style BPE with byte \
             fallback (\"llama\"); this tokenizer.json is a {kind} model of neither kind"
        );
    }
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; config.vocab_size];
    let vocab = json["model"]["vocab"].as_object().ok_or_else(|| anyhow!("tokenizer.json: model.vocab is missing"))?;
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| anyhow!("tokenizer.json: the id of {token:?} is not a number"))? as usize;
        if let Some(slot) = tokens.get_mut(id) {
            let is_byte = token.len() == 6 && token.starts_with("<0x") && token.ends_with('>');
            *slot = Some((token.clone(), if sentencepiece && is_byte { BYTE_TOKEN } else { NORMAL_TOKEN }));
        }
    }
    if let Some(unk) = json["model"]["unk_token"].as_str().and_then(|t| vocab.get(t)).and_then(Json::as_u64)
        && let Some(Some((_, kind))) = tokens.get_mut(unk as usize)
    {
        *kind = UNKNOWN_TOKEN;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else { continue };
        let kind = if added["special"].as_bool().unwrap_or(false) { CONTROL_TOKEN } else { USER_DEFINED_TOKEN };
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some((content.to_string(), kind));
        }
    }
    // Rows of a padded embedding that no token uses.
    let tokens: Vec<(String, i32)> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, token)| token.unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED_TOKEN)))
        .collect();
    // Merges come as "a b" strings or, from newer tokenizers, as ["a", "b"] pairs.
    let merges: Vec<(String, String)> = json["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|merge| {
            let pair = match merge {
                Json::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                Json::Array(pair) if pair.len() == 2 => {
                    pair[0].as_str().zip(pair[1].as_str()).map(|(a, b)| (a.into(), b.into()))
                }
                _ => None,
            };
            pair.ok_or_else(|| anyhow!("tokenizer.json: unreadable merge {merge}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut metadata = if sentencepiece {
        sentencepiece_metadata(&json, &tokens, &merges)
    } else {
        vec![
            ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".to_string(), Value::String(pre_tokenizer(&json, arch).into())),
            (
                "tokenizer.ggml.merges".to_string(),
                Value::Array(merges.iter().map(|(a, b)| Value::String(format!("{a} {b}"))).collect()),
            ),
        ]
    };
    let (tokens, types): (Vec<Value>, Vec<Value>) =
        tokens.into_iter().map(|(text, kind)| (Value::String(text), Value::I32(kind))).unzip();
    metadata.extend([
        ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(tokenizer.eos.1)),
        ("tokenizer.ggml.padding_token_id".to_string(), Value::U32(tokenizer.pad_id)),
        ("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(tokenizer.adds_bos())),
        ("tokenizer.chat_template".to_string(), Value::String(tokenizer.chat_template().to_string())),
    ]);
    if let Some((_, bos)) = &tokenizer.bos {
        metadata.push(("tokenizer.ggml.bos_token_id".to_string(), Value::U32(*bos)));
    }
    Ok(metadata)
}

/// A SentencePiece-style BPE as llama.cpp's `llama` vocabulary, which merges the adjacent pair
/// whose merged piece scores highest: each piece scores minus the rank of its best merge
/// (pieces no merge makes score below them all), and a leading space is added when the
/// normalizer prepends `▁` (or a Metaspace pre-tokenizer does).
fn sentencepiece_metadata(json: &Json, tokens: &[(String, i32)], merges: &[(String, String)]) -> Vec<(String, Value)> {
    let mut rank_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (rank, (a, b)) in merges.iter().enumerate() {
        rank_of.entry(format!("{a}{b}")).or_insert(rank);
    }
    let unmerged = -(merges.len() as f32) - 1.0;
    let scores =
        tokens.iter().map(|(text, _)| Value::F32(rank_of.get(text).map_or(unmerged, |&rank| -(rank as f32)))).collect();
    let normalizer = json["normalizer"].to_string();
    let metaspace = &json["pre_tokenizer"];
    let metaspace_prefix = metaspace.to_string().contains("Metaspace")
        && !metaspace.to_string().contains("\"prepend_scheme\":\"never\"")
        && !metaspace.to_string().contains("\"add_prefix_space\":false");
    let add_space_prefix = normalizer.contains("\"Prepend\"") || metaspace_prefix;
    let unk = tokens.iter().position(|(_, kind)| *kind == UNKNOWN_TOKEN);
    let mut metadata = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".to_string(), Value::String("default".into())),
        ("tokenizer.ggml.scores".to_string(), Value::Array(scores)),
        ("tokenizer.ggml.add_space_prefix".to_string(), Value::Bool(add_space_prefix)),
    ];
    if let Some(unk) = unk {
        metadata.push(("tokenizer.ggml.unknown_token_id".to_string(), Value::U32(unk as u32)));
    }
    metadata
}

/// llama.cpp's name for the pre-tokenizer's splitting rules (`tokenizer.ggml.pre`).
fn pre_tokenizer(json: &Json, arch: &str) -> &'static str {
    let pre = json["pre_tokenizer"].to_string();
    // llama.cpp's `qwen2` pre-tokenizer is also Qwen3's (the same regex).
    if arch == "qwen2" || arch == "qwen3" {
        "qwen2"
    } else if pre.contains("\"individual_digits\":true") {
        "smollm"
    } else if json["model"]["vocab"].get("<|begin_of_text|>").is_some()
        || json["added_tokens"].to_string().contains("<|begin_of_text|>")
    {
        "llama-bpe"
    } else {
        "default"
    }
}

/// Hugging Face tensor name → llama.cpp's (Gemma's four norms a layer have names of their own).
fn gguf_name(hf: &str, gemma: bool) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let leaf = match leaf {
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" if gemma => "post_attention_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{leaf}"))
}

/// HF's rotate-half row order → llama.cpp's interleaved order (its converter's `permute`).
fn permute_rope_rows(w: &Tensor, heads: usize) -> anyhow::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    Ok(w.reshape((heads, 2, out / heads / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

/// Matrices in the chosen format (F16 when a row does not split into its blocks); vectors
/// (norms, biases) in F32.
fn quantize(weight: &Tensor, quant: GgufQuant) -> anyhow::Result<QTensor> {
    if weight.rank() < 2 {
        return Ok(QTensor::quantize(weight, GgmlDType::F32)?);
    }
    let dtype = quant.dtype();
    let row = weight.dims()[weight.rank() - 1];
    let dtype = if row.is_multiple_of(dtype.block_size()) { dtype } else { GgmlDType::F16 };
    Ok(QTensor::quantize(weight, dtype)?)
}

/// Llama 3's scaling as llama.cpp stores it: each frequency's divisor of the plain one.
fn rope_divisors(rope: &Rope, head_dim: usize) -> Vec<f32> {
    let plain = Rope::plain(rope.theta).inv_freq(head_dim);
    let scaled = rope.inv_freq(head_dim);
    plain.iter().zip(&scaled).map(|(p, s)| p / s).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::gguf_architecture;
    use crate::model::config::{ModelConfig, Rope, RopeScaling};

    fn gemma_fixture(family: &str) -> ModelConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(family).join("model");
        ModelConfig::from_dir(&dir).unwrap()
    }

    /// What llama.cpp's Gemma architectures would silently compute differently is refused,
    /// naming the setting.
    #[test]
    fn gemma_settings_llama_cpp_cannot_read_are_refused() {
        let refusal = |config: &ModelConfig| gguf_architecture(config).unwrap_err().to_string();
        // The Gemma 3 fixture scales scores by 24^-½ where llama.cpp assumes head_dim 16.
        let mut gemma3 = gemma_fixture("gemma3");
        assert!(refusal(&gemma3).contains("query_pre_attn_scalar 24"), "{}", refusal(&gemma3));
        gemma3.query_pre_attn_scalar = Some(16.0);
        assert_eq!(gguf_architecture(&gemma3).unwrap(), "gemma3");
        gemma3.attn_logit_softcapping = Some(50.0);
        assert!(refusal(&gemma3).contains("attn_logit_softcapping"));
        gemma3.attn_logit_softcapping = None;
        gemma3.local_rope = Some(Rope { theta: 10_000.0, scaling: RopeScaling::Linear { factor: 2.0 } });
        assert!(refusal(&gemma3).contains("unscaled"));

        let mut gemma2 = gemma_fixture("gemma2");
        assert_eq!(gguf_architecture(&gemma2).unwrap(), "gemma2");
        gemma2.tie_word_embeddings = false;
        assert!(refusal(&gemma2).contains("embeddings as the output"));
    }
}
