//! Arena campaigns (`/api/v1/campaigns/{id}/contenders`, `/api/v1/campaigns/{id}/battles`,
//! `/api/v1/battles/{id}`): raters type a prompt, two contenders (OpenAI-compatible
//! endpoints) answer it live, and the vote stores the battle as an ordinary pair.

use serde::{Deserialize, Serialize};

use crate::votes::{ScreenChoice, StoredVote};

/// How the server picks the two contenders of a battle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    /// Every pair of active contenders equally often.
    #[default]
    Uniform,
    /// Pairs whose leaderboard intervals overlap most (whose order is least certain) more
    /// often; contenders without votes count as fully overlapping.
    Overlap,
}

/// An arena campaign's settings (`arena` of a campaign; defaults shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArenaSettings {
    pub pairing: Pairing,
    /// Prompts a rater may draw instead of typing one (empty: typing only).
    pub prompt_pool: Vec<String>,
    /// Longest prompt a rater may send, in characters (default 4000).
    pub max_prompt_chars: usize,
    /// Battles (and follow-up turns) one rater may start per minute (default 6).
    pub battles_per_minute: u32,
    /// Longest time a contender may take for one answer, in seconds (default 60).
    pub timeout_seconds: u64,
    /// Sampling parameters sent to every contender.
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
}

impl Default for ArenaSettings {
    fn default() -> Self {
        ArenaSettings {
            pairing: Pairing::Uniform,
            prompt_pool: Vec::new(),
            max_prompt_chars: 4000,
            battles_per_minute: 6,
            timeout_seconds: 60,
            temperature: 0.7,
            top_p: 1.0,
            max_tokens: 512,
        }
    }
}

/// A contender as admins see it; its API key never leaves the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contender {
    pub id: i64,
    pub campaign_id: i64,
    /// Shown to raters after their vote and on the leaderboard; unique in the campaign.
    pub name: String,
    /// The endpoint's base URL, up to and including `/v1`.
    pub base_url: String,
    /// The `model` field of the requests (a served model or adapter name).
    pub model: String,
    pub has_api_key: bool,
    pub active: bool,
    /// The training run whose adapter this contender serves, when a run added it.
    pub source_run_id: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContender {
    pub name: String,
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContenderUpdate {
    pub active: Option<bool>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// A new key; an empty string removes it.
    pub api_key: Option<String>,
}

/// Starting a battle: a typed prompt, or one drawn from the campaign's pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBattle {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub draw_prompt: bool,
    /// Answer only once both contenders have finished (pages without JavaScript);
    /// otherwise the reply comes at once and the answers stream from `/events`.
    #[serde(default)]
    pub wait: bool,
}

/// A follow-up message to both contenders of a ready battle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BattleTurnRequest {
    pub prompt: String,
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BattleStatus {
    /// The contenders are answering the latest turn.
    Generating,
    /// Both answers are in: the rater may vote or continue.
    Ready,
    /// A contender failed; nothing was stored and the battle cannot go on.
    Failed,
    /// Voted on: stored as a pair, names revealed.
    Voted,
    /// The rater started another battle instead of voting.
    Abandoned,
}

impl BattleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BattleStatus::Generating => "generating",
            BattleStatus::Ready => "ready",
            BattleStatus::Failed => "failed",
            BattleStatus::Voted => "voted",
            BattleStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<BattleStatus> {
        match s {
            "generating" => Some(BattleStatus::Generating),
            "ready" => Some(BattleStatus::Ready),
            "failed" => Some(BattleStatus::Failed),
            "voted" => Some(BattleStatus::Voted),
            "abandoned" => Some(BattleStatus::Abandoned),
            _ => None,
        }
    }
}

/// One exchange of a battle: the rater's message and both answers (empty while generating).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BattleTurn {
    pub prompt: String,
    pub left: String,
    pub right: String,
}

/// A battle as its rater sees it: the contenders stay anonymous until the vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Battle {
    pub id: i64,
    pub campaign_id: i64,
    pub status: BattleStatus,
    pub turns: Vec<BattleTurn>,
    /// Why the battle failed, in plain words.
    pub error: Option<String>,
    /// The contenders' names, once voted.
    pub left_model: Option<String>,
    pub right_model: Option<String>,
    /// The stored pair, once voted.
    pub pair_id: Option<i64>,
    /// Whether the rater may send another message before voting.
    pub can_continue: bool,
    pub created_at: i64,
}

/// The rater's latest battle in a campaign and what the campaign lets them do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArenaState {
    pub battle: Option<Battle>,
    pub can_draw_prompt: bool,
    pub max_prompt_chars: usize,
    pub contenders: usize,
}

/// A vote on a ready battle (the same choice, strength and reason as a pair's vote).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BattleVote {
    pub choice: ScreenChoice,
    pub strength: Option<i64>,
    pub rationale: Option<String>,
    pub time_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BattleVoteOutcome {
    pub battle: Battle,
    pub vote: StoredVote,
    pub my_votes: i64,
}

/// What `/api/v1/battles/{id}/events` sends, one JSON object per server-sent event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BattleEvent {
    /// More text of one side's answer to the latest turn (`side`: `left` or `right`).
    Delta { side: Side, text: String },
    /// Both answers are complete.
    Ready,
    /// The battle failed; `message` says why in plain words.
    Failed { message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
}
