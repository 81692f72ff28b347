//! `pairwise-train merge`: a PEFT LoRA adapter folded into its base model and written as a
//! full model folder (see [`crate::model::merge`]).

use std::path::PathBuf;

use clap::Args;

use crate::model::load::load_model_and_tokenizer;
use crate::model::merge::{write_model_folder, write_rebuilt_tokenizer};
use crate::peft::load::load_peft;
use crate::tensor::device::default_device;

/// The options of `pairwise-train merge`.
#[derive(Args)]
pub struct MergeConfig {
    /// Base model folder or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT LoRA adapter folder to fold in.
    #[arg(long)]
    pub adapter: PathBuf,
    /// Output folder for the merged model.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `pairwise-train merge`.
pub fn run_merge(config: &MergeConfig) -> anyhow::Result<()> {
    let device = default_device()?;
    let (mut model, tokenizer) = load_model_and_tokenizer(&config.model, &device)?;
    load_peft(&config.adapter, &mut model)?;
    write_model_folder(&model, Some(&config.model), &config.out)?;
    write_rebuilt_tokenizer(&tokenizer, &config.model, &config.out)?;
    eprintln!("merged model written to {}", config.out.display());
    Ok(())
}
