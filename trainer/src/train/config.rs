//! The settings of a training run: [`TrainConfig`] is at once the library's configuration
//! and the command line of `pairwise-train reward|dpo|kto|sft` (every field a
//! flag, its documentation the flag's help), and [`TrainCommand`] adds the optional TOML file
//! whose values the flags override.

use std::convert::Infallible;
use std::path::PathBuf;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use serde::{Deserialize, Serialize};

use crate::data::pairs::Truncation;
use crate::model::load::Precision;
use crate::peft::{AdapterKind, QuantKind};
use crate::train::optim::ScheduleKind;

/// Which DPO loss [`crate::methods::loss::dpo_loss`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DpoLossType {
    /// −log σ(β·Δ), with optional label smoothing (conservative DPO).
    Sigmoid,
    /// (Δ/len − 1/(2β))² on length-normalised log-ratios (TRL's IPO).
    Ipo,
    /// max(0, 1 − β·Δ) (SLiC).
    Hinge,
    /// Unbiased under label noise ε: (−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)) / (1 − 2ε).
    Robust,
    /// Reference-free SimPO: −log σ(β·(π̄_c − π̄_r) − γ) on length-averaged log-probs (TRL's CPO
    /// `loss_type="simpo"`); no reference pass. γ is --simpo-gamma.
    Simpo,
    /// Reference-free ORPO: NLL of chosen − β·log σ(log odds_c − log odds_r) on length-averaged
    /// log-probs (TRL's ORPOTrainer, β = the paper's λ); no reference pass.
    Orpo,
}

impl DpoLossType {
    /// SimPO and ORPO need no reference model (and no reference log-prob pass).
    pub fn is_reference_free(self) -> bool {
        matches!(self, DpoLossType::Simpo | DpoLossType::Orpo)
    }
}

/// Every setting of a training run; read from TOML and overridden by command-line flags.
#[derive(Debug, Clone, Serialize, Deserialize, Args)]
#[command(mut_args = default_after_help)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json, tokenizer_config.json) or a llama.cpp .gguf file.
    #[arg(long, default_value = "", hide_default_value = true, value_parser = maybe_empty_path)]
    pub model: PathBuf,
    /// Training data (JSONL). reward/dpo: TRL {"prompt","chosen","rejected"} strings with optional
    /// pair_id/votes/agreement/strength/tie/margin, conversational message lists, or HH-RLHF transcripts;
    /// with --listwise {"prompt","responses","ranks"}; kto: {"prompt","completion","label"};
    /// sft: {"prompt","completion"} or {"messages"}.
    #[arg(long, default_value = "", hide_default_value = true, value_parser = maybe_empty_path)]
    pub data: PathBuf,
    /// Fetch the data from a running Pairwise server (base URL) instead of --data: the
    /// campaign's TRL export is saved as OUTPUT/export.jsonl, its cursor as OUTPUT/export-cursor.txt.
    #[arg(long)]
    pub server: Option<String>,
    /// Campaign id for --server.
    #[arg(long)]
    pub campaign: Option<String>,
    /// API token for --server (sent as `Authorization: Bearer TOKEN`).
    #[arg(long, env = "PAIRWISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With --server: only votes after this cursor (a previous export's X-Pairwise-Cursor).
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Separate held-out data; without it `--eval-fraction` of --data is held out.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Share of --data held out for evaluation (seeded split).
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    /// Output folder: adapter or model, metrics.jsonl, checkpoints, reference cache.
    #[arg(long, default_value = "out")]
    pub output: PathBuf,
    /// Use only the first N pairs of --data.
    #[arg(long)]
    pub limit: Option<usize>,
    /// lora: LoRA on a frozen f32 base; qlora: LoRA on a quantized frozen base; full: train everything;
    /// prefix: trainable key/value prefixes per layer.
    #[arg(long, value_enum, default_value_t = AdapterKind::Lora)]
    pub adapter: AdapterKind,
    /// Quantization of the frozen base with --adapter qlora.
    #[arg(long, value_enum, default_value_t = QuantKind::Q8_0)]
    pub quant: QuantKind,
    /// Floating-point format of the frozen base and the activations. bf16 is mixed precision
    /// (for GPUs): bf16 base and activations, f32 master copies of the trained parameters,
    /// norms, softmax, log-probs and losses in f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// LoRA rank r.
    #[arg(long, default_value_t = 16)]
    pub lora_r: usize,
    /// LoRA alpha; the update is scaled by alpha/r.
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    /// Dropout on the LoRA input.
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f32,
    /// Comma-separated modules to adapt: any of q,k,v,o,gate,up,down.
    #[arg(long, value_delimiter = ',', default_value = "q,v")]
    pub lora_targets: Vec<String>,
    /// Prefix tuning: virtual tokens per layer.
    #[arg(long, default_value_t = 16)]
    pub num_virtual_tokens: usize,
    /// Peak learning rate.
    #[arg(long, default_value = "5e-5")]
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate decay after warmup.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Linear)]
    pub scheduler: ScheduleKind,
    /// Share of the steps spent warming the learning rate up from 0.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_ratio: f64,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Pairs per forward pass (the model sees twice as many sequences).
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value; 0 disables.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Seed for initialisation, data order, split and dropout; equal seeds give equal runs.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Maximum tokens per sequence (prompt + completion); longer completions are cut at the end.
    #[arg(long, default_value_t = 1024)]
    pub max_length: usize,
    /// Maximum prompt tokens; longer prompts keep BOS and their last tokens.
    #[arg(long, default_value_t = 512)]
    pub max_prompt_length: usize,
    /// Evaluate on the held-out set every N steps (and always at the end); 0 = only at the end.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub eval_steps: usize,
    /// Save a checkpoint every N steps; 0 = none.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub save_steps: usize,
    /// Continue from the newest checkpoint in --output.
    #[arg(long, action = ArgAction::Set, default_value_t = false, hide_default_value = true)]
    pub resume: bool,
    /// reward/dpo: train on rankings of K responses ({"prompt","responses","ranks"}, the server's
    /// `ranking` export) with the Plackett–Luce loss: a listwise reward model, or listwise DPO
    /// (the Plackett–Luce generalisation of the sigmoid loss, on β-scaled log-ratios).
    #[arg(long, action = ArgAction::Set, default_value_t = false, hide_default_value = true)]
    pub listwise: bool,
    /// Use the raters' signal: label smoothing 1 − agreement (0.5 for ties) and, for reward
    /// models, a margin from the vote strength.
    #[arg(long, action = ArgAction::Set, default_value_t = false, hide_default_value = true)]
    pub use_rater_signal: bool,
    /// Reward margin for "much better" votes (strength 3); "slightly" (1) gets 0.
    #[arg(long, default_value_t = 1.0)]
    pub strength_margin: f64,
    /// DPO: β, the strength of the KL constraint to the reference.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// DPO loss.
    #[arg(long, value_enum, default_value_t = DpoLossType::Sigmoid)]
    pub loss_type: DpoLossType,
    /// DPO: label smoothing ε for sigmoid (cDPO), robust and simpo losses.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// SimPO: target reward margin γ (TRL's simpo_gamma).
    #[arg(long, default_value_t = 0.5)]
    pub simpo_gamma: f64,
    /// DPO, IPO, SimPO …: weight of an added NLL term on the chosen completions (mean over their
    /// tokens), LLaMA-Factory's pref_ftx and TRL's cpo_alpha. ORPO has this term built in at weight 1.
    #[arg(long, default_value_t = 0.0)]
    pub sft_weight: f64,
    /// KTO: weight of the desirable completions' loss terms.
    #[arg(long, default_value_t = 1.0)]
    pub desirable_weight: f64,
    /// KTO: weight of the undesirable completions' loss terms (TRL suggests keeping
    /// desirable_weight·#desirable / (undesirable_weight·#undesirable) within 1 to 4/3).
    #[arg(long, default_value_t = 1.0)]
    pub undesirable_weight: f64,
    /// Reward model: coefficient of the reward-centering term mean((r_c + r_r)²).
    #[arg(long, default_value_t = 0.0)]
    pub center_rewards_coef: f64,
    /// Show the progress bar.
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub progress: bool,
}

