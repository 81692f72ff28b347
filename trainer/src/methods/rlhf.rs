//! RLHF policy optimisation (`pairwise-train rlhf`) with RLOO: a LoRA policy is improved
//! against a reward — a trained reward model, or any function of the response — with a KL
//! penalty to the frozen reference (the same model with adapters off). Each step:
//!
//! 1. sample K responses for each of P prompts from the current policy (no gradient);
//! 2. score them: `R = reward − β · KL`, where KL is the sampled responses' summed
//!    log π(y|x) − log π_ref(y|x) (the usual single-sample estimate);
//! 3. leave-one-out baseline: `A_i = R_i − mean of R_j over the other K − 1 samples`;
//! 4. loss = −mean(A_i · log π(y_i|x)) → clipped gradients → AdamW on the adapters.
//!
//! With [`Algorithm::PpoClip`] step 4 becomes PPO's clipped surrogate, taken `epochs` times
//! on the same rollouts: `−mean(min(ρ_i · A_i, clip(ρ_i, 1 − ε, 1 + ε) · A_i))`, where
//! `ρ_i = exp((log π(y_i|x) − log π_old(y_i|x)) / |y_i|)` is the sequence's importance ratio
//! per token (length-normalised, so long responses do not get extreme ratios) and the
//! advantages are the leave-one-out ones above: no value network is trained.
//!
//! Metrics per step (`metrics.jsonl`): `loss`, `reward` (mean raw reward), `kl` (mean per
//! response), `objective` (reward − β·KL), `entropy` (mean −log π per sampled token, a Monte
//! Carlo estimate of the policy's per-token entropy), `response_length`, `grad_norm`,
//! `learning_rate`, `tokens_per_second`; with PPO also `clip_fraction` (share of responses whose
//! ratio was clipped in the last epoch).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor, Var};
use clap::{ArgMatches, Args, FromArgMatches};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::data::batch::SequenceBatch;
use crate::data::pairs::TokenizedSequence;
use crate::data::readout::{completion_log_probs, last_token_rewards};
use crate::error::TrainerError;
use crate::methods::generate::{Completion, Finish, Sampling, encode_prompt, generate_batch, read_prompts};
use crate::methods::reward::load_reward_head;
use crate::model::load::load_model_and_tokenizer;
use crate::model::tokenizer::ChatTokenizer;
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::PeftTask;
use crate::peft::load::load_peft;
use crate::peft::lora::{LoraConfig, attach_lora, save_peft};
use crate::tensor::device::default_device;
use crate::train::optim::{AdamW, clip_factor, global_norm};

/// Scores sampled responses; `prompts[i]` are the token ids `completions[i]` answers.
pub trait Reward {
    fn rewards(&self, prompts: &[&[u32]], completions: &[&Completion]) -> anyhow::Result<Vec<f32>>;
}

/// A trained reward model: transformer (+ its adapter) with the scalar `score` head on the
/// last token, scoring prompt + response + EOS as it was trained.
pub struct RewardModel {
    pub model: LlamaModel,
    pub head: Tensor,
    pub eos_id: u32,
    pub pad_id: u32,
    pub batch_size: usize,
}

