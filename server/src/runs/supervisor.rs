//! The run supervisor: starts a run (data snapshot, record, one child process per phase),
//! streams each phase's metric lines into the database every half second, kills the child
//! on cancel, and records the outcome. It owns the cancel switches of the runs this server
//! process watches, and keeps them alive in the database: every `heartbeat_seconds` it
//! stamps them, passes on cancels asked of other servers, and marks the runs of servers
//! that stopped stamping theirs (they died) as interrupted.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pairwise_api::campaigns::CampaignKind;
use pairwise_api::export::{ExportParams, Format, InducedPairs, RaterIds};
use pairwise_api::runs::{Method, Run, RunSpec, RunStatus, Trigger};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::next_round::hand_off;
use super::{check_spec, finish, get_run, mark_interrupted};
use crate::arena::{ServeEndpoint, check_arena_campaign, join_arena};
use crate::args;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::export::start_export;
use crate::store::{Backend, Db, now_ms};

/// Where runs happen: the trainer to start and the folder runs write into.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The trainer (a path, or a name on PATH).
    pub trainer_command: String,
    /// Where each run keeps its data snapshot, log and outputs (`run-ID/`).
    pub runs_dir: String,
    /// Keys rater pseudonyms in the data snapshot.
    pub secret: String,
    /// Seconds between two heartbeats of a run; a run without one for three of them is
    /// taken to have lost its server.
    pub heartbeat_seconds: u64,
    /// The `pairwise-train serve` that runs with `join_arena` register their adapter with.
    pub serve: Option<ServeEndpoint>,
}

/// Starts and watches runs; cheap to clone (one per server process, shared).
#[derive(Clone)]
pub struct Supervisor {
    db: Db,
    settings: Arc<RunSettings>,
    /// This server's instance name, recorded on the runs it supervises.
    instance: Arc<str>,
    /// Cancel switches of the runs this process is watching.
    cancel: Arc<Mutex<HashMap<i64, oneshot::Sender<()>>>>,
}

