//! The rating page: prompt on top, the two responses side by side, the choice, strength,
//! an optional reason, skip. Keyboard: 1/2 choose, 3 tie, 4 both bad, Enter submits,
//! S skips, Ctrl+Enter submits from a text box. Per-aspect campaigns add a choice per aspect (the same keys answer the focused
//! aspect; Tab moves between them), and every pair may get a correction of one response. With JavaScript the next pair replaces this one in place; without it the forms
//! post and the page reloads with the next pair. Arena campaigns get the arena instead
//! (`arena.rs`), with the same vote fields and keys; ranking campaigns the ranking of a
//! task's responses (`rank.rs`); thumbs and scale campaigns the rating of one response
//! (`single.rs`).

use std::collections::BTreeMap;

use leptos::ev;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;

use super::arena::Arena;
use super::id_param;
use super::rank::Ranker;
use super::single::SingleRater;
use crate::components::{Loading, ProgressBar};
use crate::errors::{ErrorBox, error_text, form_error_from_url, or_error};
use crate::server_fns::arena::arena_if_any;
use crate::server_fns::rating::{NextView, PairView, RateState, SkipPair, SubmitVote, campaign_for_rating, next_pair};
use pairwise_api::campaigns::{Aspect, CampaignKind};

pub(super) const CHOICES: [(&str, &str, &str); 4] =
    [("left", "A is better", "1"), ("right", "B is better", "2"), ("tie", "Tie", "3"), ("both_bad", "Both bad", "4")];
pub(super) const STRENGTHS: [(&str, &str); 3] = [("1", "slightly"), ("2", "clearly"), ("3", "much")];

#[component]
pub fn RatePage() -> impl IntoView {
    let id = id_param();
    let campaign = Resource::new(id, campaign_for_rating);
    // Both loaded up front; an arena campaign's `next` hands out nothing (its overlap is 1
    // and each battle's pair is its rater's), a pairwise campaign has no arena.
    let state = Resource::new(id, next_pair);
    let arena = Resource::new(id, arena_if_any);
    view! {
        <Suspense fallback=|| view! { <Loading /> }>
            {move || Suspend::new(async move {
                let campaign = match campaign.await {
                    Ok(campaign) => campaign,
                    Err(error) => return view! { <ErrorBox error /> }.into_any(),
                };
                let arena = match arena.await {
                    Ok(arena) => arena,
                    Err(error) => return view! { <ErrorBox error /> }.into_any(),
                };
                or_error(state.await, |initial| {
                    let campaign_id = campaign.id;
                    let rater = match (arena, campaign.kind) {
                        (Some(initial), _) => view! { <Arena campaign_id initial /> }.into_any(),
                        (None, CampaignKind::Ranking) => view! { <Ranker campaign_id initial /> }.into_any(),
                        (None, kind @ (CampaignKind::Thumbs | CampaignKind::Scale)) => {
                            view! { <SingleRater campaign_id kind initial /> }.into_any()
                        }
                        (None, _) => {
                            let aspects = campaign.aspects.clone();
                            view! { <Rater campaign_id aspects initial /> }.into_any()
                        }
                    };
                    view! {
                        <Title text=format!("{} · Pairwise", campaign.name) />
                        <h1>{campaign.name.clone()}</h1>
                        <details class="guidelines">
                            <summary>"Guidelines"</summary>
                            <div class="md" inner_html=campaign.guidelines_html.clone()></div>
                        </details>
                        {rater}
                    }
                        .into_any()
                })
            })}
        </Suspense>
    }
}

