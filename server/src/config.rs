//! Server configuration: an optional TOML file overlaid by environment variables.
//!
//! Precedence (highest first): command-line flags, `PAIRWISE_*`/`DATABASE_URL` environment
//! variables, the TOML file named by `--config` or `PAIRWISE_CONFIG`, built-in defaults.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::runs::check_spec;
use crate::runs::schedule::{Schedule, parse_hh_mm};
use crate::store::DbSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://pairwise.db` (default) or `postgres://user@host/db`.
    pub database_url: String,
    /// Address the HTTP server listens on.
    pub bind: String,
    /// Secret mixed into rater pseudonyms of raw exports. Set it in production so
    /// pseudonyms cannot be reversed by hashing user ids.
    pub secret: String,
    /// Lifetime of a login session.
    pub session_hours: i64,
    /// Mark the session cookie `Secure` (set when served over HTTPS).
    pub cookie_secure: bool,
    /// Largest accepted import body in bytes.
    pub max_import_bytes: usize,
    /// SQLite `synchronous` pragma: `full` (an acknowledged vote survives power loss) or
    /// `normal` (survives a crash of the process; faster).
    pub sqlite_synchronous: String,
    /// Connections in the (read) pool.
    pub max_connections: u32,
    /// Login attempts allowed per username and per client address per minute.
    pub login_attempts_per_minute: u32,
    /// The built web assets (`pkg/pairwise.js`, `pkg/pairwise_bg.wasm`, `pkg/pairwise.css`),
    /// written by `scripts/build-site.sh`.
    pub site_root: String,
    /// The trainer the server runs for training runs (a path, or a name on PATH).
    pub trainer_command: String,
    /// Where training runs keep their data snapshot, log and outputs (`run-ID/`).
    pub runs_dir: String,
    /// Seconds between two looks at the schedules.
    pub schedule_check_seconds: u64,
    /// Seconds between two heartbeats of a running training run. A run whose server misses
    /// three (it died) is marked interrupted by another server on the same database.
    pub run_heartbeat_seconds: u64,
    /// When set, `GET /metrics` asks for `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// A `pairwise-train serve` started with `--admin-key`, e.g. `http://127.0.0.1:8081`:
    /// runs with `join_arena` register their adapter there and join an arena campaign.
    pub serve_url: Option<String>,
    /// Its `--admin-key`.
    pub serve_admin_key: Option<String>,
    /// Its `--api-key`, if it has one (sent by the contenders that runs add).
    pub serve_api_key: Option<String>,
    /// Training schedules (`[[schedules]]` in the TOML file).
    pub schedules: Vec<Schedule>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://pairwise.db".into(),
            bind: "127.0.0.1:3000".into(),
            secret: "pairwise-dev-secret-change-me".into(),
            session_hours: 24 * 7,
            cookie_secure: false,
            max_import_bytes: 64 * 1024 * 1024,
            sqlite_synchronous: "full".into(),
            max_connections: 16,
            login_attempts_per_minute: 10,
            site_root: "target/site".into(),
            trainer_command: "pairwise-train".into(),
            runs_dir: "runs".into(),
            schedule_check_seconds: 60,
            run_heartbeat_seconds: 5,
            metrics_token: None,
            serve_url: None,
            serve_admin_key: None,
            serve_api_key: None,
            schedules: Vec::new(),
        }
    }
}

