//! Flood control: a fixed-window counter per client address in kv, shared
//! by every replica. Without an address (no socket peer) all such requests
//! share one counter.

use neo_ops_sdk::{Failure, kv, time};

/// `Ok(None)` when the request is admitted, `Ok(Some(seconds))` until the
/// window ends when the client is over its limit.
pub fn check(
    client: Option<&str>,
    limit: u64,
    window_seconds: u64,
) -> Result<Option<u64>, Failure> {
    let now = time::now_micros().max(0) as u64 / 1_000_000;
    let window = now / window_seconds;
    let key = format!("csp:rate:{}:{window}", client.unwrap_or("global"));
    let count = kv::incr(&key, 1)?;
    if count == 1 {
        // The key names its window, so it is garbage once the window ends.
        kv::expire(&key, window_seconds.saturating_mul(1000))?;
    }
    Ok((count.max(0) as u64 > limit).then(|| window_seconds - now % window_seconds))
}
