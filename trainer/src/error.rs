//! Error type for the failures a user can cause and fix: missing files, unsupported
//! architectures, malformed data. Numerical and I/O plumbing errors travel as `anyhow`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("missing file {path}: {what}")]
    MissingFile { path: PathBuf, what: &'static str },

    #[error(
        "unsupported model_type {model_type:?} in {path}: supported are llama, mistral and qwen2 (and GGUF files with general.architecture = llama)"
    )]
    UnsupportedModelType { model_type: String, path: PathBuf },

    #[error("invalid model config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },

    #[error("tensor {name:?} is missing from the model weights in {path}")]
    MissingTensor { name: String, path: PathBuf },

    #[error("{path}:{line}: {reason}")]
    BadDataLine { path: PathBuf, line: usize, reason: String },

    #[error(
        "non-finite {what} ({value}) at step {step}: training stopped. Lower the learning rate, enable gradient clipping, or check the data near this step"
    )]
    NonFinite { what: &'static str, value: f64, step: usize },
}
