//! `neo:ops/audit`: append a record to the hash-chained audit log. The host
//! stamps time, plugin and request id; the plugin cannot backdate or forge them.

use crate::audit_log::{self, NewRecord};
use crate::bindings::neo::ops::audit as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::runtime::state::StoreState;

impl wit::Host for StoreState {
    async fn append(&mut self, entry: wit::Entry) -> Result<i64, WitError> {
        let details: serde_json::Value = serde_json::from_str(&entry.details)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| WitError::invalid("audit details must be a JSON object"))?;
        let record = NewRecord {
            // An authenticated caller is who acted, whatever the plugin says.
            actor: self.call.actor.clone().unwrap_or(entry.actor),
            action: entry.action,
            target: entry.target,
            tenant: entry.tenant,
            request_id: Some(self.call.request_id.clone()),
            plugin: Some(self.call.plugin.name.clone()),
            details,
        };
        audit_log::append(self.call.services.db.master(), record)
            .await
            .map_err(|e| {
                tracing::error!(plugin = %self.call.plugin.name, error = %e, "audit append failed");
                WitError::new(ErrorCode::Unavailable, "audit log unavailable")
            })
    }
}
