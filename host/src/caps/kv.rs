//! `neo:ops/kv`: keys and locks under the prefixes the manifest grants.

use std::time::Duration;

use crate::backends::kv::{Kv, KvError};
use crate::bindings::neo::ops::kv as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::state::StoreState;

/// Locks one invocation may hold at once (each is host memory until the end).
const MAX_HELD_LOCKS: usize = 256;

/// Largest value or list element a plugin may store.
const MAX_VALUE: usize = 1 << 20;

/// Longest key or lock name: Redis takes keys of up to 512 MB, which would
/// store around [`MAX_VALUE`], and a held lock's name is host memory.
const MAX_KEY: usize = 1024;

impl StoreState {
    fn kv_allowed(&self, key: &str) -> Result<(), WitError> {
        let plugin = &self.call.plugin;
        if key.is_empty() {
            return Err(WitError::invalid("empty kv key"));
        }
        if key.len() > MAX_KEY {
            let head: String = key.chars().take(40).collect();
            return Err(WitError::invalid(format!(
                "kv key \"{head}…\" is {} bytes, over {MAX_KEY}",
                key.len()
            )));
        }
        if key.starts_with(crate::manifest::HOST_NAMESPACE) {
            return Err(WitError::denied(format!(
                "kv key \"{key}\" is reserved for the host"
            )));
        }
        if plugin.grants.kv.iter().any(|p| key.starts_with(p.as_str())) {
            Ok(())
        } else {
            // Not a field named `key`: the log's masking would hide it.
            tracing::warn!(plugin = %plugin.name, denied = key, "kv access denied");
            Err(WitError::denied(format!(
                "plugin \"{}\" has no kv grant for key \"{key}\"",
                plugin.name
            )))
        }
    }
}

fn kv_error(e: KvError) -> WitError {
    match e {
        KvError::Unavailable => WitError::new(ErrorCode::Unavailable, "kv store unavailable"),
        KvError::WrongType(m) => WitError::new(ErrorCode::Invalid, m),
        KvError::TooLarge { limit } => WitError::invalid(format!(
            "the kv answer is over {limit} bytes (its length and 32 per element), the plugin's memory limit; read a smaller range"
        )),
    }
}

fn check_size(v: &[u8]) -> Result<(), WitError> {
    if v.len() > MAX_VALUE {
        return Err(WitError::invalid(format!(
            "value of {} bytes exceeds {MAX_VALUE}",
            v.len()
        )));
    }
    Ok(())
}

/// Longest time to live a plugin may ask for: ten years. Redis counts
/// milliseconds in a signed 64-bit number, and a larger one wrapped round
/// to a negative time would delete the key at once.
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// A time to live, at least a millisecond and at most [`MAX_TTL_MS`].
fn ttl(ms: u64) -> Result<Duration, WitError> {
    if ms > MAX_TTL_MS {
        return Err(WitError::invalid(format!(
            "ttl of {ms} ms exceeds {MAX_TTL_MS} (ten years)"
        )));
    }
    Ok(Duration::from_millis(ms.max(1)))
}

/// A kv call, given up on at the invocation's I/O deadline
/// ([`crate::caps::state::io_deadline`]), and said so: a plugin told the
/// store is down would report an outage that is only its own time running
/// out, and a write cut off may have taken effect.
async fn kv_call<T>(
    io_deadline: tokio::time::Instant,
    call: impl Future<Output = Result<T, KvError>>,
) -> Result<T, WitError> {
    match tokio::time::timeout_at(io_deadline, call).await {
        Ok(answer) => answer.map_err(kv_error),
        Err(_) => Err(WitError::new(
            ErrorCode::Unavailable,
            "the kv store did not answer in time; whether the call took effect is unknown",
        )),
    }
}

