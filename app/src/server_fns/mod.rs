//! The server functions the pages call, one module per resource, with the view types that
//! only the pages use (the API's own types come from `pairwise_api`).
//!
//! Each server function is a thin call into the REST API (see `backend.rs`), so a page can
//! do nothing the API would refuse. Without JavaScript the same functions take plain form
//! posts (URL-encoded fields named like the arguments) and redirect back to the page.

pub mod accounts;
pub mod arena;
pub mod campaigns;
pub mod rating;
pub mod runs;
