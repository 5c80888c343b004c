//! The web console for the people on call (`GET /admin/`): one page of our
//! own HTML, CSS and JavaScript, compiled into the component. It holds no
//! data and no authority: the page signs in with a bearer token kept in
//! `sessionStorage`, calls the same admin routes curl would, and the host
//! still checks the role on every one of them.
//!
//! No inline script or style and no `eval`, so the host's CSP (Report-Only
//! today) can be made enforcing without changing anything here.

use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, reply};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

struct Console;

impl Plugin for Console {
    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let (body, content_type) = match req.path.as_str() {
            "/admin" | "/admin/" => (INDEX, "text/html; charset=utf-8"),
            "/admin/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
            "/admin/console.css" => (STYLE, "text/css; charset=utf-8"),
            other => return Err(reply::fail(404, format!("no console page \"{other}\""))),
        };
        Ok(Output {
            status: 200,
            headers: vec![
                ("content-type".into(), content_type.into()),
                // Served with the build: a reload after an upgrade revalidates.
                ("cache-control".into(), "no-cache".into()),
                ("x-content-type-options".into(), "nosniff".into()),
                ("x-frame-options".into(), "DENY".into()),
                ("referrer-policy".into(), "no-referrer".into()),
                // Enforced here, where a super_admin's token lives: the
                // page needs no inline script or style, so an injected one
                // is blocked, not only reported.
                ("content-security-policy".into(), CSP.into()),
            ],
            body: body.as_bytes().to_vec(),
        })
    }
}

/// The console's own policy, on top of the host's report-only one.
const CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

neo_ops_sdk::export_plugin!(Console);
