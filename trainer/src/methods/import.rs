//! `pairwise-train generate`: K responses sampled per prompt (optionally also from the base
//! model with the adapter off) and turned into the server's import JSONL, written to a file or
//! posted straight into a campaign. With a reward model only the pairs with the smallest
//! reward margin are kept, where the raters' votes are most informative.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::data::remote::import_to_campaign;
use crate::methods::generate::{
    Batching, Completion, Sampling, closest_pairs, encode_prompt, generate_all, read_prompts,
};
use crate::methods::rlhf::{Reward, load_reward_model};
use crate::model::ForwardCtx;
use crate::model::load::load_model_and_tokenizer;
use crate::peft::load::load_peft;
use crate::tensor::device::default_device;

/// The options of `pairwise-train generate`.
#[derive(Args)]
pub struct GenerateConfig {
    /// Hugging Face model folder (a merged model works too) or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT adapter folder (LoRA or prefix tuning) applied on top of --model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Prompts, JSONL: {"prompt": "...", "messages"?: [{"role","content"}, ...]} per line.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Responses sampled per prompt (K ≥ 2 gives K·(K−1)/2 pairs on import).
    #[arg(long, default_value_t = 2)]
    pub num_responses: usize,
    /// With --adapter: also sample this many responses per prompt from the model with the
    /// adapter off, recorded with checkpoint "base", so raters compare the new policy with the
    /// old one head to head (the leaderboard then ranks the two checkpoints).
    #[arg(long, default_value_t = 0)]
    pub baseline_responses: usize,
    /// Sets the chat template's `enable_thinking` (Qwen3 and other reasoning models think
    /// before answering unless it is false) [default: left undefined, as transformers does].
    #[arg(long)]
    pub enable_thinking: Option<bool>,
    #[command(flatten)]
    pub sampling: Sampling,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Model name recorded with each response [default: the model folder's name].
    #[arg(long)]
    pub model_name: Option<String>,
    /// Checkpoint recorded with each response [default: the adapter folder's name, or "base"].
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// Choose pairs by a reward model (the output folder of `pairwise-train reward`): for each
    /// prompt only the `--pairs-per-prompt` pairs with the smallest reward margin are written,
    /// where the raters' votes are most informative. Without it every pair of distinct
    /// responses is imported.
    #[arg(long)]
    pub reward_adapter: Option<PathBuf>,
    /// Base model of the reward model [default: --model]; it must share the tokenizer.
    #[arg(long)]
    pub reward_model: Option<PathBuf>,
    /// With --reward-adapter: pairs kept per prompt.
    #[arg(long, default_value_t = 1)]
    pub pairs_per_prompt: usize,
    /// Output JSONL (the server's import format).
    #[arg(long, required_unless_present = "to")]
    pub out: Option<PathBuf>,
    /// Post the responses to a campaign instead: http://HOST/api/v1/campaigns/ID.
    #[arg(long)]
    pub to: Option<String>,
    /// API token (admin) for --to.
    #[arg(long, env = "PAIRWISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs `pairwise-train generate`.
pub fn run_generate(config: &GenerateConfig) -> anyhow::Result<()> {
    let device = default_device()?;
    let (mut model, mut tokenizer) = load_model_and_tokenizer(&config.model, &device)?;
    if let Some(dir) = &config.adapter {
        load_peft(dir, &mut model)?;
    }
    if let Some(on) = config.enable_thinking {
        tokenizer.set_template_variable("enable_thinking", on.into());
    }
    let mut prompts = read_prompts(&config.prompts)?;
    prompts.truncate(config.limit.unwrap_or(usize::MAX));
    let encoded = prompts.iter().map(|p| encode_prompt(&tokenizer, p)).collect::<anyhow::Result<Vec<_>>>()?;
    let sampling = &config.sampling;
    let folder_name = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let model_name = config.model_name.clone().or_else(|| folder_name(&config.model)).unwrap_or_else(|| "model".into());
    let checkpoint = config
        .checkpoint
        .clone()
        .or_else(|| config.adapter.as_ref().and_then(folder_name))
        .unwrap_or_else(|| "base".into());
    anyhow::ensure!(
        config.baseline_responses == 0 || config.adapter.is_some(),
        "--baseline-responses compares an adapter with its base model: give --adapter too"
    );
    let per_prompt = config.num_responses + config.baseline_responses;
    let bar = indicatif::ProgressBar::new((encoded.len() * per_prompt) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} responses {per_sec} eta {eta}")?);
    let started = std::time::Instant::now();
    // `responses` per prompt, with the adapter on or off.
    let sample = |responses_per_prompt, sampling: &Sampling, adapters_on| {
        generate_all(
            &model,
            &tokenizer,
            &encoded,
            Batching { responses_per_prompt, batch_size: config.batch_size },
            sampling,
            &ForwardCtx::eval(adapters_on),
            |n| bar.inc(n as u64),
        )
    };
    let mut results = sample(config.num_responses, sampling, true)?;
    let mut checkpoints = vec![checkpoint.as_str(); config.num_responses];
    if config.baseline_responses > 0 {
        // Its own random stream, so adding baseline responses leaves the adapter's unchanged.
        let baseline_sampling = Sampling { seed: sampling.seed.wrapping_add(1), ..sampling.clone() };
        let baseline = sample(config.baseline_responses, &baseline_sampling, false)?;
        for (mine, theirs) in results.iter_mut().zip(baseline) {
            mine.extend(theirs);
        }
        checkpoints.extend(std::iter::repeat_n("base", config.baseline_responses));
    }
    bar.finish_and_clear();
    let reward = match &config.reward_adapter {
        Some(dir) => {
            Some(load_reward_model(dir, config.reward_model.as_ref().unwrap_or(&config.model), &tokenizer, &device)?)
        }
        None => None,
    };
    let params = serde_json::to_value(sampling)?;
    let (mut lines, mut skipped, mut tokens) = (String::new(), 0usize, 0usize);
    for ((prompt, prompt_ids), completions) in prompts.iter().zip(&encoded).zip(results) {
        tokens += completions.iter().map(|c| c.tokens.len()).sum::<usize>();
        let mut distinct: Vec<(&Completion, &str)> = Vec::new();
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
                closest_pairs(rewards, config.pairs_per_prompt).into_iter().map(|(i, j)| vec![i, j]).collect()
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
    if let Some(out) = &config.out {
        std::fs::write(out, &lines).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(to) = &config.to {
        let token = config.token.as_deref().context("--to needs --token (or PAIRWISE_TOKEN)")?;
        let report = import_to_campaign(to, token, lines.into_bytes())?;
        eprintln!("imported into {to}: {report}");
    }
    Ok(())
}