/// The interactive part: holds the pair on screen and replaces it after each vote.
#[component]
fn Rater(campaign_id: i64, aspects: Vec<Aspect>, initial: RateState) -> impl IntoView {
    let state = RwSignal::new(initial);
    let choice = RwSignal::new(String::new());
    let aspect_choices = RwSignal::new(BTreeMap::<String, String>::new());
    let correction = Correction::default();
    let aspects = StoredValue::new(aspects);
    let strength = RwSignal::new("2".to_string());
    let rationale = RwSignal::new(String::new());
    let message = RwSignal::new(None::<String>);
    // When the pair appeared in this browser (ms): the time spent is sent with the vote.
    let shown_at = StoredValue::new(0.0f64);
    let vote = ServerAction::<SubmitVote>::new();
    let skip = ServerAction::<SkipPair>::new();
    let no_js_vote_error = form_error_from_url(<SubmitVote as ServerFn>::PATH);

    Effect::new(move |_| {
        state.with(|_| ());
        shown_at.set_value(js_sys::Date::now());
    });
    for action in [vote.value(), skip.value()] {
        Effect::new(move |_| match action.get() {
            Some(Ok(next)) => {
                state.set(next);
                // Keys on the next pair start with the overall choice, not the aspect that
                // had the focus.
                blur_focused_input();
                choice.set(String::new());
                aspect_choices.set(BTreeMap::new());
                correction.clear();
                rationale.set(String::new());
                message.set(None);
            }
            Some(Err(error)) => message.set(Some(error_text(&error))),
            None => {}
        });
    }

    let current_pair = move || match state.with(|s| s.next.clone()) {
        NextView::Pair(pair) => Some(pair),
        _ => None,
    };
    let submit_vote = move || {
        let Some(pair) = current_pair() else { return };
        if vote.pending().get_untracked() {
            return;
        }
        if choice.get_untracked().is_empty() {
            message.set(Some("Choose A better, B better, tie or both bad first (keys 1–4).".into()));
            return;
        }
        let chosen = aspect_choices.get_untracked();
        let missing = aspects.with_value(|a| a.iter().find(|a| !chosen.contains_key(&a.name)).map(|a| a.name.clone()));
        if let Some(missing) = missing {
            message.set(Some(format!("Choose on every aspect first: {missing} has no answer (keys 1–4).")));
            focus_aspect(&missing);
            return;
        }
        vote.dispatch(SubmitVote {
            campaign_id,
            assignment_id: pair.assignment_id,
            choice: choice.get_untracked(),
            strength: strength.get_untracked(),
            rationale: rationale.get_untracked(),
            shown_at: pair.shown_at,
            time_ms: Some((js_sys::Date::now() - shown_at.get_value()).max(0.0) as i64),
            aspects: (!chosen.is_empty()).then_some(chosen),
            correction_side: Some(correction.side.get_untracked()).filter(|s| !s.is_empty()),
            correction: Some(correction.text.get_untracked()).filter(|t| !t.trim().is_empty()),
        });
    };
    let skip_pair = move || {
        if let Some(pair) = current_pair()
            && !skip.pending().get_untracked()
        {
            skip.dispatch(SkipPair { campaign_id, assignment_id: pair.assignment_id });
        }
    };

    let keys = window_event_listener(ev::keydown, move |event| {
        // Ctrl+Enter submits from anywhere, the reason and correction boxes included.
        if (event.ctrl_key() || event.meta_key()) && event.key() == "Enter" {
            event.prevent_default();
            submit_vote();
            return;
        }
        if event.ctrl_key() || event.alt_key() || event.meta_key() || typing_in_a_field(&event) {
            return;
        }
        let key = event.key();
        if let Some((value, _, _)) = CHOICES.iter().find(|(_, _, k)| *k == key) {
            // On a focused aspect's choice the keys answer that aspect.
            match focused_aspect(&event) {
                Some(aspect) => aspect_choices.update(|chosen| {
                    chosen.insert(aspect, value.to_string());
                }),
                None => choice.set(value.to_string()),
            }
        } else if key == "Enter" {
            event.prevent_default();
            submit_vote();
        } else if key == "s" || key == "S" {
            skip_pair();
        } else {
            return;
        }
        event.prevent_default();
    });
    on_cleanup(move || keys.remove());

    view! {
        <RatingProgress state />
        {move || {
            message.get().or_else(|| no_js_vote_error.get()).map(|text| view! { <p class="error" role="alert">{text}</p> })
        }}
        {move || match state.with(|s| s.next.clone()) {
            NextView::Pair(pair) => {
                view! {
                    <PairForms
                        pair
                        campaign_id
                        aspects=aspects.get_value()
                        aspect_choices
                        correction
                        choice
                        strength
                        rationale
                        on_vote=Callback::new(move |_| submit_vote())
                        on_skip=Callback::new(move |_| skip_pair())
                    />
                }
                    .into_any()
            }
            other => view! { <NoWork next=other campaign_id /> }.into_any(),
        }}
    }
}

