//! The SQLite and Postgres migrations build the same schema: the same tables with the same
//! columns, so every query the store runs means the same on both.

use std::collections::BTreeSet;

use pairwise_tests::{Backend, TestServer};

async fn columns(backend: Backend) -> BTreeSet<(String, String)> {
    let server = TestServer::start(backend).await;
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
        }
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS table_name, CAST(column_name AS TEXT) AS column_name \
             FROM information_schema.columns WHERE table_schema = 'public'"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql).fetch_all(&server.sql).await.unwrap();
    server.stop().await;
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_and_postgres_have_the_same_tables_and_columns() {
    let sqlite = columns(Backend::Sqlite).await;
    let postgres = columns(Backend::Postgres).await;
    assert!(sqlite.iter().any(|(table, _)| table == "comparisons"), "{sqlite:?}");
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "columns only in SQLite: {only_sqlite:?}; only in Postgres: {only_postgres:?}"
    );
}

/// Migration 0010 rebuilds SQLite's `pairs` table (a NOT NULL cannot be dropped in place) and
/// `training_runs` (a CHECK cannot be widened): on a database with votes, tallies and runs,
/// every row stays, with no foreign key broken — the drop of the old tables must not cascade
/// to `pair_tallies` — single-response tasks can then be stored, one per response, and KTO
/// runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuilding_pairs_on_sqlite_keeps_every_row() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("up-to-0009");
    std::fs::create_dir(&earlier).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0010" {
            std::fs::copy(&path, earlier.join(&name)).unwrap();
        }
    }
    let file = dir.path().join("old.db");
    let options = SqliteConnectOptions::new().filename(&file).create_if_missing(true).foreign_keys(true);
    let pool = SqlitePool::connect_with(options.clone()).await.unwrap();
    sqlx::migrate::Migrator::new(earlier.as_path()).await.unwrap().run(&pool).await.unwrap();
    for statement in [
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'r', 'x', 'annotator', 0)",
        "INSERT INTO campaigns (id, name, overlap, status, created_at, updated_at) VALUES (1, 'c', 1, 'active', 0, 0)",
        "INSERT INTO prompts (id, content_hash, text, created_at) VALUES (1, 'h', 'p', 0)",
        "INSERT INTO responses (id, prompt_id, content_hash, text, model, created_at) VALUES (1, 1, 'a', 'a', 'm', 0), \
         (2, 1, 'b', 'b', 'm', 0)",
        "INSERT INTO pairs (id, campaign_id, prompt_id, response_a_id, response_b_id, vote_count, claimed, shuffle_key, \
         created_at) VALUES (7, 1, 1, 1, 2, 1, 1, 5, 0)",
        "INSERT INTO assignments (id, campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at) \
         VALUES (1, 1, 7, 1, 'voted', 0, 0, 0, 0)",
        "INSERT INTO comparisons (id, campaign_id, seq, pair_id, rater_id, assignment_id, choice, swapped, client_key, \
         created_at) VALUES (1, 1, 1, 7, 1, 1, 'a', 0, 'k', 0)",
        "INSERT INTO pair_tallies (pair_id, campaign_id, votes, a, b, tie, both_bad) VALUES (7, 1, 1, 1, 0, 0, 0)",
        "INSERT INTO training_runs (id, campaign_id, method, config, trigger, status, guidelines_version, output_dir, \
         started_at, supervisor) VALUES (3, 1, 'dpo', '{}', 'manual', 'succeeded', 1, 'runs/run-3', 0, 'one')",
        "INSERT INTO run_metrics (run_id, line, metrics) VALUES (3, 1, '{}')",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let url = format!("sqlite://{}", file.display());
    let settings = pairwise_server::store::DbSettings { url, max_connections: 2, sqlite_synchronous: "normal".into() };
    let db = pairwise_server::store::Db::connect(&settings).await.unwrap();
    drop(db);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(count("SELECT COUNT(*) FROM pairs WHERE id = 7 AND vote_count = 1 AND shuffle_key = 5").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM pair_tallies WHERE pair_id = 7").await, 1, "the tallies survive");
    assert_eq!(count("SELECT COUNT(*) FROM comparisons").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM assignments").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM training_runs WHERE id = 3 AND supervisor = 'one'").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM run_metrics WHERE run_id = 3").await, 1, "a run's metrics survive");
    let kto = "INSERT INTO training_runs (campaign_id, method, config, trigger, status, guidelines_version, output_dir, \
               started_at) VALUES (1, 'kto', '{}', 'manual', 'failed', 1, '', 0)";
    sqlx::query(kto).execute(&pool).await.expect("KTO runs can be stored");
    let broken: Vec<(String, i64)> =
        sqlx::query_as("SELECT \"table\", rowid FROM pragma_foreign_key_check").fetch_all(&pool).await.unwrap();
    assert!(broken.is_empty(), "foreign keys broken by the rebuild: {broken:?}");
    let single =
        "INSERT INTO pairs (campaign_id, prompt_id, response_a_id, shuffle_key, created_at) VALUES (1, 1, 1, 0, 0)";
    sqlx::query(single).execute(&pool).await.unwrap();
    let again = sqlx::query(single).execute(&pool).await.unwrap_err();
    assert!(again.to_string().contains("UNIQUE"), "one single task per response: {again}");
    let pair_again = "INSERT INTO pairs (campaign_id, prompt_id, response_a_id, response_b_id, shuffle_key, created_at) \
                      VALUES (1, 1, 2, 1, 0, 0)";
    assert!(sqlx::query(pair_again).execute(&pool).await.is_err(), "the unordered pair index is back");
}
