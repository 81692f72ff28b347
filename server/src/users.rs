//! Users: the store functions (used by the API and the CLI) and the admin-only
//! `/api/v1/users` routes.

use axum::extract::State;
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::{AdminUser, Role, hash_password_blocking, validate_password};
use crate::db::{Db, is_unique_violation, now_ms};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub active: bool,
    pub created_at: i64,
}

fn user_from_row(row: &AnyRow) -> ApiResult<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?,
        active: row.try_get::<i64, _>("active")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn validate_username(username: &str) -> ApiResult<()> {
    let ok_chars = username.chars().all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c));
    if username.is_empty() || username.len() > 64 || !ok_chars {
        return Err(ApiError::bad_request("username must be 1-64 characters of letters, digits, `_`, `.`, `-` or `@`"));
    }
    Ok(())
}

pub async fn create_user(db: &Db, username: &str, password: &str, role: Role) -> ApiResult<User> {
    validate_username(username)?;
    validate_password(password)?;
    let hash = hash_password_blocking(password.to_string()).await?;
    let mut tx = db.begin_write().await?;
    let row = sqlx::query(
        "INSERT INTO users (username, password_hash, role, active, created_at) VALUES ($1, $2, $3, 1, $4) \
         RETURNING id, username, role, active, created_at",
    )
    .bind(username)
    .bind(hash)
    .bind(role.as_str())
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::conflict("username_taken", format!("user `{username}` already exists"))
        } else {
            e.into()
        }
    })?;
    tx.commit().await?;
    user_from_row(&row)
}

pub async fn list_users(db: &Db) -> ApiResult<Vec<User>> {
    let rows =
        sqlx::query("SELECT id, username, role, active, created_at FROM users ORDER BY id").fetch_all(&db.read).await?;
    rows.iter().map(user_from_row).collect()
}

pub async fn find_user(db: &Db, username: &str) -> ApiResult<User> {
    let row = sqlx::query("SELECT id, username, role, active, created_at FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(&db.read)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user `{username}`")))?;
    user_from_row(&row)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub active: Option<bool>,
    pub role: Option<Role>,
    pub password: Option<String>,
}

/// Applies an update; disabling a user or changing the password ends their sessions, and a
/// new password also revokes their API tokens.
pub async fn update_user(db: &Db, id: i64, update: UserUpdate) -> ApiResult<User> {
    let hash = match &update.password {
        Some(password) => {
            validate_password(password)?;
            Some(hash_password_blocking(password.clone()).await?)
        }
        None => None,
    };
    let mut tx = db.begin_write().await?;
    let exists = sqlx::query("SELECT id FROM users WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
    if exists.is_none() {
        return Err(ApiError::NotFound(format!("user {id}")));
    }
    if let Some(active) = update.active {
        sqlx::query("UPDATE users SET active = $1 WHERE id = $2")
            .bind(i64::from(active))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(role) = update.role {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2").bind(role.as_str()).bind(id).execute(&mut *tx).await?;
    }
    if let Some(hash) = hash {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2").bind(hash).bind(id).execute(&mut *tx).await?;
    }
    if update.active == Some(false) || update.password.is_some() {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
    }
    // A new password is the answer to a leaked one: tokens minted with the old one go too.
    if update.password.is_some() {
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let row = sqlx::query("SELECT id, username, role, active, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    user_from_row(&row)
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/users", get(list).post(create)).route("/api/v1/users/{id}", patch(update))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: Role,
}

async fn list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(list_users(&state.db).await?))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(new): ApiJson<NewUser>,
) -> ApiResult<(axum::http::StatusCode, Json<User>)> {
    let created = create_user(&state.db, &new.username, &new.password, new.role).await?;
    tracing::info!(by = %user.username, user = %created.username, "user created");
    Ok((axum::http::StatusCode::CREATED, Json(created)))
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
