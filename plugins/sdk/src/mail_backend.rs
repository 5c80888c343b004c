//! Where the host's mail goes.

use serde_json::Value;

use crate::host_info;

/// Whether the host writes mail to its data dir's outbox (no SMTP relay is
/// set), as its readiness document says: mail sent there reached no one.
pub fn goes_to_the_outbox() -> bool {
    serde_json::from_str::<Value>(&host_info::ready())
        .is_ok_and(|ready| ready["checks"]["mail"]["backend"] == "outbox")
}
