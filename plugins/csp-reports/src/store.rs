//! The newest distinct reports, newest first, in one kv list that lives 24
//! hours past its last write; a report older than 24 hours is never shown,
//! even while newer ones keep the list alive.
//!
//! A report identical to one already stored from the same client (same
//! fields, whatever its `age`) is not stored again: its entry's counter
//! (`csp:count:<fingerprint>`) goes up and its last-seen time
//! (`csp:last:<fingerprint>`) moves, so a burst costs two small keys, not
//! a list entry per copy. Each client may add `budget` new entries per
//! window and `share` per UTC day (overflow entries included); past either,
//! further distinct reports are counted in one overflow entry per client
//! and window (or day) instead of being refused, so the counts shown always
//! add up to the reports received, and a client holds at most `share` + 1
//! entries a day: a few clients flooding cannot push everyone else's
//! reports out. An entry pushed out of the newest 500 takes its counters
//! with it, so its next copy is listed anew.

use neo_ops_sdk::serde_json::{self, Value as Json, json};
use neo_ops_sdk::{Failure, kv, time, warn};

const KEY: &str = "csp:reports";
/// Entries kept.
pub const KEEP: i64 = 500;
const RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// One incoming report, already redacted and capped.
pub struct Incoming {
    pub kind: &'static str,
    pub content_type: String,
    pub report: Json,
}

/// Where one client's reports are counted in the current window.
pub struct Client<'a> {
    pub address: &'a str,
    /// Index of the rate window, part of the overflow entry's name.
    pub window: u64,
    /// New entries this client may add per window.
    pub budget: u64,
    pub window_ms: u64,
    /// New entries this client may add per UTC day.
    pub share: u64,
}

/// Where a client's next distinct report goes.
enum Room {
    /// An entry of its own.
    Entry,
    /// Counted in the client's overflow entry of this name; `shared` when
    /// making that entry takes a unit of the client's daily share.
    Overflow { name: String, shared: bool },
}

/// Stores each report as a new entry, or counts it against the entry it
/// repeats (or the client's overflow entry), then trims and renews the list.
pub fn save(client: &Client, reports: Vec<Incoming>) -> Result<(), Failure> {
    let now = time::rfc3339(time::now_micros());
    let share = share_key(client);
    let mut new_entries = Vec::new();
    for incoming in reports {
        let print = fingerprint(client.address, &incoming);
        if counted_again(&print, &now)? {
            continue;
        }
        let (overflow, shared) = match room(client, &share)? {
            Room::Entry => {
                take_share(&share)?;
                new_entries.push(entry(&print, &now, &incoming));
                continue;
            }
            Room::Overflow { name, shared } => (name, shared),
        };
        // Past a budget: forget the fingerprint (a later window may store
        // it) and count the report in the overflow entry instead.
        kv::delete(&count_key(&print))?;
        if !counted_again(&overflow, &now)? {
            if shared {
                take_share(&share)?;
            }
            let past = if shared {
                "this client's budget for the window"
            } else {
                "this client's share of the list for the day"
            };
            let summary = Incoming {
                kind: "overflow",
                content_type: incoming.content_type.clone(),
                report: json!({
                    "client": client.address,
                    "note": format!("distinct reports past {past}, counted here; the first is kept"),
                    "first": incoming.report,
                }),
            };
            new_entries.push(entry(&overflow, &now, &summary));
        }
    }
    if new_entries.is_empty() {
        return Ok(());
    }
    let values: Vec<Vec<u8>> = new_entries
        .iter()
        .map(|e| e.to_string().into_bytes())
        .collect();
    if let Err(e) = kv::list_push(KEY, &values) {
        // Their counters already say "stored": dropped, or every later copy
        // would be counted against an entry that is not there, unlisted.
        for e in &new_entries {
            if let Some(print) = e["id"].as_str() {
                let _ = kv::delete(&count_key(print));
            }
        }
        return Err(e.into());
    }
    forget_trimmed()?;
    kv::list_trim(KEY, 0, KEEP - 1)?;
    kv::expire(KEY, RETENTION_MS)?;
    Ok(())
}

/// Drops the counters of the entries the trim is about to push out: a
/// repeat of one of them is then stored again, at the top where the listing
/// shows it, instead of only counted against an entry no longer listed.
/// (Read, push and trim are separate calls: two saves interleaving in a
/// burst can still leave a pushed-out entry's counter behind until it
/// expires, up to 24 hours after its first copy; copies counted against it
/// meanwhile are not listed.)
fn forget_trimmed() -> Result<(), Failure> {
    for raw in kv::list_range(KEY, KEEP, -1)? {
        let entry: Option<Json> = serde_json::from_slice(&raw).ok();
        if let Some(print) = entry.as_ref().and_then(|e| e["id"].as_str()) {
            kv::delete(&count_key(print))?;
            kv::delete(&last_key(print))?;
        }
    }
    Ok(())
}

