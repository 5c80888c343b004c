//! Owner digest (spec "Owner Digest"): a daily summary mailed to each tenant's
//! owner for the tenant's business day in its own time zone.
//!
//! `owner-digest --tenant NAME [--date YYYY-MM-DD] [--all-tenants] [--dry-run] [--json]`,
//! and nightly from a schedule with `--all-tenants`. At most one digest per
//! tenant and day: a kv lock keeps replicas apart and `digest_sends` records
//! what was sent. A failed send records nothing, so the next run sends it.

mod figures;
mod render;
mod send;

use chrono::NaiveDate;
use neo_ops_sdk::days as day;
use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, Invocation, Output, Plugin, Trigger, args::Args, config, reply, time};

struct OwnerDigest;

const USAGE: &str = "usage: owner-digest --tenant NAME | --all-tenants \
                     [--date YYYY-MM-DD] [--dry-run] [--json]";

impl Plugin for OwnerDigest {
    fn run(inv: Invocation) -> Result<Output, Failure> {
        let (argv, now) = match inv.trigger {
            Trigger::Command(argv) => (argv, time::now_micros()),
            // A late or retried slot still digests the day it was due for.
            Trigger::Schedule(ev) => (ev.args, ev.slot),
            _ => {
                return Err(reply::fail(
                    400,
                    "owner-digest runs from a command or a schedule",
                ));
            }
        };
        let req = Request::parse(&Args::new(&argv), inv.dry_run, now)?;
        let tenants = tenants(&req.selection)?;
        let results: Vec<TenantResult> = tenants.iter().map(|t| digest_for(t, &req)).collect();
        respond(&req, &results)
    }
}

enum Selection {
    One(String),
    All,
}

/// What this run was asked to do.
struct Request {
    selection: Selection,
    date: Option<NaiveDate>,
    now_micros: i64,
    dry_run: bool,
    json: bool,
    top_n: i64,
    lock_ttl_ms: u64,
}

impl Request {
    fn parse(args: &Args, dry_run: bool, now_micros: i64) -> Result<Self, Failure> {
        let selection = match (args.value("--tenant"), args.flag("--all-tenants")) {
            (Some(t), false) => Selection::One(t.to_string()),
            (None, true) => Selection::All,
            _ => return Err(reply::fail(400, USAGE)),
        };
        let date = args
            .value("--date")
            .map(day::parse_date)
            .transpose()
            .map_err(|e| reply::fail(400, e))?;
        Ok(Self {
            selection,
            date,
            now_micros,
            dry_run: dry_run || args.flag("--dry-run"),
            json: args.flag("--json"),
            top_n: setting("top_items", 5)?,
            lock_ttl_ms: setting::<u64>("lock_ttl_seconds", 300)? * 1000,
        })
    }
}

/// A positive number from the manifest's `config`, or `default`.
fn setting<T: std::str::FromStr + Default + PartialOrd>(
    key: &str,
    default: T,
) -> Result<T, Failure> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| *n > T::default())
            .ok_or_else(|| {
                reply::fail(
                    500,
                    format!("config {key} \"{v}\" is not a positive number"),
                )
            }),
    }
}

/// A tenant's master row.
pub struct Tenant {
    pub name: String,
    pub display_name: String,
    pub time_zone: String,
    pub owner_email: Option<String>,
}

const TENANTS: &str = "SELECT name, display_name, time_zone, owner_email FROM tenants \
                       WHERE deleted_at IS NULL";

fn tenants(selection: &Selection) -> Result<Vec<Tenant>, Failure> {
    let rows = match selection {
        Selection::One(name) => db::query(
            "master",
            &format!("{TENANTS} AND name = $1"),
            &[Value::from(name.as_str())],
        )?,
        Selection::All => db::query("master", &format!("{TENANTS} ORDER BY name"), &[])?,
    };
    let list: Vec<Tenant> = rows
        .iter()
        .map(|r| Tenant {
            name: r.text("name").unwrap_or_default().to_string(),
            display_name: r.text("display_name").unwrap_or_default().to_string(),
            time_zone: r.text("time_zone").unwrap_or("Asia/Kolkata").to_string(),
            owner_email: r
                .text("owner_email")
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string),
        })
        .collect();
    if let (Selection::One(name), true) = (selection, list.is_empty()) {
        return Err(reply::fail(404, format!("tenant \"{name}\" not found")));
    }
    Ok(list)
}

