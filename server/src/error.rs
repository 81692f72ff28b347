//! The one error type of the server's operations, `ApiError`: each variant says what went
//! wrong in terms the caller can act on (not found, conflict, invalid input with the
//! line-numbered problems of a rejected import, …). How a variant maps to an HTTP status
//! lives in `http::error`; the CLI prints the same errors as text.

use pairwise_api::error::ErrorDetails;

use crate::store::{DbError, TxError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    BadRequest { message: String, details: Option<ErrorDetails> },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{what}, retry in {retry_after_s} s")]
    TooManyRequests { what: &'static str, retry_after_s: u64 },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), details: None }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict { code, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    /// Whether this is the database refusing a duplicate (a unique constraint).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, ApiError::Database(e) if e.is_unique_violation())
    }
}

impl TxError for ApiError {
    fn as_db_error(&self) -> Option<&DbError> {
        match self {
            ApiError::Database(e) => Some(e),
            _ => None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
