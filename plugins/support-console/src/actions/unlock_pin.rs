//! `unlock_pin`: clears a staff member's PIN lock and failed attempts.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Failure, reply};

use super::{Outcome, Record};

pub struct Unlock {
    staff_id: i64,
    failed_attempts: i64,
    was_locked: bool,
}

pub fn prepare(db: &str, staff_id: i64) -> Result<Unlock, Failure> {
    let rows = db::query(
        db,
        "SELECT pin_failed_attempts, pin_locked_at FROM staff WHERE id = $1 AND deleted_at IS NULL",
        &[Value::Int(staff_id)],
    )?;
    let row = rows
        .iter()
        .next()
        .ok_or_else(|| reply::fail(404, format!("staff {staff_id} not found")))?;
    Ok(Unlock {
        staff_id,
        failed_attempts: row.int("pin_failed_attempts").unwrap_or(0),
        was_locked: !matches!(row.get("pin_locked_at"), Value::Null),
    })
}

pub fn apply(u: &Unlock, record: &Record) -> Result<Outcome, Failure> {
    let data = json!({"was_locked": u.was_locked, "failed_attempts_cleared": u.failed_attempts});
    record.change(
        "UPDATE staff SET pin_failed_attempts = 0, pin_locked_at = NULL WHERE id = $1",
        vec![Value::Int(u.staff_id)],
        data.clone(),
    )?;
    Ok(Outcome { data })
}
