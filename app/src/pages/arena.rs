//! The rating page of an arena campaign: the rater types a prompt (or draws one), two
//! anonymous models answer side by side — streamed in as they are generated — the rater
//! may send follow-up messages to both, then votes with the same fields and keys as on a
//! pair (1/2 choose, 3 tie, 4 both bad, Enter submits; Ctrl+Enter sends a message). The
//! models' names appear after the vote. Without JavaScript every form posts, the server
//! waits for both answers, and the page comes back with them whole.

use leptos::ev;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use pairwise_api::arena::{BattleEvent, BattleStatus, Side};

use super::rate::{CHOICES, VoteFields, typing_in_a_field};
use crate::errors::{error_text, form_error_from_url};
use crate::server_fns::arena::{ArenaScreen, BattleView, ContinueBattle, StartBattle, VoteBattle, arena_view};

/// The text of the turn being generated, as it streams in.
#[derive(Clone, Copy)]
struct LiveText {
    left: RwSignal<String>,
    right: RwSignal<String>,
}

/// The fields of the forms on the page.
#[derive(Clone, Copy)]
struct Fields {
    prompt: RwSignal<String>,
    follow_up: RwSignal<String>,
    choice: RwSignal<String>,
    strength: RwSignal<String>,
    rationale: RwSignal<String>,
}

/// The arena below the guidelines: the battle on screen, replaced in place as it goes on.
#[component]
pub(super) fn Arena(campaign_id: i64, initial: ArenaScreen) -> impl IntoView {
    let state = RwSignal::new(initial);
    let live = LiveText { left: RwSignal::new(String::new()), right: RwSignal::new(String::new()) };
    let fields = Fields {
        prompt: RwSignal::new(String::new()),
        follow_up: RwSignal::new(String::new()),
        choice: RwSignal::new(String::new()),
        strength: RwSignal::new("2".to_string()),
        rationale: RwSignal::new(String::new()),
    };
    let message = RwSignal::new(None::<String>);
    let shown_at = StoredValue::new(0.0f64);
    let start = ServerAction::<StartBattle>::new();
    let next_turn = ServerAction::<ContinueBattle>::new();
    let vote = ServerAction::<VoteBattle>::new();
    let no_js_errors = [
        form_error_from_url(<StartBattle as ServerFn>::PATH),
        form_error_from_url(<ContinueBattle as ServerFn>::PATH),
        form_error_from_url(<VoteBattle as ServerFn>::PATH),
    ];

    for action in [start.value(), next_turn.value(), vote.value()] {
        Effect::new(move |_| match action.get() {
            Some(Ok(next)) => {
                state.set(next);
                for field in [fields.prompt, fields.follow_up, fields.choice, fields.rationale] {
                    field.set(String::new());
                }
                message.set(None);
            }
            Some(Err(error)) => message.set(Some(error_text(&error))),
            None => {}
        });
    }
    Effect::new(move |_| {
        state.with(|_| ());
        shown_at.set_value(js_sys::Date::now());
    });
    // Opens the stream of answers once per generated turn.
    let following = StoredValue::new((0i64, 0usize));
    Effect::new(move |_| {
        let generating = state.with(|s| {
            s.battle.as_ref().filter(|b| b.status == BattleStatus::Generating).map(|b| (b.id, b.turns.len()))
        });
        if let Some(turn) = generating
            && following.get_value() != turn
        {
            following.set_value(turn);
            live.left.set(String::new());
            live.right.set(String::new());
            follow(turn.0, campaign_id, live, state, message);
        }
    });

    let send_prompt = move |draw: bool| {
        if start.pending().get_untracked() {
            return;
        }
        let prompt = fields.prompt.get_untracked();
        if !draw && prompt.trim().is_empty() {
            message.set(Some("Type a prompt for the two models first.".into()));
            return;
        }
        start.dispatch(StartBattle { campaign_id, prompt, draw: draw.then(|| "1".into()), wait: None });
    };
    let battle_id = move || state.with_untracked(|s| s.battle.as_ref().map(|b| b.id));
    let send_follow_up = move || {
        let Some(battle_id) = battle_id() else { return };
        let prompt = fields.follow_up.get_untracked();
        if prompt.trim().is_empty() || next_turn.pending().get_untracked() {
            return;
        }
        next_turn.dispatch(ContinueBattle { campaign_id, battle_id, prompt, wait: None });
    };
    let submit_vote = move || {
        let Some(battle) = state.with_untracked(|s| s.battle.clone()) else { return };
        if battle.status != BattleStatus::Ready || vote.pending().get_untracked() {
            return;
        }
        if fields.choice.get_untracked().is_empty() {
            message.set(Some("Choose A better, B better, tie or both bad first (keys 1–4).".into()));
            return;
        }
        vote.dispatch(VoteBattle {
            campaign_id,
            battle_id: battle.id,
            choice: fields.choice.get_untracked(),
            strength: fields.strength.get_untracked(),
            rationale: fields.rationale.get_untracked(),
            shown_at: battle.shown_at,
            time_ms: Some((js_sys::Date::now() - shown_at.get_value()).max(0.0) as i64),
        });
    };

    let keys = window_event_listener(ev::keydown, move |event| {
        let ready = state.with_untracked(|s| s.battle.as_ref().is_some_and(|b| b.status == BattleStatus::Ready));
        if !ready || event.ctrl_key() || event.alt_key() || event.meta_key() || typing_in_a_field(&event) {
            return;
        }
        let key = event.key();
        if let Some((value, _, _)) = CHOICES.iter().find(|(_, _, k)| *k == key) {
            fields.choice.set(value.to_string());
        } else if key == "Enter" {
            submit_vote();
        } else {
            return;
        }
        event.prevent_default();
    });
    on_cleanup(move || keys.remove());

    view! {
        <p class="muted small" id="arena-intro">
            "Ask anything: two anonymous models answer side by side. Vote for the better answer; "
            "their names are shown after your vote."
        </p>
        {move || {
            message
                .get()
                .or_else(|| no_js_errors.iter().find_map(|error| error.get()))
                .map(|text| view! { <p class="error" role="alert" id="arena-message">{text}</p> })
        }}
        {move || state.get().battle.map(|battle| view! { <BattlePanes battle live /> })}
        {move || {
            let view_state = state.get();
            match view_state.battle.clone() {
                Some(battle) if battle.status == BattleStatus::Ready => {
                    view! {
                        <VoteForm
                            campaign_id
                            battle=battle.clone()
                            fields
                            on_vote=Callback::new(move |_| submit_vote())
                        />
                        {battle.can_continue.then(|| view! {
                            <FollowUpForm campaign_id battle_id=battle.id fields on_send=Callback::new(move |_| send_follow_up()) />
                        })}
                    }
                        .into_any()
                }
                Some(battle) if battle.status == BattleStatus::Generating => {
                    view! {
                        <p class="muted" id="generating">
                            "The models are answering…"
                            <noscript>" Reload the page in a moment to see their answers."</noscript>
                        </p>
                    }
                        .into_any()
                }
                _ if view_state.contenders < 2 => {
                    view! {
                        <p class="card" id="no-contenders">
                            "This arena is not ready yet: it needs two models to compare. Ask an admin to add them."
                        </p>
                    }
                        .into_any()
                }
                _ => {
                    let again = view_state.battle.is_some();
                    view! {
                        <PromptForm
                            campaign_id
                            again
                            can_draw=view_state.can_draw_prompt
                            max_chars=view_state.max_prompt_chars
                            fields
                            on_send=Callback::new(send_prompt)
                        />
                    }
                        .into_any()
                }
            }
        }}
    }
}

