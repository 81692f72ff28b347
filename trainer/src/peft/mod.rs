//! The PEFT layer: how a model is adapted — LoRA ([`lora`]), QLoRA's quantized frozen base
//! ([`qlora`]), prefix tuning ([`prefix`]) or full fine-tuning — and adapters read and written
//! in Hugging Face PEFT's format ([`load`], and each kind's `save_*`); several LoRA adapters
//! side by side for serving ([`bank`]).

pub mod bank;
pub mod load;
pub mod lora;
pub mod prefix;
pub mod qlora;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

/// How the model is adapted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// LoRA on a frozen f32 base.
    Lora,
    /// LoRA on a frozen base whose linear weights are stored quantized (Q8_0 or Q4_0).
    Qlora,
    /// Every parameter trained (the baseline).
    Full,
    /// Trainable key/value prefixes per layer (`num_virtual_tokens`), base frozen.
    Prefix,
}

/// Quantization of the frozen base for QLoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QuantKind {
    Q8_0,
    Q4_0,
}

/// Which Python class the adapter is for (PEFT's `task_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeftTask {
    CausalLm,
    /// Reward model: `LlamaForSequenceClassification`, with the `score` head saved alongside.
    SequenceClassification,
}

/// A PEFT adapter read from disk and attached to `model`.
pub struct LoadedAdapter {
    pub vars: Vec<(String, Var)>,
    /// The reward head, when the adapter was saved for sequence classification.
    pub score: Option<Tensor>,
}
