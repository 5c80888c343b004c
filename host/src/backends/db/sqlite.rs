//! The embedded SQLite backend: a file per database under the data dir,
//! binding `Value`s and decoding rows by declared type, and the SQLite
//! migrations. Timestamps are fixed-width RFC 3339 text, so text order is
//! time order.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteRow,
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
    if create {
        // The owner's alone (its journal files take its mode): SQLite would
        // make it readable by every local user.
        crate::private_fs::create_private_file(&path)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    }
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

/// Opens the database file at `path` to read only (a dry run): nothing is
/// created, and its journal mode is left as it is.
pub(super) async fn sqlite_pool_to_read(path: PathBuf) -> anyhow::Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|e| anyhow::anyhow!("opening {} to read: {e}", path.display()))
}

/// A database in memory on one connection that is never closed while the
/// pool lives (each connection to `:memory:` is a database of its own).
pub(super) async fn sqlite_pool_in_memory() -> anyhow::Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .in_memory(true)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(opts)
        .await
        .map_err(|e| anyhow::anyhow!("opening a database in memory: {e}"))
}

/// SQLite virtual-machine steps between looks at the clock (a look costs
/// next to nothing; a step is well under a microsecond).
const STEPS_PER_LOOK: i32 = 10_000;

/// How long putting a connection back in order may take before it is
/// closed instead of going back to the pool.
const TIDY_WITHIN: Duration = Duration::from_secs(5);

/// Runs `work` on a connection of `pool` that SQLite itself stops at
/// `deadline`. sqlx steps SQLite on a thread of its own and cannot cut a
/// statement short: a future given up on leaves a runaway statement (a
/// recursive CTE with no end) running, its thread busy and its pool slot
/// taken for good, and eight of them wedge the database. A progress
/// handler interrupts it instead (SQLite rolls the statement back), and is
/// removed before the connection goes back to the pool. A connection not
/// put back in order is closed instead: the work was given up on (the
/// handler still set), the deadline came (an interrupted write inside a
/// transaction ends it in SQLite but not in sqlx, which would then refuse
/// every later transaction on it), or a transaction is still open.
pub(super) async fn within_deadline<T>(
    pool: &SqlitePool,
    deadline: tokio::time::Instant,
    work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let conn = tokio::time::timeout_at(deadline, pool.acquire())
        .await
        .map_err(|_| super::timed_out())??;
    let mut held = Tidied {
        conn,
        in_order: false,
    };
    let stop_at = deadline.into_std();
    held.conn
        .lock_handle()
        .await?
        .set_progress_handler(STEPS_PER_LOOK, move || std::time::Instant::now() < stop_at);
    // A little past the deadline: the interrupt ends the statement first,
    // and what it ended with is the deadline, not the interruption.
    let result = tokio::time::timeout_at(deadline + Duration::from_secs(1), work(&mut held.conn))
        .await
        .unwrap_or_else(|_| Err(super::timed_out()));
    let reached = tokio::time::Instant::now() >= deadline;
    // Behind whatever the work left queued (a rollback), so what it says
    // of the transaction is after that.
    let tidied = match tokio::time::timeout(TIDY_WITHIN, held.conn.lock_handle()).await {
        Ok(Ok(mut handle)) => {
            handle.remove_progress_handler();
            true
        }
        _ => false,
    };
    held.in_order = tidied && !reached && !sqlx::Connection::is_in_transaction(&*held.conn);
    match reached {
        true => result.map_err(|_| super::timed_out()),
        false => result,
    }
}

/// A connection [`within_deadline`] lends out: closed rather than put back
/// in the pool unless it was seen in order.
struct Tidied {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    in_order: bool,
}

