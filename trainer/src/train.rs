//! The training loop shared by the DPO and reward-model trainers: configuration, data split,
//! trainable-parameter setup (LoRA, QLoRA, full), gradient accumulation, clipping, AdamW with
//! a warmup schedule, held-out evaluation, metrics JSONL, checkpoints with exact resume, and
//! NaN/inf detection.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{TokenizedPair, Truncation};
use crate::error::TrainerError;
use crate::lora::{LoraConfig, attach_lora};
use crate::loss::DpoLossType;
use crate::model::{ForwardCtx, LlamaModel};
use crate::optim::{AdamW, Schedule, ScheduleKind, clip_factor, global_norm};

/// How the model is adapted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// LoRA on a frozen f32 base.
    Lora,
    /// LoRA on a frozen base whose linear weights are stored quantized (Q8_0 or Q4_0).
    Qlora,
    /// Every parameter trained (the baseline).
    Full,
    /// Trainable key/value prefixes per layer (`num_virtual_tokens`), base frozen.
    Prefix,
}

/// Quantization of the frozen base for QLoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QuantKind {
    Q8_0,
    Q4_0,
}

/// Every setting of a training run; read from TOML and overridden by command-line flags.
/// Field documentation lives on the flags (`pairwise-train dpo --help`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    pub eval_data: Option<PathBuf>,
    /// Fetch `data` from this Pairwise server instead (with `campaign` and `token`).
    pub server: Option<String>,
    pub campaign: Option<String>,
    pub token: Option<String>,
    pub since: u64,
    pub eval_fraction: f64,
    pub output: PathBuf,
    pub limit: Option<usize>,
    pub adapter: AdapterKind,
    pub quant: QuantKind,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f32,
    pub lora_targets: Vec<String>,
    pub num_virtual_tokens: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub scheduler: ScheduleKind,
    pub warmup_ratio: f64,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub max_length: usize,
    pub max_prompt_length: usize,
    pub eval_steps: usize,
    pub save_steps: usize,
    pub resume: bool,
    pub use_rater_signal: bool,
    pub strength_margin: f64,
    pub beta: f64,
    pub loss_type: DpoLossType,
    pub label_smoothing: f64,
    pub center_rewards_coef: f64,
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: PathBuf::new(),
            data: PathBuf::new(),
            eval_data: None,
            server: None,
            campaign: None,
            token: None,
            since: 0,
            eval_fraction: 0.1,
            output: PathBuf::from("out"),
            limit: None,
            adapter: AdapterKind::Lora,
            quant: QuantKind::Q8_0,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.0,
            lora_targets: vec!["q".into(), "v".into()],
            num_virtual_tokens: 16,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            scheduler: ScheduleKind::Linear,
            warmup_ratio: 0.0,
            epochs: 1,
            max_steps: None,
            batch_size: 4,
            grad_accum: 1,
            max_grad_norm: 1.0,
            seed: 42,
            max_length: 1024,
            max_prompt_length: 512,
            eval_steps: 0,
            save_steps: 0,
            resume: false,
            use_rater_signal: false,
            strength_margin: 1.0,
            beta: 0.1,
            loss_type: DpoLossType::Sigmoid,
            label_smoothing: 0.0,
            center_rewards_coef: 0.0,
            progress: true,
        }
    }
}

impl TrainConfig {
    pub fn truncation(&self) -> Truncation {
        Truncation {
            max_length: self.max_length,
            max_prompt_length: self.max_prompt_length.min(self.max_length.saturating_sub(1)),
        }
    }
}

/// Per-pair metric sums; divided by `count` when reported.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub sums: BTreeMap<&'static str, f64>,
    pub count: usize,
}

impl Metrics {
    pub fn add(&mut self, name: &'static str, values: &[f32]) {
        *self.sums.entry(name).or_default() += values.iter().map(|&v| v as f64).sum::<f64>();
    }

    pub fn merge(&mut self, other: Metrics) {
        for (k, v) in other.sums {
            *self.sums.entry(k).or_default() += v;
        }
        self.count += other.count;
    }

    pub fn means(&self) -> BTreeMap<&'static str, f64> {
        let n = self.count.max(1) as f64;
        self.sums.iter().map(|(k, v)| (*k, v / n)).collect()
    }
}

