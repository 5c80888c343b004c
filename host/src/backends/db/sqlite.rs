//! The embedded SQLite backend: a file per database under the data dir,
//! binding `Value`s and decoding rows by declared type, and the SQLite
//! migrations. Timestamps are fixed-width RFC 3339 text, so text order is
//! time order.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow,
};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use std::path::PathBuf;
use std::time::Duration;

use super::value::micros_to_datetime;
use super::value::{Budget, collect};
use super::{DbError, RowSet, Value};

pub(super) static LITE_MASTER: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite/master");
pub(super) static LITE_TENANT: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite/tenant");

/// Opens the database file at `path`, creating it only when asked: a
/// registered tenant whose file is gone (a partial restore) is an error, not
/// a new empty database that plugins would then write into.
pub(super) async fn sqlite_pool(path: PathBuf, create: bool) -> anyhow::Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(create)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))
}

pub(crate) async fn lite_run<'e, E>(
    ex: E,
    sql: &str,
    params: &[Value],
    budget: &mut Budget,
) -> Result<(u64, RowSet), DbError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    collect(
        ex.fetch_many(lite_query(sql, params)?),
        budget,
        SqliteQueryResult::rows_affected,
        // SQLite hands over a row it already holds in its own memory; the
        // copy is counted as it is made.
        |_| 0,
        lite_values,
    )
    .await
}

/// Fixed-width UTC text, so SQLite's text comparison is chronological.
pub fn sqlite_timestamp(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn lite_query<'q>(
    sql: &'q str,
    params: &'q [Value],
) -> Result<sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>>, DbError> {
    let mut q = sqlx::query(sql);
    for v in params {
        q = match v {
            Value::Null => q.bind(None::<i64>),
            Value::Bool(b) => q.bind(*b),
            Value::Int(i) => q.bind(*i),
            Value::Float(f) => q.bind(*f),
            Value::Text(s) | Value::Json(s) => q.bind(s.as_str()),
            Value::Bytes(b) => q.bind(b.as_slice()),
            Value::Timestamp(t) => q.bind(sqlite_timestamp(micros_to_datetime(*t)?)),
        };
    }
    Ok(q)
}

/// One row's values, each column read as its declared type says.
fn lite_values(row: &SqliteRow) -> Result<Vec<Value>, DbError> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, col)| lite_value(row, i, col.type_info().name()))
        .collect()
}

pub(super) fn lite_value(row: &SqliteRow, i: usize, declared: &str) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let storage = raw.type_info();
    Ok(match (declared, storage.name()) {
        ("BOOLEAN", "INTEGER") => Value::Bool(row.try_get::<i64, _>(i)? != 0),
        ("DATETIME" | "DATE", "TEXT") => {
            let s: String = row.try_get(i)?;
            match parse_sqlite_time(&s) {
                Some(t) => Value::Timestamp(t),
                None => Value::Text(s),
            }
        }
        (_, "INTEGER") => Value::Int(row.try_get(i)?),
        (_, "REAL") => Value::Float(row.try_get(i)?),
        (_, "BLOB") => Value::Bytes(row.try_get(i)?),
        _ => Value::Text(row.try_get(i)?),
    })
}

/// RFC 3339, or SQLite's own `YYYY-MM-DD HH:MM:SS[.fff]`, as UTC micros.
pub(super) fn parse_sqlite_time(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_parse_both_forms() {
        assert_eq!(parse_sqlite_time("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_sqlite_time("1970-01-01 00:00:02"), Some(2_000_000));
        assert_eq!(parse_sqlite_time("nope"), None);
    }
}
