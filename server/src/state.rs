//! The typed state every handler receives.

use std::sync::Arc;

use crate::auth::LoginLimiter;
use crate::config::Config;
use crate::db::Db;
use crate::runs::RunRegistry;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub login_limiter: Arc<LoginLimiter>,
    /// Training runs this process watches (to cancel them).
    pub runs: Arc<RunRegistry>,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> AppState {
        let limiter = LoginLimiter::new(config.login_attempts_per_minute);
        AppState { db, config: Arc::new(config), login_limiter: Arc::new(limiter), runs: Arc::default() }
    }
}
