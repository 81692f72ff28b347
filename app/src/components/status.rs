//! Small status displays: a status badge, a progress bar towards a target, and the
//! placeholder shown while a page's data loads.

use leptos::prelude::*;

/// A campaign's or run's status, styled by its name (`status active`, `status failed`…).
#[component]
pub fn StatusBadge(status: &'static str, #[prop(optional)] id: Option<&'static str>) -> impl IntoView {
    view! { <span class=format!("status {status}") id=id>{status}</span> }
}

/// Votes towards a target (a target of 0 shows an empty bar).
#[component]
pub fn ProgressBar(value: i64, target: i64, #[prop(optional)] id: Option<&'static str>) -> impl IntoView {
    view! { <progress id=id max=target.max(1) value=value></progress> }
}

/// The placeholder while data loads.
#[component]
pub fn Loading(#[prop(default = "Loading…")] text: &'static str) -> impl IntoView {
    view! { <p class="muted">{text}</p> }
}