/// Follows a battle's event stream: appends the answers' text as it comes and, when the
/// battle is ready or failed, reloads the page's state (rendered answers, or the error).
fn follow(
    battle: i64,
    campaign_id: i64,
    live: LiveText,
    state: RwSignal<ArenaScreen>,
    message: RwSignal<Option<String>>,
) {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    let Ok(source) = web_sys::EventSource::new(&format!("/api/v1/battles/{battle}/events")) else {
        message.set(Some("Your browser could not receive the answers; reload the page.".into()));
        return;
    };
    let reload = move || {
        leptos::task::spawn_local(async move {
            match arena_view(campaign_id).await {
                Ok(view) => state.set(view),
                Err(error) => message.set(Some(error_text(&error))),
            }
        })
    };
    let on_message = {
        let source = source.clone();
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let Some(data) = event.data().as_string() else { return };
            match serde_json::from_str::<BattleEvent>(&data) {
                Ok(BattleEvent::Delta { side: Side::Left, text }) => live.left.update(|t| t.push_str(&text)),
                Ok(BattleEvent::Delta { side: Side::Right, text }) => live.right.update(|t| t.push_str(&text)),
                Ok(BattleEvent::Ready | BattleEvent::Failed { .. }) | Err(_) => {
                    source.close();
                    reload();
                }
            }
        })
    };
    source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The stream lives as long as the page; its handlers with it.
    on_message.forget();
    let on_error = {
        let source = source.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            source.close();
            reload();
        })
    };
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
}

