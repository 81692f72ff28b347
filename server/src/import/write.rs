//! Writing validated items into a campaign: prompts and responses de-duplicated by content
//! hash, pairs formed from each prompt's responses, all in one transaction (through
//! `Db::transact`, so on SQLite it queues with the votes on the writer thread).
//!
//! SQLite runs a few statements per item: each costs microseconds in the server's own
//! process. On Postgres each statement is a round trip, so there a statement writes a chunk
//! of items at once (the rows travel as one JSON parameter): a million pairs in a few
//! thousand round trips instead of four million.

use std::collections::HashMap;
use std::sync::Arc;

use pairwise_api::campaigns::{CampaignKind, CampaignStatus};
use pairwise_api::import::{ImportReport, LineError, PairingOptions};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::bad_lines;
use super::parse::{ImportItem, ItemBody, ResponseIn, feedback_errors};
use crate::args;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::store::{Backend, Db, SqlValue, Store, now_ms, tx_body};

pub(crate) fn content_hash(parts: &[&str]) -> String {
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
    if campaign.kind == CampaignKind::Arena {
        return Err(ApiError::conflict(
            "arena_campaign",
            format!("campaign {campaign_id} is an arena: its pairs come from its raters' battles, not from imports"),
        ));
    }
    if options.max_pairs_per_prompt == Some(0) {
        return Err(ApiError::bad_request("max_pairs_per_prompt: must be at least 1"));
    }
    let kind = campaign.kind;
    let errors = feedback_errors(&items, kind);
    if !errors.is_empty() {
        return Err(bad_lines(errors));
    }
    let items = Arc::new(items);
    let options = *options;
    db.transact(tx_body(move |tx| {
        let items = items.clone();
        Box::pin(async move {
            // Ranking and single-response tasks go one by one on both databases: a ranking
            // needs its response list checked against an existing task (neither is the
            // million-pair case).
            match (tx.backend(), kind) {
                (Backend::Postgres, CampaignKind::Pairwise) => {
                    write_items_in_chunks(tx, campaign_id, &items, &options, now_ms()).await
                }
                _ => write_tasks(tx, campaign_id, &items, &options, now_ms(), kind).await,
            }
        })
    }))
    .await
}

/// An item's responses, the index pairs to form from them and the gold answer.
fn item_shape<'i>(
    item: &'i ImportItem,
    options: &PairingOptions,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<&'i ResponseIn>, Vec<(usize, usize)>, Option<&'i str>) {
    match &item.body {
        ItemBody::Responses(list) => (list.iter().collect(), pair_indices(list.len(), options, rng), None),
        ItemBody::Pair { a, b, gold } => (vec![a.as_ref(), b.as_ref()], vec![(0, 1)], gold.as_deref()),
    }
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

/// Writes items statement by statement: pairs formed from each prompt's responses; for a
/// ranking campaign one task per item listing all its responses; for thumbs and scale
/// campaigns one task per response.
async fn write_tasks(
    tx: &mut dyn Store,
    campaign_id: i64,
    items: &[ImportItem],
    options: &PairingOptions,
    now: i64,
    kind: CampaignKind,
) -> ApiResult<ImportReport> {
    let ranking = kind == CampaignKind::Ranking;
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
        let (responses, pairs, gold) = item_shape(item, options, &mut rng);
        // A ranking task is one row for all its responses, keyed by its first two; a gold
        // ranking's answer on the row is what it says of those two.
        let pairs: Vec<(usize, Option<usize>)> = match kind {
            CampaignKind::Ranking => vec![(0, Some(1))],
            CampaignKind::Thumbs | CampaignKind::Scale => (0..responses.len()).map(|i| (i, None)).collect(),
            CampaignKind::Pairwise | CampaignKind::Arena => pairs.into_iter().map(|(i, j)| (i, Some(j))).collect(),
        };
        let gold = match &item.gold_ranks {
            Some(ranks) => Some(match ranks[0].cmp(&ranks[1]) {
                std::cmp::Ordering::Less => "a",
                std::cmp::Ordering::Greater => "b",
                std::cmp::Ordering::Equal => "tie",
            }),
            None => gold,
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
                        j.map(|j| response_ids[j]),
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
            if ranking {
                list_ranked_responses(tx, campaign_id, item, &response_ids, created == 1).await?;
            }
        }
    }
    Ok(report)
}

