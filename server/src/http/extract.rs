//! Request extractors: who is calling (`CurrentUser`, `AdminUser`, from a session cookie
//! or an API token) and `Json` / `Path` / `Query` whose rejections use the API's error
//! shape.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::cookie::CookieJar;

use crate::accounts::sessions::{Credential, HashedCredential, SESSION_COOKIE, lookup_caller};
use crate::accounts::{CurrentUser, Role};
use crate::error::{ApiError, ApiResult};
use crate::http::state::AppState;
use crate::votes::Rater;

/// The request's credential, hashed: an API token, else the session cookie.
fn credential(parts: &Parts) -> ApiResult<HashedCredential> {
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // A token skips the cookie parsing: API clients send no cookies, on every request.
    match bearer {
        Some(token) => Ok(Credential::Token(token.trim()).hashed()),
        None => {
            let jar = CookieJar::from_headers(&parts.headers);
            let cookie = jar.get(SESSION_COOKIE).ok_or(ApiError::Unauthorized)?;
            Ok(Credential::Session(cookie.value()).hashed())
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<CurrentUser> {
        lookup_caller(&state.db, &credential(parts)?).await?.ok_or(ApiError::Unauthorized)
    }
}

/// The caller of a rating endpoint, checked by the store where it does the work (see `Rater`).
/// A request without any credential is refused here.
impl FromRequestParts<AppState> for Rater {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> ApiResult<Rater> {
        Ok(Rater(credential(parts)?))
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
        if user.role != Role::Admin {
            return Err(ApiError::forbidden("this action needs the admin role"));
        }
        Ok(AdminUser(user))
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
    }
}

/// `axum::Json` whose rejections use the API's error shape.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` whose rejections use the API's error shape.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
    }
}

/// `axum::extract::Path` whose rejections use the API's error shape.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
