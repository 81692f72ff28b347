//! Database access shared by every resource: connecting, migrating, transactions and the
//! few places where SQLite and Postgres need different SQL.
//!
//! Most queries go through sqlx's `Any` driver so one code path serves both databases. The
//! hot path (pairs, votes, imports) goes through `Db::transact` and the `Store` interface
//! instead (see `store`): on SQLite that is a rusqlite writer thread with group commit.
//! The remaining SQLite writes go through a one-connection pool (`write`) and start with
//! `BEGIN IMMEDIATE`: waiting writers queue in the pool instead of spinning in SQLite's busy
//! handler, and a transaction never has to upgrade a read lock (which fails instantly with
//! SQLITE_BUSY under contention). On Postgres both pools are the same pool and row locks do
//! the serialising.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::config::Config;
use crate::error::ApiResult;
use crate::store::{SqlRow, SqlValue, SqliteReaders, SqliteWriter, TxBody, fetch_all_sqlx, transact_sqlx};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl FromStr for Backend {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres:, got `{url}`")
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pub backend: Backend,
    /// Pool for reads (several connections; WAL lets SQLite readers run beside the writer).
    pub read: AnyPool,
    /// Pool for write transactions (one connection on SQLite, the same pool on Postgres).
    pub write: AnyPool,
    /// SQLite only: the group-committing writer thread of the hot path (see `store`).
    sqlite_writer: Option<SqliteWriter>,
    /// SQLite only: inline read connections for per-request lookups.
    sqlite_readers: Option<Arc<SqliteReaders>>,
}

pub type Tx = Transaction<'static, Any>;

impl Db {
    /// Connects to `config.database_url` and applies pending migrations.
    pub async fn connect(config: &Config) -> anyhow::Result<Db> {
        install_default_drivers();
        let backend: Backend = config.database_url.parse()?;
        let db = match backend {
            Backend::Sqlite => {
                let url = sqlite_url_creating_file(&config.database_url)?;
                let synchronous = config.sqlite_synchronous.clone();
                let options = move || {
                    let synchronous = synchronous.clone();
                    AnyPoolOptions::new().after_connect(move |conn, _meta| {
                        let synchronous = synchronous.clone();
                        Box::pin(async move {
                            // WAL: readers never block the writer. busy_timeout covers other
                            // processes (the CLI) writing to the same file.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA synchronous = {synchronous}"))).await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                };
                let write = options()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect(&url)
                    .await
                    .with_context(|| format!("opening SQLite database {url}"))?;
                let read = options()
                    .max_connections(config.max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(60))
                    .connect(&url)
                    .await
                    .with_context(|| format!("opening SQLite database {url}"))?;
                let writer = SqliteWriter::start(&sqlite_path(&url), &config.sqlite_synchronous)
                    .with_context(|| format!("opening SQLite writer for {url}"))?;
                let readers = Arc::new(SqliteReaders::new(&sqlite_path(&url)));
                Db { backend, read, write, sqlite_writer: Some(writer), sqlite_readers: Some(readers) }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(config.max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(60))
                    .connect(&config.database_url)
                    .await
                    .context("connecting to Postgres (is DATABASE_URL right and the server up?)")?;
                Db { backend, read: pool.clone(), write: pool, sqlite_writer: None, sqlite_readers: None }
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.write).await.context("applying database migrations")?;
        Ok(())
    }

    /// Starts a write transaction (see the module comment for why SQLite needs IMMEDIATE).
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.write.begin().await,
        }
    }

    /// Runs a hot-path write transaction (see `store`): on the SQLite writer thread with
    /// group commit, or as a retried sqlx transaction on Postgres.
    pub async fn transact<T: Send + 'static>(&self, body: TxBody<T>) -> ApiResult<T> {
        match &self.sqlite_writer {
            Some(writer) => writer.transact(body).await,
            None => transact_sqlx(self.backend, &self.write, body).await,
        }
    }

    /// One row of a small, frequent read (per-request lookups such as authentication).
    pub async fn read_row(&self, sql: &'static str, args: Vec<SqlValue>) -> ApiResult<Option<SqlRow>> {
        let rows = match &self.sqlite_readers {
            Some(readers) => readers.fetch_all(sql, &args)?,
            None => fetch_all_sqlx(&self.read, sql, args).await?,
        };
        Ok(rows.into_iter().next())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// `sqlite://file.db` → `sqlite://file.db?mode=rwc` so a fresh machine gets a new file.
fn sqlite_url_creating_file(url: &str) -> anyhow::Result<String> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        anyhow::bail!(
            "in-memory SQLite is not supported (the server uses separate read and write \
             connections); use a file such as sqlite://pairwise.db"
        );
    }
    if url.contains("mode=") {
        return Ok(url.to_string());
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}mode=rwc"))
}

/// The file path inside a `sqlite://PATH?options` URL.
fn sqlite_path(url: &str) -> String {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    rest.split('?').next().unwrap_or(rest).to_string()
}

/// Current time as Unix milliseconds, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        assert_eq!(sqlite_url_creating_file("sqlite://a.db").unwrap(), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url_creating_file("sqlite://a.db?cache=shared").unwrap(),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_url_creating_file("sqlite://a.db?mode=ro").unwrap(), "sqlite://a.db?mode=ro");
        assert!(sqlite_url_creating_file("sqlite::memory:").is_err());
    }

    #[test]
    fn sqlite_path_from_url() {
        assert_eq!(sqlite_path("sqlite://data/p.db?mode=rwc"), "data/p.db");
        assert_eq!(sqlite_path("sqlite:///tmp/p.db"), "/tmp/p.db");
        assert_eq!(sqlite_path("sqlite:p.db"), "p.db");
    }

    #[test]
    fn backend_from_url() {
        assert_eq!("sqlite://x".parse::<Backend>().unwrap(), Backend::Sqlite);
        assert_eq!("postgres://u@h/d".parse::<Backend>().unwrap(), Backend::Postgres);
        assert!("mysql://x".parse::<Backend>().is_err());
    }
}
