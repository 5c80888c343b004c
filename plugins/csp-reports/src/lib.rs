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

use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin};

struct CspReports;

impl Plugin for CspReports {
    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        if req.is("POST", "/csp/report") {
            intake::receive(req, &settings::Settings::load()?)
        } else {
            listing::list(req)
        }
    }
}

neo_ops_sdk::export_plugin!(CspReports);
