//! Pairwise server library: the preference store, the REST API, the web pages' wiring and
//! the CLI behind the `pairwise` binary.
//!
//! Layers, each using only those below it: `http` (axum: routes, extractors, error
//! responses, the web pages) → the domain modules (`accounts`, `campaigns`, `votes`,
//! `import`, `export`, `stats`, `leaderboard`, `runs`: rules and SQL, no axum) → `store`
//! (the one way into the database). The domain modules also use `cluster` (how servers
//! sharing a database divide the work) and `metrics` (the Prometheus figures). `cli`,
//! `config` and `demo` sit on top; every layer may use the API types of `pairwise_api`.

pub mod accounts;
pub mod arena;
pub mod campaigns;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod export;
pub mod feedback;
pub mod http;
pub mod import;
pub mod leaderboard;
pub mod metrics;
pub mod plackett_luce;
pub mod ranking;
pub mod rating;
pub mod runs;
pub mod stats;
pub mod store;
pub mod tallies;
pub mod votes;
