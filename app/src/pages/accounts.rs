//! Admin: users (create, disable / enable, reset password) and API tokens (create,
//! revoke). A new token's secret is shown once, right after it is created.

use leptos::prelude::*;
use leptos_meta::Title;

use super::{AdminOnly, ErrorBox};
use crate::api::{CreateToken, CreateUser, ResetPassword, RevokeToken, SetUserActive, load_accounts};
use crate::format::utc_minute;

#[component]
pub fn AccountsPage() -> impl IntoView {
    view! {
        <Title text="Users & tokens · Pairwise admin" />
        <AdminOnly>
            <Accounts />
        </AdminOnly>
    }
}

#[component]
fn Accounts() -> impl IntoView {
    let create_user = ServerAction::<CreateUser>::new();
    let set_active = ServerAction::<SetUserActive>::new();
    let reset = ServerAction::<ResetPassword>::new();
    let create_token = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let data = Resource::new(
        move || {
            (
                create_user.version().get(),
                set_active.version().get(),
                reset.version().get(),
                create_token.version().get(),
                revoke.version().get(),
            )
        },
        |_| load_accounts(),
    );
    // A created user's password or a token's name should not linger in the form.
    let new_user_form = NodeRef::<leptos::html::Form>::new();
    let new_token_form = NodeRef::<leptos::html::Form>::new();
    let reset_on_success = move |succeeded: bool, form: NodeRef<leptos::html::Form>| {
        if succeeded && let Some(form) = form.get_untracked() {
            form.reset();
        }
    };
    Effect::new(move |_| reset_on_success(matches!(create_user.value().get(), Some(Ok(_))), new_user_form));
    Effect::new(move |_| reset_on_success(matches!(create_token.value().get(), Some(Ok(_))), new_token_form));
    let last_error = move || {
        [
            create_user.value().get().and_then(Result::err),
            set_active.value().get().and_then(Result::err),
            reset.value().get().and_then(Result::err),
            create_token.value().get().and_then(Result::err),
            revoke.value().get().and_then(|r| r.err()),
        ]
        .into_iter()
        .flatten()
        .next()
    };
    view! {
        <h1>"Users & API tokens"</h1>
        {move || last_error().map(|error| view! { <ErrorBox error /> })}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let data = match data.await {
                    Ok(data) => data,
                    Err(error) => return view! { <ErrorBox error /> }.into_any(),
                };
                let users = data.users.clone();
                view! {
                    <section class="card">
                        <h2>"Users"</h2>
                        <table class="data" id="users">
                            <thead>
                                <tr>
                                    <th>"User"</th>
                                    <th>"Role"</th>
                                    <th>"Status"</th>
                                    <th>"Actions"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {data
                                    .users
                                    .into_iter()
                                    .map(|u| {
                                        view! {
                                            <tr>
                                                <td>{u.username.clone()}</td>
                                                <td>{u.role.clone()}</td>
                                                <td>{if u.active { "active" } else { "disabled" }}</td>
                                                <td class="row-actions">
                                                    <ActionForm action=set_active attr:class="inline">
                                                        <input type="hidden" name="id" value=u.id />
                                                        <input type="hidden" name="active" value=(!u.active).to_string() />
                                                        <button type="submit">{if u.active { "Disable" } else { "Enable" }}</button>
                                                    </ActionForm>
                                                    <ActionForm action=reset attr:class="inline">
                                                        <input type="hidden" name="id" value=u.id />
                                                        <input type="password" name="password" placeholder="new password" minlength="8" required />
                                                        <button type="submit">"Reset password"</button>
                                                    </ActionForm>
                                                </td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                        <h3>"New user"</h3>
                        <ActionForm action=create_user node_ref=new_user_form attr:class="grid-form" attr:id="new-user">
                            <label>"Username" <input type="text" name="username" required /></label>
                            <label>"Password" <input type="password" name="password" minlength="8" required /></label>
                            <label>
                                "Role" <select name="role">
                                    <option value="annotator">"annotator"</option>
                                    <option value="admin">"admin"</option>
                                </select>
                            </label>
                            <button type="submit" class="primary">"Create user"</button>
                        </ActionForm>
                    </section>
                    <section class="card">
                        <h2>"API tokens"</h2>
                        <table class="data" id="tokens">
                            <thead>
                                <tr>
                                    <th>"Name"</th>
                                    <th>"User"</th>
                                    <th>"Prefix"</th>
                                    <th>"Created (UTC)"</th>
                                    <th>"Status"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {data
                                    .tokens
                                    .into_iter()
                                    .map(|t| {
                                        view! {
                                            <tr>
                                                <td>{t.name.clone()}</td>
                                                <td>{t.username.clone()}</td>
                                                <td><code>{t.prefix.clone()}</code></td>
                                                <td>{utc_minute(t.created_at)}</td>
                                                <td>
                                                    {match t.revoked_at {
                                                        Some(at) => format!("revoked {}", utc_minute(at)).into_any(),
                                                        None => {
                                                            view! {
                                                                <ActionForm action=revoke attr:class="inline">
                                                                    <input type="hidden" name="id" value=t.id />
                                                                    <button type="submit">"Revoke"</button>
                                                                </ActionForm>
                                                            }
                                                                .into_any()
                                                        }
                                                    }}
                                                </td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                        <h3>"New token"</h3>
                        <ActionForm action=create_token node_ref=new_token_form attr:class="grid-form" attr:id="new-token">
                            <label>"Name" <input type="text" name="name" required placeholder="e.g. nightly-export" /></label>
                            <label>
                                "For user"
                                <select name="user_id">
                                    {users
                                        .into_iter()
                                        .map(|u| view! { <option value=u.id>{u.username}</option> })
                                        .collect_view()}
                                </select>
                            </label>
                            <button type="submit" class="primary">"Create token"</button>
                        </ActionForm>
                    </section>
                }
                    .into_any()
            })}
        </Transition>
        {move || {
            create_token.value().get().and_then(Result::ok).map(|secret| {
                view! {
                    <p class="ok" id="new-token-secret">
                        "New token (copy it now, it is not shown again): " <code>{secret}</code>
                    </p>
                }
            })
        }}
    }
}