/// The campaign's progress and the rater's own votes.
#[component]
pub(super) fn RatingProgress(state: RwSignal<RateState>) -> impl IntoView {
    view! {
        <div class="progress">
            {move || {
                let s = state.get();
                view! {
                    <ProgressBar id="progress" value=s.campaign_votes target=s.target_votes />
                    <span id="progress-text">
                        {format!("{} / {} votes · you: {}", s.campaign_votes, s.target_votes, s.my_votes)}
                    </span>
                }
            }}
        </div>
    }
}

/// What the page says when there is nothing to rate right now.
#[component]
pub(super) fn NoWork(next: NextView, campaign_id: i64) -> impl IntoView {
    match next {
        NextView::Waiting => view! {
            <p class="card" id="no-pair">
                "The remaining work is with other raters right now. "
                <a href=format!("/rate/{campaign_id}")>"Try again"</a>
                " in a minute."
            </p>
        }
        .into_any(),
        NextView::Unavailable(status) => view! {
            <p class="card" id="no-pair">{format!("This campaign is {}: rating is not open.", status.as_str())}</p>
        }
        .into_any(),
        NextView::Done | NextView::Pair(_) => view! {
            <p class="card" id="no-pair">
                "All done — thank you! There is nothing left for you to rate in this campaign."
            </p>
        }
        .into_any(),
    }
}

/// The choice (keys 1–4), the strength, the optional reason and the submit button: the
/// fields of a vote on a pair and on an arena battle.
#[component]
pub(super) fn VoteFields(
    choice: RwSignal<String>,
    strength: RwSignal<String>,
    rationale: RwSignal<String>,
) -> impl IntoView {
    view! {
        <fieldset class="choices">
            <legend>"Which response is better?"</legend>
            {CHOICES
                .iter()
                .map(|(value, label, key)| {
                    let value = value.to_string();
                    let checked_value = value.clone();
                    let set_value = value.clone();
                    view! {
                        <label class="choice" class:selected=move || choice.get() == checked_value>
                            <input
                                type="radio"
                                name="choice"
                                value=value.clone()
                                prop:checked={
                                    let value = value.clone();
                                    move || choice.get() == value
                                }
                                on:change=move |_| choice.set(set_value.clone())
                            />
                            {*label}
                            <kbd>{*key}</kbd>
                        </label>
                    }
                })
                .collect_view()}
        </fieldset>
        <fieldset class="strengths">
            <legend>"How much better?"</legend>
            {STRENGTHS
                .iter()
                .map(|(value, label)| {
                    let value = value.to_string();
                    let set_value = value.clone();
                    // The attribute carries the default to pages without JavaScript.
                    let default = strength.get_untracked() == value;
                    view! {
                        <label>
                            <input
                                type="radio"
                                name="strength"
                                value=value.clone()
                                checked=default
                                prop:checked=move || strength.get() == value
                                on:change=move |_| strength.set(set_value.clone())
                            />
                            {*label}
                        </label>
                    }
                })
                .collect_view()}
        </fieldset>
        <label class="reason">
            "Reason (optional)"
            <textarea
                name="rationale"
                rows="2"
                prop:value=move || rationale.get()
                on:input=move |ev| rationale.set(event_target_value(&ev))
            ></textarea>
        </label>
        <div class="actions">
            <button type="submit" class="primary" id="submit-vote">
                "Submit" <kbd>"Enter"</kbd>
            </button>
        </div>
    }
}