impl Reward for RewardModel {
    fn rewards(&self, prompts: &[&[u32]], completions: &[&Completion]) -> anyhow::Result<Vec<f32>> {
        let seqs: Vec<TokenizedSequence> = prompts
            .iter()
            .zip(completions)
            .map(|(prompt, completion)| {
                let mut ids = prompt.to_vec();
                ids.extend(&completion.tokens);
                if completion.finish != Finish::Eos {
                    ids.push(self.eos_id);
                }
                TokenizedSequence { ids, prompt_len: prompt.len() }
            })
            .collect();
        let ctx = ForwardCtx::eval(true);
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(self.batch_size.max(1)) {
            let batch = SequenceBatch::new(chunk, self.pad_id, &self.model.config, self.model.device())?;
            out.extend(last_token_rewards(&self.model, &batch, &self.head, &ctx)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

/// How the policy gradient is taken from each batch of rollouts. On the command line:
/// `--algorithm`, `--ppo-epochs` and `--clip-range`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// One REINFORCE step with the leave-one-out baseline.
    Rloo,
    /// `epochs` steps of PPO's clipped surrogate with clip range `clip` (ε).
    PpoClip { epochs: usize, clip: f64 },
}

/// The command-line form of [`Algorithm`].
#[derive(Args)]
struct AlgorithmFlags {
    /// rloo: one policy-gradient step per batch of rollouts with the leave-one-out baseline;
    /// ppo: `--ppo-epochs` steps of PPO's clipped surrogate on each batch (same advantages, no critic).
    #[arg(long, value_enum, default_value = "rloo")]
    algorithm: AlgorithmName,
    /// PPO: optimizer steps on each batch of rollouts.
    #[arg(long, default_value_t = 4)]
    ppo_epochs: usize,
    /// PPO: clip range ε of the importance ratio.
    #[arg(long, default_value_t = 0.2)]
    clip_range: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AlgorithmName {
    Rloo,
    Ppo,
}

impl FromArgMatches for Algorithm {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = AlgorithmFlags::from_arg_matches(matches)?;
        Ok(match flags.algorithm {
            AlgorithmName::Rloo => Algorithm::Rloo,
            AlgorithmName::Ppo => Algorithm::PpoClip { epochs: flags.ppo_epochs, clip: flags.clip_range },
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for Algorithm {
    fn augment_args(command: clap::Command) -> clap::Command {
        AlgorithmFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        AlgorithmFlags::augment_args_for_update(command)
    }
}

/// The settings of an RLHF run; the command line of `pairwise-train rlhf` (with
/// [`RlhfCommand`], which adds the models, prompts, policy adapter and rollout sampling).
#[derive(Debug, Clone, Args)]
pub struct RlhfConfig {
    /// Output folder: the policy's PEFT LoRA adapter and metrics.jsonl.
    #[arg(long, default_value = "out-rlhf")]
    pub output: PathBuf,
    #[command(flatten)]
    pub algorithm: Algorithm,
    /// Batches of rollouts (with PPO each gives --ppo-epochs optimizer steps).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = 4)]
    pub prompts_per_step: usize,
    /// Responses sampled per prompt (K ≥ 2; each one's baseline is the mean of the others).
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// β of the KL penalty to the reference.
    #[arg(long, default_value_t = 0.05)]
    pub kl_coef: f64,
    #[arg(long, default_value_t = 1e-5)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// How rollouts are sampled (on the command line [`RlhfCommand`]'s rollout flags).
    #[arg(skip)]
    pub sampling: Sampling,
    /// Seed of the prompt order and the sampled tokens (on the command line [`RlhfCommand`]'s
    /// `--seed`).
    #[arg(skip)]
    pub seed: u64,
    /// Show the progress bar (always on the command line).
    #[arg(skip = true)]
    pub progress: bool,
}

/// Runs RLOO for `config.steps` steps on the policy's trainable adapter `vars`; returns the
/// metric lines (also appended to `output/metrics.jsonl`).
pub fn run_rlhf(
    policy: &LlamaModel,
    vars: &[(String, Var)],
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<u32>],
    reward: &dyn Reward,
    config: &RlhfConfig,
) -> anyhow::Result<Vec<BTreeMap<String, f64>>> {
    anyhow::ensure!(config.samples >= 2, "RLOO needs at least 2 samples per prompt (--samples)");
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    std::fs::create_dir_all(&config.output).with_context(|| format!("creating {}", config.output.display()))?;
    let metrics_path = config.output.join("metrics.jsonl");
    let mut metrics_file = std::fs::File::create(&metrics_path)?;
    let params: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = AdamW::new(params.clone(), 0.0)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = Vec::new();
    let progress = if config.progress {
        indicatif::ProgressBar::new(config.steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")?);
    let device = policy.device().clone();
    let k = config.samples;
    let mut lines = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let started = Instant::now();
        // Prompts in a seeded shuffled order, a new order each pass.
        let mut chosen = Vec::with_capacity(config.prompts_per_step);
        while chosen.len() < config.prompts_per_step {
            if order.is_empty() {
                order = (0..prompts.len()).collect();
                order.shuffle(&mut rng);
            }
            chosen.push(order.pop().unwrap_or_default());
        }
        let batch_prompts: Vec<Vec<u32>> =
            chosen.iter().flat_map(|&p| std::iter::repeat_n(prompts[p].clone(), k)).collect();
        let completions =
            generate_batch(policy, tokenizer, &batch_prompts, &config.sampling, &mut rng, &ForwardCtx::eval(true))?;

        let prompt_refs: Vec<&[u32]> = batch_prompts.iter().map(Vec::as_slice).collect();
        let completion_refs: Vec<&Completion> = completions.iter().collect();
        let rewards = reward.rewards(&prompt_refs, &completion_refs)?;
        let seqs: Vec<TokenizedSequence> = batch_prompts
            .iter()
            .zip(&completions)
            .map(|(p, c)| TokenizedSequence { ids: p.iter().chain(&c.tokens).copied().collect(), prompt_len: p.len() })
            .collect();
        let batch = SequenceBatch::new(&seqs, tokenizer.pad_id, &policy.config, &device)?;
        let policy_logps = completion_log_probs(policy, &batch, &ForwardCtx::eval(true))?;
        let reference: Vec<f32> = completion_log_probs(policy, &batch, &ForwardCtx::eval(false))?.to_vec1()?;
        let logps: Vec<f32> = policy_logps.to_vec1()?;
        let kl: Vec<f64> = logps.iter().zip(&reference).map(|(p, r)| (p - r) as f64).collect();
        let total: Vec<f64> = rewards.iter().zip(&kl).map(|(r, kl)| *r as f64 - config.kl_coef * kl).collect();
        let advantages: Vec<f32> = total
            .chunks(k)
            .flat_map(|group| {
                let sum: f64 = group.iter().sum();
                group.iter().map(move |r| (r - (sum - r) / (k - 1) as f64) as f32)
            })
            .collect();
        let n = advantages.len();
        let advantages_t = Tensor::from_vec(advantages.clone(), n, &device)?;
        let mut update = |loss: Tensor| -> anyhow::Result<(f64, f64)> {
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                return Err(TrainerError::NonFinite { what: "loss", value: loss_value, step }.into());
            }
            let store = loss.backward()?;
            let grads = params
                .iter()
                .map(|v| store.get(v).map_or_else(|| v.zeros_like(), |g| Ok(g.detach())))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let grad_norm = global_norm(&grads)?;
            if !grad_norm.is_finite() {
                return Err(TrainerError::NonFinite { what: "gradient norm", value: grad_norm, step }.into());
            }
            optimizer.update(&grads, config.learning_rate, clip_factor(grad_norm, config.max_grad_norm))?;
            Ok((loss_value, grad_norm))
        };
        let (loss_value, grad_norm, clip_fraction) = match config.algorithm {
            Algorithm::Rloo => {
                let (loss, norm) = update((&advantages_t * &policy_logps)?.mean_all()?.neg()?)?;
                (loss, norm, None)
            }
            Algorithm::PpoClip { epochs, clip } => {
                let old = Tensor::from_vec(logps.clone(), n, &device)?;
                let lengths: Vec<f32> = completions.iter().map(|c| c.tokens.len().max(1) as f32).collect();
                let lengths = Tensor::from_vec(lengths, n, &device)?;
                let mut last = (0.0, 0.0, 0.0);
                for epoch in 0..epochs.max(1) {
                    let current = if epoch == 0 {
                        policy_logps.clone()
                    } else {
                        completion_log_probs(policy, &batch, &ForwardCtx::eval(true))?
                    };
                    let ratio = ((current - &old)? / &lengths)?.exp()?;
                    // min(ρA, clip(ρ)A) equals ρA where the unclipped term is the smaller one
                    // and a constant (no gradient) elsewhere: mask those terms out.
                    let ratios: Vec<f32> = ratio.to_vec1()?;
                    let keep: Vec<f32> = ratios
                        .iter()
                        .zip(&advantages)
                        .map(|(&r, &a)| {
                            let clipped = r.clamp((1.0 - clip) as f32, (1.0 + clip) as f32);
                            if r * a <= clipped * a { 1.0 } else { 0.0 }
                        })
                        .collect();
                    let clipped_share = keep.iter().filter(|&&k| k == 0.0).count() as f64 / n as f64;
                    // The loss as logged: the full surrogate, clipped terms included.
                    let surrogate_value = ratios
                        .iter()
                        .zip(&advantages)
                        .map(|(&r, &a)| (r * a).min(r.clamp((1.0 - clip) as f32, (1.0 + clip) as f32) * a) as f64)
                        .sum::<f64>()
                        / n as f64;
                    let keep = Tensor::from_vec(keep, n, &device)?;
                    let surrogate = ((ratio * &advantages_t)? * keep)?;
                    let (_, norm) = update(surrogate.mean_all()?.neg()?)?;
                    last = (-surrogate_value, norm, clipped_share);
                }
                (last.0, last.1, Some(last.2))
            }
        };

        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let lengths: Vec<f64> = completions.iter().map(|c| c.tokens.len() as f64).collect();
        let generated: f64 = lengths.iter().sum();
        let rewards: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
        let mut line = BTreeMap::new();
        line.insert("step".to_string(), (step + 1) as f64);
        line.insert("loss".to_string(), loss_value);
        line.insert("reward".to_string(), mean(&rewards));
        line.insert("kl".to_string(), mean(&kl));
        line.insert("objective".to_string(), mean(&total));
        line.insert("entropy".to_string(), -logps.iter().map(|&l| l as f64).sum::<f64>() / generated.max(1.0));
        line.insert("response_length".to_string(), mean(&lengths));
        line.insert("grad_norm".to_string(), grad_norm);
        line.insert("learning_rate".to_string(), config.learning_rate);
        line.insert("tokens_per_second".to_string(), generated / started.elapsed().as_secs_f64());
        if let Some(share) = clip_fraction {
            line.insert("clip_fraction".to_string(), share);
        }
        writeln!(metrics_file, "{}", serde_json::to_string(&line)?)?;
        progress.set_message(format!("reward {:.3} kl {:.3}", line["reward"], line["kl"]));
        progress.inc(1);
        lines.push(line);
    }
    progress.finish();
    Ok(lines)
}

/// `pairwise-train rlhf`: the run's [`RlhfConfig`] plus the models and prompts it loads, the
/// policy's LoRA adapter and how rollouts are sampled.
#[derive(Args)]
pub struct RlhfCommand {
    /// The policy's base model folder (the frozen reference is this model without adapters).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompts, JSONL: {"prompt": "...", "messages"?: [...]} per line.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Reward model: the output folder of `pairwise-train reward` (its LoRA adapter and
    /// reward_head.safetensors).
    #[arg(long)]
    pub reward_adapter: PathBuf,
    /// Base model of the reward model [default: --model]. It must share the policy's tokenizer.
    #[arg(long)]
    pub reward_model: Option<PathBuf>,
    #[command(flatten)]
    pub config: RlhfConfig,
    /// LoRA rank of the policy adapter.
    #[arg(long, default_value_t = 16)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    /// Modules that get LoRA (any of q,k,v,o,gate,up,down).
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o")]
    pub lora_targets: Vec<String>,
    /// Sampling temperature of the rollouts.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Longest rollout in tokens.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `pairwise-train rlhf`: a fresh LoRA policy on `--model`, optimised against the reward
/// model and saved as a PEFT adapter in the output folder.
pub fn run_rlhf_command(command: &RlhfCommand) -> anyhow::Result<()> {
    let device = default_device()?;
    let (mut policy, tokenizer) = load_model_and_tokenizer(&command.model, &device)?;
    let lora = LoraConfig::new(command.lora_r, command.lora_alpha, 0.0, &command.lora_targets)?;
    let vars = attach_lora(&mut policy, &lora, command.seed)?;
    let reward = load_reward_model(
        &command.reward_adapter,
        command.reward_model.as_ref().unwrap_or(&command.model),
        &tokenizer,
        &device,
    )?;
    let prompts = read_prompts(&command.prompts)?
        .iter()
        .map(|p| encode_prompt(&tokenizer, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = RlhfConfig {
        sampling: Sampling {
            temperature: command.temperature,
            top_p: command.top_p,
            top_k: command.top_k,
            max_new_tokens: command.max_new_tokens,
            stop: vec![],
            seed: command.seed,
        },
        seed: command.seed,
        ..command.config.clone()
    };
    let lines = run_rlhf(&policy, &vars, &tokenizer, &prompts, &reward, &config)?;
    save_peft(&config.output, &policy, &lora, PeftTask::CausalLm, &command.model.display().to_string(), None)?;
    if let Some(last) = lines.last() {
        eprintln!("{}", serde_json::to_string(last)?);
    }
    Ok(())
}

/// A reward model written by `pairwise-train reward` (adapter + `reward_head.safetensors` in
/// `dir`) on top of the base model `base`.
pub fn load_reward_model(
    dir: &Path,
    base: &Path,
    tokenizer: &ChatTokenizer,
    device: &Device,
) -> anyhow::Result<RewardModel> {
    let (mut model, _) = load_model_and_tokenizer(base, device)?;
    load_peft(dir, &mut model)?;
    let head = load_reward_head(&dir.join("reward_head.safetensors"), device)?;
    Ok(RewardModel { model, head, eos_id: tokenizer.eos.1, pad_id: tokenizer.pad_id, batch_size: 8 })
}
