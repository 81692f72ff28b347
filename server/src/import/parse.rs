//! Parsing and validating an import file (JSONL), with no I/O: every problem is reported
//! with its line number and field.
//!
//! Two line shapes are accepted (see README "Import format"):
//! * a prompt with its responses: `{"prompt", "messages"?, "responses": [{"text","model",...}]}`
//!   (K ≥ 2 for pairs and rankings, for a ranking campaign also `"gold_ranks"?`: a gold
//!   check's known ranking; K ≥ 1 for thumbs and scale campaigns, one task per response);
//! * a ready pair: `{"prompt", "response_a", "response_b", "model_a"?, "model_b"?, "gold"?}`.

use std::collections::HashSet;

use pairwise_api::campaigns::CampaignKind;
use pairwise_api::import::LineError;
use pairwise_api::votes::Message;
use serde_json::{Map, Value, json};

pub const MAX_TEXT_BYTES: usize = 200_000;
/// Longest accepted JSONL line, in bytes.
pub const MAX_LINE_BYTES: usize = 2 * 1024 * 1024;
/// Most lines in one import.
pub const MAX_LINES: usize = 500_000;
/// Most responses for one prompt (K); 32 already means 496 pairs.
pub const MAX_RESPONSES: usize = 32;
/// Stop collecting errors after this many; the file is rejected anyway.
const MAX_REPORTED_ERRORS: usize = 100;

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
    /// A ranking gold check's known ranks, one per response in order, as competition ranks
    /// (1 = best; equal ranks tie). Only on `responses` lines.
    pub gold_ranks: Option<Vec<i64>>,
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
        let mut gold_ranks = None;
        let body = if obj.contains_key("responses") {
            let allowed: Vec<&str> = common.iter().copied().chain(["responses", "gold_ranks"]).collect();
            self.unknown_fields(&obj, "", &allowed);
            match obj.get("responses") {
                Some(Value::Array(list)) if list.is_empty() => {
                    self.error("responses", "needs at least 1 response");
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
                    gold_ranks = self.gold_ranks(&obj, list.len());
                    if gold_ranks.is_some() && unique.len() < list.len() {
                        self.error("responses", "a gold ranking needs responses with different texts");
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
        Some(ImportItem { line: self.line, prompt: prompt?, messages, metadata, body: body?, gold_ranks })
    }

    /// `gold_ranks`: one rank per response (1 = best, equal numbers tie), as competition ranks.
    fn gold_ranks(&mut self, obj: &Map<String, Value>, responses: usize) -> Option<Vec<i64>> {
        let list = match obj.get("gold_ranks") {
            None | Some(Value::Null) => return None,
            Some(Value::Array(list)) => list,
            Some(_) => {
                self.error("gold_ranks", "must be a list of ranks, one per response (1 = best)");
                return None;
            }
        };
        if list.len() != responses {
            self.error("gold_ranks", format!("has {} ranks for {responses} responses (one rank each)", list.len()));
            return None;
        }
        let mut ranks = Vec::with_capacity(list.len());
        for (i, rank) in list.iter().enumerate() {
            match rank.as_i64() {
                Some(rank) if (1..=responses as i64).contains(&rank) => ranks.push(rank),
                _ => {
                    self.error(&format!("gold_ranks[{i}]"), format!("must be a whole number from 1 to {responses}"));
                    return None;
                }
            }
        }
        if ranks.iter().all(|&rank| rank == ranks[0]) {
            self.error("gold_ranks", "ties every response: a gold check needs a known order");
            return None;
        }
        Some(ranks.iter().map(|r| 1 + ranks.iter().filter(|other| *other < r).count() as i64).collect())
    }
}

/// Most responses of one ranking task (what a rating page can show side by side).
pub const MAX_RANKED: usize = 6;

/// The problems of items for the campaign's kind. For a ranking campaign each line is one
/// task, a prompt with 2-6 responses, so ready pairs and longer lists are refused; pairs need
/// two different responses; thumbs and scale campaigns rate each response alone, so they take
/// `responses` lists only; a gold ranking has a task to check in a ranking campaign only.
pub fn feedback_errors(items: &[ImportItem], kind: CampaignKind) -> Vec<LineError> {
    let ranking = kind == CampaignKind::Ranking;
    let single = kind.single_response();
    let mut errors = Vec::new();
    for item in items {
        let problem = match &item.body {
            _ if !ranking && item.gold_ranks.is_some() => Some((
                "gold_ranks",
                if single {
                    "thumbs and scale campaigns have no gold checks".to_string()
                } else {
                    "gold rankings are for ranking campaigns; a pairwise gold check is a ready pair with `gold`"
                        .to_string()
                },
            )),
            ItemBody::Pair { .. } if single => Some((
                "response_a",
                format!("a {} campaign rates responses one at a time: import them as `responses`", kind.as_str()),
            )),
            ItemBody::Pair { .. } if ranking => Some((
                "response_a",
                "a ranking campaign imports a prompt with all its responses (`responses`), not ready pairs".to_string(),
            )),
            ItemBody::Responses(list) if !single && list.len() < 2 => {
                Some(("responses", "needs at least 2 responses with different texts".to_string()))
            }
            ItemBody::Responses(list) if ranking && list.len() > MAX_RANKED => {
                Some(("responses", format!("has {} responses; a ranking task has at most {MAX_RANKED}", list.len())))
            }
            _ => None,
        };
        if let Some((field, message)) = problem {
            errors.push(LineError { line: item.line, field: field.into(), message });
        }
        if errors.len() >= MAX_REPORTED_ERRORS {
            break;
        }
    }
    errors
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
    fn duplicate_responses_collapse_and_one_left_is_an_error_for_pairs_only() {
        let data = br#"{"prompt":"p","responses":[{"text":"same","model":"a"},{"text":"same","model":"b"}]}"#;
        let items = parse_import(data).unwrap();
        assert_eq!(feedback_errors(&items, CampaignKind::Pairwise)[0].field, "responses");
        assert_eq!(feedback_errors(&items, CampaignKind::Ranking)[0].field, "responses");
        assert!(feedback_errors(&items, CampaignKind::Thumbs).is_empty());
        let pair = br#"{"prompt":"p","response_a":"x","response_b":"y"}"#;
        let errors = feedback_errors(&parse_import(pair).unwrap(), CampaignKind::Scale);
        assert_eq!(errors[0].field, "response_a");
        assert!(errors[0].message.contains("one at a time"), "{errors:?}");
    }

    #[test]
    fn gold_ranks_become_competition_ranks_and_need_distinct_texts() {
        let line = |ranks: &str, third: &str| {
            format!(
                r#"{{"prompt":"p","responses":[{{"text":"x","model":"a"}},{{"text":"y","model":"b"}},{{"text":"{third}","model":"c"}}],"gold_ranks":{ranks}}}"#
            )
        };
        let items = parse_import(line("[1, 1, 2]", "z").as_bytes()).unwrap();
        assert_eq!(items[0].gold_ranks, Some(vec![1, 1, 3]));
        let errors = parse_import(line("[1, 2, 3]", "x").as_bytes()).unwrap_err();
        assert_eq!(errors[0].message, "a gold ranking needs responses with different texts");
    }
}
