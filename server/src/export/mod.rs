//! Streaming export of a campaign's votes as JSONL (`trl`, `messages`, `raw`, and the
//! single-completion formats `kto` and `sft`; a ranking campaign's in `rankings`, a thumbs or
//! scale campaign's in `ratings`).
//!
//! Rows are read from a database cursor and written to the response in 64 KiB chunks
//! through a small bounded channel, so memory stays constant whatever the campaign size.
//! Every export is cut at the campaign's vote sequence number read when it starts (the
//! `X-Pairwise-Cursor` header); passing it back as `since` yields only what is new.
//! See README "Export formats" for the exact fields.

use std::collections::HashMap;

use bytes::Bytes;
use futures::TryStreamExt;
use pairwise_api::export::{ExportParams, Format, RaterIds};
use pairwise_api::votes::{Choice, Message};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::args;
use crate::error::{ApiError, ApiResult};
use crate::metrics::metrics;
use crate::store::{Db, SqlRow};

mod rankings;
mod ratings;

/// The first problem with export parameters, naming the parameter.
fn validate(params: &ExportParams) -> ApiResult<()> {
    if params.min_votes < 1 {
        return Err(ApiError::bad_request("min_votes: must be at least 1"));
    }
    if !(0.0..=1.0).contains(&params.min_agreement) {
        return Err(ApiError::bad_request("min_agreement: must be between 0 and 1"));
    }
    if params.since < 0 {
        return Err(ApiError::bad_request("since: must not be negative"));
    }
    Ok(())
}

/// The raw format's rows, in commit order, by position (see `raw_line`).
macro_rules! raw_select {
    ($gold_filter:expr) => {
        concat!(
            "SELECT c.id, c.seq, c.pair_id, p.prompt_id, p.response_a_id, p.response_b_id, ra.model, rb.model, \
             c.rater_id, CASE WHEN $4 = '' THEN c.choice ELSE av.choice END, CASE WHEN $4 = '' THEN c.strength END, \
             c.rationale, c.time_ms, c.swapped, p.gold_choice, c.created_at, \
             ra.model_version, rb.model_version FROM comparisons c JOIN pairs p ON p.id = c.pair_id \
             JOIN responses ra ON ra.id = p.response_a_id JOIN responses rb ON rb.id = p.response_b_id \
             LEFT JOIN aspect_votes av ON av.comparison_id = c.id AND av.aspect = $4 \
             WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 AND ($4 = '' OR av.choice IS NOT NULL)",
            $gold_filter,
            " ORDER BY c.seq"
        )
    };
}

/// Every vote of the aggregated formats, grouped by pair. The texts come with a pair's first
/// vote only: the rest of its rows would carry the same long strings for nothing.
macro_rules! preference_select {
    ($($filter:expr),*) => {
        concat!(
            "SELECT c.pair_id, CASE WHEN $3 = '' THEN c.choice ELSE av.choice END AS choice, \
             CASE WHEN $3 = '' THEN c.strength END AS strength, c.seq, rk.text AS correction, \
             CASE WHEN ROW_NUMBER() OVER pair_votes = 1 THEN pr.text END AS prompt, \
             CASE WHEN ROW_NUMBER() OVER pair_votes = 1 THEN pr.messages END AS messages, \
             CASE WHEN ROW_NUMBER() OVER pair_votes = 1 THEN ra.text END AS text_a, \
             CASE WHEN ROW_NUMBER() OVER pair_votes = 1 THEN rb.text END AS text_b FROM comparisons c JOIN pairs p ON p.id = c.pair_id JOIN prompts pr ON pr.id = p.prompt_id \
             JOIN responses ra ON ra.id = p.response_a_id JOIN responses rb ON rb.id = p.response_b_id \
             LEFT JOIN aspect_votes av ON av.comparison_id = c.id AND av.aspect = $3 \
             LEFT JOIN corrections k ON k.comparison_id = c.id LEFT JOIN responses rk ON rk.id = k.response_id \
             WHERE c.campaign_id = $1 AND c.seq <= $2 AND ($3 = '' OR av.choice IS NOT NULL)",
            $($filter,)*
            " WINDOW pair_votes AS (PARTITION BY c.pair_id ORDER BY c.seq) ORDER BY c.pair_id, c.seq"
        )
    };
}

/// Pairs with a vote after `since` ($4).
macro_rules! since_filter_sql {
    () => {
        " AND c.pair_id IN (SELECT n.pair_id FROM comparisons n WHERE n.campaign_id = $1 AND n.seq > $4 AND n.seq <= $2)"
    };
}

