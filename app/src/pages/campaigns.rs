//! The annotator's start page: the campaigns they may rate, with their own progress.

use leptos::prelude::*;
use leptos_meta::Title;

use super::ErrorBox;
use crate::api::list_campaigns;

#[component]
pub fn CampaignsPage() -> impl IntoView {
    let campaigns = Resource::new(|| (), |_| list_campaigns());
    view! {
        <Title text="Campaigns · Pairwise" />
        <h1>"Your campaigns"</h1>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match campaigns.await {
                    Ok(list) => {
                        let active: Vec<_> = list.into_iter().filter(|c| c.status == "active").collect();
                        if active.is_empty() {
                            return view! { <p class="muted">"No campaign is open for rating right now."</p> }
                                .into_any();
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
                                                <progress max=c.target_votes.max(1) value=c.votes></progress>
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
                    }
                    Err(error) => view! { <ErrorBox error /> }.into_any(),
                }
            })}
        </Suspense>
    }
}
