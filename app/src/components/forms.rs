//! Form fields several forms share: a select of fixed options, and a campaign's settings
//! (the new-campaign form and the campaign page's settings).

use leptos::prelude::*;
use pairwise_api::campaigns::{Campaign, CampaignStatus};

/// `<select name=name>` of `(value, label)` options, `selected` chosen.
#[component]
pub fn Select(
    name: &'static str,
    options: Vec<(&'static str, &'static str)>,
    #[prop(default = None)] selected: Option<&'static str>,
) -> impl IntoView {
    view! {
        <select name=name>
            {options
                .into_iter()
                .map(|(value, label)| view! { <option value=value selected=selected == Some(value)>{label}</option> })
                .collect_view()}
        </select>
    }
}

/// The fields of a campaign's settings (name, overlap, gold rate, status, guidelines),
/// filled from `campaign`, or with the defaults of a new one. A new campaign starts as a
/// draft or active, and chooses its kind (pairs or arena), which stays.
#[component]
pub fn CampaignFields(campaign: Option<Campaign>) -> impl IntoView {
    use CampaignStatus::{Active, Closed, Draft, Paused};
    let (statuses, guidelines_label, rows) = match &campaign {
        Some(c) => (
            &[Draft, Active, Paused, Closed][..],
            format!("Guidelines (Markdown, version {})", c.guidelines_version),
            "5",
        ),
        None => (&[Draft, Active][..], "Guidelines (Markdown)".to_string(), "4"),
    };
    let options = statuses.iter().map(|s| (s.as_str(), s.as_str())).collect();
    let c = campaign.as_ref();
    view! {
        <label>"Name" <input type="text" name="name" value=c.map(|c| c.name.clone()) required /></label>
        {campaign.is_none().then(|| view! {
            <label>
                "Kind"
                <Select
                    name="kind"
                    options=vec![
                        ("pairwise", "pairwise (imported pairs)"),
                        ("ranking", "ranking (order 2–6 responses)"),
                        ("thumbs", "thumbs (up or down, one response at a time)"),
                        ("scale", "scale (1–5, one response at a time)"),
                        ("arena", "arena (live battles)"),
                    ]
                />
            </label>
        })}
        <label>
            "Overlap (raters per pair)"
            <input type="number" name="overlap" value=c.map_or(3, |c| c.overlap) min="1" max="50" />
        </label>
        <label>
            "Gold rate"
            <input type="number" name="gold_rate" value=c.map_or(0.0, |c| c.gold_rate) min="0" max="1" step="0.01" />
        </label>
        <label>
            "Status" <Select name="status" options selected=c.map(|c| c.status.as_str()) />
        </label>
        <label class="wide">
            {guidelines_label}
            <textarea name="guidelines" rows=rows>{c.map(|c| c.guidelines.clone()).unwrap_or_default()}</textarea>
        </label>
        <label class="wide">
            "Aspects (optional: raters also choose on each; one "
            <code>"name: description"</code>
            " per line, fixed once there are votes)"
            <textarea name="aspects" rows="3">
                {c.map(|c| {
                    c.aspects.iter().map(|a| format!("{}: {}\n", a.name, a.description)).collect::<String>()
                })}
            </textarea>
        </label>
    }
}
