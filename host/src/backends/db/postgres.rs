//! The Postgres backend: pools with a breaker, binding `Value`s and
//! decoding rows by column type, and the Postgres migrations.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgQueryResult, PgRow, PgValueFormat};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use std::sync::Arc;
use std::time::Duration;

use super::pg_conns::{Conns, Lease, PING_IF_IDLE_FOR};
use super::value::micros_to_datetime;
use super::value::{Budget, collect};
use super::{ACQUIRE_TIMEOUT, DbError, RowSet, Value};
use neo_ops_text::redact::for_log as redact_url;

pub(super) static PG_MASTER: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres/master");
pub(super) static PG_TENANT: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres/tenant");

/// A Postgres pool with a breaker: once the database has failed to answer,
/// statements fail at once for [`BREAKER_OPEN`] instead of each waiting out
/// the acquire timeout, so public routes answer 503 fast during an outage
/// (and for as long as [`PgHandle::probe`] finds it silent).
/// The readiness ping goes through regardless and closes it on success.
///
/// Statements and transactions run on [`Conns`] leases (no round trip to
/// hand a connection back); migrations and the host's own multi-step work
/// use the sqlx pool.
#[derive(Clone, Debug)]
pub struct PgHandle {
    pub(super) pool: PgPool,
    conns: Arc<Conns>,
    open_until_ms: Arc<std::sync::atomic::AtomicI64>,
    /// When the database last answered anything (ms since the epoch).
    answered_ms: Arc<std::sync::atomic::AtomicI64>,
    /// Whether a [`PgHandle::probe`] is running.
    probing: Arc<std::sync::atomic::AtomicBool>,
}

/// How long the server lets a connection sit idle inside a transaction.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// The server's own statement timeout, just under the host's
/// [`super::STATEMENT_TIMEOUT`]: the server stops a slow statement and the
/// host keeps the connection.
pub(super) const SERVER_STATEMENT_TIMEOUT: Duration =
    super::STATEMENT_TIMEOUT.saturating_sub(Duration::from_secs(1));

/// How long statements fail fast after the database failed to answer.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// How long a [`PgHandle::probe`] waits for each answer, and how often it asks.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Questions one [`PgHandle::probe`] asks at most (about a minute): the next
/// statement given up on starts another.
const PROBES: u32 = 30;

impl PgHandle {
    pub(super) fn new(pool: PgPool) -> Self {
        // The server gives up on a statement just before the host would: a
        // slow statement is then refused and its connection kept, instead of
        // left running on the server with its locks after the host dropped
        // the socket (and taken for an outage that opens the breaker).
        let server_limit = SERVER_STATEMENT_TIMEOUT;
        // And a connection left inside a transaction (nothing of the host's
        // does; a backstop) is ended by the server, its locks with it.
        let options = (*pool.connect_options()).clone().options([
            (
                "statement_timeout",
                format!("{}ms", server_limit.as_millis()),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", IDLE_IN_TRANSACTION.as_millis()),
            ),
        ]);
        let conns = Conns::new(options);
        Self {
            pool,
            conns,
            open_until_ms: Arc::default(),
            answered_ms: Arc::default(),
            probing: Arc::default(),
        }
    }

    /// A connection for one statement or transaction; see [`Lease::release`].
    pub async fn lease(&self) -> Result<Lease, DbError> {
        self.conns.lease().await
    }

    pub async fn close(&self) {
        self.conns.close().await;
        self.pool.close().await;
    }

    fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    pub(super) fn check(&self) -> Result<(), DbError> {
        let until = self
            .open_until_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if until > Self::now_ms() {
            return Err(DbError::Unavailable("database unavailable".into()));
        }
        Ok(())
    }

