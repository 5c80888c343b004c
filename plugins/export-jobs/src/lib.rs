//! Export jobs: consumes the `export` queue. A job
//! `{"kind": "orders", "from": "YYYY-MM-DD", "to": "YYYY-MM-DD", "email": "x@y"}`
//! carries its tenant; the tenant's orders placed on those business days (in
//! the tenant's time zone, both days included, deleted orders left out) are
//! mailed to `email` as a CSV attachment. Any failure fails the job with
//! its error kept: one a retry would meet again (a bad payload, a tenant
//! deleted or with an unknown time zone) is dead-lettered at once, anything
//! else (mail that cannot be sent, a database blip) is retried and
//! dead-lettered after `max_attempts`. A job mailed once is marked sent
//! (kv `export:sent:<job id>`, 14 days), so a redelivery of it mails
//! nothing.

mod csv;
mod job;
mod orders;

use chrono_tz::Tz;
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Failure, Invocation, Output, Plugin, QueueMessage, kv, mail, reply, tenants};

struct ExportJobs;

/// How long a sent export's mark is kept: longer than any job waits for
/// its retries, or in the dead letters for a replay.
const SENT_MARK_MS: u64 = 14 * 24 * 3600 * 1000;

impl Plugin for ExportJobs {
    fn queue(inv: &Invocation, message: &QueueMessage) -> Result<Output, Failure> {
        let Some(tenant) = &inv.tenant else {
            return Err(reply::fail(
                400,
                format!("export job {} has no tenant", message.id),
            ));
        };
        let export = job::parse(&message.payload).map_err(|e| reply::fail(400, e))?;
        // A job delivered again after its mail went (its process killed
        // before the queue heard it was done, a replica taken for dead)
        // is not mailed again. A mark that cannot be read sends: a second
        // copy beats none.
        let sent = format!("export:sent:{}", message.id);
        if let Ok(Some(message_id)) = kv::get(&sent) {
            return Ok(reply::ok(json!({
                "tenant": tenant,
                "already_sent": true,
                "message_id": String::from_utf8_lossy(&message_id),
            })));
        }
        let (output, message_id) = run_export(tenant, &export)?;
        if let Err(e) = kv::set(&sent, message_id.as_bytes(), Some(SENT_MARK_MS)) {
            neo_ops_sdk::warn(&format!(
                "export job {} was mailed but not marked sent ({}): a redelivery mails it again",
                message.id, e.message
            ));
        }
        Ok(output)
    }
}

/// Mails the export; the answer and the message id.
fn run_export(tenant: &str, export: &job::Export) -> Result<(Output, String), Failure> {
    let zone = tenant_zone(tenant)?;
    let range = format!("{} to {}", export.from, export.to);
    let result = match orders::export(&format!("tenant:{tenant}"), zone, export.from, export.to) {
        Ok(r) => r,
        Err(orders::ExportError::Host(e)) => return Err(e.into()),
        Err(orders::ExportError::TooLarge { orders }) => {
            return Err(reply::fail(
                400,
                format!(
                    "orders export for \"{tenant}\" ({range}) is over {} MiB after {orders} orders: \
                     ask for a shorter range",
                    orders::MAX_CSV_BYTES >> 20
                ),
            ));
        }
    };
    let message = mail::Message {
        to: vec![export.email.clone()],
        cc: vec![],
        subject: format!("Orders export for {tenant}: {range}"),
        text: format!(
            "{} orders placed from {range} ({zone}) are attached as CSV.\n\
             Amounts are in minor units (paise); times are UTC.\n\n\
             Sent by neo-ops export-jobs.\n",
            result.orders
        ),
        html: None,
        attachments: vec![mail::Attachment {
            filename: format!("orders-{tenant}-{}-{}.csv", export.from, export.to),
            content_type: "text/csv; charset=utf-8".into(),
            data: result.csv,
        }],
    };
    let message_id = mail::send(&message).map_err(|e| {
        reply::fail(
            reply::status_of(e.code),
            format!("orders export for \"{tenant}\" was not sent: {}", e.message),
        )
    })?;
    let output = reply::ok(json!({
        "tenant": tenant,
        "orders": result.orders,
        "to": export.email,
        "message_id": message_id,
    }));
    Ok((output, message_id))
}

/// The tenant's zone. A tenant deleted since the job was queued is gone
/// (410), and a zone no one can read is the tenant's setting to fix (400):
/// either dead-letters the job at once, since a retry would meet the same;
/// it can be replayed once the setting is fixed.
fn tenant_zone(tenant: &str) -> Result<Tz, Failure> {
    let Some(found) = tenants::find(tenant)? else {
        return Err(reply::fail(410, format!("tenant \"{tenant}\" not found")));
    };
    let zone = found.time_zone;
    zone.parse::<Tz>().map_err(|_| {
        reply::fail(
            400,
            format!("tenant \"{tenant}\" has an unknown time zone \"{zone}\""),
        )
    })
}

neo_ops_sdk::export_plugin!(ExportJobs);
