//! The sweep: a delivery still `pending` or `failed` that no job has tried
//! for `sweep_after` has no job left to send it. The POS died between
//! writing the row and queueing its job, Redis restarted without
//! persistence, or a job's last failure could not be recorded. Each such
//! delivery is queued again: every tenant on a schedule (one sweep job per
//! tenant on the `webhook` queue), or from the command line (`--dry-run`
//! lists them).
//!
//! Every attempt marks its delivery `seen` in kv for `sweep_after`, and so
//! does the sweep when it queues one: a delivery being retried, replayed,
//! or waiting in a long queue is left alone. A delivery queued twice all
//! the same is sent once (the dispatcher's lock, and a delivered row is
//! acknowledged). One queued again [`MAX_SWEEPS`] times with no outcome
//! recorded in between (its job trapped or timed out each time; a recorded
//! outcome clears the count) is marked `dead`. One tenant is swept by one
//! sweep at a time (a kv lock).

use neo_ops_sdk::db::Value;
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::tenants::{self, Tenant};
use neo_ops_sdk::{Error, Failure, Output, db, fan_out, kv, log, queue, reply, time};
use std::time::Duration;

use crate::delivery;

const QUEUE: &str = "webhook";
/// The job that sweeps its tenant.
pub const SWEEP_JOB: &str = r#"{"sweep": true}"#;
/// Deliveries queued again per tenant and run at most; the next run takes
/// the rest.
const PER_RUN: usize = 500;
/// Rows read per page, and pages per run at most.
const PAGE: i64 = 500;
const PAGES: usize = 20;
/// Times a delivery is queued again with no outcome before it is `dead`.
const MAX_SWEEPS: i64 = 3;
/// How long that count is kept, at least (and for [`MAX_SWEEPS`] sweeps).
const SWEEPS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long one sweep may hold its tenant.
const SWEEPING_MS: u64 = 120_000;
const STUCK: &str = "SELECT id FROM webhook_deliveries \
                     WHERE status IN ('pending', 'failed') AND created_at < $1 AND id > $2 \
                     ORDER BY id LIMIT $3";

/// The kv key that says a job tried (or the sweep queued) the delivery
/// within `sweep_after`.
pub fn seen_key(tenant: &str, delivery_id: i64) -> String {
    format!("webhook:seen:{tenant}:{delivery_id}")
}

fn sweeps_key(tenant: &str, delivery_id: i64) -> String {
    format!("webhook:sweeps:{tenant}:{delivery_id}")
}

/// An outcome was recorded for the delivery: the sweeps with none start
/// counting again. Best effort.
pub fn outcome_recorded(tenant: &str, delivery_id: i64) {
    let _ = kv::delete(&sweeps_key(tenant, delivery_id));
}

/// Marks the delivery seen for `after`; best effort (unmarked, the worst
/// is a second job, which sends nothing).
pub fn mark_seen(tenant: &str, delivery_id: i64, after: Duration) {
    let _ = kv::set(
        &seen_key(tenant, delivery_id),
        b"",
        Some(after.as_millis() as u64),
    );
}

/// The schedule: one sweep job per tenant, each with the plugin's whole
/// timeout.
pub fn fan_out() -> Result<Output, Failure> {
    let tenants = fan_out::until_available(tenants::live)?;
    Ok(fan_out::enqueue_each(QUEUE, &tenants, SWEEP_JOB)?)
}

/// What one tenant's sweep found and did.
struct Swept {
    stuck: Vec<i64>,
    queued: Vec<i64>,
    dead: Vec<i64>,
    failed: Vec<String>,
}

impl Swept {
    fn json(&self, tenant: &str) -> Json {
        json!({"tenant": tenant, "deliveries": self.stuck, "queued": self.queued, "dead": self.dead})
    }

    /// One line of the text report.
    fn line(&self, tenant: &str, dry_run: bool) -> String {
        let ids = |ids: &[i64]| {
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if dry_run {
            return format!("{tenant}: would queue {}", ids(&self.stuck));
        }
        let mut line = format!(
            "{tenant}: stuck {}; queued {}",
            ids(&self.stuck),
            ids(&self.queued)
        );
        if !self.dead.is_empty() {
            line.push_str(&format!("; marked dead {}", ids(&self.dead)));
        }
        line
    }
}

/// One tenant's sweep job: fails (so the queue retries it) if anything
/// could not be read or queued, but for its last attempt, which logs what
/// failed and ends: the next scheduled sweep takes it up, and the dead
/// letters are kept for deliveries.
pub fn job(tenant: &str, after: Duration, last_attempt: bool) -> Result<Output, Failure> {
    let Some(tenant) = tenants::find(tenant)? else {
        return Ok(reply::text(
            200,
            format!("tenant \"{tenant}\" is gone: nothing to sweep\n"),
        ));
    };
    let failed = match sweep(&tenant, after, false) {
        Ok(swept) if swept.failed.is_empty() => return Ok(reply::ok(swept.json(&tenant.name))),
        Ok(swept) => swept.failed.join("; "),
        Err(e) => e.message,
    };
    let message = format!("sweeping tenant \"{}\": {failed}", tenant.name);
    if !last_attempt {
        return Err(reply::fail(503, message));
    }
    log::log(
        log::Level::Warn,
        &format!("{message}; the next sweep tries again"),
        &[],
    );
    Ok(reply::text(200, format!("{message}\n")))
}

/// The command's flags.
pub struct Asked<'a> {
    pub only: Option<&'a str>,
    pub dry_run: bool,
    /// The report as the JSON envelope rather than lines of text.
    pub json: bool,
}

