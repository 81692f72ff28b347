//! Demo data: two users and an active campaign of realistic prompts with three model
//! checkpoints' responses (plus two gold checks), so a fresh server has something to show.

use pairwise_api::accounts::Role;
use pairwise_api::campaigns::{CampaignStatus, NewCampaign};
use pairwise_api::import::{ImportReport, PairingOptions};

use crate::accounts::users::{create_user, list_users};
use crate::campaigns::{create_campaign, list_campaigns};
use crate::error::ApiResult;
use crate::import::import_jsonl;
use crate::store::Db;

pub const DEMO_CAMPAIGN: &str = "Demo: helpful and harmless assistant";
pub const DEMO_ADMIN: (&str, &str) = ("admin", "pairwise-admin");
pub const DEMO_ANNOTATOR: (&str, &str) = ("annotator", "pairwise-annotator");

const DEMO_JSONL: &str = include_str!("../demo/demo.jsonl");

const DEMO_GUIDELINES: &str = "\
## What makes a response better\n\n\
1. **Correct and safe** first: a wrong or dangerous answer loses, however nicely written.\n\
2. **Helpful**: answers the actual question, with the detail it needs and no padding.\n\
3. **Clear**: well organised; code in code blocks.\n\n\
Pick *tie* when both are equally good, *both bad* when neither is acceptable.\n\
Use the strength to say how sure you are: slightly, clearly or much better.";

/// Seeds the demo if it is not there yet; returns the import report when it seeded.
pub async fn seed_demo(db: &Db) -> ApiResult<Option<ImportReport>> {
    if list_campaigns(db, 0, false).await?.iter().any(|c| c.name == DEMO_CAMPAIGN) {
        return Ok(None);
    }
    let existing: Vec<String> = list_users(db).await?.into_iter().map(|u| u.username).collect();
    for ((name, password), role) in [(DEMO_ADMIN, Role::Admin), (DEMO_ANNOTATOR, Role::Annotator)] {
        if !existing.iter().any(|u| u == name) {
            create_user(db, name, password, role).await?;
        }
    }
    let campaign = create_campaign(
        db,
        &NewCampaign {
            name: DEMO_CAMPAIGN.into(),
            guidelines: DEMO_GUIDELINES.into(),
            overlap: 3,
            gold_rate: 0.1,
            status: CampaignStatus::Active,
            lease_seconds: 600,
            free_votes: false,
            kind: Default::default(),
            arena: Default::default(),
            aspects: Vec::new(),
        },
    )
    .await?;
    let report = import_jsonl(db, campaign.id, DEMO_JSONL.as_bytes(), &PairingOptions::default()).await?;
    Ok(Some(report))
}