/// Majority decision over one pair's votes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub votes: i64,
    pub counts: [i64; 4],
    /// `A` or `B` when that choice has strictly the most votes; None for a tie in the
    /// vote count or when tie / both_bad wins.
    pub winner: Option<Choice>,
    /// Share of votes for the most chosen option.
    pub agreement: f64,
    /// Mean strength among the votes for the winner (where given).
    pub strength: Option<f64>,
}

fn choice_index(choice: Choice) -> usize {
    match choice {
        Choice::A => 0,
        Choice::B => 1,
        Choice::Tie => 2,
        Choice::BothBad => 3,
    }
}

pub fn aggregate(votes: &[(Choice, Option<i64>)]) -> Aggregate {
    let mut counts = [0i64; 4];
    for (choice, _) in votes {
        counts[choice_index(*choice)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0);
    let leaders: Vec<usize> = (0..4).filter(|&i| counts[i] == top).collect();
    let winner = match leaders.as_slice() {
        [0] if top > 0 => Some(Choice::A),
        [1] if top > 0 => Some(Choice::B),
        _ => None,
    };
    let strengths: Vec<i64> = votes.iter().filter(|(c, _)| Some(*c) == winner).filter_map(|(_, s)| *s).collect();
    Aggregate {
        votes: votes.len() as i64,
        counts,
        winner,
        agreement: if votes.is_empty() { 0.0 } else { top as f64 / votes.len() as f64 },
        strength: (!strengths.is_empty()).then(|| strengths.iter().sum::<i64>() as f64 / strengths.len() as f64),
    }
}

/// Stable pseudonym of a rater: not reversible without the server secret.
pub fn pseudonym(secret: &str, rater_id: i64) -> String {
    let digest = Sha256::digest(format!("{secret}:rater:{rater_id}").as_bytes());
    format!("r_{}", &hex::encode(digest)[..12])
}

/// The prompt as one string for the `trl` format: the prompt itself, preceded by any
/// earlier turns as `role: content` paragraphs.
fn prompt_string(prompt: &str, messages: &[Message]) -> String {
    if messages.is_empty() {
        return prompt.to_string();
    }
    let mut out = String::new();
    for m in messages {
        out.push_str(&m.role);
        out.push_str(": ");
        out.push_str(&m.content);
        out.push_str("\n\n");
    }
    out.push_str("user: ");
    out.push_str(prompt);
    out
}

fn conversation(prompt: &str, messages: &[Message], answer: &str) -> Value {
    let mut turns: Vec<Value> = messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
    turns.push(json!({"role": "user", "content": prompt}));
    turns.push(json!({"role": "assistant", "content": answer}));
    Value::Array(turns)
}

struct PairVotes {
    pair_id: i64,
    prompt: String,
    messages: String,
    text_a: String,
    text_b: String,
    max_seq: i64,
    votes: Vec<(Choice, Option<i64>)>,
    /// Raters' corrections of the pair's responses, distinct, in vote order.
    corrections: Vec<String>,
}

/// The lines a pair's votes give in an aggregated format (none when it has no verdict or
/// misses the vote thresholds): one for `trl`/`messages`/`sft`; for `kto` two, either winner
/// and loser (`decisive`) or both answers undesirable when `both_bad` has the most votes.
fn aggregated_lines(pair: &PairVotes, params: &ExportParams) -> anyhow::Result<Vec<Value>> {
    let agg = aggregate(&pair.votes);
    // A rater's correction is better than either response: `sft` takes the corrections of a
    // pair that has any, whatever the votes say.
    if params.format == Format::Sft && !pair.corrections.is_empty() {
        let messages: Vec<Message> = serde_json::from_str(&pair.messages)?;
        let prompt = prompt_string(&pair.prompt, &messages);
        let mut lines: Vec<Value> = pair
            .corrections
            .iter()
            .map(|text| match messages.is_empty() {
                true => json!({"prompt": prompt, "completion": text}),
                false => json!({"messages": conversation(&pair.prompt, &messages, text)}),
            })
            .collect();
        if params.meta {
            for line in &mut lines {
                line["pair_id"] = json!(pair.pair_id);
                line["source"] = json!("correction");
                line["seq"] = json!(pair.max_seq);
            }
        }
        return Ok(lines);
    }
    let both_bad = agg.winner.is_none() && {
        let top = agg.counts.iter().copied().max().unwrap_or(0);
        top > 0 && agg.counts.iter().filter(|&&c| c == top).count() == 1 && agg.counts[3] == top
    };
    if agg.votes < params.min_votes || agg.agreement + 1e-12 < params.min_agreement {
        return Ok(Vec::new());
    }
    let messages: Vec<Message> = serde_json::from_str(&pair.messages)?;
    let prompt = prompt_string(&pair.prompt, &messages);
    let mut lines = match (agg.winner, params.format) {
        (None, Format::Kto) if both_bad => vec![
            json!({"prompt": prompt, "completion": pair.text_a, "label": false}),
            json!({"prompt": prompt, "completion": pair.text_b, "label": false}),
        ],
        (None, _) => Vec::new(),
        (Some(winner), format) => {
            let (chosen, rejected) =
                if winner == Choice::A { (&pair.text_a, &pair.text_b) } else { (&pair.text_b, &pair.text_a) };
            match format {
                Format::Trl => vec![json!({"prompt": prompt, "chosen": chosen, "rejected": rejected})],
                Format::Messages => vec![json!({
                    "chosen": conversation(&pair.prompt, &messages, chosen),
                    "rejected": conversation(&pair.prompt, &messages, rejected),
                })],
                Format::Kto if params.decisive => vec![
                    json!({"prompt": prompt, "completion": chosen, "label": true}),
                    json!({"prompt": prompt, "completion": rejected, "label": false}),
                ],
                Format::Kto => Vec::new(),
                Format::Sft if messages.is_empty() => vec![json!({"prompt": prompt, "completion": chosen})],
                Format::Sft => vec![json!({"messages": conversation(&pair.prompt, &messages, chosen)})],
                Format::Raw | Format::Ranking => unreachable!("raw and ranking rows are not aggregated here"),
            }
        }
    };
    if params.meta {
        for line in &mut lines {
            line["pair_id"] = json!(pair.pair_id);
            line["votes"] = json!(agg.votes);
            line["agreement"] = json!(agg.agreement);
            line["strength"] = json!(agg.strength);
            line["seq"] = json!(pair.max_seq);
            if params.format == Format::Sft {
                line["source"] = json!("consensus");
            }
        }
    }
    Ok(lines)
}

/// One line of the `raw` format.
#[derive(Serialize)]
struct RawVote {
    vote_id: i64,
    seq: i64,
    pair_id: i64,
    prompt_id: i64,
    response_a_id: i64,
    response_b_id: i64,
    model_a: String,
    model_a_version: Option<String>,
    model_b: String,
    model_b_version: Option<String>,
    rater: Value,
    choice: String,
    strength: Option<i64>,
    rationale: Option<String>,
    time_ms: Option<i64>,
    swapped: bool,
    left: &'static str,
    gold: Option<String>,
    created_at: i64,
    /// The aspect whose choice `choice` is (`aspect=` exports).
    #[serde(skip_serializing_if = "Option::is_none")]
    aspect: Option<String>,
}

/// Columns are read by position (the order of the SELECT in `stream_raw`): a million-row
/// export spends its time here, and name lookups per cell add up.
fn raw_line(
    row: &SqlRow,
    params: &ExportParams,
    pseudonyms: &mut HashMap<i64, Value>,
    secret: &str,
) -> anyhow::Result<RawVote> {
    let rater = row.int_at(8)?;
    let swapped = row.int_at(13)? != 0;
    let rater = match params.raters {
        RaterIds::Pseudonym => pseudonyms.entry(rater).or_insert_with(|| json!(pseudonym(secret, rater))).clone(),
        RaterIds::Id => json!(rater),
    };
    Ok(RawVote {
        vote_id: row.int_at(0)?,
        seq: row.int_at(1)?,
        pair_id: row.int_at(2)?,
        prompt_id: row.int_at(3)?,
        response_a_id: row.int_at(4)?,
        response_b_id: row.int_at(5)?,
        model_a: row.text_at(6)?,
        model_a_version: row.opt_text_at(16)?,
        model_b: row.text_at(7)?,
        model_b_version: row.opt_text_at(17)?,
        rater,
        choice: row.text_at(9)?,
        strength: row.opt_int_at(10)?,
        rationale: row.opt_text_at(11)?,
        time_ms: row.opt_int_at(12)?,
        swapped,
        left: if swapped { "b" } else { "a" },
        gold: row.opt_text_at(14)?,
        created_at: row.int_at(15)?,
        aspect: params.aspect.clone(),
    })
}

const CHUNK_BYTES: usize = 64 * 1024;

/// Collects serialized lines into chunks and sends them; false once the reader is gone.
struct ChunkWriter {
    buffer: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChunkWriter {
    async fn line(&mut self, value: &impl Serialize) -> anyhow::Result<bool> {
        serde_json::to_writer(&mut self.buffer, value)?;
        self.buffer.push(b'\n');
        if self.buffer.len() >= CHUNK_BYTES {
            return Ok(self.flush().await);
        }
        Ok(true)
    }

    async fn flush(&mut self) -> bool {
        if self.buffer.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES)));
        self.tx.send(Ok(chunk)).await.is_ok()
    }

    async fn fail(self, error: anyhow::Error) {
        tracing::error!(error = %format!("{error:#}"), "export failed midway");
        let _ = self.tx.send(Err(std::io::Error::other(error.to_string()))).await;
    }
}

