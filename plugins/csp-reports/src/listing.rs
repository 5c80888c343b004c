//! `GET /admin/csp/reports`: the stored reports, newest first, as
//! `{"ok": true, "data": {"reports": [...]}}` (each with the `count` of
//! identical reports it stands for and when the last `last_seen`), or as an HTML table when the
//! client asks for `text/html` (every value escaped: reports are written by
//! whoever can reach the public endpoint).

use neo_ops_sdk::serde_json::Value as Json;
use neo_ops_sdk::{Failure, HttpRequest, Output, html::escape};

use crate::store;

pub fn list(req: &HttpRequest) -> Result<Output, Failure> {
    let limit = req.number("limit", store::KEEP, 1..=store::KEEP)?;
    if req.wants_html() {
        let mut rows = String::new();
        let shown = store::each_recent(limit, |shown| rows.push_str(&row(&shown)))?;
        return Ok(Output {
            status: 200,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: page(shown, &rows).into_bytes(),
        });
    }
    // The stored entries are JSON already: copied into the envelope as they
    // are, not parsed into one big document and serialized again.
    let mut body = String::from(r#"{"ok":true,"data":{"reports":["#);
    let mut first = true;
    store::each_recent(limit, |shown| {
        if !std::mem::take(&mut first) {
            body.push(',');
        }
        with_count(&mut body, &shown);
    })?;
    body.push_str("]}}");
    Ok(Output {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into_bytes(),
    })
}

/// Directive, document and blocked resource, whichever format the report came in.
fn summary(entry: &Json) -> [&str; 3] {
    let mut report = &entry["report"];
    if entry["kind"] == "overflow" {
        report = &report["first"];
    }
    let (body, keys) = if report.get("csp-report").is_some() {
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

/// The stored object with `count` and `last_seen` added before its closing
/// brace (stored entries are always JSON objects).
fn with_count(body: &mut String, shown: &store::Shown) {
    let raw = shown.raw.trim_end();
    body.push_str(raw.strip_suffix('}').unwrap_or(raw));
    body.push_str(&format!(
        ",\"count\":{},\"last_seen\":{}}}",
        shown.count,
        Json::from(shown.last_seen)
    ));
}

fn row(shown: &store::Shown) -> String {
    let entry = shown.entry;
    let [directive, document, blocked] = summary(entry);
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        escape(entry["received_at"].as_str().unwrap_or("")),
        shown.count,
        escape(shown.last_seen),
        escape(entry["kind"].as_str().unwrap_or("")),
        escape(directive),
        escape(document),
        escape(blocked),
    )
}

fn page(shown: usize, rows: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>CSP reports</title></head>\n\
         <body><h1>CSP reports</h1><p>{} report(s), newest first.</p>\n\
         <table><tr><th>received</th><th>count</th><th>last seen</th><th>kind</th><th>directive</th><th>document</th><th>blocked</th></tr>\n\
         {rows}</table></body></html>\n",
        shown
    )
}
