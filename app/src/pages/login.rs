//! The login form. The session lives in an HttpOnly, SameSite=Lax cookie set by the API.
//! A page visited without a session sends the visitor here with `?next=PAGE`; the form
//! carries it along, and the login goes back there.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::errors::FormError;
use crate::server_fns::accounts::Login;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let next = use_query_map().with_untracked(|query| query.get("next")).unwrap_or_default();
    view! {
        <Title text="Log in · Pairwise" />
        <section class="card narrow">
            <h1>"Log in"</h1>
            <ActionForm action=login attr:id="login-form">
                <input type="hidden" name="next" value=next />
                <label>
                    "Username" <input type="text" name="username" autocomplete="username" required autofocus />
                </label>
                <label>
                    "Password"
                    <input type="password" name="password" autocomplete="current-password" required />
                </label>
                <button type="submit" class="primary" disabled=move || login.pending().get()>
                    "Log in"
                </button>
            </ActionForm>
            <FormError result=login.value() path={<Login as ServerFn>::PATH} />
        </section>
    }
}