/// Starts an export; returns its cursor and a channel of JSONL chunks.
pub async fn start_export(
    db: &Db,
    campaign_id: i64,
    params: ExportParams,
    secret: String,
) -> ApiResult<(i64, mpsc::Receiver<Result<Bytes, std::io::Error>>)> {
    validate(&params)?;
    metrics().export_started();
    crate::votes::sequence_pending(db, campaign_id).await?;
    let campaign = db
        .fetch_optional("SELECT vote_seq, aspects, feedback FROM campaigns WHERE id = $1", args![campaign_id])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {campaign_id}")))?;
    let feedback = campaign.text("feedback")?;
    let ranking = feedback == "ranking";
    let kind = pairwise_api::campaigns::CampaignKind::parse(&feedback);
    let rating_range = kind.and_then(|kind| kind.rating_range());
    if let Some((range, middle)) = &rating_range {
        if !matches!(params.format, Format::Kto | Format::Sft | Format::Raw) {
            return Err(ApiError::bad_request(format!(
                "format: `{}` needs choices between responses; a {feedback} campaign rates one response at a time \
                 and exports kto, sft or raw",
                params.format.as_str()
            )));
        }
        if params.aspect.is_some() {
            return Err(ApiError::bad_request(format!("aspect: a {feedback} campaign has no aspects")));
        }
        if let Some(threshold) = params.threshold
            && !(*range.start() as f64..=*range.end() as f64).contains(&threshold)
        {
            return Err(ApiError::bad_request(format!(
                "threshold: {threshold} is outside the campaign's ratings ({}-{}); the default is {middle}",
                range.start(),
                range.end()
            )));
        }
    } else if params.threshold.is_some() {
        return Err(ApiError::bad_request("threshold: only thumbs and scale campaigns have ratings to split"));
    }
    if params.format == Format::Ranking && !ranking {
        return Err(ApiError::bad_request(format!(
            "format: `ranking` needs a ranking campaign; campaign {campaign_id} asks for choices between two responses"
        )));
    }
    if ranking && params.aspect.is_some() {
        return Err(ApiError::bad_request("aspect: a ranking campaign has no aspects"));
    }
    if let Some(aspect) = &params.aspect {
        let aspects = crate::feedback::parse_aspects(&campaign.text("aspects")?)?;
        if !aspects.iter().any(|a| &a.name == aspect) {
            let known: Vec<&str> = aspects.iter().map(|a| a.name.as_str()).collect();
            return Err(ApiError::bad_request(match known.is_empty() {
                true => format!("aspect: `{aspect}` is not an aspect of this campaign (it has none)"),
                false => format!("aspect: `{aspect}` is not an aspect of this campaign (it has {})", known.join(", ")),
            }));
        }
    }
    let cursor = campaign.int("vote_seq")?;
    let (tx, rx) = mpsc::channel(4);
    let db = db.clone();
    tokio::spawn(async move {
        let mut writer = ChunkWriter { buffer: Vec::with_capacity(CHUNK_BYTES), tx };
        let result = match (ranking, params.format) {
            _ if rating_range.is_some() => {
                let threshold = params.threshold.or(rating_range.map(|(_, middle)| middle)).unwrap_or_default();
                match params.format {
                    Format::Raw => ratings::stream_raw(&db, campaign_id, cursor, &params, &secret, &mut writer).await,
                    _ => ratings::stream_tasks(&db, campaign_id, cursor, &params, threshold, &mut writer).await,
                }
            }
            (true, Format::Raw) => rankings::stream_raw(&db, campaign_id, cursor, &params, &secret, &mut writer).await,
            (true, _) => rankings::stream_tasks(&db, campaign_id, cursor, &params, &mut writer).await,
            (false, Format::Raw) => stream_raw(&db, campaign_id, cursor, &params, &secret, &mut writer).await,
            (false, _) => stream_preferences(&db, campaign_id, cursor, &params, &mut writer).await,
        };
        match result {
            Ok(()) => {
                writer.flush().await;
            }
            Err(error) => writer.fail(error).await,
        }
    });
    Ok((cursor, rx))
}

