//! The pages, one module each, and what they share: the `:id` parameter, the admin gate,
//! the page's HTTP status and the 404 page.

mod accounts;
mod admin;
mod arena;
mod campaign;
mod campaigns;
mod login;
mod rank;
mod rate;
mod runs;
mod single;

pub use accounts::AccountsPage;
pub use admin::AdminCampaignsPage;
pub use campaign::AdminCampaignPage;
pub use campaigns::CampaignsPage;
pub use login::LoginPage;
pub use rate::RatePage;
pub use runs::{RunPage, RunsSection};

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::components::Loading;
use crate::errors::ErrorBox;
use crate::server_fns::accounts::current_user;

/// The page's `:id` route parameter (0 when missing or not a number: the API answers 404).
pub fn id_param() -> impl Fn() -> i64 + Copy + Send + Sync + 'static {
    let params = use_params_map();
    move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()).unwrap_or_default())
}

/// Shows `children` to admins only; anyone else gets a 403 page (and the login page
/// when not logged in).
#[component]
pub fn AdminOnly(children: ChildrenFn) -> impl IntoView {
    let me = Resource::new(|| (), |_| current_user());
    view! {
        <Suspense fallback=|| view! { <Loading /> }>
            {move || {
                let children = children.clone();
                Suspend::new(async move {
                    match me.await {
                        Ok(Some(me)) if me.is_admin() => children().into_any(),
                        Ok(Some(_)) => {
                            set_status(403);
                            view! {
                                <section class="error forbidden" role="alert">
                                    <h1>"403 — admins only"</h1>
                                    <p>"Your account may rate pairs but not manage campaigns."</p>
                                    <a href="/">"Back to your campaigns"</a>
                                </section>
                            }
                                .into_any()
                        }
                        Ok(None) => {
                            #[cfg(feature = "ssr")]
                            leptos_axum::redirect("/login");
                            view! { <a href="/login">"Log in"</a> }.into_any()
                        }
                        Err(error) => view! { <ErrorBox error /> }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

/// Sets the HTTP status of the page being rendered on the server (no-op in the browser).
pub fn set_status(code: u16) {
    #[cfg(feature = "ssr")]
    if let (Some(options), Ok(status)) =
        (use_context::<leptos_axum::ResponseOptions>(), http::StatusCode::from_u16(code))
    {
        options.set_status(status);
    }
    #[cfg(not(feature = "ssr"))]
    let _ = code;
}

#[component]
pub fn NotFound() -> impl IntoView {
    set_status(404);
    view! {
        <section>
            <h1>"Page not found"</h1>
            <a href="/">"Back to your campaigns"</a>
        </section>
    }
}
