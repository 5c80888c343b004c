//! `POST /csp/report`: both wire formats browsers send.
//! - `report-uri`: `Content-Type: application/csp-report`, one
//!   `{"csp-report": {...}}` object;
//! - `report-to` (Reporting API): `Content-Type: application/reports+json`,
//!   an array of `{"type": "csp-violation", "age", "url", "user_agent",
//!   "body": {...}}`; other report types in the array are ignored.
//!
//! `application/json` is accepted with either shape. Checks run cheapest
//! first: request limit (429), content type (415), size (413), JSON (400),
//! reports in the body (413 past 100).
//! Identical reports collapse into one entry with a count (see `store`).
//! Success is 204 with no body, as browsers expect.

use neo_ops_sdk::serde_json::{self, Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Output, reply};

use crate::settings::Settings;
use crate::{cap, rate, store};
use neo_ops_sdk::redact::redact_json;

const ACCEPTED: &[&str] = &[
    "application/csp-report",
    "application/reports+json",
    "application/json",
];

/// What replaces a redacted value.
const MASK: &str = "REDACTED";

/// Reports one body may carry: browsers batch far fewer, and each costs
/// a few kv calls.
const MAX_REPORTS: usize = 100;

pub fn receive(req: &HttpRequest, settings: &Settings) -> Result<Output, Failure> {
    let client = rate::client(req.remote_addr.as_deref());
    let client = client.as_str();
    if let Some(retry_after) =
        rate::check(client, settings.request_limit, settings.rate_window_seconds)?
    {
        return Ok(too_many(retry_after));
    }
    let content_type = req.media_type();
    if !ACCEPTED.contains(&content_type.as_str()) {
        return Err(reply::fail(
            415,
            format!("unsupported content type \"{content_type}\""),
        ));
    }
    if req.body.len() as u64 > settings.max_body_bytes {
        return Err(reply::fail(
            413,
            format!(
                "report body of {} bytes exceeds {} bytes",
                req.body.len(),
                settings.max_body_bytes
            ),
        ));
    }
    let document: Json = serde_json::from_slice(&req.body)
        .map_err(|e| reply::fail(400, format!("malformed report: {e}")))?;
    let incoming = reports(document)?
        .into_iter()
        .map(|(kind, mut report)| {
            redact_json(&mut report, MASK);
            cap::report(&mut report);
            store::Incoming {
                kind,
                content_type: content_type.clone(),
                report,
            }
        })
        .collect();
    let (window, _) = rate::window(settings.rate_window_seconds);
    let client = store::Client {
        address: client,
        window,
        budget: settings.rate_limit,
        window_ms: settings.rate_window_seconds.saturating_mul(1000),
        share: settings.client_share,
    };
    store::save(&client, incoming)?;
    Ok(Output {
        status: 204,
        // A page on another origin posts here through the Reporting API.
        headers: vec![("access-control-allow-origin".into(), "*".into())],
        body: vec![],
    })
}

/// The reports in a body, each with its kind (`csp-report` or `csp-violation`).
fn reports(document: Json) -> Result<Vec<(&'static str, Json)>, Failure> {
    match document {
        Json::Object(ref map) if map.get("csp-report").is_some_and(Json::is_object) => {
            Ok(vec![("csp-report", document)])
        }
        Json::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let Json::Object(ref map) = item else {
                    return Err(malformed(&format!("report {i} is not an object")));
                };
                if map.get("type").and_then(Json::as_str) != Some("csp-violation") {
                    continue;
                }
                if !map.get("body").is_some_and(Json::is_object) {
                    return Err(malformed(&format!("report {i} has no \"body\" object")));
                }
                out.push(("csp-violation", item));
                if out.len() > MAX_REPORTS {
                    return Err(reply::fail(
                        413,
                        format!("more than {MAX_REPORTS} reports in one body"),
                    ));
                }
            }
            Ok(out)
        }
        _ => Err(malformed(
            "expected {\"csp-report\": {...}} or an array of reports",
        )),
    }
}

fn malformed(why: &str) -> Failure {
    reply::fail(400, format!("malformed report: {why}"))
}

/// 429 in the usual envelope, with `Retry-After`.
fn too_many(retry_after: u64) -> Output {
    let mut out = reply::json(
        429,
        &json!({"ok": false, "error": {"code": 429, "message": "too many reports"}}),
    );
    out.headers
        .push(("retry-after".into(), retry_after.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_and_their_errors() {
        let legacy = json!({"csp-report": {"document-uri": "https://a/"}});
        assert_eq!(
            reports(legacy.clone()).unwrap(),
            vec![("csp-report", legacy)]
        );

        let violation = json!({"type": "csp-violation", "url": "https://a/", "body": {}});
        let other = json!({"type": "deprecation", "body": {}});
        assert_eq!(
            reports(json!([other, violation.clone()])).unwrap(),
            vec![("csp-violation", violation.clone())]
        );
        assert!(reports(json!([])).unwrap().is_empty());
        let batch = |n| Json::Array(vec![violation.clone(); n]);
        assert_eq!(reports(batch(MAX_REPORTS)).unwrap().len(), MAX_REPORTS);
        let err = reports(batch(MAX_REPORTS + 1)).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (413, "more than 100 reports in one body")
        );

        for (bad, why) in [
            (json!({"report": {}}), "expected"),
            (json!({"csp-report": "x"}), "expected"),
            (json!([1]), "report 0 is not an object"),
            (
                json!([{"type": "csp-violation"}]),
                "report 0 has no \"body\" object",
            ),
        ] {
            let err = reports(bad).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.contains(why), "{}", err.message);
        }
    }
}
