//! `POST /api/v1/campaigns/{id}/import`: a JSONL file of prompts and responses.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use pairwise_api::import::{ImportReport, PairingOptions};

use super::extract::{AdminUser, ApiPath, ApiQuery};
use super::state::AppState;
use crate::error::ApiResult;
use crate::import::import_jsonl;

pub fn router(max_import_bytes: usize) -> Router<AppState> {
    Router::new().route(
        "/api/v1/campaigns/{id}/import",
        post(import).layer(axum::extract::DefaultBodyLimit::max(max_import_bytes)),
    )
}

async fn import(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(options): ApiQuery<PairingOptions>,
    body: Bytes,
) -> ApiResult<Json<ImportReport>> {
    let report = import_jsonl(&state.db, id, &body, &options).await?;
    tracing::info!(by = %user.username, campaign = id, pairs = report.pairs_created, "import");
    Ok(Json(report))
}