    /// Opens the breaker after the database failed to answer; closes it on
    /// any answer.
    pub(super) fn record<T>(&self, result: &Result<T, DbError>) {
        // A wait for a busy pool says nothing either way: the breaker stays
        // as it was (open, if a hung database is what keeps them busy).
        if matches!(result, Err(DbError::Busy(_))) {
            return;
        }
        let open = matches!(result, Err(DbError::Unavailable(_)));
        let until = if open {
            Self::now_ms() + BREAKER_OPEN.as_millis() as i64
        } else {
            self.answered_ms
                .store(Self::now_ms(), std::sync::atomic::Ordering::Relaxed);
            0
        };
        self.open_until_ms
            .store(until, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the database answers `SELECT 1` within `limit`, through the
    /// host's own pool (with every statement connection busy the database
    /// still answers). An answer closes the breaker an outage opened.
    pub(super) async fn ping(&self, limit: Duration) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(limit, ping).await {
            Ok(answered) => {
                let answered = answered.map(drop).map_err(DbError::from);
                self.record(&answered);
                answered.is_ok()
            }
            Err(_) => false,
        }
    }

    /// After a statement went unanswered until its caller stopped waiting.
    /// A slow statement is no outage, so that alone opens nothing: the
    /// database is asked for a new connection and a ping on it (one prober
    /// per pool, apart from the statements' connections, whose being busy
    /// says nothing), and while that goes unanswered the breaker stays open,
    /// so a database that hangs rather than refuses fails statements fast,
    /// as one that refuses does. An answer, to the probe or to anything else
    /// meanwhile, closes it and ends the probe; so do [`PROBES`] unanswered.
    pub(super) fn probe(&self) {
        use std::sync::atomic::Ordering;
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let handle = self.clone();
        tokio::spawn(async move {
            for n in 0..PROBES {
                if handle.conns.is_closed() {
                    break;
                }
                let asked = tokio::time::Instant::now();
                let asked_ms = Self::now_ms();
                let probe = tokio::time::timeout(PROBE_EVERY, handle.conns.probe()).await;
                if matches!(probe, Ok(Ok(())))
                    || handle.answered_ms.load(Ordering::Relaxed) >= asked_ms
                {
                    handle.record(&Ok(()));
                    if n > 0 {
                        tracing::info!("the database answers again");
                    }
                    break;
                }
                if n == 0 {
                    tracing::warn!(
                        "the database does not answer; statements fail at once until it does"
                    );
                }
                let until = Self::now_ms() + (PROBE_EVERY + BREAKER_OPEN).as_millis() as i64;
                handle.open_until_ms.store(until, Ordering::Relaxed);
                tokio::time::sleep_until(asked + PROBE_EVERY).await;
            }
            handle.probing.store(false, Ordering::Release);
        });
    }
}

impl std::ops::Deref for PgHandle {
    type Target = PgPool;
    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

/// A pool that connects now: the master, and a tenant being created.
pub(super) async fn pg_pool(url: &str) -> anyhow::Result<PgPool> {
    pool_options().connect(url).await.map_err(|e| {
        let message = format!("connecting to {}: {e}", redact_url(url));
        crate::backends::connect_error(message, passes_by_itself(&e))
    })
}

/// Whether a failed connect may succeed later with nothing changed: the
/// server is not there yet (refused, timed out: sqlx reports a refused
/// connect as the pool timing out; a proxy in front that takes the
/// connection and closes it reads as a protocol error), still starting or
/// stopping, or out of connection slots.
fn passes_by_itself(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            // cannot_connect_now, admin_shutdown, crash_shutdown,
            // too_many_connections
            matches!(
                db.code().as_deref(),
                Some("57P03" | "57P01" | "57P02" | "53300")
            )
        }
        _ => false,
    }
}

/// Whether a database holds tables but no record of neo-ops migrations:
/// someone else's, which creating a tenant must not migrate into.
pub(super) async fn foreign(pool: &PgPool) -> anyhow::Result<bool> {
    let (tables, migrated): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')), \
                to_regclass('public._sqlx_migrations') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(tables > 0 && !migrated)
}

/// A pool that connects on first use. A tenant's sqlx pool serves only
/// migrations (statements go through [`Conns`]); opened eagerly, every
/// tenant a nightly job touches would hold one more idle connection for
/// minutes, and fifty tenants would reach Postgres's default 100.
pub(super) fn pg_pool_lazy(url: &str) -> anyhow::Result<PgPool> {
    pool_options()
        .connect_lazy(url)
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", redact_url(url)))
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(super::pg_conns::MAX_CONNECTIONS as u32)
        .min_connections(0)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        // Bounds connecting too: a down database answers within this.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(super::pg_conns::IDLE_TIMEOUT)
}

