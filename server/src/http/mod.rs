//! Everything axum: the router with every resource's routes (one module each), `/healthz`,
//! `/metrics`, and serving with graceful shutdown (in-flight requests finish; new
//! connections are refused) beside the server's background tasks (the runs' heartbeat and
//! the scheduler). Handlers parse the request, call the domain modules and shape the reply.

pub mod arena;
pub mod auth;
pub mod campaigns;
pub mod error;
pub mod export;
pub mod extract;
pub mod import;
pub mod leaderboard;
pub mod metrics;
pub mod runs;
pub mod state;
pub mod stats;
pub mod tokens;
pub mod users;
pub mod votes;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use self::state::AppState;
use crate::runs::schedule::{scheduler, stop_scheduling};
use crate::store::ServeLock;

/// JSON bodies other than imports are small; imports set their own limit.
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The REST API and the web pages (which call the API in-process).
pub fn router(state: AppState) -> Router {
    let site_root = state.config.site_root.clone();
    let api = api_router(state);
    web::router(api.clone(), &site_root).merge(api)
}

/// The REST API alone.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(auth::router())
        .merge(arena::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(campaigns::router())
        .merge(import::router(state.config.max_import_bytes))
        .merge(votes::router())
        .merge(export::router())
        .merge(stats::router())
        .merge(leaderboard::router())
        .merge(runs::router())
        .merge(metrics::router())
        .route_layer(middleware::from_fn(metrics::time_request))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.db.fetch_one("SELECT 1 AS ok", Vec::new()).await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "database unavailable"})))
        }
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish. Before serving it
/// claims a SQLite database file for this server alone (a second one is refused; see
/// `serve_holding`) and marks the runs a dead server left `running` as interrupted; while
/// serving, it keeps this server's runs' heartbeat, the folding of new votes into the
/// campaigns' tallies and, when this server holds the scheduler lease, the schedules.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let holder = format!("pairwise serve (pid {}, listening on {})", std::process::id(), listener.local_addr()?);
    let lock = state.db.lock_for_serving(&holder).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    serve_holding(listener, state, shutdown, lock).await
}

/// `serve` for a caller that already holds the SQLite file's serve lock (`pairwise serve`
/// takes it before connecting); it is released when serving ends.
pub async fn serve_holding(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    _sole_server: Option<ServeLock>,
) -> std::io::Result<()> {
    match state.runs.reclaim_abandoned_runs().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(runs = n, "training runs cut off by a stopped server marked interrupted"),
        Err(error) => tracing::error!(%error, "marking interrupted training runs"),
    }
    let heartbeat = tokio::spawn(state.runs.clone().keep_alive());
    let folding = tokio::spawn(crate::tallies::keep_folding(state.db.clone()));
    let (db, instance) = (state.db.clone(), state.instance.to_string());
    let scheduler = tokio::spawn(scheduler(
        state.db.clone(),
        state.runs.clone(),
        state.config.schedules.clone(),
        state.config.schedule_check_seconds,
        instance.clone(),
    ));
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    scheduler.abort();
    heartbeat.abort();
    folding.abort();
    stop_scheduling(&db, &instance).await;
    served
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
