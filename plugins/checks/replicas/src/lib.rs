//! Preflight `replicas`: enough healthy replicas, from a gauge on a
//! Prometheus text-format metrics endpoint. Config: `metrics_url` (unset =
//! skip), `gauge` (default `neo_replicas_healthy`), `min_healthy` (default 2).
//! Every series of the gauge (one per label set, e.g. per deployment) must be
//! at least `min_healthy`; fails naming each series below it, or when the
//! gauge is absent.
//!
//! Grants: `http = ["<metrics origin>"]`.

mod prometheus;

use check_common::http;
use check_common::{fail, pass, settings, skip};
use neo_ops_sdk::{Check, CheckOutcome};

const DEFAULT_GAUGE: &str = "neo_replicas_healthy";
const DEFAULT_MIN: f64 = 2.0;
const SETUP_HINT: &str = "set metrics_url in this check's config to the Prometheus metrics endpoint \
    that exports the replica gauge, and add its origin to the check's grants.http";

struct Replicas;

impl Check for Replicas {
    fn check() -> CheckOutcome {
        let Some(url) = settings::get("metrics_url") else {
            return skip(
                "replica metrics not configured (config metrics_url unset)",
                SETUP_HINT,
            );
        };
        let gauge = settings::get("gauge").unwrap_or_else(|| DEFAULT_GAUGE.to_string());
        let (min, timeout) = match (
            settings::real("min_healthy", DEFAULT_MIN),
            http::timeout_ms(),
        ) {
            (Ok(m), Ok(t)) => (m, t),
            (Err(e), _) | (_, Err(e)) => {
                return fail(
                    e,
                    "set min_healthy to a number and request_timeout to a duration (e.g. \"5s\")",
                );
            }
        };
        let shown = http::redact(&url);
        let down = "check that the metrics endpoint is up and reachable from the host";
        let resp = match http::get_ok(&url, timeout, SETUP_HINT, down) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let text = String::from_utf8_lossy(&resp.body);
        let series = prometheus::samples(&text, &gauge);
        if series.is_empty() {
            return fail(
                format!("no {gauge} samples at {shown}"),
                "check that the exporter publishes the gauge (config gauge names it)",
            );
        }
        let shown_series = |s: &prometheus::Sample| format!("{}{} = {}", gauge, s.labels, s.value);
        let low: Vec<String> = series
            .iter()
            .filter(|s| s.value.is_nan() || s.value < min)
            .map(shown_series)
            .collect();
        if low.is_empty() {
            pass(format!(
                "{} (at least {min} healthy)",
                series
                    .iter()
                    .map(shown_series)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            fail(
                format!("fewer than {min} healthy replicas: {}", low.join(", ")),
                "look at the unhealthy replicas (their /readyz and logs) and restart or scale them up",
            )
        }
    }
}

neo_ops_sdk::export_check!(Replicas);
