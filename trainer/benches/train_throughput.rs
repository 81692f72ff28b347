//! Training throughput on the ~32M-parameter bench model (random init, fixed seed) and the
//! same data and settings as the TRL figures in BENCHMARKS.md: 4 pairs per optimizer step,
//! max_length 256, 3 warm-up + 20 timed steps, AdamW, constant learning rate.
//!
//! `cargo bench -p pairwise-trainer --bench train_throughput` runs every mode (on the model
//! `PAIRWISE_BENCH_MODEL` shapes when set, e.g. the Qwen3-shaped `benches/fixtures/bench-qwen3`), each in its own
//! process so peak memory (VmHWM) is per mode; `-- MODE` runs one. Modes: dpo-lora,
//! rm-lora, rm-full, rm-qlora, rm-prefix (16 virtual tokens), dpo-qlora, long (GFLOP/s on 4 × 256-token sequences);
//! a mode with `-bf16` appended (dpo-lora-bf16, rm-lora-bf16) runs in mixed precision;
//! `peak` is the machine's measured f32 peak, the yardstick of `long`: a 1024³ product
//! through the gemm crate (the trainer's matmul) on one core and on all cores, best of 10.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Var};
use pairwise_trainer::data::pairs::{TokenizedPair, Truncation, read_jsonl, tokenize_pair};
use pairwise_trainer::methods::dpo::{DpoObjective, reference_log_probs};
use pairwise_trainer::methods::reward::{RewardObjective, reward_trainable};
use pairwise_trainer::model::LlamaModel;
use pairwise_trainer::model::config::ModelConfig;
use pairwise_trainer::model::llama::random_tensors;
use pairwise_trainer::model::load::Precision;
use pairwise_trainer::model::tokenizer::ChatTokenizer;
use pairwise_trainer::peft::AdapterKind;
use pairwise_trainer::train::config::TrainConfig;
use pairwise_trainer::train::optim::{AdamW, clip_factor, global_norm};
use pairwise_trainer::train::prepare::prepare_trainable;
use pairwise_trainer::train::run::{Objective, step_gradients};

const MODES: [&str; 10] = [
    "dpo-lora",
    "rm-lora",
    "rm-full",
    "rm-qlora",
    "rm-prefix",
    "dpo-qlora",
    "long",
    "peak",
    "dpo-lora-bf16",
    "rm-lora-bf16",
];
const WARMUP: usize = 3;
const TIMED: usize = 20;
const PAIRS_PER_STEP: usize = 4;

/// The tokenizer and preference rows of the bench (`benches/fixtures/bench`).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/bench")
}

/// The folder whose `config.json` shapes the model: the Llama bench model unless
/// `PAIRWISE_BENCH_MODEL` names another (e.g. `benches/fixtures/bench-qwen3`).
fn model_dir() -> PathBuf {
    std::env::var_os("PAIRWISE_BENCH_MODEL").map_or_else(fixture, PathBuf::from)
}