/// What a training method contributes to the shared loop.
pub trait Objective: Sync {
    /// Mean loss over `pairs` (on the graph) and per-pair metric sums (`count` = pairs).
    fn batch_loss(
        &self,
        model: &LlamaModel,
        pairs: &[&TokenizedPair],
        indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)>;

    /// Extra trainable variables owned by the objective (the reward head).
    fn extra_vars(&self) -> Vec<(String, Var)>;

    /// Writes the trained result into `dir`.
    fn save(&self, model: &LlamaModel, config: &TrainConfig, dir: &Path) -> anyhow::Result<()>;

    /// The metric shown next to the loss in the progress bar.
    fn accuracy_metric(&self) -> &'static str;
}

/// Makes the requested parameters trainable; returns them by name (PEFT or HF names).
pub fn prepare_trainable(model: &mut LlamaModel, config: &TrainConfig) -> anyhow::Result<Vec<(String, Var)>> {
    let lora = || LoraConfig::new(config.lora_r, config.lora_alpha, config.lora_dropout, &config.lora_targets);
    match config.adapter {
        AdapterKind::Lora => attach_lora(model, &lora()?, config.seed),
        AdapterKind::Qlora => {
            let dense = crate::qlora::linear_weight_bytes(model);
            crate::qlora::quantize_base(model, config.quant)?;
            eprintln!(
                "QLoRA: decoder linear weights {:.1} MB → {:.1} MB ({:?})",
                dense as f64 / 1e6,
                crate::qlora::linear_weight_bytes(model) as f64 / 1e6,
                config.quant
            );
            attach_lora(model, &lora()?, config.seed)
        }
        AdapterKind::Full => Ok(model.make_all_trainable()?),
        AdapterKind::Prefix => crate::prefix::attach_prefix(model, config.num_virtual_tokens, config.seed),
    }
}

/// Splits off the held-out set: `eval_fraction` of the pairs, chosen by a seeded shuffle.
pub fn split_eval<T: Clone>(items: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5eed_e7a1));
    let n_eval = ((items.len() as f64) * fraction).round() as usize;
    let n_eval = n_eval.min(items.len().saturating_sub(1));
    let mut eval = Vec::with_capacity(n_eval);
    let mut train = Vec::with_capacity(items.len() - n_eval);
    for (rank, i) in order.into_iter().enumerate() {
        if rank < n_eval {
            eval.push(items[i].clone());
        } else {
            train.push(items[i].clone());
        }
    }
    (train, eval)
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
}

/// Result of a run: the last logged training metrics and evaluation metrics.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub train: BTreeMap<String, f64>,
    pub eval: BTreeMap<String, f64>,
    pub tokens_per_second: f64,
}

/// Evaluates the objective on `pairs` without dropout, `batch_size` pairs at a time.
pub fn evaluate(
    objective: &dyn Objective,
    model: &LlamaModel,
    pairs: &[TokenizedPair],
    offset: usize,
    batch_size: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    // Batches run concurrently (one per thread of rayon's pool) and merge in order.
    let results: Vec<anyhow::Result<(f64, Metrics)>> = pairs
        .par_chunks(batch_size.max(1))
        .enumerate()
        .map(|(c, chunk)| {
            let refs: Vec<&TokenizedPair> = chunk.iter().collect();
            let indices: Vec<usize> = (0..chunk.len()).map(|i| offset + c * batch_size + i).collect();
            let (loss, m) = objective.batch_loss(model, &refs, &indices, &ForwardCtx::eval(true))?;
            Ok((loss.to_scalar::<f32>()? as f64 * chunk.len() as f64, m))
        })
        .collect();
    let mut metrics = Metrics::default();
    let mut loss_sum = 0.0;
    for result in results {
        let (loss, m) = result?;
        loss_sum += loss;
        metrics.merge(m);
    }
    let mut out: BTreeMap<String, f64> = metrics.means().into_iter().map(|(k, v)| (format!("eval_{k}"), v)).collect();
    out.insert("eval_loss".into(), loss_sum / pairs.len().max(1) as f64);
    Ok(out)
}

