//! `pairwise-train export --format gguf`: a fixture model with its LoRA adapter folded in,
//! written as GGUF (the real binary), read back with candle's GGUF reader, gives the merged
//! model's logits: within 1e-3 of the merged model with its matrices stored in that format
//! (F32 — the merged model itself —, F16, Q8_0, Q4_0) — on a Llama (plain RoPE),
//! a Llama 3 (RoPE scaling as `rope_freqs.weight`), a Qwen2 (biases, rotate-half RoPE), a
//! Qwen3 (q/k norms, a head size other than hidden / heads), a Gemma 2 (soft-capping) and a
//! Gemma 3 (sliding and global layers with their own RoPE, `1 + w` norms) fixture, with the
//! tokenizer's ids, RoPE frequencies and sliding layers unchanged. When llama.cpp's Python bindings are at hand
//! (`LLAMA_CPP_VENV`, or `.cache/llama-cpp-venv` that `scripts/setup-llama-cpp.sh` builds),
//! llama.cpp loads the file and its logits agree too; otherwise that check says why it was
//! skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pairwise_trainer::model::config::ModelConfig;
use pairwise_trainer::model::load::{Precision, load_model_and_tokenizer};
use pairwise_trainer::model::{ForwardCtx, LlamaModel, ModelInput};
use pairwise_trainer::peft::load::load_peft;

const TEXT: &str = "The rain in Spain falls mainly on the plain, and 42 cats watch it.";

fn fixture(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    if name == "parity" { root.join("parity") } else { root.join("families").join(name) }
}

/// Logits of every position of `ids`, `[T, vocab]`.
fn logits(model: &LlamaModel, ids: &[u32]) -> Tensor {
    let input = ModelInput::right_padded(&[ids], 0, &Device::Cpu).unwrap();
    let ctx = ForwardCtx::eval(true);
    let hidden = model.hidden_states(&input, &ctx).unwrap().squeeze(0).unwrap();
    model.logits(&hidden, &ctx).unwrap()
}

/// The merged model with its weight matrices stored as `dtype` and read back (what a file
/// of that format holds; rows that do not fill whole blocks as F16, like the exporter).
fn stored_as(model: &LlamaModel, dtype: GgmlDType) -> LlamaModel {
    let mut tensors: HashMap<String, Tensor> = model
        .merged_weights()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            // Norms and biases stay F32 in the file.
            if t.rank() == 1 {
                return (name, t);
            }
            let whole_blocks = t.dims()[1].is_multiple_of(dtype.block_size());
            let dtype = if whole_blocks { dtype } else { GgmlDType::F16 };
            (name, QTensor::quantize(&t, dtype).unwrap().dequantize(&Device::Cpu).unwrap())
        })
        .collect();
    LlamaModel::from_tensors(
        model.config.clone(),
        &mut tensors,
        Path::new("stored"),
        &Device::Cpu,
        None,
        Precision::F32,
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn export(model: &Path, adapter: &Path, quant: &str, out: &Path) {
    let trainer = env!("CARGO_BIN_EXE_pairwise-train");
    let status = Command::new(trainer)
        .args(["export", "--format", "gguf", "--quant", quant, "--model"])
        .arg(model)
        .arg("--adapter")
        .arg(adapter)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "pairwise-train export failed for {}", model.display());
}

