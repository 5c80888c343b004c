//! The sweep: a delivery still `pending` or `failed` long after it was made
//! has no job left to send it. The POS died between writing the row and
//! queueing its job, Redis restarted without persistence, or a job's last
//! failure could not be recorded. Each such delivery is queued again, on
//! a schedule and from the command line (`--dry-run` lists them).
//!
//! A delivery queued twice is sent once: the dispatcher takes its lock and
//! acknowledges a delivered row without sending. So that one whose new job
//! waits in a long queue is not queued again by every run, a swept delivery
//! is marked in kv for `sweep_after`.

use neo_ops_sdk::db::Value;
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::tenants::{self, Tenant};
use neo_ops_sdk::{Error, Failure, Output, config, db, fan_out, kv, queue, reply, time};
use std::time::Duration;

const QUEUE: &str = "webhook";
/// Deliveries queued again per tenant and run at most; the next run takes
/// the rest.
const PER_RUN: i64 = 500;
const STUCK: &str = "SELECT id FROM webhook_deliveries \
                     WHERE status IN ('pending', 'failed') AND created_at < $1 \
                     ORDER BY id LIMIT $2";

/// Stuck deliveries of every tenant (`only`: of that one), queued again
/// unless `dry_run`.
pub fn run(only: Option<&str>, dry_run: bool) -> Result<Output, Failure> {
    // Longer than a job's retries take (about 4 minutes by default).
    let after = config::duration("sweep_after", Duration::from_secs(3600))?;
    if after < Duration::from_secs(60) {
        return Err(reply::fail(
            400,
            "config sweep_after must be at least 1m: a delivery younger than its retries is not stuck",
        ));
    }
    let tenants: Vec<Tenant> = match only {
        Some(name) => vec![tenants::require(name)?],
        None => fan_out::until_available(tenants::live)?,
    };
    let cutoff = time::now_micros() - after.as_micros() as i64;
    let (mut found, mut failed) = (Vec::new(), Vec::new());
    for tenant in &tenants {
        match stuck(tenant, cutoff) {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                let queued = if dry_run {
                    Vec::new()
                } else {
                    queue_again(tenant, &ids, after, &mut failed)
                };
                found.push(json!({"tenant": tenant.name, "deliveries": ids, "queued": queued}));
            }
            Err(e) => failed.push(format!("{}: {}", tenant.name, e.message)),
        }
    }
    let data = json!({
        "dry_run": dry_run,
        "older_than_seconds": after.as_secs(),
        "tenants_swept": tenants.len(),
        "stuck": found,
    });
    if failed.is_empty() {
        Ok(reply::ok(data))
    } else {
        let failure = reply::fail(503, format!("sweep incomplete: {}", failed.join("; ")));
        Ok(reply::failed_with_data(&failure, data))
    }
}

/// Ids of the tenant's deliveries that have waited past `cutoff`.
fn stuck(tenant: &Tenant, cutoff: i64) -> Result<Vec<i64>, Error> {
    let params = [Value::Timestamp(cutoff), Value::Int(PER_RUN)];
    let rows = db::query(&tenant.target(), STUCK, &params)?;
    Ok(rows.iter().filter_map(|r| r.int("id")).collect())
}

/// Queues a job for each delivery not swept within `after`; answers the
/// ids queued, and adds what could not be to `failed`.
fn queue_again(
    tenant: &Tenant,
    ids: &[i64],
    after: Duration,
    failed: &mut Vec<String>,
) -> Vec<i64> {
    let mut queued = Vec::new();
    for &id in ids {
        let mark = format!("webhook:swept:{}:{id}", tenant.name);
        // Unreadable: queued all the same; a second job sends nothing.
        if matches!(kv::get(&mark), Ok(Some(_))) {
            continue;
        }
        let payload = json!({"delivery_id": id}).to_string();
        match queue::enqueue_for_tenant(QUEUE, &tenant.name, &payload) {
            Ok(_) => {
                queued.push(id);
                let _ = kv::set(&mark, b"", Some(after.as_millis() as u64));
            }
            Err(e) => failed.push(format!("{} delivery {id}: {}", tenant.name, e.message)),
        }
    }
    queued
}
