//! `pairwise-train export`: a model with its adapter folded in, as one GGUF file for
//! llama.cpp and Ollama (see [`crate::model::gguf_write`]).

use std::path::PathBuf;

use clap::Args;

use crate::model::gguf_write::{GgufQuant, write_gguf};
use crate::model::load::load_model_and_tokenizer;
use crate::peft::load::load_peft;

/// The options of `pairwise-train export`.
#[derive(Args)]
pub struct ExportConfig {
    /// Base model folder or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT LoRA adapter folder to fold in (none: the base model alone).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Output format (GGUF is the one there is).
    #[arg(long, value_enum, default_value = "gguf")]
    pub format: ExportFormat,
    /// How weight matrices are stored.
    #[arg(long, value_enum, default_value = "f16")]
    pub quant: GgufQuant,
    /// The GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// `general.name` in the file (default: the output file's name).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Gguf,
}

/// Runs `pairwise-train export`.
pub fn run_export(config: &ExportConfig) -> anyhow::Result<()> {
    // Merging and quantizing are done once, on the CPU, in f32.
    let (mut model, tokenizer) = load_model_and_tokenizer(&config.model, &candle_core::Device::Cpu)?;
    if let Some(adapter) = &config.adapter {
        load_peft(adapter, &mut model)?;
    }
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| config.out.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned()));
    match config.format {
        ExportFormat::Gguf => write_gguf(&model, &tokenizer, config.quant, &name, &config.out)?,
    }
    eprintln!("wrote {} ({:?})", config.out.display(), config.quant);
    Ok(())
}
