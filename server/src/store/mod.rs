//! The one way into the database. Everything above reads and writes through `Db`:
//!
//! * reads: `fetch_all` / `fetch_optional` / `fetch_one` on a sqlx pool, `stream` for
//!   exports, `read_row` for the per-request lookups (inline SQLite connections: a ~10 µs
//!   query run on the calling thread costs less than a hand-off to sqlx's worker thread);
//! * writes: `transact` runs a transaction body (`TxBody`, written once against the small
//!   `Store` interface) on the SQLite writer thread with group commit (`sqlite`), or as a
//!   retried sqlx transaction on Postgres (`pool`). `execute` is a one-statement transaction.
//!
//! On SQLite every write goes through the one writer thread, so writers never compete for
//! the file lock; on Postgres row locks do the serialising. Placeholders are `$1`, `$2`, …
//! on both databases. The pools are private: no SQL reaches a database any other way.

mod error;
mod pool;
mod sqlite;
mod sqlite_file;
mod value;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor};

pub use error::{DbError, TxError};
pub use sqlite_file::{BackupReport, ServeLock};
pub use value::{SqlRow, SqlType, SqlValue};

use sqlite::{SqliteReaders, SqliteWriter};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// A pooled Postgres connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

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

/// What the store needs to know to connect (the database part of the server's config).
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// `sqlite://FILE` or `postgres://user@host/db`.
    pub url: String,
    /// Connections in the read pool.
    pub max_connections: u32,
    /// SQLite `synchronous` pragma: `full` or `normal`.
    pub sqlite_synchronous: String,
}

/// The statements a write transaction can run.
pub trait Store: Send {
    fn backend(&self) -> Backend;
    fn fetch_all(&mut self, sql: &'static str, args: Vec<SqlValue>) -> BoxFuture<'_, Result<Vec<SqlRow>, DbError>>;
    fn execute(&mut self, sql: &'static str, args: Vec<SqlValue>) -> BoxFuture<'_, Result<u64, DbError>>;
}

impl dyn Store + '_ {
    pub async fn fetch_optional(&mut self, sql: &'static str, args: Vec<SqlValue>) -> Result<Option<SqlRow>, DbError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn fetch_one(&mut self, sql: &'static str, args: Vec<SqlValue>) -> Result<SqlRow, DbError> {
        self.fetch_optional(sql, args).await?.ok_or_else(|| DbError::Decode("query returned no row".into()))
    }
}

/// A write transaction body: runs against either executor, may be run more than once (a
/// retried conflict), so it owns (clones) what it needs.
pub type TxBody<T, E> = Arc<dyn for<'s> Fn(&'s mut dyn Store) -> BoxFuture<'s, Result<T, E>> + Send + Sync>;

/// Wraps a closure as a `TxBody` (naming the higher-ranked signature helps inference).
pub fn tx_body<T, E, F>(body: F) -> TxBody<T, E>
where
    F: for<'s> Fn(&'s mut dyn Store) -> BoxFuture<'s, Result<T, E>> + Send + Sync + 'static,
{
    Arc::new(body)
}

#[derive(Clone)]
pub struct Db {
    backend: Backend,
    /// Reads (several connections; WAL lets SQLite readers run beside the writer). On
    /// Postgres also the connections of write transactions.
    pool: AnyPool,
    /// SQLite only: the group-committing writer thread every write goes through.
    sqlite_writer: Option<SqliteWriter>,
    /// SQLite only: inline read connections for per-request lookups.
    sqlite_readers: Option<Arc<SqliteReaders>>,
    /// SQLite only: the database file.
    sqlite_file: Option<String>,
    /// What each campaign's raters answer (fixed when it is created), remembered so that
    /// handing out work on Postgres learns it without another round trip.
    campaign_feedback: Arc<Mutex<HashMap<i64, String>>>,
}

