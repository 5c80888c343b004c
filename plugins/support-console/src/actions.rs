//! The remediation actions. Each is prepared first (everything that can be
//! "not found" is looked up, nothing changes) and applied only once the
//! double-click guard is held.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, mail, queue, reply, time};

use crate::tenant::Tenant;

/// The queue the webhook-dispatch plugin consumes.
const WEBHOOK_QUEUE: &str = "webhook";

#[derive(Clone, Copy)]
pub enum Action {
    ResendInvoice,
    ReprintKot,
    ReplayWebhook,
    UnlockPin,
}

/// What an action acts on.
#[derive(Clone, Copy)]
pub enum Kind {
    Order,
    Staff,
}

impl Kind {
    /// The route's path parameter.
    pub fn param(self) -> &'static str {
        match self {
            Kind::Order => "order_id",
            Kind::Staff => "staff_id",
        }
    }

    /// The key naming it in a response.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Staff => "staff",
        }
    }

    /// The audit target, e.g. `order:42`.
    pub fn target(self, id: i64) -> String {
        format!("{}:{id}", self.noun())
    }
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::ResendInvoice => "resend_invoice",
            Action::ReprintKot => "reprint_kot",
            Action::ReplayWebhook => "replay_webhook",
            Action::UnlockPin => "unlock_pin",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Action::UnlockPin => Kind::Staff,
            _ => Kind::Order,
        }
    }
}

/// An action ready to apply, with what it found.
pub enum Plan {
    ResendInvoice(Invoice),
    ReprintKot {
        order_id: i64,
    },
    ReplayWebhook {
        order_id: i64,
        deliveries: Vec<i64>,
    },
    UnlockPin {
        staff_id: i64,
        failed_attempts: i64,
        was_locked: bool,
    },
}

pub struct Invoice {
    id: i64,
    order_id: i64,
    number: String,
    amount_minor: i64,
    customer_id: i64,
    customer_name: String,
    email: String,
}

/// What an applied action did.
pub struct Outcome {
    /// Merged into the response's `data`.
    pub data: Json,
    /// The audit record's details: counts and ids, never secrets or PII.
    pub details: Json,
}

/// Looks up everything the action needs in the tenant's own database.
pub fn prepare(action: Action, tenant: &Tenant, id: i64) -> Result<Plan, Failure> {
    let db = tenant.db();
    match action {
        Action::UnlockPin => staff(&db, id),
        Action::ResendInvoice => {
            order_exists(&db, id)?;
            invoice(&db, id).map(Plan::ResendInvoice)
        }
        Action::ReprintKot => {
            order_exists(&db, id)?;
            let n = count(
                &db,
                "SELECT COUNT(*) AS n FROM kots WHERE order_id = $1",
                id,
            )?;
            if n == 0 {
                return Err(reply::fail(
                    404,
                    format!("order {id} has no kitchen order tickets"),
                ));
            }
            Ok(Plan::ReprintKot { order_id: id })
        }
        Action::ReplayWebhook => {
            order_exists(&db, id)?;
            let rows = db::query(
                &db,
                "SELECT id FROM webhook_deliveries WHERE order_id = $1 ORDER BY id",
                &[Value::Int(id)],
            )?;
            let deliveries: Vec<i64> = rows.iter().filter_map(|r| r.int("id")).collect();
            if deliveries.is_empty() {
                return Err(reply::fail(
                    404,
                    format!("order {id} has no webhook deliveries"),
                ));
            }
            Ok(Plan::ReplayWebhook {
                order_id: id,
                deliveries,
            })
        }
    }
}

fn order_exists(db: &str, id: i64) -> Result<(), Failure> {
    let rows = db::query(
        db,
        "SELECT id FROM orders WHERE id = $1 AND deleted_at IS NULL",
        &[Value::Int(id)],
    )?;
    if rows.rows.is_empty() {
        return Err(reply::fail(404, format!("order {id} not found")));
    }
    Ok(())
}

fn staff(db: &str, id: i64) -> Result<Plan, Failure> {
    let rows = db::query(
        db,
        "SELECT pin_failed_attempts, pin_locked_at FROM staff WHERE id = $1 AND deleted_at IS NULL",
        &[Value::Int(id)],
    )?;
    let row = rows
        .iter()
        .next()
        .ok_or_else(|| reply::fail(404, format!("staff {id} not found")))?;
    Ok(Plan::UnlockPin {
        staff_id: id,
        failed_attempts: row.int("pin_failed_attempts").unwrap_or(0),
        was_locked: !matches!(row.get("pin_locked_at"), Value::Null),
    })
}

fn count(db: &str, sql: &str, id: i64) -> Result<i64, Failure> {
    let rows = db::query(db, sql, &[Value::Int(id)])?;
    Ok(rows.iter().next().and_then(|r| r.int("n")).unwrap_or(0))
}

