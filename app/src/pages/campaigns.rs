//! The annotator's start page: the campaigns they may rate, with their own progress.

use leptos::prelude::*;
use leptos_meta::Title;
use pairwise_api::campaigns::CampaignStatus;

use crate::components::{Loading, ProgressBar};
use crate::errors::or_error;
use crate::server_fns::campaigns::list_campaigns;

#[component]
pub fn CampaignsPage() -> impl IntoView {
    let campaigns = Resource::new(|| (), |_| list_campaigns());
    view! {
        <Title text="Campaigns · Pairwise" />
        <h1>"Your campaigns"</h1>
        <Suspense fallback=|| view! { <Loading /> }>
            {move || Suspend::new(async move {
                or_error(campaigns.await, |list| {
                    let active: Vec<_> = list.into_iter().filter(|c| c.status == CampaignStatus::Active).collect();
                    if active.is_empty() {
                        return view! { <p class="muted">"No campaign is open for rating right now."</p> }.into_any();
                    }
                    view! {
                        <ul class="campaigns">
                            {active
                                .into_iter()
                                .map(|c| {
                                    view! {
                                        <li class="card">
                                            <a class="title" href=format!("/rate/{}", c.id)>
                                                {c.name.clone()}
                                            </a>
                                            <ProgressBar value=c.votes target=c.target_votes />
                                            <span class="muted">
                                                {format!(
                                                    "you: {} votes · campaign: {} / {}",
                                                    c.my_votes,
                                                    c.votes,
                                                    c.target_votes,
                                                )}
                                            </span>
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ul>
                    }
                        .into_any()
                })
            })}
        </Suspense>
    }
}
