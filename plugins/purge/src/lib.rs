//! Data purge (spec "Data Purge"): `purge --tenant NAME | --all-tenants
//! [--batch-size N] [--dry-run] [--json]`, daily from the schedule.
//!
//! What "expired" means: a customer whose last order (`last_order_at`, or
//! `created_at` when they never ordered) is older than the tenant's
//! `pii_retention_days` (master `tenants`, default 365) at the start of the
//! run, who has no order placed since then (whatever `last_order_at`
//! says), and who is not anonymised yet. An expired customer that an order
//! still points at is anonymised (the row stays for accounting); one with no
//! orders is deleted. Notification-outbox entries with status `delivered`
//! are deleted whatever their age, and the others once older than the
//! retention (their recipient is a customer's number or address).
//!
//! Work goes in keyset-paginated batches on `id`, one transaction each, so a
//! run never holds a long transaction and an interrupted run leaves only
//! whole batches behind; the next run picks up the rest. Every committed
//! batch gets its own audit record (`purge.batch`), so what a killed run
//! deleted is on record too. The per-tenant lock is short (`lock_ttl`,
//! 60s) and renewed after each batch: a run killed with its process blocks
//! the next for about a minute at most (the host releases the lock of a run
//! that timed out or failed at once).
//!
//! The 03:00 schedule (`--all-tenants`) queues one job per tenant on the
//! plugin's own `purge` queue: each tenant has the whole timeout, so one
//! tenant's backlog no longer leaves the tenants after it unpurged, and a
//! failed or busy tenant is retried by the queue. Without the queue grant
//! the schedule purges every tenant in its own run, as the command does.

mod batches;
mod options;

use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::tenants::Tenant;
use neo_ops_sdk::{
    Failure, Invocation, Output, Plugin, QueueMessage, ScheduleEvent, args::Args, audit, config,
    fan_out, kv, log, reply, tenants, time,
};

use batches::Counts;
use options::{Options, Scope};

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;
/// Renewed after every batch, so it only has to outlast one batch.
const DEFAULT_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

struct Purge;

impl Plugin for Purge {
    const DRY_RUN: bool = true;
    const USAGE: &'static str = options::USAGE;

    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        run(&Options::parse(args, inv)?)
    }

    fn schedule(inv: &Invocation, event: &ScheduleEvent) -> Result<Output, Failure> {
        let opts = Options::parse(&Args::new(&event.args), inv)?;
        if !matches!(opts.scope, Scope::All) || opts.dry_run {
            return run(&opts);
        }
        let tenants = fan_out::until_available(tenants::live)?;
        let job = json!({"batch_size": opts.batch_size}).to_string();
        match fan_out::enqueue_each(QUEUE, &tenants, &job) {
            Err(e) if fan_out::no_queue(&e) => run(&opts),
            other => other.map_err(Failure::from),
        }
    }

    /// One tenant's purge; a failure (its lock held by another run
    /// included) fails the job, so the queue tries it again.
    fn queue(inv: &Invocation, message: &QueueMessage) -> Result<Output, Failure> {
        let Some(name) = &inv.tenant else {
            let msg = format!("purge job {} has no tenant", message.id);
            return Err(reply::fail(400, msg));
        };
        let batch_size = neo_ops_sdk::serde_json::from_str::<Json>(&message.payload)
            .ok()
            .and_then(|v| v["batch_size"].as_i64())
            .filter(|n| (1..=options::MAX_BATCH).contains(n))
            .ok_or_else(|| {
                let expected = format!(r#"{{"batch_size": <1 to {}>}}"#, options::MAX_BATCH);
                reply::bad_job_payload("purge", &message.payload, &expected)
            })?;
        let opts = Options {
            scope: Scope::One(name.clone()),
            batch_size,
            dry_run: false,
            json: false,
        };
        let Some(tenant) = tenants::find(name)? else {
            // Deleted since the job was queued: nothing of it to purge.
            return Ok(reply::text(
                200,
                format!("purge {name}: skipped, tenant not found\n"),
            ));
        };
        let report = purge_tenant(tenant, &opts, (0, 1))?;
        let took = report.duration_ms;
        Ok(render(&opts, &[report], took))
    }
}

/// The queue the schedule puts one job per tenant on (`plugins.toml`).
const QUEUE: &str = "purge";

/// What one tenant's purge did (or would do, in a dry run).
struct Report {
    tenant: Tenant,
    cutoff: i64,
    counts: Counts,
    duration_ms: i64,
}

