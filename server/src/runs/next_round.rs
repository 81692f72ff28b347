//! The hand-off to the next round: a new campaign with the settings of the run's campaign,
//! filled with the responses the run's adapter generated.

use std::path::Path;

use pairwise_api::campaigns::{CampaignKind, CampaignStatus, CampaignUpdate, NewCampaign};
use pairwise_api::import::PairingOptions;

use crate::args;
use crate::campaigns::{create_campaign, get_campaign, update_campaign};
use crate::error::ApiError;
use crate::import::import_jsonl;
use crate::store::Db;

/// The next round: a new campaign with the settings of the run's campaign (its name gets
/// ` · round N`), the generated responses imported into it, made active, and linked both
/// ways (campaign → run that generated it, run → campaign). A ranking, thumbs or scale
/// campaign's next round ranks or rates the new responses the same way; a pairwise or arena
/// campaign's compares them in pairs. A failed import leaves no half-filled campaign behind.
pub async fn hand_off(db: &Db, id: i64, campaign_id: i64, generated: &Path) -> anyhow::Result<i64> {
    let data = tokio::fs::read(generated).await?;
    let parent = get_campaign(db, campaign_id, 0).await?;
    let name = next_round_name(&parent.name);
    let mut new = NewCampaign {
        name: name.clone(),
        guidelines: parent.guidelines.clone(),
        overlap: parent.overlap,
        // Gold pairs are not copied: the new round starts without checks of its own.
        gold_rate: 0.0,
        status: CampaignStatus::Draft,
        lease_seconds: parent.lease_seconds,
        free_votes: parent.free_votes,
        kind: match parent.kind {
            CampaignKind::Arena => CampaignKind::Pairwise,
            kind => kind,
        },
        arena: Default::default(),
        aspects: parent.aspects.clone(),
    };
    let campaign = match create_campaign(db, &new).await {
        Err(ApiError::Conflict { .. }) => {
            new.name = format!("{name} (run {id})");
            create_campaign(db, &new).await?
        }
        other => other?,
    };
    // Linked before the import, so even a draft left by a crash says where it came from.
    db.execute("UPDATE campaigns SET source_run_id = $1 WHERE id = $2", args![id, campaign.id]).await?;
    if let Err(error) = import_jsonl(db, campaign.id, &data, &PairingOptions::default()).await {
        delete_empty_campaign(db, campaign.id).await;
        return Err(error.into());
    }
    update_campaign(db, campaign.id, &CampaignUpdate { status: Some(CampaignStatus::Active), ..Default::default() })
        .await?;
    db.execute("UPDATE training_runs SET next_campaign_id = $1 WHERE id = $2", args![campaign.id, id]).await?;
    Ok(campaign.id)
}

async fn delete_empty_campaign(db: &Db, campaign_id: i64) {
    // Nothing references a campaign whose import was rolled back.
    if let Err(error) = db.execute("DELETE FROM campaigns WHERE id = $1", args![campaign_id]).await {
        tracing::warn!(campaign = campaign_id, %error, "removing the campaign of a failed hand-off");
    }
}

/// `Name` → `Name · round 2`, `Name · round 2` → `Name · round 3`.
pub fn next_round_name(name: &str) -> String {
    let (base, round) = match name.rsplit_once(" · round ") {
        Some((base, n)) if n.parse::<u32>().is_ok() => (base, n.parse::<u32>().unwrap_or(1)),
        _ => (name, 1),
    };
    format!("{base} · round {}", round + 1)
}

#[cfg(test)]
mod tests {
    use super::next_round_name;

    #[test]
    fn next_rounds_are_numbered() {
        assert_eq!(next_round_name("Helpfulness"), "Helpfulness · round 2");
        assert_eq!(next_round_name("Helpfulness · round 2"), "Helpfulness · round 3");
        assert_eq!(next_round_name("A · round two"), "A · round two · round 2");
    }
}
