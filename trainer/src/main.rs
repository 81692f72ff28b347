//! `pairwise-train`: the command-line front end (reward, dpo, score, merge). Settings come
//! from an optional TOML file (`--config`), overridden by flags; see `--help` of each command.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pairwise_trainer::data::{Truncation, read_jsonl, tokenize_pair};
use pairwise_trainer::loss::DpoLossType;
use pairwise_trainer::optim::ScheduleKind;
use pairwise_trainer::train::{AdapterKind, QuantKind, TrainConfig, default_device};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "pairwise-train",
    version,
    about = "Train reward models and DPO policies on pairwise preference data (Hugging Face Llama/Qwen2 models, LoRA/QLoRA/full, CPU or CUDA)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a reward model (transformer + scalar head, Bradley–Terry loss).
    Reward(TrainArgs),
    /// Train a policy with Direct Preference Optimisation against the frozen base model.
    Dpo(TrainArgs),
    /// Score preference pairs with a model (and optional adapter / reward head), no training.
    Score(ScoreArgs),
    /// Fold a LoRA adapter into its base model and write a full model folder.
    Merge(MergeArgs),
    /// Sample K responses per prompt from a policy and write them as the server's import
    /// JSONL (or post them straight into a campaign).
    Generate(GenerateArgs),
    /// Optimise a LoRA policy against a trained reward model with RLOO (or PPO-clip) and a KL
    /// penalty to the frozen base model.
    Rlhf(RlhfArgs),
}

/// Training options. Every option can also be set in the TOML file given with `--config`
/// (same names with underscores, e.g. `learning_rate = 1e-4`); flags win over the file.
#[derive(Args, Serialize)]
struct TrainArgs {
    /// TOML file with any of the options below.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json, tokenizer_config.json) or a llama.cpp .gguf file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<PathBuf>,
    /// Preference data (JSONL): TRL {"prompt","chosen","rejected"} strings with optional
    /// pair_id/votes/agreement/strength/tie/margin, conversational message lists, or HH-RLHF transcripts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    /// Fetch the data from a running Pairwise server (base URL) instead of --data: the
    /// campaign's TRL export is saved as OUTPUT/export.jsonl, its cursor as OUTPUT/export-cursor.txt.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    /// Campaign id for --server.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign: Option<String>,
    /// API token for --server (sent as `Authorization: Bearer TOKEN`).
    #[arg(long, env = "PAIRWISE_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// With --server: only votes after this cursor (a previous export's X-Pairwise-Cursor) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    /// Separate held-out data; without it `--eval-fraction` of --data is held out.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_data: Option<PathBuf>,
    /// Share of --data held out for evaluation (seeded split) [default: 0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_fraction: Option<f64>,
    /// Output folder: adapter or model, metrics.jsonl, checkpoints, reference cache [default: out].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<PathBuf>,
    /// Use only the first N pairs of --data.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    /// lora: LoRA on a frozen f32 base; qlora: LoRA on a quantized frozen base; full: train everything;
    /// prefix: trainable key/value prefixes per layer [default: lora].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<AdapterKind>,
    /// Quantization of the frozen base with --adapter qlora [default: q8-0].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    quant: Option<QuantKind>,
    /// LoRA rank r [default: 16].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lora_r: Option<usize>,
    /// LoRA alpha; the update is scaled by alpha/r [default: 32].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lora_alpha: Option<f64>,
    /// Dropout on the LoRA input [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lora_dropout: Option<f32>,
    /// Comma-separated modules to adapt: any of q,k,v,o,gate,up,down [default: q,v].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    lora_targets: Option<Vec<String>>,
    /// Prefix tuning: virtual tokens per layer [default: 16].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    num_virtual_tokens: Option<usize>,
    /// Peak learning rate [default: 5e-5].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    learning_rate: Option<f64>,
    /// AdamW decoupled weight decay [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_decay: Option<f64>,
    /// Learning-rate decay after warmup [default: linear].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<ScheduleKind>,
    /// Share of the steps spent warming the learning rate up from 0 [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_ratio: Option<f64>,
    /// Passes over the training data [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps: Option<usize>,
    /// Pairs per forward pass (the model sees twice as many sequences) [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_accum: Option<usize>,
    /// Clip the global gradient norm to this value; 0 disables [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_grad_norm: Option<f64>,
    /// Seed for initialisation, data order, split and dropout; equal seeds give equal runs [default: 42].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Maximum tokens per sequence (prompt + completion); longer completions are cut at the end [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_length: Option<usize>,
    /// Maximum prompt tokens; longer prompts keep BOS and their last tokens [default: 512].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_prompt_length: Option<usize>,
    /// Evaluate on the held-out set every N steps (and always at the end); 0 = only at the end.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_steps: Option<usize>,
    /// Save a checkpoint every N steps; 0 = none.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    save_steps: Option<usize>,
    /// Continue from the newest checkpoint in --output.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<bool>,
    /// Use the raters' signal: label smoothing 1 − agreement (0.5 for ties) and, for reward
    /// models, a margin from the vote strength.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    use_rater_signal: Option<bool>,
    /// Reward margin for "much better" votes (strength 3); "slightly" (1) gets 0 [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    strength_margin: Option<f64>,
    /// DPO: β, the strength of the KL constraint to the reference [default: 0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    beta: Option<f64>,
    /// DPO loss [default: sigmoid].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_type: Option<DpoLossType>,
    /// DPO: label smoothing ε for sigmoid (cDPO) and robust losses [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    label_smoothing: Option<f64>,
    /// Reward model: coefficient of the reward-centering term mean((r_c + r_r)²) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    center_rewards_coef: Option<f64>,
    /// Show the progress bar [default: true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<bool>,
}

