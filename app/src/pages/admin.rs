//! Admin: every campaign with its status and progress, and the form to create one.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;

use super::{AdminOnly, ErrorBox, form_error_from_url};
use crate::api::{CreateCampaign, list_campaigns};

#[component]
pub fn AdminCampaignsPage() -> impl IntoView {
    view! {
        <Title text="Campaigns · Pairwise admin" />
        <AdminOnly>
            <CampaignTable />
            <NewCampaignForm />
        </AdminOnly>
    }
}

#[component]
fn CampaignTable() -> impl IntoView {
    let campaigns = Resource::new(|| (), |_| list_campaigns());
    view! {
        <h1>"Campaigns"</h1>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match campaigns.await {
                    Ok(list) if list.is_empty() => {
                        view! { <p class="muted">"No campaigns yet: create one below."</p> }.into_any()
                    }
                    Ok(list) => {
                        view! {
                            <table class="data">
                                <thead>
                                    <tr>
                                        <th>"Name"</th>
                                        <th>"Status"</th>
                                        <th class="num">"Pairs"</th>
                                        <th>"Votes / target"</th>
                                    </tr>
                                </thead>
                                <tbody>
                                    {list
                                        .into_iter()
                                        .map(|c| {
                                            view! {
                                                <tr>
                                                    <td>
                                                        <a href=format!("/admin/campaigns/{}", c.id)>{c.name.clone()}</a>
                                                    </td>
                                                    <td>
                                                        <span class=format!("status {}", c.status)>{c.status.clone()}</span>
                                                    </td>
                                                    <td class="num">{c.pairs}</td>
                                                    <td>
                                                        <progress max=c.target_votes.max(1) value=c.votes></progress>
                                                        {format!(" {} / {}", c.votes, c.target_votes)}
                                                    </td>
                                                </tr>
                                            }
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        }
                            .into_any()
                    }
                    Err(error) => view! { <ErrorBox error /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn NewCampaignForm() -> impl IntoView {
    let create = ServerAction::<CreateCampaign>::new();
    let no_js_error = form_error_from_url(<CreateCampaign as ServerFn>::PATH);
    view! {
        <section class="card">
            <h2>"New campaign"</h2>
            <ActionForm action=create attr:id="new-campaign" attr:class="grid-form">
                <label>"Name" <input type="text" name="name" required /></label>
                <label>"Overlap (raters per pair)" <input type="number" name="overlap" value="3" min="1" max="50" /></label>
                <label>
                    "Gold rate" <input type="number" name="gold_rate" value="0" min="0" max="1" step="0.01" />
                </label>
                <label>
                    "Status" <select name="status">
                        <option value="draft">"draft"</option>
                        <option value="active">"active"</option>
                    </select>
                </label>
                <label class="wide">"Guidelines (Markdown)" <textarea name="guidelines" rows="4"></textarea></label>
                <button type="submit" class="primary">
                    "Create"
                </button>
            </ActionForm>
            {move || match create.value().get() {
                Some(Err(error)) => Some(view! { <ErrorBox error /> }.into_any()),
                _ => no_js_error.get().map(|t| view! { <ErrorBox error=ServerFnError::ServerError(t) /> }.into_any()),
            }}
        </section>
    }
}
