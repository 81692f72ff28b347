//! Admin: one campaign — settings, JSONL import by upload, the dashboard (progress, votes
//! over time, raters, agreement, position bias), the leaderboard and export links.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;
use web_sys::FormData;

use super::{AdminOnly, ErrorBox, RunsSection, form_error_from_url, id_param};
use crate::api::{
    Campaign, CampaignStats, ImportFile, Leaderboard, UpdateCampaign, get_campaign, import_file, load_leaderboard,
    load_stats,
};
use crate::charts::{LeaderboardChart, VotesChart};
use crate::format::{decimal, percent, seconds};

#[component]
pub fn AdminCampaignPage() -> impl IntoView {
    let id = id_param();
    view! {
        <AdminOnly>
            <CampaignAdmin id=id() />
        </AdminOnly>
    }
}

#[component]
fn CampaignAdmin(id: i64) -> impl IntoView {
    let update = ServerAction::<UpdateCampaign>::new();
    let import = Action::new_local(|data: &FormData| import_file(data.clone().into()));
    // Reloaded after a settings change or an import.
    let campaign = Resource::new(move || (update.version().get(), import.version().get()), move |_| get_campaign(id));
    let stats = Resource::new(move || import.version().get(), move |_| load_stats(id));
    let board = Resource::new(|| (), move |_| load_leaderboard(id));
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match campaign.await {
                    Ok(c) => {
                        view! {
                            <Title text=format!("{} · Pairwise admin", c.name) />
                            <h1>{c.name.clone()} " " <span class=format!("status {}", c.status)>{c.status.clone()}</span></h1>
                            <Settings campaign=c.clone() update />
                        }
                            .into_any()
                    }
                    Err(error) => view! { <ErrorBox error /> }.into_any(),
                }
            })}
        </Transition>
        <ImportForm id import />
        <Transition fallback=|| view! { <p class="muted">"Loading statistics…"</p> }>
            {move || Suspend::new(async move {
                match stats.await {
                    Ok(stats) => view! { <Dashboard stats /> }.into_any(),
                    Err(error) => view! { <ErrorBox error /> }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| view! { <p class="muted">"Loading leaderboard…"</p> }>
            {move || Suspend::new(async move {
                match board.await {
                    Ok(board) => view! { <LeaderboardSection board /> }.into_any(),
                    Err(error) => view! { <ErrorBox error /> }.into_any(),
                }
            })}
        </Transition>
        <ExportSection id />
        <RunsSection campaign_id=id />
    }
}

#[component]
fn Settings(campaign: Campaign, update: ServerAction<UpdateCampaign>) -> impl IntoView {
    let no_js_error = form_error_from_url(<UpdateCampaign as ServerFn>::PATH);
    let status = campaign.status.clone();
    view! {
        <details class="card" id="settings" open=campaign.pairs == 0>
            <summary>"Settings"</summary>
            <ActionForm action=update attr:id="campaign-settings" attr:class="grid-form">
                <input type="hidden" name="id" value=campaign.id />
                <label>"Name" <input type="text" name="name" value=campaign.name.clone() required /></label>
                <label>
                    "Overlap (raters per pair)"
                    <input type="number" name="overlap" value=campaign.overlap min="1" max="50" />
                </label>
                <label>
                    "Gold rate"
                    <input type="number" name="gold_rate" value=campaign.gold_rate min="0" max="1" step="0.01" />
                </label>
                <label>
                    "Status"
                    <select name="status">
                        {["draft", "active", "paused", "closed"]
                            .into_iter()
                            .map(|s| view! { <option value=s selected=s == status>{s}</option> })
                            .collect_view()}
                    </select>
                </label>
                <label class="wide">
                    {format!("Guidelines (Markdown, version {})", campaign.guidelines_version)}
                    <textarea name="guidelines" rows="5">{campaign.guidelines.clone()}</textarea>
                </label>
                <button type="submit" class="primary">"Save"</button>
            </ActionForm>
            {move || match update.value().get() {
                Some(Err(error)) => Some(view! { <ErrorBox error /> }.into_any()),
                Some(Ok(_)) => Some(view! { <p class="ok">"Saved."</p> }.into_any()),
                None => no_js_error.get().map(|t| view! { <ErrorBox error=ServerFnError::ServerError(t) /> }.into_any()),
            }}
        </details>
    }
}

/// Upload of an import file. With JavaScript the file is sent as multipart form data and
/// the result shown in place; without it the form posts and the page shows the outcome.
#[component]
fn ImportForm(id: i64, import: Action<FormData, Result<crate::api::ImportReport, ServerFnError>>) -> impl IntoView {
    let no_js_error = form_error_from_url(<ImportFile as ServerFn>::PATH);
    view! {
        <section class="card">
            <h2>"Import pairs"</h2>
            <p class="muted small">
                "JSONL, one prompt per line with its responses (see the README for both accepted shapes). "
                "A file with any bad line is refused as a whole, with the problems listed by line."
            </p>
            <form
                id="import-form"
                method="post"
                enctype="multipart/form-data"
                action={<ImportFile as ServerFn>::url()}
                on:submit=move |ev| {
                    use wasm_bindgen::JsCast;
                    ev.prevent_default();
                    let form = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlFormElement>().ok());
                    if let Some(data) = form.and_then(|f| FormData::new_with_form(&f).ok()) {
                        import.dispatch_local(data);
                    }
                }
            >
                <input type="hidden" name="campaign_id" value=id />
                <input type="file" name="file" id="import-file" accept=".jsonl,.json,.ndjson,application/x-ndjson" required />
                <button type="submit" class="primary" disabled=move || import.pending().get()>
                    "Import"
                </button>
            </form>
            <div id="import-result">
                {move || match import.value().get() {
                    Some(Ok(report)) => {
                        Some(
                            view! {
                                <p class="ok">
                                    {format!(
                                        "Imported {} lines: {} new pairs ({} already present, {} gold), {} new prompts, {} new responses.",
                                        report.lines,
                                        report.pairs_created,
                                        report.pairs_existing,
                                        report.gold_pairs,
                                        report.prompts_created,
                                        report.responses_created,
                                    )}
                                </p>
                            }
                                .into_any(),
                        )
                    }
                    Some(Err(error)) => Some(view! { <ErrorBox error /> }.into_any()),
                    None => {
                        no_js_error.get().map(|t| view! { <ErrorBox error=ServerFnError::ServerError(t) /> }.into_any())
                    }
                }}
            </div>
        </section>
    }
}

#[component]
fn Dashboard(stats: CampaignStats) -> impl IntoView {
    let p = &stats.progress;
    let complete = if p.pairs_total > 0 { p.pairs_complete as f64 / p.pairs_total as f64 } else { 0.0 };
    let bias = match stats.position_bias.rate {
        Some(rate) => format!(
            "{} of {} decisive votes went to the left response ({})",
            stats.position_bias.left_wins,
            stats.position_bias.decisive_votes,
            percent(Some(rate))
        ),
        None => "no decisive votes yet".into(),
    };
    view! {
        <section class="card" id="dashboard">
            <h2>"Dashboard"</h2>
            <div class="tiles">
                <div class="tile">
                    <span class="big">{format!("{} / {}", p.votes, p.target_votes)}</span>
                    <span class="muted">"votes / target"</span>
                    <progress max=p.target_votes.max(1) value=p.votes></progress>
                </div>
                <div class="tile">
                    <span class="big">{format!("{} / {}", p.pairs_complete, p.pairs_total)}</span>
                    <span class="muted">{format!("pairs complete ({})", percent(Some(complete)))}</span>
                </div>
                <div class="tile">
                    <span class="big" id="alpha">{decimal(stats.agreement.krippendorff_alpha)}</span>
                    <span class="muted">"Krippendorff's α (ordinal)"</span>
                </div>
                <div class="tile">
                    <span class="big">{percent(stats.agreement.percent)}</span>
                    <span class="muted">
                        {format!("pairwise agreement ({} pairs)", stats.agreement.pairs_with_multiple_votes)}
                    </span>
                </div>
                <div class="tile">
                    <span class="big">{percent(stats.position_bias.rate)}</span>
                    <span class="muted" title=bias.clone()>"left wins (position bias; 50% is none)"</span>
                </div>
                <div class="tile">
                    <span class="big">{seconds(stats.median_time_ms)}</span>
                    <span class="muted">{format!("median time · {} raters · {} gold votes", p.raters, p.gold_votes)}</span>
                </div>
            </div>
            <h3>"Votes over time"</h3>
            <VotesChart data=stats.votes_over_time.clone() />
            <h3>"Raters"</h3>
            <table class="data" id="raters">
                <thead>
                    <tr>
                        <th>"Rater"</th>
                        <th class="num">"Votes"</th>
                        <th class="num">"Median time"</th>
                        <th class="num">"Gold accuracy"</th>
                        <th class="num">"Agreement with others"</th>
                    </tr>
                </thead>
                <tbody>
                    {stats
                        .raters
                        .iter()
                        .map(|r| {
                            view! {
                                <tr>
                                    <td>{r.username.clone()}</td>
                                    <td class="num">{r.votes}</td>
                                    <td class="num">{seconds(r.median_time_ms)}</td>
                                    <td class="num">
                                        {format!("{} ({} gold)", percent(r.gold_accuracy), r.gold_votes)}
                                    </td>
                                    <td class="num">{percent(r.agreement_with_others)}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn LeaderboardSection(board: Leaderboard) -> impl IntoView {
    let rows = board
        .models
        .iter()
        .enumerate()
        .map(|(rank, m)| {
            view! {
                <tr>
                    <td class="num">{rank + 1}</td>
                    <td>{m.model.clone()}</td>
                    <td class="num">{format!("{:.0}", m.score)}</td>
                    <td class="num">{format!("{:.0} – {:.0}", m.ci_low, m.ci_high)}</td>
                    <td class="num">{format!("{} / {} / {}", m.wins, m.losses, m.ties)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="card" id="leaderboard">
            <h2>"Leaderboard"</h2>
            <p class="muted small">
                {format!(
                    "Bradley–Terry scores from {} decisive battles; 95% intervals from {} bootstrap rounds.",
                    board.battles,
                    board.bootstrap_rounds,
                )}
            </p>
            <table class="data">
                <thead>
                    <tr>
                        <th class="num">"#"</th>
                        <th>"Model"</th>
                        <th class="num">"Score"</th>
                        <th class="num">"95% interval"</th>
                        <th class="num">"W / L / T"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
            <LeaderboardChart models=board.models.clone() />
        </section>
    }
}

/// Downloads stream straight from the export API (the session cookie authorises them).
#[component]
fn ExportSection(id: i64) -> impl IntoView {
    let url = format!("/api/v1/campaigns/{id}/export");
    view! {
        <section class="card" id="export">
            <h2>"Export"</h2>
            <p>
                "Quick downloads: "
                <a id="export-trl" href=format!("{url}?format=trl")>"TRL (prompt / chosen / rejected)"</a>
                " · "
                <a id="export-messages" href=format!("{url}?format=messages")>"messages"</a>
                " · "
                <a id="export-raw" href=format!("{url}?format=raw")>"raw votes"</a>
            </p>
            <form method="get" action=url.clone() class="grid-form" id="export-form">
                <label>
                    "Format"
                    <select name="format">
                        <option value="trl">"trl"</option>
                        <option value="messages">"messages"</option>
                        <option value="raw">"raw"</option>
                    </select>
                </label>
                <label>"Minimum votes per pair" <input type="number" name="min_votes" value="1" min="1" /></label>
                <label>
                    "Minimum agreement"
                    <input type="number" name="min_agreement" value="0" min="0" max="1" step="0.05" />
                </label>
                <label class="check"><input type="checkbox" name="meta" value="true" />"add votes / agreement / strength"</label>
                <label class="check"><input type="checkbox" name="include_gold" value="true" />"include gold pairs"</label>
                <button type="submit" class="primary">"Download"</button>
            </form>
        </section>
    }
}
