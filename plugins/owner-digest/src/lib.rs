//! Owner digest (spec "Owner Digest"): a daily summary mailed to each tenant's
//! owner for the tenant's business day in its own time zone.
//!
//! `owner-digest --tenant NAME [--date YYYY-MM-DD] [--all-tenants] [--dry-run] [--json]`,
//! and nightly from a schedule with `--all-tenants` (each tenant's day so
//! far, or, where the slot falls before 20:00 local time, the day just
//! over: [`default_day`]). The schedule puts one
//! job per tenant on the plugin's own queue, so each digest has the whole
//! timeout to itself and a failed send (a relay down at 20:00) is retried
//! with backoff the same evening; a manifest without the queue grant
//! digests every tenant in the schedule's own invocation instead. At most
//! one digest per tenant and day: a kv lock keeps replicas apart and
//! `digest_sends` records what was sent. A failed send records nothing, so
//! the next run (or retry) sends it.

mod figures;
mod render;
mod send;

use chrono::NaiveDate;
use neo_ops_sdk::days as day;
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::tenants::{self, Tenant};
use neo_ops_sdk::{
    Failure, Invocation, Output, Plugin, QueueMessage, ScheduleEvent, args::Args, config, fan_out,
    log, reply, time,
};
use std::time::Duration;

struct OwnerDigest;

const USAGE: &str = "usage: owner-digest --tenant NAME | --all-tenants \
                     [--date YYYY-MM-DD] [--dry-run] [--json]";

impl Plugin for OwnerDigest {
    const DRY_RUN: bool = true;
    const USAGE: &'static str = USAGE;

    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        digest(inv, args, time::now_micros())
    }

    /// A late or retried slot still digests the day it was due for: the
    /// slot's instant travels in each tenant's job.
    fn schedule(inv: &Invocation, event: &ScheduleEvent) -> Result<Output, Failure> {
        let args = Args::new(&event.args);
        let req = Request::parse(&args, inv, event.slot)?;
        let tenants = tenants(&req)?;
        if req.dry_run {
            // A queued job carries no dry run: each would send for real.
            return digest_all(&tenants, &req);
        }
        match fan_out::enqueue_each(QUEUE, &tenants, &QueuedDay::json(&req)) {
            Err(e) if fan_out::no_queue(&e) => {
                log::log(
                    log::Level::Info,
                    &format!("no grant for queue \"{QUEUE}\": digesting every tenant in this run"),
                    &[],
                );
                digest_all(&tenants, &req)
            }
            Err(e) => Err(e.into()),
            Ok(out) => Ok(out),
        }
    }

    /// One tenant's digest, for the day its job says; a failure (or another
    /// run holding the day's lock) fails the job, so the queue retries it.
    fn queue(inv: &Invocation, message: &QueueMessage) -> Result<Output, Failure> {
        let Some(name) = &inv.tenant else {
            let msg = format!("digest job {} has no tenant", message.id);
            return Err(reply::fail(400, msg));
        };
        let job = QueuedDay::parse(&message.payload)?;
        let req = Request::new(Selection::One(name.clone()), job.date, job.now_micros)?;
        let Some(t) = tenants::find(name)? else {
            // Deleted since the job was queued: nobody to write to.
            return Ok(reply::text(
                200,
                format!("{name}: skipped, tenant not found\n"),
            ));
        };
        let result = digest_for(&t, &req);
        match &result.outcome {
            Outcome::Failed(f) => Err(f.clone()),
            Outcome::SentUnrecorded(f) => {
                log::log(log::Level::Error, &f.message, &[]);
                Ok(reply::text(200, result_line(&result)))
            }
            Outcome::Skipped(Skip::Elsewhere) => Err(reply::fail(
                503,
                format!("{}: another run is sending it; tried again later", t.name),
            )),
            _ => Ok(reply::text(200, result_line(&result))),
        }
    }
}

/// The queue the schedule puts one job per tenant on (`plugins.toml`).
const QUEUE: &str = "digest";

/// A queued digest: `{"now": <µs since the epoch>, "date": "YYYY-MM-DD" | null}`.
struct QueuedDay {
    now_micros: i64,
    date: Option<NaiveDate>,
}

