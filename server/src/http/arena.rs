//! Arena routes: contenders (admins), the rater's arena state, battles (start, continue,
//! vote) and a battle's live answers as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use futures::Stream;
use futures::stream::{self, StreamExt};
use pairwise_api::arena::{
    ArenaState, Battle, BattleEvent, BattleStatus, BattleTurnRequest, BattleVote, BattleVoteOutcome, Contender,
    ContenderUpdate, NewBattle, NewContender, Side,
};
use tokio_stream::wrappers::BroadcastStream;

use super::extract::{AdminUser, ApiJson, ApiPath};
use super::state::AppState;
use crate::accounts::CurrentUser;
use crate::arena;
use crate::error::ApiResult;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns/{id}/contenders", get(list_contenders).post(add_contender))
        .route("/api/v1/contenders/{id}", patch(update_contender).delete(remove_contender))
        .route("/api/v1/campaigns/{id}/arena", get(arena_state))
        .route("/api/v1/campaigns/{id}/battles", post(start_battle))
        .route("/api/v1/battles/{id}", get(show_battle))
        .route("/api/v1/battles/{id}/turns", post(continue_battle))
        .route("/api/v1/battles/{id}/vote", post(vote_battle))
        .route("/api/v1/battles/{id}/events", get(battle_events))
}

async fn list_contenders(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Contender>>> {
    Ok(Json(arena::list_contenders(&state.db, id).await?))
}

async fn add_contender(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(new): ApiJson<NewContender>,
) -> ApiResult<(StatusCode, Json<Contender>)> {
    let contender = arena::add_contender(&state.db, id, &new, None).await?;
    tracing::info!(by = %user.username, campaign = id, contender = %contender.name, "contender added");
    Ok((StatusCode::CREATED, Json(contender)))
}

async fn update_contender(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(update): ApiJson<ContenderUpdate>,
) -> ApiResult<Json<Contender>> {
    Ok(Json(arena::update_contender(&state.db, id, &update).await?))
}

async fn remove_contender(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    arena::remove_contender(&state.db, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn arena_state(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ArenaState>> {
    Ok(Json(arena::arena_state(&state.db, user.id, id).await?))
}

async fn start_battle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(new): ApiJson<NewBattle>,
) -> ApiResult<(StatusCode, Json<Battle>)> {
    let battle =
        arena::start_battle(&state.db, &state.live, user.id, id, new.prompt.as_deref(), new.draw_prompt, new.wait)
            .await?;
    Ok((StatusCode::CREATED, Json(battle)))
}

async fn show_battle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Battle>> {
    Ok(Json(arena::get_battle(&state.db, user.id, id).await?))
}

async fn continue_battle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(turn): ApiJson<BattleTurnRequest>,
) -> ApiResult<Json<Battle>> {
    Ok(Json(arena::continue_battle(&state.db, &state.live, user.id, id, &turn.prompt, turn.wait).await?))
}

async fn vote_battle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(vote): ApiJson<BattleVote>,
) -> ApiResult<Json<BattleVoteOutcome>> {
    Ok(Json(arena::vote_battle(&state.db, &state.sequencer, user.id, id, &vote).await?))
}

/// The latest turn's answers as they are generated: first a `delta` per side with the
/// text so far, then each new piece, then `ready` or `failed`, and the stream ends. A
/// battle this server is not generating (finished, or on another server) is followed in
/// the database until it is no longer generating.
async fn battle_events(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let battle = arena::get_battle(&state.db, user.id, id).await?;
    let events: stream::BoxStream<'static, BattleEvent> = match state.live.subscribe(id) {
        Some((left, right, receiver)) => {
            let so_far = [(Side::Left, left), (Side::Right, right)]
                .into_iter()
                .filter(|(_, text)| !text.is_empty())
                .map(|(side, text)| BattleEvent::Delta { side, text });
            let following = BroadcastStream::new(receiver).filter_map(|event| async move { event.ok() });
            stream::iter(so_far).chain(following).boxed()
        }
        None => {
            let (db, rater) = (state.db.clone(), user.id);
            stream::once(async move { settled(&db, rater, battle).await }).flat_map(stream::iter).boxed()
        }
    };
    let mut finished = false;
    let events = events
        .take_while(move |event| {
            let go_on = !finished;
            finished = matches!(event, BattleEvent::Ready | BattleEvent::Failed { .. });
            std::future::ready(go_on)
        })
        .map(|event| Ok(Event::default().json_data(&event).unwrap_or_default()));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The events of a battle once it is no longer generating (polling the database while it
/// is): the latest answers whole, then the outcome.
async fn settled(db: &crate::store::Db, rater: i64, mut battle: Battle) -> Vec<BattleEvent> {
    while battle.status == BattleStatus::Generating {
        tokio::time::sleep(Duration::from_millis(300)).await;
        battle = match arena::get_battle(db, rater, battle.id).await {
            Ok(battle) => battle,
            Err(error) => {
                return vec![BattleEvent::Failed { message: format!("The battle could not be read: {error}") }];
            }
        };
    }
    if battle.status == BattleStatus::Failed {
        let message = battle.error.unwrap_or_else(|| "The battle failed.".into());
        return vec![BattleEvent::Failed { message }];
    }
    let last = battle.turns.last().cloned();
    let mut events: Vec<BattleEvent> = last
        .map(|turn| {
            vec![
                BattleEvent::Delta { side: Side::Left, text: turn.left },
                BattleEvent::Delta { side: Side::Right, text: turn.right },
            ]
        })
        .unwrap_or_default();
    events.push(BattleEvent::Ready);
    events
}
