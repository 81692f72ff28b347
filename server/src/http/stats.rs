//! `GET /api/v1/campaigns/{id}/stats`: admins get everything; an annotator gets the totals
//! of an active campaign and only their own row.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use pairwise_api::campaigns::CampaignStatus;
use pairwise_api::stats::CampaignStats;

use super::extract::ApiPath;
use super::state::AppState;
use crate::accounts::CurrentUser;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::stats::campaign_stats;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/campaigns/{id}/stats", get(stats))
}

/// Admins get everything; an annotator gets the totals of an active campaign and only
/// their own row.
async fn stats(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<CampaignStats>> {
    if !user.is_admin() && get_campaign(&state.db, id, user.id).await?.status != CampaignStatus::Active {
        return Err(ApiError::NotFound(format!("campaign {id}")));
    }
    let mut stats = campaign_stats(&state.db, id).await?;
    if !user.is_admin() {
        stats.raters.retain(|r| r.rater_id == user.id);
    }
    Ok(Json(stats))
}
