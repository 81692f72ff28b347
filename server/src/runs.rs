//! Training runs: the server starts `pairwise-train` as a child process (so a crash or an
//! out-of-memory kill in training never takes the server down), on a snapshot of the
//! campaign's aggregated votes, streams the trainer's `metrics.jsonl` into the database while
//! it runs, and records the outcome and the adapter's checksum. Each run keeps its lineage:
//! the vote cursor and SHA-256 of the data it saw, the raters behind those votes and the
//! guidelines version. Runs start by hand (API) or from the schedules in the server config
//! ("daily at HH:MM", "when N pairs got new votes since the last run"); one run per campaign
//! at a time; runs cut off by a server restart are marked `interrupted`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use crate::auth::AdminUser;
use crate::campaigns::get_campaign;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::export::{ExportParams, Format, RaterIds, start_export};
use crate::state::AppState;

/// What to train, from the API or a schedule.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// `reward` or `dpo`.
    pub method: String,
    /// Model folder or .gguf file, as `pairwise-train --model` takes it.
    pub model: String,
    /// Further `pairwise-train` flags, e.g. `["--max-steps", "200", "--lora-r", "16"]`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A schedule from the server config (`[[schedules]]`): fires daily at `daily_at` (UTC
/// `HH:MM`) and/or once `min_new_pairs` pairs have new votes since the last successful run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub campaign: i64,
    #[serde(flatten)]
    pub spec: RunSpec,
    #[serde(default)]
    pub daily_at: Option<String>,
    #[serde(default)]
    pub min_new_pairs: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub campaign_id: i64,
    pub method: String,
    pub config: Value,
    pub trigger: String,
    pub status: String,
    pub data_cursor: i64,
    pub data_rows: i64,
    pub data_sha256: String,
    pub guidelines_version: i64,
    pub raters: Vec<i64>,
    pub output_dir: String,
    pub artifact_sha256: Option<String>,
    pub exit_reason: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// Cancel switches of the runs this server process is watching.
#[derive(Default)]
pub struct RunRegistry {
    cancel: Mutex<HashMap<i64, oneshot::Sender<()>>>,
}

const RUN_COLUMNS: &str = "id, campaign_id, method, config, trigger, status, data_cursor, data_rows, data_sha256, \
     guidelines_version, raters, output_dir, artifact_sha256, exit_reason, started_at, finished_at";

fn run_from_row(row: &sqlx::any::AnyRow) -> ApiResult<Run> {
    let json = |name: &str| -> ApiResult<Value> {
        let text: String = row.try_get(name)?;
        Ok(serde_json::from_str(&text).map_err(anyhow::Error::from)?)
    };
    Ok(Run {
        id: row.try_get("id")?,
        campaign_id: row.try_get("campaign_id")?,
        method: row.try_get("method")?,
        config: json("config")?,
        trigger: row.try_get("trigger")?,
        status: row.try_get("status")?,
        data_cursor: row.try_get("data_cursor")?,
        data_rows: row.try_get("data_rows")?,
        data_sha256: row.try_get("data_sha256")?,
        guidelines_version: row.try_get("guidelines_version")?,
        raters: serde_json::from_value(json("raters")?).map_err(anyhow::Error::from)?,
        output_dir: row.try_get("output_dir")?,
        artifact_sha256: row.try_get("artifact_sha256")?,
        exit_reason: row.try_get("exit_reason")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub async fn get_run(db: &Db, id: i64) -> ApiResult<Run> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM training_runs WHERE id = $1")))
        .bind(id)
        .fetch_optional(&db.read)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id}")))?;
    run_from_row(&row)
}

pub async fn list_runs(db: &Db, campaign_id: i64) -> ApiResult<Vec<Run>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM training_runs WHERE campaign_id = $1 ORDER BY id DESC"
    )))
    .bind(campaign_id)
    .fetch_all(&db.read)
    .await?;
    rows.iter().map(run_from_row).collect()
}

/// The metric lines a run has logged so far, in order.
pub async fn run_metrics(db: &Db, id: i64) -> ApiResult<Vec<Value>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT metrics FROM run_metrics WHERE run_id = $1 ORDER BY line")
        .bind(id)
        .fetch_all(&db.read)
        .await?;
    rows.iter().map(|m| Ok(serde_json::from_str(m).map_err(anyhow::Error::from)?)).collect()
}