impl TrainArgs {
    /// TOML file first, flags on top, defaults for the rest.
    fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut merged = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let table: toml::Table =
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                serde_json::to_value(table)?
            }
            None => serde_json::json!({}),
        };
        let flags = serde_json::to_value(self)?;
        for (k, v) in flags.as_object().into_iter().flatten() {
            merged[k] = v.clone();
        }
        let config: TrainConfig = serde_json::from_value(merged).context("invalid training options")?;
        if config.model.as_os_str().is_empty() || (config.data.as_os_str().is_empty() && config.server.is_none()) {
            anyhow::bail!("--model and --data (or --server) are required (as flags or in the --config file)");
        }
        Ok(config)
    }
}

#[derive(Args)]
struct ScoreArgs {
    /// Hugging Face model folder or .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter folder; the policy is model + adapter, the reference the model alone.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Safetensors file with `score.weight` [1, hidden]: adds reward_chosen/reward_rejected/bt_loss.
    #[arg(long)]
    reward_head: Option<PathBuf>,
    /// Preference pairs (JSONL, any supported format).
    #[arg(long)]
    data: PathBuf,
    /// Score only the first N pairs.
    #[arg(long)]
    limit: Option<usize>,
    /// β for the DPO and IPO losses.
    #[arg(long, default_value_t = 0.1)]
    beta: f64,
    /// Output JSONL, one line per pair.
    #[arg(long)]
    out: PathBuf,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Maximum tokens per sequence (see the truncation policy in the README).
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// Maximum prompt tokens.
    #[arg(long, default_value_t = 512)]
    max_prompt_length: usize,
}

