//! What the pages exchange with the server: the view types and the server functions.
//!
//! Each server function is a thin call into the REST API (see `backend.rs`), so a page can
//! do nothing the API would refuse. Without JavaScript the same functions take plain form
//! posts (URL-encoded fields named like the arguments) and redirect back to the page.

use leptos::prelude::*;
use leptos::server_fn::codec::{MultipartData, MultipartFormData};
use serde::{Deserialize, Serialize};
#[cfg(feature = "ssr")]
use serde_json::json;

#[cfg(feature = "ssr")]
use crate::backend::{call, call_if_logged_in, call_raw};
#[cfg(feature = "ssr")]
use http::Method;

/// Prefix of the error a server function returns when the visitor has no session.
pub const NOT_LOGGED_IN: &str = "not logged in";
/// Prefix of the error a server function returns when the visitor may not do this.
pub const FORBIDDEN: &str = "forbidden";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Me {
    pub id: i64,
    pub username: String,
    pub role: String,
}

impl Me {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub guidelines: String,
    pub guidelines_version: i64,
    pub overlap: i64,
    pub status: String,
    pub gold_rate: f64,
    pub lease_seconds: i64,
    pub free_votes: bool,
    pub pairs: i64,
    pub target_votes: i64,
    pub votes: i64,
    pub my_votes: i64,
    /// The training run whose adapter generated the responses (a next round).
    #[serde(default)]
    pub source_run_id: Option<i64>,
}

/// A campaign as the rating page shows it: guidelines already rendered (sanitised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingCampaign {
    pub id: i64,
    pub name: String,
    pub guidelines_html: String,
}

/// One earlier turn of the conversation, rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub html: String,
}

/// A pair on screen: texts in on-screen order, Markdown rendered to sanitised HTML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairView {
    pub assignment_id: i64,
    pub turns: Vec<Turn>,
    pub prompt_html: String,
    pub left_html: String,
    pub right_html: String,
    /// Server time (ms) when the pair was rendered: without JavaScript the time spent on
    /// the pair is measured from here.
    pub shown_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NextView {
    Pair(PairView),
    Waiting,
    Done,
    Unavailable(String),
}

