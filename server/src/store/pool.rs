//! The sqlx executor: reads on a sqlx pool (both databases) and write transactions on
//! Postgres, one sqlx transaction per request, retried on deadlock or serialization failure.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use sqlx::any::{AnyArguments, AnyRow, AnyTypeInfoKind};
use sqlx::{Any, AnyPool, Column, Row, Transaction, ValueRef};

use super::{Backend, DbError, SqlRow, SqlType, SqlValue, Store, TxBody, TxError};

type AnyQuery<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

fn bind(mut query: AnyQuery<'_>, args: Vec<SqlValue>) -> AnyQuery<'_> {
    for arg in args {
        query = match arg {
            SqlValue::Null(SqlType::Int) => query.bind(None::<i64>),
            SqlValue::Null(SqlType::Real) => query.bind(None::<f64>),
            SqlValue::Null(SqlType::Text) => query.bind(None::<String>),
            SqlValue::Int(v) => query.bind(v),
            SqlValue::Real(v) => query.bind(v),
            SqlValue::Text(v) => query.bind(v),
        };
    }
    query
}

fn column_names(row: &AnyRow) -> Arc<Vec<String>> {
    Arc::new(row.columns().iter().map(|c| c.name().to_string()).collect())
}

fn row_from_sqlx(row: &AnyRow, names: &Arc<Vec<String>>) -> Result<SqlRow, sqlx::Error> {
    let values = (0..names.len()).map(|i| cell(row, i)).collect::<Result<Vec<_>, _>>()?;
    Ok(SqlRow::new(names.clone(), values))
}

/// One cell, decoded as the type the value itself has: exports read millions of cells, and
/// guessing (a failed decode builds an error) cost more than the query.
fn cell(row: &AnyRow, i: usize) -> Result<SqlValue, sqlx::Error> {
    let kind = row.try_get_raw(i)?.type_info().kind();
    // The kind was read off the value, so the unchecked decodes below cannot mismatch.
    Ok(match kind {
        AnyTypeInfoKind::Null => SqlValue::Null(SqlType::Int),
        AnyTypeInfoKind::Bool => SqlValue::Int(i64::from(row.try_get_unchecked::<bool, _>(i)?)),
        AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
            SqlValue::Int(row.try_get_unchecked(i)?)
        }
        AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => SqlValue::Real(row.try_get_unchecked(i)?),
        AnyTypeInfoKind::Text => SqlValue::Text(row.try_get_unchecked(i)?),
        AnyTypeInfoKind::Blob => {
            SqlValue::Text(String::from_utf8_lossy(&row.try_get_unchecked::<Vec<u8>, _>(i)?).into_owned())
        }
    })
}

fn rows_from_sqlx(rows: &[AnyRow]) -> Result<Vec<SqlRow>, DbError> {
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    let names = column_names(first);
    Ok(rows.iter().map(|r| row_from_sqlx(r, &names)).collect::<Result<Vec<_>, _>>()?)
}

/// Runs a read on a sqlx pool.
pub(super) async fn fetch_all(pool: &AnyPool, sql: &'static str, args: Vec<SqlValue>) -> Result<Vec<SqlRow>, DbError> {
    let rows = bind(sqlx::query(sql), args).fetch_all(pool).await?;
    rows_from_sqlx(&rows)
}

/// Streams the rows of a read on a sqlx pool (exports: constant memory however many rows).
/// The query runs in a task of its own that hands rows over in chunks, so the stream owns
/// everything it needs.
pub(super) fn stream(
    pool: AnyPool,
    sql: &'static str,
    args: Vec<SqlValue>,
) -> BoxStream<'static, Result<SqlRow, DbError>> {
    const CHUNK: usize = 256;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<Result<SqlRow, DbError>>>(4);
    tokio::spawn(async move {
        let mut rows = bind(sqlx::query(sql), args).fetch(&pool);
        let mut names: Option<Arc<Vec<String>>> = None;
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.next().await {
            let row = row.map_err(DbError::from).and_then(|row| {
                let names = names.get_or_insert_with(|| column_names(&row));
                Ok(row_from_sqlx(&row, names)?)
            });
            let failed = row.is_err();
            chunk.push(row);
            if (failed || chunk.len() == CHUNK) && sender.send(std::mem::take(&mut chunk)).await.is_err() {
                return;
            }
            if failed {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = sender.send(chunk).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver).flat_map(futures::stream::iter).boxed()
}

/// `Store` over a sqlx transaction (Postgres).
struct SqlxStore<'t> {
    backend: Backend,
    tx: &'t mut Transaction<'static, Any>,
}

impl Store for SqlxStore<'_> {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn fetch_all(&mut self, sql: &'static str, args: Vec<SqlValue>) -> BoxFuture<'_, Result<Vec<SqlRow>, DbError>> {
        Box::pin(async move {
            let rows = bind(sqlx::query(sql), args).fetch_all(&mut **self.tx).await?;
            rows_from_sqlx(&rows)
        })
    }

    fn execute(&mut self, sql: &'static str, args: Vec<SqlValue>) -> BoxFuture<'_, Result<u64, DbError>> {
        Box::pin(async move { Ok(bind(sqlx::query(sql), args).execute(&mut **self.tx).await?.rows_affected()) })
    }
}

/// Runs `body` in a sqlx transaction, retrying on deadlock / serialization failure.
pub(super) async fn transact<T, E: TxError>(backend: Backend, pool: &AnyPool, body: TxBody<T, E>) -> Result<T, E> {
    let mut tries = 0u64;
    loop {
        tries += 1;
        let mut tx = pool.begin().await.map_err(DbError::from)?;
        let result = body(&mut SqlxStore { backend, tx: &mut tx }).await;
        let result = match result {
            Ok(value) => tx.commit().await.map_err(|e| E::from(DbError::from(e))).map(|()| value),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if tries < 5 && e.as_db_error().is_some_and(DbError::is_retryable) => {
                tracing::debug!(tries, "retrying transaction");
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}