#[derive(Args)]
struct GenerateArgs {
    /// Hugging Face model folder (a merged model works too) or .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// PEFT adapter folder (LoRA or prefix tuning) applied on top of --model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Prompts, JSONL: {"prompt": "...", "messages"?: [{"role","content"}, ...]} per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Responses sampled per prompt (K ≥ 2 gives K·(K−1)/2 pairs on import).
    #[arg(long, default_value_t = 2)]
    num_responses: usize,
    /// With --adapter: also sample this many responses per prompt from the model with the
    /// adapter off, recorded with checkpoint "base", so raters compare the new policy with the
    /// old one head to head (the leaderboard then ranks the two checkpoints).
    #[arg(long, default_value_t = 0)]
    baseline_responses: usize,
    /// Sampling temperature; 0 is greedy (then all K responses are the same).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Sample only from the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Longest response in tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Stop generating at this string (repeatable); it is not part of the response.
    #[arg(long)]
    stop: Vec<String>,
    /// Seed of the whole run: same model, prompts and settings give the same responses.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Model name recorded with each response [default: the model folder's name].
    #[arg(long)]
    model_name: Option<String>,
    /// Checkpoint recorded with each response [default: the adapter folder's name, or "base"].
    #[arg(long)]
    checkpoint: Option<String>,
    /// Choose pairs by a reward model (the output folder of `pairwise-train reward`): for each
    /// prompt only the `--pairs-per-prompt` pairs with the smallest reward margin are written,
    /// where the raters' votes are most informative. Without it every pair of distinct
    /// responses is imported.
    #[arg(long)]
    reward_adapter: Option<PathBuf>,
    /// Base model of the reward model [default: --model]; it must share the tokenizer.
    #[arg(long)]
    reward_model: Option<PathBuf>,
    /// With --reward-adapter: pairs kept per prompt.
    #[arg(long, default_value_t = 1)]
    pairs_per_prompt: usize,
    /// Output JSONL (the server's import format).
    #[arg(long, required_unless_present = "to")]
    out: Option<PathBuf>,
    /// Post the responses to a campaign instead: http://HOST/api/v1/campaigns/ID.
    #[arg(long)]
    to: Option<String>,
    /// API token (admin) for --to.
    #[arg(long, env = "PAIRWISE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RlhfAlgorithm {
    Rloo,
    Ppo,
}

#[derive(Args)]
struct RlhfArgs {
    /// The policy's base model folder (the frozen reference is this model without adapters).
    #[arg(long)]
    model: PathBuf,
    /// Prompts, JSONL: {"prompt": "...", "messages"?: [...]} per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Reward model: the output folder of `pairwise-train reward` (its LoRA adapter and
    /// reward_head.safetensors).
    #[arg(long)]
    reward_adapter: PathBuf,
    /// Base model of the reward model [default: --model]. It must share the policy's tokenizer.
    #[arg(long)]
    reward_model: Option<PathBuf>,
    /// Output folder: the policy's PEFT LoRA adapter and metrics.jsonl.
    #[arg(long, default_value = "out-rlhf")]
    output: PathBuf,
    /// rloo: one policy-gradient step per batch of rollouts with the leave-one-out baseline;
    /// ppo: `--ppo-epochs` steps of PPO's clipped surrogate on each batch (same advantages, no critic).
    #[arg(long, value_enum, default_value = "rloo")]
    algorithm: RlhfAlgorithm,
    /// PPO: optimizer steps on each batch of rollouts.
    #[arg(long, default_value_t = 4)]
    ppo_epochs: usize,
    /// PPO: clip range ε of the importance ratio.
    #[arg(long, default_value_t = 0.2)]
    clip_range: f64,
    /// Batches of rollouts (with PPO each gives --ppo-epochs optimizer steps).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = 4)]
    prompts_per_step: usize,
    /// Responses sampled per prompt (K ≥ 2; each one's baseline is the mean of the others).
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// β of the KL penalty to the reference.
    #[arg(long, default_value_t = 0.05)]
    kl_coef: f64,
    #[arg(long, default_value_t = 1e-5)]
    learning_rate: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// LoRA rank of the policy adapter.
    #[arg(long, default_value_t = 16)]
    lora_r: usize,
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f64,
    /// Modules that get LoRA (any of q,k,v,o,gate,up,down).
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o")]
    lora_targets: Vec<String>,
    /// Sampling temperature of the rollouts.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Longest rollout in tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct MergeArgs {
    /// Base model folder or .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter folder to fold in.
    #[arg(long)]
    adapter: PathBuf,
    /// Output folder for the merged model.
    #[arg(long)]
    out: PathBuf,
}

