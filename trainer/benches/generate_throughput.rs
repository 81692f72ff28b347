//! Generation throughput on the ~32M-parameter bench model (random init, fixed seed): 8
//! prompts from the bench data, 64 new tokens each (EOS disabled by sampling at length), KV
//! cache, decoded one prompt at a time (batch 1) and all together (batch 8).
//!
//! `cargo bench -p pairwise-trainer --bench generate_throughput`

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use pairwise_trainer::methods::generate::{Batching, PromptRecord, Sampling, encode_prompt, generate_all};
use pairwise_trainer::model::config::ModelConfig;
use pairwise_trainer::model::tokenizer::ChatTokenizer;
use pairwise_trainer::model::{ForwardCtx, LlamaModel};

const PROMPTS: usize = 8;
const NEW_TOKENS: usize = 64;

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, no other thread exists yet. Same runtime as `pairwise-train`.
    unsafe { pairwise_trainer::tensor::device::configure_cpu_runtime() };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/bench");
    let model = LlamaModel::random(ModelConfig::from_dir(&dir)?, 1234, &Device::Cpu)?;
    let tokenizer = ChatTokenizer::from_dir(&dir)?;
    let text = std::fs::read_to_string(dir.join("prefs.jsonl"))?;
    let prompts: Vec<Vec<u32>> = text
        .lines()
        .take(PROMPTS)
        .map(|line| {
            let record: PromptRecord = serde_json::from_str(line)?;
            encode_prompt(&tokenizer, &record)
        })
        .collect::<anyhow::Result<_>>()?;
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let sampling =
        Sampling { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: NEW_TOKENS, stop: vec![], seed: 0 };
    let ctx = ForwardCtx::eval(true);
    // Warm-up (allocator, thread pool).
    generate_all(
        &model,
        &tokenizer,
        &prompts[..1],
        Batching { responses_per_prompt: 1, batch_size: 1 },
        &sampling,
        &ctx,
        |_| {},
    )?;
    for batch in [1, 8] {
        let started = Instant::now();
        let results = generate_all(
            &model,
            &tokenizer,
            &prompts,
            Batching { responses_per_prompt: 1, batch_size: batch },
            &sampling,
            &ctx,
            |_| {},
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let tokens: usize = results.iter().flatten().map(|c| c.tokens.len()).sum();
        println!(
            "{}",
            serde_json::json!({
                "batch": batch,
                "prompts": PROMPTS,
                "prompt_tokens": prompt_tokens,
                "new_tokens": tokens,
                "seconds": (seconds * 100.0).round() / 100.0,
                "new_tokens_per_s": (tokens as f64 / seconds * 10.0).round() / 10.0,
                "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            })
        );
    }
    Ok(())
}
