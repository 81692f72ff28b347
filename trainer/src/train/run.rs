//! The training loop shared by every training method (reward models, DPO and its
//! reference-free variants, KTO, SFT, listwise): gradient accumulation over
//! batch shards run concurrently, clipping, AdamW with a warmup schedule, held-out evaluation,
//! metrics JSONL, checkpoints with exact resume, and NaN/inf detection.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::error::TrainerError;
use crate::model::{ForwardCtx, LlamaModel};
use crate::tensor::buffer::accumulate;
use crate::train::checkpoint::{keep_metrics_up_to, latest_checkpoint, load_checkpoint, save_checkpoint};
use crate::train::config::TrainConfig;
use crate::train::optim::{AdamW, Schedule, clip_factor, global_norm};

/// Per-example metric sums and how many values each sum holds; a metric's mean is its sum
/// over its own count (KTO reports desirable and undesirable rewards over their own examples).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub sums: BTreeMap<&'static str, (f64, usize)>,
}

impl Metrics {
    pub fn add(&mut self, name: &'static str, values: &[f32]) {
        let entry = self.sums.entry(name).or_default();
        entry.0 += values.iter().map(|&v| v as f64).sum::<f64>();
        entry.1 += values.len();
    }

    pub fn merge(&mut self, other: Metrics) {
        for (k, (sum, count)) in other.sums {
            let entry = self.sums.entry(k).or_default();
            entry.0 += sum;
            entry.1 += count;
        }
    }

    /// The means of the metrics that have any values.
    pub fn means(&self) -> BTreeMap<&'static str, f64> {
        self.sums.iter().filter(|(_, (_, n))| *n > 0).map(|(k, (sum, n))| (*k, sum / *n as f64)).collect()
    }
}

/// What a training method contributes to the shared loop.
pub trait Objective: Sync {
    /// One training example: a pair, a rated completion, a ranking.
    type Example: Sync;

    /// Loss over `examples` (on the graph): the mean of their terms, each weighted by
    /// [`Objective::weight`]; and per-example metric sums (`count` = examples).
    fn batch_loss(
        &self,
        model: &LlamaModel,
        examples: &[&Self::Example],
        indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)>;

    /// What an example weighs in the step's mean loss: 1 when the loss is a mean over
    /// examples, its completion tokens when it is a mean over tokens (SFT). Shards of a step
    /// are combined in proportion to their weight, so the step's loss is exact either way.
    fn weight(&self, _example: &Self::Example) -> f64 {
        1.0
    }

    /// Tokens the model reads for an example (what tokens/s counts).
    fn tokens(&self, example: &Self::Example) -> usize;

    /// Extra trainable variables owned by the objective (the reward head); none by default.
    fn extra_vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// Writes the trained result into `dir`; by default the policy (a causal-LM adapter or a
    /// full model folder).
    fn save(&self, model: &LlamaModel, config: &TrainConfig, dir: &Path) -> anyhow::Result<()> {
        crate::methods::dpo::save_policy(model, config, dir, crate::peft::PeftTask::CausalLm, None)
    }

    /// The metric shown next to the loss in the progress bar.
    fn accuracy_metric(&self) -> &'static str;
}

/// Result of a run: the last logged training metrics and evaluation metrics.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub train: BTreeMap<String, f64>,
    pub eval: BTreeMap<String, f64>,
    pub tokens_per_second: f64,
}

/// Evaluates the objective on `examples` without dropout, `batch_size` at a time.
pub fn evaluate<O: Objective + ?Sized>(
    objective: &O,
    model: &LlamaModel,
    examples: &[O::Example],
    offset: usize,
    batch_size: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    // Batches run concurrently (one per thread of rayon's pool) and merge in order.
    let results: Vec<anyhow::Result<(f64, Metrics)>> = examples
        .par_chunks(batch_size.max(1))
        .enumerate()
        .map(|(c, chunk)| {
            let refs: Vec<&O::Example> = chunk.iter().collect();
            let indices: Vec<usize> = (0..chunk.len()).map(|i| offset + c * batch_size + i).collect();
            let (loss, m) = objective.batch_loss(model, &refs, &indices, &ForwardCtx::eval(true))?;
            let weight: f64 = chunk.iter().map(|e| objective.weight(e)).sum();
            Ok((loss.to_scalar::<f32>()? as f64 * weight, m))
        })
        .collect();
    let total_weight: f64 = examples.iter().map(|e| objective.weight(e)).sum();
    let mut metrics = Metrics::default();
    let mut loss_sum = 0.0;
    for result in results {
        let (loss, m) = result?;
        loss_sum += loss;
        metrics.merge(m);
    }
    let mut out: BTreeMap<String, f64> = metrics.means().into_iter().map(|(k, v)| (format!("eval_{k}"), v)).collect();
    out.insert("eval_loss".into(), loss_sum / total_weight.max(f64::MIN_POSITIVE));
    Ok(out)
}

/// Runs the optimisation. `train` examples are indexed `0..n`; `eval` ones `n..` (the
/// objective uses the index to find cached reference log-probs).
pub fn run<O: Objective + ?Sized>(
    objective: &O,
    model: &LlamaModel,
    trainable: Vec<(String, Var)>,
    train: &[O::Example],
    eval: &[O::Example],
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

/// What one optimizer step's forward and backward passes produced.
pub struct StepGradients {
    /// The step's loss (weighted mean over its examples).
    pub loss: f64,
    pub metrics: Metrics,
    /// Gradients of the mean loss, in the order of the variables (zeros where none flowed).
    pub grads: Vec<Tensor>,
    /// Tokens the model read.
    pub tokens: usize,
}

/// Forward and backward over the examples `chosen` (indices into `train`), `config.batch_size`
/// per micro-batch (gradient accumulation). Each micro-batch is split into one shard per
/// thread of rayon's pool; the shards run concurrently and their gradients are summed in
/// shard order, so results do not depend on scheduling. Every loss here is a weighted mean
/// of per-example terms, so the shards' losses weighted by their share of the step's weight
/// add up to the step's loss.
pub fn step_gradients<O: Objective + ?Sized>(
    objective: &O,
    model: &LlamaModel,
    vars: &[Var],
    train: &[O::Example],
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
    let step_weight: f64 = chosen.iter().map(|&i| objective.weight(&train[i])).sum();
    let results: Vec<anyhow::Result<ShardOutput>> = shards
        .par_iter()
        .map(|&(stream, idx)| {
            let examples: Vec<&O::Example> = idx.iter().map(|&i| &train[i]).collect();
            let ctx = ForwardCtx::train(config.seed ^ stream);
            let (loss, metrics) = objective.batch_loss(model, &examples, idx, &ctx)?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainerError::NonFinite { what: "loss", value, step }.into());
            }
            let shard_weight: f64 = examples.iter().map(|e| objective.weight(e)).sum();
            let weight = shard_weight / step_weight.max(f64::MIN_POSITIVE);
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
                    Some(acc) => accumulate(acc, &g)?,
                    None => g,
                });
            }
        }
    }
    out.tokens = chosen.iter().map(|&i| objective.tokens(&train[i])).sum();
    out.grads = sums
        .into_iter()
        .zip(vars)
        .map(|(g, v)| g.map_or_else(|| v.zeros_like(), Ok))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(out)
}