/// Marks runs a previous server process left `running` as `interrupted` (at start-up: their
/// child processes died with it or are no longer watched).
pub async fn mark_interrupted(db: &Db) -> ApiResult<u64> {
    let done = sqlx::query(
        "UPDATE training_runs SET status = 'interrupted', exit_reason = 'the server stopped during the run', \
         finished_at = $1 WHERE status = 'running'",
    )
    .bind(now_ms())
    .execute(&db.write)
    .await?;
    Ok(done.rows_affected())
}

/// The export policy runs train on: every aggregated pair with a majority, gold left out.
fn export_policy() -> ExportParams {
    ExportParams {
        format: Format::Trl,
        min_votes: 1,
        min_agreement: 0.0,
        since: 0,
        meta: true,
        include_gold: false,
        raters: RaterIds::Pseudonym,
    }
}

/// Starts a run: snapshot of the data, the run record, the child process and its watcher.
pub async fn start_run(state: &AppState, campaign_id: i64, spec: RunSpec, trigger: &str) -> ApiResult<Run> {
    if !matches!(spec.method.as_str(), "reward" | "dpo") {
        return Err(ApiError::bad_request(format!("method: `{}` is not reward or dpo", spec.method)));
    }
    if spec.model.trim().is_empty() {
        return Err(ApiError::bad_request("model: a model folder is required"));
    }
    let campaign = get_campaign(&state.db, campaign_id, 0).await?;
    let config = json!({"model": spec.model, "args": spec.args, "export": {"format": "trl", "min_votes": 1, "include_gold": false}});
    let insert = sqlx::query_scalar::<_, i64>(
        "INSERT INTO training_runs (campaign_id, method, config, trigger, status, guidelines_version, output_dir, started_at) \
         VALUES ($1, $2, $3, $4, 'running', $5, '', $6) RETURNING id",
    )
    .bind(campaign_id)
    .bind(&spec.method)
    .bind(config.to_string())
    .bind(trigger)
    .bind(campaign.guidelines_version)
    .bind(now_ms())
    .fetch_one(&state.db.write)
    .await;
    let id = match insert {
        Ok(id) => id,
        Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
            return Err(ApiError::conflict(
                "run_in_progress",
                format!("campaign {campaign_id} already has a run in progress"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let dir = PathBuf::from(&state.config.runs_dir).join(format!("run-{id}"));
    match prepare_and_spawn(state, id, campaign_id, &spec, &dir).await {
        Ok(child) => {
            let (cancel_tx, cancel_rx) = oneshot::channel();
            state.runs.cancel.lock().expect("run registry").insert(id, cancel_tx);
            tokio::spawn(watch(state.clone(), id, dir, child, cancel_rx));
        }
        Err(error) => finish(&state.db, id, "failed", Some(format!("could not start: {error}")), None).await?,
    }
    get_run(&state.db, id).await
}

/// Writes the data snapshot, records it, and starts the trainer.
async fn prepare_and_spawn(
    state: &AppState,
    id: i64,
    campaign_id: i64,
    spec: &RunSpec,
    dir: &Path,
) -> anyhow::Result<tokio::process::Child> {
    tokio::fs::create_dir_all(dir).await?;
    let data = dir.join("data.jsonl");
    let (cursor, mut chunks) = start_export(&state.db, campaign_id, export_policy(), state.config.secret.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut file = tokio::fs::File::create(&data).await?;
    let mut hash = Sha256::new();
    let mut rows = 0i64;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as i64;
        hash.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    let raters: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT c.rater_id FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
         WHERE c.campaign_id = $1 AND c.seq <= $2 AND p.is_gold = 0 ORDER BY c.rater_id",
    )
    .bind(campaign_id)
    .bind(cursor)
    .fetch_all(&state.db.read)
    .await?;
    sqlx::query(
        "UPDATE training_runs SET data_cursor = $1, data_rows = $2, data_sha256 = $3, raters = $4, output_dir = $5 \
         WHERE id = $6",
    )
    .bind(cursor)
    .bind(rows)
    .bind(hex::encode(hash.finalize()))
    .bind(serde_json::to_string(&raters)?)
    .bind(dir.display().to_string())
    .bind(id)
    .execute(&state.db.write)
    .await?;
    anyhow::ensure!(rows > 0, "campaign {campaign_id} has no aggregated pairs to train on yet");
    let log = std::fs::File::create(dir.join("trainer.log"))?;
    let child = tokio::process::Command::new(&state.config.trainer_command)
        .arg(&spec.method)
        .arg("--model")
        .arg(&spec.model)
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(dir.join("out"))
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting `{}`: {e}", state.config.trainer_command))?;
    Ok(child)
}

/// Follows a run to its end: copies new metric lines into the database every half second,
/// kills the child on cancel, then records the outcome.
async fn watch(
    state: AppState,
    id: i64,
    dir: PathBuf,
    mut child: tokio::process::Child,
    mut cancel: oneshot::Receiver<()>,
) {
    let metrics = dir.join("out").join("metrics.jsonl");
    let mut stored = 0usize;
    let mut cancelled = false;
    let exit = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut cancel, if !cancelled => {
                cancelled = true;
                let _ = child.start_kill();
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                stored = ingest_metrics(&state.db, id, &metrics, stored).await.unwrap_or(stored);
            }
        }
    };
    let _ = ingest_metrics(&state.db, id, &metrics, stored).await;
    state.runs.cancel.lock().expect("run registry").remove(&id);
    let (status, reason) = match exit {
        _ if cancelled => ("cancelled", Some("cancelled by an admin".to_string())),
        Ok(code) if code.success() => ("succeeded", None),
        Ok(code) => ("failed", Some(format!("trainer exited with {code}: {}", last_log_line(&dir)))),
        Err(e) => ("failed", Some(format!("waiting for the trainer: {e}"))),
    };
    let artifact = if status == "succeeded" { artifact_checksum(&dir.join("out")) } else { None };
    if let Err(error) = finish(&state.db, id, status, reason, artifact).await {
        tracing::error!(run = id, %error, "recording the end of a training run");
    }
}

async fn ingest_metrics(db: &Db, id: i64, path: &Path, stored: usize) -> anyhow::Result<usize> {
    let Ok(text) = tokio::fs::read_to_string(path).await else { return Ok(stored) };
    // Only complete lines: the trainer may be half-way through writing the last one.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let lines: Vec<&str> = complete.lines().collect();
    for (i, line) in lines.iter().enumerate().skip(stored) {
        let value: Value = serde_json::from_str(line)?;
        sqlx::query("INSERT INTO run_metrics (run_id, line, metrics) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(i as i64)
            .bind(value.to_string())
            .execute(&db.write)
            .await?;
    }
    Ok(lines.len().max(stored))
}

/// The trainer's error message (its `Error: …` line, before any backtrace), or else the
/// last line it logged.
fn last_log_line(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("trainer.log")).unwrap_or_default();
    log.lines()
        .find(|l| l.starts_with("Error:"))
        .or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

/// SHA-256 of the adapter (or full model) weights the run wrote.
fn artifact_checksum(out: &Path) -> Option<String> {
    ["adapter_model.safetensors", "model.safetensors"]
        .iter()
        .find_map(|name| std::fs::read(out.join(name)).ok())
        .map(|bytes| hex::encode(Sha256::digest(&bytes)))
}

async fn finish(db: &Db, id: i64, status: &str, reason: Option<String>, artifact: Option<String>) -> ApiResult<()> {
    sqlx::query(
        "UPDATE training_runs SET status = $1, exit_reason = $2, artifact_sha256 = $3, finished_at = $4 WHERE id = $5",
    )
    .bind(status)
    .bind(reason)
    .bind(artifact)
    .bind(now_ms())
    .bind(id)
    .execute(&db.write)
    .await?;
    Ok(())
}

/// Pairs of the campaign that got votes after `cursor` (what the threshold counts).
async fn pairs_with_votes_after(db: &Db, campaign_id: i64, cursor: i64) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(DISTINCT c.pair_id) FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
         WHERE c.campaign_id = $1 AND c.seq > $2 AND p.is_gold = 0",
    )
    .bind(campaign_id)
    .bind(cursor)
    .fetch_one(&db.read)
    .await?)
}

