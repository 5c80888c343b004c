//! Preflight `webhook-breaker`: how often webhook circuit breakers opened
//! recently. The webhook dispatcher records one `webhook_breaker_events` row
//! (`endpoint_id`, `event` = `open` | `half_open` | `close`, `at`) per breaker
//! transition in the tenant's database; this counts `open` events within
//! config `window` (default `"24h"`) across live tenants. Pass at 0, warn
//! above 0 (detail: counts per tenant and endpoint), fail above config
//! `fail_threshold` (default 10).
//!
//! Grants: `db = ["master", "tenant:*"]`.

use check_common::{describe, fail, pass, settings, tenants, warn};
use neo_ops_sdk::db::Value;
use neo_ops_sdk::{Check, CheckOutcome, db, time};

const OPENINGS: &str = "SELECT endpoint_id, count(*) AS n FROM webhook_breaker_events \
    WHERE event = $1 AND at >= $2 GROUP BY endpoint_id ORDER BY endpoint_id";
const DEFAULT_FAIL_THRESHOLD: i64 = 10;
const HINT: &str = "an endpoint kept failing: look at webhook_deliveries.last_error for the endpoints \
    named, check the receivers are up, and deactivate endpoints that are gone";

struct WebhookBreaker;

impl Check for WebhookBreaker {
    fn check() -> CheckOutcome {
        let window = match settings::duration_micros("window", "24h") {
            Ok(w) => w,
            Err(e) => return fail(e, "set window like \"24h\""),
        };
        let threshold = match settings::number("fail_threshold", DEFAULT_FAIL_THRESHOLD) {
            Ok(t) => t,
            Err(e) => return fail(e, "set fail_threshold to a whole number"),
        };
        let names = match tenants::some_live_or_fail("check the master database") {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        let since = time::now_micros() - window;
        let params = [Value::Text("open".into()), Value::Timestamp(since)];
        let mut total = 0;
        let mut per_tenant = Vec::new();
        let mut errors = Vec::new();
        for t in &names {
            match db::query(&tenants::target(t), OPENINGS, &params) {
                Err(e) => errors.push(format!("tenant \"{t}\": {}", describe(&e))),
                Ok(rows) => {
                    let counts: Vec<(i64, i64)> = rows
                        .iter()
                        .filter_map(|r| Some((r.int("endpoint_id")?, r.int("n")?)))
                        .collect();
                    if counts.is_empty() {
                        continue;
                    }
                    let sum: i64 = counts.iter().map(|(_, n)| n).sum();
                    total += sum;
                    let endpoints: Vec<String> = counts
                        .iter()
                        .map(|(id, n)| format!("endpoint {id} ×{n}"))
                        .collect();
                    per_tenant.push(format!("tenant \"{t}\" {sum} ({})", endpoints.join(", ")));
                }
            }
        }
        let span = settings::human_micros(window);
        if !errors.is_empty() {
            return fail(
                format!("reading webhook_breaker_events: {}", errors.join("; ")),
                "run `neo-ops migrate` if the table is missing; otherwise check the tenant databases",
            );
        }
        let detail = format!(
            "webhook breakers opened {total} time(s) in the last {span}{}",
            if per_tenant.is_empty() {
                format!(" across {} tenant(s)", names.len())
            } else {
                format!(": {}", per_tenant.join("; "))
            }
        );
        if total == 0 {
            pass(detail)
        } else if total > threshold {
            fail(format!("{detail} (more than {threshold})"), HINT)
        } else {
            warn(detail, HINT)
        }
    }
}

neo_ops_sdk::export_check!(WebhookBreaker);