/// Counts one more copy of `print`: true when it was already stored (and
/// its last-seen time moved), false when this is its first copy.
fn counted_again(print: &str, now: &str) -> Result<bool, Failure> {
    let count = kv::incr(&count_key(print), 1)?;
    if count == 1 {
        if let Err(e) = kv::expire(&count_key(print), RETENTION_MS) {
            // A counter without its expiry would hide this report for good.
            let _ = kv::delete(&count_key(print));
            return Err(e.into());
        }
        return Ok(false);
    }
    kv::set(&last_key(print), now.as_bytes(), Some(RETENTION_MS))?;
    Ok(true)
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn share_key(client: &Client) -> String {
    let day = time::now_micros().max(0) as u64 / 1000 / DAY_MS;
    format!("csp:share:{}:{day}", client.address)
}

/// Where the client's next distinct report goes: past its share for the
/// day, its day's overflow entry; else past its budget for the window, the
/// window's; else an entry of its own. (Read, then taken: concurrent posts
/// from one client can each take the last unit.)
fn room(client: &Client, share_key: &str) -> Result<Room, Failure> {
    let used = kv::get(share_key)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if used >= client.share {
        let day = share_key.rsplit(':').next().unwrap_or_default();
        return Ok(Room::Overflow {
            name: format!("overflow:{}:day{day}", client.address),
            shared: false,
        });
    }
    if within_budget(client)? {
        return Ok(Room::Entry);
    }
    Ok(Room::Overflow {
        name: format!("overflow:{}:{}", client.address, client.window),
        shared: true,
    })
}

/// Counts one more entry against the client's share for the day.
fn take_share(share_key: &str) -> Result<(), Failure> {
    if kv::incr(share_key, 1)? == 1 {
        kv::expire(share_key, DAY_MS)?;
    }
    Ok(())
}

fn within_budget(client: &Client) -> Result<bool, Failure> {
    let key = format!("csp:new:{}:{}", client.address, client.window);
    let used = kv::incr(&key, 1)?;
    if used == 1 {
        kv::expire(&key, client.window_ms)?;
    }
    Ok(used.max(0) as u64 <= client.budget)
}

fn entry(print: &str, now: &str, incoming: &Incoming) -> Json {
    json!({
        "id": print,
        "received_at": now,
        "content_type": incoming.content_type,
        "kind": incoming.kind,
        "report": incoming.report,
    })
}

fn count_key(print: &str) -> String {
    format!("csp:count:{print}")
}

fn last_key(print: &str) -> String {
    format!("csp:last:{print}")
}

/// Names identical reports from one client alike: FNV-1a over the client,
/// the kind and the report without the Reporting API's `age` (which differs
/// between copies of the same violation).
fn fingerprint(client: &str, incoming: &Incoming) -> String {
    let mut report = incoming.report.clone();
    if let Some(map) = report.as_object_mut() {
        map.remove("age");
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        client.as_bytes(),
        b"\0",
        incoming.kind.as_bytes(),
        b"\0",
        report.to_string().as_bytes(),
    ] {
        for byte in part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// One stored entry as the listing shows it.
pub struct Shown<'a> {
    /// The stored JSON text, without `count` and `last_seen`.
    pub raw: &'a str,
    pub entry: &'a Json,
    /// Reports this entry stands for (at least 1).
    pub count: u64,
    /// When the last of them arrived.
    pub last_seen: &'a str,
}

/// Hands each stored entry of the last 24 hours, newest first and at most
/// `limit`, to `visit` with its count, one at a time: the listing never
/// holds more than the raw list and its own output.
pub fn each_recent(limit: i64, mut visit: impl FnMut(Shown)) -> Result<usize, Failure> {
    let values = kv::list_range(KEY, 0, limit.clamp(1, KEEP) - 1)?;
    let cutoff = time::rfc3339(time::now_micros() - RETENTION_MS as i64 * 1000);
    let mut shown = 0;
    for raw in &values {
        let Ok(text) = std::str::from_utf8(raw) else {
            warn("skipping a stored report that is not UTF-8");
            continue;
        };
        let entry = match serde_json::from_str::<Json>(text) {
            Ok(entry) if within(&entry, &cutoff) => entry,
            Ok(_) => continue,
            Err(e) => {
                warn(&format!("skipping an unreadable stored report: {e}"));
                continue;
            }
        };
        let (count, last) = match entry["id"].as_str() {
            Some(print) => (
                kv::get(&count_key(print))?
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1),
                kv::get(&last_key(print))?.and_then(|v| String::from_utf8(v).ok()),
            ),
            None => (1, None),
        };
        let received = entry["received_at"].as_str().unwrap_or("");
        visit(Shown {
            raw: text,
            entry: &entry,
            count: count.max(1),
            last_seen: last.as_deref().unwrap_or(received),
        });
        shown += 1;
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

    #[test]
    fn copies_share_a_fingerprint_whatever_their_age() {
        let report = |age: u64, line: u64| Incoming {
            kind: "csp-violation",
            content_type: "application/reports+json".into(),
            report: json!({"type": "csp-violation", "age": age, "body": {"lineNumber": line}}),
        };
        let a = fingerprint("127.0.0.1", &report(3, 1));
        assert_eq!(a, fingerprint("127.0.0.1", &report(90, 1)));
        assert_ne!(a, fingerprint("127.0.0.2", &report(3, 1)));
        assert_ne!(a, fingerprint("127.0.0.1", &report(3, 2)));
        assert_eq!(a.len(), 16);
    }
}
