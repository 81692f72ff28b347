//! `/api/v1/campaigns/{id}/runs` and `/api/v1/runs/{id}`: start, list, show and cancel
//! training runs, and download the files a run wrote.

use std::path::Path;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use pairwise_api::runs::{Run, RunDetail, RunSpec, Trigger};

use super::extract::{AdminUser, ApiJson, ApiPath};
use super::state::AppState;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::runs::{RUN_FILES, get_run, list_runs, run_metrics, written_files};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns/{id}/runs", get(list_handler).post(start_handler))
        .route("/api/v1/runs/{id}", get(get_handler))
        .route("/api/v1/runs/{id}/cancel", post(cancel_handler))
        .route("/api/v1/runs/{id}/files/{name}", get(file_handler))
}

/// Downloads one of a run's files (`name` is one of [`RUN_FILES`] with `/` written as `~`).
async fn file_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath((id, name)): ApiPath<(i64, String)>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let name = name.replace('~', "/");
    if !RUN_FILES.contains(&name.as_str()) {
        return Err(ApiError::NotFound(format!("file {name} of run {id}")));
    }
    let run = get_run(&state.db, id).await?;
    let path = Path::new(&run.output_dir).join(&name);
    let file =
        tokio::fs::File::open(&path).await.map_err(|_| ApiError::NotFound(format!("file {name} of run {id}")))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let download = name.rsplit('/').next().unwrap_or("file").to_string();
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"run-{id}-{download}\"")),
        ],
        body,
    )
        .into_response())
}

async fn list_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Run>>> {
    get_campaign(&state.db, id, 0).await?;
    Ok(Json(list_runs(&state.db, id).await?))
}

async fn start_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(spec): ApiJson<RunSpec>,
) -> ApiResult<(axum::http::StatusCode, Json<Run>)> {
    Ok((axum::http::StatusCode::CREATED, Json(state.runs.start(id, spec, Trigger::Manual).await?)))
}

/// A run with its metric lines and the files it has written (of [`RUN_FILES`]).
async fn get_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<RunDetail>> {
    let run = get_run(&state.db, id).await?;
    let metrics = run_metrics(&state.db, id).await?;
    let files = written_files(&run);
    Ok(Json(RunDetail { run, metrics, files }))
}

async fn cancel_handler(
    State(state): State<AppState>,
    _: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Run>> {
    Ok(Json(state.runs.cancel(id).await?))
}
