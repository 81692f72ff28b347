//! Campaigns (`/api/v1/campaigns`): a set of pairs to rate with its guidelines, overlap
//! (votes wanted per pair), status and gold-check rate.

use serde::{Deserialize, Serialize};

use crate::arena::ArenaSettings;

/// One question a per-aspect campaign asks about every pair besides the overall choice
/// (e.g. `helpfulness`, "Does it do what was asked?").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aspect {
    /// A key for exports and the leaderboard: 1-40 of `a-z`, `0-9`, `_`.
    pub name: String,
    /// One line shown to raters beside the choice.
    #[serde(default)]
    pub description: String,
}

/// What raters do in a campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignKind {
    /// Imported pairs, handed out under leases.
    #[default]
    Pairwise,
    /// Raters' own prompts answered live by two contenders; each vote stores a pair.
    Arena,
    /// Imported prompts with 2-6 responses each; raters order all of them (ties allowed).
    Ranking,
    /// One response at a time, rated thumbs up or down (`rating` 1 or 0).
    Thumbs,
    /// One response at a time, rated on a 1-5 scale (`rating` 1-5, 5 = best).
    Scale,
}

impl CampaignKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignKind::Pairwise => "pairwise",
            CampaignKind::Arena => "arena",
            CampaignKind::Ranking => "ranking",
            CampaignKind::Thumbs => "thumbs",
            CampaignKind::Scale => "scale",
        }
    }

    /// Campaigns whose tasks are one response each (thumbs, scale).
    pub fn single_response(self) -> bool {
        matches!(self, CampaignKind::Thumbs | CampaignKind::Scale)
    }

    /// The ratings a single-response campaign accepts, lowest (worst) first, and the
    /// default midpoint exports split them at; `None` elsewhere.
    pub fn rating_range(self) -> Option<(std::ops::RangeInclusive<i64>, f64)> {
        match self {
            CampaignKind::Thumbs => Some((0..=1, 0.5)),
            CampaignKind::Scale => Some((1..=5, 3.0)),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<CampaignKind> {
        match s {
            "pairwise" => Some(CampaignKind::Pairwise),
            "arena" => Some(CampaignKind::Arena),
            "ranking" => Some(CampaignKind::Ranking),
            "thumbs" => Some(CampaignKind::Thumbs),
            "scale" => Some(CampaignKind::Scale),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    Draft,
    Active,
    Paused,
    Closed,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Active => "active",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignStatus> {
        match s {
            "draft" => Some(CampaignStatus::Draft),
            "active" => Some(CampaignStatus::Active),
            "paused" => Some(CampaignStatus::Paused),
            "closed" => Some(CampaignStatus::Closed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub kind: CampaignKind,
    /// Arena settings (arena campaigns; defaults elsewhere).
    pub arena: ArenaSettings,
    /// Per-aspect campaigns: the aspects every vote also chooses on (empty: overall only).
    pub aspects: Vec<Aspect>,
    pub guidelines: String,
    pub guidelines_version: i64,
    pub overlap: i64,
    pub status: CampaignStatus,
    pub gold_rate: f64,
    pub lease_seconds: i64,
    pub free_votes: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Regular (non-gold) pairs in the campaign.
    pub pairs: i64,
    /// Votes wanted to finish: regular pairs × overlap.
    pub target_votes: i64,
    /// Votes recorded on regular pairs.
    pub votes: i64,
    /// Votes of the caller (their own progress).
    pub my_votes: i64,
    /// The training run whose adapter generated this campaign's responses (a next round).
    pub source_run_id: Option<i64>,
}

/// Settings of a new campaign; absent fields take the defaults shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    /// Default `pairwise`.
    #[serde(default)]
    pub kind: CampaignKind,
    /// Arena campaigns' settings.
    #[serde(default)]
    pub arena: ArenaSettings,
    /// Aspects raters choose on besides the overall choice (pairwise campaigns, at most 8).
    #[serde(default)]
    pub aspects: Vec<Aspect>,
    #[serde(default)]
    pub guidelines: String,
    /// Votes wanted per pair (default 3).
    #[serde(default = "default_overlap")]
    pub overlap: i64,
    /// Share of served pairs that are gold checks, 0..=1 (default 0).
    #[serde(default)]
    pub gold_rate: f64,
    /// Default `draft`: raters cannot open it until it is made active.
    #[serde(default = "default_status")]
    pub status: CampaignStatus,
    /// Lease on a handed-out pair, in seconds (default 600).
    #[serde(default = "default_lease")]
    pub lease_seconds: i64,
    /// Accept votes without a lease (`pair_id` instead of `assignment_id`).
    #[serde(default)]
    pub free_votes: bool,
}

fn default_overlap() -> i64 {
    3
}
fn default_status() -> CampaignStatus {
    CampaignStatus::Draft
}
fn default_lease() -> i64 {
    600
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignUpdate {
    pub name: Option<String>,
    pub guidelines: Option<String>,
    pub overlap: Option<i64>,
    pub gold_rate: Option<f64>,
    pub status: Option<CampaignStatus>,
    pub lease_seconds: Option<i64>,
    pub free_votes: Option<bool>,
    pub arena: Option<ArenaSettings>,
    /// Only while the campaign has no votes: votes before a change would lack the new aspects.
    pub aspects: Option<Vec<Aspect>>,
}