/// The command: every tenant's stuck deliveries (`only`: that tenant's),
/// queued again unless `dry_run`, reported as text or JSON.
pub fn run(asked: Asked<'_>, after: Duration) -> Result<Output, Failure> {
    let Asked {
        only,
        dry_run,
        json,
    } = asked;
    let tenants: Vec<Tenant> = match only {
        Some(name) => vec![tenants::require(name)?],
        None => fan_out::until_available(tenants::live)?,
    };
    let (mut found, mut lines, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for tenant in &tenants {
        match sweep(tenant, after, dry_run) {
            Ok(swept) => {
                failed.extend(swept.failed.iter().map(|f| format!("{}: {f}", tenant.name)));
                if !swept.stuck.is_empty() {
                    found.push(swept.json(&tenant.name));
                    lines.push(swept.line(&tenant.name, dry_run));
                }
            }
            Err(e) => failed.push(format!("{}: {}", tenant.name, e.message)),
        }
    }
    let data = json!({
        "dry_run": dry_run,
        "idle_seconds": after.as_secs(),
        "tenants_swept": tenants.len(),
        "stuck": found,
    });
    let failure = (!failed.is_empty()).then(|| {
        let message = format!("sweep incomplete: {}", failed.join("; "));
        log::log(log::Level::Warn, &message, &[]);
        reply::fail(503, message)
    });
    if json {
        return Ok(match &failure {
            None => reply::ok(data),
            Some(failure) => reply::failed_with_data(failure, data),
        });
    }
    let mut text = format!(
        "{} tenant(s) swept{}: {} with deliveries no job has tried for {} min\n",
        tenants.len(),
        if dry_run {
            " (dry run: nothing queued)"
        } else {
            ""
        },
        lines.len(),
        after.as_secs() / 60,
    );
    text.extend(lines.iter().map(|l| format!("  {l}\n")));
    match failure {
        None => Ok(reply::text(200, text)),
        Some(failure) => Err(reply::fail(
            failure.status,
            format!("{text}{}", failure.message),
        )),
    }
}

/// Pages through the tenant's deliveries made before `after` ago that are
/// still pending or failed, queueing again (unless `dry_run`) each one no
/// job has seen within `after`, up to [`PER_RUN`].
fn sweep(tenant: &Tenant, after: Duration, dry_run: bool) -> Result<Swept, Error> {
    if dry_run {
        return sweep_held(tenant, after, true);
    }
    let lock = format!("webhook:sweeping:{}", tenant.name);
    let Some(token) = kv::lock(&lock, SWEEPING_MS)? else {
        return Err(Error {
            code: neo_ops_sdk::ErrorCode::Conflict,
            message: "another sweep of this tenant is running".into(),
        });
    };
    let swept = sweep_held(tenant, after, false);
    let _ = kv::unlock(&lock, &token);
    swept
}

/// [`sweep`], with the tenant's lock held when not a dry run.
fn sweep_held(tenant: &Tenant, after: Duration, dry_run: bool) -> Result<Swept, Error> {
    let cutoff = Value::Timestamp(time::now_micros() - after.as_micros() as i64);
    let mut swept = Swept {
        stuck: Vec::new(),
        queued: Vec::new(),
        dead: Vec::new(),
        failed: Vec::new(),
    };
    let mut last = 0;
    for _ in 0..PAGES {
        let params = [cutoff.clone(), Value::Int(last), Value::Int(PAGE)];
        let rows = db::query(&tenant.target(), STUCK, &params)?;
        let ids: Vec<i64> = rows.iter().filter_map(|r| r.int("id")).collect();
        for &id in &ids {
            last = id;
            // Unreadable: taken as unseen; a second job sends nothing.
            if matches!(kv::get(&seen_key(&tenant.name, id)), Ok(Some(_))) {
                continue;
            }
            swept.stuck.push(id);
            if !dry_run {
                queue_again(tenant, id, after, &mut swept);
            }
            if swept.queued.len() >= PER_RUN {
                return Ok(swept);
            }
        }
        if ids.len() < PAGE as usize {
            break;
        }
    }
    Ok(swept)
}

/// Queues a job for the delivery, or marks it dead once it has been queued
/// again [`MAX_SWEEPS`] times with no outcome. A sweep that could not
/// queue it (a blip) does not count.
fn queue_again(tenant: &Tenant, id: i64, after: Duration, swept: &mut Swept) {
    let key = sweeps_key(&tenant.name, id);
    let sweeps = match kv::get(&key) {
        Ok(Some(n)) => std::str::from_utf8(&n)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    if sweeps >= MAX_SWEEPS {
        let reason = format!(
            "queued again by the sweep {MAX_SWEEPS} times with no outcome recorded; not retried"
        );
        match delivery::mark_failed(&tenant.target(), id, &reason, true) {
            Ok(n) if n > 0 => {
                outcome_recorded(&tenant.name, id);
                swept.dead.push(id);
            }
            // Delivered meanwhile.
            Ok(_) => {}
            Err(e) => swept.failed.push(format!("delivery {id}: {}", e.message)),
        }
        return;
    }
    // Counted before it is queued (its job may record an outcome, clearing
    // the count, at once), and taken back if it could not be.
    let counted = kv::incr(&key, 1).is_ok();
    let kept = SWEEPS_KEPT.max(after * (MAX_SWEEPS as u32 + 1));
    let _ = kv::expire(&key, kept.as_millis() as u64);
    let payload = json!({"delivery_id": id}).to_string();
    match queue::enqueue_for_tenant(QUEUE, &tenant.name, &payload) {
        Ok(_) => {
            swept.queued.push(id);
            mark_seen(&tenant.name, id, after);
        }
        Err(e) => {
            if counted {
                let _ = kv::incr(&key, -1);
            }
            swept.failed.push(format!("delivery {id}: {}", e.message));
        }
    }
}
