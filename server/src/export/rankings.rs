//! Exports of a ranking campaign: the `ranking` format, the pair formats (`trl`,
//! `messages`) from the pairs a ranking implies, `sft` and `kto` from the best and worst
//! responses, and `raw` with every rater's ranks. Streamed like the pair exports.
//!
//! A task's ranking over raters is the mean of their ranks per response (lower is better;
//! equal means tie). "All bad" holds when more than half of its votes say so: `sft` then
//! leaves the task out and `kto` marks every response undesirable. See README "Export
//! formats" for the exact fields.

use std::collections::HashMap;

use futures::TryStreamExt;
use pairwise_api::export::{ExportParams, Format, InducedPairs, RaterIds};
use pairwise_api::votes::Message;
use serde_json::{Value, json};

use super::{ChunkWriter, conversation, prompt_string, pseudonym};
use crate::args;
use crate::store::{Db, SqlRow};

/// Every rank of the campaign's ranking votes up to the cursor ($2), grouped by task, then
/// vote, then position. The texts come with a task's first vote only.
macro_rules! ranking_select {
    ($($filter:expr),*) => {
        concat!(
            "SELECT c.pair_id, c.id AS vote_id, c.seq, c.choice, rv.position, rv.rank, \
             CASE WHEN ROW_NUMBER() OVER task_response = 1 THEN r.text END AS text, \
             CASE WHEN ROW_NUMBER() OVER task_response = 1 AND rv.position = 0 THEN pr.text END AS prompt, \
             CASE WHEN ROW_NUMBER() OVER task_response = 1 AND rv.position = 0 THEN pr.messages END AS messages \
             FROM comparisons c JOIN ranking_votes rv ON rv.comparison_id = c.id \
             JOIN ranking_responses rr ON rr.pair_id = rv.pair_id AND rr.position = rv.position \
             JOIN responses r ON r.id = rr.response_id JOIN pairs p ON p.id = c.pair_id \
             JOIN prompts pr ON pr.id = p.prompt_id WHERE c.campaign_id = $1 AND c.seq <= $2",
            $($filter,)*
            " WINDOW task_response AS (PARTITION BY rv.pair_id, rv.position ORDER BY c.seq) \
             ORDER BY c.pair_id, c.seq, rv.position"
        )
    };
}

/// Tasks with a vote after `since` ($3).
macro_rules! ranking_since_sql {
    () => {
        " AND c.pair_id IN (SELECT n.pair_id FROM comparisons n WHERE n.campaign_id = $1 AND n.seq > $3 AND n.seq <= $2)"
    };
}

/// The raw rows: every vote after `since` ($2) up to the cursor ($3), in commit order.
macro_rules! ranking_raw_select {
    ($gold_filter:expr) => {
        concat!(
            "SELECT c.id AS vote_id, c.seq, c.pair_id, c.rater_id, c.choice, c.rationale, c.time_ms, c.created_at, \
             rv.position, rv.rank, rv.shown_at, rr.response_id, rr.gold_rank, r.model, r.model_version \
             FROM comparisons c JOIN ranking_votes rv ON rv.comparison_id = c.id \
             JOIN ranking_responses rr ON rr.pair_id = rv.pair_id AND rr.position = rv.position \
             JOIN responses r ON r.id = rr.response_id JOIN pairs p ON p.id = c.pair_id \
             WHERE c.campaign_id = $1 AND c.seq > $2 AND c.seq <= $3",
            $gold_filter,
            " ORDER BY c.seq, rv.position"
        )
    };
}

/// One rater's ranking of a task, ranks in stored order.
struct RankVote {
    ranks: Vec<i64>,
    all_bad: bool,
}

struct TaskVotes {
    pair_id: i64,
    prompt: String,
    messages: Vec<Message>,
    texts: Vec<String>,
    max_seq: i64,
    votes: Vec<RankVote>,
}

impl TaskVotes {
    fn mean_ranks(&self) -> Vec<f64> {
        let n = self.votes.len() as f64;
        (0..self.texts.len()).map(|i| self.votes.iter().map(|v| v.ranks[i] as f64).sum::<f64>() / n).collect()
    }

    fn all_bad(&self) -> bool {
        2 * self.votes.iter().filter(|v| v.all_bad).count() > self.votes.len()
    }

    /// Share of votes that rank response `i` strictly above `j`.
    fn share_above(&self, i: usize, j: usize) -> f64 {
        self.votes.iter().filter(|v| v.ranks[i] < v.ranks[j]).count() as f64 / self.votes.len() as f64
    }
}

/// The one response with the lowest (or, `worst`, highest) mean rank, if one stands alone.
fn single_extreme(means: &[f64], worst: bool) -> Option<usize> {
    let pick = |a: f64, b: f64| if worst { a.max(b) } else { a.min(b) };
    let extreme = means.iter().copied().reduce(pick)?;
    let at: Vec<usize> = (0..means.len()).filter(|&i| means[i] == extreme).collect();
    (at.len() == 1).then(|| at[0])
}

