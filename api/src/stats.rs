//! Campaign statistics (`/api/v1/campaigns/{id}/stats`): progress, agreement, position
//! bias, time per pair and per-rater figures.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub pairs_total: i64,
    pub pairs_complete: i64,
    pub target_votes: i64,
    pub votes: i64,
    pub gold_votes: i64,
    pub raters: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Share of agreeing rater pairs over all pairs of votes on the same item.
    pub percent: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
    pub pairs_with_multiple_votes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionBias {
    /// Votes where one response won (a or b).
    pub decisive_votes: i64,
    /// Of those, how many went to the response shown on the left.
    pub left_wins: i64,
    /// left_wins / decisive_votes; 0.5 means no position bias.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaterStats {
    pub rater_id: i64,
    pub username: String,
    pub votes: i64,
    pub median_time_ms: Option<f64>,
    pub gold_votes: i64,
    pub gold_correct: i64,
    pub gold_accuracy: Option<f64>,
    /// How often this rater's votes match other raters' votes on the same pairs.
    pub agreement_with_others: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignStats {
    pub campaign_id: i64,
    /// Votes (gold included) per time bucket, oldest first, for the dashboard chart.
    pub votes_over_time: VotesOverTime,
    pub progress: Progress,
    pub agreement: Agreement,
    pub position_bias: PositionBias,
    pub median_time_ms: Option<f64>,
    pub raters: Vec<RaterStats>,
    /// Per-aspect campaigns: agreement and choices per aspect, in the campaign's order.
    #[serde(default)]
    pub aspects: Vec<AspectStats>,
    /// Ranking campaigns: agreement on the ranks and how screen position sways them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking: Option<RankingStats>,
    /// Thumbs and scale campaigns: the ratings and agreement on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<RatingStats>,
}

/// A single-response campaign's ratings over its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingStats {
    pub votes: i64,
    /// `(rating, votes)` for every rating the campaign's scale has, lowest first.
    pub counts: Vec<(i64, i64)>,
    pub mean: Option<f64>,
    /// Agreement on each task's rating: Krippendorff's alpha with the nominal metric for
    /// thumbs and the ordinal metric for the 1-5 scale; `percent`: rater pairs giving the
    /// same rating.
    pub agreement: Agreement,
}

/// A ranking campaign's figures over its regular tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingStats {
    pub votes: i64,
    /// Votes that marked every response bad.
    pub all_bad: i64,
    /// Agreement on each response's rank (a unit is one response of a task; Krippendorff's
    /// alpha with the ordinal metric; `percent`: rater pairs giving it the same rank).
    pub agreement: Agreement,
    /// Per screen slot, first shown first: how the responses shown there were ranked.
    pub positions: Vec<SlotStats>,
}

/// How the responses shown in one screen slot were ranked. Without position bias every
/// slot's mean rank is about the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStats {
    /// 0 = shown first (top on a phone, left on a wide screen).
    pub slot: i64,
    pub shown: i64,
    pub mean_rank: f64,
    /// Times a response in this slot was ranked best (ties included).
    pub top: i64,
    /// top / shown.
    pub top_rate: f64,
}

/// One aspect's figures over the regular pairs (agreement measured as for the overall choice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AspectStats {
    pub name: String,
    pub votes: i64,
    /// Votes for response a, b, tie and both bad (stored order, not screen order).
    pub a: i64,
    pub b: i64,
    pub tie: i64,
    pub both_bad: i64,
    pub agreement: Agreement,
}

/// Votes counted in equal time buckets: hours while the campaign's votes span up to two
/// days, days after that (so the chart stays readable at both scales).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VotesOverTime {
    pub bucket_ms: i64,
    /// `(bucket start in ms since the epoch, votes in the bucket)`; empty buckets included.
    pub buckets: Vec<(i64, i64)>,
}
