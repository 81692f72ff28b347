//! Listwise data: a prompt with K ≥ 2 responses and the raters' ranks of them (the server's
//! `ranking` export), read from JSONL and tokenized under the same truncation policy as pairs.
//!
//! Accepted lines:
//! - `{"prompt": "…", "responses": ["…", …], "ranks": [1, 3, 2, …]}` (plain text);
//! - `{"prompt": [messages], "responses": [[messages], …], "ranks": […]}` (conversational);
//! - `{"messages": [messages], "responses": ["…", …], "ranks": […]}`: the conversation so far
//!   (ending with a user turn), each response one assistant turn (the server's export when the
//!   prompt has earlier turns; `prompt` is then ignored).
//!
//! `ranks[i]` is the rank of `responses[i]`: lower is better, equal ranks are ties. They may be
//! fractional (a mean rank over raters); only their order matters. Other keys (`raw`,
//! `all_bad`, `votes`, …) are ignored.

use std::path::Path;

use anyhow::bail;
use serde_json::Value;

use crate::data::pairs::{TokenizedSequence, Truncation, messages, render_completion, truncate};
use crate::error::TrainerError;
use crate::model::tokenizer::{ChatTokenizer, Message};

/// The most responses one ranking may hold (a rating page shows at most six).
pub const MAX_RESPONSES: usize = 16;

/// A ranking's text: plain strings, or a conversation still to be rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum RankingText {
    Plain { prompt: String, responses: Vec<String> },
    Chat { prompt: Vec<Message>, responses: Vec<Vec<Message>> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub text: RankingText,
    /// Rank of each response, lower is better.
    pub ranks: Vec<f64>,
}

/// Parses one JSONL line.
pub fn parse_ranking(line: &str) -> Result<Ranking, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value.as_object().ok_or("expected a JSON object")?;
    let responses = obj.get("responses").and_then(Value::as_array).ok_or("missing \"responses\" (a list)")?;
    let text = match (obj.get("messages"), obj.get("prompt")) {
        (Some(history), _) => {
            let prompt = messages(history)?;
            if prompt.last().is_none_or(|m| m.role == "assistant") {
                return Err("\"messages\" must end with a user turn (the responses answer it)".into());
            }
            let responses = responses
                .iter()
                .map(|r| match r {
                    Value::String(s) => Ok(vec![Message { role: "assistant".into(), content: s.clone() }]),
                    _ => Err("with \"messages\", every response must be a string".to_string()),
                })
                .collect::<Result<_, _>>()?;
            RankingText::Chat { prompt, responses }
        }
        (None, Some(Value::String(prompt))) => {
            let responses = responses
                .iter()
                .map(|r| {
                    r.as_str().map(str::to_string).ok_or("with a string \"prompt\", every response must be a string")
                })
                .collect::<Result<_, _>>()?;
            RankingText::Plain { prompt: prompt.clone(), responses }
        }
        (None, Some(p @ Value::Array(_))) => {
            let responses = responses
                .iter()
                .map(|r| match r {
                    Value::Array(_) => messages(r),
                    _ => Err("with a message-list \"prompt\", every response must be a message list".to_string()),
                })
                .collect::<Result<_, _>>()?;
            RankingText::Chat { prompt: messages(p)?, responses }
        }
        (None, None) => return Err("missing \"prompt\" (or \"messages\")".into()),
        (None, Some(_)) => return Err("\"prompt\" must be a string or a message list".into()),
    };
    let ranks = obj.get("ranks").and_then(Value::as_array).ok_or("missing \"ranks\" (a list of numbers)")?;
    let ranks = ranks
        .iter()
        .enumerate()
        .map(|(i, r)| r.as_f64().filter(|r| r.is_finite()).ok_or(format!("\"ranks\"[{i}] is not a number: {r}")))
        .collect::<Result<Vec<f64>, String>>()?;
    if ranks.len() != responses.len() {
        return Err(format!("{} responses but {} ranks", responses.len(), ranks.len()));
    }
    if !(2..=MAX_RESPONSES).contains(&ranks.len()) {
        return Err(format!("a ranking needs 2 to {MAX_RESPONSES} responses, got {}", ranks.len()));
    }
    Ok(Ranking { text, ranks })
}

