//! Admin: training runs — the campaign's runs with a form to start one, and a run's page
//! with its metric curves (SVG, one set per phase), configuration, data snapshot (lineage),
//! downloads and the next round its adapter generated.

use leptos::prelude::*;
use leptos_meta::Title;
use pairwise_api::campaigns::CampaignKind;
use pairwise_api::runs::{Run, RunDetail, RunStatus};

use super::{AdminOnly, id_param};
use crate::components::{Column, DataTable, LineChart, Loading, Select, StatusBadge};
use crate::errors::{ErrorBox, or_error};
use crate::format::utc_minute;
use crate::server_fns::campaigns::list_campaigns;
use crate::server_fns::runs::{CancelRun, StartRun, list_runs, load_run};

const RUN_COLUMNS: &[Column] = &[
    Column::text("Run"),
    Column::text("Method"),
    Column::text("Trigger"),
    Column::text("Status"),
    Column::num("Pairs"),
    Column::text("Started (UTC)"),
    Column::text(""),
];

/// The runs of a campaign and the form to start one (on the campaign page).
#[component]
pub fn RunsSection(campaign_id: i64) -> impl IntoView {
    let start = ServerAction::<StartRun>::new();
    let cancel = ServerAction::<CancelRun>::new();
    let runs = Resource::new(move || (start.version().get(), cancel.version().get()), move |_| list_runs(campaign_id));
    // Every campaign: the arenas an adapter can join, and this one's aspects to train on.
    let campaigns = Resource::new(|| (), |_| list_campaigns());
    view! {
        <section class="card" id="runs">
            <h2>"Training runs"</h2>
            <Transition fallback=|| view! { <Loading /> }>
                {move || Suspend::new(async move {
                    or_error(runs.await, |list| view! { <RunRows list cancel /> }.into_any())
                })}
            </Transition>
            <h3>"Start a run"</h3>
            <ActionForm action=start attr:class="grid-form" attr:id="start-run">
                <input type="hidden" name="campaign_id" value=campaign_id />
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        // A thumbs or scale campaign has ratings, not preferences: KTO or SFT.
                        let single = campaigns
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .find(|c| c.id == campaign_id)
                            .is_some_and(|c| c.kind.single_response());
                        let options = if single {
                            vec![
                                ("kto", "KTO (well-rated answers desirable, badly rated ones not)"),
                                ("sft", "SFT on corrections and well-rated answers"),
                            ]
                        } else {
                            vec![
                                ("dpo", "DPO"),
                                ("reward", "reward model"),
                                ("rlhf", "RLHF (reward model, then RLOO)"),
                                ("kto", "KTO (winners desirable, losers and both-bad answers not)"),
                                ("sft", "SFT on the winning answers"),
                            ]
                        };
                        view! {
                            <label>"Method" <Select name="method" options /></label>
                        }
                    })}
                </Suspense>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        let aspects: Vec<String> = campaigns
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .find(|c| c.id == campaign_id)
                            .map(|c| c.aspects.into_iter().map(|a| a.name).collect())
                            .unwrap_or_default();
                        (!aspects.is_empty())
                            .then(|| {
                                view! {
                                    <label>
                                        "Train on"
                                        <select name="aspect" id="run-aspect">
                                            <option value="">"the overall choice"</option>
                                            {aspects
                                                .into_iter()
                                                .map(|name| {
                                                    let label = format!("the {name} choice");
                                                    view! { <option value=name>{label}</option> }
                                                })
                                                .collect_view()}
                                        </select>
                                    </label>
                                }
                            })
                    })}
                </Suspense>
                <label class="wide">"Model folder (on the server)" <input type="text" name="model" required /></label>
                <label class="wide">
                    "More trainer flags" <input type="text" name="args" placeholder="--max-steps 200 --lora-r 16" />
                </label>
                <label>
                    <input type="checkbox" name="next_round" />
                    " Then generate the next round (DPO / RLHF)"
                </label>
                <label>
                    "Responses per prompt" <input type="number" name="responses" value="2" min="1" max="16" />
                </label>
                <label>
                    "Then the adapter joins the arena"
                    <Suspense fallback=|| ()>
                        {move || Suspend::new(async move {
                            let arenas: Vec<(i64, String)> = campaigns
                                .await
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|c| c.kind == CampaignKind::Arena)
                                .map(|c| (c.id, c.name))
                                .collect();
                            view! {
                                <select name="join_arena" id="join-arena">
                                    <option value="">"no"</option>
                                    {arenas
                                        .into_iter()
                                        .map(|(id, name)| view! { <option value=id>{name}</option> })
                                        .collect_view()}
                                </select>
                            }
                        })}
                    </Suspense>
                </label>
                <button type="submit" class="primary">"Start"</button>
            </ActionForm>
            {move || {
                [start.value().get().and_then(Result::err), cancel.value().get().and_then(Result::err)]
                    .into_iter()
                    .flatten()
                    .next()
                    .map(|error| view! { <ErrorBox error /> })
            }}
        </section>
    }
}

