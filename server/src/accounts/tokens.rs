//! API tokens: created for a user and shown once (only a SHA-256 is stored), listed,
//! revoked. Users manage their own, admins anyone's.

use pairwise_api::accounts::{NewToken, TokenInfo};

use super::sessions::{random_secret, sha256_hex};
use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::store::{Db, SqlRow, now_ms, tx_body};

/// Every token starts with this, so a leaked one is easy to recognise (secret scanners).
pub const TOKEN_PREFIX: &str = "pw_";

macro_rules! token_select {
    () => {
        "SELECT t.id, t.user_id, u.username, t.name, t.prefix, t.created_at, t.revoked_at \
         FROM api_tokens t JOIN users u ON u.id = t.user_id"
    };
}

fn token_from_row(row: &SqlRow) -> ApiResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        username: row.text("username")?,
        name: row.text("name")?,
        prefix: row.text("prefix")?,
        created_at: row.int("created_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

pub async fn create_token(db: &Db, user_id: i64, name: &str) -> ApiResult<NewToken> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("token name must be 1-100 characters"));
    }
    let token = random_secret(TOKEN_PREFIX);
    let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    let (name, hash) = (name.to_string(), sha256_hex(&token));
    let row = db
        .transact(tx_body(move |tx| {
            let args = args![user_id, &name, &hash, &prefix, now_ms()];
            Box::pin(async move {
                if tx.fetch_optional("SELECT id FROM users WHERE id = $1", args![user_id]).await?.is_none() {
                    return Err(ApiError::NotFound(format!("user {user_id}")));
                }
                let id = tx
                    .fetch_one(
                        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING id",
                        args,
                    )
                    .await?
                    .int("id")?;
                Ok(tx.fetch_one(concat!(token_select!(), " WHERE t.id = $1"), args![id]).await?)
            })
        }))
        .await?;
    Ok(NewToken { info: token_from_row(&row)?, token })
}

/// Tokens of one user, or of everyone when `user_id` is None.
pub async fn list_tokens(db: &Db, user_id: Option<i64>) -> ApiResult<Vec<TokenInfo>> {
    let rows = db
        .fetch_all(
            concat!(token_select!(), " WHERE ($1 = 0 OR t.user_id = $1) ORDER BY t.id"),
            args![user_id.unwrap_or(0)],
        )
        .await?;
    rows.iter().map(token_from_row).collect()
}

/// Revokes a token; `owner` restricts it to that user's tokens.
pub async fn revoke_token(db: &Db, id: i64, owner: Option<i64>) -> ApiResult<()> {
    db.transact(tx_body(move |tx| {
        Box::pin(async move {
            let row = tx.fetch_optional("SELECT user_id FROM api_tokens WHERE id = $1", args![id]).await?;
            let token_owner = match row {
                Some(row) => row.int("user_id")?,
                None => return Err(ApiError::NotFound(format!("token {id}"))),
            };
            if owner.is_some_and(|owner| owner != token_owner) {
                return Err(ApiError::NotFound(format!("token {id}")));
            }
            tx.execute(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                args![now_ms(), id],
            )
            .await?;
            Ok(())
        })
    }))
    .await
}