/// `(chosen, rejected)` index pairs the mean ranks imply.
fn induced_pairs(means: &[f64], which: InducedPairs) -> Vec<(usize, usize)> {
    let mut levels: Vec<f64> = means.to_vec();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let level = |m: f64| levels.iter().position(|&l| l == m).expect("every mean is a level");
    let mut pairs = Vec::new();
    for (i, &mi) in means.iter().enumerate() {
        for (j, &mj) in means.iter().enumerate() {
            let keep = match which {
                InducedPairs::All => mi < mj,
                InducedPairs::Adjacent => level(mj) == level(mi) + 1,
            };
            if keep {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// The lines of one task in an aggregated format.
fn task_lines(task: &TaskVotes, params: &ExportParams) -> Vec<Value> {
    if (task.votes.len() as i64) < params.min_votes {
        return Vec::new();
    }
    let means = task.mean_ranks();
    let all_bad = task.all_bad();
    let prompt = prompt_string(&task.prompt, &task.messages);
    let answer = |text: &str| match task.messages.is_empty() {
        true => json!({"prompt": prompt, "completion": text}),
        false => json!({"messages": conversation(&task.prompt, &task.messages, text)}),
    };
    let mut lines = match params.format {
        Format::Ranking => {
            let raw: Vec<&Vec<i64>> = task.votes.iter().map(|v| &v.ranks).collect();
            let mut line = json!({"responses": task.texts, "ranks": means, "raw": raw, "all_bad": all_bad});
            if task.messages.is_empty() {
                line["prompt"] = json!(task.prompt);
            } else {
                // The conversation so far, ending with the prompt; each response answers it.
                let mut turns: Vec<Value> =
                    task.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
                turns.push(json!({"role": "user", "content": task.prompt}));
                line["messages"] = Value::Array(turns);
            }
            vec![line]
        }
        Format::Trl | Format::Messages => induced_pairs(&means, params.pairs)
            .into_iter()
            .filter(|&(i, j)| task.share_above(i, j) + 1e-12 >= params.min_agreement)
            .map(|(i, j)| {
                let (chosen, rejected) = (&task.texts[i], &task.texts[j]);
                match params.format {
                    Format::Trl => json!({"prompt": prompt, "chosen": chosen, "rejected": rejected}),
                    _ => json!({
                        "chosen": conversation(&task.prompt, &task.messages, chosen),
                        "rejected": conversation(&task.prompt, &task.messages, rejected),
                    }),
                }
            })
            .collect(),
        Format::Sft if all_bad => Vec::new(),
        Format::Sft => single_extreme(&means, false).map(|best| answer(&task.texts[best])).into_iter().collect(),
        Format::Kto if all_bad => task
            .texts
            .iter()
            .map(|text| {
                let mut line = answer(text);
                line["label"] = json!(false);
                line
            })
            .collect(),
        Format::Kto if params.decisive => {
            [(single_extreme(&means, false), true), (single_extreme(&means, true), false)]
                .into_iter()
                .filter_map(|(index, label)| {
                    let mut line = answer(&task.texts[index?]);
                    line["label"] = json!(label);
                    Some(line)
                })
                .collect()
        }
        Format::Kto => Vec::new(),
        Format::Raw => unreachable!("raw rows are not aggregated"),
    };
    if params.meta {
        for line in &mut lines {
            line["task_id"] = json!(task.pair_id);
            line["votes"] = json!(task.votes.len());
            line["seq"] = json!(task.max_seq);
        }
    }
    lines
}

/// The aggregated formats: one task at a time, each over all its votes up to the cursor.
pub(super) async fn stream_tasks(
    db: &Db,
    campaign_id: i64,
    cursor: i64,
    params: &ExportParams,
    writer: &mut ChunkWriter,
) -> anyhow::Result<()> {
    let (sql, args) = match (params.include_gold, params.since > 0) {
        (true, false) => (ranking_select!(""), args![campaign_id, cursor]),
        (false, false) => (ranking_select!(" AND p.is_gold = 0"), args![campaign_id, cursor]),
        (true, true) => (ranking_select!(ranking_since_sql!()), args![campaign_id, cursor, params.since]),
        (false, true) => {
            (ranking_select!(" AND p.is_gold = 0", ranking_since_sql!()), args![campaign_id, cursor, params.since])
        }
    };
    let mut rows = db.stream(sql, args);
    let mut current: Option<TaskVotes> = None;
    let mut vote_id = None;
    while let Some(row) = rows.try_next().await? {
        let pair_id = row.int("pair_id")?;
        if current.as_ref().is_some_and(|t| t.pair_id != pair_id) {
            let done = current.take().expect("checked above");
            for line in task_lines(&done, params) {
                if !writer.line(&line).await? {
                    return Ok(());
                }
            }
        }
        let task = match &mut current {
            Some(task) => task,
            None => {
                let messages: Vec<Message> = serde_json::from_str(&row.text("messages")?)?;
                current.insert(TaskVotes {
                    pair_id,
                    prompt: row.text("prompt")?,
                    messages,
                    texts: Vec::new(),
                    max_seq: 0,
                    votes: Vec::new(),
                })
            }
        };
        add_rank(task, &row, &mut vote_id)?;
    }
    if let Some(done) = current {
        for line in task_lines(&done, params) {
            writer.line(&line).await?;
        }
    }
    Ok(())
}

/// Adds one row (one response's rank in one vote) to its task.
fn add_rank(task: &mut TaskVotes, row: &SqlRow, vote_id: &mut Option<i64>) -> anyhow::Result<()> {
    let id = row.int("vote_id")?;
    if *vote_id != Some(id) {
        *vote_id = Some(id);
        task.votes.push(RankVote { ranks: Vec::new(), all_bad: row.text("choice")? == "both_bad" });
        task.max_seq = task.max_seq.max(row.int("seq")?);
    }
    if let Some(text) = row.opt_text("text")? {
        task.texts.push(text);
    }
    task.votes.last_mut().expect("a vote was started").ranks.push(row.int("rank")?);
    Ok(())
}

/// The `raw` format: one line per vote with its ranks in stored order, where each response
/// was shown, the responses' ids and models, and a gold check's known ranks (`gold_ranks`,
/// null on other tasks).
pub(super) async fn stream_raw(
    db: &Db,
    campaign_id: i64,
    cursor: i64,
    params: &ExportParams,
    secret: &str,
    writer: &mut ChunkWriter,
) -> anyhow::Result<()> {
    let sql = if params.include_gold { ranking_raw_select!("") } else { ranking_raw_select!(" AND p.is_gold = 0") };
    let mut rows = db.stream(sql, args![campaign_id, params.since, cursor]);
    let mut pseudonyms: HashMap<i64, Value> = HashMap::new();
    let mut line: Option<Value> = None;
    while let Some(row) = rows.try_next().await? {
        let vote_id = row.int("vote_id")?;
        if line.as_ref().is_some_and(|l| l["vote_id"] != json!(vote_id)) {
            let done = without_gold_nulls(line.take().expect("checked above"));
            if !writer.line(&done).await? {
                return Ok(());
            }
        }
        let current = line.get_or_insert_with(|| {
            json!({"vote_id": vote_id, "ranks": [], "shown_at": [], "response_ids": [], "models": [],
                   "model_versions": [], "gold_ranks": []})
        });
        if current.get("seq").is_none() {
            let rater = row.int("rater_id")?;
            current["seq"] = json!(row.int("seq")?);
            current["task_id"] = json!(row.int("pair_id")?);
            current["rater"] = match params.raters {
                RaterIds::Pseudonym => {
                    pseudonyms.entry(rater).or_insert_with(|| json!(pseudonym(secret, rater))).clone()
                }
                RaterIds::Id => json!(rater),
            };
            current["all_bad"] = json!(row.text("choice")? == "both_bad");
            current["rationale"] = json!(row.opt_text("rationale")?);
            current["time_ms"] = json!(row.opt_int("time_ms")?);
            current["created_at"] = json!(row.int("created_at")?);
        }
        for (field, value) in [
            ("ranks", json!(row.int("rank")?)),
            ("shown_at", json!(row.int("shown_at")?)),
            ("response_ids", json!(row.int("response_id")?)),
            ("models", json!(row.text("model")?)),
            ("model_versions", json!(row.opt_text("model_version")?)),
            ("gold_ranks", json!(row.opt_int("gold_rank")?)),
        ] {
            current[field].as_array_mut().expect("a list").push(value);
        }
    }
    if let Some(done) = line {
        writer.line(&without_gold_nulls(done)).await?;
    }
    Ok(())
}

/// A task that is no gold check has no gold ranks: `null` rather than a list of nulls.
fn without_gold_nulls(mut line: Value) -> Value {
    if line["gold_ranks"].as_array().is_some_and(|ranks| ranks.iter().all(Value::is_null)) {
        line["gold_ranks"] = Value::Null;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn induced_pairs_all_and_adjacent() {
        let means = [2.0, 1.0, 3.0, 1.0];
        let mut all = induced_pairs(&means, InducedPairs::All);
        all.sort_unstable();
        assert_eq!(all, vec![(0, 2), (1, 0), (1, 2), (3, 0), (3, 2)]);
        let mut adjacent = induced_pairs(&means, InducedPairs::Adjacent);
        adjacent.sort_unstable();
        assert_eq!(adjacent, vec![(0, 2), (1, 0), (3, 0)]);
    }

    #[test]
    fn extremes_must_stand_alone() {
        assert_eq!(single_extreme(&[2.0, 1.0, 3.0], false), Some(1));
        assert_eq!(single_extreme(&[2.0, 1.0, 3.0], true), Some(2));
        assert_eq!(single_extreme(&[1.0, 1.0, 3.0], false), None);
    }
}
