//! Web pages of Pairwise (Leptos components, SSR + hydration).
//!
//! The rating and admin pages are built on top of the REST API in `server/`; until they
//! land this crate only names the product so the workspace layout is in place.

/// Product name shown in page titles.
pub const PRODUCT_NAME: &str = "Pairwise";
