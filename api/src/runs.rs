//! Training runs (`/api/v1/campaigns/{id}/runs`, `/api/v1/runs/{id}`): what to train, and
//! a run's record, metrics and files.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a run trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A Bradley–Terry reward model.
    #[default]
    Reward,
    /// DPO on a LoRA-adapted policy.
    Dpo,
    /// A reward model, then the policy optimised against it.
    Rlhf,
    /// KTO on single completions labelled desirable / undesirable (the `kto` export).
    Kto,
    /// Supervised fine-tuning on the consensus-best responses (the `sft` export).
    Sft,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Reward => "reward",
            Method::Dpo => "dpo",
            Method::Rlhf => "rlhf",
            Method::Kto => "kto",
            Method::Sft => "sft",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        [Method::Reward, Method::Dpo, Method::Rlhf, Method::Kto, Method::Sft].into_iter().find(|m| m.as_str() == s)
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The server that watched it stopped during the run.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Cancelled, RunStatus::Interrupted]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// An admin, through the API or the run page.
    Manual,
    /// A schedule's `min_new_pairs`.
    Threshold,
    /// A schedule's `daily_at`.
    Daily,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Threshold => "threshold",
            Trigger::Daily => "daily",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        [Trigger::Manual, Trigger::Threshold, Trigger::Daily].into_iter().find(|t| t.as_str() == s)
    }
}

/// What to train, from the API or a schedule.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub method: Method,
    /// Model folder or .gguf file, as `pairwise-train --model` takes it.
    pub model: String,
    /// Further flags of the training step, e.g. `["--max-steps", "200", "--lora-r", "16"]`
    /// (for `rlhf`: of `pairwise-train rlhf`).
    #[serde(default)]
    pub args: Vec<String>,
    /// `rlhf` only: further flags of its reward-model step (`pairwise-train reward`).
    #[serde(default)]
    pub reward_args: Vec<String>,
    /// `dpo` / `rlhf` only: after a successful run, generate new pairs with the new adapter
    /// into a new campaign (the next round).
    #[serde(default)]
    pub next_round: Option<NextRound>,
    /// After a successful run, register its adapter with the server's `pairwise-train
    /// serve` (config `serve_url`) as `run-ID` and add it to this arena campaign as a
    /// contender, so raters meet the new policy in the arena.
    #[serde(default)]
    pub join_arena: Option<i64>,
    /// Per-aspect campaigns: train on the preferences of this aspect (each vote's choice for
    /// it, the `aspect=` export) instead of the overall choice.
    #[serde(default)]
    pub aspect: Option<String>,
}

/// The hand-off to the next round: `pairwise-train generate` with the run's adapter over the
/// campaign's prompts, imported into a new active campaign with the same settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NextRound {
    /// Responses per prompt from the new adapter (default 2).
    #[serde(default = "default_responses")]
    pub responses: usize,
    /// Responses per prompt from the model without the adapter (checkpoint `base`), so the
    /// raters compare the new policy with the old one head to head (default 0).
    #[serde(default)]
    pub baseline_responses: usize,
    /// Further `pairwise-train generate` flags, e.g. `["--max-new-tokens", "128"]`.
    #[serde(default)]
    pub args: Vec<String>,
}

fn default_responses() -> usize {
    2
}

/// A run's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub campaign_id: i64,
    pub method: Method,
    pub config: Value,
    pub trigger: Trigger,
    pub status: RunStatus,
    /// The phase running now, or the last one that ran: reward, dpo, rlhf, generate, import.
    pub phase: String,
    pub data_cursor: i64,
    pub data_rows: i64,
    pub data_sha256: String,
    pub guidelines_version: i64,
    pub raters: Vec<i64>,
    pub output_dir: String,
    pub artifact_sha256: Option<String>,
    pub exit_reason: Option<String>,
    /// The campaign of pairs the run's adapter generated (the next round).
    pub next_campaign_id: Option<i64>,
    /// The server process that starts and watches the run's trainer (its instance name);
    /// with several servers on one database, only that one can stop the child process.
    #[serde(default)]
    pub supervisor: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// `GET /api/v1/runs/{id}`: the record with its metric lines (each tagged with the `phase`
/// that wrote it) and the files it has written so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub metrics: Vec<Value>,
    pub files: Vec<String>,
}
