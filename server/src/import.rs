//! Import of prompts and responses into a campaign from JSONL.
//!
//! Two line shapes are accepted (see README "Import format"):
//! * a prompt with K ≥ 2 responses: `{"prompt", "messages"?, "responses": [{"text","model",...}]}`
//!   which becomes all K·(K−1)/2 pairs, or a seeded random subset of them;
//! * a ready pair: `{"prompt", "response_a", "response_b", "model_a"?, "model_b"?, "gold"?}`.
//!
//! The whole file is validated before anything is written; every problem is reported with
//! its line number and field, and a file with any bad line imports nothing. The writes then
//! happen in one transaction. Prompts and responses are de-duplicated by content hash.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::args;
use crate::auth::AdminUser;
use crate::campaigns::{CampaignStatus, get_campaign};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::store::{SqlValue, Store, tx_body};

/// Longest accepted prompt or response text, in bytes.
pub const MAX_TEXT_BYTES: usize = 200_000;
/// Longest accepted JSONL line, in bytes.
pub const MAX_LINE_BYTES: usize = 2 * 1024 * 1024;
/// Most lines in one import.
pub const MAX_LINES: usize = 500_000;
/// Most responses for one prompt (K); 32 already means 496 pairs.
pub const MAX_RESPONSES: usize = 32;
/// Stop collecting errors after this many; the file is rejected anyway.
const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResponseIn {
    pub text: String,
    pub model: String,
    pub model_version: Option<String>,
    pub params: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemBody {
    Responses(Vec<ResponseIn>),
    Pair { a: Box<ResponseIn>, b: Box<ResponseIn>, gold: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportItem {
    pub line: usize,
    pub prompt: String,
    pub messages: Vec<Message>,
    pub metadata: Value,
    pub body: ItemBody,
}

/// How pairs are formed from a prompt's K responses.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PairingOptions {
    /// At most this many pairs per prompt, sampled at random; all pairs when absent.
    pub max_pairs_per_prompt: Option<usize>,
    /// Seed of that sampling (default 0), so imports are reproducible.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ImportReport {
    pub lines: usize,
    pub prompts_created: usize,
    pub prompts_reused: usize,
    pub responses_created: usize,
    pub responses_reused: usize,
    pub pairs_created: usize,
    /// Pairs already in the campaign (same two responses, either order).
    pub pairs_existing: usize,
    pub gold_pairs: usize,
}

struct LineParser<'a> {
    line: usize,
    errors: &'a mut Vec<LineError>,
}

impl LineParser<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(LineError { line: self.line, field: field.to_string(), message: message.into() });
    }

    fn text(&mut self, obj: &Map<String, Value>, field: &str, required: bool) -> Option<String> {
        match obj.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.error(field, "is required");
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() && required => {
                self.error(field, "must not be empty");
                None
            }
            Some(Value::String(s)) if s.len() > MAX_TEXT_BYTES => {
                self.error(field, format!("is {} bytes, the limit is {MAX_TEXT_BYTES}", s.len()));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    fn unknown_fields(&mut self, obj: &Map<String, Value>, prefix: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(&format!("{prefix}{key}"), format!("unknown field (allowed: {})", allowed.join(", ")));
            }
        }
    }

    fn messages(&mut self, obj: &Map<String, Value>) -> Vec<Message> {
        let Some(value) = obj.get("messages") else {
            return Vec::new();
        };
        let Some(list) = value.as_array() else {
            self.error("messages", "must be a list of {role, content} objects");
            return Vec::new();
        };
        let mut messages = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let field = format!("messages[{i}]");
            let Some(m) = item.as_object() else {
                self.error(&field, "must be an object {role, content}");
                continue;
            };
            self.unknown_fields(m, &format!("{field}."), &["role", "content"]);
            let role = self.text(m, "role", true);
            let content = self.text(m, "content", false).unwrap_or_default();
            match role.as_deref() {
                Some("system" | "user" | "assistant") => {
                    messages.push(Message { role: role.unwrap_or_default(), content })
                }
                Some(other) => {
                    self.error(&format!("{field}.role"), format!("must be system, user or assistant, got `{other}`"))
                }
                None => {}
            }
        }
        messages
    }

    fn metadata(&mut self, obj: &Map<String, Value>) -> Value {
        let mut metadata = match obj.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                self.error("metadata", "must be an object");
                Map::new()
            }
        };
        match obj.get("source") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                metadata.insert("source".into(), json!(s));
            }
            Some(_) => self.error("source", "must be a string"),
        }
        match obj.get("tags") {
            None | Some(Value::Null) => {}
            Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => {
                metadata.insert("tags".into(), Value::Array(tags.clone()));
            }
            Some(_) => self.error("tags", "must be a list of strings"),
        }
        Value::Object(metadata)
    }

    fn response(&mut self, value: &Value, field: &str) -> Option<ResponseIn> {
        let Some(obj) = value.as_object() else {
            self.error(field, "must be an object {text, model, ...}");
            return None;
        };
        let allowed = ["text", "model", "model_version", "checkpoint", "params"];
        self.unknown_fields(obj, &format!("{field}."), &allowed);
        let before = self.errors.len();
        let text = self.text(obj, "text", true);
        let model = self.text(obj, "model", true);
        let version = self.text(obj, "model_version", false).or_else(|| self.text(obj, "checkpoint", false));
        let params = match obj.get("params") {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                self.error(&format!("{field}.params"), "must be an object");
                json!({})
            }
        };
        // Field names of nested errors carry the response's position.
        for e in &mut self.errors[before..] {
            if !e.field.starts_with(field) {
                e.field = format!("{field}.{}", e.field);
            }
        }
        Some(ResponseIn { text: text?, model: model?, model_version: version, params })
    }

    fn item(&mut self, value: Value) -> Option<ImportItem> {
        let Value::Object(obj) = value else {
            self.error("", "each line must be a JSON object");
            return None;
        };
        let before = self.errors.len();
        let prompt = self.text(&obj, "prompt", true);
        let messages = self.messages(&obj);
        let metadata = self.metadata(&obj);
        let common = ["prompt", "messages", "metadata", "source", "tags"];
        let body = if obj.contains_key("responses") {
            let allowed: Vec<&str> = common.iter().copied().chain(["responses"]).collect();
            self.unknown_fields(&obj, "", &allowed);
            match obj.get("responses") {
                Some(Value::Array(list)) if list.len() < 2 => {
                    self.error("responses", format!("needs at least 2 responses, got {}", list.len()));
                    None
                }
                Some(Value::Array(list)) if list.len() > MAX_RESPONSES => {
                    self.error("responses", format!("has {} responses, the limit is {MAX_RESPONSES}", list.len()));
                    None
                }
                Some(Value::Array(list)) => {
                    let parsed: Vec<Option<ResponseIn>> =
                        list.iter().enumerate().map(|(i, r)| self.response(r, &format!("responses[{i}]"))).collect();
                    let mut seen = HashSet::new();
                    let unique: Vec<ResponseIn> =
                        parsed.into_iter().flatten().filter(|r| seen.insert(r.text.clone())).collect();
                    if unique.len() < 2 && self.errors.len() == before {
                        self.error("responses", "needs at least 2 responses with different texts");
                    }
                    Some(ItemBody::Responses(unique))
                }
                _ => {
                    self.error("responses", "must be a list of {text, model} objects");
                    None
                }
            }
        } else if obj.contains_key("response_a") || obj.contains_key("response_b") {
            let allowed: Vec<&str> =
                common.iter().copied().chain(["response_a", "response_b", "model_a", "model_b", "gold"]).collect();
            self.unknown_fields(&obj, "", &allowed);
            let a = self.text(&obj, "response_a", true);
            let b = self.text(&obj, "response_b", true);
            let model_a = self.text(&obj, "model_a", false).unwrap_or_else(|| "unknown".into());
            let model_b = self.text(&obj, "model_b", false).unwrap_or_else(|| "unknown".into());
            let gold = match obj.get("gold") {
                None | Some(Value::Null) => None,
                Some(Value::String(g)) if ["a", "b", "tie", "both_bad"].contains(&g.as_str()) => Some(g.clone()),
                Some(_) => {
                    self.error("gold", "must be one of a, b, tie, both_bad");
                    None
                }
            };
            if a.is_some() && a == b {
                self.error("response_b", "is identical to response_a");
            }
            let response =
                |text: String, model: String| ResponseIn { text, model, model_version: None, params: json!({}) };
            Some(ItemBody::Pair { a: Box::new(response(a?, model_a)), b: Box::new(response(b?, model_b)), gold })
        } else {
            self.error("responses", "is required (or `response_a` and `response_b` for a ready pair)");
            None
        };
        if self.errors.len() > before {
            return None;
        }
        Some(ImportItem { line: self.line, prompt: prompt?, messages, metadata, body: body? })
    }
}

