//! Web pages of Pairwise: Leptos components rendered on the server and hydrated in the
//! browser. Annotators log in, pick a campaign and rate pairs; admins manage campaigns,
//! watch their dashboards, export data and manage accounts.
//!
//! Every route renders with `SsrMode::Async` (the whole page, data included, before the
//! first byte), so each page and each form also works without JavaScript.

#[cfg(feature = "ssr")]
pub mod backend;
mod components;
mod errors;
mod format;
#[cfg(feature = "ssr")]
mod markdown;
mod pages;
mod server_fns;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::hooks::use_location;
use leptos_router::{SsrMode, path};

use crate::pages::{
    AccountsPage, AdminCampaignPage, AdminCampaignsPage, CampaignsPage, LoginPage, NotFound, RatePage, RunPage,
};
use crate::server_fns::accounts::{Logout, current_user};

/// The HTML document around the app (server side only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Set once the WASM has taken over the page: tests (and curious people) can tell a
    // hydrated page from the server-rendered one.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    view! {
        <Stylesheet id="pairwise" href="/pkg/pairwise.css" />
        <Title text="Pairwise" />
        <Router>
            <div id="app" data-hydrated=move || hydrated.get().to_string()>
                <Nav />
                <main>
                    <Routes fallback=NotFound>
                        <Route path=path!("/login") view=LoginPage ssr=SsrMode::Async />
                        <Route path=path!("/") view=CampaignsPage ssr=SsrMode::Async />
                        <Route path=path!("/rate/:id") view=RatePage ssr=SsrMode::Async />
                        <Route path=path!("/admin") view=AdminCampaignsPage ssr=SsrMode::Async />
                        <Route path=path!("/admin/campaigns/:id") view=AdminCampaignPage ssr=SsrMode::Async />
                        <Route path=path!("/admin/users") view=AccountsPage ssr=SsrMode::Async />
                        <Route path=path!("/admin/runs/:id") view=RunPage ssr=SsrMode::Async />
                    </Routes>
                </main>
            </div>
        </Router>
    }
}

/// The top bar: links for the visitor's role, who is logged in, log out.
#[component]
fn Nav() -> impl IntoView {
    let location = use_location();
    // Asked again on every navigation, so logging in or out shows at once.
    let me = Resource::new(move || location.pathname.get(), |_| current_user());
    let logout = ServerAction::<Logout>::new();
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">
                "Pairwise"
            </A>
            <Suspense>
                {move || Suspend::new(async move {
                    match me.await {
                        Ok(Some(me)) => {
                            let admin = me.is_admin();
                            view! {
                                <nav>
                                    <A href="/">"Rate"</A>
                                    <Show when=move || admin>
                                        <A href="/admin">"Campaigns"</A>
                                        <A href="/admin/users">"Users & tokens"</A>
                                    </Show>
                                </nav>
                                <span class="who">{me.username}</span>
                                <ActionForm action=logout attr:class="inline">
                                    <button type="submit" class="link">
                                        "Log out"
                                    </button>
                                </ActionForm>
                            }
                                .into_any()
                        }
                        _ => view! { <A href="/login">"Log in"</A> }.into_any(),
                    }
                })}
            </Suspense>
        </header>
    }
}
