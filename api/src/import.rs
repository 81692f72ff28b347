//! Importing responses (`/api/v1/campaigns/{id}/import`): the options and the report.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// How pairs are formed from a prompt's K responses.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PairingOptions {
    /// At most this many pairs per prompt, sampled at random; all pairs when absent.
    pub max_pairs_per_prompt: Option<usize>,
    /// Seed of that sampling (default 0), so imports are reproducible.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub lines: usize,
    pub prompts_created: usize,
    pub prompts_reused: usize,
    pub responses_created: usize,
    pub responses_reused: usize,
    pub pairs_created: usize,
    /// Pairs already in the campaign (same two responses, either order).
    pub pairs_existing: usize,
    pub gold_pairs: usize,
}
