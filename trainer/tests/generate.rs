//! Generation: the KV-cached decode path must give the same logits as the training forward
//! pass (which matches PyTorch, see parity.rs) — for one prompt, for left-padded batches of
//! prompts of different lengths, with LoRA and with prefix-tuning adapters on — and
//! sampling must be repeatable for a seed and honour top-k / top-p / stop sequences.

use candle_core::{Device, Tensor};
use pairwise_trainer::methods::generate::{
    Finish, PromptRecord, Sampling, encode_prompt, generate_batch, sample_token,
};
use pairwise_trainer::model::tokenizer::ChatTokenizer;
use pairwise_trainer::model::{ForwardCtx, LlamaModel, ModelInput};
use pairwise_trainer::peft::lora::{LoraConfig, attach_lora};
use pairwise_trainer::peft::prefix::attach_prefix;
use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn tiny() -> (LlamaModel, ChatTokenizer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &tiny_config(), 3).unwrap();
    let (model, tokenizer) = pairwise_trainer::model::load::load_model_and_tokenizer(dir.path(), &Device::Cpu).unwrap();
    (model, tokenizer, dir)
}

/// Logits of the last position by the full (training) forward pass.
fn full_logits(model: &LlamaModel, ids: &[u32], ctx: &ForwardCtx) -> Vec<f32> {
    let input = ModelInput::right_padded(&[ids], 0, &Device::Cpu).unwrap();
    let hidden = model.hidden_states(&input, ctx).unwrap();
    let last = hidden.narrow(1, ids.len() - 1, 1).unwrap().squeeze(1).unwrap();
    model.logits(&last, ctx).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "{what}: max |Δ| = {worst}");
}

/// Steps the cached decoder through `feed` after a batched prefill and returns, per row, the
/// logits after each fed token (prefill logits first).
fn greedy_logits_via_generate(model: &LlamaModel, tokenizer: &ChatTokenizer, prompts: &[Vec<u32>], ctx: &ForwardCtx) {
    let sampling = Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, max_new_tokens: 5, stop: vec![], seed: 0 };
    let batch = generate_batch(model, tokenizer, prompts, &sampling, &mut StdRng::seed_from_u64(0), ctx).unwrap();
    for (prompt, completion) in prompts.iter().zip(&batch) {
        // Each greedy token must be the argmax of the full forward over prompt + tokens so far.
        let mut seq = prompt.clone();
        for &token in &completion.tokens {
            let logits = full_logits(model, &seq, ctx);
            let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            let margin = logits[best as usize] - logits[token as usize];
            assert!(margin < 1e-4, "greedy token {token} differs from the full forward's {best} (margin {margin})");
            seq.push(token);
        }
        // And alone it generates exactly what it generated in the batch.
        let alone = generate_batch(
            model,
            tokenizer,
            std::slice::from_ref(prompt),
            &sampling,
            &mut StdRng::seed_from_u64(0),
            ctx,
        )
        .unwrap();
        assert_eq!(alone[0].tokens, completion.tokens, "batched and single generation agree");
    }
}

#[test]
fn cached_decoding_matches_the_full_forward() {
    let (model, _, _dir) = tiny();
    let ctx = ForwardCtx::eval(true);
    let prompt: Vec<u32> = vec![1, 4, 5, 6, 13, 5, 12];
    let extra = [20u32, 7, 9];
    let (mut caches, prefix) = model.initial_caches(1, &ctx).unwrap();
    assert_eq!(prefix, 0);
    let t = prompt.len();
    let ids = Tensor::from_vec(prompt.clone(), (1, t), &Device::Cpu).unwrap();
    let positions = Tensor::arange(0u32, t as u32, &Device::Cpu).unwrap().reshape((1, t)).unwrap();
    let mask: Vec<f32> = (0..t * t).map(|i| if i % t <= i / t { 0.0 } else { f32::NEG_INFINITY }).collect();
    let mask = Tensor::from_vec(mask, (1, 1, 1, t, t), &Device::Cpu).unwrap();
    let logits = model.decode_step(&ids, &positions, &mask, &mut caches, &ctx).unwrap();
    assert_close(&logits.squeeze(0).unwrap().to_vec1().unwrap(), &full_logits(&model, &prompt, &ctx), "prefill");
    let mut seq = prompt.clone();
    for (i, &token) in extra.iter().enumerate() {
        seq.push(token);
        let keys = t + i + 1;
        let logits = model
            .decode_step(
                &Tensor::from_vec(vec![token], (1, 1), &Device::Cpu).unwrap(),
                &Tensor::from_vec(vec![(t + i) as u32], (1, 1), &Device::Cpu).unwrap(),
                &Tensor::zeros((1, 1, 1, 1, keys), candle_core::DType::F32, &Device::Cpu).unwrap(),
                &mut caches,
                &ctx,
            )
            .unwrap();
        assert_close(&logits.squeeze(0).unwrap().to_vec1().unwrap(), &full_logits(&model, &seq, &ctx), "step");
    }
}

