//! The admin pages' data tables (a header row of columns, then the rows), and the card
//! of a table with the form that adds to it.

use leptos::prelude::*;

/// A column's heading; numeric columns are right-aligned.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub numeric: bool,
}

impl Column {
    pub const fn text(title: &'static str) -> Column {
        Column { title, numeric: false }
    }

    pub const fn num(title: &'static str) -> Column {
        Column { title, numeric: true }
    }
}

/// `<table class="data">` with `columns` as its header and `rows` (`<tr>`s) as its body;
/// with no rows and an `empty` text, that text instead of the table.
#[component]
pub fn DataTable<R>(
    #[prop(optional)] id: Option<&'static str>,
    columns: &'static [Column],
    rows: Vec<R>,
    #[prop(optional)] empty: Option<&'static str>,
) -> impl IntoView
where
    R: IntoView + 'static,
{
    if let Some(text) = empty.filter(|_| rows.is_empty()) {
        return view! { <p class="muted">{text}</p> }.into_any();
    }
    view! {
        <table class="data" id=id>
            <thead>
                <tr>
                    {columns
                        .iter()
                        .map(|c| view! { <th class=c.numeric.then_some("num")>{c.title}</th> })
                        .collect_view()}
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

/// A card of a table and, below it, the form that adds a row (`children`).
#[component]
pub fn TableCard<R>(
    title: &'static str,
    id: &'static str,
    columns: &'static [Column],
    rows: Vec<R>,
    form_title: &'static str,
    children: Children,
) -> impl IntoView
where
    R: IntoView + 'static,
{
    view! {
        <section class="card">
            <h2>{title}</h2>
            <DataTable id columns rows />
            <h3>{form_title}</h3>
            {children()}
        </section>
    }
}
