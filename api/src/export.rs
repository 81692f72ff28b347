//! Exporting preference data (`/api/v1/campaigns/{id}/export`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Trl,
    Messages,
    Raw,
    /// TRL's unpaired format for KTO: `{"prompt","completion","label"}`.
    Kto,
    /// Prompt and completion to imitate: `{"prompt","completion"}` or `{"messages"}`.
    Sft,
    /// Ranking campaigns: `{"prompt"|"messages", "responses", "ranks", "raw", "all_bad"}`.
    Ranking,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        [Format::Trl, Format::Messages, Format::Raw, Format::Kto, Format::Sft, Format::Ranking]
            .into_iter()
            .find(|f| f.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Trl => "trl",
            Format::Messages => "messages",
            Format::Raw => "raw",
            Format::Kto => "kto",
            Format::Sft => "sft",
            Format::Ranking => "ranking",
        }
    }
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

/// Which pairs a ranking gives in the pair formats (`trl`, `messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InducedPairs {
    /// Every two responses of different rank.
    #[default]
    All,
    /// Only responses of neighbouring ranks (each with each one rank worse).
    Adjacent,
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
    /// kto: also turn each pair with a winner into a desirable (the winner) and an
    /// undesirable (the loser) completion; without it only `both_bad` verdicts are exported.
    #[serde(default = "yes")]
    pub decisive: bool,
    /// Per-aspect campaigns: export the choices on this aspect instead of the overall ones
    /// (every format; strengths are overall only, so they are left out).
    #[serde(default)]
    pub aspect: Option<String>,
    /// Ranking campaigns, `trl`/`messages`: the pairs a ranking gives (default `all`).
    #[serde(default)]
    pub pairs: InducedPairs,
    /// Thumbs and scale campaigns, `kto`/`sft`: a response is desirable when its mean
    /// rating is above this, undesirable below it, and left out at it (default: the middle,
    /// 0.5 for thumbs and 3 for the 1-5 scale).
    #[serde(default)]
    pub threshold: Option<f64>,
}

fn yes() -> bool {
    true
}

fn one() -> i64 {
    1
}