/// Runs one statement on a lease, which goes back for reuse unless the
/// exchange broke off (the database did not answer it to the end).
pub(super) async fn pg_run_leased(
    mut lease: Lease,
    sql: &str,
    params: &[Value],
    budget: &mut Budget,
) -> Result<(u64, RowSet), DbError> {
    let result = pg_run(&mut *lease, sql, params, budget).await;
    if result.as_ref().err().is_none_or(|e| !exchange_broke(e)) {
        lease.release();
    }
    result
}

/// A transaction to run: opened with `begin`, stopped at `cut` (a plugin's
/// deadline) if given.
pub(super) struct Tx<'a> {
    pub begin: &'static str,
    pub cut: Option<super::Cut>,
    pub statements: &'a [(String, Vec<Value>)],
}

/// Runs a transaction's statements on a lease, then `then` in it too; one
/// that fails rolls it back before its error is returned. A deadline is
/// kept by the server, which stops a statement still running then (its
/// `statement_timeout`, set for this transaction only), and between
/// statements: either way the transaction rolls back and the connection
/// stays usable. The lease goes back for reuse only when the connection
/// ended outside a transaction, its exchange complete.
pub(super) async fn pg_transaction_leased<T>(
    mut lease: Lease,
    Tx {
        begin,
        cut,
        statements,
    }: Tx<'_>,
    budget: &mut Budget,
    then: impl AsyncFnOnce(super::InTransaction<'_>, &[(u64, RowSet)]) -> Result<T, DbError>,
) -> Result<(Vec<(u64, RowSet)>, T), DbError> {
    use sqlx::Connection;
    let mut out = Vec::with_capacity(statements.len());
    let mut cut = cut.map(ServerCut::new);
    // With the deadline's timeout in one round trip: a simple query.
    let begin = match &cut {
        Some(cut) => format!("{begin}; SET LOCAL statement_timeout = {}", cut.set_ms),
        None => begin.to_string(),
    };
    // A BEGIN that fails drops the lease, closing its connection: such a
    // connection is suspect, and keeping it would need the borrow `begin`
    // holds on the lease to end first.
    let mut tx = lease.begin_with(begin).await?;
    let mut done = Ok(());
    for (sql, params) in statements {
        if let Some(cut) = &mut cut
            && let Err(e) = cut.before(&mut tx).await
        {
            done = Err(e);
            break;
        }
        match pg_run(&mut *tx, sql, params, budget).await {
            Ok(result) => out.push(result),
            Err(e) => {
                done = Err(e);
                break;
            }
        }
    }
    // `then` (an audit record, behind the chain's lock) keeps the deadline
    // as the statements do.
    if done.is_ok()
        && let Some(cut) = &mut cut
    {
        done = cut.before(&mut tx).await;
    }
    let last = match done {
        Ok(()) => then(super::InTransaction::Pg(&mut tx), &out).await,
        Err(e) => Err(e),
    };
    let last = match last {
        Ok(last) => last,
        Err(e) => {
            // Dropped unreleased (closing its connection) unless the
            // rollback leaves it clean.
            if !exchange_broke(&e) && tx.rollback().await.is_ok() {
                lease.release();
            }
            // Cancelled by the server at the deadline (a read-only server's
            // refusal is busy too, but its session was not reused above).
            return Err(match (e, &cut) {
                (DbError::Busy(_), Some(cut)) if cut.reached() => cut.cut.missed(),
                (e, _) => e,
            });
        }
    };
    let committed = tx.commit().await.map_err(DbError::from);
    if committed.as_ref().err().is_none_or(|e| !exchange_broke(e)) {
        lease.release();
    }
    committed.map(|()| (out, last))
}

/// A [`super::Cut`] kept by the server inside a transaction: its
/// `statement_timeout` for this transaction only, set again, lower, before
/// a statement once the time left has run down below it by more than a
/// tenth or half a second (a round trip, paid only when statements are
/// slow next to the time left), so no statement runs much past the cut.
struct ServerCut {
    cut: super::Cut,
    /// The `statement_timeout` in force, in milliseconds.
    set_ms: u128,
}

/// The most a statement may run past the cut before its timeout is set
/// again: the host's limit is a second past the server's.
const SLACK_MS: u128 = 500;

impl ServerCut {
    fn new(cut: super::Cut) -> Self {
        let mut server = Self { cut, set_ms: 0 };
        server.set_ms = server.left_ms().max(1);
        server
    }

    fn left_ms(&self) -> u128 {
        self.cut
            .at
            .saturating_duration_since(tokio::time::Instant::now())
            .as_millis()
    }

    fn reached(&self) -> bool {
        self.left_ms() == 0
    }

    /// Before a statement: out of time, or the timeout brought down to what
    /// is left.
    async fn before(&mut self, conn: &mut sqlx::PgConnection) -> Result<(), DbError> {
        let left = self.left_ms();
        if left == 0 {
            return Err(self.cut.missed());
        }
        if self.set_ms > left + (left / 10).min(SLACK_MS) {
            let set = format!("SET LOCAL statement_timeout = {left}");
            sqlx::Executor::execute(conn, set.as_str()).await?;
            self.set_ms = left;
        }
        Ok(())
    }
}

/// Whether a statement that failed so may have left its exchange half-way
/// (a lost connection, a protocol error), or its session cannot serve a
/// write again (read-only: a new session reaches the new primary), so its
/// connection must not be reused. An answer, a refusal or a value that
/// failed to convert leave it complete.
pub(super) fn exchange_broke(e: &DbError) -> bool {
    match e {
        DbError::Unavailable(_) | DbError::Failed(_) => true,
        DbError::Busy(why) => why == super::value::READ_ONLY_NOW,
        _ => false,
    }
}

pub(super) async fn pg_run<'e, E>(
    ex: E,
    sql: &str,
    params: &[Value],
    budget: &mut Budget,
) -> Result<(u64, RowSet), DbError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let query = pg_query(sql, params)?;
    collect(
        ex.fetch_many(query),
        budget,
        PgQueryResult::rows_affected,
        pg_raw_size,
        pg_values,
    )
    .await
}

