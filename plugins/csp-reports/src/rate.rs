//! Flood control in fixed windows per client address, in kv so every
//! replica shares it. Without an address (no socket peer) all such requests
//! share one client, `global`.

use neo_ops_sdk::{Failure, kv, time};

/// The current window of `seconds`: its index and the seconds left in it.
pub fn window(seconds: u64) -> (u64, u64) {
    let now = time::now_micros().max(0) as u64 / 1_000_000;
    (now / seconds, seconds - now % seconds)
}

/// `Ok(None)` when the request is admitted, `Ok(Some(seconds))` until the
/// window ends when the client has posted more than `limit` times in it.
pub fn check(client: &str, limit: u64, window_seconds: u64) -> Result<Option<u64>, Failure> {
    let (window, left) = window(window_seconds);
    let key = format!("csp:rate:{client}:{window}");
    let count = kv::incr(&key, 1)?;
    if count == 1 {
        // The key names its window, so it is garbage once the window ends.
        kv::expire(&key, window_seconds.saturating_mul(1000))?;
    }
    Ok((count.max(0) as u64 > limit).then_some(left))
}
