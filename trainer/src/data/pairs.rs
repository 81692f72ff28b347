//! Preference data: reading the JSONL formats (TRL strings, conversational messages,
//! HH-RLHF transcripts), the optional rater signal (votes, agreement, strength), and turning
//! pairs into token sequences under the truncation policy.
//!
//! Truncation policy (applied per sequence, like TRL's `max_prompt_length`/`max_length`):
//! 1. a prompt longer than `max_prompt_length` keeps its *last* tokens (the end of the
//!    conversation matters most), after the BOS token if there is one;
//! 2. if prompt + completion is still longer than `max_length`, the completion is cut at the end
//!    (its EOS is then dropped). The number of truncated pairs is reported.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::TrainerError;
use crate::model::tokenizer::{ChatTokenizer, Message};

/// What a pair's text is: plain strings, or conversations still to be rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum PairText {
    Plain {
        prompt: String,
        chosen: String,
        rejected: String,
    },
    /// `prompt` messages followed by one completion turn list each (TRL's conversational format).
    Chat {
        prompt: Vec<Message>,
        chosen: Vec<Message>,
        rejected: Vec<Message>,
    },
}

/// The rater signal the server exports alongside a pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RaterSignal {
    /// Number of votes on the pair.
    pub votes: Option<u32>,
    /// Share of votes for `chosen` (0.5 .. 1).
    pub agreement: Option<f64>,
    /// Mean strength of the winning votes: 1 slightly, 2 clearly, 3 much better.
    pub strength: Option<f64>,
    /// An explicit tie (both equally good): trained as a soft label 0.5.
    pub tie: bool,
    /// An explicit reward margin (TRL's `margin` column).
    pub margin: Option<f64>,
}

impl RaterSignal {
    /// Probability that the label is wrong, used as per-pair label smoothing:
    /// `1 − agreement`, 0.5 for a tie, capped at 0.5.
    pub fn label_smoothing(&self) -> f64 {
        if self.tie {
            return 0.5;
        }
        self.agreement.map(|a| (1.0 - a).clamp(0.0, 0.5)).unwrap_or(0.0)
    }

    /// Reward-model margin: an explicit `margin`, else `scale · (strength − 1) / 2`
    /// (0 for "slightly better", `scale` for "much better").
    pub fn margin(&self, scale: f64) -> f64 {
        if let Some(m) = self.margin {
            return m;
        }
        self.strength.map(|s| scale * ((s - 1.0) / 2.0).clamp(0.0, 1.0)).unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    pub text: PairText,
    pub signal: RaterSignal,
}

/// Parses one JSONL line in any supported format.
pub fn parse_pair(line: &str) -> Result<PreferencePair, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value.as_object().ok_or("expected a JSON object")?;
    let chosen = obj.get("chosen").ok_or("missing \"chosen\"")?;
    let rejected = obj.get("rejected").ok_or("missing \"rejected\"")?;
    let text = match (obj.get("prompt"), chosen, rejected) {
        (Some(Value::String(p)), Value::String(c), Value::String(r)) => {
            PairText::Plain { prompt: p.clone(), chosen: c.clone(), rejected: r.clone() }
        }
        (None, Value::String(c), Value::String(r)) => split_hh(c, r)?,
        (prompt, Value::Array(_), Value::Array(_)) => {
            let chosen = messages(chosen)?;
            let rejected = messages(rejected)?;
            match prompt {
                Some(p @ Value::Array(_)) => PairText::Chat { prompt: messages(p)?, chosen, rejected },
                None => split_conversations(chosen, rejected)?,
                Some(_) => return Err("\"prompt\" must be a message list here".into()),
            }
        }
        _ => return Err("\"chosen\"/\"rejected\" must both be strings or both message lists".into()),
    };
    let number = |key: &str| obj.get(key).and_then(Value::as_f64);
    let signal = RaterSignal {
        votes: obj.get("votes").and_then(Value::as_u64).map(|v| v as u32),
        agreement: number("agreement"),
        strength: number("strength"),
        tie: obj.get("tie").and_then(Value::as_bool).unwrap_or(false),
        margin: number("margin"),
    };
    Ok(PreferencePair { text, signal })
}

pub(crate) fn messages(value: &Value) -> Result<Vec<Message>, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("bad message list: {e}"))
}

