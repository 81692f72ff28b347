//! `GET /metrics`: this server's figures in the OpenMetrics text format Prometheus scrapes
//! (behind `Authorization: Bearer <metrics_token>` when the config sets one), and the
//! middleware that times every API request by route.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::AppState;
use crate::error::{ApiError, ApiResult};
use crate::metrics::metrics;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = &state.config.metrics_token {
        let sent =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(token.as_str()) {
            return Err(ApiError::Unauthorized);
        }
    }
    let text = metrics().render(&state.db).await?;
    let kind = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, kind)], text).into_response())
}

/// Times a request and files it under its route's pattern (a route layer, so only
/// requests that matched a route are counted).
pub async fn time_request(route: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    if let Some(route) = route {
        metrics().request_answered(method.as_str(), route.as_str(), started.elapsed().as_secs_f64());
    }
    response
}
