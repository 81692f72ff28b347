//! Server functions of accounts: who is logged in, logging in and out, and (admins) users
//! and API tokens.

use leptos::prelude::*;
use pairwise_api::accounts::{TokenInfo, User};
use serde::{Deserialize, Serialize};
#[cfg(feature = "ssr")]
use {
    crate::backend::{NO_BODY, call, call_if_logged_in, get},
    crate::errors::fail,
    http::Method,
    pairwise_api::accounts::{LoginRequest, NewToken, NewUser, Role, TokenRequest, UserUpdate},
};

/// The admin's users page: users and every API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accounts {
    pub users: Vec<User>,
    pub tokens: Vec<TokenInfo>,
}

/// The current visitor, or `None` without a session. (The API's type is spelled out: the
/// server function's own argument struct is named `CurrentUser`.)
#[server(prefix = "/ui", endpoint = "current_user")]
pub async fn current_user() -> Result<Option<pairwise_api::accounts::CurrentUser>, ServerFnError> {
    call_if_logged_in("/api/v1/auth/me").await
}

/// Logs in and goes on to `next` (the page that sent the visitor to log in) when it is a
/// path on this site, else to the visitor's home page (campaigns for admins, rating for
/// annotators).
#[server(prefix = "/ui", endpoint = "login")]
pub async fn login(username: String, password: String, next: Option<String>) -> Result<(), ServerFnError> {
    let me: pairwise_api::accounts::CurrentUser =
        call(Method::POST, "/api/v1/auth/login", Some(&LoginRequest { username, password })).await?;
    let home = if me.is_admin() { "/admin" } else { "/" };
    leptos_axum::redirect(next.as_deref().filter(|next| is_local_path(next)).unwrap_or(home));
    Ok(())
}

/// A path on this site (`/…`), not a link elsewhere: no scheme, no `//host` or `/\host`
/// (which browsers read as another host), no control characters. Keeps `?next=` from being
/// an open redirect. Only the server side of `login` calls it.
#[cfg(any(feature = "ssr", test))]
pub fn is_local_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') && !path.chars().any(char::is_control)
}

#[server(prefix = "/ui", endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    call::<()>(Method::POST, "/api/v1/auth/logout", NO_BODY).await?;
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(prefix = "/ui", endpoint = "load_accounts")]
pub async fn load_accounts() -> Result<Accounts, ServerFnError> {
    let users = get("/api/v1/users").await?;
    let tokens = get("/api/v1/tokens").await?;
    Ok(Accounts { users, tokens })
}

#[server(prefix = "/ui", endpoint = "create_user")]
pub async fn create_user(username: String, password: String, role: String) -> Result<User, ServerFnError> {
    let role = Role::parse(&role).ok_or_else(|| fail(format!("role: `{role}` is not admin or annotator")))?;
    call(Method::POST, "/api/v1/users", Some(&NewUser { username, password, role })).await
}

#[server(prefix = "/ui", endpoint = "set_user_active")]
pub async fn set_user_active(id: i64, active: bool) -> Result<User, ServerFnError> {
    let update = UserUpdate { active: Some(active), ..UserUpdate::default() };
    call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(&update)).await
}

/// Sets a new password; the user's sessions end and their tokens are revoked.
#[server(prefix = "/ui", endpoint = "reset_password")]
pub async fn reset_password(id: i64, password: String) -> Result<User, ServerFnError> {
    let update = UserUpdate { password: Some(password), ..UserUpdate::default() };
    call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(&update)).await
}

/// Creates an API token; the secret is in the reply, once.
#[server(prefix = "/ui", endpoint = "create_token")]
pub async fn create_token(name: String, user_id: i64) -> Result<String, ServerFnError> {
    let reply: NewToken =
        call(Method::POST, "/api/v1/tokens", Some(&TokenRequest { name, user_id: Some(user_id) })).await?;
    Ok(reply.token)
}

#[server(prefix = "/ui", endpoint = "revoke_token")]
pub async fn revoke_token(id: i64) -> Result<(), ServerFnError> {
    call(Method::DELETE, &format!("/api/v1/tokens/{id}"), NO_BODY).await
}

#[cfg(test)]
mod tests {
    use super::is_local_path;

    #[test]
    fn next_must_stay_on_this_site() {
        for ok in ["/", "/admin", "/rate/3?x=1", "/admin/campaigns/2#export"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for bad in ["", "admin", "//evil.example", "/\\evil.example", "https://evil.example", "/a\nb"] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }
}
