//! Training runs: the server starts `pairwise-train` as child processes (so a crash or an
//! out-of-memory kill in training never takes the server down), on a snapshot of the
//! campaign's aggregated votes, streams the trainer's `metrics.jsonl` into the database while
//! it runs, and records the outcome and the adapter's checksum. A run is a sequence of
//! phases, one child process each: `reward` or `dpo`; for `rlhf` a reward model and then
//! the policy against it; and, when asked, `generate` + `import`: the hand-off to the next
//! round, where the new adapter samples fresh responses for the campaign's prompts into a new
//! campaign. Each run keeps its lineage: the vote cursor and SHA-256 of the data it saw, the
//! raters behind those votes and the guidelines version. Runs start by hand (API) or from the
//! schedules in the server config ("daily at HH:MM", "when N more pairs are aggregated since
//! the last run"); one run per campaign at a time; runs cut off by a server restart are marked
//! `interrupted`.

use std::collections::HashMap;
use std::ffi::OsString;
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
use crate::campaigns::{CampaignStatus, CampaignUpdate, NewCampaign, create_campaign, get_campaign, update_campaign};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::export::{ExportParams, Format, RaterIds, start_export};
use crate::import::{PairingOptions, import_jsonl};
use crate::state::AppState;

/// What to train, from the API or a schedule.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// `reward`, `dpo` or `rlhf` (a reward model, then the policy optimised against it).
    pub method: String,
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

impl RunSpec {
    /// The first problem with the spec, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.method.as_str(), "reward" | "dpo" | "rlhf") {
            return Err(format!("method: `{}` is not reward, dpo or rlhf", self.method));
        }
        if self.model.trim().is_empty() {
            return Err("model: a model folder is required".into());
        }
        if !self.reward_args.is_empty() && self.method != "rlhf" {
            return Err("reward_args: only an rlhf run has a reward-model step".into());
        }
        if let Some(next) = &self.next_round {
            if self.method == "reward" {
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
}

/// A schedule from the server config (`[[schedules]]`): fires daily at `daily_at` (UTC
/// `HH:MM`) and/or once `min_new_pairs` pairs have been aggregated (got their full overlap of
/// votes) since the last successful run of the same method.
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
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// Cancel switches of the runs this server process is watching.
#[derive(Default)]
pub struct RunRegistry {
    cancel: Mutex<HashMap<i64, oneshot::Sender<()>>>,
}

const RUN_COLUMNS: &str = "id, campaign_id, method, config, trigger, status, phase, data_cursor, data_rows, \
     data_sha256, guidelines_version, raters, output_dir, artifact_sha256, exit_reason, next_campaign_id, \
     started_at, finished_at";

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
        phase: row.try_get("phase")?,
        data_cursor: row.try_get("data_cursor")?,
        data_rows: row.try_get("data_rows")?,
        data_sha256: row.try_get("data_sha256")?,
        guidelines_version: row.try_get("guidelines_version")?,
        raters: serde_json::from_value(json("raters")?).map_err(anyhow::Error::from)?,
        output_dir: row.try_get("output_dir")?,
        artifact_sha256: row.try_get("artifact_sha256")?,
        exit_reason: row.try_get("exit_reason")?,
        next_campaign_id: row.try_get("next_campaign_id")?,
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

/// The metric lines a run has logged so far, in order, each with the `phase` that wrote it.
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

/// Starts a run: snapshot of the data, the run record, and the watcher that runs its phases.
pub async fn start_run(state: &AppState, campaign_id: i64, spec: RunSpec, trigger: &str) -> ApiResult<Run> {
    spec.check().map_err(ApiError::bad_request)?;
    let campaign = get_campaign(&state.db, campaign_id, 0).await?;
    let config = json!({"model": spec.model, "args": spec.args, "reward_args": spec.reward_args,
                        "next_round": spec.next_round,
                        "export": {"format": "trl", "min_votes": 1, "include_gold": false}});
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
    match snapshot(state, id, campaign_id, &spec, &dir).await {
        Ok(()) => {
            let (cancel_tx, cancel_rx) = oneshot::channel();
            state.runs.cancel.lock().expect("run registry").insert(id, cancel_tx);
            tokio::spawn(watch(state.clone(), id, campaign_id, spec, dir, cancel_rx));
        }
        Err(error) => finish(&state.db, id, "failed", Some(format!("could not start: {error}")), None).await?,
    }
    get_run(&state.db, id).await
}

/// Writes the data snapshot (and, when a phase samples from the policy, the campaign's
/// prompts) into the run folder and records it on the run.
async fn snapshot(state: &AppState, id: i64, campaign_id: i64, spec: &RunSpec, dir: &Path) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let (cursor, mut chunks) = start_export(&state.db, campaign_id, export_policy(), state.config.secret.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut file = tokio::fs::File::create(dir.join("data.jsonl")).await?;
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
    if spec.method == "rlhf" || spec.next_round.is_some() {
        write_prompts(&state.db, campaign_id, &dir.join("prompts.jsonl")).await?;
    }
    Ok(())
}

/// The campaign's prompts (those of its regular pairs), in the trainer's prompt JSONL.
async fn write_prompts(db: &Db, campaign_id: i64, path: &Path) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT pr.id, pr.text, pr.messages FROM prompts pr WHERE pr.id IN \
         (SELECT p.prompt_id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 0) ORDER BY pr.id",
    )
    .bind(campaign_id)
    .fetch_all(&db.read)
    .await?;
    let mut out = String::new();
    for row in &rows {
        let text: String = row.try_get("text")?;
        let messages: Value = serde_json::from_str(&row.try_get::<String, _>("messages")?)?;
        out.push_str(&json!({"prompt": text, "messages": messages}).to_string());
        out.push('\n');
    }
    tokio::fs::write(path, out).await?;
    Ok(())
}

