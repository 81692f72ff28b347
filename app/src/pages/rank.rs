//! The rating page of a ranking campaign: the prompt, then all of the task's responses
//! (lettered A, B, C … in this rater's screen order), each with its rank, 1 = best; equal
//! ranks are ties. An "all bad" box, an optional reason, skip.
//!
//! Keyboard: one response is current (outlined). A number key gives it that rank and moves
//! on to the next response without a rank; ↑/↓ (or K/J) move between responses, Backspace
//! clears a rank, X toggles "all bad", Enter submits, S skips, Ctrl+Enter submits from the
//! reason box. Without JavaScript every rank is a row of radio buttons and the form posts.

use leptos::ev;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;

use super::rate::{NoWork, PromptCard, RatingProgress, SkipForm, typing_in_a_field};
use crate::errors::{error_text, form_error_from_url};
use crate::server_fns::rating::{NextView, PairView, RateState, SkipPair, SubmitRanking, slot_letter};

/// The ranks on screen, one per response (None: not ranked yet), and the current response.
#[derive(Clone, Copy)]
struct Ranks {
    given: RwSignal<Vec<Option<usize>>>,
    current: RwSignal<usize>,
}

impl Ranks {
    fn reset(&self, responses: usize) {
        self.given.set(vec![None; responses]);
        self.current.set(0);
    }

    /// Gives the current response `rank` and moves on to the next response without one.
    fn assign(&self, rank: usize) {
        let current = self.current.get_untracked();
        self.given.update(|given| given[current] = Some(rank));
        let given = self.given.get_untracked();
        let next = (1..given.len()).map(|step| (current + step) % given.len()).find(|&i| given[i].is_none());
        if let Some(next) = next {
            self.current.set(next);
        }
    }

    fn step(&self, forward: bool) {
        let n = self.given.with_untracked(Vec::len).max(1);
        self.current.update(|c| *c = if forward { (*c + 1) % n } else { (*c + n - 1) % n });
    }
}

fn responses_of(state: &RateState) -> usize {
    match &state.next {
        NextView::Pair(pair) => pair.ranked_html.len(),
        _ => 0,
    }
}

