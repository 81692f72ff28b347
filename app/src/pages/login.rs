//! The login form. The session lives in an HttpOnly, SameSite=Lax cookie set by the API.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;

use super::{ErrorBox, form_error_from_url};
use crate::api::Login;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let no_js_error = form_error_from_url(<Login as ServerFn>::PATH);
    view! {
        <Title text="Log in · Pairwise" />
        <section class="card narrow">
            <h1>"Log in"</h1>
            <ActionForm action=login attr:id="login-form">
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
            {move || match login.value().get() {
                Some(Err(error)) => Some(view! { <ErrorBox error /> }.into_any()),
                _ => {
                    no_js_error
                        .get()
                        .map(|text| view! { <ErrorBox error=ServerFnError::ServerError(text) /> }.into_any())
                }
            }}
        </section>
    }
}
