//! Double-click protection: a kv lock (SET NX with a TTL) per action and
//! target. With an `Idempotency-Key` the lock is per key and lives long;
//! without one, the same action on the same target within a short window is
//! a double click. A call whose work fails releases its lock so a retry runs.

use neo_ops_sdk::{Failure, config, kv};
use std::time::Duration;

const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A lock this call holds.
pub struct Held {
    name: String,
    token: String,
}

impl Held {
    pub fn release(self) {
        if let Err(e) = kv::unlock(&self.name, &self.token) {
            neo_ops_sdk::warn(&format!(
                "releasing \"{}\" failed: {}",
                self.name, e.message
            ));
        }
    }
}

/// Takes the guard for this action on this target; `None` means a repeat.
pub fn acquire(
    tenant: &str,
    action: &str,
    target: &str,
    key: Option<&str>,
) -> Result<Option<Held>, Failure> {
    let (name, ttl) = match key {
        Some(key) => (
            format!("console:idem:{tenant}:{action}:{target}:{key}"),
            config::duration("idempotency_ttl", DEFAULT_KEY_TTL)?,
        ),
        None => (
            format!("console:click:{tenant}:{action}:{target}"),
            config::duration("double_click", DEFAULT_WINDOW)?,
        ),
    };
    let token = kv::lock(&name, ttl.as_millis().max(1) as u64)?;
    Ok(token.map(|token| Held { name, token }))
}
