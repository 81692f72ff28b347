//! The SQLite executor: a dedicated writer thread owning one rusqlite connection, through
//! which every write goes. Requests queue on a channel; the thread runs every queued request
//! inside one transaction, each in its own savepoint (a failing request rolls back alone),
//! commits once, and only then answers them all. This is group commit: with
//! `synchronous = full` each batch costs one fsync instead of one per vote. It also avoids
//! sqlx's per-statement hand-off to a worker thread, which dominated the cost of a vote
//! (measured with `perf`: ~60% of server time was thread wake-ups, <2% was SQLite itself).
//! Beside it, small inline read connections serve the per-request lookups, and a
//! checkpointer thread copies the write-ahead log back into the database file, so that the
//! writer never stalls on a checkpoint (on a large database SQLite's automatic checkpoint,
//! run by the committing connection, made every few hundredth request wait tens of ms).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Backend, DbError, SqlRow, SqlType, SqlValue, Store, TxBody, TxError};

/// `Store` over the SQLite writer thread's connection (owned, so it is `Send`).
pub(super) struct SqliteStore {
    conn: rusqlite::Connection,
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            SqlValue::Null(_) => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            SqlValue::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            SqlValue::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

const PLACEHOLDERS: [&str; 16] =
    ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$16"];

impl SqliteStore {
    fn prepare(&self, sql: &'static str, args: &[SqlValue]) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        // `$N` are named parameters to SQLite, numbered by first appearance: bind by name.
        for (name, value) in PLACEHOLDERS.iter().zip(args) {
            if let Some(index) = statement.parameter_index(name)? {
                statement.raw_bind_parameter(index, value)?;
            }
        }
        Ok(statement)
    }

    fn query(&self, sql: &'static str, args: &[SqlValue]) -> rusqlite::Result<Vec<SqlRow>> {
        use rusqlite::types::ValueRef;
        let mut statement = self.prepare(sql, args)?;
        let names = Arc::new(statement.column_names().into_iter().map(String::from).collect::<Vec<_>>());
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..names.len())
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => SqlValue::Null(SqlType::Text),
                        ValueRef::Integer(v) => SqlValue::Int(v),
                        ValueRef::Real(v) => SqlValue::Real(v),
                        ValueRef::Text(v) | ValueRef::Blob(v) => {
                            SqlValue::Text(String::from_utf8_lossy(v).into_owned())
                        }
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push(SqlRow::new(names.clone(), values));
        }
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn fetch_all(&mut self, sql: &'static str, args: Vec<SqlValue>) -> BoxFuture<'_, Result<Vec<SqlRow>, DbError>> {
        let result = self.query(sql, &args).map_err(DbError::from);
        Box::pin(std::future::ready(result))
    }

    fn execute(&mut self, sql: &'static str, args: Vec<SqlValue>) -> BoxFuture<'_, Result<u64, DbError>> {
        let result =
            self.prepare(sql, &args).and_then(|mut s| s.raw_execute()).map(|n| n as u64).map_err(DbError::from);
        Box::pin(std::future::ready(result))
    }
}

/// One queued request for the writer thread. Called with the connection inside a
/// savepoint (or `None` when no transaction could be started); returns whether it failed
/// and how to deliver its answer once the commit outcome is known.
type Job = Box<dyn FnOnce(Option<&mut SqliteStore>) -> (bool, Deliver) + Send>;
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Most requests committed together.
const MAX_BATCH: usize = 256;
/// How often the checkpointer copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub(super) struct SqliteWriter {
    jobs: mpsc::UnboundedSender<Job>,
    /// Requests sent and not yet taken up by the writer thread (a metric).
    queued: Arc<AtomicUsize>,
    /// Kept alive by every clone; the checkpointer stops once the last one is gone.
    _alive: Arc<()>,
}

impl SqliteWriter {
    /// Opens the writer connection (same pragmas as the pools) and starts its thread.
    pub fn start(path: &str, synchronous: &str) -> anyhow::Result<SqliteWriter> {
        let conn = rusqlite::Connection::open(path)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;"
        ))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, receiver) = mpsc::unbounded_channel();
        let store = SqliteStore { conn };
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || writer_loop(store, receiver, &taken))?;
        let alive = Arc::new(());
        let checkpointer = rusqlite::Connection::open(path)?;
        checkpointer.busy_timeout(Duration::from_secs(1))?;
        let watch = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || checkpoint_loop(&checkpointer, &watch))?;
        Ok(SqliteWriter { jobs, queued, _alive: alive })
    }

    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub async fn transact<T: Send + 'static, E: TxError>(&self, body: TxBody<T, E>) -> Result<T, E> {
        let (reply, answer) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| match conn {
            None => {
                let deliver: Deliver = Box::new(move |outcome: Result<(), String>| {
                    let message = outcome.err().unwrap_or_default();
                    let _ = reply
                        .send(Err(E::from(DbError::Decode(format!("could not start a write transaction: {message}")))));
                });
                (true, deliver)
            }
            Some(store) => {
                // The store's futures are ready at once, so this never blocks.
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| futures::executor::block_on(body(store))))
                    .unwrap_or_else(|_| Err(E::from(DbError::Decode("a write transaction panicked".into()))));
                let failed = result.is_err();
                let deliver: Deliver = Box::new(move |commit: Result<(), String>| {
                    let answer = match commit {
                        Ok(()) => result,
                        Err(message) => Err(E::from(DbError::Decode(format!("commit failed: {message}")))),
                    };
                    let _ = reply.send(answer);
                });
                (failed, deliver)
            }
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.jobs.send(job).map_err(|_| E::from(DbError::WriterGone))?;
        answer.await.map_err(|_| E::from(DbError::WriterGone))?
    }
}

