//! The values, row sets and errors both database backends speak.

use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use sqlx::Either;

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

impl Value {
    /// Bytes this value takes in the host: its slot and the text or bytes it owns.
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::Text(s) | Value::Json(s) => s.len(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Reads one statement's results to their end: its rows converted by
/// `values` as they arrive and counted against a byte budget (shared by the
/// statements of a transaction), so a plugin cannot make the host hold more
/// than it could take in. Past the budget, or after a value that fails to
/// convert, the rest of the rows are read and dropped: the exchange always
/// runs to its end, which keeps the connection fit for reuse. `raw_size`
/// gives a row's size as it came off the wire, so a row already over the
/// budget is refused before it is converted (a copy, and for JSON a tree
/// several times its size).
pub(super) async fn collect<Done, R: sqlx::Row>(
    mut stream: BoxStream<'_, Result<Either<Done, R>, sqlx::Error>>,
    budget: &mut Budget,
    rows_affected: impl Fn(&Done) -> u64,
    raw_size: impl Fn(&R) -> usize,
    values: impl Fn(&R) -> Result<Vec<Value>, DbError>,
) -> Result<(u64, RowSet), DbError> {
    let mut collected = Collected::new(budget);
    while let Some(step) = stream.try_next().await? {
        match step {
            Either::Left(done) => collected.affected(rows_affected(&done)),
            Either::Right(row) if collected.wants_rows() => {
                if raw_size(&row) > collected.budget.left {
                    collected.over_budget();
                    continue;
                }
                let converted = values(&row);
                collected.push(&row, converted);
            }
            Either::Right(_) => {}
        }
    }
    collected.finish()
}

/// A statement's result as [`collect`] gathers it.
struct Collected<'b> {
    affected: u64,
    set: RowSet,
    budget: &'b mut Budget,
    failed: Option<DbError>,
}

/// Bytes of row data the statements of one call may still bring back.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limit: usize,
    left: usize,
    keep_rows: bool,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            left: limit,
            keep_rows: true,
        }
    }

    /// For the host's own statements, whose results it sizes itself.
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// For a statement whose rows nobody reads (`execute`): they are read
    /// and dropped, never held, so no result makes it fail.
    pub fn rows_dropped() -> Self {
        Self {
            keep_rows: false,
            ..Self::new(0)
        }
    }
}

impl<'b> Collected<'b> {
    fn new(budget: &'b mut Budget) -> Self {
        Self {
            affected: 0,
            set: RowSet::default(),
            budget,
            failed: None,
        }
    }

    fn affected(&mut self, n: u64) {
        self.affected += n;
    }

    /// Whether the next row is wanted (rows are kept, none failed, the
    /// budget holds).
    fn wants_rows(&self) -> bool {
        self.budget.keep_rows && self.failed.is_none()
    }

    /// Adds one row's values; the first row names the columns.
    fn push<R: sqlx::Row>(&mut self, row: &R, values: Result<Vec<Value>, DbError>) {
        let values = match values {
            Ok(v) => v,
            Err(e) => return self.fail(e),
        };
        let size =
            std::mem::size_of::<Vec<Value>>() + values.iter().map(Value::held_bytes).sum::<usize>();
        if size > self.budget.left {
            return self.over_budget();
        }
        self.budget.left -= size;
        if self.set.rows.is_empty() {
            self.set.columns = super::column_names(row);
        }
        self.set.rows.push(values);
    }

    fn over_budget(&mut self) {
        let limit = self.budget.limit;
        self.fail(DbError::Invalid(format!(
            "the result is over {limit} bytes, the most this plugin may take in \
             (its memory limit), so its rows were dropped; select fewer rows or \
             columns (outside a transaction, a change the statement made stands)"
        )));
    }

    fn fail(&mut self, e: DbError) {
        // What was gathered goes now, not when the last row has been read.
        self.set = RowSet::default();
        self.failed = Some(e);
    }

    fn finish(self) -> Result<(u64, RowSet), DbError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok((self.affected, self.set)),
        }
    }
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
    /// Every connection stayed in use past the wait: the database answers,
    /// it is busy. Unavailable to the caller, but not an outage.
    #[error("{0}")]
    Busy(String),
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
            sqlx::Error::Database(d) if let Some(e) = d.code().as_deref().and_then(transient) => e,
            sqlx::Error::Database(d) if session_ended(d.as_ref()) => {
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
            sqlx::Error::InvalidArgument(why) => DbError::Invalid(why.clone()),
            sqlx::Error::ColumnDecode { index, source } => {
                DbError::Invalid(format!("cannot decode column {index}: {source}"))
            }
            _ => DbError::Rejected(e.to_string()),
        }
    }
}