/// Runs the optimisation. `train` examples are indexed `0..n`; `eval` ones `n..` (the
/// objective uses the index to find cached reference log-probs).
pub fn run(
    objective: &dyn Objective,
    model: &LlamaModel,
    trainable: Vec<(String, Var)>,
    train: &[TokenizedPair],
    eval: &[TokenizedPair],
    config: &TrainConfig,
) -> anyhow::Result<RunSummary> {
    std::fs::create_dir_all(&config.output).with_context(|| format!("creating {}", config.output.display()))?;
    let trainable: Vec<(String, Var)> = trainable.into_iter().chain(objective.extra_vars()).collect();
    let vars: Vec<Var> = trainable.iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = AdamW::new(vars.clone(), config.weight_decay)?;
    let pairs_per_step = config.batch_size.max(1) * config.grad_accum.max(1);
    let steps_per_epoch = train.len().div_ceil(pairs_per_step).max(1);
    let total_steps = config.max_steps.unwrap_or(config.epochs.max(1) * steps_per_epoch);
    let schedule = Schedule {
        kind: config.scheduler,
        base_lr: config.learning_rate,
        warmup_steps: (config.warmup_ratio * total_steps as f64).ceil() as usize,
        total_steps,
    };
    let metrics_path = config.output.join("metrics.jsonl");
    let mut start = 0;
    if config.resume
        && let Some((step, dir)) = latest_checkpoint(&config.output)?
    {
        load_checkpoint(&dir, &trainable, &mut optimizer)?;
        start = step;
        keep_metrics_up_to(&metrics_path, step)?;
        eprintln!("resumed from {} (step {step})", dir.display());
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path)?;
    }
    let mut metrics_file = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;
    let progress = if config.progress {
        indicatif::ProgressBar::new(total_steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
    )?);
    progress.set_position(start as u64);
    let mut summary = RunSummary::default();
    let (mut timed_tokens, mut timed_seconds) = (0usize, 0f64);
    for step in start..total_steps {
        let started = Instant::now();
        let epoch = step / steps_per_epoch;
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(config.seed.wrapping_add(epoch as u64)));
        let first = (step % steps_per_epoch) * pairs_per_step;
        let chosen: Vec<usize> = (first..first + pairs_per_step).map(|i| order[i % order.len()]).collect();
        let StepGradients { loss: loss_total, metrics, grads, tokens } =
            step_gradients(objective, model, &vars, train, &chosen, config, step)?;
        let grad_norm = global_norm(&grads)?;
        if !grad_norm.is_finite() {
            return Err(TrainerError::NonFinite { what: "gradient norm", value: grad_norm, step }.into());
        }
        let lr = schedule.lr(step);
        optimizer.update(&grads, lr, clip_factor(grad_norm, config.max_grad_norm))?;
        let seconds = started.elapsed().as_secs_f64();
        timed_tokens += tokens;
        timed_seconds += seconds;
        let mut line: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        line.insert("step".into(), (step + 1).into());
        line.insert("epoch".into(), ((step + 1) as f64 / steps_per_epoch as f64).into());
        line.insert("loss".into(), loss_total.into());
        for (k, v) in metrics.means() {
            line.insert(k.into(), v.into());
        }
        line.insert("grad_norm".into(), grad_norm.into());
        line.insert("learning_rate".into(), lr.into());
        line.insert("tokens_per_second".into(), (tokens as f64 / seconds).into());
        summary.train = line.iter().filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f))).collect();
        let accuracy = metrics.means().get(objective.accuracy_metric()).copied().unwrap_or(0.0);
        progress.set_message(format!("loss {loss_total:.4} acc {accuracy:.2}"));
        let last = step + 1 == total_steps;
        if !eval.is_empty() && ((config.eval_steps > 0 && (step + 1) % config.eval_steps == 0) || last) {
            let eval_metrics = evaluate(objective, model, eval, train.len(), config.batch_size)?;
            for (k, v) in &eval_metrics {
                line.insert(k.clone(), (*v).into());
            }
            summary.eval = eval_metrics;
        }
        writeln!(metrics_file, "{}", serde_json::to_string(&line)?)?;
        if config.save_steps > 0 && (step + 1) % config.save_steps == 0 && !last {
            save_checkpoint(&config.output, step + 1, &trainable, &optimizer)?;
        }
        progress.inc(1);
    }
    progress.finish();
    summary.tokens_per_second = timed_tokens as f64 / timed_seconds.max(1e-9);
    objective.save(model, config, &config.output)?;
    Ok(summary)
}

