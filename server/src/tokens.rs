//! API tokens: created for a user and shown once (only a SHA-256 is stored), listed,
//! revoked. Routes under `/api/v1/tokens`; users manage their own, admins anyone's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::{CurrentUser, TOKEN_PREFIX, random_secret, sha256_hex};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    /// First characters of the token, to recognise it in lists.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret itself; returned only once, at creation.
    pub token: String,
}

const TOKEN_COLUMNS: &str = "t.id, t.user_id, u.username, t.name, t.prefix, t.created_at, t.revoked_at";

fn token_from_row(row: &AnyRow) -> ApiResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub async fn create_token(db: &Db, user_id: i64, name: &str) -> ApiResult<NewToken> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("token name must be 1-100 characters"));
    }
    let token = random_secret(TOKEN_PREFIX);
    let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    let mut tx = db.begin_write().await?;
    let exists = sqlx::query("SELECT id FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *tx).await?;
    if exists.is_none() {
        return Err(ApiError::NotFound(format!("user {user_id}")));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(sha256_hex(&token))
    .bind(&prefix)
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NewToken { info: token_from_row(&row)?, token })
}

/// Tokens of one user, or of everyone when `user_id` is None.
pub async fn list_tokens(db: &Db, user_id: Option<i64>) -> ApiResult<Vec<TokenInfo>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE ($1 = 0 OR t.user_id = $1) ORDER BY t.id"
    )))
    .bind(user_id.unwrap_or(0))
    .fetch_all(&db.read)
    .await?;
    rows.iter().map(token_from_row).collect()
}

/// Revokes a token; `owner` restricts it to that user's tokens.
pub async fn revoke_token(db: &Db, id: i64, owner: Option<i64>) -> ApiResult<()> {
    let mut tx = db.begin_write().await?;
    let row = sqlx::query("SELECT user_id FROM api_tokens WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
    let token_owner: i64 = match row {
        Some(row) => row.try_get("user_id")?,
        None => return Err(ApiError::NotFound(format!("token {id}"))),
    };
    if owner.is_some_and(|owner| owner != token_owner) {
        return Err(ApiError::NotFound(format!("token {id}")));
    }
    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/tokens", get(list).post(create)).route("/api/v1/tokens/{id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
    /// Admins may create tokens for other users (e.g. a training service account).
    user_id: Option<i64>,
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
            user.require_admin()?;
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