async fn stream_raw(
    db: &Db,
    campaign_id: i64,
    cursor: i64,
    params: &ExportParams,
    secret: &str,
    writer: &mut ChunkWriter,
) -> anyhow::Result<()> {
    let sql = if params.include_gold { raw_select!("") } else { raw_select!(" AND p.is_gold = 0") };
    let aspect = params.aspect.clone().unwrap_or_default();
    let mut rows = db.stream(sql, args![campaign_id, params.since, cursor, aspect]);
    let mut pseudonyms = HashMap::new();
    while let Some(row) = rows.try_next().await? {
        if !writer.line(&raw_line(&row, params, &mut pseudonyms, secret)?).await? {
            return Ok(());
        }
    }
    Ok(())
}

async fn stream_preferences(
    db: &Db,
    campaign_id: i64,
    cursor: i64,
    params: &ExportParams,
    writer: &mut ChunkWriter,
) -> anyhow::Result<()> {
    // A pair is re-exported when it received any vote after `since`, aggregated over all
    // its votes up to the cursor, so its label reflects everything known now.
    let aspect = params.aspect.clone().unwrap_or_default();
    let (sql, args) = match (params.include_gold, params.since > 0) {
        (true, false) => (preference_select!(""), args![campaign_id, cursor, aspect]),
        (false, false) => (preference_select!(" AND p.is_gold = 0"), args![campaign_id, cursor, aspect]),
        (true, true) => (preference_select!(since_filter_sql!()), args![campaign_id, cursor, aspect, params.since]),
        (false, true) => (
            preference_select!(" AND p.is_gold = 0", since_filter_sql!()),
            args![campaign_id, cursor, aspect, params.since],
        ),
    };
    let mut rows = db.stream(sql, args);
    let mut current: Option<PairVotes> = None;
    while let Some(row) = rows.try_next().await? {
        let pair_id = row.int("pair_id")?;
        let choice = row.text("choice")?;
        let choice = Choice::parse(&choice).ok_or_else(|| anyhow::anyhow!("unknown choice {choice}"))?;
        let seq = row.int("seq")?;
        let strength = row.opt_int("strength")?;
        let correction = row.opt_text("correction")?;
        if current.as_ref().is_some_and(|p| p.pair_id != pair_id) {
            let done = current.take().expect("checked above");
            for line in aggregated_lines(&done, params)? {
                if !writer.line(&line).await? {
                    return Ok(());
                }
            }
        }
        match &mut current {
            Some(pair) => {
                pair.votes.push((choice, strength));
                pair.max_seq = pair.max_seq.max(seq);
                if let Some(text) = correction
                    && !pair.corrections.contains(&text)
                {
                    pair.corrections.push(text);
                }
            }
            None => {
                current = Some(PairVotes {
                    pair_id,
                    prompt: row.text("prompt")?,
                    messages: row.text("messages")?,
                    text_a: row.text("text_a")?,
                    text_b: row.text("text_b")?,
                    max_seq: seq,
                    votes: vec![(choice, strength)],
                    corrections: correction.into_iter().collect(),
                })
            }
        }
    }
    if let Some(done) = current {
        for line in aggregated_lines(&done, params)? {
            writer.line(&line).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_rules() {
        let agg = aggregate(&[(Choice::A, Some(3)), (Choice::A, Some(1)), (Choice::B, Some(2))]);
        assert_eq!(agg.winner, Some(Choice::A));
        assert!((agg.agreement - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(agg.strength, Some(2.0));
        // A draw between a and b, or tie/both_bad on top, is not a preference.
        assert_eq!(aggregate(&[(Choice::A, None), (Choice::B, None)]).winner, None);
        assert_eq!(aggregate(&[(Choice::Tie, None), (Choice::Tie, None), (Choice::A, None)]).winner, None);
        assert_eq!(aggregate(&[(Choice::BothBad, None)]).winner, None);
    }

    #[test]
    fn pseudonyms_are_stable_and_secret_dependent() {
        assert_eq!(pseudonym("s", 7), pseudonym("s", 7));
        assert_ne!(pseudonym("s", 7), pseudonym("s", 8));
        assert_ne!(pseudonym("s", 7), pseudonym("t", 7));
    }

    #[test]
    fn prompt_string_keeps_earlier_turns() {
        let turns = vec![
            Message { role: "user".into(), content: "hi".into() },
            Message { role: "assistant".into(), content: "hello".into() },
        ];
        assert_eq!(prompt_string("more?", &turns), "user: hi\n\nassistant: hello\n\nuser: more?");
        assert_eq!(prompt_string("q", &[]), "q");
    }
}
