//! Double-click protection: a kv lock (SET NX with a TTL) per action and
//! target. With an `Idempotency-Key` the lock is per key and lives long;
//! without one, the same action on the same target within a short window is
//! a double click. A call whose work fails releases its lock so a retry runs.

use neo_ops_sdk::{Failure, config, kv, reply};

const DEFAULT_WINDOW_SECONDS: u64 = 30;
const DEFAULT_KEY_TTL_SECONDS: u64 = 24 * 3600;

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
    let (name, seconds) = match key {
        Some(key) => (
            format!("console:idem:{tenant}:{action}:{target}:{key}"),
            seconds("idempotency_ttl_seconds", DEFAULT_KEY_TTL_SECONDS)?,
        ),
        None => (
            format!("console:click:{tenant}:{action}:{target}"),
            seconds("double_click_seconds", DEFAULT_WINDOW_SECONDS)?,
        ),
    };
    let token = kv::lock(&name, seconds * 1000)?;
    Ok(token.map(|token| Held { name, token }))
}

/// A positive number of seconds from the manifest's `config`, or `default`.
fn seconds(key: &str, default: u64) -> Result<u64, Failure> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                reply::fail(
                    500,
                    format!("config {key} \"{v}\" is not a positive number"),
                )
            }),
    }
}
