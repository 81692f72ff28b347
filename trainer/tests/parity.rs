//! Parity with PyTorch/transformers/TRL/PEFT on the fixture in `tests/fixtures/parity`
//! (a tiny trained Llama, a PEFT LoRA adapter and a reward head; reference numbers in
//! `expected.json`): token ids, per-sequence log-probs, DPO sigmoid and IPO losses, the
//! Bradley–Terry loss to 1e-4 absolute, and LoRA gradient norms of the DPO loss to 1e-3 relative.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pairwise_trainer::data::batch::SequenceBatch;
use pairwise_trainer::data::pairs::{TokenizedSequence, Truncation, read_jsonl, tokenize_pair};
use pairwise_trainer::data::readout::{completion_log_probs, last_token_rewards, sequence_rewards};
use pairwise_trainer::methods::loss::{PairLogps, bradley_terry_loss, dpo_loss};
use pairwise_trainer::methods::score::score_pairs;
use pairwise_trainer::model::ForwardCtx;
use pairwise_trainer::model::input::Layout;
use pairwise_trainer::model::load::load_model;
use pairwise_trainer::model::tokenizer::ChatTokenizer;
use pairwise_trainer::peft::load::load_peft;
use pairwise_trainer::train::config::DpoLossType;
use serde_json::Value;

const TOL: f64 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn tokenized_pairs(n: usize) -> (ChatTokenizer, Vec<pairwise_trainer::data::pairs::TokenizedPair>) {
    let tokenizer = ChatTokenizer::from_dir(&fixture().join("model")).unwrap();
    let pairs = read_jsonl(&fixture().join("prefs.jsonl"), Some(n)).unwrap();
    let limits = Truncation { max_length: 4096, max_prompt_length: 4096 };
    let tokenized = pairs.iter().map(|p| tokenize_pair(&tokenizer, p, limits).unwrap()).collect();
    (tokenizer, tokenized)
}

#[test]
fn tokenization_matches_transformers() {
    let exp = expected();
    let (_, pairs) = tokenized_pairs(8);
    for (pair, e) in pairs.iter().zip(exp["pairs"].as_array().unwrap()) {
        let prompt = ids(&e["prompt_ids"]);
        assert_eq!(&pair.chosen.ids[..pair.chosen.prompt_len], prompt.as_slice());
        assert_eq!(&pair.chosen.ids[pair.chosen.prompt_len..], ids(&e["chosen_ids"]).as_slice());
        assert_eq!(&pair.rejected.ids[pair.rejected.prompt_len..], ids(&e["rejected_ids"]).as_slice());
    }
}

