//! The model layer: the configuration-driven Llama/Qwen2 decoder ([`llama`]) with its
//! adapter-aware linear layers ([`linear`]) and inputs ([`input`]), the Hugging Face
//! `config.json` ([`config`]), the tokenizer and chat template ([`tokenizer`]), loading from a
//! model folder or a GGUF file ([`load`], [`gguf`]) and writing a merged model folder
//! ([`merge`]) or GGUF file ([`gguf_write`]).

pub mod config;
pub mod gguf;
pub mod gguf_write;
pub mod input;
pub mod linear;
pub mod llama;
pub mod load;
pub mod merge;
pub mod tokenizer;

pub use input::ModelInput;
pub use linear::{AdaptedLinear, ForwardCtx, LoraAdapter, Param};
pub use llama::LlamaModel;
