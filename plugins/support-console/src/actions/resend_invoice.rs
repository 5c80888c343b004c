//! `resend_invoice`: mails the order's latest invoice to its customer and
//! stamps `emailed_at`.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Failure, mail, reply, time};

use super::{ChangeError, Outcome, Record, order_exists};

pub struct Invoice {
    id: i64,
    order_id: i64,
    number: String,
    amount_minor: i64,
    customer_id: i64,
    customer_name: String,
    email: String,
}

pub fn prepare(db: &str, order_id: i64) -> Result<Invoice, Failure> {
    order_exists(db, order_id)?;
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

pub fn apply(inv: &Invoice, record: &Record) -> Result<Outcome, Failure> {
    let tenant = record.tenant;
    let now = time::now_micros();
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
    // The mail has gone: marked done at once (the stamp and the audit record
    // could still be cut off by the timeout, which releases the guard), and
    // from here a failure must not fail the action, or the guard would be
    // released and the audit record of a sent mail would be missing.
    (record.took_effect)();
    let details = |stamped: bool| {
        json!({
            "invoice": inv.number,
            "customer_id": inv.customer_id,
            "message_id": message_id,
            "emailed_at_stamped": stamped,
        })
    };
    // The stamp and the record in one call. If the stamp fails, the record
    // of the mail that went is still written, saying so; nothing after the
    // mail fails the action (a retry would be let through to mail again).
    let stamped = match record.change(
        "UPDATE invoices SET emailed_at = $1 WHERE id = $2",
        vec![Value::Timestamp(now), Value::Int(inv.id)],
        details(true),
    ) {
        Ok(_) => Ok(()),
        // Stamped; only its record is missing, and the host logged that.
        Err(ChangeError::Committed(_)) => Ok(()),
        Err(ChangeError::NotDone(e)) => Err(e),
    };
    if let Err(e) = &stamped {
        neo_ops_sdk::warn(&format!(
            "invoice {} was mailed but emailed_at was not stamped: {}",
            inv.number, e.message
        ));
        if let Err(e) = record.append(details(false)) {
            neo_ops_sdk::warn(&format!(
                "invoice {} was mailed but its audit record was not written: {}",
                inv.number, e.message
            ));
        }
    }
    Ok(Outcome {
        data: json!({
            "invoice": {"number": inv.number, "emailed_at": time::rfc3339(now)},
            "sent_to": inv.email,
            "emailed_at_stamped": stamped.is_ok(),
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