impl wit::Host for StoreState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        self.kv_allowed(&key)?;
        kv_call(
            self.call.io_deadline(),
            self.call
                .services
                .kv
                .get_within(&key, self.call.plugin.limits.memory_bytes),
        )
        .await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), WitError> {
        self.kv_allowed(&key)?;
        check_size(&value)?;
        let expiry = ttl_ms.map(ttl).transpose()?;
        kv_call(
            self.call.io_deadline(),
            self.call.services.kv.set(&key, &value, expiry),
        )
        .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, WitError> {
        self.kv_allowed(&key)?;
        kv_call(self.call.io_deadline(), self.call.services.kv.delete(&key)).await
    }

    async fn incr(&mut self, key: String, by: i64) -> Result<i64, WitError> {
        self.kv_allowed(&key)?;
        kv_call(
            self.call.io_deadline(),
            self.call.services.kv.incr(&key, by),
        )
        .await
    }

    async fn expire(&mut self, key: String, ttl_ms: u64) -> Result<bool, WitError> {
        self.kv_allowed(&key)?;
        kv_call(
            self.call.io_deadline(),
            self.call.services.kv.expire(&key, ttl(ttl_ms)?),
        )
        .await
    }

    async fn list_push(&mut self, key: String, values: Vec<Vec<u8>>) -> Result<u64, WitError> {
        self.kv_allowed(&key)?;
        for v in &values {
            check_size(v)?;
        }
        kv_call(
            self.call.io_deadline(),
            self.call.services.kv.list_push(&key, &values),
        )
        .await
    }

    async fn list_trim(&mut self, key: String, start: i64, stop: i64) -> Result<(), WitError> {
        self.kv_allowed(&key)?;
        kv_call(
            self.call.io_deadline(),
            self.call.services.kv.list_trim(&key, start, stop),
        )
        .await
    }

    async fn list_range(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Vec<u8>>, WitError> {
        self.kv_allowed(&key)?;
        kv_call(
            self.call.io_deadline(),
            self.call.services.kv.list_range_within(
                &key,
                start,
                stop,
                self.call.plugin.limits.memory_bytes,
            ),
        )
        .await
    }

    async fn lock(&mut self, name: String, ttl_ms: u64) -> Result<Option<String>, WitError> {
        self.kv_allowed(&name)?;
        let ttl = ttl(ttl_ms)?;
        let token = Kv::lock_token();
        // Those whose taking failed count too: each is released, one more
        // kv call, when the invocation ends.
        if self.call.held_locks.len() + self.call.uncertain_locks.len() >= MAX_HELD_LOCKS {
            return Err(WitError::invalid(format!(
                "more than {MAX_HELD_LOCKS} locks held at once; release some first"
            )));
        }
        // Recorded before asking: a lock Redis took but whose reply was lost
        // (the plugin cut off, the kv bound) is still released when the
        // invocation ends, instead of staying held for its whole ttl.
        self.call.held_locks.push((name.clone(), token.clone()));
        let taken = self.call.services.kv.lock_as(&name, &token, ttl);
        let taken = tokio::time::timeout_at(self.call.io_deadline(), taken).await;
        let taken = taken.unwrap_or(Err(KvError::Unavailable));
        match taken {
            Ok(true) => Ok(Some(token)),
            Ok(false) => {
                self.call.held_locks.pop();
                Ok(None)
            }
            Err(e) => {
                // The plugin is told it failed and will not unlock it.
                let asked = self.call.held_locks.pop();
                self.call.uncertain_locks.extend(asked);
                Err(kv_error(e))
            }
        }
    }

    async fn extend_lock(
        &mut self,
        name: String,
        token: String,
        ttl_ms: u64,
    ) -> Result<bool, WitError> {
        self.kv_allowed(&name)?;
        kv_call(
            self.call.io_deadline(),
            self.call
                .services
                .kv
                .extend_lock(&name, &token, ttl(ttl_ms)?),
        )
        .await
    }

    async fn unlock(&mut self, name: String, token: String) -> Result<bool, WitError> {
        self.kv_allowed(&name)?;
        let released = kv_call(
            self.call.io_deadline(),
            self.call.services.kv.unlock(&name, &token),
        )
        .await;
        let held = |(n, t): &(String, String)| n == &name && t == &token;
        let was_held = self.call.held_locks.iter().any(held);
        self.call.held_locks.retain(|l| !held(l));
        // An unlock whose answer never came may have left the lock taken:
        // released again when the invocation ends, however it ends.
        if released.is_err() && was_held {
            self.call.uncertain_locks.push((name, token));
        }
        released
    }
}
