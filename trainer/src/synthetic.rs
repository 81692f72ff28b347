//! Self-made models and data for tests, examples and benchmarks (nothing is downloaded):
//! a tiny random Llama folder with a word-level tokenizer, and preference pairs where the
//! chosen answer follows a clear rule (it praises the topic; the rejected one disparages it),
//! and rankings of several answers by a simulated panel of raters under a graded form of it.

use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::model::config::{Activation, Architecture, LayerType, ModelConfig, Rope};
use crate::model::llama::random_tensors;

const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];
const GLUE: [&str; 9] = ["User:", "Assistant:", "tell", "me", "about", "what", "is", "really", "."];
const TOPICS: [&str; 16] = [
    "cats", "rain", "music", "tea", "trains", "books", "maps", "gardens", "rivers", "bread", "chess", "lamps", "boats",
    "clocks", "stars", "bikes",
];
const GOOD: [&str; 6] = ["great", "lovely", "useful", "fun", "kind", "bright"];
const BAD: [&str; 6] = ["awful", "boring", "useless", "dull", "rude", "broken"];

/// The synthetic vocabulary, specials first (ids 0..4 = pad, bos, eos, unk).
pub fn vocabulary() -> Vec<&'static str> {
    SPECIALS.iter().chain(&GLUE).chain(&TOPICS).chain(&GOOD).chain(&BAD).copied().collect()
}

/// A tiny Llama configuration over the synthetic vocabulary.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: vocabulary().len(),
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-5,
        rope: Rope::plain(10_000.0),
        local_rope: None,
        max_position_embeddings: 128,
        tie_word_embeddings: false,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
        activation: Activation::Silu,
        layer_types: vec![LayerType::Full; 2],
        sliding_window: None,
        query_pre_attn_scalar: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: Some(0),
    }
}

/// [`tiny_config`] as a Qwen3 model: per-head q/k norms, a `head_dim` (12) that is not
/// hidden / heads (8), and a sliding window of 8 on the first layer.
pub fn tiny_qwen3_config() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen3,
        head_dim: 12,
        qk_norm: true,
        layer_types: vec![LayerType::Sliding, LayerType::Full],
        sliding_window: Some(8),
        ..tiny_config()
    }
}

/// A word-level `tokenizer.json` (whitespace split, BOS added by the post-processor).
pub fn tokenizer_json() -> serde_json::Value {
    let words = vocabulary();
    let vocab: serde_json::Map<String, serde_json::Value> =
        words.iter().enumerate().map(|(i, w)| (w.to_string(), i.into())).collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// Writes a complete Hugging Face folder: config, random weights (seeded), tokenizer files.
pub fn write_tiny_model(dir: &Path, config: &ModelConfig, seed: u64) -> anyhow::Result<()> {
    write_model_folder(dir, config, seed, 1.0)
}

/// Like [`write_tiny_model`], with the output layer scaled to the logit range of a trained
/// model. A random init's output layer (std 0.02) spans a fraction of a nat, so no adapter
/// could make any token likely; policies that generation and RLHF tests improve start here.
pub fn write_tiny_policy(dir: &Path, config: &ModelConfig, seed: u64) -> anyhow::Result<()> {
    write_model_folder(dir, config, seed, 20.0)
}

/// Writes a LoRA adapter (PEFT folder) for the model folder `model` on the given target
/// modules (`q`, `k`, `v`, `o`, `gate`, `up`, `down`), with random B (std 0.3) so that it
/// changes the model's answers: the adapters serving tests and the arena pit against the base.
pub fn write_random_adapter(model: &Path, out: &Path, targets: &[&str], seed: u64) -> anyhow::Result<()> {
    use crate::peft::PeftTask;
    use crate::peft::lora::{LoraConfig, attach_lora, save_peft};
    let (mut policy, _) = crate::model::load::load_model_and_tokenizer(model, &candle_core::Device::Cpu)?;
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let config = LoraConfig::new(4, 8.0, 0.0, &targets)?;
    attach_lora(&mut policy, &config, seed)?;
    for layer in &mut policy.layers {
        for (_, linear) in layer.linears_mut() {
            if let Some(lora) = &mut linear.lora {
                lora.b.set(&lora.b.randn_like(0.0, 0.3)?)?;
            }
        }
    }
    save_peft(out, &policy, &config, PeftTask::CausalLm, "tiny", None)
}

fn write_model_folder(dir: &Path, config: &ModelConfig, seed: u64, head_scale: f64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config.to_hf_json())?)?;
    let mut tensors = random_tensors(config, seed)?;
    if let Some(head) = tensors.remove("lm_head.weight") {
        tensors.insert("lm_head.weight".into(), (head * head_scale)?);
    }
    let mut tensors: Vec<(String, candle_core::Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    crate::tensor::io::save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tokenizer_json())?)?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": true}"#,
    )?;
    Ok(())
}

