//! Server functions of training runs: a campaign's runs, starting and cancelling one, and
//! a run with its metrics and files.

// The run form's fields are the server function's arguments; the lint is allowed here
// because the hydrate build does not carry a per-function allow through `#[server]`.
#![allow(clippy::too_many_arguments)]

use leptos::prelude::*;
use pairwise_api::runs::{Run, RunDetail};
#[cfg(feature = "ssr")]
use {
    crate::backend::{NO_BODY, call, get},
    crate::errors::fail,
    http::Method,
    pairwise_api::runs::{NextRound, RunSpec},
};

#[server(prefix = "/ui", endpoint = "list_runs")]
pub async fn list_runs(campaign_id: i64) -> Result<Vec<Run>, ServerFnError> {
    get(&format!("/api/v1/campaigns/{campaign_id}/runs")).await
}

/// Starts a run by hand; `args` are further trainer flags separated by spaces. With
/// `next_round` ("on", a checkbox) a DPO or RLHF run then generates `responses` new
/// responses per prompt with its adapter into a new campaign; with `join_arena` (an arena
/// campaign's id) the adapter then joins that arena as a contender. `aspect` (empty: the
/// overall choice) trains on one aspect's preferences of a per-aspect campaign.
#[server(prefix = "/ui", endpoint = "start_run")]
pub async fn start_run(
    campaign_id: i64,
    method: String,
    model: String,
    args: String,
    next_round: Option<String>,
    responses: Option<usize>,
    join_arena: Option<String>,
    aspect: Option<String>,
) -> Result<Run, ServerFnError> {
    let join_arena = match join_arena.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(id.parse::<i64>().map_err(|_| fail(format!("join_arena: `{id}` is not a campaign id")))?),
    };
    let spec = RunSpec {
        method: pairwise_api::runs::Method::parse(&method)
            .ok_or_else(|| fail(format!("method: `{method}` is not reward, dpo, rlhf, kto or sft")))?,
        model: model.trim().to_string(),
        args: args.split_whitespace().map(String::from).collect(),
        reward_args: Vec::new(),
        next_round: next_round.map(|_| NextRound {
            responses: responses.unwrap_or(2),
            baseline_responses: 0,
            args: Vec::new(),
        }),
        join_arena,
        aspect: aspect.filter(|name| !name.trim().is_empty()),
    };
    call(Method::POST, &format!("/api/v1/campaigns/{campaign_id}/runs"), Some(&spec)).await
}

#[server(prefix = "/ui", endpoint = "cancel_run")]
pub async fn cancel_run(id: i64) -> Result<Run, ServerFnError> {
    call(Method::POST, &format!("/api/v1/runs/{id}/cancel"), NO_BODY).await
}

#[server(prefix = "/ui", endpoint = "load_run")]
pub async fn load_run(id: i64) -> Result<RunDetail, ServerFnError> {
    get(&format!("/api/v1/runs/{id}")).await
}
