//! `neo:ops/db`: SQL against the master or a tenant database, per grant.

use crate::backends::db::{Budget, DbError, Pool, RowSet, Value};
use crate::bindings::neo::ops::db as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::sql_policy;
use crate::caps::state::{CallContext, StoreState};
use crate::manifest::DbGrant;
use crate::runtime::completing::Completing;

/// Largest number of statements in one transaction call.
const MAX_STATEMENTS: usize = 10_000;

enum Target<'a> {
    Master,
    Tenant(&'a str),
}

fn parse_target(target: &str) -> Result<Target<'_>, WitError> {
    match target {
        "master" => Ok(Target::Master),
        t => match t.strip_prefix("tenant:") {
            Some(name) if !name.is_empty() => Ok(Target::Tenant(name)),
            _ => Err(WitError::invalid(format!(
                "bad db target \"{target}\" (expected \"master\" or \"tenant:<name>\")"
            ))),
        },
    }
}

/// Whether the plugin's db grants cover tenant `name` in this call.
pub(crate) fn may_use_tenant(call: &CallContext, name: &str) -> bool {
    call.plugin.grants.db.iter().any(|g| match g {
        DbGrant::AnyTenant => true,
        DbGrant::Tenant(t) => t == name,
        DbGrant::OwnTenant => call.tenant.as_deref() == Some(name),
        DbGrant::Master => false,
    })
}

impl StoreState {
    /// Checks the grant, then that every statement is one a plugin may send
    /// ([`sql_policy`]), then opens the pool. Nothing is opened or sent when
    /// either refuses.
    pub(crate) async fn pool_for<'s>(
        &mut self,
        target: &str,
        statements: impl IntoIterator<Item = &'s str>,
    ) -> Result<Pool, WitError> {
        let call = &self.call;
        let allowed = match parse_target(target)? {
            Target::Master => call.plugin.grants.db.contains(&DbGrant::Master),
            Target::Tenant(name) => may_use_tenant(call, name),
        };
        if !allowed {
            tracing::warn!(plugin = %call.plugin.name, target, request_id = %call.request_id, "db access denied");
            return Err(WitError::denied(format!(
                "plugin \"{}\" has no db grant for \"{target}\"",
                call.plugin.name
            )));
        }
        for sql in statements {
            sql_policy::check(sql)?;
        }
        match parse_target(target)? {
            Target::Master => Ok(call.services.db.master().clone()),
            Target::Tenant(name) => call
                .services
                .db
                .tenant(name)
                .await
                .map_err(|e| db_error(call, e)),
        }
    }
}

impl StoreState {
    /// Bytes of rows one call may bring back: no more than the plugin could
    /// take into its memory, so a huge result is refused before the host
    /// holds it.
    pub(crate) fn row_budget(&self) -> Budget {
        Budget::new(self.call.plugin.limits.memory_bytes)
    }

    /// Runs database work for this invocation: if the plugin is cut off
    /// mid-call, the statement still completes (commit or rollback) and the
    /// runtime waits for it before reporting the invocation's end.
    async fn tracked<T: Send + 'static>(
        &mut self,
        work: impl Future<Output = Result<T, DbError>> + Send + 'static,
    ) -> Result<T, WitError> {
        Completing::tracked(work, &self.call.tasks)
            .await
            .map_err(|e| db_error(&self.call, e))
    }
}

/// The guest's view of a database error. The database's own text stays in
/// the log (with the plugin and request id): it can quote data or schema,
/// and a plugin may pass its error on to an HTTP response.
pub fn db_error(call: &CallContext, e: DbError) -> WitError {
    match e {
        DbError::Rejected(detail) => {
            // A string field: quoted and escaped (the text can quote what
            // the plugin sent, newlines and all).
            tracing::warn!(plugin = %call.plugin.name, request_id = %call.request_id, detail = detail.as_str(), "database rejected a statement");
            WitError::new(
                ErrorCode::Invalid,
                format!(
                    "the database rejected the statement (details in the host log, request {})",
                    call.request_id
                ),
            )
        }
        DbError::Invalid(m) => WitError::new(ErrorCode::Invalid, m),
        DbError::NotFound(m) => WitError::new(ErrorCode::NotFound, m),
        DbError::Conflict(m) => WitError::new(ErrorCode::Conflict, m),
        DbError::Unavailable(m) | DbError::Busy(m) => WitError::new(ErrorCode::Unavailable, m),
        DbError::Failed(m) => WitError::new(ErrorCode::Failed, m),
    }
}

