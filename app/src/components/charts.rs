//! SVG charts drawn by the app itself (no chart library): votes over time and the
//! leaderboard's scores with their 95% intervals.

use leptos::prelude::*;

use crate::format::utc_minute;
use pairwise_api::leaderboard::ModelScore;
use pairwise_api::stats::VotesOverTime;

const WIDTH: f64 = 640.0;

/// Bars of votes per bucket (hour or day), with the first and last bucket labelled.
#[component]
pub fn VotesChart(data: VotesOverTime) -> impl IntoView {
    if data.buckets.is_empty() {
        return view! { <p class="muted">"No votes yet."</p> }.into_any();
    }
    let height = 160.0;
    let (left, bottom, top) = (36.0, 22.0, 8.0);
    let max = data.buckets.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1) as f64;
    let slot = (WIDTH - left) / data.buckets.len() as f64;
    let plot = height - bottom - top;
    // Thin bars for long campaigns, but not one slab for a campaign a few hours old.
    let bar_width = (slot * 0.8).clamp(1.0, 28.0);
    let bars = data
        .buckets
        .iter()
        .enumerate()
        .map(|(i, (start, votes))| {
            let h = *votes as f64 / max * plot;
            let label = format!("{}: {votes} votes", utc_minute(*start));
            view! {
                <rect
                    class="bar"
                    x=format!("{:.1}", left + i as f64 * slot + (slot - bar_width) / 2.0)
                    y=format!("{:.1}", top + plot - h)
                    width=format!("{:.1}", bar_width)
                    height=format!("{h:.1}")
                >
                    <title>{label}</title>
                </rect>
            }
        })
        .collect_view();
    let unit = if data.bucket_ms >= 86_400_000 { "votes per day" } else { "votes per hour" };
    let first = utc_minute(data.buckets[0].0);
    let last = utc_minute(data.buckets[data.buckets.len() - 1].0);
    let description = format!("{unit}, from {first} to {last} UTC");
    view! {
        <svg
            class="chart"
            viewBox=format!("0 0 {WIDTH} {height}")
            role="img"
            aria-label=description
        >
            <line class="axis" x1=left y1=top + plot x2=WIDTH y2=top + plot />
            <text class="tick" x=left - 4.0 y=top + 10.0 text-anchor="end">
                {max as i64}
            </text>
            <text class="tick" x=left - 4.0 y=top + plot text-anchor="end">
                "0"
            </text>
            {bars}
            <text class="tick" x=left y=height - 6.0>
                {first}
            </text>
            <text class="tick" x=WIDTH y=height - 6.0 text-anchor="end">
                {last}
            </text>
        </svg>
        <p class="muted small">{unit} " (UTC)"</p>
    }
    .into_any()
}

/// One row per model: the Bradley–Terry score as a dot, the 95% interval as a line.
#[component]
pub fn LeaderboardChart(models: Vec<ModelScore>) -> impl IntoView {
    if models.is_empty() {
        return view! { <p class="muted">"No decisive votes yet."</p> }.into_any();
    }
    let row = 26.0;
    let (label_width, right, top) = (170.0, 16.0, 20.0);
    let height = top + row * models.len() as f64 + 8.0;
    let low = models.iter().map(|m| m.ci_low.min(m.score)).fold(f64::INFINITY, f64::min);
    let high = models.iter().map(|m| m.ci_high.max(m.score)).fold(f64::NEG_INFINITY, f64::max);
    let span = (high - low).max(1e-9);
    let x = move |v: f64| label_width + (v - low) / span * (WIDTH - label_width - right);
    let rows = models
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let y = top + row * i as f64 + row / 2.0;
            let title = format!("{}: {:.0} (95% interval {:.0}–{:.0})", m.model, m.score, m.ci_low, m.ci_high);
            view! {
                <g>
                    <title>{title}</title>
                    <text class="label" x=label_width - 8.0 y=y + 4.0 text-anchor="end">
                        {m.model.clone()}
                    </text>
                    <line class="interval" x1=x(m.ci_low) y1=y x2=x(m.ci_high) y2=y />
                    <circle class="point" cx=x(m.score) cy=y r="5" />
                </g>
            }
        })
        .collect_view();
    view! {
        <svg
            class="chart"
            viewBox=format!("0 0 {WIDTH} {height}")
            role="img"
            aria-label="Bradley–Terry scores with 95% intervals"
        >
            <text class="tick" x=label_width y="12">
                {format!("{low:.0}")}
            </text>
            <text class="tick" x=WIDTH - right y="12" text-anchor="end">
                {format!("{high:.0}")}
            </text>
            {rows}
        </svg>
    }
    .into_any()
}

/// A metric over training steps, as a line with its first and last value labelled.
#[component]
pub fn LineChart(#[prop(into)] title: String, points: Vec<(f64, f64)>) -> impl IntoView {
    let (width, height, left, bottom, top) = (320.0, 150.0, 44.0, 20.0, 10.0);
    let (x_min, x_max) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y_min, y_max) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let x_span = (x_max - x_min).max(1e-9);
    let y_span = (y_max - y_min).max(1e-9);
    let plot_w = width - left - 6.0;
    let plot_h = height - top - bottom;
    let path: String = points
        .iter()
        .enumerate()
        .map(|(i, (x, y))| {
            let px = left + (x - x_min) / x_span * plot_w;
            let py = top + plot_h - (y - y_min) / y_span * plot_h;
            format!("{}{px:.1},{py:.1}", if i == 0 { "M" } else { " L" })
        })
        .collect();
    let last = points.last().map_or(0.0, |p| p.1);
    view! {
        <figure class="line-chart">
            <figcaption>{format!("{title}: {last:.4}")}</figcaption>
            <svg class="chart" viewBox=format!("0 0 {width} {height}") role="img" aria-label=title>
                <line class="axis" x1=left y1=top + plot_h x2=width y2=top + plot_h />
                <text class="tick" x=left - 4.0 y=top + 8.0 text-anchor="end">{format!("{y_max:.3}")}</text>
                <text class="tick" x=left - 4.0 y=top + plot_h text-anchor="end">{format!("{y_min:.3}")}</text>
                <text class="tick" x=left y=height - 4.0>{format!("step {x_min:.0}")}</text>
                <text class="tick" x=width - 6.0 y=height - 4.0 text-anchor="end">{format!("{x_max:.0}")}</text>
                <path class="curve" d=path />
            </svg>
        </figure>
    }
}
