//! `replay_webhook`: sets the order's webhook deliveries back to pending and
//! queues one `webhook` job per delivery for this tenant.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Failure, queue, reply};

use super::{Outcome, Record, order_exists};

/// The queue the webhook-dispatch plugin consumes.
const WEBHOOK_QUEUE: &str = "webhook";

pub struct Replay {
    order_id: i64,
    deliveries: Vec<i64>,
}

pub fn prepare(db: &str, order_id: i64) -> Result<Replay, Failure> {
    order_exists(db, order_id)?;
    let rows = db::query(
        db,
        "SELECT id FROM webhook_deliveries WHERE order_id = $1 ORDER BY id",
        &[Value::Int(order_id)],
    )?;
    let deliveries: Vec<i64> = rows.iter().filter_map(|r| r.int("id")).collect();
    if deliveries.is_empty() {
        return Err(reply::fail(
            404,
            format!("order {order_id} has no webhook deliveries"),
        ));
    }
    Ok(Replay {
        order_id,
        deliveries,
    })
}

pub fn apply(r: &Replay, record: &Record) -> Result<Outcome, Failure> {
    record.change(
        "UPDATE webhook_deliveries SET status = 'pending' WHERE order_id = $1",
        vec![Value::Int(r.order_id)],
        json!({"deliveries": r.deliveries}),
    )?;
    // Set pending and on record: a repeat would send the deliveries queued
    // below a second time.
    (record.took_effect)();
    let tenant = record.tenant;
    let mut jobs = Vec::new();
    for id in &r.deliveries {
        let payload = json!({"delivery_id": id}).to_string();
        match queue::enqueue_for_tenant(WEBHOOK_QUEUE, &tenant.name, &payload) {
            Ok(job) => jobs.push(job),
            Err(e) => {
                let not_queued = &r.deliveries[jobs.len()..];
                return Err(reply::fail(
                    reply::status_of(e.code),
                    format!(
                        "deliveries {not_queued:?} were set to pending but not queued ({}); \
                         {} queued. Replaying the order again queues every delivery, \
                         so those already queued are sent twice",
                        e.message,
                        jobs.len()
                    ),
                ));
            }
        }
    }
    Ok(Outcome {
        data: json!({"deliveries": r.deliveries, "jobs": jobs.len()}),
    })
}