/// The conversation: each message and both answers side by side; the answers of a turn
/// being generated show their text as it streams in.
#[component]
fn BattlePanes(battle: BattleView, live: LiveText) -> impl IntoView {
    let last = battle.turns.len().saturating_sub(1);
    let generating = battle.status == BattleStatus::Generating;
    let named = |label: &str, name: &Option<String>| match name {
        Some(name) => format!("{label} — {name}"),
        None => label.to_string(),
    };
    let (left_title, right_title) = (named("Model A", &battle.left_model), named("Model B", &battle.right_model));
    let turns = battle
        .turns
        .into_iter()
        .enumerate()
        .map(|(i, turn)| {
            let latest = i == last;
            let pane = |id: &'static str, html: String, text: RwSignal<String>| {
                let id = latest.then_some(id);
                if latest && generating {
                    view! { <div class="md streaming" id=id>{move || text.get()}</div> }.into_any()
                } else {
                    view! { <div class="md" id=id inner_html=html></div> }.into_any()
                }
            };
            view! {
                <section class="prompt card">
                    <div class="turn user">
                        <span class="role">"you"</span>
                        <div class="md" id=latest.then_some("prompt") inner_html=turn.prompt_html></div>
                    </div>
                </section>
                <div class="responses">
                    <article class="response card">
                        <h2>{left_title.clone()}</h2>
                        {pane("response-a", turn.left_html, live.left)}
                    </article>
                    <article class="response card">
                        <h2>{right_title.clone()}</h2>
                        {pane("response-b", turn.right_html, live.right)}
                    </article>
                </div>
            }
        })
        .collect_view();
    let outcome = match battle.status {
        BattleStatus::Voted => Some(
            view! {
                <p class="card ok" id="reveal">
                    "Thanks for your vote. Model A was "
                    <strong id="left-model">{battle.left_model.clone()}</strong>
                    ", model B was "
                    <strong id="right-model">{battle.right_model.clone()}</strong>
                    "."
                </p>
            }
            .into_any(),
        ),
        BattleStatus::Failed => Some(
            view! {
                <p class="error" role="alert" id="battle-error">
                    {battle.error.clone().unwrap_or_else(|| "The battle failed.".into())}
                </p>
            }
            .into_any(),
        ),
        _ => None,
    };
    view! {
        <div class="battle" data-battle=battle.id>
            {turns}
        </div>
        {outcome}
    }
}

/// Ctrl+Enter (⌘+Enter) in a message box sends it.
fn sends(event: &ev::KeyboardEvent) -> bool {
    event.key() == "Enter" && (event.ctrl_key() || event.meta_key())
}

#[component]
fn PromptForm(
    campaign_id: i64,
    again: bool,
    can_draw: bool,
    max_chars: usize,
    fields: Fields,
    on_send: Callback<bool>,
) -> impl IntoView {
    view! {
        <form
            id="prompt-form"
            class="card arena-prompt"
            method="post"
            action={<StartBattle as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_send.run(false);
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="wait" value="1" />
            <label class="wide">
                {if again { "Start another battle: your prompt" } else { "Your prompt" }}
                <textarea
                    id="arena-prompt"
                    name="prompt"
                    rows="3"
                    maxlength=max_chars
                    prop:value=move || fields.prompt.get()
                    on:input=move |ev| fields.prompt.set(event_target_value(&ev))
                    on:keydown=move |ev| {
                        if sends(&ev) {
                            ev.prevent_default();
                            on_send.run(false);
                        }
                    }
                ></textarea>
            </label>
            <div class="actions">
                <button type="submit" class="primary" id="send-prompt">
                    "Send to both" <kbd>"Ctrl+Enter"</kbd>
                </button>
                {can_draw.then(|| view! {
                    <button
                        type="submit"
                        name="draw"
                        value="1"
                        id="draw-prompt"
                        on:click=move |ev| {
                            ev.prevent_default();
                            on_send.run(true);
                        }
                    >
                        "Draw a prompt"
                    </button>
                })}
            </div>
        </form>
    }
}

#[component]
fn FollowUpForm(campaign_id: i64, battle_id: i64, fields: Fields, on_send: Callback<()>) -> impl IntoView {
    view! {
        <form
            id="follow-up-form"
            class="card arena-prompt"
            method="post"
            action={<ContinueBattle as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_send.run(());
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="battle_id" value=battle_id />
            <input type="hidden" name="wait" value="1" />
            <label class="wide">
                "Or continue the conversation with both before you vote"
                <textarea
                    id="follow-up"
                    name="prompt"
                    rows="2"
                    prop:value=move || fields.follow_up.get()
                    on:input=move |ev| fields.follow_up.set(event_target_value(&ev))
                    on:keydown=move |ev| {
                        if sends(&ev) {
                            ev.prevent_default();
                            on_send.run(());
                        }
                    }
                ></textarea>
            </label>
            <div class="actions">
                <button type="submit" id="send-follow-up">"Send to both"</button>
            </div>
        </form>
    }
}

#[component]
fn VoteForm(campaign_id: i64, battle: BattleView, fields: Fields, on_vote: Callback<()>) -> impl IntoView {
    view! {
        <form
            id="vote-form"
            class="card vote"
            method="post"
            action={<VoteBattle as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_vote.run(());
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="battle_id" value=battle.id />
            <input type="hidden" name="shown_at" value=battle.shown_at />
            <VoteFields choice=fields.choice strength=fields.strength rationale=fields.rationale />
        </form>
        <p class="muted small keys">
            "Keys: " <kbd>"1"</kbd> " A better · " <kbd>"2"</kbd> " B better · " <kbd>"3"</kbd> " tie · "
            <kbd>"4"</kbd> " both bad · " <kbd>"Enter"</kbd> " submit · " <kbd>"Ctrl+Enter"</kbd> " send a message"
        </p>
    }
}