impl QueuedDay {
    fn json(req: &Request) -> String {
        json!({"now": req.now_micros, "date": req.date.map(|d| d.to_string())}).to_string()
    }

    fn parse(payload: &str) -> Result<Self, Failure> {
        let bad = || {
            let expected = r#"{"now": <µs>, "date": "YYYY-MM-DD" | null}"#;
            reply::bad_job_payload("digest", payload, expected)
        };
        let v: Json = neo_ops_sdk::serde_json::from_str(payload).map_err(|_| bad())?;
        // 1970 to 9999, as dates are: the day arithmetic holds there.
        let now_micros = v
            .get("now")
            .and_then(Json::as_i64)
            .filter(|now| (0..LAST_MICROS).contains(now))
            .ok_or_else(bad)?;
        let date = match v.get("date") {
            None | Some(Json::Null) => None,
            Some(Json::String(d)) => Some(day::parse_date(d).map_err(|e| reply::fail(400, e))?),
            Some(_) => return Err(bad()),
        };
        Ok(Self { now_micros, date })
    }
}

/// The first instant of the year 10000, in microseconds since the epoch.
const LAST_MICROS: i64 = 253_402_300_800_000_000;

fn digest(inv: &Invocation, args: &Args, now: i64) -> Result<Output, Failure> {
    let req = Request {
        by_hand: true,
        ..Request::parse(args, inv, now)?
    };
    let tenants = tenants(&req)?;
    digest_all(&tenants, &req)
}

fn digest_all(tenants: &[Tenant], req: &Request) -> Result<Output, Failure> {
    let total = tenants.len() as u64;
    let results: Vec<TenantResult> = (0..)
        .zip(tenants)
        .map(|(done, t)| {
            log::progress(done, Some(total), &format!("tenant {}", t.name));
            digest_for(t, req)
        })
        .collect();
    log::progress(total, Some(total), "every tenant done");
    respond(req, &results)
}

enum Selection {
    One(String),
    All,
}

/// What this run was asked to do.
struct Request {
    /// A person (or their own cron) running the command, not the schedule.
    by_hand: bool,
    selection: Selection,
    date: Option<NaiveDate>,
    now_micros: i64,
    dry_run: bool,
    json: bool,
    top_n: i64,
    lock_ttl_ms: u64,
}

impl Request {
    fn parse(args: &Args, inv: &Invocation, now_micros: i64) -> Result<Self, Failure> {
        args.only_flags(&["--tenant", "--date"], &["--all-tenants", "--json"], USAGE)?;
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
            dry_run: args.dry_run(inv),
            json: args.flag("--json"),
            ..Self::new(selection, date, now_micros)?
        })
    }

    /// A real run with plain-text output.
    fn new(
        selection: Selection,
        date: Option<NaiveDate>,
        now_micros: i64,
    ) -> Result<Self, Failure> {
        Ok(Self {
            by_hand: false,
            selection,
            date,
            now_micros,
            dry_run: false,
            json: false,
            top_n: config::positive("top_items", 5)? as i64,
            lock_ttl_ms: config::duration("lock_ttl", Duration::from_secs(300))?.as_millis() as u64,
        })
    }
}

/// The tenants `req` selects. A scheduled run's slot is claimed once, so
/// it waits out a master that is unavailable for a moment
/// ([`fan_out::until_available`]) rather than lose the day's digests; a
/// run by hand answers at once.
fn tenants(req: &Request) -> Result<Vec<Tenant>, Failure> {
    let read = || match &req.selection {
        Selection::All => tenants::live(),
        Selection::One(name) => Ok(tenants::find(name)?.into_iter().collect()),
    };
    let found = match req.by_hand {
        true => read()?,
        false => fan_out::until_available(read)?,
    };
    match &req.selection {
        Selection::One(name) if found.is_empty() => {
            Err(reply::fail(404, format!("tenant \"{name}\" not found")))
        }
        _ => Ok(found),
    }
}