impl Db {
    /// Connects, applies pending migrations and (SQLite) starts the writer thread.
    pub async fn connect(settings: &DbSettings) -> anyhow::Result<Db> {
        install_default_drivers();
        let backend: Backend = settings.url.parse()?;
        match backend {
            Backend::Sqlite => {
                let url = sqlite_url_creating_file(&settings.url)?;
                let synchronous = settings.sqlite_synchronous.clone();
                let pool = AnyPoolOptions::new()
                    .after_connect(move |conn, _meta| {
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
                    .max_connections(settings.max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(60))
                    .connect(&url)
                    .await
                    .with_context(|| format!("opening SQLite database {url}"))?;
                // Migrations run before the writer starts, so they are the only writer then.
                SQLITE_MIGRATIONS.run(&pool).await.context("applying database migrations")?;
                let writer = SqliteWriter::start(&sqlite_path(&url), &settings.sqlite_synchronous)
                    .with_context(|| format!("opening SQLite writer for {url}"))?;
                let readers = Arc::new(SqliteReaders::new(&sqlite_path(&url)));
                Ok(Db {
                    backend,
                    pool,
                    sqlite_writer: Some(writer),
                    sqlite_readers: Some(readers),
                    sqlite_file: Some(sqlite_path(&url)),
                    campaign_feedback: Arc::default(),
                })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(settings.max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(60))
                    // sqlx pings every connection it hands out by default: a round trip to
                    // Postgres before every statement, ~10% of a vote's cost (BENCHMARKS.md).
                    // Only a connection that sat idle for a while may have been dropped by
                    // the server or the network, so only those are checked.
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= IDLE_BEFORE_PING {
                                conn.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(&settings.url)
                    .await
                    .context("connecting to Postgres (is DATABASE_URL right and the server up?)")?;
                POSTGRES_MIGRATIONS.run(&pool).await.context("applying database migrations")?;
                Ok(Db {
                    backend,
                    pool,
                    sqlite_writer: None,
                    sqlite_readers: None,
                    sqlite_file: None,
                    campaign_feedback: Arc::default(),
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What campaign `id`'s raters answer (`campaigns.feedback`: pair, ranking, thumbs or
    /// scale; `pair` for one that does not exist).
    pub async fn campaign_feedback(&self, id: i64) -> Result<String, DbError> {
        if let Some(known) = self.campaign_feedback.lock().expect("campaign kinds").get(&id) {
            return Ok(known.clone());
        }
        let Some(row) = self.fetch_optional("SELECT feedback FROM campaigns WHERE id = $1", crate::args![id]).await?
        else {
            return Ok("pair".into());
        };
        let feedback = row.text("feedback")?;
        self.campaign_feedback.lock().expect("campaign kinds").insert(id, feedback.clone());
        Ok(feedback)
    }

    /// Runs a write transaction: on the SQLite writer thread with group commit, or as a
    /// retried sqlx transaction on Postgres.
    pub async fn transact<T: Send + 'static, E: TxError>(&self, body: TxBody<T, E>) -> Result<T, E> {
        match &self.sqlite_writer {
            Some(writer) => writer.transact(body).await,
            None => pool::transact(self.backend, &self.pool, body).await,
        }
    }

    /// One write statement in a transaction of its own; returns the rows it affected.
    pub async fn execute(&self, sql: &'static str, args: Vec<SqlValue>) -> Result<u64, DbError> {
        self.transact(tx_body(move |tx| {
            let args = args.clone();
            Box::pin(async move { tx.execute(sql, args).await })
        }))
        .await
    }

    /// One write statement with a `RETURNING` clause in a transaction of its own.
    pub async fn write_returning(&self, sql: &'static str, args: Vec<SqlValue>) -> Result<SqlRow, DbError> {
        self.transact(tx_body(move |tx| {
            let args = args.clone();
            Box::pin(async move { tx.fetch_one(sql, args).await })
        }))
        .await
    }

    pub async fn fetch_all(&self, sql: &'static str, args: Vec<SqlValue>) -> Result<Vec<SqlRow>, DbError> {
        pool::fetch_all(&self.pool, sql, args).await
    }

    pub async fn fetch_optional(&self, sql: &'static str, args: Vec<SqlValue>) -> Result<Option<SqlRow>, DbError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn fetch_one(&self, sql: &'static str, args: Vec<SqlValue>) -> Result<SqlRow, DbError> {
        self.fetch_optional(sql, args).await?.ok_or_else(|| DbError::Decode("query returned no row".into()))
    }

    /// The rows of a read, streamed (constant memory, for exports).
    pub fn stream(&self, sql: &'static str, args: Vec<SqlValue>) -> BoxStream<'static, Result<SqlRow, DbError>> {
        pool::stream(self.pool.clone(), sql, args)
    }

    /// One row of a small, frequent read (per-request lookups such as authentication).
    pub async fn read_row(&self, sql: &'static str, args: Vec<SqlValue>) -> Result<Option<SqlRow>, DbError> {
        let rows = match &self.sqlite_readers {
            Some(readers) => readers.fetch_all(sql, &args)?,
            None => pool::fetch_all(&self.pool, sql, args).await?,
        };
        Ok(rows.into_iter().next())
    }

    /// SQLite: claims the database file for this server (`holder` says who, in the refusal
    /// a second server gets). Postgres has no such limit: `None`.
    pub fn lock_for_serving(&self, holder: &str) -> anyhow::Result<Option<ServeLock>> {
        self.sqlite_file.as_deref().map(|path| sqlite_file::lock_for_serving(path, holder)).transpose()
    }

    /// SQLite: a consistent backup into `out`, safe while servers write. Postgres backs up
    /// with its own tools.
    pub async fn backup(&self, out: &std::path::Path) -> anyhow::Result<BackupReport> {
        let Some(path) = self.sqlite_file.clone() else {
            anyhow::bail!(
                "pairwise backup is for SQLite; back up Postgres with pg_dump (see the README's Backups section)"
            )
        };
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || sqlite_file::backup(&path, &out)).await?
    }

    /// Requests queued for the SQLite writer thread (None on Postgres).
    pub fn writer_queue_depth(&self) -> Option<usize> {
        self.sqlite_writer.as_ref().map(SqliteWriter::queue_depth)
    }

    /// Connections of the pool: (open, idle).
    pub fn pool_connections(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLite: claims the database file of `url` for one server before anything connects to it
/// (see `Db::lock_for_serving`). Postgres has no such limit: `None`.
pub fn lock_sqlite_for_serving(url: &str, holder: &str) -> anyhow::Result<Option<ServeLock>> {
    match url.parse::<Backend>()? {
        Backend::Sqlite => Ok(Some(sqlite_file::lock_for_serving(&sqlite_path(url), holder)?)),
        Backend::Postgres => Ok(None),
    }
}

/// Replaces the SQLite database of `url` with the backup `from` (see `sqlite_file::restore`);
/// no server may be serving it. Postgres restores with its own tools.
pub async fn restore_sqlite(url: &str, from: &std::path::Path, force: bool) -> anyhow::Result<BackupReport> {
    if url.parse::<Backend>()? == Backend::Postgres {
        anyhow::bail!("pairwise restore is for SQLite; restore Postgres with pg_restore or psql (see the README)");
    }
    let path = sqlite_path(url);
    let from = from.to_path_buf();
    tokio::task::spawn_blocking(move || sqlite_file::restore(&from, &path, force)).await?
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
