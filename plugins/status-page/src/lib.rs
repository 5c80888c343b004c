//! Status page (spec "Status Endpoint"): `GET /status.json` as the spec
//! defines it (`state`, `incidents`) plus the Atlassian Statuspage v2 fields
//! aggregators read (`page`, `status.indicator`, `status.description`);
//! Statuspage's own documents (`/api/v2/status.json`, `/api/v2/summary.json`,
//! `/api/v2/incidents/unresolved.json`); a human page at `/status`; and
//! `/status/health` (503 while degraded) for checkers that read only the
//! status code. Commands: `start "<title>" "<details>" [--impact
//! minor|major|critical]`, `update "<title>" "<message>"`, `resolve "<title>"`.

mod incidents;
mod page;

use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, args::Args, config, reply};

use incidents::{Impact, Incident};

struct StatusPage;

const USAGE: &str = "usage: status-page start \"<title>\" \"<details>\" [--impact minor|major|critical] \
                     | status-page update \"<title>\" \"<message>\" | status-page resolve \"<title>\"";

impl Plugin for StatusPage {
    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let active = incidents::active()?;
        let doc = |body: Json| reply::public_document(req, reply::json(200, &body));
        Ok(match req.route.as_str() {
            "/api/v2/status.json" => {
                doc(json!({"page": page_json(&active), "status": status_json(&active)}))
            }
            "/api/v2/summary.json" => doc(json!({
                "page": page_json(&active),
                "components": components_json(&active),
                "incidents": active.iter().map(Incident::statuspage_json).collect::<Vec<_>>(),
                "scheduled_maintenances": [],
                "status": status_json(&active),
            })),
            "/api/v2/incidents/unresolved.json" => doc(json!({
                "page": page_json(&active),
                "incidents": active.iter().map(Incident::statuspage_json).collect::<Vec<_>>(),
            })),
            "/status/health" => health(&active),
            "/status" => page::html(
                &active,
                &incidents::recently_resolved(14)?,
                &status_json(&active),
            ),
            "/status/style.css" => page::css(),
            _ => doc(json!({
                // The spec's document, then what Statuspage readers look for.
                "state": if active.is_empty() { "operational" } else { "degraded" },
                "incidents": active.iter().map(Incident::seed_json).collect::<Vec<_>>(),
                "page": page_json(&active),
                "status": status_json(&active),
            })),
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

/// The worst impact among active incidents, as Statuspage's indicator.
fn status_json(active: &[Incident]) -> Json {
    let worst = active.iter().map(|i| i.impact).max();
    let (indicator, description) = match worst {
        None => ("none", "All Systems Operational"),
        Some(Impact::Minor) => ("minor", "Minor Service Outage"),
        Some(Impact::Major) => ("major", "Partial System Outage"),
        Some(Impact::Critical) => ("critical", "Major Service Outage"),
    };
    json!({"indicator": indicator, "description": description})
}

fn page_json(active: &[Incident]) -> Json {
    let updated = active.iter().map(|i| i.updated_at).max();
    json!({
        "id": "neo",
        "name": config::text("page_name").unwrap_or_else(|| "neo".into()),
        "url": config::text("page_url").unwrap_or_default(),
        "time_zone": "Etc/UTC",
        "updated_at": updated.map(neo_ops_sdk::time::rfc3339),
    })
}

/// The platform's services (config `components`), each as bad as the worst
/// active incident.
fn components_json(active: &[Incident]) -> Vec<Json> {
    let status = match active.iter().map(|i| i.impact).max() {
        None => "operational",
        Some(Impact::Minor) => "degraded_performance",
        Some(Impact::Major) => "partial_outage",
        Some(Impact::Critical) => "major_outage",
    };
    config::list("components", &["POS", "Online ordering", "Kitchen display", "Webhooks"])
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"id": format!("c{}", i + 1), "name": name, "status": status, "position": i + 1}))
        .collect()
}

/// 200 while operational, 503 while degraded: for uptime checkers that
/// read only the status code.
fn health(active: &[Incident]) -> Output {
    let (status, state) = if active.is_empty() {
        (200, "operational")
    } else {
        (503, "degraded")
    };
    let mut out = reply::json(status, &json!({"state": state, "incidents": active.len()}));
    out.headers
        .push(("cache-control".into(), "no-cache".into()));
    out.headers
        .push(("access-control-allow-origin".into(), "*".into()));
    out
}

neo_ops_sdk::export_plugin!(StatusPage);