/// What a write to a read-only server (SQLSTATE 25006) is told. Its session
/// stays read-only (a primary demoted in a failover keeps its sessions), so
/// the connection is not reused ([`super::postgres::exchange_broke`]).
pub(super) const READ_ONLY_NOW: &str =
    "the database is read-only for now (a standby, or a primary being failed over); try again";

/// Errors that say nothing is wrong with the statement, only that it met
/// other work: worth trying again, so not the plugin's `invalid`. By
/// SQLSTATE (Postgres) or result code (SQLite).
fn transient(code: &str) -> Option<DbError> {
    match code {
        // serialization_failure, deadlock_detected, lock_not_available: Busy,
        // not Conflict, which plugins read as a duplicate key.
        "40001" | "40P01" | "55P03" => Some(DbError::Busy(
            "the statement met a concurrent transaction (serialization failure, deadlock \
             or a lock not available); try again"
                .into(),
        )),
        // SQLITE_BUSY and its extended codes, SQLITE_LOCKED
        "5" | "261" | "517" | "6" | "262" => Some(DbError::Busy(
            "the database is locked by another writer; try again".into(),
        )),
        // query_canceled: the server's statement timeout (the host cancels
        // no statement this way), on a database busy with other work.
        "57014" => Some(DbError::Busy(
            "the statement ran past the database's statement timeout; try again".into(),
        )),
        // read_only_sql_transaction from a server that is read-only now (a
        // primary demoted in a failover, a pooler still sending to it, an
        // operator's maintenance switch): a write fits the next primary.
        "25006" => Some(DbError::Busy(READ_ONLY_NOW.into())),
        // io_error: the server could not read or write its own files.
        "58030" => Some(DbError::Busy(
            "the database could not read or write its files (SQLSTATE 58030); try again".into(),
        )),
        // insufficient_resources: disk full, out of memory, too many
        // connections. The database's state, not the statement's fault
        // (53400, a configuration limit such as temp_file_limit, is the
        // statement's own).
        c if c.starts_with("53") && c.len() == 5 && c != "53400" => Some(DbError::Busy(format!(
            "the database is short of resources (SQLSTATE {c}); try again"
        ))),
        // SQLITE_IOERR and SQLITE_FULL, with their extended codes (SQLite's
        // codes are numbers of at most four digits, SQLSTATEs five
        // characters), but not the I/O errors that say the file is corrupt
        // (SQLITE_IOERR_DATA, SQLITE_IOERR_CORRUPTFS): no retry mends those.
        c if c.len() < 5
            && c.parse::<u32>()
                .is_ok_and(|n| matches!(n & 0xff, 10 | 13) && !matches!(n, 8202 | 8458)) =>
        {
            Some(DbError::Busy(format!(
                "the database could not read or write its file (SQLite code {c}); try again"
            )))
        }
        _ => None,
    }
}

/// Whether a database error says the database went away, not that it
/// refused: a connection exception (08xxx) or a shutdown (57P0x) that ended
/// the session (severity FATAL or PANIC). The same codes at severity ERROR
/// are a statement's own (a plugin can raise any SQLSTATE): taken for an
/// outage, they would open the breaker for everyone.
fn session_ended(d: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    d.code()
        .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0"))
        && d.try_downcast_ref::<PgDatabaseError>()
            .is_none_or(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic))
}

/// A timestamp parameter (microseconds since the Unix epoch) as a date-time,
/// refused as invalid past chrono's range on every backend.
pub(super) fn micros_to_datetime(micros: i64) -> Result<DateTime<Utc>, DbError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| DbError::Invalid(format!("timestamp {micros} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_locks_timeouts_and_full_disks_are_worth_a_retry() {
        let retried = [
            "40001", "40P01", "55P03", "57014", "25006", "58030", "53100", "53200", "53300", "5",
            "517", "6", "10", "13", "266", "3338",
        ];
        for code in retried {
            assert!(matches!(transient(code), Some(DbError::Busy(_))), "{code}");
        }
        // A statement's own faults stay the database's refusal; so does an
        // SQLSTATE that happens to look like an SQLite I/O code.
        for code in [
            "42601", "22012", "23502", "57P01", "53400", "25P02", "58P01", "1", "19", "2067",
            "8202", "8458", "10010",
        ] {
            assert!(transient(code).is_none(), "{code}");
        }
    }
}
