//! The rating page of a thumbs or scale campaign: the prompt, one response, its rating
//! (thumbs up or down, or 1–5), an optional reason and an optional correction of the
//! response; skip.
//!
//! Keyboard: thumbs: 1 or ↑ up, 0 or ↓ down; scale: 1–5. Enter submits, S skips,
//! Ctrl+Enter submits from a text box. Without JavaScript the ratings are radio buttons and
//! the form posts.

use leptos::ev;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use pairwise_api::campaigns::CampaignKind;

use super::rate::{NoWork, PromptCard, RatingProgress, SkipForm, typing_in_a_field};
use crate::errors::{error_text, form_error_from_url};
use crate::server_fns::rating::{NextView, PairView, RateState, SkipPair, SubmitRating};

/// The ratings a campaign offers: `(value, label, key)`, best first.
fn scale_of(kind: CampaignKind) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind {
        CampaignKind::Thumbs => &[("1", "Good (thumbs up)", "1"), ("0", "Bad (thumbs down)", "0")],
        _ => &[
            ("5", "5 · excellent", "5"),
            ("4", "4 · good", "4"),
            ("3", "3 · acceptable", "3"),
            ("2", "2 · poor", "2"),
            ("1", "1 · unusable", "1"),
        ],
    }
}

#[component]
pub(super) fn SingleRater(campaign_id: i64, kind: CampaignKind, initial: RateState) -> impl IntoView {
    let state = RwSignal::new(initial);
    let rating = RwSignal::new(String::new());
    let rationale = RwSignal::new(String::new());
    let correction = RwSignal::new(String::new());
    let message = RwSignal::new(None::<String>);
    let shown_at = StoredValue::new(0.0f64);
    let vote = ServerAction::<SubmitRating>::new();
    let skip = ServerAction::<SkipPair>::new();
    let no_js_vote_error = form_error_from_url(<SubmitRating as ServerFn>::PATH);
    let scale = scale_of(kind);

    Effect::new(move |_| {
        state.with(|_| ());
        shown_at.set_value(js_sys::Date::now());
    });
    Effect::new(move |_| {
        rating.track();
        message.set(None);
    });
    for action in [vote.value(), skip.value()] {
        Effect::new(move |_| match action.get() {
            Some(Ok(next)) => {
                state.set(next);
                rating.set(String::new());
                rationale.set(String::new());
                correction.set(String::new());
                message.set(None);
            }
            Some(Err(error)) => message.set(Some(error_text(&error))),
            None => {}
        });
    }

    let current_task = move || match state.with(|s| s.next.clone()) {
        NextView::Pair(task) => Some(task),
        _ => None,
    };
    let submit = move || {
        let Some(task) = current_task() else { return };
        if vote.pending().get_untracked() {
            return;
        }
        if rating.get_untracked().is_empty() {
            let keys = if kind == CampaignKind::Thumbs { "keys 1 or 0" } else { "keys 1–5" };
            message.set(Some(format!("Rate the response first ({keys}).")));
            return;
        }
        vote.dispatch(SubmitRating {
            campaign_id,
            assignment_id: task.assignment_id,
            rating: Some(rating.get_untracked()),
            rationale: rationale.get_untracked(),
            shown_at: task.shown_at,
            time_ms: Some((js_sys::Date::now() - shown_at.get_value()).max(0.0) as i64),
            correction: Some(correction.get_untracked()).filter(|text| !text.trim().is_empty()),
        });
    };
    let skip_task = move || {
        if let Some(task) = current_task()
            && !skip.pending().get_untracked()
        {
            skip.dispatch(SkipPair { campaign_id, assignment_id: task.assignment_id });
        }
    };

    let keys = window_event_listener(ev::keydown, move |event| {
        if (event.ctrl_key() || event.meta_key()) && event.key() == "Enter" {
            event.prevent_default();
            submit();
            return;
        }
        if event.ctrl_key() || event.alt_key() || event.meta_key() || typing_in_a_field(&event) {
            return;
        }
        let key = event.key();
        let thumbs = kind == CampaignKind::Thumbs;
        match key.as_str() {
            "ArrowUp" if thumbs => rating.set("1".into()),
            "ArrowDown" if thumbs => rating.set("0".into()),
            "Enter" => submit(),
            "s" | "S" => skip_task(),
            key => match scale.iter().find(|(_, _, k)| *k == key) {
                Some((value, _, _)) => rating.set(value.to_string()),
                None => return,
            },
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
            NextView::Pair(task) => {
                view! {
                    <SingleForms
                        task
                        campaign_id
                        kind
                        rating
                        rationale
                        correction
                        on_vote=Callback::new(move |_| submit())
                        on_skip=Callback::new(move |_| skip_task())
                    />
                }
                    .into_any()
            }
            other => view! { <NoWork next=other campaign_id /> }.into_any(),
        }}
    }
}

