//! Databases: Postgres (master + one database per tenant from the DSN
//! template) or embedded SQLite files under the data dir. Both run the same
//! migrations and speak the same portable SQL with `$n` placeholders.

pub mod pending;
mod pg_conns;
mod postgres;
mod sqlite;
mod value;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

use crate::manifest::valid_tenant_name;
use crate::settings::Settings;
use neo_ops_text::redact::for_log as redact_url;
use postgres::{
    PG_MASTER, PG_TENANT, foreign, pg_pool, pg_pool_lazy, pg_run_leased, pg_transaction_leased,
};
pub(crate) use sqlite::lite_run;
use sqlite::{LITE_MASTER, LITE_TENANT, sqlite_pool, sqlite_pool_in_memory, sqlite_pool_to_read};

pub use pg_conns::MAX_CONNECTIONS;
pub use postgres::{BREAKER_OPEN, PgHandle};
pub use sqlite::sqlite_timestamp;
pub use value::{Budget, DbError, RowSet, Value};

/// Every statement is bounded in time, so a plugin cannot hang on the database.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long taking a pooled Postgres connection (or opening one) may take.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a readiness ping may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A tenant as `tenant list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantRow {
    pub name: String,
    pub display_name: String,
    pub plan: String,
    pub time_zone: String,
    pub owner_email: Option<String>,
    pub retention_days: i64,
}

/// Tenant fields to change (`None`: leave as it is).
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub owner_email: Option<String>,
    pub display_name: Option<String>,
    pub time_zone: Option<String>,
    pub retention_days: Option<i64>,
    pub plan: Option<String>,
}

impl TenantUpdate {
    pub fn is_empty(&self) -> bool {
        self.owner_email.is_none()
            && self.display_name.is_none()
            && self.time_zone.is_none()
            && self.retention_days.is_none()
            && self.plan.is_none()
    }
}

/// One connection pool, either backend.
#[derive(Clone, Debug)]
pub enum Pool {
    Pg(PgHandle),
    Sqlite(SqlitePool),
}

/// How [`Databases::open`] opens the master.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Migrated,
    ToRead,
}

enum Kind {
    Postgres { template: String },
    Sqlite { dir: PathBuf },
}

/// The master database and lazily opened tenant databases.
pub struct Databases {
    master: Pool,
    kind: Kind,
    tenants: RwLock<HashMap<String, OpenTenant>>,
    /// How long an open tenant is served before the master is asked again.
    recheck: Duration,
}

/// A tenant database in use, and when the master last said it is live.
struct OpenTenant {
    pool: Pool,
    checked: tokio::time::Instant,
}

