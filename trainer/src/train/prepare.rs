//! Setting up a training run: model, tokenizer and data (pairs, single completions or
//! rankings) loaded
//! and tokenized (from files or a Pairwise server), the held-out split, and the trainable parameters of the chosen adapter
//! kind.

use std::path::Path;

use anyhow::Context;
use candle_core::Var;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::data::completions::{TokenizedCompletion, Use, read_completions, tokenize_completion};
use crate::data::pairs::{TokenizedPair, Truncation};
use crate::data::rankings::{TokenizedRanking, read_rankings, tokenize_ranking};
use crate::model::LlamaModel;
use crate::model::load::Precision;
use crate::model::tokenizer::ChatTokenizer;
use crate::peft::AdapterKind;
use crate::peft::lora::{LoraConfig, attach_lora};
use crate::train::config::TrainConfig;

/// Makes the requested parameters trainable; returns them by name (PEFT or HF names).
pub fn prepare_trainable(model: &mut LlamaModel, config: &TrainConfig) -> anyhow::Result<Vec<(String, Var)>> {
    let lora = || LoraConfig::new(config.lora_r, config.lora_alpha, config.lora_dropout, &config.lora_targets);
    match config.adapter {
        AdapterKind::Lora => attach_lora(model, &lora()?, config.seed),
        AdapterKind::Qlora => {
            crate::peft::qlora::quantize_base(model, config.quant)?;
            eprintln!(
                "QLoRA: decoder linear weights {:.1} MB ({:?})",
                crate::peft::qlora::linear_weight_bytes(model) as f64 / 1e6,
                config.quant
            );
            attach_lora(model, &lora()?, config.seed)
        }
        AdapterKind::Full => Ok(model.make_all_trainable()?),
        AdapterKind::Prefix => crate::peft::prefix::attach_prefix(model, config.num_virtual_tokens, config.seed),
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

/// Everything a run needs before the objective is built: tokenizer, model and the
/// tokenized train/held-out split of examples `E` (pairs, completions).
pub struct Prepared<E> {
    pub tokenizer: crate::model::tokenizer::ChatTokenizer,
    pub model: LlamaModel,
    pub train: Vec<E>,
    pub eval: Vec<E>,
}

/// What a kind of training example needs from [`prepare_with`]: how to read and tokenize a
/// file of them, and which server export holds them.
pub trait ExampleSource {
    type Example: Clone;
    /// The `format` of the campaign export that `--server` fetches.
    fn export_format(&self) -> &'static str;
    /// Reads and tokenizes `path`; returns the examples and how many were truncated.
    fn load(
        &self,
        tokenizer: &ChatTokenizer,
        path: &Path,
        limit: Option<usize>,
        truncation: Truncation,
    ) -> anyhow::Result<(Vec<Self::Example>, usize)>;
}

/// Preference pairs (reward models, DPO and its variants).
pub struct Pairs;

impl ExampleSource for Pairs {
    type Example = TokenizedPair;

    fn export_format(&self) -> &'static str {
        "trl"
    }

    fn load(
        &self,
        tokenizer: &ChatTokenizer,
        path: &Path,
        limit: Option<usize>,
        truncation: Truncation,
    ) -> anyhow::Result<(Vec<TokenizedPair>, usize)> {
        let pairs = crate::data::pairs::read_jsonl(path, limit)?;
        let tokenized = pairs
            .iter()
            .map(|p| crate::data::pairs::tokenize_pair(tokenizer, p, truncation))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let truncated = tokenized.iter().filter(|p| p.truncated).count();
        Ok((tokenized, truncated))
    }
}

/// Single completions, labelled (KTO) or to imitate (SFT).
pub struct Completions(pub Use);

impl ExampleSource for Completions {
    type Example = TokenizedCompletion;

    fn export_format(&self) -> &'static str {
        match self.0 {
            Use::Kto => "kto",
            Use::Sft => "sft",
        }
    }

    fn load(
        &self,
        tokenizer: &ChatTokenizer,
        path: &Path,
        limit: Option<usize>,
        truncation: Truncation,
    ) -> anyhow::Result<(Vec<TokenizedCompletion>, usize)> {
        let items = read_completions(path, limit, self.0)?;
        let tokenized =
            items.iter().map(|c| tokenize_completion(tokenizer, c, truncation)).collect::<anyhow::Result<Vec<_>>>()?;
        let truncated = tokenized.iter().filter(|c| c.truncated).count();
        Ok((tokenized, truncated))
    }
}

