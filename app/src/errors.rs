//! How failures reach the visitor: the prefixes of the server functions' errors, `fail`,
//! and the components that show a failed load or form post in place.

use leptos::prelude::*;
use leptos::server_fn::error::ServerFnUrlError;
use leptos_router::hooks::use_query_map;

/// Prefix of the error a server function returns when the visitor has no session.
pub const NOT_LOGGED_IN: &str = "not logged in";
/// Prefix of the error a server function returns when the visitor may not do this.
pub const FORBIDDEN: &str = "forbidden";

/// A server function error with a message for people.
#[cfg(feature = "ssr")]
pub fn fail(message: impl Into<String>) -> ServerFnError {
    ServerFnError::ServerError(message.into())
}

/// The text of a server function error, without the framework's prefix.
pub fn error_text(error: &ServerFnError) -> String {
    match error {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// A failed load or action, shown in place. Multi-line messages (import errors by
/// line) keep their lines.
#[component]
pub fn ErrorBox(error: ServerFnError) -> impl IntoView {
    let text = error_text(&error);
    let class = if text.starts_with(FORBIDDEN) { "error forbidden" } else { "error" };
    let hint = text.starts_with(NOT_LOGGED_IN).then(|| view! { <a href="/login">"Log in"</a> });
    view! {
        <div class=class role="alert">
            <pre>{text}</pre>
            {hint}
        </div>
    }
}

/// A loaded resource shown by `show`, or its error in its place.
pub fn or_error<T>(result: Result<T, ServerFnError>, show: impl FnOnce(T) -> AnyView) -> AnyView {
    match result {
        Ok(value) => show(value),
        Err(error) => view! { <ErrorBox error /> }.into_any(),
    }
}

/// The error of a form's last post: the action's, or before any (the form posted
/// without JavaScript and the page reloaded) the one the server function at `path` left
/// in the URL.
#[component]
pub fn FormError<T>(#[prop(into)] result: Signal<Option<Result<T, ServerFnError>>>, path: &'static str) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
{
    let no_js_error = form_error_from_url(path);
    move || match result.get() {
        Some(Err(error)) => Some(view! { <ErrorBox error /> }),
        Some(Ok(_)) => None,
        None => no_js_error.get().map(|text| view! { <ErrorBox error=ServerFnError::ServerError(text) /> }),
    }
}

/// The error a server function left in the URL after a form post without JavaScript
/// (`?__path=…&__err=…`), when it belongs to the function at `path`.
pub fn form_error_from_url(path: &'static str) -> Signal<Option<String>> {
    let query = use_query_map();
    Signal::derive(move || {
        query.with(|q| {
            (q.get_str("__path") == Some(path))
                .then(|| q.get_str("__err").map(|e| error_text(&ServerFnUrlError::<ServerFnError>::decode_err(e))))
                .flatten()
        })
    })
}