#[test]
fn exported_gguf_gives_the_merged_models_logits() {
    let dir = tempfile::tempdir().unwrap();
    for family in ["parity", "llama3", "qwen2", "qwen3", "gemma2", "gemma3"] {
        let (model_dir, adapter) = (fixture(family).join("model"), fixture(family).join("lora"));
        // llama.cpp's gemma3 scales scores by head_dim^-½ (as Gemma 3 1B–12B do) without reading
        // query_pre_attn_scalar, so the fixture's 24 is set to head_dim 16 (the export refuses 24).
        let model_dir = if family == "gemma3" {
            with_config(&model_dir, dir.path(), "query_pre_attn_scalar", 16)
        } else {
            model_dir
        };
        let (mut merged, tokenizer) = load_model_and_tokenizer(&model_dir, &Device::Cpu).unwrap();
        load_peft(&adapter, &mut merged).unwrap();
        let ids = tokenizer.encode_prompt(TEXT).unwrap();
        if let Some(window) = merged.config.sliding_window {
            assert!(ids.len() > window, "{family}: {} tokens do not reach past the {window}-token window", ids.len());
        }
        let expected = logits(&merged, &ids);
        let scale: f32 = expected.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        for (quant, dtype) in
            [("f32", GgmlDType::F32), ("f16", GgmlDType::F16), ("q8_0", GgmlDType::Q8_0), ("q4_0", GgmlDType::Q4_0)]
        {
            let reference = logits(&stored_as(&merged, dtype), &ids);
            let out = dir.path().join(format!("{family}-{quant}.gguf"));
            export(&model_dir, &adapter, quant, &out);
            let (back, back_tokenizer) = load_model_and_tokenizer(&out, &Device::Cpu).unwrap();
            assert_eq!(back.config.architecture, merged.config.architecture, "{family}");
            // The same frequencies (a Llama 3 scaling comes back as an equivalent one).
            let hd = merged.config.head_dim;
            // Global layers', then sliding layers' (the global ones' unless set apart).
            let frequencies =
                |c: &ModelConfig| [&c.rope, c.local_rope.as_ref().unwrap_or(&c.rope)].map(|r| r.inv_freq(hd));
            for (back_freqs, merged_freqs) in frequencies(&back.config).iter().zip(frequencies(&merged.config)) {
                for (a, b) in back_freqs.iter().zip(merged_freqs) {
                    assert!((a - b).abs() <= 1e-5 * b, "{family}: RoPE frequency {a} instead of {b}");
                }
            }
            assert_eq!(back.config.layer_types, merged.config.layer_types, "{family}: sliding layers");
            assert_eq!(back.config.sliding_window, merged.config.sliding_window, "{family}");
            if !family.starts_with("qwen") {
                // Qwen's own pre-tokenizer regex is not among those the GGUF reader rebuilds.
                assert_eq!(back_tokenizer.encode_prompt(TEXT).unwrap(), ids, "{family}: the tokenizer's ids");
            }
            let diff = max_abs_diff(&logits(&back, &ids), &reference);
            assert!(diff <= 1e-3, "{family} {quant}: logits differ by {diff} from the model stored as {quant}");
            // F32 holds the merged model itself; the other formats' own rounding is printed.
            let rounding = max_abs_diff(&reference, &expected);
            if quant == "f32" {
                assert!(rounding <= 1e-5 * scale.max(1.0), "{family}: F32 moves the logits by {rounding}");
            }
            eprintln!("{family} {quant}: logits within {diff} of the {quant} model, {rounding} of f32 (scale {scale})");
            if quant == "f16" {
                llama_cpp_agrees(&out, &ids, &expected, family);
            }
        }
    }
}

/// A copy of the model folder `model` under `scratch` with `key` of its config.json set to `value`.
fn with_config(model: &Path, scratch: &Path, key: &str, value: i64) -> PathBuf {
    let copy = scratch.join(format!("{}-{key}", model.parent().unwrap().file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("config.json")).unwrap()).unwrap();
    config[key] = value.into();
    std::fs::write(copy.join("config.json"), config.to_string()).unwrap();
    copy
}

/// llama.cpp itself loads the file and computes the same last-position logits.
fn llama_cpp_agrees(gguf: &Path, ids: &[u32], expected: &Tensor, family: &str) {
    let venv = std::env::var("LLAMA_CPP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/llama-cpp-venv"));
    let python = venv.join("bin/python");
    let probe = Command::new(&python).args(["-c", "import llama_cpp"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipping the llama.cpp check: llama-cpp-python is not installed in {} (scripts/setup-llama-cpp.sh builds it)",
            venv.display()
        );
        return;
    }
    let script = r#"
import json, sys
from llama_cpp import Llama
path, ids = sys.argv[1], json.loads(sys.argv[2])
model = Llama(model_path=path, n_ctx=256, logits_all=True, verbose=False)
model.eval(ids)
print(json.dumps([float(x) for x in model.scores[len(ids) - 1]]))
"#;
    let output =
        Command::new(&python).args(["-c", script]).arg(gguf).arg(serde_json::to_string(ids).unwrap()).output().unwrap();
    assert!(
        output.status.success(),
        "{family}: llama.cpp could not load the export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<f32> = serde_json::from_slice(&output.stdout).unwrap();
    let ours: Vec<f32> = expected.get(ids.len() - 1).unwrap().to_vec1().unwrap();
    assert_eq!(theirs.len(), ours.len(), "{family}: vocabulary size");
    let diff = theirs.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = ours.iter().map(|x| x.abs()).fold(0.0f32, f32::max).max(1.0);
    assert!(diff <= 1e-2 * scale, "{family}: llama.cpp's logits differ by {diff} (scale {scale})");
    eprintln!("{family}: llama.cpp loads the export, last-position logits within {diff}");
}