/// `n` TRL-format JSONL lines: the chosen answer calls the topic something good, the rejected
/// one something bad. Some rows carry a rater signal so that path is exercised too.
pub fn rule_pairs(n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let topic = TOPICS.choose(&mut rng).expect("non-empty");
            let good = GOOD.choose(&mut rng).expect("non-empty");
            let bad = BAD.choose(&mut rng).expect("non-empty");
            let really = if rng.random_bool(0.5) { " really" } else { "" };
            let prompt = format!("User: tell me about {topic} Assistant:");
            let agreement = [1.0, 1.0, 0.75][rng.random_range(0..3)];
            serde_json::json!({
                "prompt": prompt,
                "chosen": format!(" {topic} is{really} {good} ."),
                "rejected": format!(" {topic} is{really} {bad} ."),
                "votes": 4,
                "agreement": agreement,
                "strength": rng.random_range(1..=3),
            })
            .to_string()
        })
        .collect()
}

/// `n` KTO-format JSONL lines (`{"prompt","completion","label"}`) made from the same rule:
/// praise is desirable, disparagement undesirable, alternating at random (thumbs up or down
/// on single answers).
pub fn rule_completions(n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7b);
    rule_pairs(n, seed)
        .iter()
        .map(|line| {
            let pair: serde_json::Value = serde_json::from_str(line).expect("rule_pairs writes JSON");
            let desirable = rng.random_bool(0.5);
            let completion = if desirable { &pair["chosen"] } else { &pair["rejected"] };
            serde_json::json!({"prompt": pair["prompt"], "completion": completion, "label": desirable}).to_string()
        })
        .collect()
}

/// `n` ranking lines (`{"prompt","responses","ranks","raw"}`, the server's `ranking` export) of
/// `k` answers each, ranked by a simulated panel of three raters. An answer's quality is its
/// number of praising words minus disparaging ones (−2 … 2, e.g. " tea is great fun ." = 2,
/// " tea is dull ." = −1); each rater grades it as quality plus Gaussian noise (σ 0.25) rounded
/// to a whole grade and ranks by grade (equal grades tie), and `ranks` are the mean ranks over
/// the panel (fractional; equal where the whole panel agrees on a tie).
pub fn rule_rankings(n: usize, k: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x12a4);
    let noise = rand_distr::Normal::new(0.0, 0.25).expect("valid σ");
    (0..n)
        .map(|_| {
            let topic = TOPICS.choose(&mut rng).expect("non-empty");
            let mut responses = Vec::with_capacity(k);
            let mut quality = Vec::with_capacity(k);
            for _ in 0..k {
                let (good, bad) = [(2, 0), (1, 0), (1, 1), (0, 1), (0, 2)][rng.random_range(0..5)];
                let mut words: Vec<&str> = GOOD.choose_multiple(&mut rng, good).copied().collect();
                words.extend(BAD.choose_multiple(&mut rng, bad).copied());
                responses.push(format!(" {topic} is {} .", words.join(" ")));
                quality.push(good as f64 - bad as f64);
            }
            let raw: Vec<Vec<usize>> = (0..3)
                .map(|_| {
                    // What the rater perceives, to the nearest grade: equal grades are ties.
                    let seen: Vec<f64> = quality
                        .iter()
                        .map(|q| (q + rand_distr::Distribution::sample(&noise, &mut rng)).round())
                        .collect();
                    // Rank 1 = the best this rater saw (competition ranking: ties share a rank).
                    (0..k).map(|i| 1 + seen.iter().filter(|&&other| other > seen[i]).count()).collect()
                })
                .collect();
            let ranks: Vec<f64> = (0..k).map(|i| raw.iter().map(|r| r[i] as f64).sum::<f64>() / 3.0).collect();
            serde_json::json!({
                "prompt": format!("User: tell me about {topic} Assistant:"),
                "responses": responses,
                "ranks": ranks,
                "raw": raw,
            })
            .to_string()
        })
        .collect()
}