/// Stores a new ranking task's responses in order (with their gold ranks), or checks that an
/// existing task with the same first two responses lists the same ones (re-importing a file
/// changes nothing).
async fn list_ranked_responses(
    tx: &mut dyn Store,
    campaign_id: i64,
    item: &ImportItem,
    response_ids: &[i64],
    created: bool,
) -> ApiResult<()> {
    let pair_id = tx
        .fetch_one(
            "SELECT id FROM pairs WHERE campaign_id = $1 AND ((response_a_id = $2 AND response_b_id = $3) \
             OR (response_a_id = $3 AND response_b_id = $2))",
            args![campaign_id, response_ids[0], response_ids[1]],
        )
        .await?
        .int("id")?;
    if created {
        for (position, response_id) in response_ids.iter().enumerate() {
            let gold_rank = item.gold_ranks.as_ref().map(|ranks| ranks[position]);
            tx.execute(
                "INSERT INTO ranking_responses (pair_id, position, response_id, gold_rank) VALUES ($1, $2, $3, $4)",
                args![pair_id, position as i64, *response_id, gold_rank],
            )
            .await?;
        }
        return Ok(());
    }
    let listed = tx
        .fetch_all("SELECT response_id FROM ranking_responses WHERE pair_id = $1 ORDER BY position", args![pair_id])
        .await?
        .iter()
        .map(|row| row.int("response_id"))
        .collect::<Result<Vec<i64>, _>>()?;
    if listed != response_ids {
        return Err(bad_lines(vec![LineError {
            line: item.line,
            field: "responses".into(),
            message: format!(
                "task {pair_id} of this campaign starts with the same two responses but lists others; \
                 a task is known by its first two responses, so put a different one first"
            ),
        }]));
    }
    Ok(())
}

/// Writes one item with a ready pair (an arena battle) inside the caller's transaction and
/// returns the pair's id, new or existing.
pub(crate) async fn write_pair(tx: &mut dyn Store, campaign_id: i64, item: &ImportItem, now: i64) -> ApiResult<i64> {
    let ItemBody::Pair { a, b, .. } = &item.body else {
        return Err(anyhow::anyhow!("write_pair: the item has no ready pair").into());
    };
    let kind = CampaignKind::Arena;
    write_tasks(tx, campaign_id, std::slice::from_ref(item), &PairingOptions::default(), now, kind).await?;
    let messages_json = serde_json::to_string(&item.messages).map_err(anyhow::Error::from)?;
    let row = tx
        .fetch_one(
            "SELECT p.id FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id \
             JOIN responses ra ON ra.id = p.response_a_id JOIN responses rb ON rb.id = p.response_b_id \
             WHERE p.campaign_id = $1 AND pr.content_hash = $2 \
             AND ((ra.content_hash = $3 AND rb.content_hash = $4) OR (ra.content_hash = $4 AND rb.content_hash = $3))",
            args![
                campaign_id,
                content_hash(&[&messages_json, &item.prompt]),
                content_hash(&[&a.text]),
                content_hash(&[&b.text])
            ],
        )
        .await?;
    Ok(row.int("id")?)
}

/// A prompt row of a Postgres chunk (`m`, `md`: absent when the default `[]`, `{}`).
#[derive(serde::Serialize)]
struct PromptRow<'a> {
    h: &'a str,
    t: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    m: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    md: Option<&'a str>,
}