/// One child process of a run: `pairwise-train <args>`, whose metrics (if any) are streamed.
struct Phase {
    name: &'static str,
    args: Vec<OsString>,
    metrics: Option<PathBuf>,
}

/// The phases of a run, in order, with the folders they read and write under `dir`.
fn phases(id: i64, spec: &RunSpec, dir: &Path) -> Vec<Phase> {
    let os = |items: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
        items.iter().map(|i| i.as_ref().to_os_string()).collect()
    };
    let extra = |args: &[String]| args.iter().map(OsString::from).collect::<Vec<_>>();
    let (data, prompts, out) = (dir.join("data.jsonl"), dir.join("prompts.jsonl"), dir.join("out"));
    let train = |method: &'static str, output: PathBuf, args: &[String]| Phase {
        name: method,
        args: [os(&[&method, &"--model", &spec.model, &"--data", &data, &"--output", &output]), extra(args)].concat(),
        metrics: Some(output.join("metrics.jsonl")),
    };
    let mut phases = Vec::new();
    if spec.method == "rlhf" {
        let reward = dir.join("reward");
        phases.push(train("reward", reward.clone(), &spec.reward_args));
        let fixed = os(&[
            &"rlhf",
            &"--model",
            &spec.model,
            &"--prompts",
            &prompts,
            &"--reward-adapter",
            &reward,
            &"--output",
            &out,
        ]);
        phases.push(Phase {
            name: "rlhf",
            args: [fixed, extra(&spec.args)].concat(),
            metrics: Some(out.join("metrics.jsonl")),
        });
    } else {
        let method = if spec.method == "dpo" { "dpo" } else { "reward" };
        phases.push(train(method, out.clone(), &spec.args));
    }
    if let Some(next) = &spec.next_round {
        let (responses, baseline, seed) =
            (next.responses.to_string(), next.baseline_responses.to_string(), id.to_string());
        let checkpoint = format!("run-{id}");
        let fixed = os(&[
            &"generate",
            &"--model",
            &spec.model,
            &"--adapter",
            &out,
            &"--prompts",
            &prompts,
            &"--num-responses",
            &responses,
            &"--baseline-responses",
            &baseline,
            &"--checkpoint",
            &checkpoint,
            &"--seed",
            &seed,
            &"--out",
            &dir.join("next_round.jsonl"),
        ]);
        phases.push(Phase { name: "generate", args: [fixed, extra(&next.args)].concat(), metrics: None });
    }
    phases
}

