//! GGUF loading: the parity fixture's model is written as a llama.cpp-style GGUF here (tensor
//! names, Q/K rows permuted for interleaved RoPE the way llama.cpp's converter does it,
//! vocabulary and merges as metadata, f32 and Q8_0 tensors) and must give the same token ids
//! and, for f32, the same log-probs as PyTorch on the original; a model folder written from
//! the GGUF (with its rebuilt tokenizer) loads back identically; decode steps on a quantized
//! file's own blocks equal the dense forward.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use pairwise_trainer::data::pairs::{Truncation, read_jsonl, tokenize_pair};
use pairwise_trainer::methods::score::score_pairs;
use pairwise_trainer::model::load::load_model_and_tokenizer;
use pairwise_trainer::model::{ForwardCtx, LlamaModel, ModelInput};
use serde_json::Value as Json;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

/// HF rotate-half order → llama.cpp's interleaved order (convert_hf_to_gguf.py's `permute`).
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

fn write_gguf(path: &Path, dtype: GgmlDType) {
    write_gguf_with(path, dtype, None, false);
}

fn write_gguf_with_rope_freqs(path: &Path, dtype: GgmlDType, rope_freqs: Option<&[f32]>) {
    write_gguf_with(path, dtype, rope_freqs, false);
}

/// The fixture as a GGUF, with `rope_freqs.weight` (Llama 3 RoPE scaling) when given; `tied`
/// leaves `output.weight` out, so the embeddings serve as the output projection.
fn write_gguf_with(path: &Path, dtype: GgmlDType, rope_freqs: Option<&[f32]>, tied: bool) {
    let dir = fixture().join("model");
    let config: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tok: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in weights.iter().filter(|(name, _)| !(tied && name.as_str() == "lm_head.weight")) {
        let gguf_name = name
            .replace("model.embed_tokens", "token_embd")
            .replace("model.norm", "output_norm")
            .replace("lm_head", "output")
            .replace("model.layers.", "blk.")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down")
            .replace("post_attention_layernorm", "ffn_norm")
            .replace("input_layernorm", "attn_norm");
        let t = if name.contains("q_proj") {
            permute(t, 4)
        } else if name.contains("k_proj") {
            permute(t, 2)
        } else {
            t.clone()
        };
        // Norm vectors, and rows that do not fill whole blocks, stay f32 (as llama.cpp does).
        let whole_blocks = t.dims().last().unwrap() % dtype.block_size() == 0;
        let dt = if t.rank() == 1 || !whole_blocks { GgmlDType::F32 } else { dtype };
        tensors.push((gguf_name, QTensor::quantize(&t, dt).unwrap()));
    }
    if let Some(divisors) = rope_freqs {
        let t = Tensor::new(divisors, &Device::Cpu).unwrap();
        tensors.push(("rope_freqs.weight".into(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Value::String(format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap())))
        .collect();
    let types: Vec<Value> = (0..tokens.len()).map(|i| Value::I32(if i < 3 { 3 } else { 1 })).collect();
    let u = |k: &str| Value::U32(config[k].as_u64().unwrap() as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.context_length", u("max_position_embeddings")),
        ("llama.embedding_length", u("hidden_size")),
        ("llama.block_count", u("num_hidden_layers")),
        ("llama.feed_forward_length", u("intermediate_size")),
        ("llama.attention.head_count", u("num_attention_heads")),
        ("llama.attention.head_count_kv", u("num_key_value_heads")),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.merges", Value::Array(merges)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ];
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

fn score_model(
    path: &Path,
) -> (Vec<pairwise_trainer::data::pairs::TokenizedPair>, Vec<pairwise_trainer::methods::score::ScoreRecord>) {
    let (model, tokenizer) = load_model_and_tokenizer(path, &Device::Cpu).unwrap();
    let limits = Truncation { max_length: 4096, max_prompt_length: 4096 };
    let pairs: Vec<_> = read_jsonl(&fixture().join("prefs.jsonl"), Some(8))
        .unwrap()
        .iter()
        .map(|p| tokenize_pair(&tokenizer, p, limits).unwrap())
        .collect();
    let records = score_pairs(&model, &pairs, tokenizer.pad_id, 0.1, None, 8).unwrap();
    (pairs, records)
}

#[test]
fn gguf_model_and_tokenizer_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let f32_path = dir.path().join("tiny-f32.gguf");
    write_gguf(&f32_path, GgmlDType::F32);
    let (pairs, records) = score_model(&f32_path);
    for ((pair, r), e) in pairs.iter().zip(&records).zip(expected["pairs"].as_array().unwrap()) {
        let ids: Vec<u32> = e["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .chain(e["chosen_ids"].as_array().unwrap())
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(pair.chosen.ids, ids, "GGUF tokenizer differs");
        let d = (r.ref_chosen_logp - e["base_chosen_logp"].as_f64().unwrap()).abs();
        assert!(d < 1e-4, "log-prob differs from PyTorch by {d}");
    }
    // A Hugging Face folder written from the GGUF (merge / full fine-tuning) scores the same,
    // with the rebuilt tokenizer saved beside it.
    let folder = dir.path().join("from-gguf");
    let (model, tokenizer) = load_model_and_tokenizer(&f32_path, &Device::Cpu).unwrap();
    pairwise_trainer::model::merge::write_model_folder(&model, Some(&f32_path), &folder).unwrap();
    pairwise_trainer::model::merge::write_rebuilt_tokenizer(&tokenizer, &f32_path, &folder).unwrap();
    let (folder_pairs, folder_records) = score_model(&folder);
    assert_eq!(folder_pairs, pairs);
    for (a, b) in folder_records.iter().zip(&records) {
        assert!((a.ref_chosen_logp - b.ref_chosen_logp).abs() < 1e-5);
    }
    // A quantized file loads too and stays close (Q8_0 error is about 1%).
    let q8_path = dir.path().join("tiny-q8.gguf");
    write_gguf(&q8_path, GgmlDType::Q8_0);
    let (_, quantized) = score_model(&q8_path);
    for (q, r) in quantized.iter().zip(&records) {
        let rel = (q.ref_chosen_logp - r.ref_chosen_logp).abs() / r.ref_chosen_logp.abs();
        assert!(rel < 0.05, "Q8_0 log-prob {} vs f32 {}", q.ref_chosen_logp, r.ref_chosen_logp);
    }
}

/// convert_hf_to_gguf.py's `rope_freqs` for Llama 3 scaling (in f64, from its formula): the
/// divisor of each of the `head_dim / 2` frequencies.
fn llama3_divisors(theta: f64, head_dim: usize, factor: f64, low: f64, high: f64, old: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelength = 2.0 * std::f64::consts::PI / freq;
            if wavelength < old / high {
                1.0
            } else if wavelength > old / low {
                factor as f32
            } else {
                let smooth = (old / wavelength - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

#[test]
fn llama3_rope_freqs_in_gguf_equal_the_folders_rope_scaling() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture folder with Llama 3 scaling in its config (the folder path is checked
    // against PyTorch in families.rs), and the same as a GGUF with rope_freqs.weight. With
    // head_dim 16 and θ 10⁴ three of the eight frequencies fall in the blended band.
    let folder = dir.path().join("llama3");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(fixture().join("model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
    }
    let mut config: Json = serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
    config["rope_parameters"] = serde_json::json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 16.0, "original_max_position_embeddings": 2048});
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    let divisors = llama3_divisors(10_000.0, 16, 8.0, 1.0, 16.0, 2048.0);
    assert_eq!(divisors.iter().filter(|&&d| d > 1.0 && d < 8.0).count(), 3);
    let scaled = dir.path().join("llama3.gguf");
    write_gguf_with_rope_freqs(&scaled, GgmlDType::F32, Some(&divisors));
    let plain = dir.path().join("plain.gguf");
    write_gguf(&plain, GgmlDType::F32);

    let (_, from_folder) = score_model(&folder);
    let (_, from_gguf) = score_model(&scaled);
    let (_, unscaled) = score_model(&plain);
    let mut moved = 0.0f64;
    for ((a, b), c) in from_folder.iter().zip(&from_gguf).zip(&unscaled) {
        let d = (a.ref_chosen_logp - b.ref_chosen_logp).abs();
        assert!(d < 1e-4, "GGUF with rope_freqs differs from the folder's llama3 scaling by {d}");
        moved = moved.max((a.ref_chosen_logp - c.ref_chosen_logp).abs());
    }
    assert!(moved > 1e-3, "the scaling must change the log-probs for this test to mean anything ({moved})");
    let (model, _) = load_model_and_tokenizer(&scaled, &Device::Cpu).unwrap();
    let pairwise_trainer::model::config::RopeScaling::Llama3 { factor, .. } = model.config.rope.scaling else {
        panic!("expected Llama 3 scaling, got {:?}", model.config.rope.scaling);
    };
    assert_eq!(factor, 8.0);

    // Divisors no Llama 3 scaling produces are refused, naming the tensor.
    let mut odd = divisors.clone();
    odd[1] = 3.0;
    let bad = dir.path().join("odd.gguf");
    write_gguf_with_rope_freqs(&bad, GgmlDType::F32, Some(&odd));
    let error = format!("{:#}", load_model_and_tokenizer(&bad, &Device::Cpu).err().expect("odd divisors refused"));
    assert!(error.contains("rope_freqs.weight"), "{error}");
}

/// Logits of the last position by the full forward pass (dense f32 weights throughout).
fn full_logits(model: &LlamaModel, ids: &[u32], ctx: &ForwardCtx) -> Vec<f32> {
    let input = ModelInput::right_padded(&[ids], 0, &Device::Cpu).unwrap();
    let hidden = model.hidden_states(&input, ctx).unwrap();
    let last = hidden.narrow(1, ids.len() - 1, 1).unwrap().squeeze(1).unwrap();
    model.logits(&last, ctx).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

/// Decode steps of a quantized GGUF multiply one or a few rows with the file's own Q4_1 /
/// Q8_0 blocks (the Q/K rows reordered to rotate-half like the dense copy), tied and untied
/// output projections alike; their logits must equal the full forward's, which multiplies
/// the dequantized f32 weights with gemm.
#[test]
fn decode_steps_on_gguf_blocks_equal_the_dense_forward() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ForwardCtx::eval(false);
    let tokens = [1u32, 4, 5, 6, 13, 5, 12, 20, 7, 9, 33, 41];
    for (dtype, tied) in [(GgmlDType::Q4_1, false), (GgmlDType::Q8_0, true), (GgmlDType::Q4_0, false)] {
        let path = dir.path().join(format!("tiny-{dtype:?}-{tied}.gguf"));
        write_gguf_with(&path, dtype, None, tied);
        let (model, _) = load_model_and_tokenizer(&path, &Device::Cpu).unwrap();
        // q, k, v, o, gate, up of both layers (down's 176 inputs are no whole blocks), and the head.
        assert_eq!(model.packed_weights(), 2 * 6 + 1, "{dtype:?}: weights kept in their blocks");
        for rows in [1, 3, 8] {
            let (mut caches, _) = model.initial_caches(rows, &ctx).unwrap();
            for (i, &token) in tokens.iter().enumerate() {
                let logits = model
                    .decode_step(
                        &Tensor::from_vec(vec![token; rows], (rows, 1), &Device::Cpu).unwrap(),
                        &Tensor::from_vec(vec![i as u32; rows], (rows, 1), &Device::Cpu).unwrap(),
                        &Tensor::zeros((rows, 1, 1, 1, i + 1), DType::F32, &Device::Cpu).unwrap(),
                        &mut caches,
                        &ctx,
                    )
                    .unwrap();
                let full = full_logits(&model, &tokens[..=i], &ctx);
                for row in logits.to_vec2::<f32>().unwrap() {
                    let worst = row.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(worst < 1e-4, "{dtype:?} tied={tied}, {rows} rows, step {i}: max |Δ| = {worst}");
                }
            }
        }
    }
}

/// A Gemma 3 GGUF as llama.cpp's converter writes real ones: norms stored as `1 + w`, a
/// SentencePiece vocabulary (`tokenizer.ggml.model = llama`, scores, byte pieces), and neither
/// the sliding-window pattern nor the local RoPE base written (llama.cpp's defaults: every 6th
/// layer global, base 10000). The Gemma 3 fixture's weights with its embeddings cut to the
/// SentencePiece fixture's 400 pieces (`fixtures/spm`).
fn write_gemma3_sentencepiece_gguf(path: &Path) -> Json {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let spm: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spm/spm-no-prefix.json")).unwrap()).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("families/gemma3/model/model.safetensors"), &Device::Cpu).unwrap();
    let vocab = spm["tokens"].as_array().unwrap().len();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in &weights {
        let gguf_name = name
            .replace("model.embed_tokens", "token_embd")
            .replace("model.norm", "output_norm")
            .replace("model.layers.", "blk.")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("self_attn.q_norm", "attn_q_norm")
            .replace("self_attn.k_norm", "attn_k_norm")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down")
            .replace("input_layernorm", "attn_norm")
            .replace("post_attention_layernorm", "post_attention_norm")
            .replace("pre_feedforward_layernorm", "ffn_norm")
            .replace("post_feedforward_layernorm", "post_ffw_norm");
        let t = if name.ends_with("norm.weight") { (t + 1.0).unwrap() } else { t.clone() };
        let t = if name == "model.embed_tokens.weight" {
            t.narrow(0, 0, vocab).unwrap().affine(1.0, 0.0).unwrap()
        } else {
            t
        };
        tensors.push((gguf_name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("gemma3".into())),
        ("gemma3.context_length".into(), Value::U32(512)),
        ("gemma3.embedding_length".into(), Value::U32(64)),
        ("gemma3.block_count".into(), Value::U32(3)),
        ("gemma3.feed_forward_length".into(), Value::U32(96)),
        ("gemma3.attention.head_count".into(), Value::U32(4)),
        ("gemma3.attention.head_count_kv".into(), Value::U32(2)),
        ("gemma3.attention.key_length".into(), Value::U32(16)),
        ("gemma3.attention.value_length".into(), Value::U32(16)),
        ("gemma3.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-6)),
        ("gemma3.attention.sliding_window".into(), Value::U32(8)),
        ("gemma3.rope.freq_base".into(), Value::F32(1_000_000.0)),
        ("gemma3.rope.scaling.type".into(), Value::String("linear".into())),
        ("gemma3.rope.scaling.factor".into(), Value::F32(8.0)),
    ];
    metadata.extend(sentencepiece_metadata(&spm));
    write_file(path, &metadata, &tensors);
    spm
}

/// A SentencePiece fixture's vocabulary (`fixtures/spm`) as GGUF metadata.
fn sentencepiece_metadata(spm: &Json) -> Vec<(String, Value)> {
    let list =
        |key: &str, value: fn(&Json) -> Value| Value::Array(spm[key].as_array().unwrap().iter().map(value).collect());
    vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), list("tokens", |t| Value::String(t.as_str().unwrap().into()))),
        ("tokenizer.ggml.scores".into(), list("scores", |s| Value::F32(s.as_f64().unwrap() as f32))),
        ("tokenizer.ggml.token_type".into(), list("token_type", |t| Value::I32(t.as_i64().unwrap() as i32))),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(spm["add_space_prefix"].as_bool().unwrap())),
    ]
}

fn write_file(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

/// A Llama 2-style GGUF: the parity model's `llama` file (interleaved Q/K rows) with the
/// leading-space SentencePiece fixture as its vocabulary, embedding and output rows cut to it.
fn write_llama_sentencepiece_gguf(path: &Path) -> Json {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm");
    let spm: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("spm-prefix.json")).unwrap()).unwrap();
    let vocab = spm["tokens"].as_array().unwrap().len();
    let plain = path.with_extension("bpe.gguf");
    write_gguf(&plain, GgmlDType::F32);
    let mut file = std::fs::File::open(&plain).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut metadata: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.extend(sentencepiece_metadata(&spm));
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let t = content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            let t = if name == "token_embd.weight" || name == "output.weight" {
                t.narrow(0, 0, vocab).unwrap().affine(1.0, 0.0).unwrap()
            } else {
                t
            };
            (name.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    write_file(path, &metadata, &tensors);
    spm
}

/// llama.cpp's ids for `text` (BOS first) and its last-position logits from the file at
/// `path`, when llama-cpp-python is installed (see `tests/gguf_export.rs`); `None`, saying
/// why, when it is not.
fn llama_cpp_reads(path: &Path, text: &str) -> Option<(Vec<u32>, Vec<f32>)> {
    let venv = std::env::var("LLAMA_CPP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/llama-cpp-venv"));
    let python = venv.join("bin/python");
    if !std::process::Command::new(&python).args(["-c", "import llama_cpp"]).output().is_ok_and(|o| o.status.success())
    {
        eprintln!("skipping the llama.cpp check: llama-cpp-python is not installed in {}", venv.display());
        return None;
    }
    let script = r#"
import json, sys
from llama_cpp import Llama
model = Llama(model_path=sys.argv[1], n_ctx=256, logits_all=True, verbose=False)
ids = model.tokenize(sys.argv[2].encode(), add_bos=True, special=False)
model.eval(ids)
print(json.dumps({"ids": ids, "logits": [float(x) for x in model.scores[len(ids) - 1]]}))
"#;
    let output = std::process::Command::new(&python).args(["-c", script]).arg(path).arg(text).output().unwrap();
    assert!(output.status.success(), "llama.cpp could not load the file: {}", String::from_utf8_lossy(&output.stderr));
    let theirs: Json = serde_json::from_slice(&output.stdout).unwrap();
    let numbers = |key: &str| theirs[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    Some((numbers("ids").iter().map(|&i| i as u32).collect(), numbers("logits").iter().map(|&x| x as f32).collect()))
}

/// Our ids for each fixture text (spaces, digits, byte-fallback characters, newlines) and the
/// last-position logits from the file at `path`, checked against SentencePiece's ids and, when
/// it is installed, llama.cpp's ids and logits.
fn check_sentencepiece_gguf(path: &Path, cases: &Json) {
    let (model, tokenizer) = load_model_and_tokenizer(path, &Device::Cpu).unwrap();
    for case in cases.as_array().unwrap().iter().filter(|c| !c["text"].as_str().unwrap().is_empty()) {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode_prompt(text).unwrap();
        assert_eq!(ids[0], 1, "BOS first");
        assert_eq!(&ids[1..], &expected[..], "SentencePiece's ids of {text:?}");
        assert!(ids.len() > 8, "{text:?} reaches past the 8-token window");
        check_with_llama_cpp(path, &model, text, &ids);
    }
}

/// llama.cpp's ids for `text` and its last-position logits equal ours.
fn check_with_llama_cpp(path: &Path, model: &LlamaModel, text: &str, ids: &[u32]) {
    let Some((their_ids, their_logits)) = llama_cpp_reads(path, text) else { return };
    assert_eq!(their_ids, ids, "llama.cpp's tokenization of {}", path.display());
    let input = ModelInput::right_padded(&[ids], 0, &Device::Cpu).unwrap();
    let ctx = ForwardCtx::eval(true);
    let hidden = model.hidden_states(&input, &ctx).unwrap().squeeze(0).unwrap();
    let ours: Vec<f32> = model.logits(&hidden, &ctx).unwrap().get(ids.len() - 1).unwrap().to_vec1().unwrap();
    let diff = their_logits.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = ours.iter().map(|x| x.abs()).fold(0.0f32, f32::max).max(1.0);
    assert!(diff <= 1e-3 * scale, "{}: llama.cpp's logits differ by {diff} (scale {scale})", path.display());
    eprintln!("{}: llama.cpp's ids and logits of {text:?} agree (within {diff})", path.display());
}

/// The file loads with llama.cpp's defaults made explicit and tokenizes as SentencePiece and
/// llama.cpp do; `pairwise-train export` writes it back (as a `llama` vocabulary with scores,
/// the pattern spelled out) and that file reads the same in both.
#[test]
fn gemma3_gguf_with_a_sentencepiece_vocabulary_reads_as_llama_cpp_does() {
    use pairwise_trainer::model::config::LayerType;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma3-spm.gguf");
    let spm = write_gemma3_sentencepiece_gguf(&path);
    let (model, _) = load_model_and_tokenizer(&path, &Device::Cpu).unwrap();
    let config = &model.config;
    assert_eq!(config.layer_types, vec![LayerType::Sliding; 3], "every layer but each 6th slides");
    assert_eq!(config.local_rope.as_ref().map(|r| r.theta), Some(10_000.0));
    assert_eq!(config.query_pre_attn_scalar, Some(16.0));
    check_sentencepiece_gguf(&path, &spm["cases"]);

    let exported = dir.path().join("exported.gguf");
    export_f32(&path, &exported);
    check_sentencepiece_gguf(&exported, &spm["cases"]);
}

/// `pairwise-train export --quant f32` of the GGUF at `model`.
fn export_f32(model: &Path, out: &Path) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pairwise-train"))
        .args(["export", "--format", "gguf", "--quant", "f32", "--model"])
        .arg(model)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "pairwise-train export of {} failed", model.display());
}

/// A Llama 2-style file (SentencePiece vocabulary with the leading space) reads as
/// SentencePiece and llama.cpp do, and again once `export` has written it back.
#[test]
fn llama_gguf_with_a_leading_space_sentencepiece_vocabulary_reads_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-spm.gguf");
    let spm = write_llama_sentencepiece_gguf(&path);
    check_sentencepiece_gguf(&path, &spm["cases"]);
    let exported = dir.path().join("exported.gguf");
    export_f32(&path, &exported);
    check_sentencepiece_gguf(&exported, &spm["cases"]);
}