#[test]
fn batched_left_padded_generation_matches_single_prompts() {
    let (model, tokenizer, _dir) = tiny();
    let prompts = vec![vec![1, 4, 5, 6, 13], vec![1, 7, 8], vec![1, 4, 5, 6, 9, 10, 11, 12, 14]];
    greedy_logits_via_generate(&model, &tokenizer, &prompts, &ForwardCtx::eval(false));
}

#[test]
fn generation_runs_lora_and_prefix_adapters() {
    let (mut model, tokenizer, _dir) = tiny();
    let targets = ["q", "v", "down"].map(String::from);
    attach_lora(&mut model, &LoraConfig::new(4, 8.0, 0.0, &targets).unwrap(), 5).unwrap();
    // B = 0 at init: make the adapter matter before comparing.
    for layer in &mut model.layers {
        for (_, linear) in layer.linears_mut() {
            if let Some(lora) = &mut linear.lora {
                lora.b.set(&(lora.b.randn_like(0.0, 0.2).unwrap())).unwrap();
            }
        }
    }
    let prompts = vec![vec![1, 4, 5, 6, 13], vec![1, 7, 8]];
    greedy_logits_via_generate(&model, &tokenizer, &prompts, &ForwardCtx::eval(true));

    let (mut model, tokenizer, _dir) = tiny();
    attach_prefix(&mut model, 3, 9).unwrap();
    greedy_logits_via_generate(&model, &tokenizer, &prompts, &ForwardCtx::eval(true));
}

#[test]
fn sampling_is_seeded_and_respects_top_k_top_p_and_stops() {
    let (model, tokenizer, _dir) = tiny();
    let ctx = ForwardCtx::eval(false);
    let record = PromptRecord { prompt: "tell me about cats".into(), messages: vec![] };
    let prompt = encode_prompt(&tokenizer, &record).unwrap();
    let sampling = Sampling { temperature: 1.0, top_p: 0.9, top_k: 10, max_new_tokens: 12, stop: vec![], seed: 42 };
    let run = |seed| {
        generate_batch(
            &model,
            &tokenizer,
            &[prompt.clone(), prompt.clone()],
            &sampling,
            &mut StdRng::seed_from_u64(seed),
            &ctx,
        )
        .unwrap()
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a.iter().map(|x| &x.tokens).collect::<Vec<_>>(), b.iter().map(|x| &x.tokens).collect::<Vec<_>>());
    assert_ne!(a.iter().map(|x| &x.tokens).collect::<Vec<_>>(), c.iter().map(|x| &x.tokens).collect::<Vec<_>>());
    for completion in &a {
        assert!(completion.tokens.len() <= 12);
        assert!(matches!(completion.finish, Finish::Eos | Finish::Length));
    }

    // top-k 1 is greedy; top-p keeps the nucleus only.
    let logits = [0.0f32, 3.0, 1.0, 2.9];
    let mut rng = StdRng::seed_from_u64(0);
    let greedy = Sampling { top_k: 1, ..sampling.clone() };
    assert!((0..50).all(|_| sample_token(&logits, &greedy, &mut rng) == 1));
    let nucleus = Sampling { top_k: 0, top_p: 0.5, ..sampling.clone() };
    assert!((0..200).all(|_| [1, 3].contains(&sample_token(&logits, &nucleus, &mut rng))));
    let all = Sampling { top_k: 0, top_p: 1.0, ..sampling.clone() };
    let drawn: std::collections::HashSet<u32> = (0..500).map(|_| sample_token(&logits, &all, &mut rng)).collect();
    assert_eq!(drawn.len(), 4, "without limits every token can be drawn");

    // A stop sequence ends the response and is not part of it.
    let word = a[0].text.split_whitespace().nth(1).map(str::to_string).expect("a response of two words or more");
    let stopped = Sampling { stop: vec![word.clone()], ..sampling.clone() };
    let out = generate_batch(
        &model,
        &tokenizer,
        std::slice::from_ref(&prompt),
        &stopped,
        &mut StdRng::seed_from_u64(1),
        &ctx,
    )
    .unwrap();
    assert_eq!(out[0].finish, Finish::Stop);
    assert!(!out[0].text.contains(&word), "{:?} still contains {word:?}", out[0].text);
}