/// What happened for one tenant.
pub enum Outcome {
    Sent {
        to: String,
        message_id: String,
        digest: figures::Digest,
        /// Sent by hand before the day was over: recorded as covering the
        /// day so far, so the evening's digest still goes.
        early: bool,
    },
    Preview {
        to: Option<String>,
        digest: figures::Digest,
        text: String,
    },
    Skipped(Skip),
    /// The mail went but `digest_sends` could not say so: a failure for a
    /// person running the command, but no retry of a queued job (that would
    /// mail the owner twice).
    SentUnrecorded(Failure),
    Failed(Failure),
}

/// Why nothing was sent.
pub enum Skip {
    NoOwnerEmail,
    AlreadySent,
    /// Another run holds the day's lock (and is sending it, or failing to).
    Elsewhere,
}

impl Skip {
    fn reason(&self) -> &'static str {
        match self {
            Skip::NoOwnerEmail => "no owner email",
            Skip::AlreadySent => "already sent",
            Skip::Elsewhere => "another run is sending it",
        }
    }
}

pub struct TenantResult {
    tenant: String,
    day: Option<NaiveDate>,
    /// RFC 3339 instant today's figures stop at (the day is not over).
    until: Option<String>,
    outcome: Outcome,
}

/// Before this local hour a scheduled run digests the day just over,
/// whole: the nightly 20:00 IST slot is 01:30 in Sydney, 09:30 in New York
/// and 14:30 in London, where today's evening has not come. It is the
/// schedule's own hour, so Kolkata gets today as the spec has it; and no
/// zone's DST moves that slot across it (one that did would skip a day).
const SCHEDULED_DAY_TURNS_AT: u32 = 20;

/// The day a run without `--date` digests: today in the tenant's zone,
/// unless the schedule fired before [`SCHEDULED_DAY_TURNS_AT`] there.
fn default_day(tz: chrono_tz::Tz, now_micros: i64, by_hand: bool) -> NaiveDate {
    let today = day::date_at(tz, now_micros);
    if by_hand || day::local_hour(tz, now_micros) >= SCHEDULED_DAY_TURNS_AT {
        return today;
    }
    today.pred_opt().unwrap_or(today)
}

fn digest_for(t: &Tenant, req: &Request) -> TenantResult {
    let result = |day, outcome| TenantResult {
        tenant: t.name.clone(),
        day,
        until: None,
        outcome,
    };
    let tz = match day::zone(&t.time_zone) {
        Ok(tz) => tz,
        Err(e) => {
            // The tenant's setting, not a passing fault: a retry cannot help.
            let msg = format!("tenant \"{}\": {e}", t.name);
            return result(None, Outcome::Failed(reply::fail(400, msg)));
        }
    };
    let today = day::date_at(tz, req.now_micros);
    let day = req
        .date
        .unwrap_or_else(|| default_day(tz, req.now_micros, req.by_hand));
    if day > today {
        // Its send would be recorded, and the real one that day skipped.
        let msg = format!(
            "date {day} is after today ({today}) in tenant \"{}\"'s time zone",
            t.name
        );
        return result(Some(day), Outcome::Failed(reply::fail(400, msg)));
    }
    let mut range = day::range(tz, day);
    let mut last_week = day::range(tz, day - chrono::Days::new(7));
    // Today is not over: its figures and last week's both stop at this
    // local time, so "sales down 35%" compares like with like.
    let until = (day == today).then(|| {
        range.end = req.now_micros;
        last_week.end = day::week_before(tz, req.now_micros);
        day::local_time(tz, req.now_micros)
    });
    let job = send::Job {
        tenant: t,
        day,
        until,
        range,
        last_week,
        top_n: req.top_n,
        lock_ttl_ms: req.lock_ttl_ms,
        by_hand: req.by_hand,
    };
    let outcome = if req.dry_run {
        job.preview()
    } else {
        job.send_once()
    };
    let outcome = outcome.unwrap_or_else(Outcome::Failed);
    TenantResult {
        until: (day == today).then(|| time::rfc3339(req.now_micros)),
        ..result(Some(day), outcome)
    }
}