fn invoice(db: &str, order_id: i64) -> Result<Invoice, Failure> {
    let rows = db::query(
        db,
        "SELECT i.id, i.number, i.amount_minor, c.id AS customer_id, c.name AS customer_name, c.email \
         FROM invoices i JOIN orders o ON o.id = i.order_id \
         LEFT JOIN customers c ON c.id = o.customer_id AND c.deleted_at IS NULL \
         WHERE i.order_id = $1 AND i.deleted_at IS NULL ORDER BY i.id DESC LIMIT 1",
        &[Value::Int(order_id)],
    )?;
    let row = rows
        .iter()
        .next()
        .ok_or_else(|| reply::fail(404, format!("order {order_id} has no invoice")))?;
    let number = row.text("number").unwrap_or_default().to_string();
    let email = row
        .text("email")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            reply::fail(
                409,
                format!("order {order_id} has no customer email to send invoice \"{number}\" to"),
            )
        })?;
    Ok(Invoice {
        id: row.int("id").unwrap_or_default(),
        order_id,
        number: number.clone(),
        amount_minor: row.int("amount_minor").unwrap_or_default(),
        customer_id: row.int("customer_id").unwrap_or_default(),
        customer_name: row.text("customer_name").unwrap_or_default().to_string(),
        email: email.to_string(),
    })
}

impl Plan {
    pub fn apply(self, tenant: &Tenant) -> Result<Outcome, Failure> {
        let db = tenant.db();
        let now = time::now_micros();
        match self {
            Plan::ResendInvoice(inv) => resend_invoice(&db, tenant, &inv, now),
            Plan::ReprintKot { order_id } => {
                let n = db::execute(
                    &db,
                    "UPDATE kots SET reprint_requested_at = $1, reprint_count = reprint_count + 1 \
                     WHERE order_id = $2",
                    &[Value::Timestamp(now), Value::Int(order_id)],
                )?;
                Ok(Outcome {
                    data: json!({"kots": n, "reprint_requested_at": time::rfc3339(now)}),
                    details: json!({"kots": n}),
                })
            }
            Plan::ReplayWebhook {
                order_id,
                deliveries,
            } => {
                db::execute(
                    &db,
                    "UPDATE webhook_deliveries SET status = 'pending' WHERE order_id = $1",
                    &[Value::Int(order_id)],
                )?;
                let jobs = deliveries
                    .iter()
                    .map(|id| {
                        let payload = json!({"delivery_id": id}).to_string();
                        queue::enqueue_for_tenant(WEBHOOK_QUEUE, &tenant.name, &payload)
                    })
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(Outcome {
                    data: json!({"deliveries": deliveries, "jobs": jobs.len()}),
                    details: json!({"deliveries": deliveries, "jobs": jobs}),
                })
            }
            Plan::UnlockPin {
                staff_id,
                failed_attempts,
                was_locked,
            } => {
                db::execute(
                    &db,
                    "UPDATE staff SET pin_failed_attempts = 0, pin_locked_at = NULL WHERE id = $1",
                    &[Value::Int(staff_id)],
                )?;
                let data =
                    json!({"was_locked": was_locked, "failed_attempts_cleared": failed_attempts});
                Ok(Outcome {
                    details: data.clone(),
                    data,
                })
            }
        }
    }
}

fn resend_invoice(db: &str, tenant: &Tenant, inv: &Invoice, now: i64) -> Result<Outcome, Failure> {
    let from = if tenant.display_name.is_empty() {
        &tenant.name
    } else {
        &tenant.display_name
    };
    let greeting = if inv.customer_name.is_empty() {
        "Hello"
    } else {
        "Dear"
    };
    let text = format!(
        "{greeting} {name},\n\n\
         As requested, here is your invoice from {from}.\n\n\
         Invoice: {number}\n\
         Order:   {order}\n\
         Amount:  {amount}\n\n\
         Thank you for dining with us.\n",
        name = inv.customer_name,
        number = inv.number,
        order = inv.order_id,
        amount = money(inv.amount_minor),
    );
    let message_id = mail::send(&mail::Message {
        to: vec![inv.email.clone()],
        cc: vec![],
        subject: format!("Your invoice {} from {from}", inv.number),
        text,
        html: None,
        attachments: vec![],
    })?;
    db::execute(
        db,
        "UPDATE invoices SET emailed_at = $1 WHERE id = $2",
        &[Value::Timestamp(now), Value::Int(inv.id)],
    )?;
    Ok(Outcome {
        data: json!({
            "invoice": {"number": inv.number, "emailed_at": time::rfc3339(now)},
            "sent_to": inv.email,
        }),
        details: json!({
            "invoice": inv.number,
            "customer_id": inv.customer_id,
            "message_id": message_id,
        }),
    })
}

/// Minor units as a decimal amount, e.g. 123456 -> "1234.56".
fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_has_two_decimals() {
        assert_eq!(super::money(123_456), "1234.56");
        assert_eq!(super::money(5), "0.05");
        assert_eq!(super::money(-250), "-2.50");
    }
}