/// Parses and validates a whole JSONL file. Blank lines are ignored.
pub fn parse_import(data: &[u8]) -> Result<Vec<ImportItem>, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut items = Vec::new();
    for (index, raw) in data.split(|b| *b == b'\n').enumerate() {
        let line = index + 1;
        if errors.len() >= MAX_REPORTED_ERRORS {
            break;
        }
        if line > MAX_LINES {
            errors.push(LineError { line, field: String::new(), message: format!("more than {MAX_LINES} lines") });
            break;
        }
        if raw.len() > MAX_LINE_BYTES {
            errors.push(LineError {
                line,
                field: String::new(),
                message: format!("line is {} bytes, the limit is {MAX_LINE_BYTES}", raw.len()),
            });
            continue;
        }
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text.trim(),
            Err(e) => {
                errors.push(LineError { line, field: String::new(), message: format!("not valid UTF-8: {e}") });
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                if let Some(item) = (LineParser { line, errors: &mut errors }).item(value) {
                    items.push(item);
                }
            }
            Err(e) => errors.push(LineError { line, field: String::new(), message: format!("invalid JSON: {e}") }),
        }
    }
    if items.is_empty() && errors.is_empty() {
        errors.push(LineError { line: 0, field: String::new(), message: "the file has no records".into() });
    }
    if errors.is_empty() { Ok(items) } else { Err(errors) }
}

