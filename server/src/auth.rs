//! Authentication: password hashing, sessions (cookie), API tokens (bearer), the
//! `CurrentUser` extractor, the login rate limiter and the `/api/v1/auth` routes.
//!
//! Sessions and tokens are 256-bit random secrets; only their SHA-256 is stored, so a
//! leaked database does not leak usable credentials. Passwords are hashed with argon2id.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::args;
use crate::db::now_ms;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "pairwise_session";
pub const TOKEN_PREFIX: &str = "pw_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Annotator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Annotator => "annotator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "annotator" => Some(Role::Annotator),
            _ => None,
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

impl CurrentUser {
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.role == Role::Admin { Ok(()) } else { Err(ApiError::forbidden("this action needs the admin role")) }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<CurrentUser> {
        let now = now_ms();
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let row = if let Some(token) = bearer {
            let sql = "SELECT u.id, u.username, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id \
                       WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.active = 1";
            state.db.read_row(sql, args![sha256_hex(token.trim())]).await?
        } else {
            let jar = CookieJar::from_headers(&parts.headers);
            let Some(cookie) = jar.get(SESSION_COOKIE) else {
                return Err(ApiError::Unauthorized);
            };
            let sql = "SELECT u.id, u.username, u.role FROM sessions s JOIN users u ON u.id = s.user_id \
                       WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active = 1";
            state.db.read_row(sql, args![sha256_hex(cookie.value()), now]).await?
        };
        let row = row.ok_or(ApiError::Unauthorized)?;
        let role = row.text("role")?;
        Ok(CurrentUser {
            id: row.int("id")?,
            username: row.text("username")?,
            role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?,
        })
    }
}

/// The caller, who must be an admin. Extracted before the request body, so a
/// non-admin is refused before anything in the body is looked at.
#[derive(Debug, Clone)]
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<AdminUser> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require_admin()?;
        Ok(AdminUser(user))
    }
}

pub fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

/// A new random secret (URL-safe, 43 characters) with an optional prefix.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Argon2id hash in PHC string format. CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

pub async fn hash_password_blocking(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await?
}

pub fn validate_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < 8 {
        return Err(ApiError::bad_request("password must be at least 8 characters"));
    }
    Ok(())
}

/// Fixed-window limiter on failed logins, keyed by username and by client address, so
/// neither guessing one account's password nor spraying many accounts is fast. An address
/// gets a larger budget than an account because many people can share one (NAT, proxy).
pub struct LoginLimiter {
    per_user: u32,
    per_address: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Limiter keys of one login attempt.
pub struct LoginKeys {
    user: String,
    address: String,
}

impl LoginKeys {
    pub fn new(username: &str, address: &str) -> LoginKeys {
        LoginKeys { user: format!("user:{username}"), address: format!("addr:{address}") }
    }
}

impl LoginLimiter {
    pub fn new(max_failures_per_minute: u32) -> LoginLimiter {
        let per_user = max_failures_per_minute.max(1);
        LoginLimiter {
            per_user,
            per_address: per_user * 5,
            window: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Err(seconds to wait) when the account or the address is over its limit.
    pub fn check(&self, keys: &LoginKeys) -> Result<(), u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        failures.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        for (key, limit) in [(&keys.user, self.per_user), (&keys.address, self.per_address)] {
            if let Some((start, count)) = failures.get(key)
                && *count >= limit
            {
                let wait = self.window.saturating_sub(now.duration_since(*start));
                return Err(wait.as_secs().max(1));
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, keys: &LoginKeys) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        for key in [&keys.user, &keys.address] {
            failures.entry(key.clone()).or_insert((now, 0)).1 += 1;
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn record_success(&self, keys: &LoginKeys) {
        self.failures.lock().expect("limiter lock").remove(&keys.user);
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
}

#[derive(Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// A hash verified when the user does not exist, so response time does not reveal which
/// usernames are valid (it costs the same argon2 work as a real check).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("no such user").expect("argon2 with default parameters cannot fail"));

/// Checks a username/password pair (with rate limiting) and returns the user on success.
pub async fn check_login(state: &AppState, client: &str, username: &str, password: &str) -> ApiResult<CurrentUser> {
    let keys = LoginKeys::new(username, client);
    state.login_limiter.check(&keys).map_err(|retry_after_s| ApiError::TooManyRequests { retry_after_s })?;
    let row = sqlx::query("SELECT id, username, role, password_hash FROM users WHERE username = $1 AND active = 1")
        .bind(username)
        .fetch_optional(&state.db.read)
        .await?;
    let (user, hash) = match row {
        Some(row) => {
            let role: String = row.try_get("role")?;
            let user = CurrentUser {
                id: row.try_get("id")?,
                username: row.try_get("username")?,
                role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?,
            };
            (Some(user), row.try_get::<String, _>("password_hash")?)
        }
        None => (None, DUMMY_HASH.clone()),
    };
    let password = password.to_string();
    let ok =
        tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.map_err(anyhow::Error::from)?;
    match user {
        Some(user) if ok => {
            state.login_limiter.record_success(&keys);
            Ok(user)
        }
        _ => {
            state.login_limiter.record_failure(&keys);
            Err(ApiError::Unauthorized)
        }
    }
}

/// Creates a server-side session and returns the cookie that carries it.
pub async fn create_session(state: &AppState, user_id: i64) -> ApiResult<Cookie<'static>> {
    let secret = random_secret("");
    let now = now_ms();
    let expires = now + state.config.session_hours * 3_600_000;
    let mut tx = state.db.begin_write().await?;
    // Opportunistic clean-up keeps the table from growing without bound.
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(sha256_hex(&secret))
        .bind(user_id)
        .bind(now)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Cookie::build((SESSION_COOKIE, secret))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.cookie_secure)
        .path("/")
        .max_age(time_duration_hours(state.config.session_hours))
        .build())
}

fn time_duration_hours(hours: i64) -> time::Duration {
    time::Duration::hours(hours)
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<(CookieJar, Json<CurrentUser>)> {
    let user = check_login(&state, &addr.ip().to_string(), &req.username, &req.password).await?;
    let cookie = create_session(&state, user.id).await?;
    tracing::info!(user = %user.username, "login");
    Ok((jar.add(cookie), Json(user)))
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> ApiResult<CookieJar> {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        let mut tx = state.db.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(sha256_hex(cookie.value()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/")))
}

async fn me(user: CurrentUser) -> Json<CurrentUser> {
    Json(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("anything", &DUMMY_HASH));
        assert!(PasswordHash::new(&DUMMY_HASH).is_ok());
    }

    #[test]
    fn limiter_blocks_after_max_failures() {
        let limiter = LoginLimiter::new(2);
        let keys = LoginKeys::new("a", "10.0.0.1");
        assert!(limiter.check(&keys).is_ok());
        limiter.record_failure(&keys);
        limiter.record_failure(&keys);
        assert!(limiter.check(&keys).is_err());
        // Another account from the same address still has budget (address limit is 10).
        assert!(limiter.check(&LoginKeys::new("b", "10.0.0.1")).is_ok());
        for _ in 0..8 {
            limiter.record_failure(&LoginKeys::new("c", "10.0.0.1"));
        }
        assert!(limiter.check(&LoginKeys::new("d", "10.0.0.1")).is_err());
    }
}
