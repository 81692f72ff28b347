//! Server side of the pages: every server function calls the REST API in-process (the same
//! router, with the visitor's cookie), so the pages get exactly the authorisation,
//! validation and transactions the API has — there is one implementation of each rule.

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::request::Parts;
use http::{Method, Request, StatusCode};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use pairwise_api::error::ErrorReply;
use pairwise_api::import::LineError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::errors::{FORBIDDEN, NOT_LOGGED_IN, fail};

/// The REST API router, given to the pages as context by the server.
#[derive(Clone)]
pub struct ApiRouter(pub axum::Router);

/// The body of a call that sends none.
pub const NO_BODY: Option<&()> = None;

/// One REST call: the visitor's identity travels along with the JSON `body`, and the
/// reply's JSON comes back as `T`.
pub async fn call<T: DeserializeOwned>(
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<T, ServerFnError> {
    let bytes = match body {
        Some(body) => serde_json::to_vec(body).map_err(internal)?,
        None => Vec::new(),
    };
    let response = send(method, path, "application/json", bytes).await?;
    // 204 replies (logout, revoke) have no body.
    let response = if response.is_empty() { b"null".to_vec() } else { response };
    serde_json::from_slice(&response).map_err(internal)
}

/// A `GET` of `path`.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ServerFnError> {
    call(Method::GET, path, NO_BODY).await
}

/// Like [`call`], but "not logged in" is an answer (`None`), not a redirect.
pub async fn call_if_logged_in<T: DeserializeOwned>(path: &str) -> Result<Option<T>, ServerFnError> {
    match send_unchecked(Method::GET, path, "application/json", Vec::new()).await? {
        (StatusCode::UNAUTHORIZED, _) => Ok(None),
        (status, bytes) if status.is_success() => serde_json::from_slice(&bytes).map(Some).map_err(internal),
        (status, bytes) => Err(api_error(status, &bytes)),
    }
}

/// Sends a raw body (an import file) and returns the reply's JSON.
pub async fn call_raw<T: DeserializeOwned>(
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<T, ServerFnError> {
    let response = send(method, path, content_type, body).await?;
    serde_json::from_slice(&response).map_err(internal)
}

async fn send(method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<Vec<u8>, ServerFnError> {
    match send_unchecked(method, path, content_type, body).await? {
        (status, bytes) if status.is_success() => Ok(bytes),
        (status, bytes) => Err(api_error(status, &bytes)),
    }
}

async fn send_unchecked(
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Vec<u8>), ServerFnError> {
    let ApiRouter(router) = use_context::<ApiRouter>().ok_or_else(|| internal("API router missing from context"))?;
    let mut request = Request::builder().method(method).uri(path).header(CONTENT_TYPE, content_type);
    if let Some(parts) = use_context::<Parts>() {
        for name in [COOKIE, AUTHORIZATION] {
            if let Some(value) = parts.headers.get(&name) {
                request = request.header(name, value.clone());
            }
        }
        // The login rate limit is per address: pass the visitor's on.
        if let Some(connect_info) = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
            request = request.extension(*connect_info);
        }
    }
    let request = request.body(Body::from(body)).map_err(internal)?;
    let response = router.oneshot(request).await.map_err(internal)?;
    let status = response.status();
    if let Some(options) = use_context::<ResponseOptions>() {
        // Login and logout set or clear the session cookie: hand it to the browser.
        for cookie in response.headers().get_all(SET_COOKIE) {
            options.append_header(SET_COOKIE, cookie.clone());
        }
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(internal)?.to_vec();
    Ok((status, bytes))
}

/// Turns an API error reply into a message for people; a missing session sends the
/// visitor to the login page, a refusal sets the page's status to 403.
fn api_error(status: StatusCode, body: &[u8]) -> ServerFnError {
    let reply: Option<ErrorReply> = serde_json::from_slice(body).ok();
    let mut message = reply.as_ref().map_or("request failed", |r| r.message.as_str()).to_string();
    // An import's problems, by line.
    let errors = reply.as_ref().and_then(|r| r.details.as_ref()).map_or(&[][..], |d| d.errors.as_slice());
    for LineError { line, field, message: text } in errors.iter().take(20) {
        message.push_str(&if field.is_empty() {
            format!("\nline {line}: {text}")
        } else {
            format!("\nline {line}: field `{field}` {text}")
        });
    }
    match status {
        StatusCode::UNAUTHORIZED => {
            leptos_axum::redirect("/login");
            fail(format!("{NOT_LOGGED_IN}: {message}"))
        }
        StatusCode::FORBIDDEN => {
            if let Some(options) = use_context::<ResponseOptions>() {
                options.set_status(StatusCode::FORBIDDEN);
            }
            fail(format!("{FORBIDDEN}: {message}"))
        }
        _ => fail(message),
    }
}

fn internal(error: impl std::fmt::Display) -> ServerFnError {
    fail(format!("internal error: {error}"))
}
