//! Status page (spec "Status Endpoint"): `GET /status.json` as the spec
//! defines it (`state`, `incidents`) plus the Atlassian Statuspage v2 fields
//! aggregators read (`page`, `status.indicator`, `status.description`);
//! Statuspage's own documents (`/api/v2/status.json`, `/api/v2/summary.json`,
//! `/api/v2/incidents/unresolved.json`); a human page at `/status`; and
//! `/status/health` (503 while degraded) for checkers that read only the
//! status code. Commands: `start "<title>" "<details>" [--impact
//! minor|major|critical]`, `update "<title>" "<message>"`, `resolve "<title>"`.

mod documents;
mod incidents;
mod page;

use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, args::Args, reply};

use documents::{Health, Status};
use incidents::{Impact, Incident};

struct StatusPage;

const USAGE: &str = "usage: status-page start \"<title>\" \"<details>\" [--impact minor|major|critical] \
                     | status-page update \"<title>\" \"<message>\" | status-page resolve \"<title>\"";

impl Plugin for StatusPage {
    const USAGE: &'static str = USAGE;

    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let board = incidents::board()?;
        let active = &board.active;
        let public = |out: Output| reply::public_document(req, out);
        Ok(match req.route.as_str() {
            "/api/v2/status.json" => public(reply::json(200, &documents::status(&board))),
            "/api/v2/summary.json" => public(reply::json(200, &documents::summary(&board))),
            "/api/v2/incidents/unresolved.json" => {
                public(reply::json(200, &documents::unresolved(&board)))
            }
            "/status/health" => health(active),
            "/status" => page::html(
                active,
                &incidents::recently_resolved(14)?,
                &Status::of(active),
            ),
            "/status/style.css" => page::css(),
            _ => public(reply::json(200, &documents::seed(&board))),
        })
    }

    fn command(_: &Invocation, args: &Args) -> Result<Output, Failure> {
        args.strict(&["--impact"], &[], USAGE)?;
        match args.positionals(&["--impact"]).as_slice() {
            ["start", title, rest @ ..] if rest.len() <= 1 => {
                let impact = match args.value("--impact") {
                    None => Impact::Minor,
                    Some(v) => Impact::parse(v).ok_or_else(|| {
                        reply::fail(
                            400,
                            format!("unknown impact \"{v}\" (minor, major or critical)"),
                        )
                    })?,
                };
                incidents::start(title, rest.first().copied().unwrap_or(""), impact)
            }
            ["update", title, message] => incidents::update(title, message),
            ["resolve", title] => incidents::resolve(title),
            _ => Err(reply::fail(400, USAGE)),
        }
    }
}

/// 200 while operational, 503 while degraded: for uptime checkers that
/// read only the status code.
fn health(active: &[Incident]) -> Output {
    let (status, state) = if active.is_empty() {
        (200, "operational")
    } else {
        (503, "degraded")
    };
    let body = Health {
        state,
        incidents: active.len(),
    };
    let mut out = reply::json(status, &body);
    out.headers
        .push(("cache-control".into(), "no-cache".into()));
    out.headers
        .push(("access-control-allow-origin".into(), "*".into()));
    out
}

neo_ops_sdk::export_plugin!(StatusPage);