/// Passive checkpoints (they never wait for the writer or readers) until the writer is gone.
fn checkpoint_loop(conn: &rusqlite::Connection, alive: &std::sync::Weak<()>) {
    while alive.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "SQLite checkpoint");
        }
    }
}

fn writer_loop(mut store: SqliteStore, mut receiver: mpsc::UnboundedReceiver<Job>, queued: &AtomicUsize) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        // Another connection (an import, the CLI) may hold the write lock for longer than
        // the busy timeout: keep the requests queued and try again rather than fail them.
        let mut began = store.conn.execute_batch("BEGIN IMMEDIATE");
        let give_up = std::time::Instant::now() + Duration::from_secs(300);
        while let Err(e) = &began {
            let busy = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            if !busy || std::time::Instant::now() > give_up {
                break;
            }
            tracing::warn!("database is locked by another writer; votes are waiting");
            std::thread::sleep(Duration::from_millis(100));
            began = store.conn.execute_batch("BEGIN IMMEDIATE");
        }
        if let Err(e) = began {
            tracing::error!(error = %e, "could not begin a write transaction");
            for job in batch {
                let (_, deliver) = job(None);
                deliver(Err(e.to_string()));
            }
            continue;
        }
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter();
        while let Some(job) = jobs.next() {
            // SQLite rolls the whole transaction back by itself after some errors (disk
            // full, I/O): then nothing may run outside it, so the rest of the batch fails.
            if store.conn.is_autocommit() {
                let lost = "the transaction was rolled back by SQLite".to_string();
                for job in std::iter::once(job).chain(jobs.by_ref()) {
                    let (_, deliver) = job(None);
                    deliveries.push((Err(lost.clone()), deliver));
                }
                break;
            }
            let savepoint = store.conn.execute_batch("SAVEPOINT request");
            let (failed, deliver) = job(if savepoint.is_ok() { Some(&mut store) } else { None });
            let undo =
                if failed || savepoint.is_err() { "ROLLBACK TO request; RELEASE request" } else { "RELEASE request" };
            if savepoint.is_ok()
                && let Err(e) = store.conn.execute_batch(undo)
            {
                tracing::error!(error = %e, "savepoint release failed");
            }
            deliveries.push((savepoint.map_err(|e| e.to_string()), deliver));
        }
        let commit = store.conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = store.conn.execute_batch("ROLLBACK");
        }
        for (savepoint, deliver) in deliveries {
            deliver(savepoint.and(commit.clone()));
        }
    }
}

/// Small SQLite read connections used inline for the per-request lookups (authentication):
/// a ~10 µs query run on the calling thread costs less than handing it to sqlx's worker
/// thread and waiting to be woken up.
pub(super) struct SqliteReaders {
    path: String,
    idle: std::sync::Mutex<Vec<SqliteStore>>,
}

impl SqliteReaders {
    pub fn new(path: &str) -> SqliteReaders {
        SqliteReaders { path: path.to_string(), idle: std::sync::Mutex::new(Vec::new()) }
    }

    pub fn fetch_all(&self, sql: &'static str, args: &[SqlValue]) -> Result<Vec<SqlRow>, DbError> {
        let idle = self.idle.lock().expect("reader pool lock").pop();
        let reader = match idle {
            Some(reader) => reader,
            None => {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                SqliteStore { conn }
            }
        };
        let rows = reader.query(sql, args)?;
        self.idle.lock().expect("reader pool lock").push(reader);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tx_body;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_rolls_back_alone_within_a_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (n INTEGER UNIQUE)").unwrap();
        let writer = SqliteWriter::start(path.to_str().unwrap(), "full").unwrap();
        let requests = (0..64i64).map(|n| {
            let writer = writer.clone();
            async move {
                writer
                    .transact(tx_body(move |tx| {
                        Box::pin(async move {
                            tx.execute("INSERT INTO t (n) VALUES ($1)", crate::args![n]).await?;
                            // Odd requests fail after writing: their row must not survive.
                            if n % 2 == 1 {
                                return Err(DbError::Decode("odd".into()));
                            }
                            let row = tx.fetch_one("SELECT COUNT(*) AS c FROM t WHERE n = $1", crate::args![n]).await?;
                            row.int("c")
                        })
                    }))
                    .await
            }
        });
        let results = futures::future::join_all(requests).await;
        for (n, result) in results.iter().enumerate() {
            assert_eq!(result.is_ok(), n % 2 == 0, "request {n}: {result:?}");
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        let stored: Vec<i64> = conn
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(stored, (0..64).step_by(2).collect::<Vec<i64>>());
        // A unique violation is classified as such.
        let duplicate = writer
            .transact(tx_body(|tx| Box::pin(async move { tx.execute("INSERT INTO t (n) VALUES (0)", vec![]).await })))
            .await;
        assert!(matches!(duplicate, Err(e) if e.is_unique_violation()));
    }
}
