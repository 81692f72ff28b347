//! The typed state every handler receives.

use std::sync::Arc;

use crate::accounts::limiter::LoginLimiter;
use crate::arena::ServeEndpoint;
use crate::arena::contend::Live;
use crate::cluster::instance_name;
use crate::config::Config;
use crate::runs::supervisor::{RunSettings, Supervisor};
use crate::store::Db;
use crate::votes::Sequencer;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub login_limiter: Arc<LoginLimiter>,
    /// Starts, watches and cancels this process's training runs.
    pub runs: Supervisor,
    /// This server process's name among the servers sharing the database.
    pub instance: Arc<str>,
    /// Numbers this server's new votes (Postgres).
    pub sequencer: Sequencer,
    /// The arena battles this server is generating, and its client for contenders.
    pub live: Live,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> AppState {
        let limiter = LoginLimiter::new(config.login_attempts_per_minute);
        let settings = RunSettings {
            trainer_command: config.trainer_command.clone(),
            runs_dir: config.runs_dir.clone(),
            secret: config.secret.clone(),
            heartbeat_seconds: config.run_heartbeat_seconds,
            serve: config.serve_url.clone().map(|url| ServeEndpoint {
                url,
                admin_key: config.serve_admin_key.clone(),
                api_key: config.serve_api_key.clone(),
            }),
        };
        let instance = instance_name();
        let runs = Supervisor::new(db.clone(), settings, &instance);
        AppState {
            sequencer: Sequencer::new(db.clone()),
            db,
            config: Arc::new(config),
            login_limiter: Arc::new(limiter),
            runs,
            instance: instance.into(),
            live: Live::new(),
        }
    }
}
