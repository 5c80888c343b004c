//! CSP violation reports (spec "CSP Reports"): browsers `POST /csp/report`
//! (public) in either wire format; admins read the newest 500 with
//! `GET /admin/csp/reports`. Every URL's `token` (and other secret-looking)
//! query parameters are redacted before anything is stored. The host puts
//! `Content-Security-Policy-Report-Only` pointing here on every HTML
//! response (`CSP_REPORT_ONLY` in host/src/triggers/http.rs).

mod cap;
mod intake;
mod listing;
mod rate;
mod settings;
mod store;

use neo_ops_sdk::{Failure, Invocation, Output, Plugin, Trigger, reply};

struct CspReports;

impl Plugin for CspReports {
    fn run(inv: Invocation) -> Result<Output, Failure> {
        let Trigger::Http(req) = inv.trigger else {
            return Err(reply::fail(400, "csp-reports runs from its routes"));
        };
        match req.method.as_str() {
            "POST" => intake::receive(&req, &settings::Settings::load()?),
            "GET" => listing::list(&req),
            other => Err(reply::fail(405, format!("method \"{other}\" not allowed"))),
        }
    }
}

neo_ops_sdk::export_plugin!(CspReports);
