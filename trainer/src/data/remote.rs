//! Training data straight from a running Pairwise server: `GET
//! {server}/api/v1/campaigns/{id}/export?format=FORMAT&since=N` with a bearer token (`trl`
//! for pairs, `kto` and `sft` for single completions). The
//! response's `X-Pairwise-Cursor` header is the cursor to pass as `since` next time to get
//! only newer votes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where to fetch from.
#[derive(Debug, Clone)]
pub struct ServerSource {
    /// Base URL, e.g. `https://pairwise.example.org`.
    pub server: String,
    pub campaign: String,
    pub token: String,
    /// Only votes after this cursor (0 = everything).
    pub since: u64,
    /// The export format: `trl`, `kto` or `sft`.
    pub format: &'static str,
}

/// The fetched export, saved to disk, and the server's new cursor.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub cursor: Option<u64>,
    pub lines: usize,
}

/// Downloads the campaign's export into `out_dir/export.jsonl` and records the cursor in
/// `out_dir/export-cursor.txt`.
pub fn fetch_export(source: &ServerSource, out_dir: &Path) -> anyhow::Result<Fetched> {
    let url = format!(
        "{}/api/v1/campaigns/{}/export?format={}&since={}",
        source.server.trim_end_matches('/'),
        source.campaign,
        source.format,
        source.since
    );
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {}", source.token))
        .call()
        .with_context(|| format!("requesting {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .with_context(|| format!("reading the export from {url}"))?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.trim());
    }
    let cursor: Option<u64> =
        response.headers().get("X-Pairwise-Cursor").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join("export.jsonl");
    std::fs::write(&path, &body)?;
    if let Some(c) = cursor {
        std::fs::write(out_dir.join("export-cursor.txt"), c.to_string())?;
    }
    Ok(Fetched { path, cursor, lines: body.lines().filter(|l| !l.trim().is_empty()).count() })
}

/// Posts import JSONL to a campaign (`{campaign_url}/import`, where `campaign_url` is
/// `http://HOST/api/v1/campaigns/ID`; `http://HOST/campaigns/ID` is accepted too) and returns
/// the server's import report. A refused file comes back as the server's message, which names
/// the line and field.
pub fn import_to_campaign(campaign_url: &str, token: &str, body: Vec<u8>) -> anyhow::Result<serde_json::Value> {
    let base = campaign_url.trim_end_matches('/');
    let url = if base.contains("/api/v1/") {
        format!("{base}/import")
    } else if let Some((host, rest)) = base.split_once("/campaigns/") {
        format!("{host}/api/v1/campaigns/{rest}/import")
    } else {
        bail!("--to must look like http://HOST/api/v1/campaigns/ID, got {campaign_url}");
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/x-ndjson")
        .send(&body[..])
        .with_context(|| format!("posting to {url}"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string().with_context(|| format!("reading the reply of {url}"))?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{url} answered {text}"))
}