fn content_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Index pairs (i, j), i < j, of K responses: all of them, or a seeded sample.
fn pair_indices(k: usize, options: &PairingOptions, rng: &mut rand::rngs::StdRng) -> Vec<(usize, usize)> {
    let mut all: Vec<(usize, usize)> = (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).collect();
    if let Some(max) = options.max_pairs_per_prompt
        && max < all.len()
    {
        all.shuffle(rng);
        all.truncate(max);
        all.sort_unstable();
    }
    all
}

/// Writes validated items into a campaign in one transaction (through `Db::transact`, so on
/// SQLite it queues with the votes on the writer thread instead of competing for the lock).
pub async fn import_items(
    db: &Db,
    campaign_id: i64,
    items: Vec<ImportItem>,
    options: &PairingOptions,
) -> ApiResult<ImportReport> {
    let campaign = get_campaign(db, campaign_id, 0).await?;
    if campaign.status == CampaignStatus::Closed {
        return Err(ApiError::conflict("campaign_closed", format!("campaign {campaign_id} is closed")));
    }
    if options.max_pairs_per_prompt == Some(0) {
        return Err(ApiError::bad_request("max_pairs_per_prompt: must be at least 1"));
    }
    let items = Arc::new(items);
    let options = *options;
    db.transact(tx_body(move |tx| {
        let items = items.clone();
        Box::pin(async move { write_items(tx, campaign_id, &items, &options, now_ms()).await })
    }))
    .await
}

/// Inserts (or finds) a content-addressed row; returns its id and whether it was new.
async fn upsert_id(
    tx: &mut dyn Store,
    insert: &'static str,
    find: &'static str,
    insert_args: Vec<SqlValue>,
    find_args: Vec<SqlValue>,
) -> ApiResult<(i64, bool)> {
    match tx.fetch_optional(insert, insert_args).await? {
        Some(row) => Ok((row.int("id")?, true)),
        None => Ok((tx.fetch_one(find, find_args).await?.int("id")?, false)),
    }
}

async fn write_items(
    tx: &mut dyn Store,
    campaign_id: i64,
    items: &[ImportItem],
    options: &PairingOptions,
    now: i64,
) -> ApiResult<ImportReport> {
    // Seeded here, so a retried transaction draws the same pairs and shuffle keys.
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut report = ImportReport { lines: items.len(), ..ImportReport::default() };
    for item in items {
        let messages_json = serde_json::to_string(&item.messages).map_err(anyhow::Error::from)?;
        let prompt_hash = content_hash(&[&messages_json, &item.prompt]);
        let (prompt_id, created) = upsert_id(
            tx,
            "INSERT INTO prompts (content_hash, text, messages, metadata, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (content_hash) DO NOTHING RETURNING id",
            "SELECT id FROM prompts WHERE content_hash = $1",
            args![prompt_hash.as_str(), item.prompt.as_str(), messages_json, item.metadata.to_string(), now],
            args![prompt_hash.as_str()],
        )
        .await?;
        if created {
            report.prompts_created += 1;
        } else {
            report.prompts_reused += 1;
        }
        let (responses, pairs, gold): (Vec<&ResponseIn>, Vec<(usize, usize)>, Option<&str>) = match &item.body {
            ItemBody::Responses(list) => (list.iter().collect(), pair_indices(list.len(), options, &mut rng), None),
            ItemBody::Pair { a, b, gold } => (vec![a.as_ref(), b.as_ref()], vec![(0, 1)], gold.as_deref()),
        };
        let mut response_ids = Vec::with_capacity(responses.len());
        for response in responses {
            let hash = content_hash(&[&response.text]);
            let (id, created) = upsert_id(
                tx,
                "INSERT INTO responses (prompt_id, content_hash, text, model, model_version, params, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (prompt_id, content_hash) DO NOTHING RETURNING id",
                "SELECT id FROM responses WHERE prompt_id = $1 AND content_hash = $2",
                args![
                    prompt_id,
                    hash.as_str(),
                    response.text.as_str(),
                    response.model.as_str(),
                    response.model_version.as_deref(),
                    response.params.to_string(),
                    now
                ],
                args![prompt_id, hash.as_str()],
            )
            .await?;
            if created {
                report.responses_created += 1;
            } else {
                report.responses_reused += 1;
            }
            response_ids.push(id);
        }
        for (i, j) in pairs {
            let created = tx
                .execute(
                    "INSERT INTO pairs (campaign_id, prompt_id, response_a_id, response_b_id, is_gold, gold_choice, \
                     shuffle_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    args![
                        campaign_id,
                        prompt_id,
                        response_ids[i],
                        response_ids[j],
                        gold.is_some(),
                        gold,
                        rng.random_range(0..i64::from(i32::MAX)),
                        now
                    ],
                )
                .await?;
            if created == 1 {
                report.pairs_created += 1;
                report.gold_pairs += usize::from(gold.is_some());
            } else {
                report.pairs_existing += 1;
            }
        }
    }
    Ok(report)
}

