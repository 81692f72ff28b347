//! Handing out pairs and recording votes (`/api/v1/campaigns/{id}/next`, `/api/v1/votes`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::campaigns::CampaignStatus;

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Choice as the rater saw it on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenChoice {
    Left,
    Right,
    Tie,
    BothBad,
}

/// One of the two responses as the rater saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
}

/// A rater's fix of one response of the pair: stored as a new revision linked to the
/// original, which stays as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    /// The response corrected; with an A or B verdict it must be the chosen one.
    pub side: Side,
    /// The corrected text (1-32768 bytes, not the same as the original).
    pub text: String,
}

/// Choice in the stored order of the pair (`a` = response_a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    A,
    B,
    Tie,
    BothBad,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::A => "a",
            Choice::B => "b",
            Choice::Tie => "tie",
            Choice::BothBad => "both_bad",
        }
    }

    pub fn parse(s: &str) -> Option<Choice> {
        match s {
            "a" => Some(Choice::A),
            "b" => Some(Choice::B),
            "tie" => Some(Choice::Tie),
            "both_bad" => Some(Choice::BothBad),
            _ => None,
        }
    }
}

impl ScreenChoice {
    /// When the pair was shown swapped, the left response is `b`.
    pub fn to_stored(self, swapped: bool) -> Choice {
        match (self, swapped) {
            (ScreenChoice::Left, false) | (ScreenChoice::Right, true) => Choice::A,
            (ScreenChoice::Right, false) | (ScreenChoice::Left, true) => Choice::B,
            (ScreenChoice::Tie, _) => Choice::Tie,
            (ScreenChoice::BothBad, _) => Choice::BothBad,
        }
    }
}

/// A pair as shown to one rater: texts in on-screen order, no model names (blind rating).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedPair {
    pub assignment_id: i64,
    pub campaign_id: i64,
    pub pair_id: i64,
    pub prompt: String,
    /// Earlier turns of the conversation, oldest first.
    pub messages: Vec<Message>,
    pub left: String,
    /// Empty on a single-response task (thumbs, scale), whose response is `left`.
    pub right: String,
    /// Ranking campaigns: all the task's responses in on-screen order (`left` and `right`
    /// are its first two); empty for pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<String>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Next {
    /// A pair to rate.
    Assigned { pair: ServedPair },
    /// Nothing left for this rater.
    Done,
    /// Remaining pairs are leased to other raters; ask again later.
    Waiting,
    /// The campaign is not open for rating (draft, paused, closed).
    Unavailable { campaign_status: CampaignStatus },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// The lease the pair was served under (normal mode).
    pub assignment_id: Option<i64>,
    /// Free-vote mode (campaign setting): the pair voted on, without a lease.
    pub pair_id: Option<i64>,
    /// Free-vote mode: whether response b was shown on the left.
    #[serde(default)]
    pub swapped: bool,
    /// The verdict on a pair (required there); ranking votes give `ranks` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<ScreenChoice>,
    /// Ranking campaigns: the rank of each response in on-screen order, 1 = best; equal
    /// numbers are ties (`[1, 1, 3]`: the first two tie, the third is worst).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<Vec<i64>>,
    /// Ranking campaigns: none of the responses is good (the ranks still order them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_bad: bool,
    /// Single-response campaigns: the rating of the task's response (thumbs: 1 = up,
    /// 0 = down; scale: 1-5, 5 = best), given instead of `choice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<i64>,
    /// 1 = slightly, 2 = clearly, 3 = much better; only meaningful for left/right.
    pub strength: Option<i64>,
    pub rationale: Option<String>,
    /// Time the rater spent on the pair, in milliseconds.
    pub time_ms: Option<i64>,
    /// Client-generated idempotency key: a resubmission with the same key is stored once.
    pub client_key: String,
    /// Per-aspect campaigns: the choice on every one of the campaign's aspects, as on
    /// screen (required there, refused elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspects: Option<BTreeMap<String, ScreenChoice>>,
    /// Optionally, the rater's correction of one response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<Correction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredVote {
    pub id: i64,
    pub seq: i64,
    pub pair_id: i64,
    pub choice: Choice,
    pub strength: Option<i64>,
    pub swapped: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoteOutcome {
    pub vote: StoredVote,
    /// True when this key had already been stored: nothing new was written.
    pub duplicate: bool,
    /// Votes of this rater in the campaign, including this one.
    pub my_votes: i64,
    pub next: Next,
}