/// The campaign's runs, each running one with a cancel form.
#[component]
fn RunRows(list: Vec<Run>, cancel: ServerAction<CancelRun>) -> impl IntoView {
    let rows: Vec<_> = list
        .into_iter()
        .map(|r| {
            let running = r.status == RunStatus::Running;
            view! {
                <tr>
                    <td>
                        <a href=format!("/admin/runs/{}", r.id)>{format!("#{}", r.id)}</a>
                    </td>
                    <td>{r.method.as_str()}</td>
                    <td>{r.trigger.as_str()}</td>
                    <td>
                        <StatusBadge status=r.status.as_str() />
                        {running.then(|| format!(" ({})", r.phase))}
                    </td>
                    <td class="num">{r.data_rows}</td>
                    <td>{utc_minute(r.started_at)}</td>
                    <td>
                        <Show when=move || running>
                            <CancelForm cancel id=r.id label="Cancel" />
                        </Show>
                    </td>
                </tr>
            }
        })
        .collect();
    view! { <DataTable empty="No runs yet." columns=RUN_COLUMNS rows /> }
}

/// The form that cancels run `id` (shown while it runs).
#[component]
fn CancelForm(cancel: ServerAction<CancelRun>, id: i64, label: &'static str) -> impl IntoView {
    view! {
        <ActionForm action=cancel attr:class="inline">
            <input type="hidden" name="id" value=id />
            <button type="submit">{label}</button>
        </ActionForm>
    }
}

/// The metrics plotted on a run's page, by the names the trainer logs.
const CURVES: [(&str, &str); 10] = [
    ("loss", "Loss"),
    ("rewards/accuracies", "Reward accuracy"),
    ("accuracy", "Reward accuracy"),
    ("eval_rewards/accuracies", "Held-out reward accuracy"),
    ("eval_accuracy", "Held-out reward accuracy"),
    ("rewards/margins", "Reward margin"),
    ("margin", "Reward margin"),
    ("reward", "Mean reward"),
    ("kl", "KL to the reference"),
    ("entropy", "Entropy"),
];

#[component]
pub fn RunPage() -> impl IntoView {
    let id = id_param();
    view! {
        <AdminOnly>
            <RunView id=id() />
        </AdminOnly>
    }
}

#[component]
fn RunView(id: i64) -> impl IntoView {
    let cancel = ServerAction::<CancelRun>::new();
    let refresh = RwSignal::new(0u32);
    let run = Resource::new(move || (refresh.get(), cancel.version().get()), move |_| load_run(id));
    // While the run is going, look again every two seconds (in the browser only).
    Effect::new(move |_| {
        if let Ok(handle) =
            set_interval_with_handle(move || refresh.update(|n| *n += 1), std::time::Duration::from_secs(2))
        {
            on_cleanup(move || handle.clear());
        }
    });
    view! {
        <Title text=format!("Run {id} · Pairwise admin") />
        <Transition fallback=|| view! { <Loading /> }>
            {move || Suspend::new(async move { or_error(run.await, |detail| view! { <RunBody detail cancel /> }.into_any()) })}
        </Transition>
    }
}

