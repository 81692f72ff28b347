//! The listwise (Plackett–Luce) losses against the PyTorch reference in
//! `tests/fixtures/listwise/expected.json` (made by `make_reference.py` beside it):
//! - the loss and its gradient on score vectors with and without ties (1e-9 in float64), and
//!   the gradient against central finite differences;
//! - listwise DPO on rankings built on the parity fixture, through its training objective:
//!   loss to 1e-4 and the LoRA gradients' norms to 1e-3 relative;
//! - the listwise reward model's loss (with and without centering) to 1e-4.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use pairwise_trainer::data::pairs::TokenizedSequence;
use pairwise_trainer::data::rankings::TokenizedRanking;
use pairwise_trainer::data::readout::sequence_log_probs;
use pairwise_trainer::methods::listwise::{ListwiseObjective, ListwiseScores};
use pairwise_trainer::methods::loss::plackett_luce_loss;
use pairwise_trainer::model::ForwardCtx;
use pairwise_trainer::model::load::load_model;
use pairwise_trainer::peft::load::load_peft;
use pairwise_trainer::train::run::Objective;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("listwise/expected.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn pl64(scores: &[f64], ranks: &[f64]) -> f64 {
    let s = Tensor::new(scores, &Device::Cpu).unwrap();
    plackett_luce_loss(&s, ranks).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn plackett_luce_matches_pytorch_and_finite_differences() {
    let exp = expected();
    for case in exp["cases"].as_array().unwrap() {
        let (scores, ranks) = (floats(&case["scores"]), floats(&case["ranks"]));
        let var = Var::new(scores.as_slice(), &Device::Cpu).unwrap();
        let loss = plackett_luce_loss(var.as_tensor(), &ranks).unwrap();
        let ours = loss.to_scalar::<f64>().unwrap();
        let theirs = case["loss"].as_f64().unwrap();
        assert!((ours - theirs).abs() < 1e-9, "ranks {ranks:?}: loss {ours} vs PyTorch {theirs}");
        let grad = loss.backward().unwrap().get(&var).expect("scores get a gradient").to_vec1::<f64>().unwrap();
        for (i, (g, t)) in grad.iter().zip(floats(&case["grad"])).enumerate() {
            assert!((g - t).abs() < 1e-9, "ranks {ranks:?}: d/ds{i} {g} vs PyTorch {t}");
            let h = 1e-5;
            let mut up = scores.clone();
            up[i] += h;
            let mut down = scores.clone();
            down[i] -= h;
            let numeric = (pl64(&up, &ranks) - pl64(&down, &ranks)) / (2.0 * h);
            assert!((g - numeric).abs() < 1e-6, "ranks {ranks:?}: d/ds{i} {g} vs finite difference {numeric}");
        }
    }
}

fn rankings(exp: &Value) -> Vec<TokenizedRanking> {
    let ids = |v: &Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    exp["rankings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let prompt = ids(&r["prompt_ids"]);
            let seqs = r["completions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| TokenizedSequence {
                    ids: prompt.iter().copied().chain(ids(c)).collect(),
                    prompt_len: prompt.len(),
                })
                .collect();
            TokenizedRanking { seqs, ranks: floats(&r["ranks"]), truncated: false }
        })
        .collect()
}

fn loss_of(
    objective: &ListwiseObjective,
    model: &pairwise_trainer::model::LlamaModel,
    all: &[TokenizedRanking],
    ctx: &ForwardCtx,
) -> Tensor {
    let refs: Vec<&TokenizedRanking> = all.iter().collect();
    let indices: Vec<usize> = (0..all.len()).collect();
    objective.batch_loss(model, &refs, &indices, ctx).unwrap().0
}

#[test]
fn listwise_dpo_loss_and_lora_gradients_match_pytorch() {
    let exp = expected();
    let all = rankings(&exp);
    let dir = fixtures().join("parity");
    let mut model = load_model(&dir.join("model"), &Device::Cpu).unwrap();
    let adapter = load_peft(&dir.join("lora"), &mut model).unwrap();
    let pad_id = 0;
    let seqs: Vec<TokenizedSequence> = all.iter().flat_map(|r| r.seqs.iter().cloned()).collect();
    let flat = sequence_log_probs(&model, &seqs, pad_id, false, 8).unwrap();
    let mut offset = 0;
    let reference: Vec<Vec<f32>> = all
        .iter()
        .map(|r| {
            offset += r.seqs.len();
            flat[offset - r.seqs.len()..offset].to_vec()
        })
        .collect();
    let objective = ListwiseObjective {
        scores: ListwiseScores::Dpo { beta: exp["dpo"]["beta"].as_f64().unwrap(), reference },
        pad_id,
    };
    let loss = loss_of(&objective, &model, &all, &ForwardCtx::eval(true));
    let ours = loss.to_scalar::<f32>().unwrap() as f64;
    let theirs = exp["dpo"]["loss"].as_f64().unwrap();
    assert!((ours - theirs).abs() < 1e-4, "listwise DPO loss {ours} vs PyTorch {theirs}");
    let grads = loss.backward().unwrap();
    let norms = exp["dpo"]["lora_grad_norms"].as_object().unwrap();
    assert_eq!(norms.len(), adapter.vars.len());
    for (name, var) in &adapter.vars {
        let g = grads.get(var).unwrap_or_else(|| panic!("no gradient for {name}"));
        let ours = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap() as f64;
        let theirs = norms[name].as_f64().unwrap();
        let rel = (ours - theirs).abs() / theirs;
        assert!(rel < 1e-3, "{name}: grad norm {ours} vs PyTorch {theirs} (rel {rel:.2e})");
    }
}

#[test]
fn listwise_reward_loss_matches_pytorch() {
    let exp = expected();
    let all = rankings(&exp);
    let dir = fixtures().join("parity");
    let model = load_model(&dir.join("model"), &Device::Cpu).unwrap();
    let head = candle_core::safetensors::load(dir.join("reward_head.safetensors"), &Device::Cpu)
        .unwrap()
        .remove("score.weight")
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let e = &exp["reward"];
    for (coef, key) in [(0.0, "loss"), (e["center_coef"].as_f64().unwrap(), "loss_centered")] {
        let objective = ListwiseObjective {
            scores: ListwiseScores::Reward { score: Var::from_tensor(&head).unwrap(), center_coef: coef },
            pad_id: 0,
        };
        let ours = loss_of(&objective, &model, &all, &ForwardCtx::eval(false)).to_scalar::<f32>().unwrap() as f64;
        let theirs = e[key].as_f64().unwrap();
        assert!((ours - theirs).abs() < 1e-4, "{key}: {ours} vs PyTorch {theirs}");
    }
}
