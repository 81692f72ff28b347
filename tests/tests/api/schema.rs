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
