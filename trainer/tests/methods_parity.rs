//! The feedback methods' losses against PyTorch + TRL on the parity fixture
//! (`tests/fixtures/parity`; reference numbers in `tests/fixtures/methods/expected.json`,
//! made by `make_reference.py` beside it): SimPO (with and without label smoothing and an
//! NLL term), ORPO, DPO + SFT, KTO (with the KL estimate clamped and not), and completion-only
//! SFT, each through its training objective on the whole batch, to 1e-4.

use std::path::{Path, PathBuf};

use candle_core::Device;
use pairwise_trainer::data::completions::TokenizedCompletion;
use pairwise_trainer::data::pairs::{TokenizedPair, TokenizedSequence, Truncation, read_jsonl, tokenize_pair};
use pairwise_trainer::data::readout::sequence_log_probs;
use pairwise_trainer::methods::dpo::DpoObjective;
use pairwise_trainer::methods::kto::{KtoObjective, mismatched_sequences};
use pairwise_trainer::methods::sft::SftObjective;
use pairwise_trainer::model::ForwardCtx;
use pairwise_trainer::model::LlamaModel;
use pairwise_trainer::model::load::load_model;
use pairwise_trainer::model::tokenizer::ChatTokenizer;
use pairwise_trainer::peft::load::load_peft;
use pairwise_trainer::train::config::{DpoLossType, TrainConfig};
use pairwise_trainer::train::run::Objective;
use serde_json::Value;

const TOL: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("methods/expected.json")).unwrap()).unwrap()
}

/// The fixture's policy (base + LoRA), its tokenizer and the first 8 pairs tokenized.
fn setup() -> (LlamaModel, ChatTokenizer, Vec<TokenizedPair>) {
    let dir = fixtures().join("parity");
    let tokenizer = ChatTokenizer::from_dir(&dir.join("model")).unwrap();
    let limits = Truncation { max_length: 4096, max_prompt_length: 4096 };
    let pairs = read_jsonl(&dir.join("prefs.jsonl"), Some(8)).unwrap();
    let pairs = pairs.iter().map(|p| tokenize_pair(&tokenizer, p, limits).unwrap()).collect();
    let mut model = load_model(&dir.join("model"), &Device::Cpu).unwrap();
    load_peft(&dir.join("lora"), &mut model).unwrap();
    (model, tokenizer, pairs)
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap();
    assert!((ours - theirs).abs() < TOL, "{what}: ours {ours} vs PyTorch {theirs}");
}

fn loss_of<O: Objective + ?Sized>(
    objective: &O,
    model: &LlamaModel,
    examples: &[O::Example],
    ctx: &ForwardCtx,
) -> (f64, std::collections::BTreeMap<&'static str, f64>) {
    let refs: Vec<&O::Example> = examples.iter().collect();
    let indices: Vec<usize> = (0..examples.len()).collect();
    let (loss, metrics) = objective.batch_loss(model, &refs, &indices, ctx).unwrap();
    (loss.to_scalar::<f32>().unwrap() as f64, metrics.means())
}

#[test]
fn simpo_orpo_and_the_sft_mix_match_trl() {
    let exp = expected();
    let (model, tokenizer, pairs) = setup();
    let seqs: Vec<TokenizedSequence> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let base = sequence_log_probs(&model, &seqs, tokenizer.pad_id, false, 16).unwrap();
    let reference: Vec<(f32, f32)> = base.chunks(2).map(|c| (c[0], c[1])).collect();
    let cases = [
        ("simpo", DpoLossType::Simpo, 2.0, 0.0),
        ("simpo_smoothed", DpoLossType::Simpo, 2.0, 0.0),
        ("simpo_nll", DpoLossType::Simpo, 2.0, 0.5),
        ("orpo", DpoLossType::Orpo, 0.1, 0.0),
        ("dpo_sft", DpoLossType::Sigmoid, 0.1, 0.5),
    ];
    for (name, loss_type, beta, sft_weight) in cases {
        let e = &exp[name];
        let config = TrainConfig {
            loss_type,
            beta,
            sft_weight,
            simpo_gamma: e["gamma"].as_f64().unwrap_or(0.5),
            label_smoothing: e["label_smoothing"].as_f64().unwrap_or(0.0),
            ..TrainConfig::default()
        };
        let refs = if loss_type.is_reference_free() { Vec::new() } else { reference.clone() };
        let objective = DpoObjective::new(&config, refs, tokenizer.pad_id);
        let (loss, metrics) = loss_of(&objective, &model, &pairs, &ForwardCtx::eval(true));
        close(loss, &e["loss"], name);
        if let Some(nll) = e.get("nll") {
            close(metrics["nll_loss"], nll, &format!("{name} nll"));
        }
        if let Some(rewards) = e.get("chosen_rewards") {
            let mean = rewards.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 8.0;
            close(metrics["rewards/chosen"], &mean.into(), &format!("{name} rewards/chosen"));
        }
    }
}

