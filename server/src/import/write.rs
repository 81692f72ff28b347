//! Writing validated items into a campaign: prompts and responses de-duplicated by content
//! hash, pairs formed from each prompt's responses, all in one transaction (through
//! `Db::transact`, so on SQLite it queues with the votes on the writer thread).

use std::sync::Arc;

use pairwise_api::campaigns::CampaignStatus;
use pairwise_api::import::{ImportReport, PairingOptions};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::parse::{ImportItem, ItemBody, ResponseIn};
use crate::args;
use crate::campaigns::get_campaign;
use crate::error::{ApiError, ApiResult};
use crate::store::{Db, SqlValue, Store, now_ms, tx_body};

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