/// A response row of a Postgres chunk (`pa`: absent when the default `{}`).
#[derive(serde::Serialize)]
struct ResponseRow<'a> {
    p: i64,
    h: &'a str,
    t: &'a str,
    mo: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pa: Option<&'a str>,
}

/// Items per statement on Postgres.
const POSTGRES_CHUNK: usize = 2_000;

/// `write_tasks` for Postgres' pairwise campaigns: the same rows and report, a chunk of items per statement.
async fn write_items_in_chunks(
    tx: &mut dyn Store,
    campaign_id: i64,
    items: &[ImportItem],
    options: &PairingOptions,
    now: i64,
) -> ApiResult<ImportReport> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut report = ImportReport { lines: items.len(), ..ImportReport::default() };
    fn encode(rows: &[impl serde::Serialize]) -> anyhow::Result<String> {
        Ok(serde_json::to_string(rows)?)
    }
    for chunk in items.chunks(POSTGRES_CHUNK) {
        let mut prompt_rows = Vec::with_capacity(chunk.len());
        let mut prompt_hashes = Vec::with_capacity(chunk.len());
        for item in chunk {
            let messages_json = serde_json::to_string(&item.messages).map_err(anyhow::Error::from)?;
            prompt_hashes.push(content_hash(&[&messages_json, &item.prompt]));
            let metadata = item.metadata.as_object().is_none_or(|m| !m.is_empty()).then(|| item.metadata.to_string());
            prompt_rows.push((messages_json, metadata));
        }
        let prompt_rows: Vec<PromptRow> = chunk
            .iter()
            .zip(&prompt_hashes)
            .zip(&prompt_rows)
            .map(|((item, h), (m, md))| PromptRow {
                h,
                t: &item.prompt,
                m: (m != "[]").then_some(m.as_str()),
                md: md.as_deref(),
            })
            .collect();
        // New rows come back from the insert; only rows that were there already (a re-import)
        // are looked up after it.
        let mut prompt_ids = HashMap::new();
        for row in tx
            .fetch_all(
                "INSERT INTO prompts (content_hash, text, messages, metadata, created_at) \
                 SELECT x.h, x.t, COALESCE(x.m, '[]'), COALESCE(x.md, '{}'), $2 \
                 FROM json_to_recordset($1::json) AS x(h TEXT, t TEXT, m TEXT, md TEXT) \
                 ON CONFLICT (content_hash) DO NOTHING RETURNING id, content_hash",
                args![encode(&prompt_rows)?, now],
            )
            .await?
        {
            prompt_ids.insert(row.text("content_hash")?, row.int("id")?);
        }
        report.prompts_created += prompt_ids.len();
        report.prompts_reused += chunk.len() - prompt_ids.len();
        let known: Vec<serde_json::Value> =
            prompt_hashes.iter().filter(|h| !prompt_ids.contains_key(*h)).map(|h| json!({"h": h})).collect();
        if !known.is_empty() {
            for row in tx
                .fetch_all(
                    "SELECT p.id, p.content_hash FROM prompts p \
                     JOIN (SELECT DISTINCT h FROM json_to_recordset($1::json) AS x(h TEXT)) x ON p.content_hash = x.h",
                    args![encode(&known)?],
                )
                .await?
            {
                prompt_ids.insert(row.text("content_hash")?, row.int("id")?);
            }
        }

        // Per response: its prompt id, hash and the response; per pair to form: prompt id, the
        // two responses' hashes, gold answer, shuffle key.
        let mut shaped = Vec::new();
        let mut planned = Vec::new();
        for (item, hash) in chunk.iter().zip(&prompt_hashes) {
            let prompt_id = prompt_ids[hash];
            let (responses, pairs, gold) = item_shape(item, options, &mut rng);
            let hashes: Vec<String> = responses.iter().map(|r| content_hash(&[&r.text])).collect();
            for (i, j) in pairs {
                let shuffle_key = rng.random_range(0..i64::from(i32::MAX));
                planned.push((prompt_id, hashes[i].clone(), hashes[j].clone(), gold, shuffle_key));
            }
            shaped.extend(responses.into_iter().zip(hashes).map(|(response, hash)| (prompt_id, hash, response)));
        }
        let params: Vec<Option<String>> = shaped
            .iter()
            .map(|(_, _, r)| r.params.as_object().is_none_or(|p| !p.is_empty()).then(|| r.params.to_string()))
            .collect();
        let response_rows: Vec<ResponseRow> = shaped
            .iter()
            .zip(&params)
            .map(|((p, h, r), pa)| ResponseRow {
                p: *p,
                h,
                t: &r.text,
                mo: &r.model,
                v: r.model_version.as_deref(),
                pa: pa.as_deref(),
            })
            .collect();
        let mut response_ids = HashMap::new();
        for row in tx
            .fetch_all(
                "INSERT INTO responses (prompt_id, content_hash, text, model, model_version, params, created_at) \
                 SELECT x.p, x.h, x.t, x.mo, x.v, COALESCE(x.pa, '{}'), $2 \
                 FROM json_to_recordset($1::json) AS x(p BIGINT, h TEXT, t TEXT, mo TEXT, v TEXT, pa TEXT) \
                 ON CONFLICT (prompt_id, content_hash) DO NOTHING RETURNING id, prompt_id, content_hash",
                args![encode(&response_rows)?, now],
            )
            .await?
        {
            response_ids.insert((row.int("prompt_id")?, row.text("content_hash")?), row.int("id")?);
        }
        report.responses_created += response_ids.len();
        report.responses_reused += response_rows.len() - response_ids.len();
        let known: Vec<serde_json::Value> = shaped
            .iter()
            .filter(|(p, h, _)| !response_ids.contains_key(&(*p, h.clone())))
            .map(|(p, h, _)| json!({"p": p, "h": h}))
            .collect();
        if !known.is_empty() {
            for row in tx
                .fetch_all(
                    "SELECT r.id, r.prompt_id, r.content_hash FROM responses r \
                     JOIN (SELECT DISTINCT p, h FROM json_to_recordset($1::json) AS x(p BIGINT, h TEXT)) x \
                     ON r.prompt_id = x.p AND r.content_hash = x.h",
                    args![encode(&known)?],
                )
                .await?
            {
                response_ids.insert((row.int("prompt_id")?, row.text("content_hash")?), row.int("id")?);
            }
        }

        let pair_rows: Vec<serde_json::Value> = planned
            .into_iter()
            .map(|(prompt, a, b, gold, shuffle_key)| {
                json!({"p": prompt, "a": response_ids[&(prompt, a)], "b": response_ids[&(prompt, b)],
                       "g": i64::from(gold.is_some()), "gc": gold, "s": shuffle_key})
            })
            .collect();
        // Counted in the statement: a row back per chunk, not per pair.
        let created = tx
            .fetch_one(
                "WITH created AS (INSERT INTO pairs (campaign_id, prompt_id, response_a_id, response_b_id, is_gold, \
                 gold_choice, shuffle_key, created_at) SELECT $2, x.p, x.a, x.b, x.g, x.gc, x.s, $3 \
                 FROM json_to_recordset($1::json) AS x(p BIGINT, a BIGINT, b BIGINT, g BIGINT, gc TEXT, s BIGINT) \
                 ON CONFLICT DO NOTHING RETURNING is_gold) \
                 SELECT COUNT(*) AS pairs, CAST(COALESCE(SUM(is_gold), 0) AS BIGINT) AS gold FROM created",
                args![encode(&pair_rows)?, campaign_id, now],
            )
            .await?;
        let (pairs, gold) = (created.int("pairs")? as usize, created.int("gold")? as usize);
        report.pairs_created += pairs;
        report.pairs_existing += pair_rows.len() - pairs;
        report.gold_pairs += gold;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
