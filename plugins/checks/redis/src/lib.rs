//! Preflight `redis`: a set / get / delete round trip on a `preflight:` key
//! with a short TTL (so an interrupted check leaves nothing behind). Fails when
//! the kv store is unavailable or does not give the value back. Whether the
//! kv is the in-process one is the `storage` check's business.
//!
//! Grants: `kv = ["preflight:"]`.

use check_common::{describe, fail, pass};
use neo_ops_sdk::{Check, CheckOutcome, kv, time};

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
            Ok(true) => pass(format!(
                "kv set/get/delete round trip in {} ms",
                (time::now_micros() - now) / 1_000
            )),
        }
    }
}

neo_ops_sdk::export_check!(Redis);
