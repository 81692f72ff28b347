//! `pairwise-train`: the command-line front end (reward, dpo, kto, sft, score, merge, generate, rlhf,
//! serve).
//! Each subcommand's options are its method's configuration (see `--help` of each command);
//! this file only parses them and dispatches.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use pairwise_trainer::methods::export::{ExportConfig, run_export};
use pairwise_trainer::methods::import::{GenerateConfig, run_generate};
use pairwise_trainer::methods::merge::{MergeConfig, run_merge};
use pairwise_trainer::methods::rlhf::{RlhfCommand, run_rlhf_command};
use pairwise_trainer::methods::score::{ScoreConfig, run_score};
use pairwise_trainer::methods::{dpo::run_dpo, kto::run_kto, reward::run_reward, sft::run_sft};
use pairwise_trainer::serve::{ServeConfig, run_serve};
use pairwise_trainer::train::config::TrainCommand;
use pairwise_trainer::train::run::RunSummary;

#[derive(Parser)]
#[command(
    name = "pairwise-train",
    version,
    about = "Train reward models and DPO/SimPO/ORPO/KTO/SFT policies on human feedback (Llama 3.x, Qwen2/3, Gemma 2/3, Mistral; LoRA/QLoRA/full, CPU or CUDA).",
    long_about = None,
    after_help = "Model families (config.json model_type): llama (Llama 1-3.x incl. rope_type llama3/linear, SmolLM), \
mistral (sliding_window), qwen2, qwen3, gemma2, gemma3_text and the text model of gemma3 checkpoints; \
transformers 4.x and 5.x config keys; f32/bf16/f16 safetensors, sharded or not; llama.cpp GGUF (read and \
written) for its llama (rope_freqs too), qwen2, qwen3, gemma2 and gemma3 architectures with byte-level BPE or \
SentencePiece vocabularies. Refused with an error naming the key: other model types, RoPE types other \
than default/linear/llama3 (yarn, dynamic, longrope), activations other than silu/gelu_pytorch_tanh."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a reward model (transformer + scalar head, Bradley–Terry loss).
    Reward(TrainCommand),
    /// Train a policy on preference pairs: Direct Preference Optimisation against the frozen base
    /// model (sigmoid, IPO, hinge, robust), or reference-free (--loss-type simpo|orpo).
    Dpo(TrainCommand),
    /// Train a policy on single completions labelled desirable/undesirable (thumbs) with KTO.
    Kto(TrainCommand),
    /// Supervised fine-tuning on prompt/completion pairs (completion-only loss).
    Sft(TrainCommand),
    /// Score preference pairs with a model (and optional adapter / reward head), no training.
    Score(ScoreConfig),
    /// Fold a LoRA adapter into its base model and write a full model folder.
    Merge(MergeConfig),
    /// Fold a LoRA adapter into its base model and write one GGUF file (F16, Q8_0 or Q4_0)
    /// that llama.cpp and Ollama load (Llama-family and Qwen2 models).
    Export(ExportConfig),
    /// Sample K responses per prompt from a policy and write them as the server's import
    /// JSONL (or post them straight into a campaign).
    Generate(GenerateConfig),
    /// Optimise a LoRA policy against a trained reward model with RLOO (or PPO-clip) and a KL
    /// penalty to the frozen base model.
    Rlhf(RlhfCommand),
    /// Serve the model and its LoRA adapters over an OpenAI-compatible HTTP API
    /// (/v1/chat/completions, /v1/completions, /v1/models), batching concurrent requests.
    Serve(ServeConfig),
}

fn report(summary: &RunSummary) {
    eprintln!(
        "final: {:?}\neval: {:?}\ntokens/s over the run: {:.1}",
        summary.train, summary.eval, summary.tokens_per_second
    );
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, no other thread exists yet.
    unsafe { pairwise_trainer::tensor::device::configure_cpu_runtime() };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // The matches tell which training options were given as flags (they override the TOML file).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (_, options) = matches.subcommand().expect("clap requires a subcommand");
    match cli.command {
        Command::Reward(command) => report(&run_reward(&command.resolve(options)?)?),
        Command::Dpo(command) => report(&run_dpo(&command.resolve(options)?)?),
        Command::Kto(command) => report(&run_kto(&command.resolve(options)?)?),
        Command::Sft(command) => report(&run_sft(&command.resolve(options)?)?),
        Command::Score(config) => run_score(&config)?,
        Command::Merge(config) => run_merge(&config)?,
        Command::Export(config) => run_export(&config)?,
        Command::Generate(config) => run_generate(&config)?,
        Command::Rlhf(command) => run_rlhf_command(&command)?,
        Command::Serve(config) => run_serve(&config)?,
    }
    Ok(())
}
