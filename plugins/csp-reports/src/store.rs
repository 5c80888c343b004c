//! The newest reports, newest first, in one kv list that lives 24 hours
//! past its last write.

use neo_ops_sdk::serde_json::{self, Value as Json};
use neo_ops_sdk::{Failure, kv, warn};

const KEY: &str = "csp:reports";
/// Reports kept.
pub const KEEP: i64 = 500;
const RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// Pushes entries in order (the last one ends up newest), then trims and
/// renews the expiry.
pub fn save(entries: &[Json]) -> Result<(), Failure> {
    if entries.is_empty() {
        return Ok(());
    }
    let values: Vec<Vec<u8>> = entries.iter().map(|e| e.to_string().into_bytes()).collect();
    kv::list_push(KEY, &values)?;
    kv::list_trim(KEY, 0, KEEP - 1)?;
    kv::expire(KEY, RETENTION_MS)?;
    Ok(())
}

/// Stored reports, newest first.
pub fn newest() -> Result<Vec<Json>, Failure> {
    let values = kv::list_range(KEY, 0, KEEP - 1)?;
    Ok(values
        .iter()
        .filter_map(|v| match serde_json::from_slice(v) {
            Ok(entry) => Some(entry),
            Err(e) => {
                warn(&format!("skipping an unreadable stored report: {e}"));
                None
            }
        })
        .collect())
}
