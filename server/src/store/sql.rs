//! The one interface the store's queries run on, with two implementations:
//! SQLite ([`super::sqlite`], the default, zero set-up) and PostgreSQL
//! ([`super::postgres`], for more than one replica).
//!
//! The history and class code is written once against [`Sql`], in the SQL
//! both understand: `$1`, `$2`… parameters (bound by number, in any
//! order), `CAST($1 AS TEXT)` where a parameter's type must be known, no
//! dialect functions. What differs (column types, how the schema is
//! created and migrated) lives in each backend with its own migrations.

use std::fmt;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer (SQLite INTEGER, PostgreSQL BIGINT/INTEGER/BOOLEAN).
    Int(i64),
    /// A float (REAL, DOUBLE PRECISION).
    Real(f64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `[$1, $2, …]` as [`Value`]s.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::sql::Value::from($v)),*][..]
    };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as an integer, if it is one (a float is truncated).
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.0.get(i)? {
            Value::Int(v) => Some(*v),
            Value::Real(v) => Some(*v as i64),
            _ => None,
        }
    }

    /// Column `i` as a float, if it is a number.
    pub fn real(&self, i: usize) -> Option<f64> {
        match self.0.get(i)? {
            Value::Real(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// Column `i` as text, if it is text.
    pub fn text(&self, i: usize) -> Option<String> {
        match self.0.get(i)? {
            Value::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// What a database said.
#[derive(Debug)]
pub struct DbError {
    /// The message (may name the database file: for the log only).
    pub message: String,
    /// Whether a time bound ended the call (a statement past its timeout,
    /// a lock not granted in time, no free connection): the database may
    /// answer again shortly.
    pub timed_out: bool,
}

impl DbError {
    /// A failure.
    pub fn new(message: String) -> DbError {
        DbError {
            message,
            timed_out: false,
        }
    }

    /// A call its time bound ended.
    pub fn timed_out(message: String) -> DbError {
        DbError {
            message,
            timed_out: true,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

/// A connection that runs the store's SQL. Its calls block: they run on a
/// blocking thread of the pool ([`super::pool`]), never on an async
/// worker, and each statement is bounded in time by the implementation
/// (a statement past its bound fails with [`DbError::timed_out`]).
pub trait Sql: Send {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Which backend, for messages (`SQLite <path>`, `PostgreSQL <host>`).
    fn describe(&self) -> String;
    /// Whether the connection may be used again (not closed, not left in
    /// an unknown state by a call its bound ended).
    fn usable(&self) -> bool {
        true
    }
}

impl dyn Sql + '_ {
    /// The first row of a query, if any.
    pub fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}
