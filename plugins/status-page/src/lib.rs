//! Status page (spec "Status Endpoint"): `GET /status.json`, and the
//! `start "<title>" "<details>"` / `resolve "<title>"` commands.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{
    ErrorCode, Failure, HttpRequest, Invocation, Output, Plugin, args::Args, reply, time,
};

struct StatusPage;

const ACTIVE: &str = "SELECT title, details, started_at FROM incidents \
                      WHERE resolved_at IS NULL ORDER BY started_at, id";

impl Plugin for StatusPage {
    fn http(_: &Invocation, _: &HttpRequest) -> Result<Output, Failure> {
        status()
    }

    fn command(_: &Invocation, args: &Args) -> Result<Output, Failure> {
        args.strict(&[], &[], USAGE)?;
        match args.positionals(&[]).as_slice() {
            ["start", title, rest @ ..] if rest.len() <= 1 => {
                start(title, rest.first().copied().unwrap_or(""))
            }
            ["resolve", title] => resolve(title),
            _ => Err(reply::fail(400, USAGE)),
        }
    }
}

fn status() -> Result<Output, Failure> {
    let rows = db::query("master", ACTIVE, &[])?;
    let incidents: Vec<Json> = rows
        .iter()
        .map(|r| {
            json!({
                "title": r.text("title"),
                "details": r.text("details"),
                "started_at": r.get("started_at").as_timestamp().map(time::rfc3339),
            })
        })
        .collect();
    let state = if incidents.is_empty() {
        "operational"
    } else {
        "degraded"
    };
    let mut out = reply::json(200, &json!({"state": state, "incidents": incidents}));
    out.headers
        .push(("cache-control".into(), "no-cache".into()));
    Ok(out)
}

const USAGE: &str =
    "usage: status-page start \"<title>\" \"<details>\" | status-page resolve \"<title>\"";

fn start(title: &str, details: &str) -> Result<Output, Failure> {
    if title.trim().is_empty() {
        return Err(reply::fail(400, "incident title must not be empty"));
    }
    let params = [
        Value::from(title),
        Value::from(details),
        Value::Timestamp(time::now_micros()),
    ];
    match db::execute(
        "master",
        "INSERT INTO incidents (title, details, started_at) VALUES ($1, $2, $3)",
        &params,
    ) {
        Ok(_) => Ok(reply::text(200, format!("started incident \"{title}\"\n"))),
        Err(e) if e.code == ErrorCode::Conflict => Err(reply::fail(
            409,
            format!("incident \"{title}\" is already active"),
        )),
        Err(e) => Err(e.into()),
    }
}

fn resolve(title: &str) -> Result<Output, Failure> {
    let params = [Value::Timestamp(time::now_micros()), Value::from(title)];
    let changed = db::execute(
        "master",
        "UPDATE incidents SET resolved_at = $1 WHERE title = $2 AND resolved_at IS NULL",
        &params,
    )?;
    if changed == 0 {
        return Err(reply::fail(
            404,
            format!("no active incident titled \"{title}\""),
        ));
    }
    Ok(reply::text(200, format!("resolved incident \"{title}\"\n")))
}

neo_ops_sdk::export_plugin!(StatusPage);
