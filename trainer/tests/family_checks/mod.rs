//! The checks every model family's fixture goes through (`tests/fixtures/families/<family>`,
//! numbers from PyTorch by `make_fixtures.py`), shared by `families.rs` (the CPU kernels) and
//! `families_composite.rs` (candle's composite ops, the path a GPU takes): tokenization,
//! base and LoRA completion log-probs, DPO sigmoid / IPO and Bradley–Terry losses to 1e-4,
//! LoRA gradient norms to 1e-3 relative in both batch layouts, cached decoding against the
//! full forward, and merging the adapter into a model folder — each in both config shapes —
//! plus a bf16 sharded checkpoint, QLoRA's quantize-while-loading and mixed precision (bf16).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use pairwise_trainer::data::batch::SequenceBatch;
use pairwise_trainer::data::pairs::{TokenizedPair, TokenizedSequence, Truncation, read_jsonl, tokenize_pair};
use pairwise_trainer::data::readout::{completion_log_probs, sequence_rewards};
use pairwise_trainer::methods::generate::{Sampling, generate_batch};
use pairwise_trainer::methods::loss::{DpoOutput, PairLogps, bradley_terry_loss, dpo_loss};
use pairwise_trainer::methods::score::score_pairs;
use pairwise_trainer::model::input::Layout;
use pairwise_trainer::model::load::{Precision, load_model, load_model_as};
use pairwise_trainer::model::merge::write_model_folder;
use pairwise_trainer::model::tokenizer::ChatTokenizer;
use pairwise_trainer::model::{ForwardCtx, LlamaModel, ModelInput};
use pairwise_trainer::peft::QuantKind;
use pairwise_trainer::peft::load::load_peft;
use pairwise_trainer::peft::qlora::{ggml_dtype, linear_weight_bytes, quantize_base};
use pairwise_trainer::train::config::DpoLossType;
use rand::SeedableRng;
use serde_json::Value;

const TOL: f64 = 1e-4;
const BETA: f64 = 0.1;

/// Which `config.json` the model folder is read with.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// As transformers 5.x saved it (`rope_parameters`, `layer_types`).
    V5,
    /// The same model in transformers 4.x keys (`config.v4.json`).
    V4,
}

