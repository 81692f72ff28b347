//! Server configuration: an optional TOML file overlaid by environment variables.
//!
//! Precedence (highest first): command-line flags, `PAIRWISE_*`/`DATABASE_URL` environment
//! variables, the TOML file named by `--config` or `PAIRWISE_CONFIG`, built-in defaults.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

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
        }
    }
}

impl Config {
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
        Ok(config)
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
        if let Some(v) = var("PAIRWISE_SITE_ROOT") {
            self.site_root = v;
        }
        if let Some(v) = var("PAIRWISE_LOGIN_ATTEMPTS_PER_MINUTE") {
            self.login_attempts_per_minute =
                v.parse().context("PAIRWISE_LOGIN_ATTEMPTS_PER_MINUTE must be an integer")?;
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
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("bnid = \"x\"").unwrap_err();
        assert!(err.to_string().contains("bnid"), "{err}");
    }
}
