//! Logins and sessions: checking a username and password (rate limited, constant work for
//! unknown users), creating and ending server-side sessions, and finding the user behind a
//! session secret or an API token. Secrets are 256-bit random strings; only their SHA-256
//! is stored.

use std::sync::LazyLock;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::limiter::{LoginKeys, LoginLimiter};
use super::passwords::{hash_password, verify_password};
use super::{CurrentUser, role_of};
use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::store::{Db, SqlRow, now_ms};

/// Name of the cookie that carries the session secret.
pub const SESSION_COOKIE: &str = "pairwise_session";

pub fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

/// A new random secret (URL-safe, 43 characters) with an optional prefix.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What a request presents to say who it is.
pub enum Credential<'a> {
    /// The secret of a session cookie.
    Session(&'a str),
    /// An API token (`Authorization: Bearer …`).
    Token(&'a str),
}

/// A credential as it is stored: its kind and the SHA-256 of its secret.
#[derive(Debug, Clone)]
pub struct HashedCredential {
    pub kind: CredentialKind,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Session,
    Token,
}

impl CredentialKind {
    /// The name Postgres's `pairwise_rater` (migration 0014) takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Session => "session",
            CredentialKind::Token => "token",
        }
    }
}

impl Credential<'_> {
    pub fn hashed(&self) -> HashedCredential {
        match self {
            Credential::Session(secret) => HashedCredential { kind: CredentialKind::Session, hash: sha256_hex(secret) },
            Credential::Token(token) => HashedCredential { kind: CredentialKind::Token, hash: sha256_hex(token) },
        }
    }
}

fn user_from_row(row: &SqlRow) -> ApiResult<CurrentUser> {
    Ok(CurrentUser { id: row.int("id")?, username: row.text("username")?, role: role_of(row)? })
}

/// The active user behind a live session or an unrevoked token, if any. Postgres's
/// `pairwise_rater` makes the same checks.
pub async fn lookup_caller(db: &Db, credential: &HashedCredential) -> ApiResult<Option<CurrentUser>> {
    let row = match credential.kind {
        CredentialKind::Token => {
            let sql = "SELECT u.id, u.username, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id \
                       WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.active = 1";
            db.read_row(sql, args![credential.hash.as_str()]).await?
        }
        CredentialKind::Session => {
            let sql = "SELECT u.id, u.username, u.role FROM sessions s JOIN users u ON u.id = s.user_id \
                       WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active = 1";
            db.read_row(sql, args![credential.hash.as_str(), now_ms()]).await?
        }
    };
    row.as_ref().map(user_from_row).transpose()
}

/// A hash verified when the user does not exist, so response time does not reveal which
/// usernames are valid (it costs the same argon2 work as a real check).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("no such user").expect("argon2 with default parameters cannot fail"));

/// Checks a username/password pair (with rate limiting) and returns the user on success.
pub async fn check_login(
    db: &Db,
    limiter: &LoginLimiter,
    client: &str,
    username: &str,
    password: &str,
) -> ApiResult<CurrentUser> {
    let keys = LoginKeys::new(username, client);
    limiter
        .check(db, &keys)
        .await?
        .map_err(|retry_after_s| ApiError::TooManyRequests { what: "too many attempts", retry_after_s })?;
    let row = db
        .fetch_optional(
            "SELECT id, username, role, password_hash FROM users WHERE username = $1 AND active = 1",
            args![username],
        )
        .await?;
    let (user, hash) = match row {
        Some(row) => (Some(user_from_row(&row)?), row.text("password_hash")?),
        None => (None, DUMMY_HASH.clone()),
    };
    let password = password.to_string();
    let ok =
        tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.map_err(anyhow::Error::from)?;
    match user {
        Some(user) if ok => {
            limiter.record_success(db, &keys).await?;
            Ok(user)
        }
        _ => {
            limiter.record_failure(db, &keys).await?;
            Err(ApiError::Unauthorized)
        }
    }
}

/// Creates a server-side session lasting `hours` and returns its secret (for the cookie).
pub async fn create_session(db: &Db, user_id: i64, hours: i64) -> ApiResult<String> {
    let secret = random_secret("");
    let now = now_ms();
    let expires = now + hours * 3_600_000;
    let hash = sha256_hex(&secret);
    db.transact(crate::store::tx_body(move |tx| {
        let hash = hash.clone();
        Box::pin(async move {
            // Opportunistic clean-up keeps the table from growing without bound.
            tx.execute("DELETE FROM sessions WHERE expires_at <= $1", args![now]).await?;
            tx.execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                args![hash, user_id, now, expires],
            )
            .await?;
            Ok::<_, ApiError>(())
        })
    }))
    .await?;
    Ok(secret)
}

/// Ends the session with this secret (logging out).
pub async fn end_session(db: &Db, secret: &str) -> ApiResult<()> {
    db.execute("DELETE FROM sessions WHERE token_hash = $1", args![sha256_hex(secret)]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordHash;

    use super::*;

    #[test]
    fn the_dummy_hash_matches_nothing() {
        assert!(!verify_password("anything", &DUMMY_HASH));
        assert!(PasswordHash::new(&DUMMY_HASH).is_ok());
    }
}