/// How a phase's child process ended.
enum Outcome {
    Succeeded,
    Cancelled,
    Failed(String),
}

/// Follows a run to its end: runs its phases one child process at a time, copying new metric
/// lines into the database every half second and killing the child on cancel; then hands
/// off to the next round if asked, and records the outcome.
async fn watch(
    state: AppState,
    id: i64,
    campaign_id: i64,
    spec: RunSpec,
    dir: PathBuf,
    mut cancel: oneshot::Receiver<()>,
) {
    let mut lines = 0usize;
    let mut outcome = Outcome::Succeeded;
    for phase in phases(id, &spec, &dir) {
        set_phase(&state.db, id, phase.name).await;
        outcome = run_phase(&state, id, &dir, &phase, &mut lines, &mut cancel).await;
        if !matches!(outcome, Outcome::Succeeded) {
            break;
        }
    }
    let trained = dir.join("out").join("adapter_model.safetensors").exists()
        || dir.join("out").join("model.safetensors").exists();
    if matches!(outcome, Outcome::Succeeded) && spec.next_round.is_some() {
        set_phase(&state.db, id, "import").await;
        if let Err(error) = hand_off(&state.db, id, campaign_id, &dir.join("next_round.jsonl")).await {
            outcome = Outcome::Failed(format!("next round: {error}"));
        }
    }
    state.runs.cancel.lock().expect("run registry").remove(&id);
    let (status, reason) = match outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Cancelled => ("cancelled", Some("cancelled by an admin".to_string())),
        Outcome::Failed(reason) => ("failed", Some(reason)),
    };
    // The adapter is an artifact as soon as training wrote it, even if the hand-off failed.
    let artifact = if trained && status != "cancelled" { artifact_checksum(&dir.join("out")) } else { None };
    if let Err(error) = finish(&state.db, id, status, reason, artifact).await {
        tracing::error!(run = id, %error, "recording the end of a training run");
    }
}

async fn set_phase(db: &Db, id: i64, phase: &str) {
    let update =
        sqlx::query("UPDATE training_runs SET phase = $1 WHERE id = $2").bind(phase).bind(id).execute(&db.write);
    if let Err(error) = update.await {
        tracing::warn!(run = id, %error, "recording a run's phase");
    }
}

/// Runs one phase's child process to its end; `lines` counts the metric lines stored so far
/// over all phases (they continue one numbering).
async fn run_phase(
    state: &AppState,
    id: i64,
    dir: &Path,
    phase: &Phase,
    lines: &mut usize,
    cancel: &mut oneshot::Receiver<()>,
) -> Outcome {
    let command = &state.config.trainer_command;
    let log = match open_log(dir, command, &phase.args) {
        Ok(log) => log,
        Err(error) => return Outcome::Failed(format!("could not open the run log: {error}")),
    };
    let spawned = log.try_clone().and_then(|out| {
        tokio::process::Command::new(command)
            .args(&phase.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(format!("could not start: starting `{command}`: {error}")),
    };
    let first_line = *lines;
    let mut stored = 0usize;
    let ingest = |stored: usize| {
        let db = state.db.clone();
        async move {
            match &phase.metrics {
                Some(path) => ingest_metrics(&db, id, phase.name, path, first_line, stored).await.unwrap_or(stored),
                None => stored,
            }
        }
    };
    let mut cancelled = false;
    let exit = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut *cancel, if !cancelled => {
                cancelled = true;
                let _ = child.start_kill();
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => stored = ingest(stored).await,
        }
    };
    stored = ingest(stored).await;
    *lines = first_line + stored;
    match exit {
        _ if cancelled => Outcome::Cancelled,
        Ok(code) if code.success() => Outcome::Succeeded,
        Ok(code) => Outcome::Failed(format!("{} exited with {code}: {}", phase.name, last_log_line(dir))),
        Err(e) => Outcome::Failed(format!("waiting for the trainer: {e}")),
    }
}

/// Appends the command line of a phase to the run's `trainer.log`, which then takes its output.
fn open_log(dir: &Path, command: &str, args: &[OsString]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("trainer.log"))?;
    let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    writeln!(log, "$ {command} {}", args.join(" "))?;
    Ok(log)
}

