//! The OpenAI-compatible HTTP API of `pairwise-train serve`: `GET /v1/models`,
//! `POST /v1/chat/completions` and `POST /v1/completions` (plain JSON or, with
//! `"stream": true`, server-sent events in OpenAI's chunk format ending in `[DONE]`), and the
//! run-time adapter routes `POST /v1/adapters` / `DELETE /v1/adapters/{name}` (admin key).
//! Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with its
//! status codes, so clients report them as they would OpenAI's.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::methods::generate::{Finish, Sampling};
use crate::model::tokenizer::{ChatTokenizer, Message};
use crate::serve::engine::{EngineHandle, Event, SequenceRequest};

/// What every handler reads.
pub struct ServeState {
    pub engine: EngineHandle,
    pub tokenizer: Arc<ChatTokenizer>,
    /// Every request needs `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Adapter management needs this key; without one it is switched off.
    pub admin_key: Option<String>,
    /// Prompt + completion tokens a sequence may reach.
    pub context_length: usize,
    /// Completion tokens when a request gives no `max_tokens`.
    pub default_max_tokens: usize,
    /// Longest accepted `n` (sequences per request).
    pub max_n: usize,
}

pub fn router(state: Arc<ServeState>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/adapters", post(add_adapter))
        .route("/v1/adapters/{name}", delete(remove_adapter))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /v1/models") })
        .with_state(state)
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), param: None }
    }

    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError { param: Some(param), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_value", message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "invalid_request_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}});
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid request body: {}", rejection.body_text()),
        )
    }
}

fn check_key(headers: &HeaderMap, key: Option<&str>) -> Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.map(str::trim) == Some(key) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "missing or wrong API key (Authorization: Bearer KEY)",
        ))
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn list_models(State(state): State<Arc<ServeState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_key(&headers, state.api_key.as_deref())?;
    let names = state.engine.registry.read().expect("registry lock").names();
    let data: Vec<Value> =
        names.iter().map(|id| json!({"id": id, "object": "model", "created": now(), "owned_by": "pairwise"})).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// A string or a list of strings (`stop`, `prompt`).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Message content: a string, or OpenAI's list of parts of which only text is understood.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The sampling fields both completion routes share (unknown fields are ignored, as the
/// official clients send some this server has no use for).
#[derive(Deserialize)]
struct SamplingRequest {
    model: String,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    stop: Option<OneOrMany>,
    seed: Option<u64>,
    n: Option<usize>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    sampling: SamplingRequest,
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: OneOrMany,
    #[serde(flatten)]
    sampling: SamplingRequest,
}

/// A validated request: which model, the prompt's tokens, and each sequence's sampling.
struct Job {
    model: String,
    prompt: Vec<u32>,
    sampling: Vec<Sampling>,
    stream: bool,
    include_usage: bool,
}

impl ServeState {
    fn job(&self, request: SamplingRequest, prompt: Vec<u32>) -> Result<Job, ApiError> {
        if self.engine.registry.read().expect("registry lock").resolve(&request.model).is_none() {
            return Err(ApiError {
                param: Some("model"),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!("the model {:?} does not exist; GET /v1/models lists the served ones", request.model),
                )
            });
        }
        let temperature = request.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid("temperature", format!("temperature must be in [0, 2], got {temperature}")));
        }
        let top_p = request.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p", format!("top_p must be in (0, 1], got {top_p}")));
        }
        let n = request.n.unwrap_or(1);
        if n == 0 || n > self.max_n {
            return Err(ApiError::invalid("n", format!("n must be between 1 and {}, got {n}", self.max_n)));
        }
        let stop = request.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > 4 {
            return Err(ApiError::invalid("stop", format!("at most 4 stop sequences, got {}", stop.len())));
        }
        if prompt.is_empty() {
            return Err(ApiError::invalid("messages", "the prompt is empty"));
        }
        let room = self.context_length.saturating_sub(prompt.len());
        let max_tokens = request.max_completion_tokens.or(request.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1"));
        }
        if room == 0 || max_tokens.is_some_and(|m| m > room) {
            return Err(ApiError {
                param: Some("messages"),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "context_length_exceeded",
                    format!(
                        "this model's context is {} tokens; the prompt has {} and {} more were asked for",
                        self.context_length,
                        prompt.len(),
                        max_tokens.unwrap_or(1)
                    ),
                )
            });
        }
        let max_new_tokens = max_tokens.unwrap_or(self.default_max_tokens).min(room);
        // Without a seed each request draws its own; sequence i of a request uses seed + i.
        let seed = request.seed.unwrap_or_else(rand::random);
        let sampling = (0..n as u64)
            .map(|i| Sampling {
                temperature,
                top_p,
                top_k: 0,
                max_new_tokens,
                stop: stop.clone(),
                seed: seed.wrapping_add(i),
            })
            .collect();
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        Ok(Job { model: request.model, prompt, sampling, stream: request.stream, include_usage })
    }
}