/// `--model` and `--data` default to empty (they may come from the TOML file, and `--server`
/// replaces `--data`), which clap's own path parser rejects.
fn maybe_empty_path(value: &str) -> Result<PathBuf, Infallible> {
    Ok(PathBuf::from(value))
}

/// Puts a flag's default at the end of its help line (`[default: X]`) in `--help` too, where
/// clap would give it a paragraph of its own (the training commands have long help, for the
/// possible values of `--adapter`, `--scheduler` and `--loss-type`).
fn default_after_help(arg: Arg) -> Arg {
    let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if defaults.is_empty() || arg.is_hide_default_value_set() {
        return arg;
    }
    let help =
        format!("{} [default: {}]", arg.get_help().map(ToString::to_string).unwrap_or_default(), defaults.join(" "));
    arg.help(help).hide_default_value(true)
}

impl Default for TrainConfig {
    /// The flags' defaults (without reading the environment).
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
        Self::from_arg_matches(&command.get_matches_from(["defaults"])).expect("every training option has a default")
    }
}

impl TrainConfig {
    pub fn truncation(&self) -> Truncation {
        Truncation::new(self.max_length, self.max_prompt_length)
    }
}

/// Training options. Every option can also be set in the TOML file given with `--config`
/// (same names with underscores, e.g. `learning_rate = 1e-4`); flags win over the file.
#[derive(Args)]
pub struct TrainCommand {
    /// TOML file with any of the options below.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainConfig,
}

impl TrainCommand {
    /// TOML file first, flags on top (those given on the command line or in the environment),
    /// defaults for the rest. `matches` are this subcommand's.
    pub fn resolve(&self, matches: &ArgMatches) -> anyhow::Result<TrainConfig> {
        let mut merged = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let table: toml::Table =
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                serde_json::to_value(table)?
            }
            None => serde_json::json!({}),
        };
        let flags = serde_json::to_value(&self.train)?;
        for (k, v) in flags.as_object().into_iter().flatten() {
            if matches!(matches.value_source(k), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                merged[k] = v.clone();
            }
        }
        let config: TrainConfig = serde_json::from_value(merged).context("invalid training options")?;
        if config.model.as_os_str().is_empty() || (config.data.as_os_str().is_empty() && config.server.is_none()) {
            anyhow::bail!("--model and --data (or --server) are required (as flags or in the --config file)");
        }
        Ok(config)
    }
}
