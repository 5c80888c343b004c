//! Preflight `alertmanager`: Alertmanager answers `GET /-/healthy` with 2xx;
//! its version is read from `GET /api/v2/status` when that answers too. The
//! URL comes from config `alertmanager_url`, else the granted env var
//! `ALERTMANAGER_URL`; unset means skip. The URL's origin must be in the
//! manifest's `grants.http`.
//!
//! Grants: `env = ["ALERTMANAGER_URL"]`, `http = ["<alertmanager origin>"]`.

use check_common::http;
use check_common::{fail, pass, settings, skip};
use neo_ops_sdk::{Check, CheckOutcome, serde_json};

const SETUP_HINT: &str = "set ALERTMANAGER_URL (granted to this check) or config alertmanager_url, \
    e.g. \"http://alertmanager.internal:9093\", and add that origin to the check's grants.http";
const DOWN_HINT: &str = "check that Alertmanager is running and reachable from the host \
    (curl <url>/-/healthy); until it is, alerts from Prometheus are not delivered";

struct Alertmanager;

impl Check for Alertmanager {
    fn check() -> CheckOutcome {
        let base = match settings::lookup("alertmanager_url", "ALERTMANAGER_URL") {
            Ok(u) => u.trim_end_matches('/').to_string(),
            Err(why) => return skip(format!("Alertmanager {why}"), SETUP_HINT),
        };
        let timeout = match http::timeout_ms() {
            Ok(t) => t,
            Err(e) => return fail(e, "set request_timeout to a duration such as \"5s\""),
        };
        let healthy_url = format!("{base}/-/healthy");
        if let Err(outcome) = http::get_ok(&healthy_url, timeout, SETUP_HINT, DOWN_HINT) {
            return outcome;
        }
        let version = version(&format!("{base}/api/v2/status"), timeout);
        pass(format!(
            "Alertmanager{} at {} is healthy",
            version.map(|v| format!(" {v}")).unwrap_or_default(),
            http::redact(&base)
        ))
    }
}

/// The version `/api/v2/status` reports, if it answers.
fn version(url: &str, timeout: u32) -> Option<String> {
    let resp = http::get(url, timeout).ok().filter(http::success)?;
    let doc: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    doc["versionInfo"]["version"].as_str().map(str::to_string)
}

neo_ops_sdk::export_check!(Alertmanager);