/// Sets up the CPU runtime for training; call it at the start of `main`.
///
/// * candle's elementwise thread pool gets one thread unless `CANDLE_NUM_THREADS` is set:
///   training, evaluation and scoring already run one batch shard per core (see
///   [`step_gradients`]), and a second pool of spinning threads would only compete with them.
/// * `RAYON_NUM_THREADS` is pinned to the available cores unless set: candle re-reads it on
///   every matmul and, when unset, counts the cores from `/proc/cpuinfo` each time.
/// * glibc malloc keeps freed memory instead of returning every large block to the kernel:
///   each training step allocates and frees hundreds of activation and gradient buffers, and
///   fresh pages cost a page fault and a kernel memset each.
///
/// # Safety
/// Sets environment variables: no other thread may exist yet (candle reads the variables
/// once, when its pools are first used).
pub unsafe fn configure_cpu_runtime() {
    // SAFETY (both blocks): the caller guarantees no other thread is running.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        unsafe { std::env::set_var("RAYON_NUM_THREADS", cores.to_string()) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// What one optimizer step's forward and backward passes produced.
pub struct StepGradients {
    /// Mean loss over the step's pairs.
    pub loss: f64,
    pub metrics: Metrics,
    /// Gradients of the mean loss, in the order of the variables (zeros where none flowed).
    pub grads: Vec<Tensor>,
    /// Tokens of the chosen and rejected sequences.
    pub tokens: usize,
}

/// Forward and backward over the pairs `chosen` (indices into `train`), `config.batch_size` pairs per
/// micro-batch (gradient accumulation). Each micro-batch is split into one shard per thread of
/// rayon's pool; the shards run concurrently and their gradients are summed in shard order,
/// so results do not depend on scheduling. Every loss here is a mean of per-pair terms, so
/// the shards' losses weighted by their share of the pairs add up to the step's loss.
pub fn step_gradients(
    objective: &dyn Objective,
    model: &LlamaModel,
    vars: &[Var],
    train: &[TokenizedPair],
    chosen: &[usize],
    config: &TrainConfig,
    step: usize,
) -> anyhow::Result<StepGradients> {
    let mut shards: Vec<(u64, &[usize])> = Vec::new();
    for (micro, idx) in chosen.chunks(config.batch_size.max(1)).enumerate() {
        let per_shard = idx.len().div_ceil(rayon::current_num_threads().clamp(1, idx.len()));
        for (shard, part) in idx.chunks(per_shard).enumerate() {
            shards.push(((step as u64) << 20 | (micro as u64) << 8 | shard as u64, part));
        }
    }
    // Per shard: weighted loss, metrics, and a gradient per variable (None where none flowed).
    type ShardOutput = (f64, Metrics, Vec<Option<Tensor>>);
    let results: Vec<anyhow::Result<ShardOutput>> = shards
        .par_iter()
        .map(|&(stream, idx)| {
            let pairs: Vec<&TokenizedPair> = idx.iter().map(|&i| &train[i]).collect();
            let ctx = ForwardCtx::train(config.seed ^ stream);
            let (loss, metrics) = objective.batch_loss(model, &pairs, idx, &ctx)?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainerError::NonFinite { what: "loss", value, step }.into());
            }
            let weight = idx.len() as f64 / chosen.len() as f64;
            let grads = ctx.gradients(&(loss * weight)?, vars)?;
            Ok((value * weight, metrics, grads))
        })
        .collect();
    let mut out = StepGradients { loss: 0.0, metrics: Metrics::default(), grads: Vec::new(), tokens: 0 };
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    for result in results {
        let (loss, metrics, grads) = result?;
        out.loss += loss;
        out.metrics.merge(metrics);
        for (slot, g) in sums.iter_mut().zip(grads) {
            if let Some(g) = g {
                *slot = Some(match slot.take() {
                    Some(acc) => crate::optim::accumulate(acc, &g)?,
                    None => g,
                });
            }
        }
    }
    out.tokens = chosen.iter().map(|&i| train[i].chosen.ids.len() + train[i].rejected.ids.len()).sum();
    out.grads = sums
        .into_iter()
        .zip(vars)
        .map(|(g, v)| g.map_or_else(|| v.zeros_like(), Ok))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(out)
}

fn checkpoint_dir(output: &Path, step: usize) -> PathBuf {
    output.join(format!("checkpoint-{step}"))
}

