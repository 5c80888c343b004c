//! Preflight `quotas`: the quotas endpoint answers sensibly. URL from config
//! `quotas_url`, else the granted env var `QUOTAS_URL`; unset means skip.
//!
//! Expected answer: status 200 and a JSON document
//!
//! ```json
//! {"quotas": [{"name": "orders_per_day", "tenant": "acme", "limit": 10000, "used": 12}]}
//! ```
//!
//! where `name` is a non-empty string, `tenant` is optional, and `limit` and
//! `used` are non-negative integers. Fails on any other status, a body that
//! is not that shape, or an entry breaking it (named in the detail); warns
//! when an entry's `used` exceeds its `limit` or the list is empty.
//!
//! Grants: `env = ["QUOTAS_URL"]`, `http = ["<quotas origin>"]`.

use check_common::http;
use check_common::{fail, pass, settings, skip, warn};
use neo_ops_sdk::serde_json::{self, Value};
use neo_ops_sdk::{Check, CheckOutcome};

const SETUP_HINT: &str = "set QUOTAS_URL (granted to this check) or config quotas_url to the quotas \
    endpoint, and add its origin to the check's grants.http";
const SHAPE_HINT: &str = "the endpoint must answer 200 with {\"quotas\": [{\"name\": \"...\", \
    \"limit\": <integer >= 0>, \"used\": <integer >= 0>}]}; check the service behind it";

struct Quotas;

/// What the document says, once it has the right shape.
#[derive(Debug, PartialEq)]
struct Report {
    entries: usize,
    over_limit: Vec<String>,
}

impl Check for Quotas {
    fn check() -> CheckOutcome {
        let url = match settings::lookup("quotas_url", "QUOTAS_URL") {
            Ok(u) => u,
            Err(why) => return skip(format!("quotas endpoint {why}"), SETUP_HINT),
        };
        let timeout = match http::timeout_ms() {
            Ok(t) => t,
            Err(e) => return fail(e, "set request_timeout to a duration such as \"5s\""),
        };
        let shown = http::redact(&url);
        let down = "check that the quotas service is up and reachable from the host";
        let resp = match http::get_ok(&url, timeout, SETUP_HINT, down) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let report = serde_json::from_slice::<Value>(&resp.body)
            .map_err(|e| format!("body is not json ({e}): {}", http::excerpt(&resp.body)))
            .and_then(|doc| validate(&doc));
        match report {
            Err(e) => fail(format!("GET {shown}: {e}"), SHAPE_HINT),
            Ok(r) if r.entries == 0 => warn(
                format!("GET {shown}: the quotas list is empty"),
                "check that the quotas service is configured with the plans' limits",
            ),
            Ok(r) if !r.over_limit.is_empty() => warn(
                format!(
                    "{} of {} quota(s) over their limit: {}",
                    r.over_limit.len(),
                    r.entries,
                    r.over_limit.join("; ")
                ),
                "raise the tenant's limit or find out why usage exceeds it (enforcement may be off)",
            ),
            Ok(r) => pass(format!(
                "{} quota(s) from {shown}, all within their limits",
                r.entries
            )),
        }
    }
}

/// Checks the document's shape; the error names the first bad entry.
fn validate(doc: &Value) -> Result<Report, String> {
    let list = doc
        .get("quotas")
        .and_then(Value::as_array)
        .ok_or("no \"quotas\" array")?;
    let mut over_limit = Vec::new();
    for (i, q) in list.iter().enumerate() {
        let name = q
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| format!("quota #{} has no name", i + 1))?;
        let label = match q.get("tenant").and_then(Value::as_str) {
            Some(t) => format!("\"{name}\" of tenant \"{t}\""),
            None => format!("\"{name}\""),
        };
        let count = |field: &str| {
            q.get(field).and_then(Value::as_u64).ok_or_else(|| {
                format!(
                    "quota {label}: \"{field}\" is {}, expected an integer >= 0",
                    q.get(field)
                        .map(Value::to_string)
                        .unwrap_or_else(|| "missing".into())
                )
            })
        };
        let (limit, used) = (count("limit")?, count("used")?);
        if used > limit {
            over_limit.push(format!("{label} used {used} of {limit}"));
        }
    }
    Ok(Report {
        entries: list.len(),
        over_limit,
    })
}

neo_ops_sdk::export_check!(Quotas);

#[cfg(test)]
mod tests {
    use super::*;
    use neo_ops_sdk::serde_json::json;

    #[test]
    fn well_formed_quotas_pass_and_overuse_is_named() {
        let doc = json!({"quotas": [
            {"name": "orders_per_day", "tenant": "acme", "limit": 10000, "used": 12},
            {"name": "seats", "limit": 5, "used": 7},
        ]});
        assert_eq!(
            validate(&doc),
            Ok(Report {
                entries: 2,
                over_limit: vec!["\"seats\" used 7 of 5".into()]
            })
        );
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            validate(&json!({"items": []})),
            Err("no \"quotas\" array".into())
        );
        assert_eq!(
            validate(&json!({"quotas": [{"limit": 1, "used": 0}]})),
            Err("quota #1 has no name".into())
        );
        assert_eq!(
            validate(
                &json!({"quotas": [{"name": "sms", "tenant": "acme", "limit": -1, "used": 0}]})
            ),
            Err(
                "quota \"sms\" of tenant \"acme\": \"limit\" is -1, expected an integer >= 0"
                    .into()
            )
        );
        assert_eq!(
            validate(&json!({"quotas": [{"name": "sms", "limit": 3, "used": 1.5}]})),
            Err("quota \"sms\": \"used\" is 1.5, expected an integer >= 0".into())
        );
        assert_eq!(
            validate(&json!({"quotas": [{"name": "sms", "limit": 3}]})),
            Err("quota \"sms\": \"used\" is missing, expected an integer >= 0".into())
        );
    }
}