fn run(opts: &Options) -> Result<Output, Failure> {
    let started = time::now_micros();
    let tenants = match &opts.scope {
        Scope::One(name) => vec![find_tenant(name)?],
        Scope::All => tenants::live()?,
    };
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    let total = tenants.len() as u64;
    for (done, tenant) in (0..).zip(tenants) {
        log::progress(done, Some(total), &format!("tenant {}", tenant.name));
        let name = tenant.name.clone();
        match purge_tenant(tenant, opts, (done, total)) {
            Ok(r) => reports.push(r),
            Err(f) => failures.push((name, f)),
        }
    }
    log::progress(total, Some(total), "every tenant done");
    let duration_ms = (time::now_micros() - started) / 1000;
    let Some(failed) = combine_failures(&failures, reports.len()) else {
        return Ok(render(opts, &reports, duration_ms));
    };
    if matches!(opts.scope, Scope::One(_)) {
        return Err(failed);
    }
    // What the other tenants' purges did is shown too: deleted rows are
    // not to go unreported because one tenant failed. The run still fails.
    if opts.json {
        let mut doc = report_doc(opts, &reports, duration_ms);
        doc["failed"] = failures
            .iter()
            .map(|(tenant, f)| json!({"tenant": tenant, "code": f.status, "message": f.message}))
            .collect();
        return Ok(reply::failed_with_data(&failed, doc));
    }
    let done: String = reports
        .iter()
        .map(|r| summary_line(r, opts.dry_run))
        .collect();
    let message = match done.trim_end() {
        "" => failed.message,
        done => format!("{}\n{done}", failed.message),
    };
    Err(reply::fail(failed.status, message))
}

/// With one tenant its own failure is the answer; with several, the first
/// failure's status and a message naming how many failed.
fn combine_failures(failures: &[(String, Failure)], succeeded: usize) -> Option<Failure> {
    let (_, first) = failures.first()?;
    if failures.len() == 1 && succeeded == 0 {
        return Some(reply::fail(first.status, first.message.clone()));
    }
    let messages: Vec<&str> = failures.iter().map(|(_, f)| f.message.as_str()).collect();
    Some(reply::fail(
        first.status,
        format!(
            "purge failed for {} of {} tenants: {}",
            failures.len(),
            failures.len() + succeeded,
            messages.join("; ")
        ),
    ))
}

fn find_tenant(name: &str) -> Result<Tenant, Failure> {
    tenants::find(name)?.ok_or_else(|| reply::fail(404, format!("tenant \"{name}\" not found")))
}

/// Purges one tenant under its lock; the lock is released on every path the
/// plugin controls (a timeout leaves it to expire).
/// `position`: this tenant's index among `.1` tenants, for progress.
fn purge_tenant(tenant: Tenant, opts: &Options, position: (u64, u64)) -> Result<Report, Failure> {
    let name = tenant.name.clone();
    let progress = |counts: &batches::Counts| {
        log::progress(
            position.0,
            Some(position.1),
            &format!(
                "tenant {name}: batch {}, {} customers anonymised, {} deleted, {} outbox rows deleted",
                counts.batches, counts.anonymised, counts.customers_deleted, counts.outbox_deleted
            ),
        );
    };
    if opts.dry_run {
        // It writes nothing, so it takes no lock: a long preview does not
        // make the night's purge of this tenant fail as busy.
        return purge_locked(tenant, opts, &mut |counts| {
            progress(counts);
            Ok(())
        });
    }
    let lock = format!("purge:{}", tenant.name);
    let token = kv::lock(&lock, lock_ttl_ms()?)?.ok_or_else(|| {
        reply::fail(
            409,
            format!(
                "tenant \"{}\" is busy: another purge is running",
                tenant.name
            ),
        )
    })?;
    let ttl = lock_ttl_ms()?;
    let result = purge_locked(tenant, opts, &mut |counts| {
        progress(counts);
        // Lost the lock (it expired while a batch stalled): stop rather than
        // run beside another purge.
        if kv::extend_lock(&lock, &token, ttl)? {
            Ok(())
        } else {
            Err(neo_ops_sdk::Error {
                code: neo_ops_sdk::ErrorCode::Conflict,
                message: format!("lost the lock \"{lock}\"; stopped before the next batch"),
            })
        }
    });
    let _ = kv::unlock(&lock, &token);
    result
}

/// The retention `neo-ops tenant set --retention-days` accepts.
const RETENTION_DAYS: std::ops::RangeInclusive<i64> = 1..=36_500;

