//! The values, row sets and errors both database backends speak.

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Json(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Database failures, sorted into what a plugin can act on. The message never
/// carries a DSN.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
    /// The database's own words about a statement it refused: for the log,
    /// never for a response (they can quote data or schema).
    #[error("the database rejected the statement: {0}")]
    Rejected(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict(format!(
                "duplicate key (constraint \"{}\")",
                d.constraint().unwrap_or("unique")
            )),
            sqlx::Error::Database(d) if d.is_foreign_key_violation() || d.is_check_violation() => {
                DbError::Invalid(format!(
                    "the row violates constraint \"{}\"",
                    d.constraint().unwrap_or("?")
                ))
            }
            // Connection exceptions (08xxx) and an administrator's shutdown
            // (57P0x) say the database went away, not that it refused.
            sqlx::Error::Database(d)
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")) =>
            {
                tracing::warn!(error = %e, "database connection lost");
                DbError::Unavailable("database unavailable".into())
            }
            sqlx::Error::Database(d) => DbError::Rejected(d.message().to_string()),
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                DbError::Unavailable("database unavailable".into())
            }
            sqlx::Error::ColumnDecode { index, source } => {
                DbError::Invalid(format!("cannot decode column {index}: {source}"))
            }
            _ => DbError::Rejected(e.to_string()),
        }
    }
}

/// A timestamp parameter (microseconds since the Unix epoch) as a date-time,
/// refused as invalid past chrono's range on every backend.
pub(super) fn micros_to_datetime(micros: i64) -> Result<DateTime<Utc>, DbError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| DbError::Invalid(format!("timestamp {micros} is out of range")))
}
