//! Exports of a thumbs or scale campaign: `kto` (each rated response desirable or not by its
//! raters' mean rating), `sft` (raters' corrections, and the responses rated desirable) and
//! `raw` (every vote with its rating). Streamed like the pair exports.
//!
//! A response is desirable when its mean rating is above the threshold (default the scale's
//! middle: 0.5 for thumbs, 3 for 1-5), undesirable below it, and left out at it. See README
//! "Export formats" for the exact fields.

use std::collections::HashMap;

use futures::TryStreamExt;
use pairwise_api::export::{ExportParams, Format, RaterIds};
use pairwise_api::votes::Message;
use serde_json::{Value, json};

use super::{ChunkWriter, conversation, prompt_string, pseudonym};
use crate::args;
use crate::store::Db;

/// Every rating up to the cursor ($2), grouped by task. The texts come with a task's first
/// vote only.
macro_rules! rating_select {
    ($($filter:expr),*) => {
        concat!(
            "SELECT c.pair_id, c.seq, rv.rating, rk.text AS correction, \
             CASE WHEN ROW_NUMBER() OVER task_votes = 1 THEN pr.text END AS prompt, \
             CASE WHEN ROW_NUMBER() OVER task_votes = 1 THEN pr.messages END AS messages, \
             CASE WHEN ROW_NUMBER() OVER task_votes = 1 THEN r.text END AS text \
             FROM comparisons c JOIN rating_votes rv ON rv.comparison_id = c.id JOIN pairs p ON p.id = c.pair_id \
             JOIN prompts pr ON pr.id = p.prompt_id JOIN responses r ON r.id = p.response_a_id \
             LEFT JOIN corrections k ON k.comparison_id = c.id LEFT JOIN responses rk ON rk.id = k.response_id \
             WHERE c.campaign_id = $1 AND c.seq <= $2",
            $($filter,)*
            " WINDOW task_votes AS (PARTITION BY c.pair_id ORDER BY c.seq) ORDER BY c.pair_id, c.seq"
        )
    };
}

/// Tasks with a vote after `since` ($3).
macro_rules! rating_since_sql {
    () => {
        " AND c.pair_id IN (SELECT n.pair_id FROM comparisons n WHERE n.campaign_id = $1 AND n.seq > $3 AND n.seq <= $2)"
    };
}

/// The raw rows: every vote after `since` ($2) up to the cursor ($3), in commit order.
const RATING_RAW_SQL: &str = "SELECT c.id AS vote_id, c.seq, c.pair_id, p.prompt_id, p.response_a_id, r.model, \
     r.model_version, c.rater_id, rv.rating, c.rationale, c.time_ms, c.created_at, rk.text AS correction \
     FROM comparisons c JOIN rating_votes rv ON rv.comparison_id = c.id JOIN pairs p ON p.id = c.pair_id \
     JOIN responses r ON r.id = p.response_a_id LEFT JOIN corrections k ON k.comparison_id = c.id \
     LEFT JOIN responses rk ON rk.id = k.response_id WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3 \
     ORDER BY c.seq";

/// One task's ratings so far.
struct TaskRatings {
    pair_id: i64,
    prompt: String,
    messages: String,
    text: String,
    max_seq: i64,
    ratings: Vec<i64>,
    corrections: Vec<String>,
}

/// The lines of one task in `kto` or `sft`; none when it misses the thresholds or sits on
/// the threshold.
fn task_lines(task: &TaskRatings, params: &ExportParams, threshold: f64) -> anyhow::Result<Vec<Value>> {
    let votes = task.ratings.len() as i64;
    let mean = task.ratings.iter().sum::<i64>() as f64 / votes.max(1) as f64;
    let messages: Vec<Message> = serde_json::from_str(&task.messages)?;
    let prompt = prompt_string(&task.prompt, &messages);
    let completion = |text: &str| match messages.is_empty() {
        true => json!({"prompt": prompt, "completion": text}),
        false => json!({"messages": conversation(&task.prompt, &messages, text)}),
    };
    // As for pairs, a rater's fix is better than the response: `sft` takes a task's
    // corrections whatever its ratings.
    if params.format == Format::Sft && !task.corrections.is_empty() {
        let mut lines: Vec<Value> = task.corrections.iter().map(|text| completion(text)).collect();
        if params.meta {
            for line in &mut lines {
                line["pair_id"] = json!(task.pair_id);
                line["source"] = json!("correction");
                line["seq"] = json!(task.max_seq);
            }
        }
        return Ok(lines);
    }
    let desirable = match mean.partial_cmp(&threshold) {
        Some(std::cmp::Ordering::Greater) => true,
        Some(std::cmp::Ordering::Less) => false,
        _ => return Ok(Vec::new()),
    };
    let on_its_side =
        task.ratings.iter().filter(|&&r| if desirable { r as f64 > threshold } else { (r as f64) < threshold }).count();
    let agreement = on_its_side as f64 / votes.max(1) as f64;
    if votes < params.min_votes || agreement + 1e-12 < params.min_agreement {
        return Ok(Vec::new());
    }
    let mut line = match params.format {
        Format::Kto => json!({"prompt": prompt, "completion": task.text, "label": desirable}),
        Format::Sft if desirable => completion(&task.text),
        _ => return Ok(Vec::new()),
    };
    if params.meta {
        line["pair_id"] = json!(task.pair_id);
        line["votes"] = json!(votes);
        line["mean_rating"] = json!(mean);
        line["agreement"] = json!(agreement);
        line["seq"] = json!(task.max_seq);
        if params.format == Format::Sft {
            line["source"] = json!("consensus");
        }
    }
    Ok(vec![line])
}