/// Everything the rating page shows below the guidelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateState {
    pub next: NextView,
    pub campaign_votes: i64,
    pub target_votes: i64,
    pub my_votes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub lines: usize,
    pub prompts_created: usize,
    pub responses_created: usize,
    pub pairs_created: usize,
    pub pairs_existing: usize,
    pub gold_pairs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub pairs_total: i64,
    pub pairs_complete: i64,
    pub target_votes: i64,
    pub votes: i64,
    pub gold_votes: i64,
    pub raters: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub percent: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
    pub pairs_with_multiple_votes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionBias {
    pub decisive_votes: i64,
    pub left_wins: i64,
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaterStats {
    pub rater_id: i64,
    pub username: String,
    pub votes: i64,
    pub median_time_ms: Option<f64>,
    pub gold_votes: i64,
    pub gold_accuracy: Option<f64>,
    pub agreement_with_others: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VotesOverTime {
    pub bucket_ms: i64,
    pub buckets: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignStats {
    pub progress: Progress,
    pub votes_over_time: VotesOverTime,
    pub agreement: Agreement,
    pub position_bias: PositionBias,
    pub median_time_ms: Option<f64>,
    pub raters: Vec<RaterStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    pub model: String,
    pub score: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub wins: u64,
    pub losses: u64,
    pub ties: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub battles: u64,
    pub bootstrap_rounds: usize,
    pub models: Vec<ModelScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The admin's users page: users and every API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accounts {
    pub users: Vec<User>,
    pub tokens: Vec<Token>,
}

/// The current visitor, or `None` without a session.
#[server(prefix = "/ui", endpoint = "current_user")]
pub async fn current_user() -> Result<Option<Me>, ServerFnError> {
    call_if_logged_in("/api/v1/auth/me").await
}

#[server(prefix = "/ui", endpoint = "login")]
pub async fn login(username: String, password: String) -> Result<(), ServerFnError> {
    let me: Me =
        call(Method::POST, "/api/v1/auth/login", Some(json!({"username": username, "password": password}))).await?;
    leptos_axum::redirect(if me.is_admin() { "/admin" } else { "/" });
    Ok(())
}

#[server(prefix = "/ui", endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    call::<serde_json::Value>(Method::POST, "/api/v1/auth/logout", None).await?;
    leptos_axum::redirect("/login");
    Ok(())
}

/// The campaigns the visitor may see (annotators: the active ones), with their progress.
#[server(prefix = "/ui", endpoint = "list_campaigns")]
pub async fn list_campaigns() -> Result<Vec<Campaign>, ServerFnError> {
    call(Method::GET, "/api/v1/campaigns", None).await
}

#[server(prefix = "/ui", endpoint = "get_campaign")]
pub async fn get_campaign(id: i64) -> Result<Campaign, ServerFnError> {
    call(Method::GET, &format!("/api/v1/campaigns/{id}"), None).await
}

#[server(prefix = "/ui", endpoint = "campaign_for_rating")]
pub async fn campaign_for_rating(id: i64) -> Result<RatingCampaign, ServerFnError> {
    let campaign: Campaign = call(Method::GET, &format!("/api/v1/campaigns/{id}"), None).await?;
    Ok(RatingCampaign { id, name: campaign.name, guidelines_html: crate::markdown::render(&campaign.guidelines) })
}

/// The visitor's current pair (the same one until they vote or skip) and the progress.
#[server(prefix = "/ui", endpoint = "next_pair")]
pub async fn next_pair(campaign_id: i64) -> Result<RateState, ServerFnError> {
    let next: serde_json::Value = call(Method::GET, &format!("/api/v1/campaigns/{campaign_id}/next"), None).await?;
    rate_state(campaign_id, &next).await
}

/// Records a vote (`choice` as seen on screen: left / right / tie / both_bad) and returns
/// the next pair. The assignment id is the idempotency key: a repeated submit (double
/// click, reload after a post) is stored once.
#[server(prefix = "/ui", endpoint = "submit_vote")]
#[allow(clippy::too_many_arguments)]
pub async fn submit_vote(
    campaign_id: i64,
    assignment_id: i64,
    choice: String,
    strength: String,
    rationale: String,
    shown_at: i64,
    time_ms: Option<i64>,
) -> Result<RateState, ServerFnError> {
    if !["left", "right", "tie", "both_bad"].contains(&choice.as_str()) {
        return Err(fail("choose A better, B better, tie or both bad first"));
    }
    let strength: Option<i64> = match strength.as_str() {
        "" => None,
        s => Some(s.parse().map_err(|_| fail(format!("strength: `{s}` is not 1, 2 or 3")))?),
    };
    // Without JavaScript the browser cannot time the pair: measure from when it was served.
    let time_ms = time_ms.unwrap_or_else(|| (now_ms() - shown_at).max(0));
    let rationale = rationale.trim();
    let body = json!({
        "assignment_id": assignment_id,
        "choice": choice,
        "strength": strength,
        "rationale": (!rationale.is_empty()).then_some(rationale),
        "time_ms": time_ms,
        "client_key": format!("web-{assignment_id}"),
    });
    let reply: serde_json::Value = call(Method::POST, "/api/v1/votes", Some(body)).await?;
    rate_state(campaign_id, &reply["next"]).await
}

/// Gives the pair back and returns the next one.
#[server(prefix = "/ui", endpoint = "skip_pair")]
pub async fn skip_pair(campaign_id: i64, assignment_id: i64) -> Result<RateState, ServerFnError> {
    let next: serde_json::Value =
        call(Method::POST, &format!("/api/v1/assignments/{assignment_id}/skip"), Some(json!({}))).await?;
    rate_state(campaign_id, &next).await
}

/// A server function error with a message for people.
pub fn fail(message: impl Into<String>) -> ServerFnError {
    ServerFnError::ServerError(message.into())
}

#[cfg(feature = "ssr")]
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(feature = "ssr")]
async fn rate_state(campaign_id: i64, next: &serde_json::Value) -> Result<RateState, ServerFnError> {
    use crate::markdown::render;
    let campaign: Campaign = call(Method::GET, &format!("/api/v1/campaigns/{campaign_id}"), None).await?;
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    let next = match next["status"].as_str() {
        Some("assigned") => {
            let pair = &next["pair"];
            let turns = pair["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| Turn { role: text(&m["role"]), html: render(&text(&m["content"])) })
                .collect();
            NextView::Pair(PairView {
                assignment_id: pair["assignment_id"].as_i64().unwrap_or_default(),
                turns,
                prompt_html: render(&text(&pair["prompt"])),
                left_html: render(&text(&pair["left"])),
                right_html: render(&text(&pair["right"])),
                shown_at: now_ms(),
            })
        }
        Some("waiting") => NextView::Waiting,
        Some("done") => NextView::Done,
        _ => NextView::Unavailable(text(&next["campaign_status"])),
    };
    Ok(RateState {
        next,
        campaign_votes: campaign.votes,
        target_votes: campaign.target_votes,
        my_votes: campaign.my_votes,
    })
}

#[server(prefix = "/ui", endpoint = "create_campaign")]
pub async fn create_campaign(
    name: String,
    guidelines: String,
    overlap: i64,
    gold_rate: f64,
    status: String,
) -> Result<(), ServerFnError> {
    let body =
        json!({"name": name, "guidelines": guidelines, "overlap": overlap, "gold_rate": gold_rate, "status": status});
    let campaign: Campaign = call(Method::POST, "/api/v1/campaigns", Some(body)).await?;
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
) -> Result<Campaign, ServerFnError> {
    let body =
        json!({"name": name, "guidelines": guidelines, "overlap": overlap, "gold_rate": gold_rate, "status": status});
    call(Method::PATCH, &format!("/api/v1/campaigns/{id}"), Some(body)).await
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
    call(Method::GET, &format!("/api/v1/campaigns/{id}/stats"), None).await
}

#[server(prefix = "/ui", endpoint = "load_leaderboard")]
pub async fn load_leaderboard(id: i64) -> Result<Leaderboard, ServerFnError> {
    call(Method::GET, &format!("/api/v1/campaigns/{id}/leaderboard"), None).await
}

#[server(prefix = "/ui", endpoint = "load_accounts")]
pub async fn load_accounts() -> Result<Accounts, ServerFnError> {
    let users = call(Method::GET, "/api/v1/users", None).await?;
    let tokens = call(Method::GET, "/api/v1/tokens", None).await?;
    Ok(Accounts { users, tokens })
}

#[server(prefix = "/ui", endpoint = "create_user")]
pub async fn create_user(username: String, password: String, role: String) -> Result<User, ServerFnError> {
    call(Method::POST, "/api/v1/users", Some(json!({"username": username, "password": password, "role": role}))).await
}

#[server(prefix = "/ui", endpoint = "set_user_active")]
pub async fn set_user_active(id: i64, active: bool) -> Result<User, ServerFnError> {
    call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(json!({"active": active}))).await
}

/// Sets a new password; the user's sessions end and their tokens are revoked.
#[server(prefix = "/ui", endpoint = "reset_password")]
pub async fn reset_password(id: i64, password: String) -> Result<User, ServerFnError> {
    call(Method::PATCH, &format!("/api/v1/users/{id}"), Some(json!({"password": password}))).await
}

/// Creates an API token; the secret is in the reply, once.
#[server(prefix = "/ui", endpoint = "create_token")]
pub async fn create_token(name: String, user_id: i64) -> Result<String, ServerFnError> {
    let reply: serde_json::Value =
        call(Method::POST, "/api/v1/tokens", Some(json!({"name": name, "user_id": user_id}))).await?;
    Ok(reply["token"].as_str().unwrap_or_default().to_string())
}

#[server(prefix = "/ui", endpoint = "revoke_token")]
pub async fn revoke_token(id: i64) -> Result<(), ServerFnError> {
    call::<serde_json::Value>(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await?;
    Ok(())
}

/// A training run as the admin pages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub campaign_id: i64,
    pub method: String,
    pub config: serde_json::Value,
    pub trigger: String,
    pub status: String,
    /// The phase running now (or the last that ran): reward, dpo, rlhf, generate, import.
    #[serde(default)]
    pub phase: String,
    pub data_cursor: i64,
    pub data_rows: i64,
    pub data_sha256: String,
    pub guidelines_version: i64,
    pub raters: Vec<i64>,
    pub output_dir: String,
    pub artifact_sha256: Option<String>,
    pub exit_reason: Option<String>,
    /// The campaign of new pairs the run's adapter generated.
    #[serde(default)]
    pub next_campaign_id: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A run, the metric lines it has logged so far, and the files it has written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub metrics: Vec<serde_json::Value>,
    #[serde(default)]
    pub files: Vec<String>,
}

#[server(prefix = "/ui", endpoint = "list_runs")]
pub async fn list_runs(campaign_id: i64) -> Result<Vec<Run>, ServerFnError> {
    call(Method::GET, &format!("/api/v1/campaigns/{campaign_id}/runs"), None).await
}

/// Starts a run by hand; `args` are further trainer flags separated by spaces. With
/// `next_round` ("on", a checkbox) a DPO or RLHF run then generates `responses` new
/// responses per prompt with its adapter into a new campaign.
#[server(prefix = "/ui", endpoint = "start_run")]
pub async fn start_run(
    campaign_id: i64,
    method: String,
    model: String,
    args: String,
    next_round: Option<String>,
    responses: Option<usize>,
) -> Result<Run, ServerFnError> {
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut body = json!({"method": method, "model": model.trim(), "args": args});
    if next_round.is_some() {
        body["next_round"] = json!({"responses": responses.unwrap_or(2)});
    }
    call(Method::POST, &format!("/api/v1/campaigns/{campaign_id}/runs"), Some(body)).await
}

#[server(prefix = "/ui", endpoint = "cancel_run")]
pub async fn cancel_run(id: i64) -> Result<Run, ServerFnError> {
    call(Method::POST, &format!("/api/v1/runs/{id}/cancel"), Some(json!({}))).await
}

#[server(prefix = "/ui", endpoint = "load_run")]
pub async fn load_run(id: i64) -> Result<RunDetail, ServerFnError> {
    call(Method::GET, &format!("/api/v1/runs/{id}"), None).await
}
