//! `reprint_kot`: marks the order's kitchen order tickets for reprint (the
//! POS print agent polls `reprint_requested_at`).

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Failure, reply, time};

use super::{Outcome, Record, order_exists};

pub struct Reprint {
    order_id: i64,
}

pub fn prepare(db: &str, order_id: i64) -> Result<Reprint, Failure> {
    order_exists(db, order_id)?;
    let rows = db::query(
        db,
        "SELECT COUNT(*) AS n FROM kots WHERE order_id = $1",
        &[Value::Int(order_id)],
    )?;
    if rows.iter().next().and_then(|r| r.int("n")).unwrap_or(0) == 0 {
        return Err(reply::fail(
            404,
            format!("order {order_id} has no kitchen order tickets"),
        ));
    }
    Ok(Reprint { order_id })
}

pub fn apply(r: &Reprint, record: &Record) -> Result<Outcome, Failure> {
    let now = time::now_micros();
    // The record's "rows" is the number of KOTs marked.
    let n = record.change(
        "UPDATE kots SET reprint_requested_at = $1, reprint_count = reprint_count + 1 \
         WHERE order_id = $2",
        vec![Value::Timestamp(now), Value::Int(r.order_id)],
        json!({}),
    )?;
    Ok(Outcome {
        data: json!({"kots": n, "reprint_requested_at": time::rfc3339(now)}),
    })
}
