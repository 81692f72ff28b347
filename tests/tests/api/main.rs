//! REST API end-to-end tests; every test runs against SQLite and against Postgres, except
//! where only one applies (several servers on one database: Postgres; one server per file,
//! backups: SQLite).

mod alignment_loop;
mod arena;
mod assignment;
mod auth;
mod campaigns;
mod cli;
mod cluster;
mod export;
mod feedback;
mod generation;
mod import;
mod operations;
mod pages;
mod rankings;
mod ratings;
mod runs;
mod schema;
mod shutdown;
mod stats;