/// Rankings of several responses (listwise reward models and DPO).
pub struct Rankings;

impl ExampleSource for Rankings {
    type Example = TokenizedRanking;

    fn export_format(&self) -> &'static str {
        "ranking"
    }

    fn load(
        &self,
        tokenizer: &ChatTokenizer,
        path: &Path,
        limit: Option<usize>,
        truncation: Truncation,
    ) -> anyhow::Result<(Vec<TokenizedRanking>, usize)> {
        let items = read_rankings(path, limit)?;
        let tokenized =
            items.iter().map(|r| tokenize_ranking(tokenizer, r, truncation)).collect::<anyhow::Result<Vec<_>>>()?;
        let truncated = tokenized.iter().filter(|r| r.truncated).count();
        Ok((tokenized, truncated))
    }
}

/// Loads the model, tokenizer and preference pairs named in `config`, tokenizes and splits them.
pub fn prepare(config: &TrainConfig) -> anyhow::Result<Prepared<TokenizedPair>> {
    prepare_with(config, &Pairs)
}

/// Loads the model, tokenizer and completions (KTO or SFT) named in `config`.
pub fn prepare_completions(config: &TrainConfig, usage: Use) -> anyhow::Result<Prepared<TokenizedCompletion>> {
    prepare_with(config, &Completions(usage))
}

/// Loads the model and tokenizer, reads `--data` (or fetches the campaign's export in the
/// source's format with `--server`), tokenizes it with `source` and splits off the held-out set.
pub fn prepare_with<S: ExampleSource>(config: &TrainConfig, source: &S) -> anyhow::Result<Prepared<S::Example>> {
    let device = crate::tensor::device::default_device()?;
    // QLoRA quantizes the base as it is read, so its f32 copy never exists whole.
    let quant = (config.adapter == AdapterKind::Qlora).then(|| crate::peft::qlora::ggml_dtype(config.quant));
    let (model, tokenizer) =
        crate::model::load::load_model_and_tokenizer_as(&config.model, &device, quant, config.precision)?;
    if config.precision == Precision::Bf16 {
        eprintln!("mixed precision: bf16 base and activations, f32 trained parameters");
        if device.is_cpu() {
            // Measured in BENCHMARKS.md: candle's CPU matmul widens bf16 operands on every call.
            eprintln!(
                "warning: bf16 on the CPU trains about 10x slower than f32 and needs more memory while \
                 training; it is meant for a GPU (--precision f32 is the CPU's fast path)"
            );
        }
    }
    let tokenize = |path: &Path, limit: Option<usize>| -> anyhow::Result<Vec<S::Example>> {
        let (examples, truncated) = source.load(&tokenizer, path, limit, config.truncation())?;
        if truncated > 0 {
            eprintln!(
                "{truncated} of {} examples in {} were truncated to max_length {} / max_prompt_length {}",
                examples.len(),
                path.display(),
                config.max_length,
                config.max_prompt_length
            );
        }
        Ok(examples)
    };
    let data = match &config.server {
        Some(server) => {
            let remote = crate::data::remote::ServerSource {
                server: server.clone(),
                campaign: config.campaign.clone().context("--server needs --campaign")?,
                token: config.token.clone().context("--server needs --token (or PAIRWISE_TOKEN)")?,
                since: config.since,
                format: source.export_format(),
            };
            let fetched = crate::data::remote::fetch_export(&remote, &config.output)?;
            eprintln!(
                "fetched {} rows from {server} into {} (cursor {:?})",
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