/// The command's output; a run with any failure fails as a whole, after
/// every tenant has been tried.
fn respond(req: &Request, results: &[TenantResult]) -> Result<Output, Failure> {
    let failures: Vec<&Failure> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(f) | Outcome::SentUnrecorded(f) => Some(f),
            _ => None,
        })
        .collect();
    if let Some(first) = failures.first() {
        let sent = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Sent { .. } | Outcome::SentUnrecorded(_)))
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
        let failed = reply::fail(first.status, format!("{prefix}{}", messages.join("; ")));
        // Which tenants did get theirs is shown too, as purge shows it.
        if req.json && matches!(req.selection, Selection::All) {
            let items: Vec<Json> = results.iter().map(result_json).collect();
            return Ok(reply::failed_with_data(
                &failed,
                json!({ "results": items }),
            ));
        }
        return Err(failed);
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

/// What a by-hand send of a day not yet over means for the evening's.
const SENT_EARLY: &str =
    "the day is not over: the scheduled digest still goes, with the figures up to its time";

fn result_json(r: &TenantResult) -> Json {
    let mut v = json!({
        "tenant": r.tenant,
        "business_day": r.day.map(|d| d.to_string()),
        "until": r.until,
    });
    let extra = match &r.outcome {
        Outcome::Sent {
            to,
            message_id,
            digest,
            early,
        } => {
            let mut sent = json!({"status": "sent", "to": to, "message_id": message_id, "digest": digest.to_json()});
            if *early {
                sent["note"] = json!(SENT_EARLY);
            }
            sent
        }
        Outcome::Preview { to, digest, .. } => {
            json!({"status": "dry-run", "to": to, "digest": digest.to_json()})
        }
        Outcome::Skipped(why) => json!({"status": "skipped", "reason": why.reason()}),
        Outcome::Failed(f) | Outcome::SentUnrecorded(f) => {
            json!({"status": "failed", "reason": f.message})
        }
    };
    if let (Some(obj), Json::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

fn result_line(r: &TenantResult) -> String {
    let day = r.day.map(|d| d.to_string()).unwrap_or_default();
    match &r.outcome {
        Outcome::Sent {
            to,
            message_id,
            early,
            ..
        } => {
            let note = if *early {
                format!("; {SENT_EARLY}")
            } else {
                String::new()
            };
            format!("{} {day}: sent to {to} ({message_id}){note}\n", r.tenant)
        }
        Outcome::Preview { to, text, .. } => format!(
            "{} {day}: dry run, would send to {}\n{text}\n",
            r.tenant,
            to.as_deref().unwrap_or("nobody (no owner email)")
        ),
        Outcome::Skipped(why) => format!("{} {day}: skipped, {}\n", r.tenant, why.reason()),
        Outcome::Failed(f) | Outcome::SentUnrecorded(f) => {
            format!("{} {day}: failed, {}\n", r.tenant, f.message)
        }
    }
}

neo_ops_sdk::export_plugin!(OwnerDigest);

#[cfg(test)]
mod tests {
    use super::*;

    /// The nightly slot, 20:00 IST on 24 November: a tenant whose evening
    /// has come gets today so far; any other gets yesterday, whole. A run
    /// by hand is always today.
    #[test]
    fn a_scheduled_run_digests_the_day_the_tenant_is_in() {
        let slot = chrono::DateTime::parse_from_rfc3339("2026-11-24T14:30:00Z")
            .unwrap()
            .timestamp_micros();
        let date = |d: &str| day::parse_date(d).unwrap();
        let zone = |z: &str| day::zone(z).unwrap();
        for (tz, by_hand, want) in [
            ("Asia/Kolkata", false, "2026-11-24"),     // 20:00
            ("Asia/Tokyo", false, "2026-11-24"),       // 23:30
            ("Asia/Dubai", false, "2026-11-23"),       // 18:30
            ("Europe/London", false, "2026-11-23"),    // 14:30
            ("Australia/Sydney", false, "2026-11-24"), // 01:30 on the 25th
            ("America/New_York", false, "2026-11-23"), // 09:30
            ("America/New_York", true, "2026-11-24"),
            ("Australia/Sydney", true, "2026-11-25"),
        ] {
            assert_eq!(
                default_day(zone(tz), slot, by_hand),
                date(want),
                "{tz} {by_hand}"
            );
        }
    }
}
