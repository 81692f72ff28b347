//! `GET /api/v1/campaigns/{id}/export`: the campaign's votes as streamed JSONL, with the
//! export's cursor in `X-Pairwise-Cursor`.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use pairwise_api::export::ExportParams;

use super::extract::{AdminUser, ApiPath, ApiQuery};
use super::state::AppState;
use crate::error::{ApiError, ApiResult};
use crate::export::start_export;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/campaigns/{id}/export", get(export))
}

async fn export(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(params): ApiQuery<ExportParams>,
) -> ApiResult<Response> {
    let format = params.format;
    let (cursor, rx) = start_export(&state.db, id, params, state.config.secret.clone()).await?;
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let format_name = serde_json::to_value(format).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"campaign-{id}-{format_name}.jsonl\""))
        .header("X-Pairwise-Cursor", cursor)
        .body(body)
        .map_err(|e| ApiError::Internal(e.into()))
}