fn chat_prompt(tokenizer: &ChatTokenizer, messages: Vec<ChatMessage>) -> Result<Vec<u32>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must hold at least one message"));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        if !matches!(message.role.as_str(), "system" | "developer" | "user" | "assistant") {
            return Err(ApiError::invalid(
                "messages",
                format!("messages[{i}].role {:?} is not supported", message.role),
            ));
        }
        let content = match message.content {
            None => String::new(),
            Some(Content::Text(text)) => text,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                "messages",
                                format!("messages[{i}]: content parts of type {kind:?} are not supported (text only)"),
                            ));
                        }
                    }
                }
                text
            }
        };
        let role = if message.role == "developer" { "system".to_string() } else { message.role };
        turns.push(Message { role, content });
    }
    let rendered = tokenizer
        .render_chat(&turns, true)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template refused these messages: {e:#}")))?;
    tokenizer.encode_prompt(&rendered).map_err(|e| ApiError::invalid("messages", format!("{e:#}")))
}

async fn chat_completions(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    check_key(&headers, state.api_key.as_deref())?;
    let Json(request) = body?;
    let prompt = chat_prompt(&state.tokenizer, request.messages)?;
    let job = state.job(request.sampling, prompt)?;
    respond(&state, job, Kind::Chat).await
}

async fn completions(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    check_key(&headers, state.api_key.as_deref())?;
    let Json(request) = body?;
    let prompt = match request.prompt.into_vec().as_slice() {
        [one] => state.tokenizer.encode_prompt(one).map_err(|e| ApiError::invalid("prompt", format!("{e:#}")))?,
        _ => return Err(ApiError::invalid("prompt", "give exactly one prompt string per request")),
    };
    let job = state.job(request.sampling, prompt)?;
    respond(&state, job, Kind::Completion).await
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Eos | Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// Queues the job's sequences and answers with the whole result or a stream of chunks.
async fn respond(state: &ServeState, job: Job, kind: Kind) -> Result<Response, ApiError> {
    let mut receivers = Vec::with_capacity(job.sampling.len());
    for sampling in job.sampling {
        let (events, receiver) = mpsc::unbounded_channel();
        state
            .engine
            .generate(SequenceRequest { model: job.model.clone(), prompt: job.prompt.clone(), sampling, events })
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped", e.to_string()))?;
        receivers.push(receiver);
    }
    let id = format!("{}-{:016x}", if matches!(kind, Kind::Chat) { "chatcmpl" } else { "cmpl" }, rand::random::<u64>());
    let prompt_tokens = job.prompt.len();
    if job.stream {
        let stream = chunk_stream(receivers, kind, id, job.model, prompt_tokens, job.include_usage);
        return Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response());
    }
    let mut choices = Vec::with_capacity(receivers.len());
    let mut completion_tokens = 0;
    for (index, mut receiver) in receivers.into_iter().enumerate() {
        let mut text = String::new();
        let finish = loop {
            match receiver.recv().await {
                Some(Event::Text(piece)) => text.push_str(&piece),
                Some(Event::Done { finish, completion_tokens: n }) => {
                    completion_tokens += n;
                    break finish;
                }
                Some(Event::Failed(message)) => {
                    return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation_failed", message));
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "generation_failed",
                        "the engine dropped the request",
                    ));
                }
            }
        };
        choices.push(match kind {
            Kind::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason(finish),
            }),
            Kind::Completion => {
                json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish_reason(finish)})
            }
        });
    }
    let object = if matches!(kind, Kind::Chat) { "chat.completion" } else { "text_completion" };
    Ok(Json(json!({
        "id": id,
        "object": object,
        "created": now(),
        "model": job.model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response())
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})
}

