//! The login form. The session lives in an HttpOnly, SameSite=Lax cookie set by the API.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;

use crate::errors::FormError;
use crate::server_fns::accounts::Login;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
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
            <FormError result=login.value() path={<Login as ServerFn>::PATH} />
        </section>
    }
}