fn save_checkpoint(output: &Path, step: usize, trainable: &[(String, Var)], optimizer: &AdamW) -> anyhow::Result<()> {
    let dir = checkpoint_dir(output, step);
    std::fs::create_dir_all(&dir)?;
    let tensors: Vec<(String, Tensor)> = trainable.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    crate::weights::save_safetensors(&dir.join("trainable.safetensors"), &tensors)?;
    optimizer.save(&dir.join("optimizer.safetensors"))?;
    // Written last: a checkpoint without trainer_state.json is incomplete and ignored.
    std::fs::write(dir.join("trainer_state.json"), serde_json::to_string(&TrainerState { step })?)?;
    Ok(())
}

fn latest_checkpoint(output: &Path) -> anyhow::Result<Option<(usize, PathBuf)>> {
    let mut best = None;
    let Ok(entries) = std::fs::read_dir(output) else {
        return Ok(None);
    };
    for entry in entries {
        let path = entry?.path();
        let state = path.join("trainer_state.json");
        if !state.exists() {
            continue;
        }
        let state: TrainerState = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
        if best.as_ref().is_none_or(|(s, _)| state.step > *s) {
            best = Some((state.step, path));
        }
    }
    Ok(best)
}

fn load_checkpoint(dir: &Path, trainable: &[(String, Var)], optimizer: &mut AdamW) -> anyhow::Result<()> {
    let mut saved = candle_core::safetensors::load(dir.join("trainable.safetensors"), &Device::Cpu)?;
    for (name, var) in trainable {
        let t = saved.remove(name).with_context(|| format!("checkpoint {} lacks {name}", dir.display()))?;
        var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
    }
    optimizer.load(&dir.join("optimizer.safetensors"))
}

/// Drops metric lines written after `step`, so a resumed run's file equals an uninterrupted one.
fn keep_metrics_up_to(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The device training runs on: the first CUDA GPU with the `cuda` feature, else the CPU.
pub fn default_device() -> anyhow::Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::new_cuda(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// Everything a run needs before the objective is built: tokenizer, model and the
/// tokenized train/held-out split.
pub struct Prepared {
    pub tokenizer: crate::tokenizer::ChatTokenizer,
    pub model: LlamaModel,
    pub train: Vec<TokenizedPair>,
    pub eval: Vec<TokenizedPair>,
}

/// Loads the model, tokenizer and data named in `config`, tokenizes and splits the data.
pub fn prepare(config: &TrainConfig) -> anyhow::Result<Prepared> {
    let device = default_device()?;
    let (model, tokenizer) = crate::weights::load_model_and_tokenizer(&config.model, &device)?;
    let tokenize = |path: &Path, limit: Option<usize>| -> anyhow::Result<Vec<TokenizedPair>> {
        let pairs = crate::data::read_jsonl(path, limit)?;
        let tokenized = pairs
            .iter()
            .map(|p| crate::data::tokenize_pair(&tokenizer, p, config.truncation()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let truncated = tokenized.iter().filter(|p| p.truncated).count();
        if truncated > 0 {
            eprintln!(
                "{truncated} of {} pairs in {} were truncated to max_length {} / max_prompt_length {}",
                tokenized.len(),
                path.display(),
                config.max_length,
                config.max_prompt_length
            );
        }
        Ok(tokenized)
    };
    let data = match &config.server {
        Some(server) => {
            let source = crate::remote::ServerSource {
                server: server.clone(),
                campaign: config.campaign.clone().context("--server needs --campaign")?,
                token: config.token.clone().context("--server needs --token (or PAIRWISE_TOKEN)")?,
                since: config.since,
            };
            let fetched = crate::remote::fetch_export(&source, &config.output)?;
            eprintln!(
                "fetched {} pairs from {server} into {} (cursor {:?})",
                fetched.lines,
                fetched.path.display(),
                fetched.cursor
            );
            fetched.path
        }
        None => config.data.clone(),
    };
    let all = tokenize(&data, config.limit)?;
    let (train, eval) = match &config.eval_data {
        Some(path) => (all, tokenize(path, None)?),
        None => split_eval(all, config.eval_fraction, config.seed),
    };
    Ok(Prepared { tokenizer, model, train, eval })
}

/// Number of scalar parameters in `vars`.
pub fn count_parameters(vars: &[(String, Var)]) -> usize {
    vars.iter().map(|(_, v)| v.elem_count()).sum()
}