/// Full conversations sharing a prefix: the prefix is the prompt, the rest the completions.
fn split_conversations(chosen: Vec<Message>, rejected: Vec<Message>) -> Result<PairText, String> {
    let shared = chosen.iter().zip(&rejected).take_while(|(a, b)| a == b).count();
    if shared == 0 {
        return Err("chosen and rejected conversations share no prompt messages".into());
    }
    if shared == chosen.len() || shared == rejected.len() {
        return Err("chosen and rejected must differ after the shared prompt".into());
    }
    Ok(PairText::Chat {
        prompt: chosen[..shared].to_vec(),
        chosen: chosen[shared..].to_vec(),
        rejected: rejected[shared..].to_vec(),
    })
}

/// HH-RLHF transcripts: the prompt runs up to and including the last `\n\nAssistant:`.
fn split_hh(chosen: &str, rejected: &str) -> Result<PairText, String> {
    const MARK: &str = "\n\nAssistant:";
    let cut =
        chosen.rfind(MARK).ok_or("no prompt: expected \"prompt\" or an HH-RLHF transcript with \\n\\nAssistant:")?
            + MARK.len();
    let prompt = &chosen[..cut];
    let rejected_completion =
        rejected.strip_prefix(prompt).ok_or("HH-RLHF chosen and rejected do not share the prompt")?;
    Ok(PairText::Plain {
        prompt: prompt.to_string(),
        chosen: chosen[cut..].to_string(),
        rejected: rejected_completion.to_string(),
    })
}

/// Parses up to `limit` pairs of JSONL text; blank lines are skipped, a bad line is an error
/// naming `source` and the line number.
pub fn parse_jsonl(text: &str, source: &Path, limit: Option<usize>) -> Result<Vec<PreferencePair>, TrainerError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|n| pairs.len() >= n) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        pairs.push(parse_pair(line).map_err(|reason| TrainerError::BadDataLine {
            path: source.to_path_buf(),
            line: i + 1,
            reason,
        })?);
    }
    Ok(pairs)
}

/// Reads up to `limit` pairs from a JSONL file.
pub fn read_jsonl(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<PreferencePair>> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| TrainerError::MissingFile { path: path.to_path_buf(), what: "the preference data file" })?;
    let pairs = parse_jsonl(&text, path, limit)?;
    if pairs.is_empty() {
        bail!("{} holds no preference pairs", path.display());
    }
    Ok(pairs)
}

/// One tokenized sequence: `ids[..prompt_len]` is the prompt, the rest the completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedSequence {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

impl TokenizedSequence {
    pub fn completion_len(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// Token budget per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    pub max_length: usize,
    pub max_prompt_length: usize,
}

impl Default for Truncation {
    fn default() -> Self {
        Truncation { max_length: 1024, max_prompt_length: 512 }
    }
}

impl Truncation {
    /// The limits as given on the command line: the prompt limit is lowered below
    /// `max_length` if needed, so a completion keeps at least one token.
    pub fn new(max_length: usize, max_prompt_length: usize) -> Self {
        Truncation { max_length, max_prompt_length: max_prompt_length.min(max_length.saturating_sub(1)) }
    }
}

/// A pair as token sequences, ready to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPair {
    pub chosen: TokenizedSequence,
    pub rejected: TokenizedSequence,
    pub signal: RaterSignal,
    pub truncated: bool,
}

/// Renders (if conversational) and tokenizes a pair, then applies the truncation policy.
pub fn tokenize_pair(
    tokenizer: &ChatTokenizer,
    pair: &PreferencePair,
    truncation: Truncation,
) -> anyhow::Result<TokenizedPair> {
    let (prompt, chosen, rejected) = match &pair.text {
        PairText::Plain { prompt, chosen, rejected } => (prompt.clone(), chosen.clone(), rejected.clone()),
        PairText::Chat { prompt, chosen, rejected } => {
            let prompt_text = tokenizer.render_chat(prompt, true)?;
            let c = render_completion(tokenizer, prompt, &prompt_text, chosen)?;
            let r = render_completion(tokenizer, prompt, &prompt_text, rejected)?;
            (prompt_text, c, r)
        }
    };
    let prompt_ids = tokenizer.encode_prompt(&prompt)?;
    let bos = tokenizer.bos.as_ref().map(|b| b.1);
    let (chosen, tc) = truncate(&prompt_ids, tokenizer.encode_completion(&chosen)?, bos, truncation);
    let (rejected, tr) = truncate(&prompt_ids, tokenizer.encode_completion(&rejected)?, bos, truncation);
    Ok(TokenizedPair { chosen, rejected, signal: pair.signal.clone(), truncated: tc || tr })
}

/// The text the chat template adds for `turns` after `prompt` (rendered as `prompt_text`
/// with the generation prompt): what the model must learn to continue with.
pub(crate) fn render_completion(
    tokenizer: &ChatTokenizer,
    prompt: &[Message],
    prompt_text: &str,
    turns: &[Message],
) -> anyhow::Result<String> {
    let full: Vec<Message> = prompt.iter().chain(turns).cloned().collect();
    let text = tokenizer.render_chat(&full, false)?;
    text.strip_prefix(prompt_text)
        .map(str::to_string)
        .context("the chat template renders the prompt differently inside the full conversation")
}

