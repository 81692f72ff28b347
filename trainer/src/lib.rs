//! Pairwise trainer: turns pairwise preference data into better models.
//!
//! Loads Hugging Face Llama/Qwen2 checkpoints (safetensors or GGUF), adapts them (LoRA, QLoRA,
//! prefix tuning or full fine-tuning)
//! and trains reward models (Bradley–Terry) or policies (DPO and variants) on candle, with
//! numbers that match PyTorch/TRL. See `trainer/README.md` for the command-line tool.
//!
//! The modules are layers, each using only those below it: [`serve`] / [`methods`] → [`train`] →
//! [`peft`] / [`data`] → [`model`] → [`tensor`]. [`error`] serves them all; [`synthetic`]
//! (tiny self-made models and data for tests and benchmarks) uses any of them. [`serve`] is the
//! OpenAI-compatible inference server for what was trained.

pub mod data;
pub mod error;
pub mod methods;
pub mod model;
pub mod peft;
pub mod serve;
pub mod synthetic;
pub mod tensor;
pub mod train;