/// The events of all of a request's sequences as OpenAI chunks: for chat a first chunk with
/// the role, then content deltas and a chunk with `finish_reason` per sequence; the usage
/// chunk when asked for, and `[DONE]`. A failure ends the stream with an error object. When
/// the client goes away the forwarding task ends, which drops the engine's channels and so
/// stops the sequences.
fn chunk_stream(
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
    kind: Kind,
    id: String,
    model: String,
    prompt_tokens: usize,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let (out, stream) = mpsc::unbounded_channel::<Result<SseEvent, Infallible>>();
    tokio::spawn(async move {
        let send = |data: Value| out.send(Ok(SseEvent::default().data(data.to_string()))).is_ok();
        let created = now();
        let object = if matches!(kind, Kind::Chat) { "chat.completion.chunk" } else { "text_completion" };
        let chunk = |choice: Value| json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
        if matches!(kind, Kind::Chat) {
            for index in 0..receivers.len() {
                let delta = json!({"role": "assistant", "content": ""});
                if !send(chunk(json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null}))) {
                    return;
                }
            }
        }
        let mut events = stream::select_all(
            receivers
                .into_iter()
                .enumerate()
                .map(|(index, r)| UnboundedReceiverStream::new(r).map(move |e| (index, e))),
        );
        let mut completion_tokens = 0;
        while let Some((index, event)) = events.next().await {
            let data = match event {
                Event::Text(piece) => match kind {
                    Kind::Chat => chunk(
                        json!({"index": index, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}),
                    ),
                    Kind::Completion => {
                        chunk(json!({"index": index, "text": piece, "logprobs": null, "finish_reason": null}))
                    }
                },
                Event::Done { finish, completion_tokens: tokens } => {
                    completion_tokens += tokens;
                    let reason = finish_reason(finish);
                    match kind {
                        Kind::Chat => {
                            chunk(json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}))
                        }
                        Kind::Completion => {
                            chunk(json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason}))
                        }
                    }
                }
                Event::Failed(message) => {
                    send(
                        json!({"error": {"message": message, "type": "server_error", "param": null, "code": "generation_failed"}}),
                    );
                    return;
                }
            };
            if !send(data) {
                return;
            }
        }
        if include_usage {
            let data = json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage(prompt_tokens, completion_tokens)});
            if !send(data) {
                return;
            }
        }
        let _ = out.send(Ok(SseEvent::default().data("[DONE]")));
    });
    UnboundedReceiverStream::new(stream)
}

#[derive(Deserialize)]
struct AddAdapter {
    name: String,
    path: PathBuf,
}

async fn add_adapter(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Result<Json<AddAdapter>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin(&state, &headers)?;
    let Json(request) = body?;
    if request.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "the adapter needs a name"));
    }
    state
        .engine
        .add_adapter(request.name.clone(), request.path)
        .await
        .map_err(|e| ApiError::invalid("path", format!("{e:#}")))?;
    Ok((StatusCode::CREATED, Json(json!({"id": request.name, "object": "model", "owned_by": "pairwise"})))
        .into_response())
}

async fn remove_adapter(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin(&state, &headers)?;
    state
        .engine
        .remove_adapter(name.clone())
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "model_not_found", format!("{e:#}")))?;
    Ok(Json(json!({"id": name, "object": "model", "deleted": true})).into_response())
}

fn admin(state: &ServeState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.admin_key {
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "adapters_locked",
            "adapter management is off: start serve with --admin-key to add and remove adapters",
        )),
        Some(key) => check_key(headers, Some(key)),
    }
}