/// Stores the complete metric lines of `path` past the first `stored`, tagged with `phase`
/// and numbered from `first_line`. Returns how many of the file's lines are stored now.
async fn ingest_metrics(
    db: &Db,
    id: i64,
    phase: &str,
    path: &Path,
    first_line: usize,
    stored: usize,
) -> anyhow::Result<usize> {
    let Ok(text) = tokio::fs::read_to_string(path).await else { return Ok(stored) };
    // Only complete lines: the trainer may be half-way through writing the last one.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let lines: Vec<&str> = complete.lines().collect();
    for (i, line) in lines.iter().enumerate().skip(stored) {
        let mut value: Value = serde_json::from_str(line)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("phase".into(), phase.into());
        }
        sqlx::query("INSERT INTO run_metrics (run_id, line, metrics) VALUES ($1, $2, $3)")
            .bind(id)
            .bind((first_line + i) as i64)
            .bind(value.to_string())
            .execute(&db.write)
            .await?;
    }
    Ok(lines.len().max(stored))
}

/// The next round: a new campaign with the settings of the run's campaign (its name gets
/// ` · round N`), the generated responses imported into it, made active, and linked both
/// ways (campaign → run that generated it, run → campaign). A failed import leaves no
/// half-filled campaign behind.
async fn hand_off(db: &Db, id: i64, campaign_id: i64, generated: &Path) -> anyhow::Result<i64> {
    let data = tokio::fs::read(generated).await?;
    let parent = get_campaign(db, campaign_id, 0).await?;
    let name = next_round_name(&parent.name);
    let mut new = NewCampaign {
        name: name.clone(),
        guidelines: parent.guidelines.clone(),
        overlap: parent.overlap,
        // Gold pairs are not copied: the new round starts without checks of its own.
        gold_rate: 0.0,
        status: CampaignStatus::Draft,
        lease_seconds: parent.lease_seconds,
        free_votes: parent.free_votes,
    };
    let campaign = match create_campaign(db, &new).await {
        Err(ApiError::Conflict { .. }) => {
            new.name = format!("{name} (run {id})");
            create_campaign(db, &new).await?
        }
        other => other?,
    };
    // Linked before the import, so even a draft left by a crash says where it came from.
    sqlx::query("UPDATE campaigns SET source_run_id = $1 WHERE id = $2")
        .bind(id)
        .bind(campaign.id)
        .execute(&db.write)
        .await?;
    if let Err(error) = import_jsonl(db, campaign.id, &data, &PairingOptions::default()).await {
        delete_empty_campaign(db, campaign.id).await;
        return Err(error.into());
    }
    update_campaign(db, campaign.id, &CampaignUpdate { status: Some(CampaignStatus::Active), ..Default::default() })
        .await?;
    sqlx::query("UPDATE training_runs SET next_campaign_id = $1 WHERE id = $2")
        .bind(campaign.id)
        .bind(id)
        .execute(&db.write)
        .await?;
    Ok(campaign.id)
}

