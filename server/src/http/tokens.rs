//! `/api/v1/tokens`: API tokens; users manage their own, admins anyone's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use pairwise_api::accounts::{NewToken, TokenInfo, TokenRequest};

use super::extract::{ApiJson, ApiPath};
use super::state::AppState;
use crate::accounts::tokens::{create_token, list_tokens, revoke_token};
use crate::accounts::{CurrentUser, require_admin};
use crate::error::ApiResult;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/tokens", get(list).post(create)).route("/api/v1/tokens/{id}", delete(revoke))
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Vec<TokenInfo>>> {
    let scope = if user.is_admin() { None } else { Some(user.id) };
    Ok(Json(list_tokens(&state.db, scope).await?))
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let owner = match req.user_id {
        Some(id) if id != user.id => {
            require_admin(&user)?;
            id
        }
        _ => user.id,
    };
    let token = create_token(&state.db, owner, &req.name).await?;
    tracing::info!(by = %user.username, token = token.info.id, "api token created");
    Ok((StatusCode::CREATED, Json(token)))
}

async fn revoke(State(state): State<AppState>, user: CurrentUser, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    let scope = if user.is_admin() { None } else { Some(user.id) };
    revoke_token(&state.db, id, scope).await?;
    tracing::info!(by = %user.username, token = id, "api token revoked");
    Ok(StatusCode::NO_CONTENT)
}
