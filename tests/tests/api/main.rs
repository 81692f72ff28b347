//! REST API end-to-end tests; every test runs against SQLite and against Postgres.

mod alignment_loop;
mod assignment;
mod auth;
mod campaigns;
mod cli;
mod export;
mod generation;
mod import;
mod pages;
mod runs;
mod schema;
mod shutdown;
mod stats;
