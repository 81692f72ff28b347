//! `/api/v1/campaigns`: list, show, create and update campaigns. The per-campaign work
//! routes (import, next, export, stats…) live in their own modules.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use pairwise_api::campaigns::{Campaign, CampaignStatus, CampaignUpdate, NewCampaign};

use super::extract::{AdminUser, ApiJson, ApiPath};
use super::state::AppState;
use crate::accounts::CurrentUser;
use crate::campaigns::{create_campaign, get_campaign, list_campaigns, update_campaign};
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns", get(list).post(create))
        .route("/api/v1/campaigns/{id}", get(show).patch(update))
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Vec<Campaign>>> {
    // Annotators see only what they can rate; drafts and closed campaigns are admin business.
    Ok(Json(list_campaigns(&state.db, user.id, !user.is_admin()).await?))
}

async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Campaign>> {
    let campaign = get_campaign(&state.db, id, user.id).await?;
    if !user.is_admin() && campaign.status != CampaignStatus::Active {
        return Err(ApiError::NotFound(format!("campaign {id}")));
    }
    Ok(Json(campaign))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(new): ApiJson<NewCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let campaign = create_campaign(&state.db, &new).await?;
    tracing::info!(by = %user.username, campaign = campaign.id, "campaign created");
    Ok((StatusCode::CREATED, Json(campaign)))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(update): ApiJson<CampaignUpdate>,
) -> ApiResult<Json<Campaign>> {
    let campaign = update_campaign(&state.db, id, &update).await?;
    tracing::info!(by = %user.username, campaign = id, status = campaign.status.as_str(), "campaign updated");
    Ok(Json(campaign))
}
