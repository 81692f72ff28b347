//! `GET /campaigns/{id}/next` hands a rater a pair under a lease, `POST /votes` records a
//! vote and returns the next pair in the same response, `POST /assignments/{id}/skip` gives
//! a pair back.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use pairwise_api::votes::{Next, VoteOutcome, VoteRequest};

use super::extract::{ApiJson, ApiPath};
use super::state::AppState;
use crate::error::ApiResult;
use crate::votes::{Rater, next_pair, skip, submit_vote};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns/{id}/next", get(next_handler))
        .route("/api/v1/votes", post(vote_handler))
        .route("/api/v1/assignments/{id}/skip", post(skip_handler))
}

async fn next_handler(State(state): State<AppState>, rater: Rater, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Next>> {
    Ok(Json(next_pair(&state.db, id, &rater).await?))
}

async fn vote_handler(
    State(state): State<AppState>,
    rater: Rater,
    ApiJson(req): ApiJson<VoteRequest>,
) -> ApiResult<Json<VoteOutcome>> {
    Ok(Json(submit_vote(&state.db, &state.sequencer, &rater, &req).await?))
}

async fn skip_handler(State(state): State<AppState>, rater: Rater, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Next>> {
    Ok(Json(skip(&state.db, &rater, id).await?))
}
