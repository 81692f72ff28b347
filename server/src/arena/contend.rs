//! Asking the contenders: one streamed OpenAI-style chat completion per side, both sides
//! at once, and the battles this server is generating right now (`Live`), whose text so far
//! and events the rating page's event stream reads.
//!
//! Errors come back in plain words for the rater ("Model B could not be reached"); the
//! contender's name and URL go to the log only, since names stay hidden until the vote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pairwise_api::arena::{ArenaSettings, BattleEvent, Side};
use pairwise_api::votes::Message;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Where a contender answers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
}

/// One side's finished answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub finish_reason: Option<String>,
    pub latency_ms: i64,
}

/// Why a side gave no usable answer; `Display` is what the rater reads.
#[derive(Debug, thiserror::Error)]
pub enum ContenderError {
    #[error("could not be reached")]
    Unreachable,
    #[error("did not answer within {0} s")]
    TimedOut(u64),
    #[error("failed (its endpoint answered HTTP {0})")]
    Status(u16),
    #[error("failed while answering ({0})")]
    Broken(String),
    #[error("gave an empty answer")]
    Empty,
}

fn side_label(side: Side) -> &'static str {
    match side {
        Side::Left => "Model A",
        Side::Right => "Model B",
    }
}

/// The text of both sides so far and the listeners of one live battle.
struct LiveBattle {
    left: String,
    right: String,
    events: broadcast::Sender<BattleEvent>,
}

/// This server's battles in generation, and the HTTP client that talks to contenders.
#[derive(Clone)]
pub struct Live {
    client: reqwest::Client,
    battles: Arc<Mutex<HashMap<i64, LiveBattle>>>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    pub fn new() -> Live {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client for contenders");
        Live { client, battles: Arc::default() }
    }

    /// The latest turn's text so far and a receiver of what follows, when this server is
    /// generating the battle; `None` when it is not (finished, or on another server).
    pub fn subscribe(&self, battle: i64) -> Option<(String, String, broadcast::Receiver<BattleEvent>)> {
        let battles = self.battles.lock().expect("live battles");
        battles.get(&battle).map(|b| (b.left.clone(), b.right.clone(), b.events.subscribe()))
    }

    fn begin(&self, battle: i64) {
        let (events, _) = broadcast::channel(1024);
        self.battles
            .lock()
            .expect("live battles")
            .insert(battle, LiveBattle { left: String::new(), right: String::new(), events });
    }

    fn push(&self, battle: i64, side: Side, text: &str) {
        let mut battles = self.battles.lock().expect("live battles");
        if let Some(live) = battles.get_mut(&battle) {
            match side {
                Side::Left => live.left.push_str(text),
                Side::Right => live.right.push_str(text),
            }
            let _ = live.events.send(BattleEvent::Delta { side, text: text.to_string() });
        }
    }

    /// Ends a live battle with its last event (after the database has its outcome, so a
    /// listener that arrives later reads the outcome there).
    pub fn end(&self, battle: i64, event: BattleEvent) {
        if let Some(live) = self.battles.lock().expect("live battles").remove(&battle) {
            let _ = live.events.send(event);
        }
    }

    /// Both sides' answers to their conversations, streamed into the live battle as they
    /// come. The first failure cancels the other side's request and is the error, in words
    /// for the rater.
    pub async fn answer_both(
        &self,
        battle: i64,
        left: (&Endpoint, Vec<Message>),
        right: (&Endpoint, Vec<Message>),
        settings: &ArenaSettings,
    ) -> Result<(Answer, Answer), String> {
        self.begin(battle);
        let one = |side: Side, endpoint: &Endpoint, messages: Vec<Message>| {
            let endpoint = endpoint.clone();
            async move {
                let timeout = Duration::from_secs(settings.timeout_seconds);
                let answer = match tokio::time::timeout(
                    timeout,
                    self.answer(&endpoint, &messages, settings, |text| self.push(battle, side, text)),
                )
                .await
                {
                    Ok(answer) => answer,
                    Err(_) => Err(ContenderError::TimedOut(settings.timeout_seconds)),
                };
                answer.map_err(|error| {
                    tracing::warn!(battle, contender = %endpoint.name, url = %endpoint.base_url, %error, "contender failed");
                    format!("{} {error}.", side_label(side))
                })
            }
        };
        tokio::try_join!(one(Side::Left, left.0, left.1), one(Side::Right, right.0, right.1))
    }

    /// One streamed chat completion; `on_text` gets each piece of the answer.
    async fn answer(
        &self,
        endpoint: &Endpoint,
        messages: &[Message],
        settings: &ArenaSettings,
        on_text: impl Fn(&str),
    ) -> Result<Answer, ContenderError> {
        let started = Instant::now();
        let body = json!({
            "model": endpoint.model,
            "messages": messages,
            "stream": true,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
        });
        let url = format!("{}/chat/completions", endpoint.base_url.trim_end_matches('/'));
        let mut request = self.client.post(url).json(&body);
        if let Some(key) = &endpoint.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                ContenderError::Unreachable
            } else {
                ContenderError::Broken(e.without_url().to_string())
            }
        })?;
        if !response.status().is_success() {
            return Err(ContenderError::Status(response.status().as_u16()));
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut text = String::new();
        let mut finish_reason = None;
        if streamed {
            let mut body = response.bytes_stream();
            let mut pending: Vec<u8> = Vec::new();
            'read: while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ContenderError::Broken(e.without_url().to_string()))?;
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    let Some(data) = line.trim().strip_prefix("data:") else { continue };
                    let data = data.trim();
                    if data == "[DONE]" {
                        break 'read;
                    }
                    let chunk: Value = serde_json::from_str(data)
                        .map_err(|e| ContenderError::Broken(format!("an unreadable stream event: {e}")))?;
                    if let Some(error) = chunk.get("error") {
                        return Err(ContenderError::Broken(error_message(error)));
                    }
                    let choice = &chunk["choices"][0];
                    if let Some(piece) = choice["delta"]["content"].as_str()
                        && !piece.is_empty()
                    {
                        text.push_str(piece);
                        on_text(piece);
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        finish_reason = Some(reason.to_string());
                    }
                }
            }
        } else {
            // An endpoint that ignores `stream` answers in one piece.
            let reply: Value =
                response.json().await.map_err(|e| ContenderError::Broken(e.without_url().to_string()))?;
            let choice = &reply["choices"][0];
            text = choice["message"]["content"].as_str().unwrap_or_default().to_string();
            finish_reason = choice["finish_reason"].as_str().map(str::to_string);
            on_text(&text);
        }
        if text.trim().is_empty() {
            return Err(ContenderError::Empty);
        }
        Ok(Answer { text, finish_reason, latency_ms: started.elapsed().as_millis() as i64 })
    }
}

fn error_message(error: &Value) -> String {
    error["message"].as_str().map(str::to_string).unwrap_or_else(|| error.to_string())
}
