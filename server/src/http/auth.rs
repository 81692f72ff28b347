//! `/api/v1/auth`: logging in (sets the session cookie), logging out, and who am I.

use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use pairwise_api::accounts::LoginRequest;

use super::extract::ApiJson;
use super::state::AppState;
use crate::accounts::CurrentUser;
use crate::accounts::sessions::{SESSION_COOKIE, check_login, create_session, end_session};
use crate::error::ApiResult;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
}

/// The cookie that carries a new session's secret.
fn session_cookie(state: &AppState, secret: String) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, secret))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.cookie_secure)
        .path("/")
        .max_age(time::Duration::hours(state.config.session_hours))
        .build()
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<(CookieJar, Json<CurrentUser>)> {
    let client = addr.ip().to_string();
    let user = check_login(&state.db, &state.login_limiter, &client, &req.username, &req.password).await?;
    let secret = create_session(&state.db, user.id, state.config.session_hours).await?;
    tracing::info!(user = %user.username, "login");
    Ok((jar.add(session_cookie(&state, secret)), Json(user)))
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> ApiResult<CookieJar> {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        end_session(&state.db, cookie.value()).await?;
    }
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/")))
}

async fn me(user: CurrentUser) -> Json<CurrentUser> {
    Json(user)
}
