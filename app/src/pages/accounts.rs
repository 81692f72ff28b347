//! Admin: users (create, disable / enable, reset password) and API tokens (create,
//! revoke). A new token's secret is shown once, right after it is created.

use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;
use pairwise_api::accounts::{TokenInfo, User};

use super::AdminOnly;
use crate::components::{Column, Loading, Select, TableCard};
use crate::errors::{ErrorBox, or_error};
use crate::format::utc_minute;
use crate::server_fns::accounts::{
    Accounts, CreateToken, CreateUser, ResetPassword, RevokeToken, SetUserActive, load_accounts,
};

const USER_COLUMNS: &[Column] =
    &[Column::text("User"), Column::text("Role"), Column::text("Status"), Column::text("Actions")];

const TOKEN_COLUMNS: &[Column] = &[
    Column::text("Name"),
    Column::text("User"),
    Column::text("Prefix"),
    Column::text("Created (UTC)"),
    Column::text("Status"),
];

#[component]
pub fn AccountsPage() -> impl IntoView {
    view! {
        <Title text="Users & tokens · Pairwise admin" />
        <AdminOnly>
            <UsersAndTokens />
        </AdminOnly>
    }
}

#[component]
fn UsersAndTokens() -> impl IntoView {
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
    let new_user_form = NodeRef::<Form>::new();
    let new_token_form = NodeRef::<Form>::new();
    let reset_on_success = move |succeeded: bool, form: NodeRef<Form>| {
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
            revoke.value().get().and_then(Result::err),
        ]
        .into_iter()
        .flatten()
        .next()
    };
    view! {
        <h1>"Users & API tokens"</h1>
        {move || last_error().map(|error| view! { <ErrorBox error /> })}
        <Transition fallback=|| view! { <Loading /> }>
            {move || Suspend::new(async move {
                or_error(data.await, |Accounts { users, tokens }| {
                    view! {
                        <UsersCard users=users.clone() create_user set_active reset form=new_user_form />
                        <TokensCard tokens users create_token revoke form=new_token_form />
                    }
                        .into_any()
                })
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

/// The users, each with its disable / enable and password reset forms, and the form that
/// creates one.
#[component]
fn UsersCard(
    users: Vec<User>,
    create_user: ServerAction<CreateUser>,
    set_active: ServerAction<SetUserActive>,
    reset: ServerAction<ResetPassword>,
    form: NodeRef<Form>,
) -> impl IntoView {
    let rows: Vec<_> = users
        .into_iter()
        .map(|u| {
            view! {
                <tr>
                    <td>{u.username.clone()}</td>
                    <td>{u.role.as_str()}</td>
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
        .collect();
    view! {
        <TableCard title="Users" id="users" columns=USER_COLUMNS rows form_title="New user">
            <ActionForm action=create_user node_ref=form attr:class="grid-form" attr:id="new-user">
                <label>"Username" <input type="text" name="username" required /></label>
                <label>"Password" <input type="password" name="password" minlength="8" required /></label>
                <label>
                    "Role" <Select name="role" options=vec![("annotator", "annotator"), ("admin", "admin")] />
                </label>
                <button type="submit" class="primary">"Create user"</button>
            </ActionForm>
        </TableCard>
    }
}

/// Every API token, the live ones with a revoke form, and the form that creates one for
/// any of the `users`.
#[component]
fn TokensCard(
    tokens: Vec<TokenInfo>,
    users: Vec<User>,
    create_token: ServerAction<CreateToken>,
    revoke: ServerAction<RevokeToken>,
    form: NodeRef<Form>,
) -> impl IntoView {
    let rows: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let status = match t.revoked_at {
                Some(at) => format!("revoked {}", utc_minute(at)).into_any(),
                None => view! {
                    <ActionForm action=revoke attr:class="inline">
                        <input type="hidden" name="id" value=t.id />
                        <button type="submit">"Revoke"</button>
                    </ActionForm>
                }
                .into_any(),
            };
            view! {
                <tr>
                    <td>{t.name}</td>
                    <td>{t.username}</td>
                    <td><code>{t.prefix}</code></td>
                    <td>{utc_minute(t.created_at)}</td>
                    <td>{status}</td>
                </tr>
            }
        })
        .collect();
    view! {
        <TableCard title="API tokens" id="tokens" columns=TOKEN_COLUMNS rows form_title="New token">
            <ActionForm action=create_token node_ref=form attr:class="grid-form" attr:id="new-token">
                <label>"Name" <input type="text" name="name" required placeholder="e.g. nightly-export" /></label>
                <label>
                    "For user"
                    <select name="user_id">
                        {users.into_iter().map(|u| view! { <option value=u.id>{u.username}</option> }).collect_view()}
                    </select>
                </label>
                <button type="submit" class="primary">"Create token"</button>
            </ActionForm>
        </TableCard>
    }
}
