//! A webhook delivery and its endpoint, read from and written back to the
//! tenant's database (`webhook_deliveries`, `webhook_endpoints`).

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Error, audit};

pub struct Delivery {
    pub id: i64,
    pub event: String,
    /// The JSON document sent as the body, as stored.
    pub payload: String,
    pub status: String,
    pub endpoint: Endpoint,
}

pub struct Endpoint {
    pub id: i64,
    pub url: String,
    pub secret: String,
    pub active: bool,
    pub deleted: bool,
}

const LOAD: &str = "SELECT d.id, d.event, d.payload, d.status, \
                    e.id AS endpoint_id, e.url, e.secret, e.active, e.deleted_at \
                    FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                    WHERE d.id = $1";

/// The delivery with id `id`, if the tenant has one.
pub fn load(target: &str, id: i64) -> Result<Option<Delivery>, Error> {
    let rows = db::query(target, LOAD, &[Value::Int(id)])?;
    Ok(rows.iter().next().map(|r| Delivery {
        id,
        event: r.text("event").unwrap_or_default().to_string(),
        payload: r.text("payload").unwrap_or("{}").to_string(),
        status: r.text("status").unwrap_or_default().to_string(),
        endpoint: Endpoint {
            id: r.int("endpoint_id").unwrap_or_default(),
            url: r.text("url").unwrap_or_default().to_string(),
            secret: r.text("secret").unwrap_or_default().to_string(),
            active: r.get("active").as_bool().unwrap_or(false),
            deleted: !matches!(r.get("deleted_at"), Value::Null),
        },
    }))
}

/// Marks the delivery delivered; a delivery is delivered at most once.
pub fn mark_delivered(target: &str, id: i64, now_micros: i64) -> Result<u64, Error> {
    db::execute(
        target,
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $2, \
         attempts = attempts + 1 WHERE id = $1 AND status <> 'delivered'",
        &[Value::Int(id), Value::Timestamp(now_micros)],
    )
}

/// Records a failed attempt; `dead` when it was the job's last.
pub fn mark_failed(target: &str, id: i64, error: &str, dead: bool) -> Result<u64, Error> {
    db::execute(
        target,
        "UPDATE webhook_deliveries SET status = $2, last_error = $3, attempts = attempts + 1 \
         WHERE id = $1 AND status <> 'delivered'",
        &[
            Value::Int(id),
            Value::from(if dead { "dead" } else { "failed" }),
            Value::from(error),
        ],
    )
}

/// Switches an endpoint off because its receiver said so (`why`), with the
/// change on record: an operator switches it back on.
pub fn disable_endpoint(target: &str, endpoint_id: i64, why: &str) -> Result<(), Error> {
    let statement = db::Statement {
        sql: "UPDATE webhook_endpoints SET active = FALSE WHERE id = $1 AND active".into(),
        params: vec![Value::Int(endpoint_id)],
    };
    let tenant = target.strip_prefix("tenant:");
    let entry = audit::entry(
        "webhook.endpoint_disabled",
        &format!("webhook_endpoint:{endpoint_id}"),
        tenant,
        json!({"why": why}),
    );
    audit::record_transaction(target, &[statement], &entry).map(drop)
}