#[test]
fn log_probs_and_losses_match_pytorch() {
    let exp = expected();
    let (tokenizer, pairs) = tokenized_pairs(8);
    let mut model = load_model(&fixture().join("model"), &Device::Cpu).unwrap();
    let score = candle_core::safetensors::load(fixture().join("reward_head.safetensors"), &Device::Cpu)
        .unwrap()
        .remove("score.weight")
        .unwrap();
    // Rewards come from the base model (the fixture's reward model has no adapter).
    let seqs: Vec<TokenizedSequence> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let rewards = sequence_rewards(&model, &seqs, tokenizer.pad_id, &score, false, 5).unwrap();

    load_peft(&fixture().join("lora"), &mut model).unwrap();
    let records = score_pairs(&model, &pairs, tokenizer.pad_id, 0.1, None, 3).unwrap();
    let mut worst: f64 = 0.0;
    let mut check = |ours: f64, theirs: &Value, what: &str, i: usize| {
        let diff = (ours - f(theirs)).abs();
        assert!(diff < TOL, "pair {i} {what}: ours {ours} vs PyTorch {} (|Δ| {diff})", f(theirs));
        worst = worst.max(diff);
    };
    let mut bt = Vec::new();
    for (i, (r, e)) in records.iter().zip(exp["pairs"].as_array().unwrap()).enumerate() {
        check(r.ref_chosen_logp, &e["base_chosen_logp"], "ref chosen logp", i);
        check(r.ref_rejected_logp, &e["base_rejected_logp"], "ref rejected logp", i);
        check(r.chosen_logp, &e["lora_chosen_logp"], "policy chosen logp", i);
        check(r.rejected_logp, &e["lora_rejected_logp"], "policy rejected logp", i);
        check(r.dpo_sigmoid, &e["dpo_sigmoid"], "dpo_sigmoid", i);
        check(r.ipo, &e["ipo_trl"], "ipo", i);
        check(rewards[2 * i] as f64, &e["reward_chosen"], "reward chosen", i);
        check(rewards[2 * i + 1] as f64, &e["reward_rejected"], "reward rejected", i);
        let loss = bradley_terry_loss(
            &Tensor::new(&[rewards[2 * i]], &Device::Cpu).unwrap(),
            &Tensor::new(&[rewards[2 * i + 1]], &Device::Cpu).unwrap(),
            None,
            None,
            0.0,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
        check(loss, &e["bt_loss"], "bt_loss", i);
        bt.push(loss);
    }
    let mean_bt = bt.iter().sum::<f64>() / bt.len() as f64;
    check(mean_bt, &exp["means"]["bt_loss"], "mean bt_loss", 0);
    let mean_dpo = records.iter().map(|r| r.dpo_sigmoid).sum::<f64>() / 8.0;
    check(mean_dpo, &exp["means"]["dpo_sigmoid"], "mean dpo_sigmoid", 0);
    println!("worst absolute difference from PyTorch: {worst:.2e}");
}

#[test]
fn lora_gradients_of_dpo_loss_match_pytorch() {
    let exp = expected();
    let (tokenizer, pairs) = tokenized_pairs(8);
    let mut model = load_model(&fixture().join("model"), &Device::Cpu).unwrap();
    let adapter = load_peft(&fixture().join("lora"), &mut model).unwrap();
    // Chosen then rejected in one forward pass, as the DPO trainer batches them.
    let seqs: Vec<TokenizedSequence> =
        pairs.iter().map(|p| p.chosen.clone()).chain(pairs.iter().map(|p| p.rejected.clone())).collect();
    // Every batch layout trains, so each must give PyTorch's gradients.
    for layout in [Layout::Padded, Layout::Packed, Layout::SharedPrefix] {
        check_dpo_gradients(&model, &adapter.vars, &seqs, tokenizer.pad_id, layout, &exp);
    }
}

fn check_dpo_gradients(
    model: &pairwise_trainer::model::LlamaModel,
    vars: &[(String, candle_core::Var)],
    seqs: &[TokenizedSequence],
    pad_id: u32,
    layout: Layout,
    exp: &Value,
) {
    let batch = SequenceBatch::with_layout(seqs, pad_id, layout, &Device::Cpu).unwrap();
    let reference = completion_log_probs(model, &batch, &ForwardCtx::eval(false)).unwrap().detach();
    let policy = completion_log_probs(model, &batch, &ForwardCtx::eval(true)).unwrap();
    let n = seqs.len() / 2;
    let lens = |range: std::ops::Range<usize>| {
        let v: Vec<f32> = batch.completion_lens[range].iter().map(|&l| l as f32).collect();
        Tensor::new(v.as_slice(), &Device::Cpu).unwrap()
    };
    let out = dpo_loss(
        DpoLossType::Sigmoid,
        0.1,
        PairLogps { chosen: &policy.narrow(0, 0, n).unwrap(), rejected: &policy.narrow(0, n, n).unwrap() },
        PairLogps { chosen: &reference.narrow(0, 0, n).unwrap(), rejected: &reference.narrow(0, n, n).unwrap() },
        (&lens(0..n), &lens(n..2 * n)),
        &Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    assert!((loss - f(&exp["means"]["dpo_sigmoid"])).abs() < TOL, "{layout:?}: loss {loss}");
    let grads = out.loss.backward().unwrap();
    let norms = exp["lora_grad_norms_mean_dpo_sigmoid"].as_object().unwrap();
    assert_eq!(norms.len(), vars.len());
    for (name, var) in vars {
        let g = grads.get(var).unwrap_or_else(|| panic!("no gradient for {name}"));
        let ours = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap() as f64;
        let theirs = f(&norms[name]);
        let rel = (ours - theirs).abs() / theirs;
        assert!(rel < 1e-3, "{name}: grad norm {ours} vs PyTorch {theirs} (rel {rel:.2e})");
    }
}

/// Per layout: the batch input's size, the completion log-probs and the last-token rewards
/// of `seqs`, by the fixture model with its LoRA adapter and one random score head.
fn outputs_by_layout(seqs: &[TokenizedSequence], pad_id: u32, layouts: &[Layout]) -> Vec<(usize, Vec<f32>, Vec<f32>)> {
    let mut model = load_model(&fixture().join("model"), &Device::Cpu).unwrap();
    load_peft(&fixture().join("lora"), &mut model).unwrap();
    let score = Tensor::randn(0f32, 1.0, (1, 64), &Device::Cpu).unwrap();
    let ctx = ForwardCtx::eval(true);
    layouts
        .iter()
        .map(|&layout| {
            let batch = SequenceBatch::with_layout(seqs, pad_id, layout, &Device::Cpu).unwrap();
            let logps = completion_log_probs(&model, &batch, &ctx).unwrap().to_vec1::<f32>().unwrap();
            let rewards = last_token_rewards(&model, &batch, &score, &ctx).unwrap().to_vec1::<f32>().unwrap();
            (batch.input.ids.elem_count(), logps, rewards)
        })
        .collect()
}

#[test]
fn shared_prefix_layout_agrees_with_padded_and_computes_fewer_rows() {
    let (tokenizer, pairs) = tokenized_pairs(8);
    // Chosen then rejected, as `SequenceBatch::for_pairs` orders them.
    let seqs: Vec<TokenizedSequence> =
        pairs.iter().map(|p| p.chosen.clone()).chain(pairs.iter().map(|p| p.rejected.clone())).collect();
    let [(_, padded, padded_r), (packed_rows, _, _), (shared_rows, shared, shared_r)]: [_; 3] =
        outputs_by_layout(&seqs, tokenizer.pad_id, &[Layout::Padded, Layout::Packed, Layout::SharedPrefix])
            .try_into()
            .unwrap();
    // Each pair's prompt is in the row once, not twice.
    let prompts: usize = pairs.iter().map(|p| p.chosen.prompt_len).sum();
    assert!(shared_rows <= packed_rows - prompts, "{shared_rows} rows shared against {packed_rows} packed");
    assert_eq!(padded.len(), shared.len());
    for (a, b) in padded.iter().chain(&padded_r).zip(shared.iter().chain(&shared_r)) {
        assert!((a - b).abs() < 1e-4, "padded {a} vs shared prefix {b}");
    }
}

#[test]
fn packed_and_padded_layouts_agree() {
    let (tokenizer, pairs) = tokenized_pairs(8);
    let seqs: Vec<TokenizedSequence> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let [(_, padded, padded_r), (_, packed, packed_r)]: [_; 2] =
        outputs_by_layout(&seqs, tokenizer.pad_id, &[Layout::Padded, Layout::Packed]).try_into().unwrap();
    for (a, b) in padded.iter().chain(&padded_r).zip(packed.iter().chain(&packed_r)) {
        assert!((a - b).abs() < 1e-4, "padded {a} vs packed {b}");
    }
}