/// Checks every schedule once: starts the runs that are due.
pub async fn run_due_schedules(state: &AppState) -> ApiResult<()> {
    for schedule in &state.config.schedules {
        let runs = list_runs(&state.db, schedule.campaign).await?;
        if runs.iter().any(|r| r.status == "running") {
            continue;
        }
        let last_cursor = runs.iter().find(|r| r.status == "succeeded").map_or(0, |r| r.data_cursor);
        if let Some(threshold) = schedule.min_new_pairs {
            let current = current_cursor(&state.db, schedule.campaign).await?;
            // A run that failed on these very votes would fail again: wait for new ones.
            let failed_on_same_data = runs.first().is_some_and(|r| r.status == "failed" && r.data_cursor >= current);
            if !failed_on_same_data
                && pairs_with_votes_after(&state.db, schedule.campaign, last_cursor).await? >= threshold
            {
                start_run(state, schedule.campaign, schedule.spec.clone(), "threshold").await?;
                continue;
            }
        }
        if let Some(at) = &schedule.daily_at {
            let (hour, minute) =
                parse_hh_mm(at).ok_or_else(|| ApiError::bad_request(format!("daily_at: `{at}` is not HH:MM")))?;
            let now = now_ms();
            let today = now - now.rem_euclid(86_400_000);
            let due = today + (hour * 60 + minute) * 60_000;
            let ran_today = runs.iter().any(|r| r.trigger == "daily" && r.started_at >= due);
            if now >= due && !ran_today {
                start_run(state, schedule.campaign, schedule.spec.clone(), "daily").await?;
            }
        }
    }
    Ok(())
}