impl Supervisor {
    pub fn new(db: Db, settings: RunSettings, instance: &str) -> Supervisor {
        Supervisor { db, settings: Arc::new(settings), instance: instance.into(), cancel: Arc::default() }
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.settings.heartbeat_seconds.max(1))
    }

    /// How old a heartbeat may get before its run counts as abandoned: three missed beats,
    /// so one slow database round trip does not condemn a live run.
    fn stale_after_ms(&self) -> i64 {
        3 * self.heartbeat().as_millis() as i64
    }

    /// At start-up on SQLite, where only one server can run: every run still `running` was
    /// left by the last one, so it is marked interrupted at once. (On Postgres other servers
    /// may be watching theirs right now; the heartbeat loop's first beat, started next,
    /// marks only the stale ones.)
    pub async fn reclaim_abandoned_runs(&self) -> ApiResult<u64> {
        match self.db.backend() {
            Backend::Sqlite => mark_interrupted(&self.db, i64::MAX).await,
            Backend::Postgres => Ok(0),
        }
    }

    /// The runs' heartbeat, until the server stops: stamps this server's runs, passes on the
    /// cancels other servers recorded for them, and marks runs whose server went silent as
    /// interrupted.
    pub async fn keep_alive(self) {
        loop {
            if let Err(error) = self.beat().await {
                tracing::warn!(%error, "training runs' heartbeat");
            }
            tokio::time::sleep(self.heartbeat()).await;
        }
    }

    async fn beat(&self) -> ApiResult<()> {
        let now = now_ms();
        // Every run this server recorded, including one still writing its data snapshot.
        self.db
            .execute(
                "UPDATE training_runs SET heartbeat_at = $1 WHERE supervisor = $2 AND status = 'running'",
                args![now, &*self.instance],
            )
            .await?;
        let watched: Vec<i64> = self.cancel.lock().expect("run registry").keys().copied().collect();
        for id in watched {
            let row = self
                .db
                .fetch_one("SELECT status, cancel_requested FROM training_runs WHERE id = $1", args![id])
                .await?;
            // Cancelled through another server, or already given up on by one (this server
            // was out of touch too long): either way the child must stop.
            if row.text("status")? != "running" || row.int("cancel_requested")? == 1 {
                let switch = self.cancel.lock().expect("run registry").remove(&id);
                if let Some(switch) = switch {
                    let _ = switch.send(());
                }
            }
        }
        match mark_interrupted(&self.db, now - self.stale_after_ms()).await? {
            0 => {}
            n => tracing::warn!(runs = n, "training runs whose server stopped sending heartbeats marked interrupted"),
        }
        Ok(())
    }

    /// Starts a run: snapshot of the data, the run record, and the watcher that runs its phases.
    pub async fn start(&self, campaign_id: i64, spec: RunSpec, trigger: Trigger) -> ApiResult<Run> {
        check_spec(&spec).map_err(ApiError::bad_request)?;
        let campaign = get_campaign(&self.db, campaign_id, 0).await?;
        let ranking = campaign.kind == CampaignKind::Ranking;
        let spec = if ranking { listwise(spec) } else { spec };
        if campaign.kind.single_response() && !matches!(spec.method, Method::Kto | Method::Sft) {
            return Err(ApiError::bad_request(format!(
                "method: `{}` trains on preferences between responses; a {} campaign rates one response at a \
                 time, so its runs are kto (desirable or not) or sft (corrections and well-rated responses)",
                spec.method.as_str(),
                campaign.kind.as_str()
            )));
        }
        if let Some(next) = &spec.next_round
            && ranking
            && next.responses + next.baseline_responses > crate::ranking::MAX_RANKED
        {
            return Err(ApiError::bad_request(format!(
                "next_round: a ranking campaign's next round ranks at most {} responses per prompt \
                 (responses + baseline_responses)",
                crate::ranking::MAX_RANKED
            )));
        }
        if let Some(aspect) = &spec.aspect
            && !campaign.aspects.iter().any(|a| &a.name == aspect)
        {
            let known: Vec<&str> = campaign.aspects.iter().map(|a| a.name.as_str()).collect();
            return Err(ApiError::bad_request(match known.is_empty() {
                true => format!("aspect: campaign {campaign_id} has no aspects to train on `{aspect}`"),
                false => {
                    format!("aspect: `{aspect}` is not an aspect of campaign {campaign_id} ({})", known.join(", "))
                }
            }));
        }
        if let Some(arena) = spec.join_arena {
            if self.settings.serve.is_none() {
                return Err(ApiError::bad_request(
                    "join_arena: this server has no pairwise-train serve to register the adapter with (config serve_url)",
                ));
            }
            check_arena_campaign(&self.db, arena).await.map_err(|e| match e {
                ApiError::NotFound(what) => ApiError::bad_request(format!("join_arena: {what} not found")),
                ApiError::Conflict { message, .. } => ApiError::bad_request(format!("join_arena: {message}")),
                other => other,
            })?;
        }
        let config = json!({"model": spec.model, "args": spec.args, "reward_args": spec.reward_args,
                            "next_round": spec.next_round, "join_arena": spec.join_arena,
                            "export": {"format": export_policy(&spec, ranking).format.as_str(), "min_votes": 1,
                                       "include_gold": false, "aspect": spec.aspect}});
        let args = args![
            campaign_id,
            spec.method.as_str(),
            config.to_string(),
            trigger.as_str(),
            campaign.guidelines_version,
            &*self.instance,
            now_ms()
        ];
        let insert = self
            .db
            .write_returning(
                "INSERT INTO training_runs (campaign_id, method, config, trigger, status, guidelines_version, output_dir, \
                 supervisor, heartbeat_at, started_at) VALUES ($1, $2, $3, $4, 'running', $5, '', $6, $7, $7) RETURNING id",
                args,
            )
            .await;
        let id = match insert {
            Ok(row) => row.int("id")?,
            Err(e) if e.is_unique_violation() => {
                return Err(ApiError::conflict(
                    "run_in_progress",
                    format!("campaign {campaign_id} already has a run in progress"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let dir = PathBuf::from(&self.settings.runs_dir).join(format!("run-{id}"));
        match self.snapshot(id, campaign_id, &spec, &dir, ranking).await {
            Ok(()) => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                self.cancel.lock().expect("run registry").insert(id, cancel_tx);
                tokio::spawn(self.clone().watch(id, campaign_id, spec, dir, cancel_rx));
            }
            Err(error) => {
                finish(&self.db, id, RunStatus::Failed, Some(format!("could not start: {error}")), None).await?
            }
        }
        get_run(&self.db, id).await
    }

    /// Writes the data snapshot (and, when a phase samples from the policy, the campaign's
    /// prompts) into the run folder and records it on the run.
    async fn snapshot(
        &self,
        id: i64,
        campaign_id: i64,
        spec: &RunSpec,
        dir: &Path,
        ranking: bool,
    ) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(dir).await?;
        let policy = export_policy(spec, ranking);
        let (cursor, mut chunks) = start_export(&self.db, campaign_id, policy.clone(), self.settings.secret.clone())
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
        let raters = self
            .db
            .fetch_all(
                "SELECT DISTINCT c.rater_id FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
                 WHERE c.campaign_id = $1 AND c.seq <= $2 AND p.is_gold = 0 ORDER BY c.rater_id",
                args![campaign_id, cursor],
            )
            .await?
            .iter()
            .map(|row| row.int("rater_id"))
            .collect::<Result<Vec<i64>, _>>()?;
        self.db
            .execute(
                "UPDATE training_runs SET data_cursor = $1, data_rows = $2, data_sha256 = $3, raters = $4, output_dir = $5 \
                 WHERE id = $6",
                args![cursor, rows, hex::encode(hash.finalize()), serde_json::to_string(&raters)?, dir.display().to_string(), id],
            )
            .await?;
        anyhow::ensure!(
            rows > 0,
            "campaign {campaign_id} has no aggregated pairs to train on yet ({} export)",
            policy.format.as_str()
        );
        if spec.method == Method::Rlhf || spec.next_round.is_some() {
            write_prompts(&self.db, campaign_id, &dir.join("prompts.jsonl")).await?;
        }
        Ok(())
    }

    /// Follows a run to its end: runs its phases one child process at a time, copying new metric
    /// lines into the database every half second and killing the child on cancel; then hands
    /// off to the next round if asked, and records the outcome.
    async fn watch(self, id: i64, campaign_id: i64, spec: RunSpec, dir: PathBuf, mut cancel: oneshot::Receiver<()>) {
        let mut lines = 0usize;
        let mut outcome = Outcome::Succeeded;
        for phase in phases(id, &spec, &dir) {
            set_phase(&self.db, id, phase.name).await;
            outcome = self.run_phase(id, &dir, &phase, &mut lines, &mut cancel).await;
            if !matches!(outcome, Outcome::Succeeded) {
                break;
            }
        }
        let trained = dir.join("out").join("adapter_model.safetensors").exists()
            || dir.join("out").join("model.safetensors").exists();
        if matches!(outcome, Outcome::Succeeded) && spec.next_round.is_some() {
            set_phase(&self.db, id, "import").await;
            if let Err(error) = hand_off(&self.db, id, campaign_id, &dir.join("next_round.jsonl")).await {
                outcome = Outcome::Failed(format!("next round: {error}"));
            }
        }
        if let (Outcome::Succeeded, Some(arena), Some(serve)) = (&outcome, spec.join_arena, &self.settings.serve) {
            set_phase(&self.db, id, "arena").await;
            if let Err(error) = join_arena(&self.db, serve, id, arena, &dir.join("out")).await {
                outcome = Outcome::Failed(format!("joining the arena: {error:#}"));
            }
        }
        self.cancel.lock().expect("run registry").remove(&id);
        let (status, reason) = match outcome {
            Outcome::Succeeded => (RunStatus::Succeeded, None),
            Outcome::Cancelled => (RunStatus::Cancelled, Some("cancelled by an admin".to_string())),
            Outcome::Failed(reason) => (RunStatus::Failed, Some(reason)),
        };
        // The adapter is an artifact as soon as training wrote it, even if the hand-off failed.
        let artifact =
            if trained && status != RunStatus::Cancelled { artifact_checksum(&dir.join("out")) } else { None };
        if let Err(error) = finish(&self.db, id, status, reason, artifact).await {
            tracing::error!(run = id, %error, "recording the end of a training run");
        }
    }

    /// Runs one phase's child process to its end; `lines` counts the metric lines stored so far
    /// over all phases (they continue one numbering).
    async fn run_phase(
        &self,
        id: i64,
        dir: &Path,
        phase: &Phase,
        lines: &mut usize,
        cancel: &mut oneshot::Receiver<()>,
    ) -> Outcome {
        let command = &self.settings.trainer_command;
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
            let db = self.db.clone();
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

    /// Cancels a running run and waits for its end to be recorded. A run another server
    /// supervises is cancelled through the database (that server's next heartbeat stops
    /// its child); one whose server went silent is marked interrupted at once.
    pub async fn cancel(&self, id: i64) -> ApiResult<Run> {
        let run = get_run(&self.db, id).await?;
        if run.status != RunStatus::Running {
            return Err(ApiError::conflict("run_finished", format!("run {id} is {}", run.status.as_str())));
        }
        let switch = self.cancel.lock().expect("run registry").remove(&id);
        let mut wait = Duration::from_secs(5);
        match switch {
            Some(switch) => {
                let _ = switch.send(());
            }
            None => {
                let heartbeat =
                    self.db.fetch_one("SELECT heartbeat_at FROM training_runs WHERE id = $1", args![id]).await?;
                if heartbeat.int("heartbeat_at")? >= now_ms() - self.stale_after_ms() {
                    self.db.execute("UPDATE training_runs SET cancel_requested = 1 WHERE id = $1", args![id]).await?;
                    wait += 2 * self.heartbeat();
                } else {
                    let reason = "its server stopped sending heartbeats".to_string();
                    finish(&self.db, id, RunStatus::Interrupted, Some(reason), None).await?;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            let run = get_run(&self.db, id).await?;
            if run.status != RunStatus::Running {
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        get_run(&self.db, id).await
    }
}

/// The export policy runs train on: every aggregated pair with a majority, gold left out, in
/// the format the method reads (`kto`: winners, losers and both-bad answers; `sft`: raters'
/// corrections, else winners; a ranking campaign's reward models and DPO: its rankings), by
/// the spec's aspect when it names one.
fn export_policy(spec: &RunSpec, ranking: bool) -> ExportParams {
    ExportParams {
        format: match (spec.method, ranking) {
            (Method::Kto, _) => Format::Kto,
            (Method::Sft, _) => Format::Sft,
            (Method::Reward | Method::Dpo | Method::Rlhf, true) => Format::Ranking,
            (Method::Reward | Method::Dpo | Method::Rlhf, false) => Format::Trl,
        },
        min_votes: 1,
        min_agreement: 0.0,
        since: 0,
        meta: true,
        include_gold: false,
        raters: RaterIds::Pseudonym,
        decisive: true,
        aspect: spec.aspect.clone(),
        pairs: InducedPairs::All,
        threshold: None,
    }
}

/// A run on a ranking campaign: its reward model (also RLHF's) and DPO train on whole
/// rankings with the Plackett–Luce loss (`--listwise true`, recorded in the run's arguments).
fn listwise(mut spec: RunSpec) -> RunSpec {
    let args = match spec.method {
        Method::Reward | Method::Dpo => &mut spec.args,
        Method::Rlhf => &mut spec.reward_args,
        Method::Kto | Method::Sft => return spec,
    };
    // An admin's own `--listwise …` stands; the trainer's boolean flags take a value.
    if !args.iter().any(|arg| arg == "--listwise" || arg.starts_with("--listwise=")) {
        args.extend(["--listwise".to_string(), "true".to_string()]);
    }
    spec
}

/// The campaign's prompts (those of its regular pairs), in the trainer's prompt JSONL.
async fn write_prompts(db: &Db, campaign_id: i64, path: &Path) -> anyhow::Result<()> {
    let rows = db
        .fetch_all(
            "SELECT pr.id, pr.text, pr.messages FROM prompts pr WHERE pr.id IN \
             (SELECT p.prompt_id FROM pairs p WHERE p.campaign_id = $1 AND p.is_gold = 0) ORDER BY pr.id",
            args![campaign_id],
        )
        .await?;
    let mut out = String::new();
    for row in &rows {
        let text = row.text("text")?;
        let messages: Value = serde_json::from_str(&row.text("messages")?)?;
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
    if spec.method == Method::Rlhf {
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
        let method = spec.method.as_str();
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

async fn set_phase(db: &Db, id: i64, phase: &str) {
    if let Err(error) = db.execute("UPDATE training_runs SET phase = $1 WHERE id = $2", args![phase, id]).await {
        tracing::warn!(run = id, %error, "recording a run's phase");
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
        db.execute(
            "INSERT INTO run_metrics (run_id, line, metrics) VALUES ($1, $2, $3)",
            args![id, (first_line + i) as i64, value.to_string()],
        )
        .await?;
    }
    Ok(lines.len().max(stored))
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