#[component]
fn RunBody(detail: RunDetail, cancel: ServerAction<CancelRun>) -> impl IntoView {
    let r = detail.run;
    let running = r.status == RunStatus::Running;
    // The phases in the order they logged (an RLHF run: reward, then rlhf).
    let mut phases: Vec<String> = Vec::new();
    for m in &detail.metrics {
        let phase = m["phase"].as_str().unwrap_or_default().to_string();
        if !phases.contains(&phase) {
            phases.push(phase);
        }
    }
    let several = phases.len() > 1;
    let metrics = &detail.metrics;
    let charts = phases
        .iter()
        .flat_map(|phase| {
            CURVES.iter().filter_map(move |(key, title)| {
                let points: Vec<(f64, f64)> = metrics
                    .iter()
                    .filter(|m| m["phase"].as_str().unwrap_or_default() == phase)
                    .enumerate()
                    .filter_map(|(i, m)| {
                        let step = m["step"].as_f64().unwrap_or((i + 1) as f64);
                        m[*key].as_f64().map(|v| (step, v))
                    })
                    .collect();
                let title = if several { format!("{phase}: {title}") } else { title.to_string() };
                (!points.is_empty()).then(|| view! { <LineChart title points /> })
            })
        })
        .collect_view();
    let files = detail
        .files
        .iter()
        .map(|name| {
            view! {
                <li>
                    <a href=format!("/api/v1/runs/{}/files/{}", r.id, name.replace('/', "~"))>{name.clone()}</a>
                </li>
            }
        })
        .collect_view();
    view! {
        <h1>
            {format!("Run #{} · {}", r.id, r.method.as_str())} " "
            <StatusBadge status=r.status.as_str() id="run-status" />
        </h1>
        <p>
            <a href=format!("/admin/campaigns/{}", r.campaign_id)>"← campaign"</a>
            {running.then(|| format!(" · now: {}", r.phase))}
            {r.exit_reason.clone().map(|reason| view! { " · " <span class="muted">{reason}</span> })}
            {r.next_campaign_id.map(|next| view! {
                " · " <a href=format!("/admin/campaigns/{next}") id="next-round">"next round: campaign #" {next}</a>
            })}
        </p>
        <Show when=move || running>
            <CancelForm cancel id=r.id label="Cancel the run" />
        </Show>
        <section class="card" id="run-charts">
            <h2>"Metrics"</h2>
            {if detail.metrics.is_empty() {
                view! { <p class="muted">"No metrics logged yet."</p> }.into_any()
            } else {
                view! { <div class="charts">{charts}</div> }.into_any()
            }}
        </section>
        <section class="card">
            <h2>"Data snapshot (lineage)"</h2>
            <table class="data">
                <tbody>
                    <tr><th>"Trigger"</th><td>{r.trigger.as_str()}</td></tr>
                    <tr><th>"Votes up to"</th><td>{format!("cursor {}", r.data_cursor)}</td></tr>
                    <tr><th>"Aggregated pairs"</th><td>{r.data_rows}</td></tr>
                    <tr><th>"Data SHA-256"</th><td><code>{r.data_sha256.clone()}</code></td></tr>
                    <tr><th>"Raters (user ids)"</th><td>{format!("{:?}", r.raters)}</td></tr>
                    <tr><th>"Guidelines version"</th><td>{r.guidelines_version}</td></tr>
                    <tr><th>"Started / finished (UTC)"</th><td>{format!("{} / {}", utc_minute(r.started_at), r.finished_at.map(utc_minute).unwrap_or_else(|| "–".into()))}</td></tr>
                    <tr><th>"Adapter SHA-256"</th><td><code>{r.artifact_sha256.clone().unwrap_or_else(|| "–".into())}</code></td></tr>
                    <tr><th>"Supervised by"</th><td><code>{if r.supervisor.is_empty() { "–".to_string() } else { r.supervisor.clone() }}</code></td></tr>
                </tbody>
            </table>
            <h3>"Configuration"</h3>
            <pre class="config">{serde_json::to_string_pretty(&r.config).unwrap_or_default()}</pre>
            <h3>"Files"</h3>
            {if detail.files.is_empty() {
                view! { <p class="muted">"No files yet."</p> }.into_any()
            } else {
                view! { <ul>{files}</ul> }.into_any()
            }}
        </section>
    }
}
