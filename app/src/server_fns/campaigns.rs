//! Server functions of campaigns: the list, one campaign, creating and changing one,
//! importing pairs, and the dashboard's statistics and leaderboard.

use leptos::prelude::*;
use leptos::server_fn::codec::{MultipartData, MultipartFormData};
use pairwise_api::campaigns::Campaign;
use pairwise_api::import::ImportReport;
use pairwise_api::leaderboard::Leaderboard;
use pairwise_api::stats::CampaignStats;
#[cfg(feature = "ssr")]
use {
    crate::backend::{call, call_raw, get},
    crate::errors::fail,
    http::Method,
    pairwise_api::campaigns::{Aspect, CampaignKind, CampaignStatus, CampaignUpdate, NewCampaign},
};

/// The campaigns the visitor may see (annotators: the active ones), with their progress.
#[server(prefix = "/ui", endpoint = "list_campaigns")]
pub async fn list_campaigns() -> Result<Vec<Campaign>, ServerFnError> {
    get("/api/v1/campaigns").await
}

#[server(prefix = "/ui", endpoint = "get_campaign")]
pub async fn get_campaign(id: i64) -> Result<Campaign, ServerFnError> {
    get(&format!("/api/v1/campaigns/{id}")).await
}

#[server(prefix = "/ui", endpoint = "create_campaign")]
pub async fn create_campaign(
    name: String,
    guidelines: String,
    overlap: i64,
    gold_rate: f64,
    status: String,
    kind: String,
    aspects: String,
) -> Result<(), ServerFnError> {
    let status = campaign_status(&status)?;
    let kind = CampaignKind::parse(&kind)
        .ok_or_else(|| fail(format!("kind: `{kind}` is not pairwise, ranking, thumbs, scale or arena")))?;
    // The lease, free votes and arena settings as the API defaults them.
    let new = NewCampaign {
        name,
        guidelines,
        overlap,
        gold_rate,
        status,
        lease_seconds: 600,
        free_votes: false,
        kind,
        arena: Default::default(),
        aspects: aspect_lines(&aspects)?,
    };
    let campaign: Campaign = call(Method::POST, "/api/v1/campaigns", Some(&new)).await?;
    leptos_axum::redirect(&format!("/admin/campaigns/{}", campaign.id));
    Ok(())
}

#[server(prefix = "/ui", endpoint = "update_campaign")]
pub async fn update_campaign(
    id: i64,
    name: String,
    guidelines: String,
    overlap: i64,
    gold_rate: f64,
    status: String,
    aspects: String,
) -> Result<Campaign, ServerFnError> {
    let update = CampaignUpdate {
        aspects: Some(aspect_lines(&aspects)?),
        name: Some(name),
        guidelines: Some(guidelines),
        overlap: Some(overlap),
        gold_rate: Some(gold_rate),
        status: Some(campaign_status(&status)?),
        ..CampaignUpdate::default()
    };
    call(Method::PATCH, &format!("/api/v1/campaigns/{id}"), Some(&update)).await
}

/// The aspects field of the campaign form: one `name: description` per line.
#[cfg(feature = "ssr")]
fn aspect_lines(text: &str) -> Result<Vec<Aspect>, ServerFnError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let (name, description) = line.split_once(':').unwrap_or((line, ""));
            let name = name.trim();
            if name.is_empty() {
                return Err(fail(format!("aspects, line {}: give a name before the `:`", i + 1)));
            }
            Ok(Aspect { name: name.to_string(), description: description.trim().to_string() })
        })
        .collect()
}

#[cfg(feature = "ssr")]
fn campaign_status(status: &str) -> Result<CampaignStatus, ServerFnError> {
    CampaignStatus::parse(status)
        .ok_or_else(|| fail(format!("status: `{status}` is not draft, active, paused or closed")))
}

/// Imports an uploaded JSONL file (multipart fields `campaign_id` and `file`). On a bad
/// file the error lists the problems by line and nothing is imported.
#[server(prefix = "/ui", endpoint = "import_file", input = MultipartFormData)]
pub async fn import_file(data: MultipartData) -> Result<ImportReport, ServerFnError> {
    let mut multipart = data.into_inner().ok_or_else(|| fail("expected a form upload"))?;
    let (mut campaign_id, mut file) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(|e| fail(e.to_string()))? {
        match field.name() {
            Some("campaign_id") => {
                let text = field.text().await.map_err(|e| fail(e.to_string()))?;
                campaign_id = Some(
                    text.trim().parse::<i64>().map_err(|_| fail(format!("campaign_id: `{text}` is not a number")))?,
                );
            }
            Some("file") => file = Some(field.bytes().await.map_err(|e| fail(e.to_string()))?),
            _ => {}
        }
    }
    let campaign_id = campaign_id.ok_or_else(|| fail("campaign_id missing"))?;
    let file = file.filter(|f| !f.is_empty()).ok_or_else(|| fail("choose a JSONL file"))?;
    call_raw(Method::POST, &format!("/api/v1/campaigns/{campaign_id}/import"), "application/x-ndjson", file.to_vec())
        .await
}

#[server(prefix = "/ui", endpoint = "load_stats")]
pub async fn load_stats(id: i64) -> Result<CampaignStats, ServerFnError> {
    get(&format!("/api/v1/campaigns/{id}/stats")).await
}

/// The campaign's leaderboard, by the overall choice or (per-aspect campaigns) one aspect's.
#[server(prefix = "/ui", endpoint = "load_leaderboard")]
pub async fn load_leaderboard(id: i64, aspect: Option<String>) -> Result<Leaderboard, ServerFnError> {
    match aspect {
        // Aspect names are a-z, 0-9 and `_`: nothing to escape in a query string.
        Some(aspect) => get(&format!("/api/v1/campaigns/{id}/leaderboard?aspect={aspect}")).await,
        None => get(&format!("/api/v1/campaigns/{id}/leaderboard")).await,
    }
}
