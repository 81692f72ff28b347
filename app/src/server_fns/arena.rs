//! Server functions of arena campaigns: the rater's page (their latest battle, starting a
//! battle, a follow-up message, the vote) with its view types (texts rendered to sanitised
//! HTML on the server), and the admin's contenders and arena settings.

// A server function takes its form's fields as arguments, and the arena settings form has
// eight (the macro's browser-side stub does not carry a per-function allow).
#![allow(clippy::too_many_arguments)]

use leptos::prelude::*;
use pairwise_api::arena::{ArenaSettings, BattleStatus, Contender};
use pairwise_api::campaigns::Campaign;
use serde::{Deserialize, Serialize};
#[cfg(feature = "ssr")]
use {
    crate::backend::{NO_BODY, call, get},
    crate::errors::fail,
    crate::markdown::render,
    crate::server_fns::rating::{now_ms, vote_fields},
    http::Method,
    pairwise_api::arena::{
        ArenaState, Battle, BattleTurnRequest, BattleVote, BattleVoteOutcome, ContenderUpdate, NewBattle, NewContender,
        Pairing,
    },
    pairwise_api::campaigns::{CampaignKind, CampaignUpdate},
};

/// One exchange on screen, rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnView {
    pub prompt_html: String,
    pub left_html: String,
    pub right_html: String,
}

/// A battle on screen: names only after the vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BattleView {
    pub id: i64,
    pub status: BattleStatus,
    pub turns: Vec<TurnView>,
    pub error: Option<String>,
    pub left_model: Option<String>,
    pub right_model: Option<String>,
    /// Whether another exchange is allowed before the vote.
    pub can_continue: bool,
    /// Server time (ms) when the battle was rendered (the no-JS vote's time spent).
    pub shown_at: i64,
}

/// Everything the arena's rating page shows below the guidelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArenaScreen {
    pub battle: Option<BattleView>,
    pub can_draw_prompt: bool,
    pub max_prompt_chars: usize,
    pub contenders: usize,
}

/// The arena of the rating page: `None` for a campaign of imported tasks.
#[server(prefix = "/ui", endpoint = "arena_if_any")]
pub async fn arena_if_any(campaign_id: i64) -> Result<Option<ArenaScreen>, ServerFnError> {
    let campaign: Campaign = get(&format!("/api/v1/campaigns/{campaign_id}")).await?;
    match campaign.kind {
        CampaignKind::Arena => arena_screen(campaign_id).await.map(Some),
        CampaignKind::Pairwise | CampaignKind::Ranking | CampaignKind::Thumbs | CampaignKind::Scale => Ok(None),
    }
}

#[server(prefix = "/ui", endpoint = "arena_view")]
pub async fn arena_view(campaign_id: i64) -> Result<ArenaScreen, ServerFnError> {
    arena_screen(campaign_id).await
}

/// The rater's arena as the page shows it (the server functions' common reply).
#[cfg(feature = "ssr")]
async fn arena_screen(campaign_id: i64) -> Result<ArenaScreen, ServerFnError> {
    let state: ArenaState = get(&format!("/api/v1/campaigns/{campaign_id}/arena")).await?;
    Ok(ArenaScreen {
        battle: state.battle.map(battle_view),
        can_draw_prompt: state.can_draw_prompt,
        max_prompt_chars: state.max_prompt_chars,
        contenders: state.contenders,
    })
}

#[cfg(feature = "ssr")]
fn battle_view(battle: Battle) -> BattleView {
    BattleView {
        id: battle.id,
        status: battle.status,
        can_continue: battle.can_continue,
        turns: battle
            .turns
            .iter()
            .map(|t| TurnView {
                prompt_html: render(&t.prompt),
                left_html: render(&t.left),
                right_html: render(&t.right),
            })
            .collect(),
        error: battle.error,
        left_model: battle.left_model,
        right_model: battle.right_model,
        shown_at: now_ms(),
    }
}

/// Starts a battle with the typed prompt, or one drawn from the pool (`draw`). Without
/// JavaScript (`wait` set by the form) the reply waits for both answers; with it the
/// answers stream in from the battle's events.
#[server(prefix = "/ui", endpoint = "start_battle")]
pub async fn start_battle(
    campaign_id: i64,
    prompt: String,
    draw: Option<String>,
    wait: Option<String>,
) -> Result<ArenaScreen, ServerFnError> {
    let new = NewBattle { prompt: Some(prompt), draw_prompt: draw.is_some(), wait: wait.is_some() };
    let _: Battle = call(Method::POST, &format!("/api/v1/campaigns/{campaign_id}/battles"), Some(&new)).await?;
    arena_screen(campaign_id).await
}

/// A follow-up message to both models of the battle on screen.
#[server(prefix = "/ui", endpoint = "continue_battle")]
pub async fn continue_battle(
    campaign_id: i64,
    battle_id: i64,
    prompt: String,
    wait: Option<String>,
) -> Result<ArenaScreen, ServerFnError> {
    let turn = BattleTurnRequest { prompt, wait: wait.is_some() };
    let _: Battle = call(Method::POST, &format!("/api/v1/battles/{battle_id}/turns"), Some(&turn)).await?;
    arena_screen(campaign_id).await
}