impl Databases {
    /// Connects to the master database and migrates it.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        Self::open(settings, Open::Migrated).await
    }

    /// Connects to the master database as it is, to read only (`migrate
    /// --dry-run`): nothing migrated, nothing created, an embedded master's
    /// file opened read-only.
    pub async fn open_to_read(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        Self::open(settings, Open::ToRead).await
    }

    async fn open(settings: &Settings, how: Open) -> anyhow::Result<Arc<Self>> {
        let (master, kind) = match (
            &settings.postgres_master_url,
            &settings.postgres_tenant_dsn_template,
        ) {
            (Some(url), Some(template)) => {
                let pool = Pool::Pg(PgHandle::new(pg_pool(url).await?));
                if how == Open::Migrated {
                    let which = format!("master database {}", redact_url(url));
                    migrate_master(&pool, &which).await?;
                }
                let kind = Kind::Postgres {
                    template: template.clone(),
                };
                (pool, kind)
            }
            _ => {
                let master = embedded_master(&settings.data_dir);
                let dir = master.parent().expect("in the db dir").to_path_buf();
                let pool = match how {
                    Open::ToRead => Pool::Sqlite(sqlite_pool_to_read(master).await?),
                    Open::Migrated => {
                        crate::private_fs::create_private_dir(&dir)
                            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                        let pool = Pool::Sqlite(sqlite_pool(master, true).await?);
                        migrate_master(&pool, "embedded master database").await?;
                        pool
                    }
                };
                (pool, Kind::Sqlite { dir })
            }
        };
        Ok(Self::over(master, kind, settings.tenant_recheck))
    }

    /// An empty master held in memory, for a command that finds no
    /// embedded master and must not make one: migrated for one that reads
    /// (it reads nothing), not for preflight (whose checks then report a
    /// master with no schema).
    pub async fn empty(settings: &Settings, migrated: bool) -> anyhow::Result<Arc<Self>> {
        let pool = sqlite_pool_in_memory().await?;
        if migrated {
            LITE_MASTER
                .run(&pool)
                .await
                .map_err(|e| anyhow::anyhow!("migrating an in-memory master database: {e}"))?;
        }
        let master = embedded_master(&settings.data_dir);
        let dir = master.parent().expect("in the db dir").to_path_buf();
        Ok(Self::over(
            Pool::Sqlite(pool),
            Kind::Sqlite { dir },
            settings.tenant_recheck,
        ))
    }

    fn over(master: Pool, kind: Kind, recheck: Duration) -> Arc<Self> {
        Arc::new(Self {
            master,
            kind,
            tenants: RwLock::new(HashMap::new()),
            recheck,
        })
    }

    /// The databases of a command that reports on them (preflight) when
    /// `connect` found the Postgres master unreachable: a master that
    /// connects on first use, nothing migrated. Its statements fail until
    /// the server answers, so each check says what is wrong.
    pub fn unreached(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        let (Some(url), Some(template)) = (
            &settings.postgres_master_url,
            &settings.postgres_tenant_dsn_template,
        ) else {
            anyhow::bail!("the embedded database is never unreachable");
        };
        let kind = Kind::Postgres {
            template: template.clone(),
        };
        Ok(Self::over(
            Pool::Pg(PgHandle::new(pg_pool_lazy(url)?)),
            kind,
            settings.tenant_recheck,
        ))
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

    /// The live tenants, by name.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRow>, DbError> {
        let rows = self
            .master
            .query(
                "SELECT name, display_name, plan, time_zone, owner_email, pii_retention_days \
                 FROM tenants WHERE deleted_at IS NULL ORDER BY name",
                &[],
            )
            .await?;
        let text = |v: &Value| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        Ok(rows
            .rows
            .iter()
            .map(|r| TenantRow {
                name: text(&r[0]).unwrap_or_default(),
                display_name: text(&r[1]).unwrap_or_default(),
                plan: text(&r[2]).unwrap_or_default(),
                time_zone: text(&r[3]).unwrap_or_default(),
                owner_email: text(&r[4]),
                retention_days: match r[5] {
                    Value::Int(n) => n,
                    _ => 0,
                },
            })
            .collect())
    }

    /// Sets the given fields of a live tenant; an unknown tenant is an error
    /// naming it.
    pub async fn update_tenant(&self, name: &str, update: &TenantUpdate) -> Result<(), DbError> {
        let mut sets = Vec::new();
        let mut params = vec![Value::Text(name.to_string())];
        let mut set = |column: &str, value: Value| {
            params.push(value);
            sets.push(format!("{column} = ${}", params.len()));
        };
        if let Some(v) = &update.owner_email {
            set("owner_email", Value::Text(v.clone()));
        }
        if let Some(v) = &update.display_name {
            set("display_name", Value::Text(v.clone()));
        }
        if let Some(v) = &update.time_zone {
            set("time_zone", Value::Text(v.clone()));
        }
        if let Some(v) = update.retention_days {
            set("pii_retention_days", Value::Int(v));
        }
        if let Some(v) = &update.plan {
            set("plan", Value::Text(v.clone()));
        }
        if sets.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE tenants SET {} WHERE name = $1 AND deleted_at IS NULL",
            sets.join(", ")
        );
        match self.master.execute(&sql, &params).await? {
            0 => Err(DbError::NotFound(format!("tenant \"{name}\" not found"))),
            _ => Ok(()),
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
    /// Once open, it is served without asking the master again for
    /// [`Settings::tenant_recheck`]; then the master is asked once more,
    /// and a tenant deleted meanwhile (by the POS, by hand, through another
    /// replica) is closed here too. A master that cannot answer then does
    /// not stop an open tenant from being served.
    pub async fn tenant(&self, name: &str) -> Result<Pool, DbError> {
        let now = tokio::time::Instant::now();
        let open = self
            .tenants
            .read()
            .await
            .get(name)
            .map(|t| (t.pool.clone(), t.checked));
        match open {
            Some((pool, checked)) if now < checked + self.recheck => return Ok(pool),
            Some((pool, _)) => {
                // One caller asks; the others go on with the open pool.
                match self.tenants.write().await.get_mut(name) {
                    Some(t) if now >= t.checked + self.recheck => t.checked = now,
                    _ => return Ok(pool),
                }
                // Bounded: a slow master does not hold up a healthy tenant.
                let asked = tokio::time::timeout(PING_TIMEOUT, self.tenant_exists(name));
                let answer = asked.await.unwrap_or_else(|_| {
                    Err(DbError::Unavailable(format!(
                        "no answer within {PING_TIMEOUT:?}"
                    )))
                });
                return match answer {
                    Ok(false) => {
                        self.tenants.write().await.remove(name);
                        tracing::info!(
                            tenant = name,
                            "tenant deleted in the master: its database is closed here"
                        );
                        Err(not_found(name))
                    }
                    Ok(true) => Ok(pool),
                    Err(e) => {
                        tracing::warn!(tenant = name, error = %e, "could not ask the master whether the tenant is live; still serving it");
                        Ok(pool)
                    }
                };
            }
            None => {}
        }
        if !self.tenant_exists(name).await? {
            return Err(not_found(name));
        }
        let pool = self.open_tenant(name).await?;
        let checked = tokio::time::Instant::now();
        let open = OpenTenant {
            pool: pool.clone(),
            checked,
        };
        self.tenants.write().await.insert(name.to_string(), open);
        Ok(pool)
    }

    async fn open_tenant(&self, name: &str) -> Result<Pool, DbError> {
        let unavailable = |e: anyhow::Error| {
            tracing::warn!(tenant = name, error = %e, "opening tenant database failed");
            DbError::Unavailable(format!("tenant \"{name}\" database unavailable"))
        };
        match &self.kind {
            Kind::Postgres { template } => Ok(Pool::Pg(PgHandle::new(
                pg_pool_lazy(&template.replace("{tenant}", name)).map_err(unavailable)?,
            ))),
            Kind::Sqlite { dir } => Ok(Pool::Sqlite(
                sqlite_pool(tenant_file(dir, name), false)
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
        // Its database would get only this build's tenant migrations, which
        // the newer build serving the master does not apply on its own.
        let master_migrator = match &self.kind {
            Kind::Postgres { .. } => &PG_MASTER,
            Kind::Sqlite { .. } => &LITE_MASTER,
        };
        if let Some(version) = pending::ahead_of_this_build(&self.master, master_migrator).await {
            anyhow::bail!(
                "the master was migrated by a newer neo-ops (migration {version}): \
                 create tenant \"{name}\" with that neo-ops"
            );
        }
        match &self.kind {
            Kind::Postgres { template } => {
                let dsn = template.replace("{tenant}", name);
                let db_name = database_name(&dsn).ok_or_else(|| {
                    anyhow::anyhow!("cannot find a database name in the tenant DSN template")
                })?;
                // An existing database is taken over (a retry after a failed
                // create finds its own), but never one the server itself
                // relies on (every later CREATE DATABASE copies template1),
                // nor one holding another application's tables.
                if ["postgres", "template0", "template1"].contains(&db_name.as_str()) {
                    anyhow::bail!(
                        "tenant \"{name}\" would use the server's own database \"{db_name}\"; choose another name"
                    );
                }
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
                if exists.is_some() && foreign(&pool).await? {
                    pool.close().await;
                    anyhow::bail!(
                        "database \"{db_name}\" exists and holds tables that are not a neo-ops tenant's; \
                         it is left as it is: choose another tenant name or move that database"
                    );
                }
                PG_TENANT
                    .run(&pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("migrating tenant \"{name}\": {e}"))?;
                pool.close().await;
            }
            Kind::Sqlite { dir } => {
                let pool = sqlite_pool(tenant_file(dir, name), true).await?;
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

    /// Applies pending tenant migrations to every registered tenant. One
    /// that fails does not stop the rest: returns how many were migrated and,
    /// for each that failed, its name and why.
    pub async fn migrate_tenants(&self) -> anyhow::Result<(usize, Vec<(String, String)>)> {
        let (mut n, mut failed) = (0, Vec::new());
        for name in self.live_tenant_names().await? {
            // Opened for this alone and closed after: a pool per tenant
            // kept to the end would hold a connection each, past
            // Postgres's limit with a hundred tenants.
            let migrated: anyhow::Result<()> = async {
                let pool = self.open_tenant(&name).await?;
                let run = match &pool {
                    Pool::Pg(p) => PG_TENANT.run(&p.pool).await,
                    Pool::Sqlite(p) => LITE_TENANT.run(p).await,
                };
                pool.close().await;
                Ok(run?)
            }
            .await;
            match migrated {
                Ok(()) => n += 1,
                Err(e) => failed.push((name, format!("{e:#}"))),
            }
        }
        Ok((n, failed))
    }

    /// The live tenants' names, by name (read with the first master
    /// schema's columns only, so an unmigrated master answers too).
    async fn live_tenant_names(&self) -> Result<Vec<String>, DbError> {
        let rows = self
            .master
            .query(
                "SELECT name FROM tenants WHERE deleted_at IS NULL ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(|row| match row.into_iter().next() {
                Some(Value::Text(name)) => Some(name),
                _ => None,
            })
            .collect())
    }

    pub async fn close(&self) {
        self.master.close().await;
        for t in self.tenants.read().await.values() {
            t.pool.close().await;
        }
    }
}

/// Migrates the master (`which`, for messages), unless a newer neo-ops has
/// already taken it past this build, every one of this build's migrations
/// applied: then it is used as it stands, said in the log. A rolling
/// deploy's first new replica migrates; before, an older replica that
/// restarted refused the master ("previously applied but is missing") and
/// stayed down, and so did an older CLI.
async fn migrate_master(master: &Pool, which: &str) -> anyhow::Result<()> {
    let migrator = match master {
        Pool::Pg(_) => &PG_MASTER,
        Pool::Sqlite(_) => &LITE_MASTER,
    };
    if let Some(version) = pending::ahead_of_this_build(master, migrator).await {
        tracing::warn!(
            version,
            "the {which} was migrated by a newer neo-ops (migration {version}); \
             this build uses it as it stands"
        );
        return Ok(());
    }
    let run = match master {
        Pool::Pg(p) => migrator.run(&p.pool).await,
        Pool::Sqlite(p) => migrator.run(p).await,
    };
    run.map_err(|e| anyhow::anyhow!("migrating {which}: {e}"))
}

/// A tenant's embedded database file in the databases' directory.
fn tenant_file(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!("tenant-{name}.sqlite"))
}

/// The embedded master database's file under a data dir.
pub fn embedded_master(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("db").join("master.sqlite")
}

/// Whether `settings` name no master at all yet: no `POSTGRES_MASTER_URL`
/// and no embedded master in the data dir. A data dir this process may not
/// look into is an error, not "none": taken for none, a read would report
/// an empty database.
pub fn no_master_yet(settings: &Settings) -> anyhow::Result<bool> {
    if settings.postgres_master_url.is_some() {
        return Ok(false);
    }
    let master = embedded_master(&settings.data_dir);
    let exists = master
        .try_exists()
        .map_err(|e| anyhow::anyhow!("looking for {}: {e}", master.display()))?;
    Ok(!exists)
}

pub(crate) fn database_name(dsn: &str) -> Option<String> {
    let after_scheme = dsn.split_once("://")?.1;
    let path = after_scheme.split_once('/')?.1;
    let name = path.split(['?', '#']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The column names of a result set, from its first row.
fn column_names<R: sqlx::Row>(row: &R) -> Vec<String> {
    use sqlx::Column;
    row.columns().iter().map(|c| c.name().to_string()).collect()
}

async fn bounded<T>(fut: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

fn not_found(tenant: &str) -> DbError {
    DbError::NotFound(format!("tenant \"{tenant}\" not found"))
}

/// When a plugin's transaction is stopped if it has not committed: at the
/// plugin's deadline, or, when that is further off, before the host's own
/// 30 s limit would drop its connection mid-statement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cut {
    pub at: tokio::time::Instant,
    /// The plugin's deadline, not the host's limit.
    pub plugin: bool,
}

impl Cut {
    fn of(
        caller_deadline: Option<tokio::time::Instant>,
        now: tokio::time::Instant,
    ) -> Option<Self> {
        let host = now + postgres::SERVER_STATEMENT_TIMEOUT;
        caller_deadline.map(|d| Cut {
            at: d.min(host),
            plugin: d < host,
        })
    }

    /// The error of a transaction stopped at this cut: busy, nothing of it
    /// committed.
    pub fn missed(self) -> DbError {
        DbError::Busy(if self.plugin {
            "the transaction did not finish in the time the plugin had; nothing of it was committed"
                .into()
        } else {
            format!(
                "the transaction ran past the {} s a transaction may take; nothing of it was committed",
                postgres::SERVER_STATEMENT_TIMEOUT.as_secs()
            )
        })
    }
}

fn timed_out() -> DbError {
    DbError::Unavailable("statement timed out".into())
}

/// The connection of a transaction [`Pool::transaction_then`] holds open.
pub enum InTransaction<'c> {
    Pg(&'c mut sqlx::PgConnection),
    Sqlite(&'c mut sqlx::SqliteConnection),
}

impl Pool {
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, DbError> {
        Ok(self.run(sql, params).await?.1)
    }

    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut rows_dropped = Budget::rows_dropped();
        Ok(self.run_within(sql, params, &mut rows_dropped).await?.0)
    }

    /// Runs one statement: rows affected and the rows it returned.
    pub async fn run(&self, sql: &str, params: &[Value]) -> Result<(u64, RowSet), DbError> {
        self.run_within(sql, params, &mut Budget::unlimited()).await
    }

    /// [`Pool::run`] refused as invalid once its rows exceed `budget`.
    pub async fn run_within(
        &self,
        sql: &str,
        params: &[Value],
        budget: &mut Budget,
    ) -> Result<(u64, RowSet), DbError> {
        self.run_until(sql, params, budget, None).await
    }

    /// [`Pool::run_within`], given up on at `caller_deadline` when that
    /// comes before the statement timeout. A statement cut short so is
    /// [`DbError::Unavailable`] but opens no breaker by itself, since a slow
    /// statement is no outage: the database is probed instead
    /// ([`PgHandle::probe`]). Not on SQLite: a local file does not hang,
    /// and a write waiting for its lock would commit after being given up.
    pub async fn run_until(
        &self,
        sql: &str,
        params: &[Value],
        budget: &mut Budget,
        caller_deadline: Option<tokio::time::Instant>,
    ) -> Result<(u64, RowSet), DbError> {
        let limit = tokio::time::Instant::now() + STATEMENT_TIMEOUT;
        let cut_at = caller_deadline.map_or(limit, |d| d.min(limit));
        let cut_short = || {
            DbError::Unavailable(
                "the database did not answer in the time the plugin had; \
                 whether the statement took effect is unknown"
                    .into(),
            )
        };
        match self {
            Pool::Pg(p) => {
                p.check()?;
                let run = async { pg_run_leased(p.lease().await?, sql, params, budget).await };
                match tokio::time::timeout_at(cut_at, run).await {
                    Ok(result) => {
                        p.record(&result);
                        result
                    }
                    Err(_) if cut_at < limit => {
                        p.probe();
                        Err(cut_short())
                    }
                    // Recorded: a database that hangs (rather than
                    // refusing) opens the breaker too.
                    Err(_) => {
                        let result = Err(timed_out());
                        p.record(&result);
                        result
                    }
                }
            }
            // A plugin's statement, or one on its behalf: stopped by SQLite
            // itself at the limit (the host's own are its own code).
            Pool::Sqlite(p) if caller_deadline.is_some() => {
                sqlite::within_deadline(p, limit, async |conn| {
                    lite_run(conn, sql, params, budget).await
                })
                .await
            }
            Pool::Sqlite(p) => bounded(lite_run(p, sql, params, budget)).await,
        }
    }

    /// Runs every statement in one transaction; any failure rolls all back.
    pub async fn transaction(
        &self,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Vec<(u64, RowSet)>, DbError> {
        self.transaction_within(statements, &mut Budget::unlimited(), None)
            .await
    }

    /// [`Pool::transaction`], rolled back once its rows exceed `budget`, or
    /// when a statement is still running, or yet to start, at
    /// `caller_deadline` (a plugin's time): then it is [`DbError::Busy`],
    /// and nothing of it committed. The commit itself is never cut short,
    /// so whether it took effect is always known.
    pub async fn transaction_within(
        &self,
        statements: &[(String, Vec<Value>)],
        budget: &mut Budget,
        caller_deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<(u64, RowSet)>, DbError> {
        // At the database's own isolation level.
        let (out, ()) = self
            .transaction_begun(
                "BEGIN",
                statements,
                budget,
                caller_deadline,
                async |_, _| Ok(()),
            )
            .await?;
        Ok(out)
    }

    /// [`Pool::transaction_within`], with `then` run last inside the same
    /// transaction, given what the statements did: what it writes commits
    /// with them or not at all (the audit record of a change to the master).
    /// On Postgres the transaction reads committed data whatever the
    /// database's default, so each of `then`'s statements sees every commit
    /// before it (a lock it takes then means what it says); SQLite's write
    /// lock, held from the start, does as much.
    pub async fn transaction_then<T>(
        &self,
        statements: &[(String, Vec<Value>)],
        budget: &mut Budget,
        caller_deadline: Option<tokio::time::Instant>,
        then: impl AsyncFnOnce(InTransaction<'_>, &[(u64, RowSet)]) -> Result<T, DbError>,
    ) -> Result<(Vec<(u64, RowSet)>, T), DbError> {
        const READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
        self.transaction_begun(READ_COMMITTED, statements, budget, caller_deadline, then)
            .await
    }

    /// The transaction of [`Pool::transaction_then`], opened on Postgres
    /// with `begin`.
    async fn transaction_begun<T>(
        &self,
        begin: &'static str,
        statements: &[(String, Vec<Value>)],
        budget: &mut Budget,
        caller_deadline: Option<tokio::time::Instant>,
        then: impl AsyncFnOnce(InTransaction<'_>, &[(u64, RowSet)]) -> Result<T, DbError>,
    ) -> Result<(Vec<(u64, RowSet)>, T), DbError> {
        let now = tokio::time::Instant::now();
        let limit = now + STATEMENT_TIMEOUT;
        let cut = Cut::of(caller_deadline, now);
        if let Some(cut) = cut.filter(|c| now >= c.at) {
            return Err(cut.missed());
        }
        match self {
            Pool::Pg(p) => {
                bounded(async {
                    p.check()?;
                    let leased = p.lease().await;
                    p.record(&leased);
                    let tx = postgres::Tx {
                        begin,
                        cut,
                        statements,
                    };
                    pg_transaction_leased(leased?, tx, budget, then).await
                })
                .await
            }
            // SQLite itself interrupts a statement at the deadline. A commit
            // under way then may still land (sqlx's thread finishes it), so
            // only an error before it is said to have committed nothing.
            Pool::Sqlite(p) => {
                let committing = std::sync::atomic::AtomicBool::new(false);
                let stop_at = cut.map_or(limit, |c| c.at);
                let work = sqlite::within_deadline(p, stop_at, async |conn| {
                    // The file's write lock first (waiting out the busy
                    // timeout): a deferred BEGIN that read and then wrote
                    // failed at once if another writer got in between.
                    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
                    let mut out = Vec::with_capacity(statements.len());
                    for (sql, params) in statements {
                        out.push(lite_run(&mut *tx, sql, params, budget).await?);
                    }
                    let last = then(InTransaction::Sqlite(&mut tx), &out).await?;
                    committing.store(true, std::sync::atomic::Ordering::Relaxed);
                    tx.commit().await?;
                    Ok((out, last))
                });
                let result = work.await;
                let before_commit = !committing.load(std::sync::atomic::Ordering::Relaxed);
                match cut {
                    Some(cut)
                        if result.is_err()
                            && before_commit
                            && tokio::time::Instant::now() >= cut.at =>
                    {
                        Err(cut.missed())
                    }
                    _ => result,
                }
            }
        }
    }

    /// Whether the database is known to be out of reach now: its breaker
    /// is open (it refused or broke off a connection, or left a probe
    /// unanswered; all connections merely busy does not open it). Never on SQLite, a
    /// local file, whose failures mean busy or broken, not away.
    pub fn unreachable(&self) -> bool {
        match self {
            Pool::Pg(p) => p.check().is_err(),
            Pool::Sqlite(_) => false,
        }
    }

    /// Whether the database answers within [`PING_TIMEOUT`] (readiness).
    /// On Postgres through the host's own pool, not the plugins'
    /// connections: with all of those busy the database still answers, and
    /// a replica under load must not drop out of its load balancer.
    pub async fn ping(&self) -> bool {
        match self {
            Pool::Pg(p) => p.ping(PING_TIMEOUT).await,
            Pool::Sqlite(_) => matches!(
                tokio::time::timeout(PING_TIMEOUT, self.run("SELECT 1 AS one", &[])).await,
                Ok(Ok(_))
            ),
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Pg(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
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
}
