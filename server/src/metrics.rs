//! The server's figures for Prometheus (`GET /metrics`, OpenMetrics text): counters the
//! domain modules bump as things happen (votes, imports, exports), request latency per API
//! route, and gauges read from the database at scrape time (live leases, runs by status)
//! or from the store (the SQLite writer's queue, the connection pool). One registry per
//! process: each server of a cluster is its own scrape target.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::args;
use crate::error::ApiResult;
use crate::store::{Db, SqlRow, now_ms};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    /// The route's pattern (`/api/v1/campaigns/{id}/next`), never the raw path, so the
    /// number of series stays bounded.
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// 0.5 ms to ~4 s, doubling: a vote takes about a millisecond, an export can take seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

const RUN_STATUSES: [&str; 5] = ["running", "succeeded", "failed", "cancelled", "interrupted"];
const BATTLE_STATUSES: [&str; 5] = ["generating", "ready", "failed", "voted", "abandoned"];

pub struct Metrics {
    registry: Registry,
    votes: Counter,
    duplicate_votes: Counter,
    imports: Counter,
    imported_pairs: Counter,
    exports: Counter,
    requests: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pairwise");
        let (votes, duplicate_votes) = (Counter::default(), Counter::default());
        let (imports, imported_pairs, exports) = (Counter::default(), Counter::default(), Counter::default());
        let requests = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("votes", "Votes stored (not counting resubmissions)", votes.clone());
        registry.register(
            "duplicate_votes",
            "Resubmitted votes acknowledged without a new row (same client_key)",
            duplicate_votes.clone(),
        );
        registry.register("imports", "Imports that stored their file", imports.clone());
        registry.register("imported_pairs", "Pairs created by imports", imported_pairs.clone());
        registry.register("exports", "Exports started (API, CLI and training-run snapshots)", exports.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an API request, by route (GET /api/v1/campaigns/{id}/next hands out a pair, \
             POST /api/v1/votes records a vote)",
            requests.clone(),
        );
        Metrics { registry, votes, duplicate_votes, imports, imported_pairs, exports, requests }
    }

    pub fn vote_stored(&self, duplicate: bool) {
        let counter = if duplicate { &self.duplicate_votes } else { &self.votes };
        counter.inc();
    }

    pub fn import_stored(&self, pairs: usize) {
        self.imports.inc();
        self.imported_pairs.inc_by(pairs as u64);
    }

    pub fn export_started(&self) {
        self.exports.inc();
    }

    pub fn request_answered(&self, method: &str, route: &str, seconds: f64) {
        let labels = RouteLabels { method: method.to_string(), route: route.to_string() };
        self.requests.get_or_create(&labels).observe(seconds);
    }

    /// Writes every metric in the OpenMetrics text format: the counters and histograms, then
    /// the gauges, read now into a registry of this scrape's own (so two scrapes at once,
    /// or two servers in one test process, never see each other's readings).
    pub async fn render(&self, db: &Db) -> ApiResult<String> {
        let gauges = read_gauges(db).await?;
        let mut text = String::new();
        let encoded = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &gauges))
            .and_then(|()| encode_eof(&mut text));
        encoded.map_err(anyhow::Error::from)?;
        Ok(text)
    }
}

fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

/// Counts by status from `status, n` rows; every known status appears, 0 when absent.
fn by_status(rows: &[SqlRow], statuses: &[&str]) -> ApiResult<Family<StatusLabels, Gauge>> {
    let family = Family::<StatusLabels, Gauge>::default();
    for status in statuses {
        family.get_or_create(&StatusLabels { status: status.to_string() }).set(0);
    }
    for row in rows {
        family.get_or_create(&StatusLabels { status: row.text("status")? }).set(row.int("n")?);
    }
    Ok(family)
}

/// The gauges, read from the database and the store at scrape time.
async fn read_gauges(db: &Db) -> ApiResult<Registry> {
    let mut registry = Registry::with_prefix("pairwise");
    let leases = db
        .fetch_one("SELECT COUNT(*) AS n FROM assignments WHERE status = 'active' AND expires_at > $1", args![now_ms()])
        .await?
        .int("n")?;
    registry.register(
        "active_leases",
        "Pairs handed out to raters and not yet voted, skipped or expired",
        gauge(leases),
    );
    let runs = db.fetch_all("SELECT status, COUNT(*) AS n FROM training_runs GROUP BY status", vec![]).await?;
    registry.register("training_runs", "Training runs by status", by_status(&runs, &RUN_STATUSES)?);
    let battles = db.fetch_all("SELECT status, COUNT(*) AS n FROM battles GROUP BY status", vec![]).await?;
    registry.register(
        "arena_battles",
        "Arena battles by status (failed: a contender did not answer)",
        by_status(&battles, &BATTLE_STATUSES)?,
    );
    registry.register(
        "sqlite_writer_queue_depth",
        "Write transactions waiting for the SQLite writer thread (0 on Postgres)",
        gauge(db.writer_queue_depth().unwrap_or(0) as i64),
    );
    let (open, idle) = db.pool_connections();
    let pool = Family::<StateLabels, Gauge>::default();
    pool.get_or_create(&StateLabels { state: "open".into() }).set(i64::from(open));
    pool.get_or_create(&StateLabels { state: "idle".into() }).set(idle as i64);
    registry.register("db_pool_connections", "Connections of the database pool, open and idle", pool);
    Ok(registry)
}