/// The aspect whose choice has the focus (its radio buttons are named `aspects[NAME]`).
fn focused_aspect(event: &leptos::ev::KeyboardEvent) -> Option<String> {
    use wasm_bindgen::JsCast;
    let input = event.target()?.dyn_into::<web_sys::Element>().ok()?;
    let name = input.get_attribute("name")?;
    name.strip_prefix("aspects[")?.strip_suffix(']').map(str::to_string)
}

fn blur_focused_input() {
    use wasm_bindgen::JsCast;
    if let Some(input) = document().active_element().and_then(|el| el.dyn_into::<web_sys::HtmlInputElement>().ok()) {
        let _ = input.blur();
    }
}

/// Puts the keyboard focus on an aspect's choice, so that keys 1–4 answer it next.
fn focus_aspect(name: &str) {
    use wasm_bindgen::JsCast;
    let selector = format!("fieldset.aspect[data-aspect=\"{name}\"] input");
    if let Some(input) = document().query_selector(&selector).ok().flatten()
        && let Ok(input) = input.dyn_into::<web_sys::HtmlInputElement>()
    {
        let _ = input.focus();
    }
}

/// The choice on each aspect of a per-aspect campaign, posted as `aspects[NAME]`.
#[component]
fn AspectFields(aspects: Vec<Aspect>, chosen: RwSignal<BTreeMap<String, String>>) -> impl IntoView {
    aspects
        .into_iter()
        .map(|aspect| {
            let field = format!("aspects[{}]", aspect.name);
            let choices = CHOICES
                .iter()
                .map(|(value, label, key)| {
                    let (name, value) = (aspect.name.clone(), value.to_string());
                    let (checked_name, checked_value) = (name.clone(), value.clone());
                    let is_chosen = move || chosen.with(|c| c.get(&checked_name) == Some(&checked_value));
                    let selected = is_chosen.clone();
                    view! {
                        <label class="choice" class:selected=selected>
                            <input
                                type="radio"
                                name=field.clone()
                                value=value.clone()
                                prop:checked=is_chosen
                                on:change=move |_| {
                                    chosen.update(|c| {
                                        c.insert(name.clone(), value.clone());
                                    })
                                }
                            />
                            {label.replace(" is better", "")}
                            <kbd>{*key}</kbd>
                        </label>
                    }
                })
                .collect_view();
            view! {
                <fieldset class="choices aspect" data-aspect=aspect.name.clone()>
                    <legend>
                        <strong>{aspect.name.replace('_', " ")}</strong>
                        {(!aspect.description.is_empty()).then(|| format!(" — {}", aspect.description))}
                    </legend>
                    {choices}
                </fieldset>
            }
        })
        .collect_view()
}

/// A rater's optional correction: which response, and its corrected text.
#[derive(Clone, Copy, Default)]
struct Correction {
    side: RwSignal<String>,
    text: RwSignal<String>,
}

impl Correction {
    fn clear(&self) {
        self.side.set(String::new());
        self.text.set(String::new());
    }
}

/// "Correct a response": picking a side starts the text from that response (with
/// JavaScript); without it the rater types or pastes the corrected text.
#[component]
fn CorrectionFields(correction: Correction, left: String, right: String) -> impl IntoView {
    let sides = [("left", "A", left), ("right", "B", right)]
        .into_iter()
        .map(|(value, label, original)| {
            let checked_value = value.to_string();
            view! {
                <label>
                    <input
                        type="radio"
                        name="correction_side"
                        value=value
                        prop:checked=move || correction.side.get() == checked_value
                        on:change=move |_| {
                            correction.side.set(value.to_string());
                            correction.text.set(original.clone());
                        }
                    />
                    {format!("Response {label}")}
                </label>
            }
        })
        .collect_view();
    view! {
        <details class="correction" open=move || !correction.side.get().is_empty()>
            <summary>"Correct a response (optional)"</summary>
            <fieldset class="correction-side">
                <legend>"Which response are you fixing? (with A or B better: the better one)"</legend>
                {sides}
            </fieldset>
            <label class="reason">
                "Corrected response"
                <textarea
                    name="correction"
                    id="correction"
                    rows="6"
                    prop:value=move || correction.text.get()
                    on:input=move |ev| correction.text.set(event_target_value(&ev))
                ></textarea>
            </label>
        </details>
    }
}