impl Drop for Tidied {
    fn drop(&mut self) {
        if !self.in_order {
            self.conn.close_on_drop();
        }
    }
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
    if let Some(zero) = zero_parameter(sql) {
        // sqlx counts from 1 and panics its worker thread on `$0`, ending
        // the statement as if it had succeeded with no rows.
        return Err(DbError::Invalid(format!(
            "no parameter {zero}: parameters count from $1"
        )));
    }
    let steps = ex
        .fetch_many(lite_query(sql, params)?)
        .map_err(|e| match e {
            // sqlx binds `$N` and `?N` only: a parameter named otherwise is the
            // statement's fault, not an outage.
            sqlx::Error::Protocol(why) if why.contains("parameter") => {
                sqlx::Error::InvalidArgument(why)
            }
            e => e,
        });
    collect(
        Box::pin(steps),
        budget,
        SqliteQueryResult::rows_affected,
        // Measured before the values are copied out: a row of a gigabyte
        // blob is refused without a third copy of it.
        raw_size,
        lite_values,
    )
    .await
}

/// The first `$0` (or `$00`…) of `sql` outside literals, quoted names and
/// comments, as SQLite reads them.
fn zero_parameter(sql: &str) -> Option<&str> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let skip_to = |from: usize, end: &[u8]| {
            b[from..]
                .windows(end.len())
                .position(|w| w == end)
                .map_or(b.len(), |n| from + n + end.len())
        };
        i = match b[i] {
            q @ (b'\'' | b'"' | b'`') => skip_to(i + 1, &[q]),
            b'[' => skip_to(i + 1, b"]"),
            b'-' if b.get(i + 1) == Some(&b'-') => skip_to(i + 2, b"\n"),
            b'/' if b.get(i + 1) == Some(&b'*') => skip_to(i + 2, b"*/"),
            // Part of a name (`a$0`), not a parameter.
            b'$' if i > 0
                && (b[i - 1].is_ascii_alphanumeric()
                    || matches!(b[i - 1], b'_' | b'$')
                    || b[i - 1] >= 0x80) =>
            {
                i + 1
            }
            b'$' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let name = &sql[i..i + 1 + digits];
                if digits > 0 && name[1..].bytes().all(|c| c == b'0') {
                    return Some(name);
                }
                i + 1 + digits
            }
            _ => i + 1,
        };
    }
    None
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

/// A row's size as SQLite holds it: its text and blobs read in place, and
/// a number's eight bytes.
fn raw_size(row: &SqliteRow) -> usize {
    (0..row.len())
        .map(|i| match row.try_get_raw(i) {
            Ok(v) if matches!(v.type_info().name(), "TEXT" | "BLOB") => {
                row.try_get_unchecked::<&[u8], _>(i).map_or(0, <[u8]>::len)
            }
            _ => 8,
        })
        .sum()
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

    #[tokio::test]
    async fn a_rows_size_is_read_in_place() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let row: SqliteRow =
            sqlx::query("SELECT randomblob(1000) AS b, 'abc' AS t, 5 AS i, NULL AS n")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(raw_size(&row), 1000 + 3 + 8 + 8);
        let values = lite_values(&row).unwrap();
        assert!(matches!(&values[0], Value::Bytes(b) if b.len() == 1000));
        assert_eq!(values[1], Value::Text("abc".into()));
        assert_eq!(values[2], Value::Int(5));
        pool.close().await;
    }

    #[test]
    fn a_zero_parameter_is_found_outside_literals() {
        assert_eq!(
            zero_parameter("UPDATE t SET a = 1 WHERE id = $0"),
            Some("$0")
        );
        assert_eq!(zero_parameter("SELECT $1, $00"), Some("$00"));
        for fine in [
            "SELECT $1, $10, $20",
            "SELECT '$0' AS s, \"$0\" AS t, [$0] AS u, `$0` AS v",
            "SELECT 1 -- $0\n",
            "SELECT /* $0 */ 1",
            "SELECT 'unclosed $0",
            "SELECT $",
            "SELECT a$0, b_$00 FROM t",
        ] {
            assert_eq!(zero_parameter(fine), None, "{fine}");
        }
    }

    #[test]
    fn sqlite_times_parse_both_forms() {
        assert_eq!(parse_sqlite_time("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_sqlite_time("1970-01-01 00:00:02"), Some(2_000_000));
        assert_eq!(parse_sqlite_time("nope"), None);
    }
}