/// Parses, validates and imports a file; the error lists every bad line.
pub async fn import_jsonl(db: &Db, campaign_id: i64, data: &[u8], options: &PairingOptions) -> ApiResult<ImportReport> {
    let items = parse_import(data).map_err(|errors| {
        let first = &errors[0];
        let message = if first.field.is_empty() {
            format!("line {}: {} ({} problem(s), nothing imported)", first.line, first.message, errors.len())
        } else {
            format!(
                "line {}: field `{}` {} ({} problem(s), nothing imported)",
                first.line,
                first.field,
                first.message,
                errors.len()
            )
        };
        ApiError::BadRequest { message, details: Some(json!({ "errors": errors })) }
    })?;
    import_items(db, campaign_id, items, options).await
}

pub fn router(max_import_bytes: usize) -> Router<AppState> {
    Router::new().route(
        "/api/v1/campaigns/{id}/import",
        post(import).layer(axum::extract::DefaultBodyLimit::max(max_import_bytes)),
    )
}

async fn import(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(options): ApiQuery<PairingOptions>,
    body: Bytes,
) -> ApiResult<Json<ImportReport>> {
    let report = import_jsonl(&state.db, id, &body, &options).await?;
    tracing::info!(by = %user.username, campaign = id, pairs = report.pairs_created, "import");
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_line_shapes() {
        let data =
            br#"{"prompt":"p1","responses":[{"text":"x","model":"m1"},{"text":"y","model":"m2","checkpoint":"c7"}]}

{"prompt":"p2","response_a":"a","response_b":"b","gold":"a","messages":[{"role":"system","content":"be brief"}]}"#;
        let items = parse_import(data).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].line, 3);
        match &items[0].body {
            ItemBody::Responses(r) => assert_eq!(r[1].model_version.as_deref(), Some("c7")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(items[1].messages[0].role, "system");
    }

    #[test]
    fn errors_name_line_and_field() {
        let data =
            b"{\"prompt\":\"ok\",\"responses\":[{\"text\":\"x\",\"model\":\"m\"},{\"text\":\"y\",\"model\":\"m\"}]}\n\
{\"prompt\":\"p\",\"responses\":[{\"text\":\"x\"},{\"text\":\"y\",\"model\":\"m\"}]}\n\
not json\n\
{\"prompt\":\"p\",\"response_a\":\"a\",\"response_b\":\"a\",\"colour\":1}\n";
        let errors = parse_import(data).unwrap_err();
        assert_eq!(errors[0], LineError { line: 2, field: "responses[0].model".into(), message: "is required".into() });
        assert_eq!(errors[1].line, 3);
        assert!(errors[1].message.starts_with("invalid JSON"));
        let fields: Vec<&str> = errors[2..].iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"colour") && fields.contains(&"response_b"), "{errors:?}");
    }

    #[test]
    fn duplicate_responses_collapse_and_one_left_is_an_error() {
        let data = br#"{"prompt":"p","responses":[{"text":"same","model":"a"},{"text":"same","model":"b"}]}"#;
        let errors = parse_import(data).unwrap_err();
        assert_eq!(errors[0].field, "responses");
    }

    #[test]
    fn pair_sampling_is_seeded_and_bounded() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(pair_indices(4, &PairingOptions::default(), &mut rng).len(), 6);
        let options = PairingOptions { max_pairs_per_prompt: Some(2), seed: 1 };
        let a = pair_indices(5, &options, &mut rand::rngs::StdRng::seed_from_u64(1));
        let b = pair_indices(5, &options, &mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn content_hash_separates_parts() {
        assert_ne!(content_hash(&["ab", "c"]), content_hash(&["a", "bc"]));
    }
}
