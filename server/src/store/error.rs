//! `DbError`: the errors of either executor, classified the same way (unique violations,
//! retryable conflicts), so the layers above never look at a driver's error codes.

/// Errors of either executor.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the SQLite writer thread has stopped")]
    WriterGone,
    /// A row did not have the shape the query's reader expected.
    #[error("{0}")]
    Decode(String),
}

impl DbError {
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlx(e) => e.as_database_error().is_some_and(|d| d.is_unique_violation()),
            DbError::Sqlite(e) => matches!(
                e.sqlite_error().map(|s| s.extended_code),
                Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
            ),
            DbError::WriterGone | DbError::Decode(_) => false,
        }
    }

    /// An error a server-side function raised on purpose for the caller to show (Postgres
    /// SQLSTATE class `PW`, see migrations/postgres/0005): its code and message.
    pub fn raised(&self) -> Option<(String, String)> {
        let DbError::Sqlx(e) = self else { return None };
        let error = e.as_database_error()?;
        let code = error.code()?;
        code.starts_with("PW").then(|| (code.into_owned(), error.message().to_string()))
    }

    /// The connection broke under the statement (Postgres ended it, or the network did), so
    /// whether it ran is unknown: only an idempotent statement may be sent again.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Io(_)) => true,
            // admin_shutdown, crash_shutdown: the backend was terminated.
            DbError::Sqlx(e) => {
                e.as_database_error().is_some_and(|d| matches!(d.code().as_deref(), Some("57P01" | "57P02")))
            }
            DbError::Sqlite(_) | DbError::WriterGone | DbError::Decode(_) => false,
        }
    }

    /// Errors after which re-running the whole transaction is the right answer: Postgres
    /// serialization failures and deadlocks, SQLite busy/locked.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Sqlx(e) => match e.as_database_error() {
                Some(d) => matches!(d.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "517" | "261")),
                None => false,
            },
            DbError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            DbError::WriterGone | DbError::Decode(_) => false,
        }
    }
}

/// The error type of a transaction body: anything a `DbError` converts into, which can say
/// whether it is one (so the executor can retry a conflict).
pub trait TxError: From<DbError> + Send + 'static {
    fn as_db_error(&self) -> Option<&DbError>;
}

impl TxError for DbError {
    fn as_db_error(&self) -> Option<&DbError> {
        Some(self)
    }
}