/// A row's bytes as they came off the wire.
fn pg_raw_size(row: &PgRow) -> usize {
    (0..row.len())
        .filter_map(|i| row.try_get_raw(i).ok())
        .filter(|v| !v.is_null())
        .map(|v| v.as_bytes().map_or(0, <[u8]>::len))
        .sum()
}

/// A NULL whose type Postgres infers from context (parameter type oid 0), so
/// one NULL value fits any column.
struct UntypedNull;

impl sqlx::Type<sqlx::Postgres> for UntypedNull {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// Parameters one Postgres statement can carry (the protocol counts them in 16 bits).
const MAX_PARAMS: usize = u16::MAX as usize;

pub(super) fn pg_query<'q>(
    sql: &'q str,
    params: &'q [Value],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, PgArguments>, DbError> {
    if params.len() > MAX_PARAMS {
        // sqlx would fail it as a protocol error, taken for an outage.
        return Err(DbError::Invalid(format!(
            "a statement with {} parameters; Postgres takes at most {MAX_PARAMS}",
            params.len()
        )));
    }
    let mut q = sqlx::query(sql);
    for v in params {
        q = match v {
            Value::Null => q.bind(UntypedNull),
            Value::Bool(b) => q.bind(*b),
            Value::Int(i) => q.bind(*i),
            Value::Float(f) => q.bind(*f),
            Value::Text(s) => q.bind(s.as_str()),
            Value::Bytes(b) => q.bind(b.as_slice()),
            Value::Timestamp(t) => q.bind(micros_to_datetime(*t)?),
            Value::Json(s) => {
                let json: serde_json::Value = serde_json::from_str(s).map_err(|e| {
                    DbError::Invalid(format!("json parameter is not valid JSON: {e}"))
                })?;
                q.bind(json)
            }
        };
    }
    Ok(q)
}