/// Reads up to `limit` rankings from a JSONL file; a bad line is an error naming the file and
/// line.
pub fn read_rankings(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Ranking>> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| TrainerError::MissingFile { path: path.to_path_buf(), what: "the ranking data file" })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_ranking(line).map_err(|reason| TrainerError::BadDataLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        })?);
    }
    if out.is_empty() {
        bail!("{} holds no rankings", path.display());
    }
    Ok(out)
}

/// A ranking as token sequences (prompt + each response), ready to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedRanking {
    pub seqs: Vec<TokenizedSequence>,
    pub ranks: Vec<f64>,
    pub truncated: bool,
}

/// Renders (if conversational) and tokenizes every response of a ranking, then truncates.
pub fn tokenize_ranking(
    tokenizer: &ChatTokenizer,
    ranking: &Ranking,
    truncation: Truncation,
) -> anyhow::Result<TokenizedRanking> {
    let (prompt, responses) = match &ranking.text {
        RankingText::Plain { prompt, responses } => (prompt.clone(), responses.clone()),
        RankingText::Chat { prompt, responses } => {
            let prompt_text = tokenizer.render_chat(prompt, true)?;
            let rendered = responses
                .iter()
                .map(|turns| render_completion(tokenizer, prompt, &prompt_text, turns))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (prompt_text, rendered)
        }
    };
    let prompt_ids = tokenizer.encode_prompt(&prompt)?;
    let bos = tokenizer.bos.as_ref().map(|b| b.1);
    let mut truncated = false;
    let mut seqs = Vec::with_capacity(responses.len());
    for response in &responses {
        let (seq, cut) = truncate(&prompt_ids, tokenizer.encode_completion(response)?, bos, truncation);
        truncated |= cut;
        seqs.push(seq);
    }
    Ok(TokenizedRanking { seqs, ranks: ranking.ranks.clone(), truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_line_shapes_parse() {
        let plain = parse_ranking(r#"{"prompt":"Q","responses":[" a"," b"," c"],"ranks":[2,1,2],"raw":[]}"#).unwrap();
        assert_eq!(
            plain.text,
            RankingText::Plain { prompt: "Q".into(), responses: vec![" a".into(), " b".into(), " c".into()] }
        );
        assert_eq!(plain.ranks, vec![2.0, 1.0, 2.0]);
        let chat = parse_ranking(
            r#"{"prompt":[{"role":"user","content":"hi"}],"responses":[[{"role":"assistant","content":"yo"}],[{"role":"assistant","content":"hey"}]],"ranks":[1.5,1]}"#,
        )
        .unwrap();
        let RankingText::Chat { prompt, responses } = chat.text else { panic!("not chat") };
        assert_eq!((prompt.len(), responses.len()), (1, 2));
        let history = parse_ranking(
            r#"{"prompt":"hi","messages":[{"role":"user","content":"hi"}],"responses":["yo","hey"],"ranks":[1,2]}"#,
        )
        .unwrap();
        let RankingText::Chat { responses, .. } = history.text else { panic!("not chat") };
        assert_eq!(responses[1], vec![Message { role: "assistant".into(), content: "hey".into() }]);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |line: &str| parse_ranking(line).unwrap_err();
        assert!(err(r#"{"prompt":"Q","ranks":[1,2]}"#).contains("responses"));
        assert!(err(r#"{"prompt":"Q","responses":["a","b"]}"#).contains("ranks"));
        assert!(err(r#"{"prompt":"Q","responses":["a","b"],"ranks":[1]}"#).contains("2 responses but 1 ranks"));
        assert!(err(r#"{"prompt":"Q","responses":["a"],"ranks":[1]}"#).contains("2 to"));
        assert!(err(r#"{"prompt":"Q","responses":["a","b"],"ranks":[1,"x"]}"#).contains("ranks\"[1]"));
        assert!(err(r#"{"prompt":"Q","responses":["a",["b"]],"ranks":[1,2]}"#).contains("string"));
        assert!(
            err(r#"{"messages":[{"role":"assistant","content":"x"}],"responses":["a","b"],"ranks":[1,2]}"#)
                .contains("user turn")
        );
        let dir = std::env::temp_dir().join(format!("pairwise-rankings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        std::fs::write(&path, "{\"prompt\":\"Q\",\"responses\":[\"a\",\"b\"],\"ranks\":[1,2]}\n{}\n").unwrap();
        let e = read_rankings(&path, None).unwrap_err().to_string();
        assert!(e.contains("r.jsonl:2"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
