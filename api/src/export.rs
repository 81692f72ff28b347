//! Exporting preference data (`/api/v1/campaigns/{id}/export`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Trl,
    Messages,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaterIds {
    /// A stable pseudonym per rater (keyed by the server secret).
    #[default]
    Pseudonym,
    /// The raters' user ids.
    Id,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub format: Format,
    /// trl/messages: keep pairs with at least this many votes (default 1).
    #[serde(default = "one")]
    pub min_votes: i64,
    /// trl/messages: keep pairs whose winning choice has at least this share of votes.
    #[serde(default)]
    pub min_agreement: f64,
    /// Only what arrived after this cursor (a previous export's `X-Pairwise-Cursor`).
    #[serde(default)]
    pub since: i64,
    /// trl/messages: add `pair_id`, `votes`, `agreement`, `strength`, `seq` to each row.
    #[serde(default)]
    pub meta: bool,
    /// Include gold-check pairs (default: left out, they are rater tests).
    #[serde(default)]
    pub include_gold: bool,
    /// raw: how raters are identified.
    #[serde(default)]
    pub raters: RaterIds,
}

fn one() -> i64 {
    1
}