/// True when a key press is meant for a text field (the reason box), not a shortcut.
pub(super) fn typing_in_a_field(event: &leptos::ev::KeyboardEvent) -> bool {
    use wasm_bindgen::JsCast;
    event
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        .map(|el| match el.tag_name().as_str() {
            "TEXTAREA" | "SELECT" => true,
            "INPUT" => !matches!(el.get_attribute("type").as_deref(), Some("radio" | "checkbox" | "submit")),
            _ => false,
        })
        .unwrap_or(false)
}

/// The pair and its two forms (vote, skip). The forms post to the server functions, so
/// they work without JavaScript; with it, submit is intercepted and dispatched in place.
#[component]
#[allow(clippy::too_many_arguments)]
fn PairForms(
    pair: PairView,
    campaign_id: i64,
    aspects: Vec<Aspect>,
    aspect_choices: RwSignal<BTreeMap<String, String>>,
    correction: Correction,
    choice: RwSignal<String>,
    strength: RwSignal<String>,
    rationale: RwSignal<String>,
    on_vote: Callback<()>,
    on_skip: Callback<()>,
) -> impl IntoView {
    view! {
        <PromptCard task=pair.clone() />
        <div class="responses">
            <article class="response card">
                <h2>"Response A"</h2>
                <div class="md" id="response-a" inner_html=pair.left_html.clone()></div>
            </article>
            <article class="response card">
                <h2>"Response B"</h2>
                <div class="md" id="response-b" inner_html=pair.right_html.clone()></div>
            </article>
        </div>
        <form
            id="vote-form"
            class="card vote"
            method="post"
            action={<SubmitVote as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_vote.run(());
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="assignment_id" value=pair.assignment_id />
            <input type="hidden" name="shown_at" value=pair.shown_at />
            <AspectFields aspects chosen=aspect_choices />
            <VoteFields choice strength rationale />
            <CorrectionFields correction left=pair.left_text.clone() right=pair.right_text.clone() />
        </form>
        <SkipForm campaign_id assignment_id=pair.assignment_id label="Skip this pair" on_skip />
        <p class="muted small keys">
            "Keys: " <kbd>"1"</kbd> " A better · " <kbd>"2"</kbd> " B better · " <kbd>"3"</kbd> " tie · "
            <kbd>"4"</kbd> " both bad · " <kbd>"Enter"</kbd> " submit (" <kbd>"Ctrl+Enter"</kbd>
            " from a text box) · " <kbd>"S"</kbd> " skip"
        </p>
    }
}

/// The conversation so far and the prompt of the task on screen (`data-assignment` tells
/// tests and the keyboard handler which lease it is).
#[component]
pub(super) fn PromptCard(task: PairView) -> impl IntoView {
    let turns = task
        .turns
        .iter()
        .map(|turn| {
            view! {
                <div class=format!("turn {}", turn.role)>
                    <span class="role">{turn.role.clone()}</span>
                    <div class="md" inner_html=turn.html.clone()></div>
                </div>
            }
        })
        .collect_view();
    view! {
        <section class="prompt card" data-assignment=task.assignment_id>
            {turns}
            <div class="turn user">
                <span class="role">"prompt"</span>
                <div class="md" id="prompt" inner_html=task.prompt_html></div>
            </div>
        </section>
    }
}

/// The skip button: a form posting to the skip server function, so it works without JavaScript.
#[component]
pub(super) fn SkipForm(
    campaign_id: i64,
    assignment_id: i64,
    label: &'static str,
    on_skip: Callback<()>,
) -> impl IntoView {
    view! {
        <form
            id="skip-form"
            class="skip"
            method="post"
            action={<SkipPair as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_skip.run(());
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="assignment_id" value=assignment_id />
            <button type="submit" class="link" id="skip">
                {label} <kbd>"S"</kbd>
            </button>
        </form>
    }
}
