//! Sampling responses from a policy (base model, base + adapter, or a merged model) for the
//! next round of rating: prompts rendered with the tokenizer's chat template, left-padded into
//! batches, decoded with a KV cache (finished rows leave the batch), temperature / top-k /
//! top-p sampling, EOS and stop sequences, one seed for the whole run. What
//! `pairwise-train generate` makes of the responses is in [`crate::methods::import`].

use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::tokenizer::{ChatTokenizer, Message};
use crate::model::{ForwardCtx, LlamaModel};

/// How tokens are drawn; the sampling flags of `pairwise-train generate`. `temperature` 0 is
/// greedy decoding; nucleus sampling (`top_p`) keeps the smallest set of tokens whose
/// probability reaches `top_p`.
#[derive(Debug, Clone, Default, Serialize, Args)]
pub struct Sampling {
    /// Sampling temperature; 0 is greedy (then all K responses are the same).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Sample only from the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Longest response in tokens.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Stop generating at this string (repeatable); it is not part of the response.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Seed of the whole run: same model, prompts and settings give the same responses.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    Eos,
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// Generated token ids (EOS included when it ended the response).
    pub tokens: Vec<u32>,
    pub finish: Finish,
}

/// One prompt to answer: the last user turn and the turns before it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PromptRecord {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
}

/// Reads prompts from JSONL: `{"prompt": …, "messages"?: […]}` per line (the store's import
/// and TRL export lines qualify; other fields are ignored).
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<PromptRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<PromptRecord>(line).with_context(|| {
                format!("{} line {}: expected {{\"prompt\": string, \"messages\"?: [...]}}", path.display(), i + 1)
            })
        })
        .collect()
}

/// The prompt's token ids: earlier turns plus the prompt as the last user turn, through the
/// chat template with the assistant turn opened.
pub fn encode_prompt(tokenizer: &ChatTokenizer, record: &PromptRecord) -> anyhow::Result<Vec<u32>> {
    let mut messages = record.messages.clone();
    messages.push(Message { role: "user".into(), content: record.prompt.clone() });
    tokenizer.encode_prompt(&tokenizer.render_chat(&messages, true)?)
}

/// Draws one token from `logits` (`[vocab]`).
pub fn sample_token(logits: &[f32], sampling: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || {
        logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best }).0
            as u32
    };
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let mut candidates: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &l)| (i as u32, l as f64 / sampling.temperature)).collect();
    candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    if sampling.top_k > 0 {
        candidates.truncate(sampling.top_k);
    }
    let max = candidates[0].1;
    let mut total = 0.0;
    for c in &mut candidates {
        c.1 = (c.1 - max).exp();
        total += c.1;
    }
    if sampling.top_p < 1.0 {
        let mut kept = 0.0;
        let cut = candidates
            .iter()
            .position(|c| {
                kept += c.1 / total;
                kept >= sampling.top_p
            })
            .map_or(candidates.len(), |i| i + 1);
        candidates.truncate(cut);
        total = candidates.iter().map(|c| c.1).sum();
    }
    let mut draw = rng.random::<f64>() * total;
    for (token, weight) in &candidates {
        draw -= weight;
        if draw <= 0.0 {
            return *token;
        }
    }
    candidates.last().map_or_else(argmax, |c| c.0)
}

/// Where a stop sequence first appears in `text`, if any.
pub fn stop_at(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
}

