//! The human status page at `/status`: the state, active incidents with
//! their updates, and the last 14 days of resolved ones. No script, no
//! inline style (the host's CSP stays quiet); the stylesheet is its own
//! route and adapts to narrow screens and dark mode.

use neo_ops_sdk::html::escape;
use neo_ops_sdk::{Output, time};

use crate::documents::Status;
use crate::incidents::Incident;

/// `as_of`: when the board shown was kept, if the database did not answer.
pub fn html(
    active: &[Incident],
    resolved: &[Incident],
    status: &Status,
    as_of: Option<&str>,
) -> Output {
    let state_class = if active.is_empty() { "ok" } else { "down" };
    let mut body = opening(state_class, status.description);
    if let Some(as_of) = as_of {
        body.push_str(&format!(
            "<p class=\"meta\">Live status is unavailable: this is the page as of {}.</p>\n",
            escape(as_of)
        ));
    }
    if !active.is_empty() {
        body.push_str("<h2>Active incidents</h2>\n");
        for i in active {
            body.push_str(&incident(i));
        }
    }
    body.push_str("<h2>Resolved in the last 14 days</h2>\n");
    if resolved.is_empty() {
        body.push_str("<p class=\"none\">No incidents.</p>\n");
    }
    for i in resolved {
        body.push_str(&incident(i));
    }
    body.push_str("</main></body></html>\n");
    Output {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-cache".into()),
        ],
        body: body.into_bytes(),
    }
}

/// The page down to its state line.
fn opening(state_class: &str, state: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Status</title><link rel=\"stylesheet\" href=\"/status/style.css\"></head>\n<body><main>\n\
         <h1>Status</h1>\n<p class=\"state {state_class}\">{}</p>\n",
        escape(state)
    )
}

/// The page when there is no board to show (the database away and none
/// kept yet): a page still, for the person who opened it, with `status`
/// (`Retry-After` on a 503).
pub fn unavailable(status: u16) -> Output {
    let mut body = opening("unknown", "Status unknown");
    body.push_str(
        "<p class=\"meta\">Live status is unavailable right now. Try again in a minute.</p>\n\
         </main></body></html>\n",
    );
    let mut headers = vec![
        ("content-type".into(), "text/html; charset=utf-8".into()),
        ("cache-control".into(), "no-store".into()),
    ];
    if status == 503 {
        headers.push(("retry-after".into(), "30".into()));
    }
    Output {
        status,
        headers,
        body: body.into_bytes(),
    }
}

fn incident(i: &Incident) -> String {
    let when = match i.resolved_at {
        Some(r) => format!(
            "{} – resolved {}",
            time::rfc3339(i.started_at),
            time::rfc3339(r)
        ),
        None => format!("since {}", time::rfc3339(i.started_at)),
    };
    let mut out = format!(
        "<article class=\"incident {impact}\"><h3>{title}</h3><p class=\"meta\">{impact} impact · {when}</p><p>{details}</p>\n",
        impact = i.impact.as_str(),
        title = escape(&i.title),
        details = escape(&i.details),
    );
    for u in &i.updates {
        out.push_str(&format!(
            "<p class=\"update\"><time>{}</time> {}</p>\n",
            time::rfc3339(u.at),
            escape(&u.message)
        ));
    }
    out.push_str("</article>\n");
    out
}

pub fn css() -> Output {
    Output {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/css; charset=utf-8".into()),
            ("cache-control".into(), "max-age=300".into()),
        ],
        body: CSS.as_bytes().to_vec(),
    }
}

const CSS: &str = "\
:root { color-scheme: light dark; --fg: #1b1f23; --bg: #fff; --muted: #57606a; --ok: #1a7f37; --down: #cf222e; --line: #d0d7de; --on-state: #fff; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #8d96a0; --ok: #3fb950; --down: #f85149; --line: #30363d; --on-state: #0d1117; } }
body { margin: 0; background: var(--bg); color: var(--fg); font: 16px/1.5 system-ui, sans-serif; }
main { max-width: 46rem; margin: 0 auto; padding: 1rem; }
.state { font-size: 1.25rem; font-weight: 600; padding: .75rem 1rem; border-radius: .5rem; color: var(--on-state); }
.state.ok { background: var(--ok); } .state.down { background: var(--down); }
.state.unknown { background: var(--muted); }
.incident { border: 1px solid var(--line); border-radius: .5rem; padding: .5rem 1rem; margin: .75rem 0; overflow-wrap: anywhere; }
.meta, .update time, .none { color: var(--muted); font-size: .9rem; }
.update { border-top: 1px solid var(--line); padding-top: .5rem; }
";
