//! Users: creating, listing, finding and updating accounts (used by the API and the CLI).

use pairwise_api::accounts::{User, UserUpdate};

use super::passwords::{hash_password_blocking, validate_password};
use super::{Role, role_of};
use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::store::{Db, SqlRow, now_ms, tx_body};

fn user_from_row(row: &SqlRow) -> ApiResult<User> {
    Ok(User {
        id: row.int("id")?,
        username: row.text("username")?,
        role: role_of(row)?,
        active: row.int("active")? != 0,
        created_at: row.int("created_at")?,
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
    let name = username.to_string();
    let row = db
        .transact(tx_body(move |tx| {
            let args = args![&name, &hash, role.as_str(), now_ms()];
            Box::pin(async move {
                tx.fetch_one(
                    "INSERT INTO users (username, password_hash, role, active, created_at) VALUES ($1, $2, $3, 1, $4) \
                     RETURNING id, username, role, active, created_at",
                    args,
                )
                .await
                .map_err(ApiError::from)
            })
        }))
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::conflict("username_taken", format!("user `{username}` already exists"))
            } else {
                e
            }
        })?;
    user_from_row(&row)
}

pub async fn list_users(db: &Db) -> ApiResult<Vec<User>> {
    let rows = db.fetch_all("SELECT id, username, role, active, created_at FROM users ORDER BY id", args![]).await?;
    rows.iter().map(user_from_row).collect()
}

pub async fn find_user(db: &Db, username: &str) -> ApiResult<User> {
    let row = db
        .fetch_optional("SELECT id, username, role, active, created_at FROM users WHERE username = $1", args![username])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user `{username}`")))?;
    user_from_row(&row)
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
    let row = db
        .transact(tx_body(move |tx| {
            let (update, hash) = (update.clone(), hash.clone());
            Box::pin(async move {
                if tx.fetch_optional("SELECT id FROM users WHERE id = $1", args![id]).await?.is_none() {
                    return Err(ApiError::NotFound(format!("user {id}")));
                }
                if let Some(active) = update.active {
                    tx.execute("UPDATE users SET active = $1 WHERE id = $2", args![active, id]).await?;
                }
                if let Some(role) = update.role {
                    tx.execute("UPDATE users SET role = $1 WHERE id = $2", args![role.as_str(), id]).await?;
                }
                if let Some(hash) = hash {
                    tx.execute("UPDATE users SET password_hash = $1 WHERE id = $2", args![hash, id]).await?;
                }
                if update.active == Some(false) || update.password.is_some() {
                    tx.execute("DELETE FROM sessions WHERE user_id = $1", args![id]).await?;
                }
                // A new password is the answer to a leaked one: tokens minted with the old one go too.
                if update.password.is_some() {
                    tx.execute(
                        "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
                        args![now_ms(), id],
                    )
                    .await?;
                }
                Ok(tx
                    .fetch_one("SELECT id, username, role, active, created_at FROM users WHERE id = $1", args![id])
                    .await?)
            })
        }))
        .await?;
    user_from_row(&row)
}