/// The response and its forms: the rating, reason, correction and submit; skip. The forms
/// post to the server functions, so they work without JavaScript.
#[component]
#[allow(clippy::too_many_arguments)]
fn SingleForms(
    task: PairView,
    campaign_id: i64,
    kind: CampaignKind,
    rating: RwSignal<String>,
    rationale: RwSignal<String>,
    correction: RwSignal<String>,
    on_vote: Callback<()>,
    on_skip: Callback<()>,
) -> impl IntoView {
    let original = task.left_text.clone();
    let choices = scale_of(kind)
        .iter()
        .map(|(value, label, key)| {
            let (checked, selected) = (value.to_string(), value.to_string());
            view! {
                <label class="choice" class:selected=move || rating.get() == selected>
                    <input
                        type="radio"
                        name="rating"
                        value=*value
                        prop:checked=move || rating.get() == checked
                        on:change=move |_| rating.set(value.to_string())
                    />
                    {*label}
                    <kbd>{*key}</kbd>
                </label>
            }
        })
        .collect_view();
    let (question, keys) = match kind {
        CampaignKind::Thumbs => ("Is this response good?", "1 or ↑ good · 0 or ↓ bad"),
        _ => ("How good is this response? (5 = best)", "1–5 rate"),
    };
    view! {
        <PromptCard task=task.clone() />
        <div class="responses single">
            <article class="response card">
                <h2>"Response"</h2>
                <div class="md" id="response-a" inner_html=task.left_html.clone()></div>
            </article>
        </div>
        <form
            id="vote-form"
            class="card vote"
            method="post"
            action={<SubmitRating as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_vote.run(());
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="assignment_id" value=task.assignment_id />
            <input type="hidden" name="shown_at" value=task.shown_at />
            <fieldset class="choices ratings">
                <legend>{question}</legend>
                {choices}
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
            <details class="correction" open=move || !correction.get().is_empty()>
                <summary>"Correct the response (optional)"</summary>
                <p class="muted small">
                    <button
                        type="button"
                        class="link"
                        id="start-correction"
                        on:click=move |_| correction.set(original.clone())
                    >
                        "Start from the response"
                    </button>
                </p>
                <label class="reason">
                    "Corrected response"
                    <textarea
                        name="correction"
                        id="correction"
                        rows="6"
                        prop:value=move || correction.get()
                        on:input=move |ev| correction.set(event_target_value(&ev))
                    ></textarea>
                </label>
            </details>
            <div class="actions">
                <button type="submit" class="primary" id="submit-vote">
                    "Submit" <kbd>"Enter"</kbd>
                </button>
            </div>
        </form>
        <SkipForm campaign_id assignment_id=task.assignment_id label="Skip this response" on_skip />
        <p class="muted small keys">
            "Keys: " {keys} " · " <kbd>"Enter"</kbd> " submit (" <kbd>"Ctrl+Enter"</kbd> " from a text box) · "
            <kbd>"S"</kbd> " skip"
        </p>
    }
}
