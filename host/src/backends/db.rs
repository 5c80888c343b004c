//! Databases: Postgres (master + one database per tenant from the DSN
//! template) or embedded SQLite files under the data dir. Both run the same
//! migrations and speak the same portable SQL with `$n` placeholders.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use futures::TryStreamExt;
use sqlx::Either;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

use crate::settings::Settings;
use neo_ops_text::redact::for_log as redact_url;

static PG_MASTER: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres/master");
static PG_TENANT: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres/tenant");
static LITE_MASTER: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite/master");
static LITE_TENANT: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite/tenant");

/// Every statement is bounded in time, so a plugin cannot hang on the database.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

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
/// How long taking a pooled Postgres connection (or opening one) may take.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a readiness ping may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

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
            sqlx::Error::Database(d) => DbError::Rejected(d.message().to_string()),
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed => DbError::Unavailable("database unavailable".into()),
            sqlx::Error::ColumnDecode { index, source } => {
                DbError::Invalid(format!("cannot decode column {index}: {source}"))
            }
            _ => DbError::Rejected(e.to_string()),
        }
    }
}

/// Tenant names double as database-name parts: keep them tame.
pub fn valid_tenant_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One connection pool, either backend.
#[derive(Clone, Debug)]
pub enum Pool {
    Pg(PgHandle),
    Sqlite(SqlitePool),
}

/// A Postgres pool with a breaker: once the database has failed to answer,
/// statements fail at once for [`BREAKER_OPEN`] instead of each waiting out
/// the acquire timeout, so public routes answer 503 fast during an outage.
/// The readiness ping goes through regardless and closes it on success.
#[derive(Clone, Debug)]
pub struct PgHandle {
    pool: PgPool,
    open_until_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// How long statements fail fast after the database failed to answer.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

impl PgHandle {
    fn new(pool: PgPool) -> Self {
        Self {
            pool,
            open_until_ms: Arc::default(),
        }
    }

    fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn check(&self) -> Result<(), DbError> {
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
    fn record<T>(&self, result: &Result<T, DbError>) {
        let open = matches!(result, Err(DbError::Unavailable(_)));
        let until = if open {
            Self::now_ms() + BREAKER_OPEN.as_millis() as i64
        } else {
            0
        };
        self.open_until_ms
            .store(until, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::ops::Deref for PgHandle {
    type Target = PgPool;
    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

enum Kind {
    Postgres { template: String },
    Sqlite { dir: PathBuf },
}

/// The master database and lazily opened tenant databases.
pub struct Databases {
    master: Pool,
    kind: Kind,
    tenants: RwLock<HashMap<String, Pool>>,
}

impl Databases {
    /// Connects to the master database and migrates it.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        let (master, kind) = match (
            &settings.postgres_master_url,
            &settings.postgres_tenant_dsn_template,
        ) {
            (Some(url), Some(template)) => {
                let pool = pg_pool(url).await?;
                PG_MASTER.run(&pool).await.map_err(|e| {
                    anyhow::anyhow!("migrating master database {}: {e}", redact_url(url))
                })?;
                (
                    Pool::Pg(PgHandle::new(pool)),
                    Kind::Postgres {
                        template: template.clone(),
                    },
                )
            }
            _ => {
                let dir = settings.data_dir.join("db");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                let pool = sqlite_pool(dir.join("master.sqlite")).await?;
                LITE_MASTER
                    .run(&pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("migrating embedded master database: {e}"))?;
                (Pool::Sqlite(pool), Kind::Sqlite { dir })
            }
        };
        Ok(Arc::new(Self {
            master,
            kind,
            tenants: RwLock::new(HashMap::new()),
        }))
    }

    pub fn master(&self) -> &Pool {
        &self.master
    }

    /// Newest migration version this build carries: (master, tenant).
    pub fn expected_schema(&self) -> (i64, i64) {
        let newest = |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).max().unwrap_or(0);
        match self.kind {
            Kind::Postgres { .. } => (newest(&PG_MASTER), newest(&PG_TENANT)),
            Kind::Sqlite { .. } => (newest(&LITE_MASTER), newest(&LITE_TENANT)),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.kind {
            Kind::Postgres { .. } => "postgres",
            Kind::Sqlite { .. } => "sqlite",
        }
    }

    /// Whether a live tenant of that name is registered in the master database.
    pub async fn tenant_exists(&self, name: &str) -> Result<bool, DbError> {
        if !valid_tenant_name(name) {
            return Ok(false);
        }
        let rows = self
            .master
            .query(
                "SELECT 1 AS one FROM tenants WHERE name = $1 AND deleted_at IS NULL",
                &[Value::Text(name.into())],
            )
            .await?;
        Ok(!rows.rows.is_empty())
    }

    /// The pool of a registered tenant, opened on first use.
    pub async fn tenant(&self, name: &str) -> Result<Pool, DbError> {
        if let Some(p) = self.tenants.read().await.get(name) {
            return Ok(p.clone());
        }
        if !self.tenant_exists(name).await? {
            return Err(DbError::NotFound(format!("tenant \"{name}\" not found")));
        }
        let pool = self.open_tenant(name).await?;
        self.tenants
            .write()
            .await
            .insert(name.to_string(), pool.clone());
        Ok(pool)
    }

    async fn open_tenant(&self, name: &str) -> Result<Pool, DbError> {
        let unavailable = |e: anyhow::Error| {
            tracing::warn!(tenant = name, error = %e, "opening tenant database failed");
            DbError::Unavailable(format!("tenant \"{name}\" database unavailable"))
        };
        match &self.kind {
            Kind::Postgres { template } => Ok(Pool::Pg(PgHandle::new(
                pg_pool(&template.replace("{tenant}", name))
                    .await
                    .map_err(unavailable)?,
            ))),
            Kind::Sqlite { dir } => Ok(Pool::Sqlite(
                sqlite_pool(dir.join(format!("tenant-{name}.sqlite")))
                    .await
                    .map_err(unavailable)?,
            )),
        }
    }

    /// Creates a tenant: its database (migrated) and then its master row, so a
    /// tenant is never registered without a usable database.
    pub async fn create_tenant(&self, name: &str, display_name: &str) -> anyhow::Result<()> {
        if !valid_tenant_name(name) {
            anyhow::bail!(
                "bad tenant name \"{name}\" (lowercase letters, digits, '_' and '-', starting with a letter, at most 48)"
            );
        }
        if self.tenant_exists(name).await? {
            anyhow::bail!("tenant \"{name}\" already exists");
        }
        match &self.kind {
            Kind::Postgres { template } => {
                let dsn = template.replace("{tenant}", name);
                let db_name = database_name(&dsn).ok_or_else(|| {
                    anyhow::anyhow!("cannot find a database name in the tenant DSN template")
                })?;
                let Pool::Pg(master) = &self.master else {
                    unreachable!()
                };
                let master: &PgPool = master;
                let exists: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                        .bind(&db_name)
                        .fetch_optional(master)
                        .await?;
                if exists.is_none() {
                    let quoted = db_name.replace('"', "\"\"");
                    sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
                        .execute(master)
                        .await
                        .map_err(|e| anyhow::anyhow!("creating database \"{db_name}\": {e}"))?;
                }
                let pool = pg_pool(&dsn).await?;
                PG_TENANT
                    .run(&pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("migrating tenant \"{name}\": {e}"))?;
                pool.close().await;
            }
            Kind::Sqlite { dir } => {
                let pool = sqlite_pool(dir.join(format!("tenant-{name}.sqlite"))).await?;
                LITE_TENANT
                    .run(&pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("migrating tenant \"{name}\": {e}"))?;
                pool.close().await;
            }
        }
        self.master
            .execute(
                "INSERT INTO tenants (name, display_name) VALUES ($1, $2)",
                &[Value::Text(name.into()), Value::Text(display_name.into())],
            )
            .await?;
        Ok(())
    }

    /// Applies pending tenant migrations to every registered tenant.
    pub async fn migrate_tenants(&self) -> anyhow::Result<usize> {
        let rows = self
            .master
            .query(
                "SELECT name FROM tenants WHERE deleted_at IS NULL ORDER BY name",
                &[],
            )
            .await?;
        let mut n = 0;
        for row in rows.rows {
            if let Some(Value::Text(name)) = row.first() {
                match self.tenant(name).await? {
                    Pool::Pg(p) => PG_TENANT.run(&p.pool).await?,
                    Pool::Sqlite(p) => LITE_TENANT.run(&p).await?,
                }
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn close(&self) {
        self.master.close().await;
        for p in self.tenants.read().await.values() {
            p.close().await;
        }
    }
}

/// The database name (last path segment) of a Postgres URL.
fn database_name(dsn: &str) -> Option<String> {
    let after_scheme = dsn.split_once("://")?.1;
    let path = after_scheme.split_once('/')?.1;
    let name = path.split(['?', '#']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

async fn pg_pool(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(16)
        .min_connections(0)
        // Bounds connecting too: a down database answers within this.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Duration::from_secs(300))
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", redact_url(url)))
}

async fn sqlite_pool(path: PathBuf) -> anyhow::Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
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

async fn bounded<T>(fut: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(DbError::Unavailable("statement timed out".into())))
}

impl Pool {
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, DbError> {
        Ok(self.run(sql, params).await?.1)
    }

    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        Ok(self.run(sql, params).await?.0)
    }

    /// Runs one statement: rows affected and the rows it returned.
    pub async fn run(&self, sql: &str, params: &[Value]) -> Result<(u64, RowSet), DbError> {
        if let Pool::Pg(p) = self {
            p.check()?;
        }
        self.run_unguarded(sql, params).await
    }

    /// [`Pool::run`] past the breaker (which it updates): the readiness probe.
    async fn run_unguarded(&self, sql: &str, params: &[Value]) -> Result<(u64, RowSet), DbError> {
        bounded(async {
            match self {
                Pool::Pg(p) => {
                    let result = pg_run(&p.pool, sql, params).await;
                    p.record(&result);
                    result
                }
                Pool::Sqlite(p) => lite_run(p, sql, params).await,
            }
        })
        .await
    }

    /// Runs every statement in one transaction; any failure rolls all back.
    pub async fn transaction(
        &self,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Vec<(u64, RowSet)>, DbError> {
        bounded(async {
            let mut out = Vec::with_capacity(statements.len());
            match self {
                Pool::Pg(p) => {
                    p.check()?;
                    let begun = p.pool.begin().await.map_err(DbError::from);
                    p.record(&begun);
                    let mut tx = begun?;
                    for (sql, params) in statements {
                        out.push(pg_run(&mut *tx, sql, params).await?);
                    }
                    tx.commit().await?;
                }
                Pool::Sqlite(p) => {
                    let mut tx = p.begin().await?;
                    for (sql, params) in statements {
                        out.push(lite_run(&mut *tx, sql, params).await?);
                    }
                    tx.commit().await?;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Whether the database answers within [`PING_TIMEOUT`] (readiness).
    pub async fn ping(&self) -> bool {
        let probe = self.run_unguarded("SELECT 1 AS one", &[]);
        matches!(tokio::time::timeout(PING_TIMEOUT, probe).await, Ok(Ok(_)))
    }

    pub async fn close(&self) {
        match self {
            Pool::Pg(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

async fn pg_run<'e, E>(ex: E, sql: &str, params: &[Value]) -> Result<(u64, RowSet), DbError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let query = pg_query(sql, params)?;
    let mut stream = ex.fetch_many(query);
    let (mut affected, mut rows) = (0, Vec::new());
    while let Some(step) = stream.try_next().await? {
        match step {
            Either::Left(done) => affected += done.rows_affected(),
            Either::Right(row) => rows.push(row),
        }
    }
    Ok((affected, pg_rows(rows)?))
}

async fn lite_run<'e, E>(ex: E, sql: &str, params: &[Value]) -> Result<(u64, RowSet), DbError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let mut stream = ex.fetch_many(lite_query(sql, params));
    let (mut affected, mut rows) = (0, Vec::new());
    while let Some(step) = stream.try_next().await? {
        match step {
            Either::Left(done) => affected += done.rows_affected(),
            Either::Right(row) => rows.push(row),
        }
    }
    Ok((affected, lite_rows(rows)?))
}

// ---- Postgres binding and decoding -----------------------------------------

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

fn micros_to_datetime(micros: i64) -> Result<DateTime<Utc>, DbError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| DbError::Invalid(format!("timestamp {micros} is out of range")))
}

fn pg_query<'q>(
    sql: &'q str,
    params: &'q [Value],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, PgArguments>, DbError> {
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

fn pg_rows(rows: Vec<PgRow>) -> Result<RowSet, DbError> {
    let Some(first) = rows.first() else {
        return Ok(RowSet::default());
    };
    let columns: Vec<String> = first
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, col) in row.columns().iter().enumerate() {
            values.push(pg_value(row, i, col.type_info().name())?);
        }
        out.push(values);
    }
    Ok(RowSet { columns, rows: out })
}

fn pg_value(row: &PgRow, i: usize, ty: &str) -> Result<Value, DbError> {
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
        "TIMESTAMPTZ" => Value::Timestamp(row.try_get::<DateTime<Utc>, _>(i)?.timestamp_micros()),
        "TIMESTAMP" => Value::Timestamp(
            row.try_get::<NaiveDateTime, _>(i)?
                .and_utc()
                .timestamp_micros(),
        ),
        "DATE" => Value::Text(row.try_get::<chrono::NaiveDate, _>(i)?.to_string()),
        "JSON" | "JSONB" => Value::Json(row.try_get::<serde_json::Value, _>(i)?.to_string()),
        "VOID" => Value::Null,
        other => {
            return Err(DbError::Invalid(format!(
                "column {i} has type {other}, which the db interface does not carry; cast it to text or a number"
            )));
        }
    })
}

// ---- SQLite binding and decoding -------------------------------------------

/// Fixed-width UTC text, so SQLite's text comparison is chronological.
pub fn sqlite_timestamp(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn lite_query<'q>(
    sql: &'q str,
    params: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>> {
    let mut q = sqlx::query(sql);
    for v in params {
        q = match v {
            Value::Null => q.bind(None::<i64>),
            Value::Bool(b) => q.bind(*b),
            Value::Int(i) => q.bind(*i),
            Value::Float(f) => q.bind(*f),
            Value::Text(s) | Value::Json(s) => q.bind(s.as_str()),
            Value::Bytes(b) => q.bind(b.as_slice()),
            Value::Timestamp(t) => q.bind(
                Utc.timestamp_micros(*t)
                    .single()
                    .map(sqlite_timestamp)
                    .unwrap_or_default(),
            ),
        };
    }
    q
}

fn lite_rows(rows: Vec<SqliteRow>) -> Result<RowSet, DbError> {
    let Some(first) = rows.first() else {
        return Ok(RowSet::default());
    };
    let columns: Vec<String> = first
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let declared: Vec<String> = first
        .columns()
        .iter()
        .map(|c| c.type_info().name().to_string())
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, decl) in declared.iter().enumerate() {
            values.push(lite_value(row, i, decl)?);
        }
        out.push(values);
    }
    Ok(RowSet { columns, rows: out })
}

fn lite_value(row: &SqliteRow, i: usize, declared: &str) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let storage = raw.type_info().name().to_string();
    Ok(match (declared, storage.as_str()) {
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
fn parse_sqlite_time(s: &str) -> Option<i64> {
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
    fn tenant_names() {
        assert!(valid_tenant_name("acme"));
        assert!(valid_tenant_name("acme_2-x"));
        assert!(!valid_tenant_name("Acme"));
        assert!(!valid_tenant_name("1acme"));
        assert!(!valid_tenant_name("a;drop"));
        assert!(!valid_tenant_name(""));
    }

    #[test]
    fn database_names_from_dsn() {
        assert_eq!(
            database_name("postgres://u:p@h:5432/neo_acme?sslmode=disable").as_deref(),
            Some("neo_acme")
        );
        assert_eq!(database_name("postgres://h:5432"), None);
    }

    #[test]
    fn sqlite_times_parse_both_forms() {
        assert_eq!(parse_sqlite_time("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_sqlite_time("1970-01-01 00:00:02"), Some(2_000_000));
        assert_eq!(parse_sqlite_time("nope"), None);
    }
}