/// WIT statements as the backend's (SQL, parameters), at most
/// [`MAX_STATEMENTS`] of them.
pub(crate) fn statements_from_wit(
    statements: Vec<wit::Statement>,
) -> Result<Vec<(String, Vec<Value>)>, WitError> {
    if statements.len() > MAX_STATEMENTS {
        return Err(WitError::invalid(format!(
            "{} statements in one transaction (at most {MAX_STATEMENTS})",
            statements.len()
        )));
    }
    Ok(statements
        .into_iter()
        .map(|s| (s.sql, s.params.into_iter().map(from_wit).collect()))
        .collect())
}

fn from_wit(v: wit::Value) -> Value {
    match v {
        wit::Value::Null => Value::Null,
        wit::Value::Boolean(b) => Value::Bool(b),
        wit::Value::Int(i) => Value::Int(i),
        wit::Value::Float(f) => Value::Float(f),
        wit::Value::Text(s) => Value::Text(s),
        wit::Value::Bytes(b) => Value::Bytes(b),
        wit::Value::Timestamp(t) => Value::Timestamp(t),
        wit::Value::Json(s) => Value::Json(s),
    }
}

fn to_wit(set: RowSet) -> wit::RowSet {
    let conv = |v: Value| match v {
        Value::Null => wit::Value::Null,
        Value::Bool(b) => wit::Value::Boolean(b),
        Value::Int(i) => wit::Value::Int(i),
        Value::Float(f) => wit::Value::Float(f),
        Value::Text(s) => wit::Value::Text(s),
        Value::Bytes(b) => wit::Value::Bytes(b),
        Value::Timestamp(t) => wit::Value::Timestamp(t),
        Value::Json(s) => wit::Value::Json(s),
    };
    wit::RowSet {
        columns: set.columns,
        rows: set
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(conv).collect())
            .collect(),
    }
}

impl wit::Host for StoreState {
    async fn query(
        &mut self,
        target: String,
        sql: String,
        params: Vec<wit::Value>,
    ) -> Result<wit::RowSet, WitError> {
        let pool = self.pool_for(&target, [sql.as_str()]).await?;
        let params: Vec<Value> = params.into_iter().map(from_wit).collect();
        let mut budget = self.row_budget();
        let deadline = Some(self.call.io_deadline());
        self.tracked(async move { pool.run_until(&sql, &params, &mut budget, deadline).await })
            .await
            .map(|(_, rows)| to_wit(rows))
    }

    async fn execute(
        &mut self,
        target: String,
        sql: String,
        params: Vec<wit::Value>,
    ) -> Result<u64, WitError> {
        let pool = self.pool_for(&target, [sql.as_str()]).await?;
        let params: Vec<Value> = params.into_iter().map(from_wit).collect();
        let deadline = Some(self.call.io_deadline());
        self.tracked(async move {
            let mut rows_dropped = Budget::rows_dropped();
            let run = pool.run_until(&sql, &params, &mut rows_dropped, deadline);
            Ok(run.await?.0)
        })
        .await
    }

    async fn transaction(
        &mut self,
        target: String,
        statements: Vec<wit::Statement>,
    ) -> Result<Vec<(u64, wit::RowSet)>, WitError> {
        let statements = statements_from_wit(statements)?;
        let pool = self
            .pool_for(&target, statements.iter().map(|(sql, _)| sql.as_str()))
            .await?;
        let mut budget = self.row_budget();
        let deadline = Some(self.call.io_deadline());
        let results = self
            .tracked(async move {
                let run = pool.transaction_within(&statements, &mut budget, deadline);
                run.await
            })
            .await?;
        Ok(results
            .into_iter()
            .map(|(n, set)| (n, to_wit(set)))
            .collect())
    }
}
