//! The leaderboard (`/api/v1/campaigns/{id}/leaderboard`): Bradley–Terry (or, for a
//! ranking campaign, Plackett–Luce) scores of the models behind the responses, with
//! bootstrap intervals.

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

/// The model fitted: Bradley–Terry on choices between two, Plackett–Luce on rankings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    #[default]
    BradleyTerry,
    PlackettLuce,
    /// Thumbs and scale campaigns: each model's mean rating (`wins`/`losses`/`ties`:
    /// ratings above, below and at the scale's middle).
    MeanRating,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub campaign_id: i64,
    #[serde(default)]
    pub fit: Fit,
    /// Votes fitted: decisive battles (Bradley–Terry) or rankings (Plackett–Luce).
    pub battles: u64,
    pub bootstrap_rounds: usize,
    pub models: Vec<ModelScore>,
}