async fn current_cursor(db: &Db, campaign_id: i64) -> ApiResult<i64> {
    Ok(sqlx::query_scalar("SELECT vote_seq FROM campaigns WHERE id = $1").bind(campaign_id).fetch_one(&db.read).await?)
}

pub fn parse_hh_mm(text: &str) -> Option<(i64, i64)> {
    let (h, m) = text.split_once(':')?;
    let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
}

/// The scheduler: checks the schedules every `schedule_check_seconds` until the server stops.
pub async fn scheduler(state: AppState) {
    if state.config.schedules.is_empty() {
        return;
    }
    loop {
        if let Err(error) = run_due_schedules(&state).await {
            tracing::warn!(%error, "checking training schedules");
        }
        tokio::time::sleep(Duration::from_secs(state.config.schedule_check_seconds.max(1))).await;
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns/{id}/runs", get(list_handler).post(start_handler))
        .route("/api/v1/runs/{id}", get(get_handler))
        .route("/api/v1/runs/{id}/cancel", post(cancel_handler))
        .route("/api/v1/runs/{id}/files/{name}", get(file_handler))
}

/// What a run's page offers for download, relative to the run folder.
pub const RUN_FILES: [&str; 6] = [
    "data.jsonl",
    "trainer.log",
    "out/metrics.jsonl",
    "out/adapter_config.json",
    "out/adapter_model.safetensors",
    "out/reward_head.safetensors",
];

/// Downloads one of a run's files (`name` is one of [`RUN_FILES`] with `/` written as `~`).
async fn file_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath((id, name)): ApiPath<(i64, String)>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let name = name.replace('~', "/");
    if !RUN_FILES.contains(&name.as_str()) {
        return Err(ApiError::NotFound(format!("file {name} of run {id}")));
    }
    let run = get_run(&state.db, id).await?;
    let path = Path::new(&run.output_dir).join(&name);
    let file =
        tokio::fs::File::open(&path).await.map_err(|_| ApiError::NotFound(format!("file {name} of run {id}")))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let download = name.rsplit('/').next().unwrap_or("file").to_string();
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"run-{id}-{download}\"")),
        ],
        body,
    )
        .into_response())
}

async fn list_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Run>>> {
    get_campaign(&state.db, id, 0).await?;
    Ok(Json(list_runs(&state.db, id).await?))
}

async fn start_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(spec): ApiJson<RunSpec>,
) -> ApiResult<(axum::http::StatusCode, Json<Run>)> {
    Ok((axum::http::StatusCode::CREATED, Json(start_run(&state, id, spec, "manual").await?)))
}

/// A run with its metric lines.
async fn get_handler(State(state): State<AppState>, _: AdminUser, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Value>> {
    let run = get_run(&state.db, id).await?;
    let metrics = run_metrics(&state.db, id).await?;
    let mut body = serde_json::to_value(run).map_err(anyhow::Error::from)?;
    body["metrics"] = Value::Array(metrics);
    Ok(Json(body))
}

async fn cancel_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Run>> {
    let run = get_run(&state.db, id).await?;
    if run.status != "running" {
        return Err(ApiError::conflict("run_finished", format!("run {id} is {}", run.status)));
    }
    let switch = state.runs.cancel.lock().expect("run registry").remove(&id);
    match switch {
        Some(switch) => {
            let _ = switch.send(());
        }
        // Running in the database but not watched here: its server went away.
        None => finish(&state.db, id, "interrupted", Some("not watched by this server".into()), None).await?,
    }
    for _ in 0..100 {
        let run = get_run(&state.db, id).await?;
        if run.status != "running" {
            return Ok(Json(run));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get_run(&state.db, id).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::parse_hh_mm;

    #[test]
    fn daily_times_parse() {
        assert_eq!(parse_hh_mm("02:00"), Some((2, 0)));
        assert_eq!(parse_hh_mm("23:59"), Some((23, 59)));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("2am"), None);
    }
}