fn pg_values(row: &PgRow) -> Result<Vec<Value>, DbError> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, col)| pg_value(row, i, col.type_info().name()))
        .collect()
}

pub(super) fn pg_value(row: &PgRow, i: usize, ty: &str) -> Result<Value, DbError> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        "BOOL" => Value::Bool(row.try_get(i)?),
        "INT2" => Value::Int(row.try_get::<i16, _>(i)?.into()),
        "INT4" => Value::Int(row.try_get::<i32, _>(i)?.into()),
        "INT8" => Value::Int(row.try_get(i)?),
        "OID" => Value::Int(row.try_get::<sqlx::postgres::types::Oid, _>(i)?.0.into()),
        "FLOAT4" => Value::Float(row.try_get::<f32, _>(i)?.into()),
        "FLOAT8" => Value::Float(row.try_get(i)?),
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "CHAR" => Value::Text(row.try_get(i)?),
        "BYTEA" => Value::Bytes(row.try_get(i)?),
        "TIMESTAMPTZ" | "TIMESTAMP" => match binary(row, i)? {
            Some(raw) => Value::Timestamp(pg_timestamp(raw, i)?),
            None if ty == "TIMESTAMP" => Value::Timestamp(
                row.try_get::<NaiveDateTime, _>(i)?
                    .and_utc()
                    .timestamp_micros(),
            ),
            None => Value::Timestamp(row.try_get::<DateTime<Utc>, _>(i)?.timestamp_micros()),
        },
        "DATE" => Value::Text(match binary(row, i)? {
            Some(raw) => pg_date(raw, i)?.to_string(),
            None => row.try_get::<chrono::NaiveDate, _>(i)?.to_string(),
        }),
        "JSON" | "JSONB" => Value::Json(row.try_get::<serde_json::Value, _>(i)?.to_string()),
        "VOID" => Value::Null,
        other => {
            return Err(DbError::Invalid(format!(
                "column {i} has type {other}, which the db interface does not carry; cast it to text or a number"
            )));
        }
    })
}

/// A value's bytes when it came in binary format (as the prepared statements
/// here do), else `None`.
fn binary(row: &PgRow, i: usize) -> Result<Option<&[u8]>, DbError> {
    let raw = row.try_get_raw(i)?;
    if raw.format() != PgValueFormat::Binary {
        return Ok(None);
    }
    raw.as_bytes()
        .map(Some)
        .map_err(|e| DbError::Invalid(format!("column {i}: {e}")))
}

/// Postgres counts timestamps from 2000-01-01; the db interface from 1970.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A binary `timestamp`/`timestamptz` as microseconds since the Unix epoch.
/// Decoded here, not by sqlx, whose chrono conversion panics on `infinity`
/// and on dates past chrono's range (a plugin's query must not crash the host).
fn pg_timestamp(raw: &[u8], i: usize) -> Result<i64, DbError> {
    let micros = <[u8; 8]>::try_from(raw)
        .map(i64::from_be_bytes)
        .map_err(|_| DbError::Invalid(format!("column {i}: a timestamp of {} bytes", raw.len())))?;
    micros
        .checked_add(PG_EPOCH_MICROS)
        .filter(|_| micros != i64::MIN)
        .ok_or_else(|| {
            DbError::Invalid(format!(
                "column {i} holds an infinite or out-of-range timestamp, which the db interface does not carry; cast it to text"
            ))
        })
}

/// A binary `date`, checked the same way (`infinity`, or past chrono's range).
fn pg_date(raw: &[u8], i: usize) -> Result<chrono::NaiveDate, DbError> {
    let days = <[u8; 4]>::try_from(raw)
        .map(i32::from_be_bytes)
        .map_err(|_| DbError::Invalid(format!("column {i}: a date of {} bytes", raw.len())))?;
    chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(days.into())))
        .ok_or_else(|| {
            DbError::Invalid(format!(
                "column {i} holds a date out of range (or infinite); cast it to text"
            ))
        })
}
