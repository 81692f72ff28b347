//! What a SQLite database file allows beside the server's own connections: one server at a
//! time (a lock file next to the database, so a second `pairwise serve` is refused instead
//! of silently competing for SQLite's write lock), online backups (`VACUUM INTO`: a
//! consistent snapshot taken in a read transaction, so votes keep being written meanwhile)
//! and restores (SQLite's backup API, with no server running).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// Held while a server serves the database (or a restore replaces it); released when
/// dropped or when the process dies, whatever way it dies (an `flock` on the lock file).
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

/// The lock file of a database file: `FILE-serve.lock`, beside SQLite's `-wal` and `-shm`.
fn lock_path(db_path: &str) -> PathBuf {
    PathBuf::from(format!("{db_path}-serve.lock"))
}

/// Takes the database file's serve lock for `holder` (written into the lock file so that
/// the refusal can say who has it).
pub(super) fn lock_for_serving(db_path: &str, holder: &str) -> anyhow::Result<ServeLock> {
    let path = lock_path(db_path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            writeln!(file, "{holder}")?;
            Ok(ServeLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let by = std::fs::read_to_string(&path).unwrap_or_default();
            let by = if by.trim().is_empty() { "another pairwise server" } else { by.trim() };
            anyhow::bail!(
                "the SQLite database {db_path} is in use by {by}; SQLite allows one server per database \
                 file (stop that one first, or use Postgres to run several servers)"
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// What `pairwise backup` / `pairwise restore` report.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub file: String,
    pub bytes: u64,
    pub votes: i64,
    pub pairs: i64,
}

fn count(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0))
}

/// Checks that `path` is an intact Pairwise database (the integrity check passes and the
/// schema is ours); returns what it holds.
fn check_database(path: &Path) -> anyhow::Result<BackupReport> {
    let name = path.display();
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {name}"))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .with_context(|| format!("{name} is not a SQLite database"))?;
    anyhow::ensure!(integrity == "ok", "{name} is damaged: the integrity check says {integrity}");
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('_sqlx_migrations', 'comparisons', 'pairs')",
        [],
        |row| row.get(0),
    )?;
    anyhow::ensure!(tables == 3, "{name} is not a Pairwise database (its tables are missing)");
    Ok(BackupReport {
        file: name.to_string(),
        bytes: std::fs::metadata(path)?.len(),
        votes: count(&conn, "comparisons")?,
        pairs: count(&conn, "pairs")?,
    })
}

/// Writes a consistent copy of the database at `db_path` to `out` while servers keep
/// writing: `VACUUM INTO` reads one snapshot, into `out.partial`, which is checked, synced
/// and renamed, so `out` is either absent or a whole backup. An existing `out` is refused.
pub(super) fn backup(db_path: &str, out: &Path) -> anyhow::Result<BackupReport> {
    anyhow::ensure!(!out.exists(), "{} exists already; a backup never overwrites a file", out.display());
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let _ = std::fs::remove_file(&partial);
    let conn = Connection::open(db_path).with_context(|| format!("opening {db_path}"))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let target = partial.to_str().context("the backup path must be valid UTF-8")?;
    let copied = conn.execute("VACUUM INTO ?1", [target]).with_context(|| format!("backing up {db_path}"));
    drop(conn);
    let checked = copied.and_then(|_| check_database(&partial));
    let report = match checked {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, out).with_context(|| format!("moving the backup to {}", out.display()))?;
    Ok(BackupReport { file: out.display().to_string(), ..report })
}

/// Replaces the database at `db_path` with the backup `from`, after checking the backup,
/// while holding the serve lock (so never under a running server). A database that holds
/// any pairs is only replaced with `force`.
pub(super) fn restore(from: &Path, db_path: &str, force: bool) -> anyhow::Result<BackupReport> {
    anyhow::ensure!(from.is_file(), "{} does not exist", from.display());
    let report = check_database(from)?;
    let _lock = lock_for_serving(db_path, &format!("pairwise restore (pid {})", std::process::id()))?;
    let mut dest = Connection::open(db_path).with_context(|| format!("opening {db_path}"))?;
    dest.busy_timeout(Duration::from_secs(30))?;
    let has_pairs: i64 =
        dest.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'pairs'", [], |r| r.get(0))?;
    if has_pairs > 0 && !force {
        let pairs = count(&dest, "pairs")?;
        anyhow::ensure!(
            pairs == 0,
            "{db_path} already holds a database with {pairs} pairs; pass --force to replace it with {}",
            from.display()
        );
    }
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    rusqlite::backup::Backup::new(&source, &mut dest)?
        .run_to_completion(4096, Duration::ZERO, None)
        .with_context(|| format!("restoring {} into {db_path}", from.display()))?;
    let journal: String = dest.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    anyhow::ensure!(journal == "wal", "{db_path}: could not switch back to WAL mode ({journal})");
    Ok(BackupReport { file: db_path.to_string(), ..report })
}