fn score(args: &ScoreArgs) -> anyhow::Result<()> {
    let device = default_device()?;
    let (mut model, tokenizer) = pairwise_trainer::weights::load_model_and_tokenizer(&args.model, &device)?;
    if let Some(dir) = &args.adapter {
        pairwise_trainer::lora::load_peft(dir, &mut model)?;
    }
    let head = args.reward_head.as_deref().map(|path| load_reward_head(path, &device)).transpose()?;
    let limits = Truncation {
        max_length: args.max_length,
        max_prompt_length: args.max_prompt_length.min(args.max_length.saturating_sub(1)),
    };
    let pairs = read_jsonl(&args.data, args.limit)?
        .iter()
        .map(|p| tokenize_pair(&tokenizer, p, limits))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let records = pairwise_trainer::score::score_pairs(
        &model,
        &pairs,
        tokenizer.pad_id,
        args.beta,
        head.as_ref(),
        args.batch_size,
    )?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?,
    );
    for r in &records {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    out.flush()?;
    eprintln!("{}", serde_json::to_string(&pairwise_trainer::score::summarize(&records))?);
    Ok(())
}

fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    use pairwise_trainer::generate::{Batching, Sampling, closest_pairs, encode_prompt, generate_all, read_prompts};
    use pairwise_trainer::rlhf::Reward;
    let device = default_device()?;
    let (mut model, tokenizer) = pairwise_trainer::weights::load_model_and_tokenizer(&args.model, &device)?;
    if let Some(dir) = &args.adapter {
        pairwise_trainer::lora::load_peft(dir, &mut model)?;
    }
    let mut prompts = read_prompts(&args.prompts)?;
    prompts.truncate(args.limit.unwrap_or(usize::MAX));
    let encoded = prompts.iter().map(|p| encode_prompt(&tokenizer, p)).collect::<anyhow::Result<Vec<_>>>()?;
    let sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
        seed: args.seed,
    };
    let folder_name = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let model_name = args.model_name.clone().or_else(|| folder_name(&args.model)).unwrap_or_else(|| "model".into());
    let checkpoint = args
        .checkpoint
        .clone()
        .or_else(|| args.adapter.as_ref().and_then(folder_name))
        .unwrap_or_else(|| "base".into());
    anyhow::ensure!(
        args.baseline_responses == 0 || args.adapter.is_some(),
        "--baseline-responses compares an adapter with its base model: give --adapter too"
    );
    let per_prompt = args.num_responses + args.baseline_responses;
    let bar = indicatif::ProgressBar::new((encoded.len() * per_prompt) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} responses {per_sec} eta {eta}")?);
    let started = std::time::Instant::now();
    // `responses` per prompt, with the adapter on or off.
    let sample = |responses_per_prompt, sampling: &Sampling, adapters_on| {
        generate_all(
            &model,
            &tokenizer,
            &encoded,
            Batching { responses_per_prompt, batch_size: args.batch_size },
            sampling,
            &pairwise_trainer::model::ForwardCtx::eval(adapters_on),
            |n| bar.inc(n as u64),
        )
    };
    let mut results = sample(args.num_responses, &sampling, true)?;
    let mut checkpoints = vec![checkpoint.as_str(); args.num_responses];
    if args.baseline_responses > 0 {
        // Its own random stream, so adding baseline responses leaves the adapter's unchanged.
        let baseline_sampling = Sampling { seed: sampling.seed.wrapping_add(1), ..sampling.clone() };
        let baseline = sample(args.baseline_responses, &baseline_sampling, false)?;
        for (mine, theirs) in results.iter_mut().zip(baseline) {
            mine.extend(theirs);
        }
        checkpoints.extend(std::iter::repeat_n("base", args.baseline_responses));
    }
    bar.finish_and_clear();
    let reward = match &args.reward_adapter {
        Some(dir) => {
            Some(load_reward_model(dir, args.reward_model.as_ref().unwrap_or(&args.model), &tokenizer, &device)?)
        }
        None => None,
    };
    let params = serde_json::to_value(&sampling)?;
    let (mut lines, mut skipped, mut tokens) = (String::new(), 0usize, 0usize);
    for ((prompt, prompt_ids), completions) in prompts.iter().zip(&encoded).zip(results) {
        tokens += completions.iter().map(|c| c.tokens.len()).sum::<usize>();
        let mut distinct: Vec<(&pairwise_trainer::generate::Completion, &str)> = Vec::new();
        for (c, &checkpoint) in completions.iter().zip(&checkpoints).filter(|(c, _)| !c.text.is_empty()) {
            if distinct.iter().all(|(d, _)| d.text != c.text) {
                distinct.push((c, checkpoint));
            }
        }
        // The store needs two different responses to make a pair.
        if distinct.len() < 2 {
            skipped += 1;
            continue;
        }
        let rewards = match &reward {
            Some(model) => {
                let texts: Vec<_> = distinct.iter().map(|(c, _)| *c).collect();
                Some(model.rewards(&vec![prompt_ids.as_slice(); distinct.len()], &texts)?)
            }
            None => None,
        };
        let response = |i: usize| -> anyhow::Result<serde_json::Value> {
            let (completion, checkpoint) = distinct[i];
            let mut params = params.clone();
            params["finish"] = serde_json::to_value(completion.finish)?;
            if let Some(rewards) = &rewards {
                params["reward"] = rewards[i].into();
            }
            Ok(
                serde_json::json!({"text": completion.text, "model": model_name, "checkpoint": checkpoint, "params": params}),
            )
        };
        // Without a reward model one line with every response (the store pairs them all);
        // with one, a line per chosen pair, so exactly those pairs are imported.
        let groups: Vec<Vec<usize>> = match &rewards {
            Some(rewards) => {
                closest_pairs(rewards, args.pairs_per_prompt).into_iter().map(|(i, j)| vec![i, j]).collect()
            }
            None => vec![(0..distinct.len()).collect()],
        };
        for group in groups {
            let mut record = serde_json::to_value(prompt)?;
            record["responses"] = group.into_iter().map(response).collect::<anyhow::Result<Vec<_>>>()?.into();
            lines.push_str(&serde_json::to_string(&record)?);
            lines.push('\n');
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "generated {tokens} tokens for {} prompts in {seconds:.1} s ({:.1} tokens/s); {skipped} prompts had fewer than two distinct responses and were left out",
        prompts.len(),
        tokens as f64 / seconds.max(1e-9)
    );
    if let Some(out) = &args.out {
        std::fs::write(out, &lines).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(to) = &args.to {
        let token = args.token.as_deref().context("--to needs --token (or PAIRWISE_TOKEN)")?;
        let report = pairwise_trainer::remote::import_to_campaign(to, token, lines.into_bytes())?;
        eprintln!("imported into {to}: {report}");
    }
    Ok(())
}

/// The `score.weight` `[1, hidden]` of a reward head file.
fn load_reward_head(path: &std::path::Path, device: &candle_core::Device) -> anyhow::Result<candle_core::Tensor> {
    candle_core::safetensors::load(path, device)
        .with_context(|| format!("reading {}", path.display()))?
        .remove("score.weight")
        .with_context(|| format!("{} has no score.weight", path.display()))
}

/// A reward model written by `pairwise-train reward` (adapter + `reward_head.safetensors` in
/// `dir`) on top of the base model `base`.
fn load_reward_model(
    dir: &std::path::Path,
    base: &std::path::Path,
    tokenizer: &pairwise_trainer::tokenizer::ChatTokenizer,
    device: &candle_core::Device,
) -> anyhow::Result<pairwise_trainer::rlhf::RewardModel> {
    let (mut model, _) = pairwise_trainer::weights::load_model_and_tokenizer(base, device)?;
    pairwise_trainer::lora::load_peft(dir, &mut model)?;
    let head = load_reward_head(&dir.join("reward_head.safetensors"), device)?;
    Ok(pairwise_trainer::rlhf::RewardModel {
        model,
        head,
        eos_id: tokenizer.eos.1,
        pad_id: tokenizer.pad_id,
        batch_size: 8,
    })
}

fn rlhf(args: &RlhfArgs) -> anyhow::Result<()> {
    use pairwise_trainer::generate::{Sampling, encode_prompt, read_prompts};
    use pairwise_trainer::lora::{LoraConfig, PeftTask, attach_lora, save_peft};
    use pairwise_trainer::rlhf::{Algorithm, RlhfConfig, run_rlhf};
    let device = default_device()?;
    let (mut policy, tokenizer) = pairwise_trainer::weights::load_model_and_tokenizer(&args.model, &device)?;
    let lora = LoraConfig::new(args.lora_r, args.lora_alpha, 0.0, &args.lora_targets)?;
    let vars = attach_lora(&mut policy, &lora, args.seed)?;
    let reward = load_reward_model(
        &args.reward_adapter,
        args.reward_model.as_ref().unwrap_or(&args.model),
        &tokenizer,
        &device,
    )?;
    let prompts = read_prompts(&args.prompts)?
        .iter()
        .map(|p| encode_prompt(&tokenizer, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = RlhfConfig {
        algorithm: match args.algorithm {
            RlhfAlgorithm::Rloo => Algorithm::Rloo,
            RlhfAlgorithm::Ppo => Algorithm::PpoClip { epochs: args.ppo_epochs, clip: args.clip_range },
        },
        steps: args.steps,
        prompts_per_step: args.prompts_per_step,
        samples: args.samples,
        kl_coef: args.kl_coef,
        learning_rate: args.learning_rate,
        max_grad_norm: args.max_grad_norm,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            max_new_tokens: args.max_new_tokens,
            stop: vec![],
            seed: args.seed,
        },
        seed: args.seed,
        output: args.output.clone(),
        progress: true,
    };
    let lines = run_rlhf(&policy, &vars, &tokenizer, &prompts, &reward, &config)?;
    save_peft(&args.output, &policy, &lora, PeftTask::CausalLm, &args.model.display().to_string(), None)?;
    if let Some(last) = lines.last() {
        eprintln!("{}", serde_json::to_string(last)?);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, no other thread exists yet.
    unsafe { pairwise_trainer::train::configure_cpu_runtime() };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Reward(args) => {
            let config = args.resolve()?;
            let summary = pairwise_trainer::reward::run_reward(&config)?;
            eprintln!(
                "final: {:?}\neval: {:?}\ntokens/s over the run: {:.1}",
                summary.train, summary.eval, summary.tokens_per_second
            );
        }
        Command::Dpo(args) => {
            let config = args.resolve()?;
            let summary = pairwise_trainer::dpo::run_dpo(&config)?;
            eprintln!(
                "final: {:?}\neval: {:?}\ntokens/s over the run: {:.1}",
                summary.train, summary.eval, summary.tokens_per_second
            );
        }
        Command::Score(args) => score(&args)?,
        Command::Generate(args) => generate(&args)?,
        Command::Rlhf(args) => rlhf(&args)?,
        Command::Merge(args) => {
            let device = default_device()?;
            let (mut model, tokenizer) = pairwise_trainer::weights::load_model_and_tokenizer(&args.model, &device)?;
            pairwise_trainer::lora::load_peft(&args.adapter, &mut model)?;
            pairwise_trainer::merge::write_model_folder(&model, Some(&args.model), &args.out)?;
            pairwise_trainer::merge::write_rebuilt_tokenizer(&tokenizer, &args.model, &args.out)?;
            eprintln!("merged model written to {}", args.out.display());
        }
    }
    Ok(())
}