/// What happened for one tenant.
pub enum Outcome {
    Sent {
        to: String,
        message_id: String,
        digest: figures::Digest,
    },
    Preview {
        to: Option<String>,
        digest: figures::Digest,
        text: String,
    },
    Skipped(String),
    Failed(Failure),
}

pub struct TenantResult {
    tenant: String,
    day: Option<NaiveDate>,
    outcome: Outcome,
}

fn digest_for(t: &Tenant, req: &Request) -> TenantResult {
    let result = |day, outcome| TenantResult {
        tenant: t.name.clone(),
        day,
        outcome,
    };
    let tz = match day::zone(&t.time_zone) {
        Ok(tz) => tz,
        Err(e) => {
            let msg = format!("tenant \"{}\": {e}", t.name);
            return result(None, Outcome::Failed(reply::fail(500, msg)));
        }
    };
    let day = req.date.unwrap_or_else(|| day::date_at(tz, req.now_micros));
    let job = send::Job {
        tenant: t,
        day,
        range: day::range(tz, day),
        top_n: req.top_n,
        lock_ttl_ms: req.lock_ttl_ms,
    };
    let outcome = if req.dry_run {
        job.preview()
    } else {
        job.send_once()
    };
    let outcome = outcome.unwrap_or_else(Outcome::Failed);
    result(Some(day), outcome)
}

/// The command's output; a run with any failure fails as a whole, after
/// every tenant has been tried.
fn respond(req: &Request, results: &[TenantResult]) -> Result<Output, Failure> {
    let failures: Vec<&Failure> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(f) => Some(f),
            _ => None,
        })
        .collect();
    if let Some(first) = failures.first() {
        let sent = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Sent { .. }))
            .count();
        let messages: Vec<&str> = failures.iter().map(|f| f.message.as_str()).collect();
        let prefix = if results.len() > 1 {
            format!(
                "{} of {} digests failed ({sent} sent): ",
                failures.len(),
                results.len()
            )
        } else {
            String::new()
        };
        return Err(reply::fail(
            first.status,
            format!("{prefix}{}", messages.join("; ")),
        ));
    }
    if req.json {
        let items: Vec<Json> = results.iter().map(result_json).collect();
        return Ok(reply::ok(json!({ "results": items })));
    }
    let lines: String = results.iter().map(result_line).collect();
    Ok(reply::text(
        200,
        if lines.is_empty() {
            "no tenants\n".into()
        } else {
            lines
        },
    ))
}

fn result_json(r: &TenantResult) -> Json {
    let mut v = json!({
        "tenant": r.tenant,
        "business_day": r.day.map(|d| d.to_string()),
    });
    let extra = match &r.outcome {
        Outcome::Sent {
            to,
            message_id,
            digest,
        } => {
            json!({"status": "sent", "to": to, "message_id": message_id, "digest": digest.to_json()})
        }
        Outcome::Preview { to, digest, .. } => {
            json!({"status": "dry-run", "to": to, "digest": digest.to_json()})
        }
        Outcome::Skipped(reason) => json!({"status": "skipped", "reason": reason}),
        Outcome::Failed(f) => json!({"status": "failed", "reason": f.message}),
    };
    if let (Some(obj), Json::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

fn result_line(r: &TenantResult) -> String {
    let day = r.day.map(|d| d.to_string()).unwrap_or_default();
    match &r.outcome {
        Outcome::Sent { to, message_id, .. } => {
            format!("{} {day}: sent to {to} ({message_id})\n", r.tenant)
        }
        Outcome::Preview { to, text, .. } => format!(
            "{} {day}: dry run, would send to {}\n{text}\n",
            r.tenant,
            to.as_deref().unwrap_or("nobody (no owner email)")
        ),
        Outcome::Skipped(reason) => format!("{} {day}: skipped, {reason}\n", r.tenant),
        Outcome::Failed(f) => format!("{} {day}: failed, {}\n", r.tenant, f.message),
    }
}

neo_ops_sdk::export_plugin!(OwnerDigest);
