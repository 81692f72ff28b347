//! Campaigns: a set of pairs to rate with its guidelines, overlap (votes wanted per pair),
//! status and gold-check rate. Store functions plus the `/api/v1/campaigns` CRUD routes;
//! the per-campaign work routes (import, next, export, stats…) live in their own modules.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::{AdminUser, CurrentUser};
use crate::db::{Db, is_unique_violation, now_ms};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    Draft,
    Active,
    Paused,
    Closed,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Active => "active",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignStatus> {
        match s {
            "draft" => Some(CampaignStatus::Draft),
            "active" => Some(CampaignStatus::Active),
            "paused" => Some(CampaignStatus::Paused),
            "closed" => Some(CampaignStatus::Closed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub guidelines: String,
    pub guidelines_version: i64,
    pub overlap: i64,
    pub status: CampaignStatus,
    pub gold_rate: f64,
    pub lease_seconds: i64,
    pub free_votes: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Regular (non-gold) pairs in the campaign.
    pub pairs: i64,
    /// Votes wanted to finish: regular pairs × overlap.
    pub target_votes: i64,
    /// Votes recorded on regular pairs.
    pub votes: i64,
    /// Votes of the caller (their own progress).
    pub my_votes: i64,
    /// The training run whose adapter generated this campaign's responses (a next round).
    pub source_run_id: Option<i64>,
}

const CAMPAIGN_SELECT: &str = "SELECT c.id, c.name, c.guidelines, c.guidelines_version, c.overlap, c.status, \
    c.gold_rate, c.lease_seconds, c.free_votes, c.created_at, c.updated_at, c.source_run_id, \
    (SELECT COUNT(*) FROM pairs p WHERE p.campaign_id = c.id AND p.is_gold = 0) AS pair_count, \
    (SELECT COALESCE(CAST(SUM(p.vote_count) AS BIGINT), 0) FROM pairs p WHERE p.campaign_id = c.id AND p.is_gold = 0) AS vote_total, \
    (SELECT COUNT(*) FROM comparisons v WHERE v.campaign_id = c.id AND v.rater_id = $1) AS my_votes \
    FROM campaigns c";

fn campaign_from_row(row: &AnyRow) -> ApiResult<Campaign> {
    let status: String = row.try_get("status")?;
    let overlap: i64 = row.try_get("overlap")?;
    let pairs: i64 = row.try_get("pair_count")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        guidelines: row.try_get("guidelines")?,
        guidelines_version: row.try_get("guidelines_version")?,
        overlap,
        status: CampaignStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown status {status}"))?,
        gold_rate: row.try_get("gold_rate")?,
        lease_seconds: row.try_get("lease_seconds")?,
        free_votes: row.try_get::<i64, _>("free_votes")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        pairs,
        target_votes: pairs * overlap,
        votes: row.try_get("vote_total")?,
        my_votes: row.try_get("my_votes")?,
        source_run_id: row.try_get("source_run_id")?,
    })
}

/// Settings of a new campaign; absent fields take the defaults shown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    #[serde(default)]
    pub guidelines: String,
    /// Votes wanted per pair (default 3).
    #[serde(default = "default_overlap")]
    pub overlap: i64,
    /// Share of served pairs that are gold checks, 0..=1 (default 0).
    #[serde(default)]
    pub gold_rate: f64,
    /// Default `draft`: raters cannot open it until it is made active.
    #[serde(default = "default_status")]
    pub status: CampaignStatus,
    /// Lease on a handed-out pair, in seconds (default 600).
    #[serde(default = "default_lease")]
    pub lease_seconds: i64,
    /// Accept votes without a lease (`pair_id` instead of `assignment_id`).
    #[serde(default)]
    pub free_votes: bool,
}

fn default_overlap() -> i64 {
    3
}
fn default_status() -> CampaignStatus {
    CampaignStatus::Draft
}
fn default_lease() -> i64 {
    600
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignUpdate {
    pub name: Option<String>,
    pub guidelines: Option<String>,
    pub overlap: Option<i64>,
    pub gold_rate: Option<f64>,
    pub status: Option<CampaignStatus>,
    pub lease_seconds: Option<i64>,
    pub free_votes: Option<bool>,
}

fn validate(name: &str, overlap: i64, gold_rate: f64, lease_seconds: i64) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request("name: must be 1-200 characters"));
    }
    if !(1..=100).contains(&overlap) {
        return Err(ApiError::bad_request("overlap: must be between 1 and 100"));
    }
    if !(0.0..=1.0).contains(&gold_rate) {
        return Err(ApiError::bad_request("gold_rate: must be between 0 and 1"));
    }
    if !(10..=86_400).contains(&lease_seconds) {
        return Err(ApiError::bad_request("lease_seconds: must be between 10 and 86400"));
    }
    Ok(())
}

