//! `/api/v1/users`: the admin's user management.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch};
use axum::{Json, Router};
use pairwise_api::accounts::{NewUser, User, UserUpdate};

use super::extract::{AdminUser, ApiJson, ApiPath};
use super::state::AppState;
use crate::accounts::Role;
use crate::accounts::users::{create_user, list_users, update_user};
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/users", get(list).post(create)).route("/api/v1/users/{id}", patch(update))
}

async fn list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(list_users(&state.db).await?))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(new): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let created = create_user(&state.db, &new.username, &new.password, new.role).await?;
    tracing::info!(by = %user.username, user = %created.username, "user created");
    Ok((StatusCode::CREATED, Json(created)))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(update): ApiJson<UserUpdate>,
) -> ApiResult<Json<User>> {
    if id == user.id && (update.active == Some(false) || update.role == Some(Role::Annotator)) {
        return Err(ApiError::bad_request("admins cannot disable or demote themselves"));
    }
    Ok(Json(update_user(&state.db, id, update).await?))
}
