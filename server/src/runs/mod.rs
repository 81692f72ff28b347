//! Training runs: the server starts `pairwise-train` as child processes (so a crash or an
//! out-of-memory kill in training never takes the server down), on a snapshot of the
//! campaign's aggregated votes, streams the trainer's `metrics.jsonl` into the database while
//! it runs, and records the outcome and the adapter's checksum. A run is a sequence of
//! phases, one child process each: `reward` or `dpo`; for `rlhf` a reward model and then
//! the policy against it; and, when asked, `generate` + `import`: the hand-off to the next
//! round (`next_round`). Each run keeps its lineage: the vote cursor and SHA-256 of the data
//! it saw, the raters behind those votes and the guidelines version. Runs start by hand
//! (API) or from the schedules in the server config (`schedule`); one run per campaign at a
//! time; a run whose server stops sending heartbeats (it died) is marked `interrupted`
//! by any server sharing the database.
//!
//! This file holds the run records; `supervisor` starts and watches the child processes.

pub mod next_round;
pub mod schedule;
pub mod supervisor;

use std::path::Path;

use pairwise_api::runs::{Method, Run, RunSpec, RunStatus, Trigger};
use serde_json::Value;

use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::store::{Db, SqlRow, now_ms};

/// The first problem with a spec, naming the field.
pub fn check_spec(spec: &RunSpec) -> Result<(), String> {
    if spec.model.trim().is_empty() {
        return Err("model: a model folder is required".into());
    }
    if !spec.reward_args.is_empty() && spec.method != Method::Rlhf {
        return Err("reward_args: only an rlhf run has a reward-model step".into());
    }
    if spec.join_arena.is_some() && spec.method == Method::Reward {
        return Err("join_arena: a reward run trains no policy to serve".into());
    }
    if let Some(next) = &spec.next_round {
        if spec.method == Method::Reward {
            return Err("next_round: a reward run trains no policy to generate with".into());
        }
        if next.responses == 0 || next.responses + next.baseline_responses < 2 || next.responses > 16 {
            return Err("next_round.responses: 1-16 per prompt, at least 2 with baseline_responses".into());
        }
        if next.baseline_responses > 16 {
            return Err("next_round.baseline_responses: at most 16 per prompt".into());
        }
    }
    Ok(())
}

macro_rules! run_select {
    () => {
        "SELECT id, campaign_id, method, config, trigger, status, phase, data_cursor, data_rows, \
         data_sha256, guidelines_version, raters, output_dir, artifact_sha256, exit_reason, next_campaign_id, \
         supervisor, started_at, finished_at FROM training_runs"
    };
}

fn run_from_row(row: &SqlRow) -> ApiResult<Run> {
    let json =
        |name: &str| -> ApiResult<Value> { Ok(serde_json::from_str(&row.text(name)?).map_err(anyhow::Error::from)?) };
    let (method, trigger, status) = (row.text("method")?, row.text("trigger")?, row.text("status")?);
    Ok(Run {
        id: row.int("id")?,
        campaign_id: row.int("campaign_id")?,
        method: Method::parse(&method).ok_or_else(|| anyhow::anyhow!("unknown method {method}"))?,
        config: json("config")?,
        trigger: Trigger::parse(&trigger).ok_or_else(|| anyhow::anyhow!("unknown trigger {trigger}"))?,
        status: RunStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown status {status}"))?,
        phase: row.text("phase")?,
        data_cursor: row.int("data_cursor")?,
        data_rows: row.int("data_rows")?,
        data_sha256: row.text("data_sha256")?,
        guidelines_version: row.int("guidelines_version")?,
        raters: serde_json::from_value(json("raters")?).map_err(anyhow::Error::from)?,
        output_dir: row.text("output_dir")?,
        artifact_sha256: row.opt_text("artifact_sha256")?,
        exit_reason: row.opt_text("exit_reason")?,
        next_campaign_id: row.opt_int("next_campaign_id")?,
        supervisor: row.text("supervisor")?,
        started_at: row.int("started_at")?,
        finished_at: row.opt_int("finished_at")?,
    })
}

pub async fn get_run(db: &Db, id: i64) -> ApiResult<Run> {
    let row = db
        .fetch_optional(concat!(run_select!(), " WHERE id = $1"), args![id])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id}")))?;
    run_from_row(&row)
}

pub async fn list_runs(db: &Db, campaign_id: i64) -> ApiResult<Vec<Run>> {
    let rows =
        db.fetch_all(concat!(run_select!(), " WHERE campaign_id = $1 ORDER BY id DESC"), args![campaign_id]).await?;
    rows.iter().map(run_from_row).collect()
}

/// The metric lines a run has logged so far, in order, each with the `phase` that wrote it.
pub async fn run_metrics(db: &Db, id: i64) -> ApiResult<Vec<Value>> {
    let rows = db.fetch_all("SELECT metrics FROM run_metrics WHERE run_id = $1 ORDER BY line", args![id]).await?;
    rows.iter().map(|row| Ok(serde_json::from_str(&row.text("metrics")?).map_err(anyhow::Error::from)?)).collect()
}

/// Marks as `interrupted` the runs whose supervising server has not sent a heartbeat since
/// `stale_before` (Unix ms): that server died or lost the database, and its child process
/// with it. Every server calls this periodically, and at start-up (on SQLite, where only
/// one server can run, with `i64::MAX`: every run still `running` was left by the last one).
pub async fn mark_interrupted(db: &Db, stale_before: i64) -> ApiResult<u64> {
    Ok(db
        .execute(
            "UPDATE training_runs SET status = 'interrupted', \
             exit_reason = 'the server supervising the run stopped during it', finished_at = $1 \
             WHERE status = 'running' AND heartbeat_at < $2",
            args![now_ms(), stale_before],
        )
        .await?)
}

/// Records the end of a run, unless it has ended already (another server marked it
/// interrupted because its heartbeats stopped: that stays the record).
pub async fn finish(
    db: &Db,
    id: i64,
    status: RunStatus,
    reason: Option<String>,
    artifact: Option<String>,
) -> ApiResult<()> {
    db.execute(
        "UPDATE training_runs SET status = $1, exit_reason = $2, artifact_sha256 = $3, finished_at = $4 \
         WHERE id = $5 AND status = 'running'",
        args![status.as_str(), reason, artifact, now_ms(), id],
    )
    .await?;
    Ok(())
}

/// What a run's page offers for download, relative to the run folder.
pub const RUN_FILES: [&str; 12] = [
    "data.jsonl",
    "prompts.jsonl",
    "trainer.log",
    "out/metrics.jsonl",
    "out/adapter_config.json",
    "out/adapter_model.safetensors",
    "out/reward_head.safetensors",
    "reward/metrics.jsonl",
    "reward/adapter_config.json",
    "reward/adapter_model.safetensors",
    "reward/reward_head.safetensors",
    "next_round.jsonl",
];

/// The files of [`RUN_FILES`] a run has written so far.
pub fn written_files(run: &Run) -> Vec<String> {
    RUN_FILES
        .iter()
        .filter(|name| !run.output_dir.is_empty() && Path::new(&run.output_dir).join(name).is_file())
        .map(|name| name.to_string())
        .collect()
}
