//! Serving throughput of any OpenAI-compatible server (`pairwise-train serve`, llama.cpp's
//! server, …): for each concurrency C, C clients stream greedy chat completions of fixed
//! prompts at once, max(C, 8) requests in all (so one stream still averages over the eight
//! prompts, one after another); prints generated tokens/s over the whole round and the
//! median / p90 time to first token. Tokens are what the server's
//! `usage` reports (`stream_options.include_usage`), else one per content chunk.
//!
//! `cargo bench -p pairwise-trainer --bench serve_throughput -- URL MODEL [STREAMS,…] [MAX_TOKENS]`
//! e.g. `… -- http://127.0.0.1:8081 smollm2 1,8,32 64` (see scripts/bench-serve.sh).

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

const PROMPTS: [&str; 8] = [
    "Write a short story about a lighthouse keeper.",
    "Give me three tips for learning to play the guitar.",
    "Explain what a hash table is to a beginner.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "What are the benefits of regular exercise?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
];

/// One streamed answer: when its first content arrived and how many tokens it had.
struct Stream {
    first_token: Duration,
    tokens: usize,
}

fn stream_once(url: &str, model: &str, prompt: &str, max_tokens: usize) -> anyhow::Result<Stream> {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let started = Instant::now();
    let response = ureq::post(&format!("{url}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .context("POST /v1/chat/completions")?;
    let mut reader = std::io::BufReader::new(response.into_body().into_reader());
    let (mut first_token, mut chunks, mut usage) = (None, 0, None);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if let Some(data) = line.trim().strip_prefix("data:").map(str::trim) {
            if data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data).with_context(|| format!("chunk {data}"))?;
            let content = chunk["choices"].get(0).and_then(|c| c["delta"]["content"].as_str()).unwrap_or("");
            if !content.is_empty() {
                chunks += 1;
                first_token.get_or_insert_with(|| started.elapsed());
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                usage = Some(n as usize);
            }
        }
        line.clear();
    }
    let Some(first_token) = first_token else { bail!("the server streamed no content for {prompt:?}") };
    Ok(Stream { first_token, tokens: usage.unwrap_or(chunks) })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [url, model, rest @ ..] = args.as_slice() else {
        bail!("usage: serve_throughput URL MODEL [STREAMS,…] [MAX_TOKENS]");
    };
    let streams: Vec<usize> = match rest.first() {
        Some(list) => list.split(',').map(|s| s.parse().context("STREAMS")).collect::<anyhow::Result<_>>()?,
        None => vec![1, 8, 32],
    };
    let max_tokens: usize = rest.get(1).map_or(Ok(64), |s| s.parse()).context("MAX_TOKENS")?;
    // Warm-up: first-touch allocations and caches on the server.
    stream_once(url, model, PROMPTS[0], 8)?;
    for &c in &streams {
        let started = Instant::now();
        let requests = c.max(PROMPTS.len());
        let results: Vec<Stream> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..c)
                .map(|client| {
                    scope.spawn(move || {
                        (client..requests)
                            .step_by(c)
                            .map(|i| stream_once(url, model, PROMPTS[i % PROMPTS.len()], max_tokens))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            let per_client: Vec<Vec<Stream>> =
                handles.into_iter().map(|h| h.join().expect("client thread")).collect::<anyhow::Result<_>>()?;
            anyhow::Ok(per_client.into_iter().flatten().collect())
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let tokens: usize = results.iter().map(|s| s.tokens).sum();
        let mut ttft: Vec<Duration> = results.iter().map(|s| s.first_token).collect();
        ttft.sort();
        println!(
            "streams {c:>2}: {tokens:>5} tokens in {seconds:6.2} s = {:7.1} tokens/s; time to first token median {:6.0} ms, p90 {:6.0} ms",
            tokens as f64 / seconds,
            percentile(&ttft, 0.5).as_secs_f64() * 1e3,
            percentile(&ttft, 0.9).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
