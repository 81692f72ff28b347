//! The REST API's request and reply types, one module per resource. The server serialises
//! exactly these and the web app deserialises them, so renaming a field breaks both builds
//! instead of silently emptying a page. No I/O here: the crate builds for wasm32 too.

pub mod accounts;
pub mod arena;
pub mod campaigns;
pub mod error;
pub mod export;
pub mod import;
pub mod leaderboard;
pub mod runs;
pub mod stats;
pub mod votes;
