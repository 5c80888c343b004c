//! `neo:ops/audit`: append a record to the hash-chained audit log. The host
//! stamps time, actor, plugin and request id; the plugin cannot backdate or
//! forge them. Needs `audit = true` in the plugin's grants.

use crate::audit_log::{self, NewRecord};
use crate::bindings::neo::ops::audit as wit;
use crate::bindings::neo::ops::db::Statement;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::db::{db_error, statements_from_wit};
use crate::caps::state::StoreState;
use crate::runtime::completing::Completing;

/// Longest details (JSON text) a record may carry, and longest action,
/// target or tenant name.
const MAX_DETAILS: usize = 64 << 10;
const MAX_FIELD: usize = 1024;

impl StoreState {
    /// The grant check, then the record the host will write for `entry`.
    fn audit_record(&self, entry: wit::Entry) -> Result<NewRecord, WitError> {
        let call = &self.call;
        if !call.plugin.grants.audit {
            tracing::warn!(plugin = %call.plugin.name, "audit append denied");
            return Err(WitError::denied(format!(
                "plugin \"{}\" has no audit grant (audit = true)",
                call.plugin.name
            )));
        }
        // Bounded before anything is parsed: a record is kept for good, and
        // every chain check reads it whole (and under the append lock a
        // huge one would hold up every other append).
        if entry.details.len() > MAX_DETAILS {
            return Err(WitError::invalid(format!(
                "audit details of {} bytes exceed {MAX_DETAILS}",
                entry.details.len()
            )));
        }
        let fields = [("action", &entry.action), ("target", &entry.target)];
        let tenant = entry.tenant.as_ref().map(|t| ("tenant", t));
        if let Some((name, value)) = fields
            .into_iter()
            .chain(tenant)
            .find(|(_, v)| v.len() > MAX_FIELD)
        {
            return Err(WitError::invalid(format!(
                "audit {name} of {} bytes exceeds {MAX_FIELD}",
                value.len()
            )));
        }
        let details: serde_json::Value = serde_json::from_str(&entry.details)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| {
                WitError::invalid(format!(
                    "audit details \"{}\" are not a JSON object",
                    entry.details.chars().take(80).collect::<String>()
                ))
            })?;
        // Postgres refuses NUL in text and JSONB: refused here, before a
        // `record-transaction` commits a change its record could not follow.
        let nul_in_text = [&entry.action, &entry.target]
            .into_iter()
            .chain(entry.tenant.as_ref())
            .any(|t| t.contains('\0'));
        if nul_in_text || holds_nul(&details) {
            return Err(WitError::invalid("audit entry holds a NUL character"));
        }
        Ok(NewRecord {
            // The host says who acted: the authenticated caller, else the
            // plugin and its trigger. What the plugin passes is ignored.
            actor: call.actor.clone(),
            action: entry.action,
            target: entry.target,
            tenant: entry.tenant,
            request_id: Some(call.request_id.clone()),
            plugin: Some(call.plugin.name.clone()),
            details,
        })
    }
}

/// Whether any string or key in `value` holds a NUL character.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn unavailable(plugin: &str, e: impl std::fmt::Display) -> WitError {
    tracing::error!(%plugin, error = %e, "audit append failed");
    WitError::new(ErrorCode::Unavailable, "audit log unavailable")
}

impl wit::Host for StoreState {
    async fn append(&mut self, entry: wit::Entry) -> Result<i64, WitError> {
        let record = self.audit_record(entry)?;
        // Tracked like database work: an append already started completes
        // even if the plugin is cut off right after.
        let master = self.call.services.db.master().clone();
        let append = async move { audit_log::append(&master, record).await };
        Completing::tracked(append, &self.call.tasks)
            .await
            .map_err(|e| unavailable(&self.call.plugin.name, e))
    }

    async fn record_transaction(
        &mut self,
        target: String,
        statements: Vec<Statement>,
        entry: wit::Entry,
    ) -> Result<(i64, Vec<u64>), WitError> {
        let mut record = self.audit_record(entry)?;
        // The record names the tenant whose database the change went to.
        if let Some(tenant) = target.strip_prefix("tenant:") {
            record.tenant = Some(tenant.to_string());
        }
        let statements = statements_from_wit(statements)?;
        let pool = self
            .pool_for(&target, statements.iter().map(|(sql, _)| sql.as_str()))
            .await?;
        let master = self.call.services.db.master().clone();
        let plugin = self.call.plugin.name.clone();
        let mut budget = self.row_budget();
        let deadline = Some(self.call.io_deadline());
        if target == "master" {
            // One database: the record goes in the change's own transaction.
            let work = async move {
                audit_log::transaction_recorded(&master, &statements, &mut budget, deadline, record)
                    .await
            };
            return Completing::tracked(work, &self.call.tasks)
                .await
                .map_err(|e| db_error(&self.call, e));
        }
        // Commit and record as one piece of work: once the commit is in, the
        // record follows even if the invocation is cut off meanwhile.
        let work = Completing::tracked(
            async move {
                let results = pool
                    .transaction_within(&statements, &mut budget, deadline)
                    .await
                    .map_err(Err)?;
                let rows: Vec<u64> = results.iter().map(|(n, _)| *n).collect();
                record.details["rows"] = serde_json::json!(rows);
                let id = audit_log::append_after_commit(&master, record)
                    .await
                    .map_err(Ok)?;
                Ok::<_, Result<crate::backends::db::DbError, crate::backends::db::DbError>>((
                    id, rows,
                ))
            },
            &self.call.tasks,
        );
        match work.await {
            Ok(done) => Ok(done),
            // The transaction failed: nothing committed, nothing to record.
            Err(Err(e)) => Err(db_error(&self.call, e)),
            // Committed, but the record could not be written.
            Err(Ok(e)) => {
                tracing::error!(%plugin, target, error = %e, "committed a transaction whose audit record could not be written");
                Err(WitError::new(
                    ErrorCode::Unavailable,
                    neo_ops_text::audit::COMMITTED_UNRECORDED,
                ))
            }
        }
    }
}