/// Peak resident memory of this process in MB (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run_mode(mode: &str) -> anyhow::Result<serde_json::Value> {
    if mode == "peak" {
        return Ok(gemm_peak());
    }
    let dir = fixture();
    let config = ModelConfig::from_dir(&model_dir())?;
    let (mode, precision) = match mode.strip_suffix("-bf16") {
        Some(mode) => (mode, Precision::Bf16),
        None => (mode, Precision::F32),
    };
    let mut tensors = random_tensors(&config, 1234)?;
    let mut model =
        LlamaModel::from_tensors(config.clone(), &mut tensors, Path::new("<random>"), &Device::Cpu, None, precision)?;
    let tokenizer = ChatTokenizer::from_dir(&dir)?;
    if mode == "long" {
        return long_sequences(&mut model);
    }
    let limits = Truncation { max_length: 256, max_prompt_length: 255 };
    let pairs: Vec<TokenizedPair> = read_jsonl(&dir.join("prefs.jsonl"), Some((WARMUP + TIMED) * PAIRS_PER_STEP))?
        .iter()
        .map(|p| tokenize_pair(&tokenizer, p, limits))
        .collect::<anyhow::Result<_>>()?;
    let (adapter, is_dpo) = match mode {
        "dpo-lora" => (AdapterKind::Lora, true),
        "dpo-qlora" => (AdapterKind::Qlora, true),
        "rm-lora" => (AdapterKind::Lora, false),
        "rm-full" => (AdapterKind::Full, false),
        "rm-qlora" => (AdapterKind::Qlora, false),
        "rm-prefix" => (AdapterKind::Prefix, false),
        other => anyhow::bail!("unknown mode {other}; modes: {MODES:?}"),
    };
    let train_config = TrainConfig {
        adapter,
        lora_r: 16,
        lora_alpha: 32.0,
        lora_targets: vec!["q".into(), "v".into()],
        ..TrainConfig::default()
    };
    let reference = if is_dpo {
        let cache = std::env::temp_dir().join("pairwise-bench-ref-cache");
        reference_log_probs(&model, &pairs, tokenizer.pad_id, 8, &cache)?
    } else {
        Vec::new()
    };
    let trainable = if is_dpo {
        prepare_trainable(&mut model, &train_config)?
    } else {
        reward_trainable(&mut model, &train_config)?
    };
    let objective: Box<dyn Objective<Example = TokenizedPair>> = if is_dpo {
        Box::new(DpoObjective::new(&train_config, reference, tokenizer.pad_id))
    } else {
        Box::new(RewardObjective::new(&model, &train_config, tokenizer.pad_id)?)
    };
    let trainable: Vec<(String, Var)> = trainable.into_iter().chain(objective.extra_vars()).collect();
    let params: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let vars: Vec<Var> = trainable.iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = AdamW::new(vars.clone(), 0.0)?;
    let lr = if is_dpo { 5e-5 } else { 1e-5 };
    let (mut times, mut tokens) = (Vec::new(), 0usize);
    for step in 0..WARMUP + TIMED {
        let started = Instant::now();
        let idx: Vec<usize> = (step * PAIRS_PER_STEP..(step + 1) * PAIRS_PER_STEP).collect();
        let out = step_gradients(objective.as_ref(), &model, &vars, &pairs, &idx, &train_config, step)?;
        optimizer.update(&out.grads, lr, clip_factor(global_norm(&out.grads)?, 1.0))?;
        if step >= WARMUP {
            times.push(started.elapsed().as_secs_f64());
            tokens += out.tokens;
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let total: f64 = times.iter().sum();
    Ok(serde_json::json!({
        "mode": mode,
        "precision": precision,
        "trainable_params": params,
        "median_s_per_step": sorted[sorted.len() / 2],
        "tokens_per_s": tokens as f64 / total,
        "tokens_per_step": tokens as f64 / TIMED as f64,
        "peak_rss_mb": peak_rss_mb(),
        "linear_weight_mb": pairwise_trainer::peft::qlora::linear_weight_bytes(&model) as f64 / 1e6,
    }))
}

/// Reward-model LoRA step on 4 pairs × 256 random tokens: achieved GFLOP/s, counting
/// 2·params·tokens for the forward, the same for the input-gradient backward, and attention.
fn long_sequences(model: &mut LlamaModel) -> anyhow::Result<serde_json::Value> {
    use pairwise_trainer::data::pairs::TokenizedSequence;
    use rand::{Rng, SeedableRng};
    let cfg = model.config.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut seq = || TokenizedSequence {
        ids: (0..256).map(|_| rng.random_range(3..cfg.vocab_size as u32)).collect(),
        prompt_len: 64,
    };
    let pairs: Vec<TokenizedPair> = (0..4)
        .map(|_| TokenizedPair { chosen: seq(), rejected: seq(), signal: Default::default(), truncated: false })
        .collect();
    let config = TrainConfig { lora_targets: vec!["q".into(), "v".into()], ..TrainConfig::default() };
    let trainable = prepare_trainable(model, &config)?;
    let objective = RewardObjective::new(model, &config, 0)?;
    let vars: Vec<Var> = trainable.iter().map(|(_, v)| v.clone()).chain([objective.score.clone()]).collect();
    let mut best = f64::INFINITY;
    for step in 0..4 {
        let started = Instant::now();
        step_gradients(&objective, model, &vars, &pairs, &[0, 1, 2, 3], &config, step)?;
        if step > 0 {
            best = best.min(started.elapsed().as_secs_f64());
        }
    }
    let tokens = 8.0 * 256.0;
    let linear_params = cfg.layer_linear_parameters() as f64;
    let attention =
        4.0 * cfg.num_hidden_layers as f64 * 8.0 * 256.0 * 256.0 * (cfg.num_attention_heads * cfg.head_dim) as f64;
    let flops = 2.0 * (2.0 * linear_params * tokens + attention);
    Ok(serde_json::json!({
        "mode": "long",
        "sequences": "8 x 256 tokens (reward model, LoRA q,v)",
        "best_s_per_step": best,
        "gflop_per_step": flops / 1e9,
        "gflop_per_s": flops / 1e9 / best,
        "tokens_per_s": tokens / best,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// GFLOP/s of a square f32 product `[n, n]·[n, n]` (row-major, as the trainer's operands),
/// the best of 10 after 2 warm-up runs, on one core and on every core rayon has.
fn gemm_peak() -> serde_json::Value {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut c = vec![0f32; n * n];
    let mut best = |parallelism: gemm::Parallelism| {
        let mut best = f64::INFINITY;
        for round in 0..12 {
            let started = Instant::now();
            // SAFETY: all three buffers hold n·n floats, addressed row-major with row stride n.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            };
            if round >= 2 {
                best = best.min(started.elapsed().as_secs_f64());
            }
        }
        2.0 * (n * n * n) as f64 / best / 1e9
    };
    let one = best(gemm::Parallelism::None);
    let threads = rayon::current_num_threads();
    let all = best(gemm::Parallelism::Rayon(threads));
    serde_json::json!({
        "mode": "peak",
        "product": format!("[{n}, {n}]·[{n}, {n}] f32, best of 10"),
        "gflop_per_s_one_core": one,
        "gflop_per_s_all_cores": all,
        "cores": threads,
    })
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, no other thread exists yet.
    unsafe { pairwise_trainer::tensor::device::configure_cpu_runtime() };
    // `cargo bench` passes `--bench`; anything else is a mode name.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if let Some(mode) = args.first() {
        println!("{}", run_mode(mode)?);
        return Ok(());
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load average at start: {}", load.trim());
    let exe = std::env::current_exe()?;
    for mode in MODES {
        let out = std::process::Command::new(&exe).arg(mode).output()?;
        if !out.status.success() {
            anyhow::bail!("{mode} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}