/// The vote on the battle on screen (`choice` as on screen: left / right / tie / both_bad);
/// the reply reveals the models.
#[server(prefix = "/ui", endpoint = "vote_battle")]
pub async fn vote_battle(
    campaign_id: i64,
    battle_id: i64,
    choice: String,
    strength: String,
    rationale: String,
    shown_at: i64,
    time_ms: Option<i64>,
) -> Result<ArenaScreen, ServerFnError> {
    let (choice, strength) = vote_fields(&choice, &strength)?;
    let rationale = rationale.trim();
    let vote = BattleVote {
        choice,
        strength,
        rationale: (!rationale.is_empty()).then(|| rationale.to_string()),
        time_ms: Some(time_ms.unwrap_or_else(|| (now_ms() - shown_at).max(0))),
    };
    let _: BattleVoteOutcome = call(Method::POST, &format!("/api/v1/battles/{battle_id}/vote"), Some(&vote)).await?;
    arena_screen(campaign_id).await
}

/// An arena campaign's settings and contenders, as the admin's campaign page shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArenaAdminView {
    pub settings: ArenaSettings,
    pub contenders: Vec<Contender>,
}

/// The arena part of a campaign's admin page; `None` for a pairwise campaign.
#[server(prefix = "/ui", endpoint = "load_arena_admin")]
pub async fn load_arena_admin(campaign_id: i64) -> Result<Option<ArenaAdminView>, ServerFnError> {
    let campaign: Campaign = get(&format!("/api/v1/campaigns/{campaign_id}")).await?;
    if campaign.kind != CampaignKind::Arena {
        return Ok(None);
    }
    let contenders = get(&format!("/api/v1/campaigns/{campaign_id}/contenders")).await?;
    Ok(Some(ArenaAdminView { settings: campaign.arena, contenders }))
}

#[server(prefix = "/ui", endpoint = "add_contender")]
pub async fn add_contender(
    campaign_id: i64,
    name: String,
    base_url: String,
    model: String,
    api_key: String,
) -> Result<Contender, ServerFnError> {
    let new = NewContender { name, base_url, model, api_key: Some(api_key).filter(|k| !k.trim().is_empty()) };
    call(Method::POST, &format!("/api/v1/campaigns/{campaign_id}/contenders"), Some(&new)).await
}

/// Takes a contender out of (or back into) the battles.
#[server(prefix = "/ui", endpoint = "set_contender_active")]
pub async fn set_contender_active(id: i64, active: bool) -> Result<Contender, ServerFnError> {
    let update = ContenderUpdate { active: Some(active), ..ContenderUpdate::default() };
    call(Method::PATCH, &format!("/api/v1/contenders/{id}"), Some(&update)).await
}

#[server(prefix = "/ui", endpoint = "remove_contender")]
pub async fn remove_contender(id: i64) -> Result<(), ServerFnError> {
    call(Method::DELETE, &format!("/api/v1/contenders/{id}"), NO_BODY).await
}

/// Saves the arena settings; `prompt_pool` holds one prompt per block, blocks separated by
/// a line `---`.
#[server(prefix = "/ui", endpoint = "update_arena")]
pub async fn update_arena(
    campaign_id: i64,
    pairing: String,
    prompt_pool: String,
    max_prompt_chars: usize,
    battles_per_minute: u32,
    timeout_seconds: u64,
    temperature: f64,
    max_tokens: u32,
) -> Result<Campaign, ServerFnError> {
    let pairing = match pairing.as_str() {
        "uniform" => Pairing::Uniform,
        "overlap" => Pairing::Overlap,
        other => return Err(fail(format!("pairing: `{other}` is not uniform or overlap"))),
    };
    let current: Campaign = get(&format!("/api/v1/campaigns/{campaign_id}")).await?;
    let arena = ArenaSettings {
        pairing,
        prompt_pool: split_pool(&prompt_pool),
        max_prompt_chars,
        battles_per_minute,
        timeout_seconds,
        temperature,
        max_tokens,
        ..current.arena
    };
    let update = CampaignUpdate { arena: Some(arena), ..CampaignUpdate::default() };
    call(Method::PATCH, &format!("/api/v1/campaigns/{campaign_id}"), Some(&update)).await
}

/// The prompt pool's text field: prompts separated by lines holding only `---`.
pub fn join_pool(pool: &[String]) -> String {
    pool.join("\n---\n")
}

#[cfg(any(feature = "ssr", test))]
fn split_pool(text: &str) -> Vec<String> {
    let mut prompts = vec![String::new()];
    for line in text.lines() {
        if line.trim() == "---" {
            prompts.push(String::new());
        } else {
            let current = prompts.last_mut().expect("one prompt at least");
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(line);
        }
    }
    prompts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_pool_round_trips_through_its_text_field() {
        let pool = vec!["Write a haiku about rain.".to_string(), "Explain TCP\nin two lines.".to_string()];
        assert_eq!(split_pool(&join_pool(&pool)), pool);
        assert_eq!(split_pool("  \n---\n\none\n---\n"), vec!["one".to_string()]);
    }
}