/// `kto` and `sft`: a task is re-exported when it received a vote after `since`, judged on
/// all its votes up to the cursor.
pub(super) async fn stream_tasks(
    db: &Db,
    campaign_id: i64,
    cursor: i64,
    params: &ExportParams,
    threshold: f64,
    writer: &mut ChunkWriter,
) -> anyhow::Result<()> {
    let mut rows = match params.since > 0 {
        false => db.stream(rating_select!(), args![campaign_id, cursor]),
        true => db.stream(rating_select!(rating_since_sql!()), args![campaign_id, cursor, params.since]),
    };
    let mut current: Option<TaskRatings> = None;
    while let Some(row) = rows.try_next().await? {
        let pair_id = row.int("pair_id")?;
        if current.as_ref().is_some_and(|t| t.pair_id != pair_id) {
            let done = current.take().expect("checked above");
            for line in task_lines(&done, params, threshold)? {
                if !writer.line(&line).await? {
                    return Ok(());
                }
            }
        }
        let (seq, rating, correction) = (row.int("seq")?, row.int("rating")?, row.opt_text("correction")?);
        match &mut current {
            Some(task) => {
                task.ratings.push(rating);
                task.max_seq = task.max_seq.max(seq);
                if let Some(text) = correction
                    && !task.corrections.contains(&text)
                {
                    task.corrections.push(text);
                }
            }
            None => {
                current = Some(TaskRatings {
                    pair_id,
                    prompt: row.text("prompt")?,
                    messages: row.text("messages")?,
                    text: row.text("text")?,
                    max_seq: seq,
                    ratings: vec![rating],
                    corrections: correction.into_iter().collect(),
                })
            }
        }
    }
    if let Some(done) = current {
        for line in task_lines(&done, params, threshold)? {
            writer.line(&line).await?;
        }
    }
    Ok(())
}

/// `raw`: one line per vote, in commit order.
pub(super) async fn stream_raw(
    db: &Db,
    campaign_id: i64,
    cursor: i64,
    params: &ExportParams,
    secret: &str,
    writer: &mut ChunkWriter,
) -> anyhow::Result<()> {
    let mut rows = db.stream(RATING_RAW_SQL, args![campaign_id, params.since, cursor]);
    let mut pseudonyms: HashMap<i64, Value> = HashMap::new();
    while let Some(row) = rows.try_next().await? {
        let rater = row.int("rater_id")?;
        let rater = match params.raters {
            RaterIds::Pseudonym => pseudonyms.entry(rater).or_insert_with(|| json!(pseudonym(secret, rater))).clone(),
            RaterIds::Id => json!(rater),
        };
        let mut line = json!({
            "vote_id": row.int("vote_id")?,
            "seq": row.int("seq")?,
            "task_id": row.int("pair_id")?,
            "prompt_id": row.int("prompt_id")?,
            "response_id": row.int("response_a_id")?,
            "model": row.text("model")?,
            "model_version": row.opt_text("model_version")?,
            "rater": rater,
            "rating": row.int("rating")?,
            "rationale": row.opt_text("rationale")?,
            "time_ms": row.opt_int("time_ms")?,
            "created_at": row.int("created_at")?,
        });
        if let Some(correction) = row.opt_text("correction")? {
            line["correction"] = json!(correction);
        }
        if !writer.line(&line).await? {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(ratings: Vec<i64>) -> TaskRatings {
        TaskRatings {
            pair_id: 1,
            prompt: "p".into(),
            messages: "[]".into(),
            text: "answer".into(),
            max_seq: 3,
            ratings,
            corrections: Vec::new(),
        }
    }

    fn params(format: Format) -> ExportParams {
        serde_json::from_value(json!({"format": format.as_str()})).unwrap()
    }

    #[test]
    fn labels_follow_the_mean_rating_and_the_threshold() {
        let kto = params(Format::Kto);
        let line = |ratings: Vec<i64>, threshold: f64| task_lines(&task(ratings), &kto, threshold).unwrap();
        assert_eq!(line(vec![1, 1, 0], 0.5)[0]["label"], json!(true));
        assert_eq!(line(vec![0, 0, 1], 0.5)[0]["label"], json!(false));
        assert!(line(vec![1, 0], 0.5).is_empty(), "a split vote sits on the threshold");
        assert_eq!(line(vec![4, 5], 3.0)[0]["label"], json!(true));
        assert!(line(vec![3, 3], 3.0).is_empty());
        assert_eq!(line(vec![4, 4], 4.5)[0]["label"], json!(false));
        let sft = params(Format::Sft);
        assert_eq!(task_lines(&task(vec![5]), &sft, 3.0).unwrap()[0]["completion"], json!("answer"));
        assert!(task_lines(&task(vec![1]), &sft, 3.0).unwrap().is_empty());
        let mut fixed = task(vec![1]);
        fixed.corrections.push("better".into());
        assert_eq!(task_lines(&fixed, &sft, 3.0).unwrap()[0]["completion"], json!("better"));
    }
}
