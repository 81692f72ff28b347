//! Pairwise server library: the preference store, the REST API, the web pages' wiring
//! and the CLI behind the `pairwise` binary. Each resource module owns its store functions and its `router()`.

pub mod assign;
pub mod auth;
pub mod campaigns;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod export;
pub mod import;
pub mod leaderboard;
pub mod runs;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod tokens;
pub mod users;
pub mod web;
