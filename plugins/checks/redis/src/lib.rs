//! Preflight `redis`: a set / get / delete round trip on a `preflight:` key
//! with a short TTL (so an interrupted check leaves nothing behind). Fails when
//! the kv store is unavailable or does not give the value back. Warns when
//! Redis keeps nothing on disk: every queue, retry and dead letter lives
//! there, and a restart of such a Redis loses them all (config
//! `allow_no_persistence = "true"` accepts that). Whether the kv is the
//! in-process one is the `storage` check's business.
//!
//! Grants: `kv = ["preflight:"]`.

use check_common::{describe, fail, pass, settings, warn};
use neo_ops_sdk::{Check, CheckOutcome, backends, kv, time};

const TTL_MS: u64 = 30_000;
const HINT: &str = "check that Redis is up and REDIS_URL points at it (redis-cli -u \"$REDIS_URL\" ping); \
    the host log has the connection error";

struct Redis;

impl Check for Redis {
    fn check() -> CheckOutcome {
        let now = time::now_micros();
        let key = format!("preflight:{now}");
        let value = format!("preflight {now}").into_bytes();
        if let Err(e) = kv::set(&key, &value, Some(TTL_MS)) {
            return fail(format!("kv set {key}: {}", describe(&e)), HINT);
        }
        let read = kv::get(&key);
        // Delete whatever the read gave: the TTL is only the fallback.
        let deleted = kv::delete(&key);
        match read {
            Err(e) => return fail(format!("kv get {key}: {}", describe(&e)), HINT),
            Ok(Some(v)) if v == value => {}
            Ok(Some(_)) => return fail(format!("kv get {key} returned a different value"), HINT),
            Ok(None) => return fail(format!("kv get {key} found nothing right after set"), HINT),
        }
        match deleted {
            Err(e) => fail(format!("kv delete {key}: {}", describe(&e)), HINT),
            Ok(false) => fail(format!("kv delete {key}: the key was already gone"), HINT),
            Ok(true) => {
                let round_trip = format!(
                    "kv set/get/delete round trip in {} ms",
                    (time::now_micros() - now) / 1_000
                );
                kept_on_disk(round_trip, backends::kv_persistence().as_deref())
            }
        }
    }
}

const PERSISTENCE_HINT: &str = "turn on Redis's append-only file: appendonly yes in redis.conf \
    (at once: redis-cli CONFIG SET appendonly yes, then CONFIG REWRITE); if losing queued jobs \
    on a Redis restart is acceptable here, set allow_no_persistence = \"true\" in this check's config";

/// The round trip's outcome, with what Redis keeps across a restart.
fn kept_on_disk(round_trip: String, persistence: Option<&str>) -> CheckOutcome {
    match persistence {
        Some("aof") => pass(format!(
            "{round_trip}; Redis writes every change to its append-only file"
        )),
        Some("rdb") => pass(format!(
            "{round_trip}; Redis keeps snapshots only (a restart loses what changed since the last one)"
        )),
        Some("unknown") => pass(format!(
            "{round_trip}; whether Redis keeps anything on disk is unknown (it did not say: CONFIG refused, or no answer in time)"
        )),
        Some("none") if settings::flag("allow_no_persistence") => pass(format!(
            "{round_trip}; Redis keeps nothing on disk (allowed by config)"
        )),
        Some("none") => warn(
            format!(
                "Redis keeps nothing on disk (no append-only file, no snapshots): a Redis restart \
                 loses every queued job, retry and dead letter ({round_trip})"
            ),
            PERSISTENCE_HINT,
        ),
        // The in-process kv, or a host that does not say.
        _ => pass(round_trip),
    }
}

neo_ops_sdk::export_check!(Redis);
