//! The one row type of the store: values bound to statements (`SqlValue`, the `args!`
//! macro) and result rows read by column name (`SqlRow`), the same for both databases and
//! both executors.

use std::sync::Arc;

use super::DbError;

/// A value bound to a statement or read from a row. NULLs carry their column type:
/// Postgres prepares a statement with the parameter types of its first execution, so an
/// untyped NULL there would make a later non-NULL value of the same parameter unreadable.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null(SqlType),
    Int(i64),
    Real(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Int,
    Real,
    Text,
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Int(i64::from(v))
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}

impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        SqlValue::Text(v.clone())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(v: Option<i64>) -> Self {
        v.map_or(SqlValue::Null(SqlType::Int), SqlValue::Int)
    }
}

impl From<Option<&str>> for SqlValue {
    fn from(v: Option<&str>) -> Self {
        v.map_or(SqlValue::Null(SqlType::Text), Into::into)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(SqlValue::Null(SqlType::Text), SqlValue::Text)
    }
}

/// Binds arguments: `args![a, b]` is `vec![SqlValue::from(a), SqlValue::from(b)]`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => { vec![$($crate::store::SqlValue::from($value)),*] };
}

/// A result row with its column names.
#[derive(Debug, Clone)]
pub struct SqlRow {
    names: Arc<Vec<String>>,
    values: Vec<SqlValue>,
}

impl SqlRow {
    pub(super) fn new(names: Arc<Vec<String>>, values: Vec<SqlValue>) -> SqlRow {
        SqlRow { names, values }
    }

    fn value(&self, column: &str) -> Result<&SqlValue, DbError> {
        self.names
            .iter()
            .position(|n| n == column)
            .map(|i| &self.values[i])
            .ok_or_else(|| DbError::Decode(format!("no column `{column}` in result")))
    }

    /// The value at `index` (for hot loops that read many rows by position).
    pub fn at(&self, index: usize) -> Result<&SqlValue, DbError> {
        self.values.get(index).ok_or_else(|| DbError::Decode(format!("no column {index} in result")))
    }

    pub fn opt_int(&self, column: &str) -> Result<Option<i64>, DbError> {
        as_opt_int(column, self.value(column)?)
    }

    pub fn int(&self, column: &str) -> Result<i64, DbError> {
        self.opt_int(column)?.ok_or_else(|| DbError::Decode(format!("column `{column}` is NULL")))
    }

    pub fn opt_text(&self, column: &str) -> Result<Option<String>, DbError> {
        as_opt_text(column, self.value(column)?)
    }

    pub fn text(&self, column: &str) -> Result<String, DbError> {
        self.opt_text(column)?.ok_or_else(|| DbError::Decode(format!("column `{column}` is NULL")))
    }

    pub fn real(&self, column: &str) -> Result<f64, DbError> {
        match self.value(column)? {
            SqlValue::Real(v) => Ok(*v),
            SqlValue::Int(v) => Ok(*v as f64),
            other => Err(DbError::Decode(format!("column `{column}` is {other:?}, not a number"))),
        }
    }

    pub fn opt_int_at(&self, index: usize) -> Result<Option<i64>, DbError> {
        as_opt_int(&index.to_string(), self.at(index)?)
    }

    pub fn int_at(&self, index: usize) -> Result<i64, DbError> {
        self.opt_int_at(index)?.ok_or_else(|| DbError::Decode(format!("column {index} is NULL")))
    }

    pub fn opt_text_at(&self, index: usize) -> Result<Option<String>, DbError> {
        as_opt_text(&index.to_string(), self.at(index)?)
    }

    pub fn text_at(&self, index: usize) -> Result<String, DbError> {
        self.opt_text_at(index)?.ok_or_else(|| DbError::Decode(format!("column {index} is NULL")))
    }
}

fn as_opt_int(column: &str, value: &SqlValue) -> Result<Option<i64>, DbError> {
    match value {
        SqlValue::Null(_) => Ok(None),
        SqlValue::Int(v) => Ok(Some(*v)),
        other => Err(DbError::Decode(format!("column `{column}` is {other:?}, not an integer"))),
    }
}

fn as_opt_text(column: &str, value: &SqlValue) -> Result<Option<String>, DbError> {
    match value {
        SqlValue::Null(_) => Ok(None),
        SqlValue::Text(v) => Ok(Some(v.clone())),
        other => Err(DbError::Decode(format!("column `{column}` is {other:?}, not text"))),
    }
}
