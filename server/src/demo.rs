//! Demo data: two users and an active campaign of realistic prompts with three model
//! checkpoints' responses (plus two gold checks), a ranking campaign of the same prompts
//! (raters order the three responses, plus a gold ranking) and a thumbs campaign of them
//! (each response up or down), so a fresh server has something to show.

use pairwise_api::accounts::Role;
use pairwise_api::campaigns::{CampaignKind, CampaignStatus, NewCampaign};
use pairwise_api::import::{ImportReport, PairingOptions};

use crate::accounts::users::{create_user, list_users};
use crate::campaigns::{create_campaign, list_campaigns};
use crate::error::ApiResult;
use crate::import::import_jsonl;
use crate::store::Db;

pub const DEMO_CAMPAIGN: &str = "Demo: helpful and harmless assistant";
pub const DEMO_RANKING_CAMPAIGN: &str = "Demo: rank the answers";
pub const DEMO_THUMBS_CAMPAIGN: &str = "Demo: thumbs up or down";
pub const DEMO_ADMIN: (&str, &str) = ("admin", "pairwise-admin");
pub const DEMO_ANNOTATOR: (&str, &str) = ("annotator", "pairwise-annotator");

const DEMO_JSONL: &str = include_str!("../demo/demo.jsonl");

/// The ranking demo's gold check: a known order (the two wrong answers tie).
const DEMO_RANKING_GOLD: &str = r#"{"prompt": "What is 12 × 12?", "responses": [{"text": "12 × 12 = 144.", "model": "gold-check"}, {"text": "12 × 12 = 124.", "model": "gold-check-wrong"}, {"text": "12 × 12 = 1212.", "model": "gold-check-wrong"}], "gold_ranks": [1, 2, 2], "tags": ["gold"]}"#;

const DEMO_GUIDELINES: &str = "\
## What makes a response better\n\n\
1. **Correct and safe** first: a wrong or dangerous answer loses, however nicely written.\n\
2. **Helpful**: answers the actual question, with the detail it needs and no padding.\n\
3. **Clear**: well organised; code in code blocks.\n\n\
Pick *tie* when both are equally good, *both bad* when neither is acceptable.\n\
Use the strength to say how sure you are: slightly, clearly or much better.";

const DEMO_RANKING_GUIDELINES: &str = "\
## Order the answers, best first\n\n\
Judge them as in the pairwise demo: **correct and safe** first, then **helpful**, then **clear**.\n\
Give two answers the same rank when they are equally good; tick *all of them are bad* when none is acceptable.";

const DEMO_THUMBS_GUIDELINES: &str = "\
## Is this answer good?\n\n\
Thumbs up when it is **correct and safe**, **helpful** and **clear**; thumbs down otherwise.\n\
If you can fix a bad answer, correct it: your fix becomes training data.";

/// Seeds the demo if it is not there yet; returns the pair campaign's import report when it
/// seeded.
pub async fn seed_demo(db: &Db) -> ApiResult<Option<ImportReport>> {
    let campaigns = list_campaigns(db, 0, false).await?;
    // The pair campaign first: on a fresh database it is campaign 1 (the README's examples).
    let report = if campaigns.iter().any(|c| c.name == DEMO_CAMPAIGN) {
        None
    } else {
        let existing: Vec<String> = list_users(db).await?.into_iter().map(|u| u.username).collect();
        for ((name, password), role) in [(DEMO_ADMIN, Role::Admin), (DEMO_ANNOTATOR, Role::Annotator)] {
            if !existing.iter().any(|u| u == name) {
                create_user(db, name, password, role).await?;
            }
        }
        let campaign =
            create_campaign(db, &demo_campaign(DEMO_CAMPAIGN, CampaignKind::Pairwise, DEMO_GUIDELINES, 0.1)).await?;
        Some(import_jsonl(db, campaign.id, DEMO_JSONL.as_bytes(), &PairingOptions::default()).await?)
    };
    if !campaigns.iter().any(|c| c.name == DEMO_RANKING_CAMPAIGN) {
        seed_ranking_demo(db).await?;
    }
    if !campaigns.iter().any(|c| c.name == DEMO_THUMBS_CAMPAIGN) {
        let new = demo_campaign(DEMO_THUMBS_CAMPAIGN, CampaignKind::Thumbs, DEMO_THUMBS_GUIDELINES, 0.0);
        let campaign = create_campaign(db, &new).await?;
        import_jsonl(db, campaign.id, responses_lines().as_bytes(), &PairingOptions::default()).await?;
    }
    Ok(report)
}

/// The ranking demo: the demo's prompts with all their responses (its ready gold pairs left
/// out) and a gold ranking.
async fn seed_ranking_demo(db: &Db) -> ApiResult<()> {
    let campaign =
        create_campaign(db, &demo_campaign(DEMO_RANKING_CAMPAIGN, CampaignKind::Ranking, DEMO_RANKING_GUIDELINES, 0.1))
            .await?;
    let tasks = format!("{}{DEMO_RANKING_GOLD}\n", responses_lines());
    import_jsonl(db, campaign.id, tasks.as_bytes(), &PairingOptions::default()).await?;
    Ok(())
}

/// The demo's prompts with all their responses (its ready gold pairs left out).
fn responses_lines() -> String {
    DEMO_JSONL.lines().filter(|line| line.contains("\"responses\"")).map(|line| format!("{line}\n")).collect()
}

fn demo_campaign(name: &str, kind: CampaignKind, guidelines: &str, gold_rate: f64) -> NewCampaign {
    NewCampaign {
        name: name.into(),
        guidelines: guidelines.into(),
        overlap: 3,
        gold_rate,
        status: CampaignStatus::Active,
        lease_seconds: 600,
        free_votes: false,
        kind,
        arena: Default::default(),
        aspects: Vec::new(),
    }
}