#[component]
pub(super) fn Ranker(campaign_id: i64, initial: RateState) -> impl IntoView {
    let ranks = Ranks { given: RwSignal::new(vec![None; responses_of(&initial)]), current: RwSignal::new(0) };
    let state = RwSignal::new(initial);
    let all_bad = RwSignal::new(false);
    let rationale = RwSignal::new(String::new());
    let message = RwSignal::new(None::<String>);
    let shown_at = StoredValue::new(0.0f64);
    let vote = ServerAction::<SubmitRanking>::new();
    let skip = ServerAction::<SkipPair>::new();
    let no_js_vote_error = form_error_from_url(<SubmitRanking as ServerFn>::PATH);

    Effect::new(move |_| {
        state.with(|_| ());
        shown_at.set_value(js_sys::Date::now());
    });
    // A changed rank answers whatever the message asked for (a missing rank, a refused vote).
    Effect::new(move |_| {
        ranks.given.track();
        message.set(None);
    });
    for action in [vote.value(), skip.value()] {
        Effect::new(move |_| match action.get() {
            Some(Ok(next)) => {
                ranks.reset(responses_of(&next));
                state.set(next);
                all_bad.set(false);
                rationale.set(String::new());
                message.set(None);
            }
            Some(Err(error)) => message.set(Some(error_text(&error))),
            None => {}
        });
    }

    let current_task = move || match state.with(|s| s.next.clone()) {
        NextView::Pair(pair) => Some(pair),
        _ => None,
    };
    let submit = move || {
        let Some(task) = current_task() else { return };
        if vote.pending().get_untracked() {
            return;
        }
        let given = ranks.given.get_untracked();
        if let Some(missing) = given.iter().position(Option::is_none) {
            message.set(Some(format!(
                "Rank every response first: response {} has no rank (keys 1–{}).",
                slot_letter(missing),
                given.len()
            )));
            ranks.current.set(missing);
            return;
        }
        vote.dispatch(SubmitRanking {
            campaign_id,
            assignment_id: task.assignment_id,
            responses: given.len(),
            ranks: Some(
                given
                    .iter()
                    .enumerate()
                    .map(|(slot, rank)| (slot_letter(slot).to_string(), rank.unwrap_or(0).to_string()))
                    .collect(),
            ),
            all_bad: all_bad.get_untracked().then(|| "on".to_string()),
            rationale: rationale.get_untracked(),
            shown_at: task.shown_at,
            time_ms: Some((js_sys::Date::now() - shown_at.get_value()).max(0.0) as i64),
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
        let responses = ranks.given.with_untracked(Vec::len);
        match event.key().as_str() {
            key if key.len() == 1 && key.as_bytes()[0].is_ascii_digit() => {
                let rank = usize::from(key.as_bytes()[0] - b'0');
                if !(1..=responses).contains(&rank) {
                    return;
                }
                ranks.assign(rank);
            }
            "ArrowDown" | "j" | "J" => ranks.step(true),
            "ArrowUp" | "k" | "K" => ranks.step(false),
            "Backspace" | "Delete" => {
                let current = ranks.current.get_untracked();
                ranks.given.update(|given| given[current] = None);
            }
            "x" | "X" => all_bad.update(|bad| *bad = !*bad),
            "Enter" => submit(),
            "s" | "S" => skip_task(),
            _ => return,
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
                    <RankForms
                        task
                        campaign_id
                        ranks
                        all_bad
                        rationale
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

/// The task and its forms: every response with its rank buttons, "all bad", reason, submit;
/// skip. The forms post to the server functions, so they work without JavaScript.
#[component]
fn RankForms(
    task: PairView,
    campaign_id: i64,
    ranks: Ranks,
    all_bad: RwSignal<bool>,
    rationale: RwSignal<String>,
    on_vote: Callback<()>,
    on_skip: Callback<()>,
) -> impl IntoView {
    let k = task.ranked_html.len();
    let responses = task
        .ranked_html
        .iter()
        .enumerate()
        .map(|(slot, html)| {
            let letter = slot_letter(slot);
            let field = format!("ranks[{letter}]");
            let buttons = (1..=k)
                .map(|rank| {
                    let is_given = move || ranks.given.with(|g| g.get(slot).copied().flatten() == Some(rank));
                    view! {
                        <label class="choice rank" class:selected=is_given>
                            <input
                                type="radio"
                                form="vote-form"
                                name=field.clone()
                                value=rank
                                prop:checked=is_given
                                on:change=move |_| {
                                    ranks.current.set(slot);
                                    ranks.assign(rank);
                                }
                            />
                            {rank}
                        </label>
                    }
                })
                .collect_view();
            view! {
                <article
                    class="response card ranked"
                    class:current=move || ranks.current.get() == slot
                    data-slot=slot
                    on:click=move |_| ranks.current.set(slot)
                >
                    <h2>
                        {format!("Response {letter}")}
                        <span class="rank-badge">
                            {move || {
                                ranks
                                    .given
                                    .with(|g| g.get(slot).copied().flatten())
                                    .map_or_else(|| "no rank yet".to_string(), |r| format!("rank {r}"))
                            }}
                        </span>
                    </h2>
                    <div class="md" id=format!("response-{}", letter.to_ascii_lowercase()) inner_html=html.clone()></div>
                    <fieldset class="ranks">
                        <legend>{format!("Rank of {letter} (1 = best)")}</legend>
                        {buttons}
                    </fieldset>
                </article>
            }
        })
        .collect_view();
    view! {
        <PromptCard task=task.clone() />
        <div class="responses ranking">{responses}</div>
        <form
            id="vote-form"
            class="card vote"
            method="post"
            action={<SubmitRanking as ServerFn>::url()}
            on:submit=move |ev| {
                ev.prevent_default();
                on_vote.run(());
            }
        >
            <input type="hidden" name="campaign_id" value=campaign_id />
            <input type="hidden" name="assignment_id" value=task.assignment_id />
            <input type="hidden" name="responses" value=k />
            <input type="hidden" name="shown_at" value=task.shown_at />
            <label class="all-bad">
                <input
                    type="checkbox"
                    name="all_bad"
                    value="on"
                    id="all-bad"
                    prop:checked=move || all_bad.get()
                    on:change=move |ev| all_bad.set(event_target_checked(&ev))
                />
                "All of them are bad" <kbd>"X"</kbd>
            </label>
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
        </form>
        <SkipForm campaign_id assignment_id=task.assignment_id label="Skip this task" on_skip />
        <p class="muted small keys">
            "Keys: " <kbd>"1"</kbd> "–" <kbd>{k.to_string()}</kbd> " rank the outlined response · "
            <kbd>"↑"</kbd> <kbd>"↓"</kbd> " move · " <kbd>"Backspace"</kbd> " clear · " <kbd>"X"</kbd>
            " all bad · " <kbd>"Enter"</kbd> " submit (" <kbd>"Ctrl+Enter"</kbd> " from a text box) · "
            <kbd>"S"</kbd> " skip"
        </p>
    }
}
