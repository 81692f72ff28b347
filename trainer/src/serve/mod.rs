//! `pairwise-train serve`: an OpenAI-compatible inference server for a base model and any
//! number of LoRA adapters on it, chosen per request by the `model` field. It runs as its own
//! process, apart from the rating site, so a model that crashes or runs out of memory never
//! takes the site down. [`engine`] batches the decoding, [`api`] speaks OpenAI's HTTP API.

pub mod api;
pub mod engine;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::model::load::load_model_and_tokenizer;
use crate::peft::bank::load_into_bank;
use crate::serve::api::ServeState;
use crate::serve::engine::Registry;
use crate::tensor::device::default_device;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Hugging Face model folder or llama.cpp `.gguf` file.
    #[arg(long)]
    pub model: PathBuf,
    /// The base model's name in requests and /v1/models (default: the folder or file name).
    #[arg(long)]
    pub name: Option<String>,
    /// A PEFT LoRA adapter served as model NAME (repeatable): `--adapter round2=runs/7/adapter`.
    #[arg(long, value_parser = parse_adapter)]
    pub adapter: Vec<(String, PathBuf)>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub bind: SocketAddr,
    /// Require `Authorization: Bearer KEY` on every request.
    #[arg(long, env = "PAIRWISE_SERVE_API_KEY")]
    pub api_key: Option<String>,
    /// Key for adding and removing adapters at run time (`POST/DELETE /v1/adapters`); without
    /// it the adapter routes are off.
    #[arg(long, env = "PAIRWISE_SERVE_ADMIN_KEY")]
    pub admin_key: Option<String>,
    /// Most sequences decoded together; more wait their turn.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Completion tokens when a request sets no `max_tokens`.
    #[arg(long, default_value_t = 512)]
    pub default_max_tokens: usize,
    /// Prompt + completion tokens per sequence (default: the model's positions).
    #[arg(long)]
    pub context_length: Option<usize>,
    /// Largest `n` (completions per request).
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
}

fn parse_adapter(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((name, dir)) if !name.trim().is_empty() && !dir.is_empty() => {
            Ok((name.trim().to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("expected NAME=DIR, got {value:?}")),
    }
}

/// Loads the model and adapters and returns the server's state (engine started).
pub fn prepare(config: &ServeConfig) -> anyhow::Result<Arc<ServeState>> {
    let device = default_device()?;
    let (mut model, tokenizer) = load_model_and_tokenizer(&config.model, &device)?;
    tracing::info!(packed = model.packed_weights(), "weights multiplied in their GGUF blocks in decode steps");
    let base = config.name.clone().unwrap_or_else(|| {
        config.model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    });
    let mut registry = Registry { base, adapters: Vec::new() };
    for (slot, (name, dir)) in config.adapter.iter().enumerate() {
        anyhow::ensure!(registry.resolve(name).is_none(), "--adapter {name}: the name is already taken");
        load_into_bank(dir, &mut model, slot).with_context(|| format!("--adapter {name}={}", dir.display()))?;
        registry.adapters.push((name.clone(), slot));
    }
    let positions = model.config.max_position_embeddings;
    let context_length = config.context_length.unwrap_or(positions).min(positions);
    let tokenizer = Arc::new(tokenizer);
    let engine = engine::start(model, tokenizer.clone(), registry, config.max_batch)?;
    Ok(Arc::new(ServeState {
        engine,
        tokenizer,
        api_key: config.api_key.clone(),
        admin_key: config.admin_key.clone(),
        context_length,
        default_max_tokens: config.default_max_tokens.max(1),
        max_n: config.max_n.max(1),
    }))
}

/// `pairwise-train serve`: loads, then answers until interrupted.
pub fn run_serve(config: &ServeConfig) -> anyhow::Result<()> {
    let state = prepare(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("listening on {}", config.bind))?;
        let names = state.engine.registry.read().expect("registry lock").names();
        eprintln!("serving {} on http://{}/v1", names.join(", "), listener.local_addr()?);
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving HTTP")
    })
}