pub struct Fixture {
    pub family: &'static str,
    root: PathBuf,
    /// The model folder, with `config.json` in the asked-for shape.
    pub model_dir: PathBuf,
    expected: Value,
    _tmp: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn open(family: &'static str, shape: Shape) -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(family);
        let expected = serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap()).unwrap();
        let (model_dir, tmp) = match shape {
            Shape::V5 => (root.join("model"), None),
            Shape::V4 => {
                let tmp = tempfile::tempdir().unwrap();
                for entry in std::fs::read_dir(root.join("model")).unwrap() {
                    let path = entry.unwrap().path();
                    let name = path.file_name().unwrap().to_str().unwrap().to_string();
                    let target = if name == "config.v4.json" { "config.json".to_string() } else { name.clone() };
                    if name != "config.json" {
                        std::fs::copy(&path, tmp.path().join(target)).unwrap();
                    }
                }
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        Fixture { family, root, model_dir, expected, _tmp: tmp }
    }

    fn tokenized(&self) -> (ChatTokenizer, Vec<TokenizedPair>) {
        let tokenizer = ChatTokenizer::from_dir(&self.model_dir).unwrap();
        let pairs = read_jsonl(&self.root.join("prefs.jsonl"), None).unwrap();
        let limits = Truncation { max_length: 4096, max_prompt_length: 4096 };
        let tokenized = pairs.iter().map(|p| tokenize_pair(&tokenizer, p, limits).unwrap()).collect();
        (tokenizer, tokenized)
    }

    fn model(&self) -> LlamaModel {
        load_model(&self.model_dir, &Device::Cpu).unwrap()
    }

    fn pairs(&self) -> &Vec<Value> {
        self.expected["pairs"].as_array().unwrap()
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Token ids, log-probs of base and policy, DPO/IPO losses, rewards and the BT loss.
pub fn numbers_match_pytorch(fx: &Fixture) {
    let (tokenizer, pairs) = fx.tokenized();
    for (pair, e) in pairs.iter().zip(fx.pairs()) {
        assert_eq!(&pair.chosen.ids[..pair.chosen.prompt_len], ids(&e["prompt_ids"]).as_slice(), "{}", fx.family);
        assert_eq!(&pair.chosen.ids[pair.chosen.prompt_len..], ids(&e["chosen_ids"]).as_slice());
        assert_eq!(&pair.rejected.ids[pair.rejected.prompt_len..], ids(&e["rejected_ids"]).as_slice());
    }
    let mut model = fx.model();
    let score = candle_core::safetensors::load(fx.root.join("reward_head.safetensors"), &Device::Cpu)
        .unwrap()
        .remove("score.weight")
        .unwrap();
    let seqs: Vec<TokenizedSequence> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let rewards = sequence_rewards(&model, &seqs, tokenizer.pad_id, &score, false, 5).unwrap();
    load_peft(&fx.root.join("lora"), &mut model).unwrap();
    let records = score_pairs(&model, &pairs, tokenizer.pad_id, BETA, None, 3).unwrap();
    let mut worst: f64 = 0.0;
    let mut check = |ours: f64, theirs: &Value, what: &str, i: usize| {
        let diff = (ours - f(theirs)).abs();
        assert!(diff < TOL, "{} pair {i} {what}: ours {ours} vs PyTorch {} (|Δ| {diff:.2e})", fx.family, f(theirs));
        worst = worst.max(diff);
    };
    for (i, (r, e)) in records.iter().zip(fx.pairs()).enumerate() {
        check(r.ref_chosen_logp, &e["base_chosen_logp"], "base chosen logp", i);
        check(r.ref_rejected_logp, &e["base_rejected_logp"], "base rejected logp", i);
        check(r.chosen_logp, &e["lora_chosen_logp"], "LoRA chosen logp", i);
        check(r.rejected_logp, &e["lora_rejected_logp"], "LoRA rejected logp", i);
        check(r.dpo_sigmoid, &e["dpo_sigmoid"], "dpo_sigmoid", i);
        check(r.ipo, &e["ipo_trl"], "ipo", i);
        check(rewards[2 * i] as f64, &e["reward_chosen"], "reward chosen", i);
        check(rewards[2 * i + 1] as f64, &e["reward_rejected"], "reward rejected", i);
        let bt = bradley_terry_loss(
            &Tensor::new(&[rewards[2 * i]], &Device::Cpu).unwrap(),
            &Tensor::new(&[rewards[2 * i + 1]], &Device::Cpu).unwrap(),
            None,
            None,
            0.0,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
        check(bt, &e["bt_loss"], "bt_loss", i);
    }
    let mean_dpo = records.iter().map(|r| r.dpo_sigmoid).sum::<f64>() / records.len() as f64;
    check(mean_dpo, &fx.expected["means"]["dpo_sigmoid"], "mean dpo_sigmoid", 0);
    println!("{}: worst |Δ| from PyTorch {worst:.2e}", fx.family);
}

/// Base and LoRA completion log-probs of a batch of chosen then rejected sequences, and the
/// mean DPO sigmoid loss over its pairs.
fn mean_dpo_sigmoid(model: &LlamaModel, batch: &SequenceBatch) -> (Tensor, Tensor, DpoOutput) {
    let reference = completion_log_probs(model, batch, &ForwardCtx::eval(false)).unwrap().detach();
    let policy = completion_log_probs(model, batch, &ForwardCtx::eval(true)).unwrap();
    let n = batch.completion_lens.len() / 2;
    let lens = |range: std::ops::Range<usize>| {
        let v: Vec<f32> = batch.completion_lens[range].iter().map(|&l| l as f32).collect();
        Tensor::new(v.as_slice(), &Device::Cpu).unwrap()
    };
    let half = |t: &Tensor, from| t.narrow(0, from, n).unwrap();
    let out = dpo_loss(
        DpoLossType::Sigmoid,
        BETA,
        PairLogps { chosen: &half(&policy, 0), rejected: &half(&policy, n) },
        PairLogps { chosen: &half(&reference, 0), rejected: &half(&reference, n) },
        (&lens(0..n), &lens(n..2 * n)),
        &Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    (reference, policy, out)
}

/// Frobenius norms of the mean DPO loss's gradient for every LoRA tensor, in every layout.
pub fn lora_gradients_match_pytorch(fx: &Fixture) {
    let (tokenizer, pairs) = fx.tokenized();
    let mut model = fx.model();
    let adapter = load_peft(&fx.root.join("lora"), &mut model).unwrap();
    let seqs: Vec<TokenizedSequence> =
        pairs.iter().map(|p| p.chosen.clone()).chain(pairs.iter().map(|p| p.rejected.clone())).collect();
    let norms = fx.expected["lora_grad_norms_mean_dpo_sigmoid"].as_object().unwrap();
    assert_eq!(norms.len(), adapter.vars.len(), "{}: LoRA tensors", fx.family);
    for layout in [Layout::Padded, Layout::Packed, Layout::SharedPrefix] {
        let batch = SequenceBatch::with_layout(&seqs, tokenizer.pad_id, layout, &Device::Cpu).unwrap();
        let (_, _, out) = mean_dpo_sigmoid(&model, &batch);
        let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
        let theirs = f(&fx.expected["means"]["dpo_sigmoid"]);
        assert!((loss - theirs).abs() < TOL, "{} {layout:?}: loss {loss} vs {theirs}", fx.family);
        let grads = out.loss.backward().unwrap();
        for (name, var) in &adapter.vars {
            let g = grads.get(var).unwrap_or_else(|| panic!("{}: no gradient for {name}", fx.family));
            let ours = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap() as f64;
            let theirs = f(&norms[name]);
            let rel = (ours - theirs).abs() / theirs;
            assert!(
                rel < 1e-3,
                "{} {layout:?} {name}: grad norm {ours} vs PyTorch {theirs} (rel {rel:.2e})",
                fx.family
            );
        }
    }
}

/// Logits of the last position by the full (training) forward pass.
fn full_logits(model: &LlamaModel, ids: &[u32], ctx: &ForwardCtx) -> Vec<f32> {
    let input = ModelInput::right_padded(&[ids], 0, &Device::Cpu).unwrap();
    let hidden = model.hidden_states(&input, ctx).unwrap();
    let last = hidden.narrow(1, ids.len() - 1, 1).unwrap().squeeze(1).unwrap();
    model.logits(&last, ctx).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

/// Greedy generation through the KV cache (a left-padded batch of two prompts longer than the
/// sliding windows) picks, at every step, the full forward's argmax.
pub fn cached_decoding_matches_the_full_forward(fx: &Fixture) {
    let (tokenizer, pairs) = fx.tokenized();
    let mut model = fx.model();
    load_peft(&fx.root.join("lora"), &mut model).unwrap();
    let ctx = ForwardCtx::eval(true);
    let prompts: Vec<Vec<u32>> = pairs.iter().take(2).map(|p| p.chosen.ids[..p.chosen.prompt_len].to_vec()).collect();
    assert_ne!(prompts[0].len(), prompts[1].len(), "the batch must need padding");
    let sampling = Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, max_new_tokens: 6, stop: vec![], seed: 0 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let batch = generate_batch(&model, &tokenizer, &prompts, &sampling, &mut rng, &ctx).unwrap();
    for (prompt, completion) in prompts.iter().zip(&batch) {
        let mut seq = prompt.clone();
        assert!(!completion.tokens.is_empty(), "{}: nothing generated", fx.family);
        for &token in &completion.tokens {
            let logits = full_logits(&model, &seq, &ctx);
            let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            let margin = logits[best] - logits[token as usize];
            assert!(
                margin < 1e-4,
                "{}: greedy token {token} is not the full forward's {best} (margin {margin})",
                fx.family
            );
            seq.push(token);
        }
    }
}

/// `merge`: the adapter folded into a model folder, read back, gives the policy's log-probs.
pub fn merged_folder_gives_the_policy(fx: &Fixture) {
    let (tokenizer, pairs) = fx.tokenized();
    let mut model = fx.model();
    load_peft(&fx.root.join("lora"), &mut model).unwrap();
    let out = tempfile::tempdir().unwrap();
    write_model_folder(&model, Some(&fx.model_dir), out.path()).unwrap();
    let merged = load_model(out.path(), &Device::Cpu).unwrap();
    assert_eq!(merged.config, model.config, "{}: the written config.json reads back the same", fx.family);
    let seqs: Vec<TokenizedSequence> = pairs.iter().map(|p| p.chosen.clone()).collect();
    let batch = SequenceBatch::with_layout(&seqs, tokenizer.pad_id, Layout::Padded, &Device::Cpu).unwrap();
    let ours = completion_log_probs(&merged, &batch, &ForwardCtx::eval(false)).unwrap().to_vec1::<f32>().unwrap();
    for (i, (o, e)) in ours.iter().zip(fx.pairs()).enumerate() {
        let theirs = f(&e["lora_chosen_logp"]);
        assert!((*o as f64 - theirs).abs() < TOL, "{} merged pair {i}: {o} vs PyTorch's policy {theirs}", fx.family);
    }
}

/// A bfloat16 checkpoint in shards (`model_bf16/`, where the fixture has one) loads and gives
/// PyTorch's log-probs of the same bfloat16 weights.
pub fn bf16_sharded_checkpoint_matches_pytorch(fx: &Fixture) {
    let Some(theirs) = fx.expected.get("bf16_base_chosen_logp") else {
        return;
    };
    let dir = fx.root.join("model_bf16");
    let (tokenizer, pairs) = fx.tokenized();
    let model = load_model(&dir, &Device::Cpu).unwrap();
    let seqs: Vec<TokenizedSequence> = pairs.iter().map(|p| p.chosen.clone()).collect();
    let batch = SequenceBatch::with_layout(&seqs, tokenizer.pad_id, Layout::Padded, &Device::Cpu).unwrap();
    let ours = completion_log_probs(&model, &batch, &ForwardCtx::eval(false)).unwrap().to_vec1::<f32>().unwrap();
    for (i, (o, t)) in ours.iter().zip(theirs.as_array().unwrap()).enumerate() {
        let diff = (*o as f64 - f(t)).abs();
        assert!(diff < TOL, "{} bf16 pair {i}: {o} vs PyTorch {} (|Δ| {diff:.2e})", fx.family, f(t));
    }
}

/// What one DPO step on a fixture computes: base and LoRA completion log-probs (chosen
/// sequences first, then rejected), the mean sigmoid loss and each LoRA tensor's gradient.
struct DpoStep {
    base: Vec<f32>,
    policy: Vec<f32>,
    loss: f64,
    grads: Vec<(String, Tensor)>,
}

/// One DPO step on the fixture's pairs with the model held in `precision`.
fn dpo_lora_step(fx: &Fixture, precision: Precision) -> DpoStep {
    let (tokenizer, pairs) = fx.tokenized();
    let mut model = load_model_as(&fx.model_dir, &Device::Cpu, None, precision).unwrap();
    assert_eq!(model.embed_tokens.tensor().dtype(), precision.dtype(), "{}: the base is held in it", fx.family);
    let adapter = load_peft(&fx.root.join("lora"), &mut model).unwrap();
    assert!(adapter.vars.iter().all(|(_, v)| v.dtype() == DType::F32), "{}: LoRA master weights are f32", fx.family);
    let seqs: Vec<TokenizedSequence> =
        pairs.iter().map(|p| p.chosen.clone()).chain(pairs.iter().map(|p| p.rejected.clone())).collect();
    let batch = SequenceBatch::with_layout(&seqs, tokenizer.pad_id, Layout::Padded, &Device::Cpu).unwrap();
    let (reference, policy, out) = mean_dpo_sigmoid(&model, &batch);
    assert_eq!(policy.dtype(), DType::F32, "{}: log-probs come out in f32", fx.family);
    let grads = out.loss.backward().unwrap();
    let grads = adapter
        .vars
        .iter()
        .map(|(name, var)| {
            let g = grads.get(var).unwrap_or_else(|| panic!("{} {precision:?}: no gradient for {name}", fx.family));
            assert_eq!(g.dtype(), DType::F32, "{} {precision:?}: {name}'s gradient is f32", fx.family);
            (name.clone(), g.clone())
        })
        .collect();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    DpoStep { base: reference.to_vec1().unwrap(), policy: policy.to_vec1().unwrap(), loss, grads }
}

fn norm(t: &Tensor) -> f64 {
    t.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap() as f64
}

/// Mixed precision (`--precision bf16`): bf16 base and activations with the adapter's f32
/// master weights track PyTorch's float32 numbers to bfloat16's precision (8 significant bits,
/// 0.4% a rounding): base and LoRA log-probs within 1%, the DPO loss within 0.02, every LoRA
/// gradient norm within 10% and its direction within 0.97 cosine of the float32 gradient
/// (this crate's f32 path, which matches PyTorch's to 1e-3).
pub fn mixed_precision_tracks_pytorch(fx: &Fixture) {
    let DpoStep { base, policy, loss, grads } = dpo_lora_step(fx, Precision::Bf16);
    let f32_grads = dpo_lora_step(fx, Precision::F32).grads;
    let n = base.len() / 2;
    let mut worst: f64 = 0.0;
    for (i, e) in fx.pairs().iter().enumerate() {
        for (ours, key) in [
            (base[i], "base_chosen_logp"),
            (base[n + i], "base_rejected_logp"),
            (policy[i], "lora_chosen_logp"),
            (policy[n + i], "lora_rejected_logp"),
        ] {
            let theirs = f(&e[key]);
            let rel = (ours as f64 - theirs).abs() / theirs.abs();
            assert!(rel < 1e-2, "{} bf16 pair {i} {key}: {ours} vs PyTorch f32 {theirs} (rel {rel:.2e})", fx.family);
            worst = worst.max(rel);
        }
    }
    let theirs = f(&fx.expected["means"]["dpo_sigmoid"]);
    assert!((loss - theirs).abs() < 0.02, "{} bf16: DPO loss {loss} vs PyTorch f32 {theirs}", fx.family);
    let norms = fx.expected["lora_grad_norms_mean_dpo_sigmoid"].as_object().unwrap();
    let (mut worst_norm, mut worst_cos): (f64, f64) = (0.0, 1.0);
    for ((name, g), (_, g32)) in grads.iter().zip(&f32_grads) {
        let theirs = f(&norms[name]);
        let rel = (norm(g) - theirs).abs() / theirs;
        assert!(rel < 0.1, "{} bf16 {name}: grad norm {} vs PyTorch f32 {theirs} (rel {rel:.2e})", fx.family, norm(g));
        let cos = (g * g32).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64 / (norm(g) * norm(g32));
        assert!(cos > 0.97, "{} bf16 {name}: gradient at cosine {cos} from the f32 one", fx.family);
        worst_norm = worst_norm.max(rel);
        worst_cos = worst_cos.min(cos);
    }
    println!(
        "{} bf16: worst log-prob rel {worst:.2e}, DPO loss |Δ| {:.2e}, worst grad norm rel {worst_norm:.2e}, \
         lowest grad cosine {worst_cos:.4}",
        fx.family,
        (loss - theirs).abs()
    );
}

/// QLoRA's base quantized as the folder is read computes exactly what the base quantized
/// after a full f32 load does (same Q8_0 blocks, bit for bit).
pub fn qlora_quantized_while_loading_equals_quantized_after(fx: &Fixture) {
    let (tokenizer, pairs) = fx.tokenized();
    let on_load =
        load_model_as(&fx.model_dir, &Device::Cpu, Some(ggml_dtype(QuantKind::Q8_0)), Precision::F32).unwrap();
    let mut after = fx.model();
    quantize_base(&mut after, QuantKind::Q8_0).unwrap();
    assert_eq!(linear_weight_bytes(&on_load), linear_weight_bytes(&after));
    let seqs: Vec<TokenizedSequence> = pairs.iter().take(2).map(|p| p.chosen.clone()).collect();
    let batch = SequenceBatch::with_layout(&seqs, tokenizer.pad_id, Layout::Padded, &Device::Cpu).unwrap();
    let logps =
        |m: &LlamaModel| completion_log_probs(m, &batch, &ForwardCtx::eval(false)).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(logps(&on_load), logps(&after), "{}", fx.family);
}

/// Every check on one family, in both config shapes.
pub fn check_family(family: &'static str) {
    for shape in [Shape::V5, Shape::V4] {
        let fx = Fixture::open(family, shape);
        println!("{family} ({shape:?})");
        numbers_match_pytorch(&fx);
        lora_gradients_match_pytorch(&fx);
        cached_decoding_matches_the_full_forward(&fx);
        merged_folder_gives_the_policy(&fx);
    }
    let fx = Fixture::open(family, Shape::V5);
    bf16_sharded_checkpoint_matches_pytorch(&fx);
    qlora_quantized_while_loading_equals_quantized_after(&fx);
    mixed_precision_tracks_pytorch(&fx);
}
