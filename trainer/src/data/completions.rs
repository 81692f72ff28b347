//! Unpaired data: single completions of a prompt, for KTO (each labelled desirable or not)
//! and supervised fine-tuning (each one to imitate), read from JSONL and tokenized under the
//! same truncation policy as pairs.
//!
//! Accepted lines (TRL's unpaired and prompt-completion formats):
//! - `{"prompt": "…", "completion": "…", "label": true}`;
//! - `{"prompt": [messages], "completion": [messages], "label": false}` (conversational);
//! - `{"messages": [...]}`: the last message (an assistant turn) is the completion, the rest the prompt.
//!
//! `label` is required for KTO. For SFT it may be left out; a `false` label is refused there,
//! since imitating an undesirable completion is never what an SFT run wants.

use std::path::Path;

use anyhow::bail;
use serde_json::Value;

use crate::data::pairs::{TokenizedSequence, Truncation, messages, render_completion, truncate};
use crate::error::TrainerError;
use crate::model::tokenizer::{ChatTokenizer, Message};

/// A completion's text: plain strings, or a conversation still to be rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionText {
    Plain { prompt: String, completion: String },
    Chat { prompt: Vec<Message>, completion: Vec<Message> },
}

/// What the data says of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// KTO: every line carries a `label`.
    Kto,
    /// SFT: every line is a completion to imitate.
    Sft,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RatedCompletion {
    pub text: CompletionText,
    /// Desirable (true) or undesirable (false); true for SFT lines without a label.
    pub desirable: bool,
}

/// Parses one JSONL line.
pub fn parse_completion(line: &str, usage: Use) -> Result<RatedCompletion, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value.as_object().ok_or("expected a JSON object")?;
    let text = match (obj.get("prompt"), obj.get("completion"), obj.get("messages")) {
        (Some(Value::String(p)), Some(Value::String(c)), None) => {
            CompletionText::Plain { prompt: p.clone(), completion: c.clone() }
        }
        (Some(p @ Value::Array(_)), Some(c @ Value::Array(_)), None) => {
            CompletionText::Chat { prompt: messages(p)?, completion: messages(c)? }
        }
        (None, None, Some(m)) => {
            let mut all = messages(m)?;
            match all.last() {
                Some(last) if last.role == "assistant" && all.len() >= 2 => {}
                _ => return Err("\"messages\" must end with an assistant turn after at least one other message".into()),
            }
            let completion = vec![all.pop().expect("checked above")];
            CompletionText::Chat { prompt: all, completion }
        }
        (_, _, Some(_)) => return Err("give either \"messages\" or \"prompt\" and \"completion\", not both".into()),
        (None, _, None) => return Err("missing \"prompt\"".into()),
        (_, None, None) => return Err("missing \"completion\"".into()),
        _ => return Err("\"prompt\" and \"completion\" must both be strings or both message lists".into()),
    };
    let label = match obj.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(format!("\"label\" must be true or false, got {other}")),
    };
    let desirable = match (usage, label) {
        (Use::Kto, None) => return Err("missing \"label\" (true = desirable, false = undesirable)".into()),
        (Use::Sft, Some(false)) => {
            return Err("\"label\": false — SFT imitates every completion it is given; drop undesirable ones".into());
        }
        (_, label) => label.unwrap_or(true),
    };
    Ok(RatedCompletion { text, desirable })
}

/// Reads up to `limit` completions from a JSONL file; a bad line is an error naming the
/// file and line.
pub fn read_completions(path: &Path, limit: Option<usize>, usage: Use) -> anyhow::Result<Vec<RatedCompletion>> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| TrainerError::MissingFile { path: path.to_path_buf(), what: "the completion data file" })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_completion(line, usage).map_err(|reason| TrainerError::BadDataLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        })?);
    }
    if out.is_empty() {
        bail!("{} holds no completions", path.display());
    }
    Ok(out)
}

/// A completion as a token sequence, ready to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedCompletion {
    pub seq: TokenizedSequence,
    pub desirable: bool,
    pub truncated: bool,
}

/// Renders (if conversational) and tokenizes a completion, then truncates it.
pub fn tokenize_completion(
    tokenizer: &ChatTokenizer,
    item: &RatedCompletion,
    truncation: Truncation,
) -> anyhow::Result<TokenizedCompletion> {
    let (prompt, completion) = match &item.text {
        CompletionText::Plain { prompt, completion } => (prompt.clone(), completion.clone()),
        CompletionText::Chat { prompt, completion } => {
            let prompt_text = tokenizer.render_chat(prompt, true)?;
            let completion_text = render_completion(tokenizer, prompt, &prompt_text, completion)?;
            (prompt_text, completion_text)
        }
    };
    let prompt_ids = tokenizer.encode_prompt(&prompt)?;
    let bos = tokenizer.bos.as_ref().map(|b| b.1);
    let (seq, truncated) = truncate(&prompt_ids, tokenizer.encode_completion(&completion)?, bos, truncation);
    Ok(TokenizedCompletion { seq, desirable: item.desirable, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_line_shapes_parse() {
        let plain = parse_completion(r#"{"prompt":"Q","completion":" a","label":false}"#, Use::Kto).unwrap();
        assert_eq!(plain.text, CompletionText::Plain { prompt: "Q".into(), completion: " a".into() });
        assert!(!plain.desirable);
        let chat = parse_completion(
            r#"{"prompt":[{"role":"user","content":"hi"}],"completion":[{"role":"assistant","content":"yo"}],"label":true}"#,
            Use::Kto,
        )
        .unwrap();
        assert!(matches!(chat.text, CompletionText::Chat { .. }) && chat.desirable);
        let messages = parse_completion(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#,
            Use::Sft,
        )
        .unwrap();
        let CompletionText::Chat { prompt, completion } = messages.text else { panic!("not chat") };
        assert_eq!((prompt.len(), completion[0].content.as_str()), (1, "hello"));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |line: &str, usage| parse_completion(line, usage).unwrap_err();
        assert!(err(r#"{"prompt":"Q","completion":"a"}"#, Use::Kto).contains("label"));
        assert!(err(r#"{"prompt":"Q","completion":"a","label":"yes"}"#, Use::Kto).contains("true or false"));
        assert!(err(r#"{"prompt":"Q","completion":"a","label":false}"#, Use::Sft).contains("SFT"));
        assert!(err(r#"{"prompt":"Q"}"#, Use::Sft).contains("completion"));
        assert!(err(r#"{"messages":[{"role":"user","content":"hi"}]}"#, Use::Sft).contains("assistant"));
        let dir = std::env::temp_dir().join(format!("pairwise-completions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.jsonl");
        std::fs::write(&path, "{\"prompt\":\"Q\",\"completion\":\"a\",\"label\":true}\n\n{}\n").unwrap();
        let e = read_completions(&path, None, Use::Kto).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:3"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
