//! Training schedules from the server config (`[[schedules]]`): "daily at HH:MM (UTC)" and
//! "when N more pairs are aggregated since the last successful run of the same method",
//! checked by the scheduler task every `schedule_check_seconds`. With several servers on one
//! database only the holder of the `scheduler` lease checks, so a schedule fires once.

use std::time::Duration;

use pairwise_api::runs::{Run, RunSpec, RunStatus, Trigger};
use serde::Deserialize;

use super::list_runs;
use super::supervisor::Supervisor;
use crate::args;
use crate::cluster::{hold_lease, release_lease};
use crate::error::{ApiError, ApiResult};
use crate::store::{Db, now_ms};

/// A schedule from the server config (`[[schedules]]`): fires daily at `daily_at` (UTC
/// `HH:MM`) and/or once `min_new_pairs` pairs have been aggregated (got their full overlap of
/// votes) since the last successful run of the same method.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub campaign: i64,
    #[serde(flatten)]
    pub spec: RunSpec,
    #[serde(default)]
    pub daily_at: Option<String>,
    #[serde(default)]
    pub min_new_pairs: Option<i64>,
}

/// Newly aggregated pairs: pairs of the campaign that have all the votes the campaign's
/// overlap asks for, at least one of them after `cursor` (what the threshold counts). A
/// pair still collecting votes does not count yet, so a run does not fire half-way through
/// a pair's raters.
async fn aggregated_pairs_after(db: &Db, campaign_id: i64, cursor: i64) -> ApiResult<i64> {
    Ok(db
        .fetch_one(
            "SELECT COUNT(DISTINCT c.pair_id) AS n FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
         JOIN campaigns k ON k.id = p.campaign_id \
         WHERE c.campaign_id = $1 AND c.seq > $2 AND p.is_gold = 0 AND p.vote_count >= k.overlap",
            args![campaign_id, cursor],
        )
        .await?
        .int("n")?)
}

/// Checks every schedule once: starts the runs that are due.
pub async fn run_due_schedules(db: &Db, supervisor: &Supervisor, schedules: &[Schedule]) -> ApiResult<()> {
    for schedule in schedules {
        let runs = list_runs(db, schedule.campaign).await?;
        if runs.iter().any(|r| r.status == RunStatus::Running) {
            continue;
        }
        // Each method counts from its own last run: a reward schedule and a DPO schedule on
        // one campaign both fire on the same new votes.
        let runs: Vec<&Run> = runs.iter().filter(|r| r.method == schedule.spec.method).collect();
        let last_cursor = runs.iter().find(|r| r.status == RunStatus::Succeeded).map_or(0, |r| r.data_cursor);
        if let Some(threshold) = schedule.min_new_pairs {
            let current = current_cursor(db, schedule.campaign).await?;
            // A run that failed on these very votes would fail again: wait for new ones.
            let failed_on_same_data =
                runs.first().is_some_and(|r| r.status == RunStatus::Failed && r.data_cursor >= current);
            if !failed_on_same_data && aggregated_pairs_after(db, schedule.campaign, last_cursor).await? >= threshold {
                supervisor.start(schedule.campaign, schedule.spec.clone(), Trigger::Threshold).await?;
                continue;
            }
        }
        if let Some(at) = &schedule.daily_at {
            let (hour, minute) =
                parse_hh_mm(at).ok_or_else(|| ApiError::bad_request(format!("daily_at: `{at}` is not HH:MM")))?;
            let now = now_ms();
            let today = now - now.rem_euclid(86_400_000);
            let due = today + (hour * 60 + minute) * 60_000;
            let ran_today = runs.iter().any(|r| r.trigger == Trigger::Daily && r.started_at >= due);
            if now >= due && !ran_today {
                supervisor.start(schedule.campaign, schedule.spec.clone(), Trigger::Daily).await?;
            }
        }
    }
    Ok(())
}

async fn current_cursor(db: &Db, campaign_id: i64) -> ApiResult<i64> {
    crate::votes::sequence_pending(db, campaign_id).await?;
    Ok(db.fetch_one("SELECT vote_seq FROM campaigns WHERE id = $1", args![campaign_id]).await?.int("vote_seq")?)
}

pub fn parse_hh_mm(text: &str) -> Option<(i64, i64)> {
    let (h, m) = text.split_once(':')?;
    let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
}

/// The lease that makes one server (of those sharing the database) the one that checks.
const SCHEDULER_LEASE: &str = "scheduler";

/// The scheduler: checks the schedules every `schedule_check_seconds` until the server
/// stops, while this server (`instance`) holds the scheduler lease. The lease outlives three
/// checks, so a holder that dies is replaced within that time.
pub async fn scheduler(db: Db, supervisor: Supervisor, schedules: Vec<Schedule>, check_seconds: u64, instance: String) {
    if schedules.is_empty() {
        return;
    }
    let every = Duration::from_secs(check_seconds.max(1));
    let ttl_ms = 3 * every.as_millis() as i64;
    loop {
        match hold_lease(&db, SCHEDULER_LEASE, &instance, ttl_ms).await {
            Ok(true) => {
                if let Err(error) = run_due_schedules(&db, &supervisor, &schedules).await {
                    tracing::warn!(%error, "checking training schedules");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "taking the scheduler lease"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Gives the scheduler lease back when this server stops, so another takes over at once.
pub async fn stop_scheduling(db: &Db, instance: &str) {
    if let Err(error) = release_lease(db, SCHEDULER_LEASE, instance).await {
        tracing::warn!(%error, "releasing the scheduler lease");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hh_mm;

    #[test]
    fn daily_times_parse() {
        assert_eq!(parse_hh_mm("02:00"), Some((2, 0)));
        assert_eq!(parse_hh_mm("23:59"), Some((23, 59)));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("2am"), None);
    }
}
