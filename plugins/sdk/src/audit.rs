//! The audit log (needs `audit = true`). The host writes who acted — the
//! authenticated caller, else `<plugin> (<trigger>)` — and when.

use serde_json::Value as Json;

use crate::Error;
pub use crate::bindings::neo::ops::audit::{Entry, append, record_transaction};

/// Whether `record_transaction` failed after its transaction committed
/// (only the record is missing): the change is made and must not be redone.
pub fn committed(e: &Error) -> bool {
    e.code == crate::ErrorCode::Unavailable
        && e.message == neo_ops_text::audit::COMMITTED_UNRECORDED
}

/// Appends a record: what was done to what, for which tenant, and details
/// (counts, ids; never secrets). Returns the record's id.
pub fn record(
    action: &str,
    target: &str,
    tenant: Option<&str>,
    details: Json,
) -> Result<i64, Error> {
    append(&entry(action, target, tenant, details))
}

/// The entry [`record`] appends (for `record_transaction`).
pub fn entry(action: &str, target: &str, tenant: Option<&str>, details: Json) -> Entry {
    Entry {
        actor: String::new(),
        action: action.to_string(),
        target: target.to_string(),
        tenant: tenant.map(str::to_string),
        details: details.to_string(),
    }
}