/// `[c0, r0, c1, r1, …]` of the first four pairs: desirable, undesirable, …
fn labelled_completions(pairs: &[TokenizedPair]) -> Vec<TokenizedCompletion> {
    pairs[..4]
        .iter()
        .flat_map(|p| {
            [
                TokenizedCompletion { seq: p.chosen.clone(), desirable: true, truncated: false },
                TokenizedCompletion { seq: p.rejected.clone(), desirable: false, truncated: false },
            ]
        })
        .collect()
}

#[test]
fn kto_matches_trl_with_and_without_the_kl_clamp() {
    let exp = expected();
    let (model, tokenizer, pairs) = setup();
    let examples = labelled_completions(&pairs);
    let kl_sequences = mismatched_sequences(&examples, 4096);
    let own: Vec<TokenizedSequence> = examples.iter().map(|e| e.seq.clone()).collect();
    // "kto": policy with the adapter, reference without; "kto_swapped": the other way round,
    // so that the KL estimate is positive and enters the loss.
    for (name, policy_adapters) in [("kto", true), ("kto_swapped", false)] {
        let e = &exp[name];
        let reference = sequence_log_probs(&model, &own, tokenizer.pad_id, !policy_adapters, 16).unwrap();
        let reference_kl = sequence_log_probs(&model, &kl_sequences, tokenizer.pad_id, !policy_adapters, 16).unwrap();
        let objective = KtoObjective {
            beta: e["beta"].as_f64().unwrap(),
            desirable_weight: e["desirable_weight"].as_f64().unwrap(),
            undesirable_weight: e["undesirable_weight"].as_f64().unwrap(),
            reference,
            kl_sequences: kl_sequences.clone(),
            reference_kl,
            pad_id: tokenizer.pad_id,
        };
        let (loss, metrics) = loss_of(&objective, &model, &examples, &ForwardCtx::eval(policy_adapters));
        close(loss, &e["loss"], name);
        close(metrics["kl"], &e["kl"], &format!("{name} kl"));
        let rewards: Vec<f64> = e["rewards"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let desirable_mean = rewards.iter().step_by(2).sum::<f64>() / 4.0;
        close(metrics["rewards/chosen"], &desirable_mean.into(), &format!("{name} rewards/chosen"));
    }
}

#[test]
fn completion_only_sft_matches_trl() {
    let exp = expected();
    let (model, tokenizer, pairs) = setup();
    let examples: Vec<TokenizedCompletion> = pairs
        .iter()
        .map(|p| TokenizedCompletion { seq: p.chosen.clone(), desirable: true, truncated: false })
        .collect();
    let objective = SftObjective { pad_id: tokenizer.pad_id };
    let (loss, metrics) = loss_of(&objective, &model, &examples, &ForwardCtx::eval(true));
    close(loss, &exp["sft"]["loss"], "sft loss");
    let accuracy = exp["sft"]["per_sequence_token_accuracy"].as_array().unwrap();
    let mean = accuracy.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / accuracy.len() as f64;
    close(metrics["mean_token_accuracy"], &mean.into(), "mean token accuracy");
    // The step's loss is a mean over tokens: split in two shards weighted by their tokens, the
    // halves give back the whole.
    let (first, second) = examples.split_at(3);
    let weight = |part: &[TokenizedCompletion]| part.iter().map(|e| objective.weight(e)).sum::<f64>();
    let total = weight(&examples);
    let (a, _) = loss_of(&objective, &model, first, &ForwardCtx::eval(true));
    let (b, _) = loss_of(&objective, &model, second, &ForwardCtx::eval(true));
    close(a * weight(first) / total + b * weight(second) / total, &exp["sft"]["loss"], "sft loss from two shards");
}
