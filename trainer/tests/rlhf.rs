//! RLHF (RLOO, and PPO-clip) on a tiny self-made model with a rule-based reward: the share of
//! "praising" words in the response. Within the test budget the mean reward must rise clearly
//! while the KL to the reference stays bounded; with a large KL coefficient the policy stays
//! closer.

use candle_core::Device;
use pairwise_trainer::methods::generate::{Completion, PromptRecord, Sampling, encode_prompt};
use pairwise_trainer::methods::rlhf::{Algorithm, Reward, RlhfConfig, run_rlhf};
use pairwise_trainer::model::load::load_model_and_tokenizer;
use pairwise_trainer::peft::lora::{LoraConfig, attach_lora};
use pairwise_trainer::synthetic::{tiny_config, vocabulary, write_tiny_policy};

/// Share of the response's tokens that are praising words.
struct PraiseRule(Vec<u32>);

impl Reward for PraiseRule {
    fn rewards(&self, _prompts: &[&[u32]], completions: &[&Completion]) -> anyhow::Result<Vec<f32>> {
        Ok(completions
            .iter()
            .map(|c| c.tokens.iter().filter(|t| self.0.contains(t)).count() as f32 / c.tokens.len().max(1) as f32)
            .collect())
    }
}

fn run(
    algorithm: Algorithm,
    kl_coef: f64,
    steps: usize,
    learning_rate: f64,
) -> Vec<std::collections::BTreeMap<String, f64>> {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_policy(&dir.path().join("model"), &tiny_config(), 21).unwrap();
    let (mut model, tokenizer) = load_model_and_tokenizer(&dir.path().join("model"), &Device::Cpu).unwrap();
    let targets = ["q", "k", "v", "o", "gate", "up", "down"].map(String::from);
    let vars = attach_lora(&mut model, &LoraConfig::new(8, 16.0, 0.0, &targets).unwrap(), 2).unwrap();
    let praise: Vec<u32> = ["great", "lovely", "useful", "fun", "kind", "bright"]
        .iter()
        .map(|w| vocabulary().iter().position(|v| v == w).unwrap() as u32)
        .collect();
    let prompts: Vec<Vec<u32>> = ["cats", "rain", "music", "tea", "trains", "books"]
        .iter()
        .map(|t| {
            encode_prompt(&tokenizer, &PromptRecord { prompt: format!("tell me about {t}"), messages: vec![] }).unwrap()
        })
        .collect();
    let config = RlhfConfig {
        algorithm,
        steps,
        prompts_per_step: 4,
        samples: 4,
        kl_coef,
        learning_rate,
        max_grad_norm: 1.0,
        sampling: Sampling { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 8, stop: vec![], seed: 0 },
        seed: 5,
        output: dir.path().join("out"),
        progress: false,
    };
    let lines = run_rlhf(&model, &vars, &tokenizer, &prompts, &PraiseRule(praise), &config).unwrap();
    let logged = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), steps, "one metrics line per step");
    for name in ["loss", "reward", "kl", "entropy", "response_length", "objective", "grad_norm"] {
        assert!(lines.iter().all(|l| l[name].is_finite()), "{name} logged and finite");
    }
    lines
}

fn mean_of(lines: &[std::collections::BTreeMap<String, f64>], name: &str) -> f64 {
    lines.iter().map(|l| l[name]).sum::<f64>() / lines.len() as f64
}

#[test]
fn rloo_raises_the_reward_with_bounded_kl() {
    let lines = run(Algorithm::Rloo, 0.05, 40, 1e-2);
    let (first, last) = (mean_of(&lines[..5], "reward"), mean_of(&lines[35..], "reward"));
    assert!(last > first + 0.25, "mean reward should rise clearly: {first:.3} → {last:.3}");
    let kl = mean_of(&lines[35..], "kl");
    assert!(kl.abs() < 15.0, "KL to the reference stays bounded: {kl:.3}");

    // A strong KL penalty keeps the policy nearer the reference.
    let tight = run(Algorithm::Rloo, 2.0, 40, 1e-2);
    let tight_kl = mean_of(&tight[35..], "kl");
    assert!(tight_kl < kl, "β = 2 gives a smaller KL ({tight_kl:.3}) than β = 0.05 ({kl:.3})");
}

#[test]
fn ppo_clip_raises_the_reward_with_bounded_kl() {
    // Three optimizer steps per batch of rollouts: a smaller learning rate than RLOO's one.
    let lines = run(Algorithm::PpoClip { epochs: 3, clip: 0.2 }, 0.05, 40, 1e-3);
    // The first step's rollouts come from the initial policy, before any update.
    let (first, last) = (lines[0]["reward"], mean_of(&lines[35..], "reward"));
    assert!(last > first + 0.25, "mean reward should rise clearly: {first:.3} → {last:.3}");
    let kl = mean_of(&lines[35..], "kl");
    assert!(kl.abs() < 15.0, "KL to the reference stays bounded: {kl:.3}");
    assert!(lines.iter().all(|l| (0.0..=1.0).contains(&l["clip_fraction"])), "clip fraction logged");
    assert!(lines.iter().any(|l| l["clip_fraction"] > 0.0), "later epochs move the ratio past the clip range");
}
