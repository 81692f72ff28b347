//! Pairwise trainer: turns pairwise preference data into better models.
//!
//! Loads Hugging Face Llama/Qwen2 checkpoints (safetensors or GGUF), adapts them (LoRA, QLoRA,
//! prefix tuning or full fine-tuning)
//! and trains reward models (Bradley–Terry) or policies (DPO and variants) on candle, with
//! numbers that match PyTorch/TRL. See `trainer/README.md` for the command-line tool.

pub mod batch;
pub mod config;
pub mod data;
pub mod dpo;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod lora;
pub mod loss;
pub mod merge;
pub mod model;
pub mod ops;
pub mod optim;
pub mod prefix;
pub mod qlora;
pub mod remote;
pub mod reward;
pub mod rlhf;
pub mod score;
pub mod synthetic;
pub mod tokenizer;
pub mod train;
pub mod weights;