impl Config {
    /// The part of the settings the store connects with.
    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            url: self.database_url.clone(),
            max_connections: self.max_connections,
            sqlite_synchronous: self.sqlite_synchronous.clone(),
        }
    }

    /// Loads the TOML file (if any), then applies environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let file = file.map(Path::to_path_buf).or_else(|| std::env::var_os("PAIRWISE_CONFIG").map(Into::into));
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.check_schedules()?;
        Ok(config)
    }

    /// A schedule that could never fire is a configuration error, not a silent no-op.
    fn check_schedules(&self) -> anyhow::Result<()> {
        for (i, schedule) in self.schedules.iter().enumerate() {
            let name = format!("schedules[{i}] (campaign {})", schedule.campaign);
            check_spec(&schedule.spec).map_err(|problem| anyhow::anyhow!("{name}: {problem}"))?;
            anyhow::ensure!(
                schedule.daily_at.is_some() || schedule.min_new_pairs.is_some(),
                "{name}: set daily_at (\"HH:MM\", UTC) and/or min_new_pairs"
            );
            if let Some(at) = &schedule.daily_at {
                anyhow::ensure!(parse_hh_mm(at).is_some(), "{name}: daily_at {at:?} is not HH:MM");
            }
        }
        Ok(())
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = var("PAIRWISE_BIND") {
            self.bind = v;
        }
        if let Some(v) = var("PAIRWISE_SECRET") {
            self.secret = v;
        }
        if let Some(v) = var("PAIRWISE_SESSION_HOURS") {
            self.session_hours = v.parse().context("PAIRWISE_SESSION_HOURS must be an integer")?;
        }
        if let Some(v) = var("PAIRWISE_COOKIE_SECURE") {
            self.cookie_secure = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("PAIRWISE_MAX_IMPORT_BYTES") {
            self.max_import_bytes = v.parse().context("PAIRWISE_MAX_IMPORT_BYTES must be an integer")?;
        }
        if let Some(v) = var("PAIRWISE_SQLITE_SYNCHRONOUS") {
            self.sqlite_synchronous = v;
        }
        if let Some(v) = var("PAIRWISE_MAX_CONNECTIONS") {
            self.max_connections = v.parse().context("PAIRWISE_MAX_CONNECTIONS must be an integer")?;
        }
        if let Some(v) = var("PAIRWISE_TRAINER_COMMAND") {
            self.trainer_command = v;
        }
        if let Some(v) = var("PAIRWISE_RUNS_DIR") {
            self.runs_dir = v;
        }
        if let Some(v) = var("PAIRWISE_SITE_ROOT") {
            self.site_root = v;
        }
        if let Some(v) = var("PAIRWISE_LOGIN_ATTEMPTS_PER_MINUTE") {
            self.login_attempts_per_minute =
                v.parse().context("PAIRWISE_LOGIN_ATTEMPTS_PER_MINUTE must be an integer")?;
        }
        if let Some(v) = var("PAIRWISE_RUN_HEARTBEAT_SECONDS") {
            self.run_heartbeat_seconds = v.parse().context("PAIRWISE_RUN_HEARTBEAT_SECONDS must be an integer")?;
        }
        if let Some(v) = var("PAIRWISE_SCHEDULE_CHECK_SECONDS") {
            self.schedule_check_seconds = v.parse().context("PAIRWISE_SCHEDULE_CHECK_SECONDS must be an integer")?;
        }
        if let Some(v) = var("PAIRWISE_METRICS_TOKEN") {
            self.metrics_token = Some(v).filter(|t| !t.is_empty());
        }
        if let Some(v) = var("PAIRWISE_SERVE_URL") {
            self.serve_url = Some(v).filter(|t| !t.is_empty());
        }
        if let Some(v) = var("PAIRWISE_SERVE_ADMIN_KEY") {
            self.serve_admin_key = Some(v).filter(|t| !t.is_empty());
        }
        if let Some(v) = var("PAIRWISE_SERVE_API_KEY") {
            self.serve_api_key = Some(v).filter(|t| !t.is_empty());
        }
        if !matches!(self.sqlite_synchronous.as_str(), "full" | "normal") {
            anyhow::bail!("sqlite_synchronous must be `full` or `normal`, got `{}`", self.sqlite_synchronous);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_values() {
        let mut config: Config = toml::from_str("bind = \"0.0.0.0:8080\"\nsecret = \"s\"").unwrap();
        config.apply_env(|name| (name == "PAIRWISE_BIND").then(|| "127.0.0.1:9".to_string())).unwrap();
        assert_eq!(config.bind, "127.0.0.1:9");
        assert_eq!(config.secret, "s");
    }

    #[test]
    fn schedules_parse_and_bad_ones_are_refused() {
        let text = r#"
            [[schedules]]
            campaign = 1
            method = "dpo"
            model = "models/smollm2"
            args = ["--max-steps", "200"]
            daily_at = "02:00"

            [[schedules]]
            campaign = 2
            method = "reward"
            model = "models/smollm2"
            min_new_pairs = 500
            aspect = "honesty"

            [[schedules]]
            campaign = 2
            method = "rlhf"
            model = "models/smollm2"
            min_new_pairs = 500
            next_round = { responses = 2, baseline_responses = 1, args = ["--max-new-tokens", "64"] }
        "#;
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.schedules.len(), 3);
        let next = config.schedules[2].spec.next_round.as_ref().unwrap();
        assert_eq!((next.responses, next.baseline_responses), (2, 1));
        assert_eq!(config.schedules[0].spec.args, ["--max-steps", "200"]);
        assert_eq!(config.schedules[1].min_new_pairs, Some(500));
        assert_eq!(config.schedules[1].spec.aspect.as_deref(), Some("honesty"));
        config.check_schedules().unwrap();
        let never: Config = toml::from_str("[[schedules]]\ncampaign = 1\nmethod = \"dpo\"\nmodel = \"m\"").unwrap();
        assert!(never.check_schedules().unwrap_err().to_string().contains("daily_at"));
        let bad_time: Config =
            toml::from_str("[[schedules]]\ncampaign = 1\nmethod = \"dpo\"\nmodel = \"m\"\ndaily_at = \"2am\"").unwrap();
        assert!(bad_time.check_schedules().unwrap_err().to_string().contains("2am"));
        let no_policy: Config = toml::from_str(
            "[[schedules]]\ncampaign = 1\nmethod = \"reward\"\nmodel = \"m\"\nmin_new_pairs = 1\nnext_round = {}",
        )
        .unwrap();
        assert!(no_policy.check_schedules().unwrap_err().to_string().contains("next_round"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("bnid = \"x\"").unwrap_err();
        assert!(err.to_string().contains("bnid"), "{err}");
    }
}