fn purge_locked(
    tenant: Tenant,
    opts: &Options,
    after_batch: &mut batches::AfterBatch<'_>,
) -> Result<Report, Failure> {
    if !RETENTION_DAYS.contains(&tenant.retention_days) {
        // `tenant set` allows only this range; a value edited in by hand
        // outside it (0, negative, or so large the cutoff wraps) would put
        // the cutoff at or past now and purge every customer: refuse (400:
        // the tenant's setting, which no retry of a queued job can fix).
        return Err(reply::fail(
            400,
            format!(
                "tenant \"{}\" has a bad pii_retention_days {} (1 to 36500)",
                tenant.name, tenant.retention_days
            ),
        ));
    }
    let started = time::now_micros();
    let cutoff = started - tenant.retention_days * MICROS_PER_DAY;
    let run = batches::Run {
        tenant: &tenant.name,
        cutoff,
        now: started,
        opts,
    };
    let counts = batches::purge(&run, after_batch).map_err(|(done, e)| {
        let status = reply::status_of(e.code);
        // Batches committed before the failure stay done: said, so rows
        // already gone are not taken for still there.
        let committed = match done.batches {
            0 => String::new(),
            n if opts.dry_run => format!(" (after {n} batches counted)"),
            n => format!(
                " (committed before it, at least: {n} batches; customers: {} anonymised, {} \
                 deleted; notification_outbox: {} deleted; a rerun goes on from there)",
                done.anonymised, done.customers_deleted, done.outbox_deleted
            ),
        };
        reply::fail(
            status,
            format!(
                "purging tenant \"{}\": {}{committed}",
                tenant.name, e.message
            ),
        )
    })?;
    let report = Report {
        tenant,
        cutoff,
        counts,
        duration_ms: (time::now_micros() - started) / 1000,
    };
    log_report(&report, opts.dry_run);
    if !opts.dry_run {
        record(&report)?;
    }
    Ok(report)
}

/// One log line per tenant, counts only.
fn log_report(r: &Report, dry_run: bool) {
    let fields = [
        ("tenant", r.tenant.name.clone()),
        ("dry_run", dry_run.to_string()),
        ("customers_anonymised", r.counts.anonymised.to_string()),
        ("customers_deleted", r.counts.customers_deleted.to_string()),
        ("outbox_deleted", r.counts.outbox_deleted.to_string()),
        ("batches", r.counts.batches.to_string()),
        ("duration_ms", r.duration_ms.to_string()),
    ];
    let fields: Vec<(String, String)> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    log::log(log::Level::Info, "purge finished", &fields);
}

/// The audit record: counts and timing only, never customer data.
fn record(report: &Report) -> Result<(), Failure> {
    let mut details = report_json(report);
    if let Some(obj) = details.as_object_mut() {
        obj.remove("tenant");
    }
    let name = &report.tenant.name;
    audit::record("purge", &tenants::target(name), Some(name), details)?;
    Ok(())
}

/// `lock_ttl` from the manifest config ("60s", "2m", "500ms").
fn lock_ttl_ms() -> Result<u64, Failure> {
    let ttl = config::duration("lock_ttl", DEFAULT_LOCK_TTL)?;
    Ok(ttl.as_millis().max(1) as u64)
}

fn report_json(r: &Report) -> Json {
    json!({
        "tenant": r.tenant.name,
        "retention_days": r.tenant.retention_days,
        "cutoff": time::rfc3339(r.cutoff),
        "customers": {
            "anonymised": r.counts.anonymised,
            "deleted": r.counts.customers_deleted,
        },
        "notification_outbox": { "deleted": r.counts.outbox_deleted },
        "batches": r.counts.batches,
        "duration_ms": r.duration_ms,
    })
}

/// The `--json` report's `data`.
fn report_doc(opts: &Options, reports: &[Report], duration_ms: i64) -> Json {
    let tenants: Vec<Json> = reports.iter().map(report_json).collect();
    json!({
        "dry_run": opts.dry_run,
        "tenants": tenants,
        "duration_ms": duration_ms,
    })
}

fn render(opts: &Options, reports: &[Report], duration_ms: i64) -> Output {
    if opts.json {
        return reply::ok(report_doc(opts, reports, duration_ms));
    }
    let mut text = String::new();
    for r in reports {
        text.push_str(&summary_line(r, opts.dry_run));
    }
    if reports.is_empty() {
        text.push_str("purge: no tenants\n");
    }
    reply::text(200, text)
}

fn summary_line(r: &Report, dry_run: bool) -> String {
    let c = &r.counts;
    let (head, verb) = if dry_run {
        (" (dry run, nothing changed)", "would be ")
    } else {
        ("", "")
    };
    format!(
        "purge {}{head}: customers: {} {verb}anonymised, {} {verb}deleted; \
         notification_outbox: {} {verb}deleted; {} batches in {} ms \
         (retention {} days, cutoff {})\n",
        r.tenant.name,
        c.anonymised,
        c.customers_deleted,
        c.outbox_deleted,
        c.batches,
        r.duration_ms,
        r.tenant.retention_days,
        time::rfc3339(r.cutoff),
    )
}

neo_ops_sdk::export_plugin!(Purge);
