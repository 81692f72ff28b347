//! Admin: every campaign with its status and progress, and the form to create one.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;
use pairwise_api::campaigns::Campaign;

use super::AdminOnly;
use crate::components::{CampaignFields, Column, DataTable, Loading, ProgressBar, StatusBadge};
use crate::errors::{FormError, or_error};
use crate::server_fns::campaigns::{CreateCampaign, list_campaigns};

const COLUMNS: &[Column] =
    &[Column::text("Name"), Column::text("Status"), Column::num("Pairs"), Column::text("Votes / target")];

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
        <Suspense fallback=|| view! { <Loading /> }>
            {move || Suspend::new(async move {
                or_error(campaigns.await, |list| view! { <CampaignRows list /> }.into_any())
            })}
        </Suspense>
    }
}

/// One row per campaign: its name (a link to its page), status, pairs and progress.
#[component]
fn CampaignRows(list: Vec<Campaign>) -> impl IntoView {
    let rows: Vec<_> = list
        .into_iter()
        .map(|c| {
            view! {
                <tr>
                    <td>
                        <a href=format!("/admin/campaigns/{}", c.id)>{c.name}</a>
                    </td>
                    <td>
                        <StatusBadge status=c.status.as_str() />
                    </td>
                    <td class="num">{c.pairs}</td>
                    <td>
                        <ProgressBar value=c.votes target=c.target_votes />
                        {format!(" {} / {}", c.votes, c.target_votes)}
                    </td>
                </tr>
            }
        })
        .collect();
    view! { <DataTable empty="No campaigns yet: create one below." columns=COLUMNS rows /> }
}

#[component]
fn NewCampaignForm() -> impl IntoView {
    let create = ServerAction::<CreateCampaign>::new();
    view! {
        <section class="card">
            <h2>"New campaign"</h2>
            <ActionForm action=create attr:id="new-campaign" attr:class="grid-form">
                <CampaignFields campaign=None />
                <button type="submit" class="primary">
                    "Create"
                </button>
            </ActionForm>
            <FormError result=create.value() path={<CreateCampaign as ServerFn>::PATH} />
        </section>
    }
}
