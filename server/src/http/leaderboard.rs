//! `GET /api/v1/campaigns/{id}/leaderboard?bootstrap=200&seed=0[&aspect=NAME]`: the models
//! behind the responses, ranked (by the overall choice or by one aspect's).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use pairwise_api::leaderboard::Leaderboard;
use serde::Deserialize;

use super::extract::{AdminUser, ApiPath, ApiQuery};
use super::state::AppState;
use crate::error::{ApiError, ApiResult};
use crate::leaderboard::campaign_leaderboard;

#[derive(Deserialize)]
struct LeaderboardParams {
    #[serde(default = "default_rounds")]
    bootstrap: usize,
    #[serde(default)]
    seed: u64,
    /// Per-aspect campaigns: rank by the choices on this aspect.
    aspect: Option<String>,
}

fn default_rounds() -> usize {
    200
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/campaigns/{id}/leaderboard", get(show))
}

async fn show(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(params): ApiQuery<LeaderboardParams>,
) -> ApiResult<Json<Leaderboard>> {
    if params.bootstrap > 5000 {
        return Err(ApiError::bad_request("bootstrap: at most 5000 rounds"));
    }
    Ok(Json(campaign_leaderboard(&state.db, id, params.aspect.as_deref(), params.bootstrap, params.seed).await?))
}
