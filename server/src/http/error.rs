//! How the server's errors become HTTP responses: the status of each `ApiError` variant
//! and the JSON body (`error`, a stable machine-readable code; `message`, for people;
//! `details` where useful).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pairwise_api::error::ErrorReply;

use crate::error::ApiError;

fn status_and_code(error: &ApiError) -> (StatusCode, &'static str) {
    match error {
        ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
        ApiError::BadRequest { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ApiError::Database(_) | ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = status_and_code(&self);
        // Internal details go to the log, not to the client.
        let message = match &self {
            ApiError::Database(e) => {
                tracing::error!(error = %e, "database error");
                "internal database error".to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let details = match &self {
            ApiError::BadRequest { details, .. } => details.clone(),
            _ => None,
        };
        let body = ErrorReply { error: code.to_string(), message, details };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after_s, .. } = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(retry_after_s));
        }
        response
    }
}
