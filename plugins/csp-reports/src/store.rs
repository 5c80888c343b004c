//! The newest reports, newest first, in one kv list that lives 24 hours
//! past its last write; a report older than 24 hours is never shown, even
//! while newer ones keep the list alive.

use neo_ops_sdk::serde_json::{self, Value as Json};
use neo_ops_sdk::{Failure, kv, time, warn};

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

/// Hands each stored report of the last 24 hours, newest first and at most
/// `limit`, to `visit` as its stored text and parsed, one at a time: the
/// listing never holds more than the raw list and its own output.
pub fn each_recent(limit: i64, mut visit: impl FnMut(&str, &Json)) -> Result<usize, Failure> {
    let values = kv::list_range(KEY, 0, limit.clamp(1, KEEP) - 1)?;
    let cutoff = time::rfc3339(time::now_micros() - RETENTION_MS as i64 * 1000);
    let mut shown = 0;
    for raw in &values {
        let Ok(text) = std::str::from_utf8(raw) else {
            warn("skipping a stored report that is not UTF-8");
            continue;
        };
        match serde_json::from_str::<Json>(text) {
            Ok(entry) if within(&entry, &cutoff) => {
                visit(text, &entry);
                shown += 1;
            }
            Ok(_) => {}
            Err(e) => warn(&format!("skipping an unreadable stored report: {e}")),
        }
    }
    Ok(shown)
}

/// Whether the entry was received at or after `cutoff` (both RFC 3339 UTC;
/// compared to the second, which fixed-width text order gets right).
fn within(entry: &Json, cutoff: &str) -> bool {
    let received = entry["received_at"].as_str().unwrap_or("");
    received.get(..19).unwrap_or("") >= cutoff.get(..19).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_ops_sdk::serde_json::json;

    #[test]
    fn reports_past_the_retention_are_not_shown() {
        let cutoff = "2026-11-24T10:00:00.5Z";
        assert!(within(
            &json!({"received_at": "2026-11-24T10:00:00Z"}),
            cutoff
        ));
        assert!(within(
            &json!({"received_at": "2026-11-25T09:00:00.123456Z"}),
            cutoff
        ));
        assert!(!within(
            &json!({"received_at": "2026-11-24T09:59:59.999999Z"}),
            cutoff
        ));
        assert!(!within(&json!({"other": 1}), cutoff));
    }
}
