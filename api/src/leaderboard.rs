//! The leaderboard (`/api/v1/campaigns/{id}/leaderboard`): Bradley–Terry scores of the
//! models behind the responses, with bootstrap intervals.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    pub model: String,
    pub score: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub wins: u64,
    pub losses: u64,
    pub ties: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub campaign_id: i64,
    pub battles: u64,
    pub bootstrap_rounds: usize,
    pub models: Vec<ModelScore>,
}
