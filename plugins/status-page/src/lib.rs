//! Status page (spec "Status Endpoint"): `GET /status.json` as the spec
//! defines it (`state`, `incidents`) plus the Atlassian Statuspage v2 fields
//! aggregators read (`page`, `status.indicator`, `status.description`);
//! Statuspage's own documents (`/api/v2/status.json`, `/api/v2/summary.json`,
//! `/api/v2/incidents/unresolved.json`); a human page at `/status`; and
//! `/status/health` (503 while degraded) for checkers that read only the
//! status code. Commands: `start "<title>" "<details>" [--impact
//! minor|major|critical]`, `update "<title>" "<message>"`, `resolve "<title>"`.
//! While the master database does not answer, the routes serve the last
//! board kept in kv (`snapshot`), saying how old it is.

mod documents;
mod incidents;
mod page;
mod snapshot;

use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, args::Args, reply, time};

use documents::{Health, Status};
use incidents::{Board, Impact, Incident};

/// What a request shows: the board live from the database, or as kept.
struct View {
    board: Board,
    /// Resolved incidents, for the human page only.
    resolved: Vec<Incident>,
    /// When the kept board was read (RFC 3339); `None` when live.
    as_of: Option<String>,
}

impl View {
    fn read(with_resolved: bool) -> Result<Self, Failure> {
        let live = (|| {
            Ok::<_, Failure>(View {
                board: incidents::board()?,
                resolved: if with_resolved {
                    incidents::recently_resolved(snapshot::RESOLVED_DAYS)?
                } else {
                    Vec::new()
                },
                as_of: None,
            })
        })();
        match live {
            Ok(view) => {
                snapshot::now_and_then();
                Ok(view)
            }
            // The database is away (or every connection busy): the board
            // as last kept, if there is one.
            Err(f) if f.status == 503 => match snapshot::load() {
                Some(kept) => Ok(View {
                    board: kept.board,
                    resolved: kept.resolved,
                    as_of: Some(time::rfc3339_millis(kept.taken_at)),
                }),
                None => Err(f),
            },
            Err(f) => Err(f),
        }
    }
}

struct StatusPage;

const USAGE: &str = "usage: status-page start \"<title>\" \"<details>\" [--impact minor|major|critical] \
                     | status-page update \"<title>\" \"<message>\" [--impact minor|major|critical] \
                     | status-page resolve \"<title>\"";

impl Plugin for StatusPage {
    const USAGE: &'static str = USAGE;

    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        if req.route == "/status/style.css" {
            return Ok(page::css());
        }
        let view = match View::read(req.route == "/status") {
            Ok(view) => view,
            // A person gets a page, not the machines' error envelope.
            Err(f) if req.route == "/status" => return Ok(page::unavailable(f.status)),
            Err(f) => return Err(f),
        };
        let (board, as_of) = (&view.board, view.as_of.as_deref());
        let active = &board.active;
        let dated = |mut out: Output| {
            if let Some(as_of) = as_of {
                // The documents keep their shape; the header says they are
                // kept, also to a widget on another origin (which sees only
                // the headers it is allowed to).
                out.headers.push(("x-status-as-of".into(), as_of.into()));
                out.headers.push((
                    "access-control-expose-headers".into(),
                    "x-status-as-of".into(),
                ));
            }
            out
        };
        // Dated before it is tagged: the tag covers the header.
        let public = |out: Output| reply::public_document(req, dated(out));
        Ok(match req.route.as_str() {
            "/api/v2/status.json" => public(reply::json(200, &documents::status(board))),
            "/api/v2/summary.json" => public(reply::json(200, &documents::summary(board))),
            "/api/v2/incidents/unresolved.json" => {
                public(reply::json(200, &documents::unresolved(board)))
            }
            "/status/health" => dated(health(active, as_of)),
            "/status" => dated(page::html(
                active,
                &view.resolved,
                &Status::of(active),
                as_of,
            )),
            _ => public(reply::json(200, &documents::seed(board))),
        })
    }

    fn command(_: &Invocation, args: &Args) -> Result<Output, Failure> {
        args.strict(&["--impact"], &[], USAGE)?;
        let impact = match args.value("--impact") {
            None => None,
            Some(v) => Some(Impact::parse(v).ok_or_else(|| {
                reply::fail(
                    400,
                    format!("unknown impact \"{v}\" (minor, major or critical)"),
                )
            })?),
        };
        match args.positionals(&["--impact"]).as_slice() {
            ["start", title, rest @ ..] if rest.len() <= 1 => incidents::start(
                title,
                rest.first().copied().unwrap_or(""),
                impact.unwrap_or(Impact::Minor),
            ),
            // An escalation (or its easing) goes with the update saying why.
            ["update", title, message] => incidents::update(title, message, impact),
            ["resolve", _] if impact.is_some() => Err(reply::fail(
                400,
                "--impact is for start and update: a resolved incident has none",
            )),
            ["resolve", title] => incidents::resolve(title),
            _ => Err(reply::fail(400, USAGE)),
        }
        .inspect(|_| snapshot::save(snapshot::By::Change))
    }
}

/// For uptime checkers that read only the status code: 200 while
/// operational, 503 while degraded, and 503 `unknown` while only a kept
/// board can be read (a checker must not hear "healthy" from a board read
/// before the database went away).
fn health(active: &[Incident], as_of: Option<&str>) -> Output {
    let (status, state) = match (as_of, active.is_empty()) {
        (Some(_), _) => (503, "unknown"),
        (None, true) => (200, "operational"),
        (None, false) => (503, "degraded"),
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