async fn delete_empty_campaign(db: &Db, campaign_id: i64) {
    // Nothing references a campaign whose import was rolled back.
    let deleted = sqlx::query("DELETE FROM campaigns WHERE id = $1").bind(campaign_id).execute(&db.write).await;
    if let Err(error) = deleted {
        tracing::warn!(campaign = campaign_id, %error, "removing the campaign of a failed hand-off");
    }
}

/// `Name` → `Name · round 2`, `Name · round 2` → `Name · round 3`.
pub fn next_round_name(name: &str) -> String {
    let (base, round) = match name.rsplit_once(" · round ") {
        Some((base, n)) if n.parse::<u32>().is_ok() => (base, n.parse::<u32>().unwrap_or(1)),
        _ => (name, 1),
    };
    format!("{base} · round {}", round + 1)
}

/// The error message of the phase that ran last (its `Error: …` line before any backtrace,
/// or a command-line parsing `error: …`), or else the last line it logged.
fn last_log_line(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("trainer.log")).unwrap_or_default();
    // The log holds every phase, each after its `$ command` line.
    let phase = log.rfind("\n$ ").map_or(log.as_str(), |start| &log[start + 1..]);
    let output = if phase.starts_with("$ ") { phase.split_once('\n').map_or("", |(_, rest)| rest) } else { phase };
    output
        .lines()
        .find(|l| l.starts_with("Error:") || l.starts_with("error:"))
        .or_else(|| output.lines().rev().find(|l| !l.trim().is_empty()))
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

/// Newly aggregated pairs: pairs of the campaign that have all the votes the campaign's
/// overlap asks for, at least one of them after `cursor` (what the threshold counts). A
/// pair still collecting votes does not count yet, so a run does not fire half-way through
/// a pair's raters.
async fn aggregated_pairs_after(db: &Db, campaign_id: i64, cursor: i64) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(DISTINCT c.pair_id) FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
         JOIN campaigns k ON k.id = p.campaign_id \
         WHERE c.campaign_id = $1 AND c.seq > $2 AND p.is_gold = 0 AND p.vote_count >= k.overlap",
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
        // Each method counts from its own last run: a reward schedule and a DPO schedule on
        // one campaign both fire on the same new votes.
        let runs: Vec<&Run> = runs.iter().filter(|r| r.method == schedule.spec.method).collect();
        let last_cursor = runs.iter().find(|r| r.status == "succeeded").map_or(0, |r| r.data_cursor);
        if let Some(threshold) = schedule.min_new_pairs {
            let current = current_cursor(&state.db, schedule.campaign).await?;
            // A run that failed on these very votes would fail again: wait for new ones.
            let failed_on_same_data = runs.first().is_some_and(|r| r.status == "failed" && r.data_cursor >= current);
            if !failed_on_same_data
                && aggregated_pairs_after(&state.db, schedule.campaign, last_cursor).await? >= threshold
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

/// A run with its metric lines and the files it has written (of [`RUN_FILES`]).
async fn get_handler(State(state): State<AppState>, _: AdminUser, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Value>> {
    let run = get_run(&state.db, id).await?;
    let metrics = run_metrics(&state.db, id).await?;
    let files: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|name| !run.output_dir.is_empty() && Path::new(&run.output_dir).join(name).is_file())
        .collect();
    let mut body = serde_json::to_value(run).map_err(anyhow::Error::from)?;
    body["metrics"] = Value::Array(metrics);
    body["files"] = json!(files);
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
    use super::{next_round_name, parse_hh_mm};

    #[test]
    fn next_rounds_are_numbered() {
        assert_eq!(next_round_name("Helpfulness"), "Helpfulness · round 2");
        assert_eq!(next_round_name("Helpfulness · round 2"), "Helpfulness · round 3");
        assert_eq!(next_round_name("A · round two"), "A · round two · round 2");
    }

    #[test]
    fn daily_times_parse() {
        assert_eq!(parse_hh_mm("02:00"), Some((2, 0)));
        assert_eq!(parse_hh_mm("23:59"), Some((23, 59)));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("2am"), None);
    }
}