pub(crate) fn truncate(
    prompt: &[u32],
    mut completion: Vec<u32>,
    bos: Option<u32>,
    limits: Truncation,
) -> (TokenizedSequence, bool) {
    let mut truncated = false;
    let mut prompt = prompt.to_vec();
    if prompt.len() > limits.max_prompt_length {
        truncated = true;
        let keep_bos = bos.is_some() && prompt.first() == bos.as_ref();
        let tail_len = limits.max_prompt_length - usize::from(keep_bos);
        let tail = prompt[prompt.len() - tail_len..].to_vec();
        prompt = if keep_bos { std::iter::once(prompt[0]).chain(tail).collect() } else { tail };
    }
    let room = limits.max_length.saturating_sub(prompt.len()).max(1);
    if completion.len() > room {
        truncated = true;
        completion.truncate(room);
    }
    let prompt_len = prompt.len();
    prompt.extend(completion);
    (TokenizedSequence { ids: prompt, prompt_len }, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_rows_keep_the_rater_signal() {
        let p = parse_pair(
            r#"{"prompt":"Q","chosen":" a","rejected":" b","pair_id":7,"votes":4,"agreement":0.75,"strength":3}"#,
        )
        .unwrap();
        assert_eq!(p.signal.votes, Some(4));
        assert!((p.signal.label_smoothing() - 0.25).abs() < 1e-12);
        assert!((p.signal.margin(2.0) - 2.0).abs() < 1e-12);
        let tie = parse_pair(r#"{"prompt":"Q","chosen":"a","rejected":"b","tie":true}"#).unwrap();
        assert_eq!(tie.signal.label_smoothing(), 0.5);
        let plain = parse_pair(r#"{"prompt":"Q","chosen":"a","rejected":"b"}"#).unwrap();
        assert_eq!(plain.signal.label_smoothing(), 0.0);
        assert_eq!(plain.signal.margin(1.0), 0.0);
    }

    #[test]
    fn conversations_split_at_the_shared_prefix() {
        let p = parse_pair(r#"{"chosen":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello!"}],"rejected":[{"role":"user","content":"hi"},{"role":"assistant","content":"go away"}]}"#).unwrap();
        let PairText::Chat { prompt, chosen, rejected } = p.text else { panic!("not chat") };
        assert_eq!(prompt.len(), 1);
        assert_eq!(chosen[0].content, "hello!");
        assert_eq!(rejected[0].content, "go away");
    }

    #[test]
    fn hh_transcripts_split_at_the_last_assistant_turn() {
        let p = parse_pair(r#"{"chosen":"\n\nHuman: hi\n\nAssistant: hey\n\nHuman: help?\n\nAssistant: sure","rejected":"\n\nHuman: hi\n\nAssistant: hey\n\nHuman: help?\n\nAssistant: no"}"#).unwrap();
        assert_eq!(
            p.text,
            PairText::Plain {
                prompt: "\n\nHuman: hi\n\nAssistant: hey\n\nHuman: help?\n\nAssistant:".into(),
                chosen: " sure".into(),
                rejected: " no".into()
            }
        );
    }

    #[test]
    fn bad_lines_name_the_problem() {
        assert!(parse_pair(r#"{"prompt":"Q","chosen":"a"}"#).unwrap_err().contains("rejected"));
        assert!(parse_pair("not json").unwrap_err().contains("invalid JSON"));
        let err =
            parse_jsonl("{\"prompt\":\"Q\",\"chosen\":\"a\",\"rejected\":\"b\"}\n\n{}", Path::new("d.jsonl"), None)
                .unwrap_err();
        assert!(err.to_string().contains("d.jsonl:3"), "{err}");
    }

    #[test]
    fn truncation_keeps_prompt_end_and_bos_then_cuts_completion() {
        let limits = Truncation { max_length: 6, max_prompt_length: 3 };
        let (seq, truncated) = truncate(&[1, 10, 11, 12, 13], vec![20, 21, 22, 2], Some(1), limits);
        assert!(truncated);
        assert_eq!(seq.ids, vec![1, 12, 13, 20, 21, 22]);
        assert_eq!(seq.prompt_len, 3);
        let (short, t) = truncate(&[1, 10], vec![20, 2], Some(1), limits);
        assert!(!t);
        assert_eq!(short.ids, vec![1, 10, 20, 2]);
    }
}
