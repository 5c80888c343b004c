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
    let tenant = record.tenant;
    let jobs = r
        .deliveries
        .iter()
        .map(|id| {
            let payload = json!({"delivery_id": id}).to_string();
            queue::enqueue_for_tenant(WEBHOOK_QUEUE, &tenant.name, &payload)
        })
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Outcome {
        data: json!({"deliveries": r.deliveries, "jobs": jobs.len()}),
    })
}