fn name_taken(name: &str) -> impl Fn(sqlx::Error) -> ApiError + '_ {
    move |e| {
        if is_unique_violation(&e) {
            ApiError::conflict("name_taken", format!("a campaign named `{name}` already exists"))
        } else {
            e.into()
        }
    }
}

pub async fn create_campaign(db: &Db, new: &NewCampaign) -> ApiResult<Campaign> {
    validate(&new.name, new.overlap, new.gold_rate, new.lease_seconds)?;
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO campaigns (name, guidelines, overlap, status, gold_rate, lease_seconds, free_votes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
    )
    .bind(new.name.trim())
    .bind(&new.guidelines)
    .bind(new.overlap)
    .bind(new.status.as_str())
    .bind(new.gold_rate)
    .bind(new.lease_seconds)
    .bind(i64::from(new.free_votes))
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(name_taken(&new.name))?;
    tx.commit().await?;
    get_campaign(db, id, 0).await
}

/// One campaign; `viewer` is the user whose own vote count fills `my_votes`.
pub async fn get_campaign(db: &Db, id: i64, viewer: i64) -> ApiResult<Campaign> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CAMPAIGN_SELECT} WHERE c.id = $2")))
        .bind(viewer)
        .bind(id)
        .fetch_optional(&db.read)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))?;
    campaign_from_row(&row)
}

pub async fn list_campaigns(db: &Db, viewer: i64, only_active: bool) -> ApiResult<Vec<Campaign>> {
    let filter = if only_active { " WHERE c.status = 'active'" } else { "" };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{CAMPAIGN_SELECT}{filter} ORDER BY c.id")))
        .bind(viewer)
        .fetch_all(&db.read)
        .await?;
    rows.iter().map(campaign_from_row).collect()
}

pub async fn update_campaign(db: &Db, id: i64, update: &CampaignUpdate) -> ApiResult<Campaign> {
    let current = get_campaign(db, id, 0).await?;
    let name = update.name.clone().unwrap_or(current.name.clone());
    let overlap = update.overlap.unwrap_or(current.overlap);
    let gold_rate = update.gold_rate.unwrap_or(current.gold_rate);
    let lease_seconds = update.lease_seconds.unwrap_or(current.lease_seconds);
    validate(&name, overlap, gold_rate, lease_seconds)?;
    let guidelines = update.guidelines.clone().unwrap_or(current.guidelines.clone());
    // Exported data and trained adapters record which guidelines version raters saw.
    let version = current.guidelines_version + i64::from(guidelines != current.guidelines);
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE campaigns SET name = $1, guidelines = $2, guidelines_version = $3, overlap = $4, gold_rate = $5, \
         status = $6, lease_seconds = $7, free_votes = $8, updated_at = $9 WHERE id = $10",
    )
    .bind(name.trim())
    .bind(&guidelines)
    .bind(version)
    .bind(overlap)
    .bind(gold_rate)
    .bind(update.status.unwrap_or(current.status).as_str())
    .bind(lease_seconds)
    .bind(i64::from(update.free_votes.unwrap_or(current.free_votes)))
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(name_taken(&name))?;
    tx.commit().await?;
    get_campaign(db, id, 0).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns", get(list).post(create))
        .route("/api/v1/campaigns/{id}", get(show).patch(update))
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Vec<Campaign>>> {
    // Annotators see only what they can rate; drafts and closed campaigns are admin business.
    Ok(Json(list_campaigns(&state.db, user.id, !user.is_admin()).await?))
}

async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Campaign>> {
    let campaign = get_campaign(&state.db, id, user.id).await?;
    if !user.is_admin() && campaign.status != CampaignStatus::Active {
        return Err(ApiError::NotFound(format!("campaign {id}")));
    }
    Ok(Json(campaign))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiJson(new): ApiJson<NewCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let campaign = create_campaign(&state.db, &new).await?;
    tracing::info!(by = %user.username, campaign = campaign.id, "campaign created");
    Ok((StatusCode::CREATED, Json(campaign)))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(update): ApiJson<CampaignUpdate>,
) -> ApiResult<Json<Campaign>> {
    let campaign = update_campaign(&state.db, id, &update).await?;
    tracing::info!(by = %user.username, campaign = id, status = campaign.status.as_str(), "campaign updated");
    Ok(Json(campaign))
}
