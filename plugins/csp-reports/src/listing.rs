//! `GET /admin/csp/reports`: the stored reports, newest first, as
//! `{"ok": true, "data": {"reports": [...]}}`, or as an HTML table when the
//! client asks for `text/html` (every value escaped: reports are written by
//! whoever can reach the public endpoint).

use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Output, html::escape, reply};

use crate::store;

pub fn list(req: &HttpRequest) -> Result<Output, Failure> {
    let reports = store::newest()?;
    if wants_html(req) {
        return Ok(Output {
            status: 200,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: page(&reports).into_bytes(),
        });
    }
    Ok(reply::ok(json!({ "reports": reports })))
}

fn wants_html(req: &HttpRequest) -> bool {
    req.headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("accept") && v.contains("text/html"))
}

/// Directive, document and blocked resource, whichever format the report came in.
fn summary(entry: &Json) -> [&str; 3] {
    let report = &entry["report"];
    let (body, keys) = if entry["kind"] == "csp-report" {
        (
            &report["csp-report"],
            ["effective-directive", "document-uri", "blocked-uri"],
        )
    } else {
        (
            &report["body"],
            ["effectiveDirective", "documentURL", "blockedURL"],
        )
    };
    keys.map(|k| body[k].as_str().unwrap_or(""))
}

fn page(reports: &[Json]) -> String {
    let rows: String = reports
        .iter()
        .map(|entry| {
            let [directive, document, blocked] = summary(entry);
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(entry["received_at"].as_str().unwrap_or("")),
                escape(entry["kind"].as_str().unwrap_or("")),
                escape(directive),
                escape(document),
                escape(blocked),
            )
        })
        .collect();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>CSP reports</title></head>\n\
         <body><h1>CSP reports</h1><p>{} report(s), newest first.</p>\n\
         <table><tr><th>received</th><th>kind</th><th>directive</th><th>document</th><th>blocked</th></tr>\n\
         {rows}</table></body></html>\n",
        reports.len()
    )
}