/// Additive mask `[B, 1, 1, T, S]` for queries at prompt columns `from..from + t` of a
/// left-padded batch: a row sees the prefix, its own prompt (from its first real token) and
/// everything generated, causally. Padding positions see themselves so they stay finite.
pub fn prompt_mask(
    pads: &[usize],
    prefix: usize,
    width: usize,
    from: usize,
    t: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let keys = prefix + width;
    let mut mask = Vec::with_capacity(pads.len() * t * keys);
    for &pad in pads {
        for j in from..from + t {
            for c in 0..keys {
                let visible = c < prefix || {
                    let kc = c - prefix;
                    (kc <= j && kc >= pad) || kc == j
                };
                mask.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(mask, (pads.len(), 1, 1, t, keys), device)
}

/// Generates one completion per prompt, all in one batch.
pub fn generate_batch(
    model: &LlamaModel,
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<u32>],
    sampling: &Sampling,
    rng: &mut StdRng,
    ctx: &ForwardCtx,
) -> anyhow::Result<Vec<Completion>> {
    let device = model.device().clone();
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    anyhow::ensure!(width > 0, "empty prompt");
    let (mut caches, prefix) = model.initial_caches(b, ctx)?;
    anyhow::ensure!(
        prefix + width + sampling.max_new_tokens <= model.config.max_position_embeddings,
        "prompt ({width} tokens) + max_new_tokens ({}) exceed the model's {} positions",
        sampling.max_new_tokens,
        model.config.max_position_embeddings
    );

    // Prefill: every prompt right-aligned, so all rows produce their next token together.
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut ids = Vec::with_capacity(b * width);
    let mut positions = Vec::with_capacity(b * width);
    for (prompt, &pad) in prompts.iter().zip(&pads) {
        ids.extend(std::iter::repeat_n(tokenizer.pad_id, pad).chain(prompt.iter().copied()));
        positions.extend((0..width).map(|j| (prefix + j.saturating_sub(pad)) as u32));
    }
    let mask = prompt_mask(&pads, prefix, width, 0, width, &device)?;
    let mut logits = model.decode_step(
        &Tensor::from_vec(ids, (b, width), &device)?,
        &Tensor::from_vec(positions, (b, width), &device)?,
        &mask,
        &mut caches,
        ctx,
    )?;

    // Rows still generating: (index into `prompts`, pad).
    let mut active: Vec<(usize, usize)> = pads.iter().copied().enumerate().collect();
    let mut outputs: Vec<Option<Completion>> = vec![None; b];
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); b];
    for step in 0..sampling.max_new_tokens {
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut keep = Vec::with_capacity(active.len());
        let mut next = Vec::with_capacity(active.len());
        for (slot, (&(row, pad), row_logits)) in active.iter().zip(&rows).enumerate() {
            let token = sample_token(row_logits, sampling, rng);
            tokens[row].push(token);
            let finish = if token == tokenizer.eos.1 {
                Some(Finish::Eos)
            } else if !sampling.stop.is_empty() && stop_at(&decode(tokenizer, &tokens[row])?, &sampling.stop).is_some()
            {
                Some(Finish::Stop)
            } else if step + 1 == sampling.max_new_tokens {
                Some(Finish::Length)
            } else {
                None
            };
            match finish {
                Some(finish) => {
                    outputs[row] = Some(finish_completion(tokenizer, &tokens[row], finish, &sampling.stop)?)
                }
                None => {
                    keep.push((slot as u32, row, pad));
                    next.push(token);
                }
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            let slots = Tensor::from_vec(keep.iter().map(|k| k.0).collect::<Vec<_>>(), keep.len(), &device)?;
            for cache in caches.iter_mut().flatten() {
                *cache = cache.select_rows(&slots)?;
            }
        }
        active = keep.iter().map(|&(_, row, pad)| (row, pad)).collect();
        // The token just drawn goes in at column width + step; it sees all but the padding.
        let keys = prefix + width + step + 1;
        let mut mask = Vec::with_capacity(active.len() * keys);
        let mut positions = Vec::with_capacity(active.len());
        for &(row, pad) in &active {
            mask.extend((0..keys).map(|c| if c >= prefix && c - prefix < pad { f32::NEG_INFINITY } else { 0.0 }));
            positions.push((prefix + prompts[row].len() + step) as u32);
        }
        let n = active.len();
        logits = model.decode_step(
            &Tensor::from_vec(next, (n, 1), &device)?,
            &Tensor::from_vec(positions, (n, 1), &device)?,
            &Tensor::from_vec(mask, (n, 1, 1, 1, keys), &device)?,
            &mut caches,
            ctx,
        )?;
    }
    outputs
        .into_iter()
        .enumerate()
        .map(|(row, out)| match out {
            Some(out) => Ok(out),
            // max_new_tokens = 0
            None => finish_completion(tokenizer, &tokens[row], Finish::Length, &sampling.stop),
        })
        .collect()
}

fn decode(tokenizer: &ChatTokenizer, tokens: &[u32]) -> anyhow::Result<String> {
    tokenizer.inner.decode(tokens, true).map_err(|e| anyhow::anyhow!("decoding: {e}"))
}

fn finish_completion(
    tokenizer: &ChatTokenizer,
    tokens: &[u32],
    finish: Finish,
    stop: &[String],
) -> anyhow::Result<Completion> {
    let mut text = decode(tokenizer, tokens)?;
    if let Some(at) = stop_at(&text, stop) {
        text.truncate(at);
    }
    Ok(Completion { text: text.trim().to_string(), tokens: tokens.to_vec(), finish })
}

/// The `n` pairs `(i, j)`, `i < j`, whose reward margin `|r_i − r_j|` is smallest, closest
/// first: where the reward model cannot tell two responses apart, a rater's vote teaches the
/// most.
pub fn closest_pairs(rewards: &[f32], n: usize) -> Vec<(usize, usize)> {
    let k = rewards.len();
    let mut pairs: Vec<(usize, usize)> = (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).collect();
    let margin = |&(i, j): &(usize, usize)| (rewards[i] - rewards[j]).abs();
    pairs.sort_by(|a, b| margin(a).total_cmp(&margin(b)));
    pairs.truncate(n);
    pairs
}

/// How many responses per prompt, and how many sequences to decode together.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub responses_per_prompt: usize,
    pub batch_size: usize,
}

/// `responses_per_prompt` completions for each prompt, `batch_size` sequences at a time (the
/// samples of a prompt are consecutive rows). Returns `[prompt][sample]`.
pub fn generate_all(
    model: &LlamaModel,
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<u32>],
    batching: Batching,
    sampling: &Sampling,
    ctx: &ForwardCtx,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<Completion>>> {
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    let k = batching.responses_per_prompt;
    let jobs: Vec<usize> = (0..prompts.len()).flat_map(|p| std::iter::repeat_n(p, k)).collect();
    let mut results: Vec<Vec<Completion>> = vec![Vec::with_capacity(k); prompts.len()];
    for chunk in jobs.chunks(batching.batch_size.max(1)) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&p| prompts[p].clone()).collect();
        for (&p, completion) in chunk.iter().zip(generate_batch(model, tokenizer, &batch, sampling, &mut rng, ctx)?) {
            results[p].push(completion);
        }
        progress(chunk.len());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::closest_pairs;

    #[test]
    fn closest_pairs_prefer_small_margins() {
        let rewards = [0.0, 5.0, 0.4, 5.1];
        assert_eq!(closest_pairs(&rewards, 2), vec![(1, 3), (0, 2)]);
        assert_eq!(closest_pairs(&rewards, 10).len(), 6);
        assert!(closest_pairs(&[1.0], 3).is_empty());
    }
}
