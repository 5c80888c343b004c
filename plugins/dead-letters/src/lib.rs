//! Dead-letter queue admin (role `admin`):
//!
//! - `GET /api/admin/dlq?type=webhook|export|digest|purge[&limit=N]` lists the newest dead
//!   letters of that queue: id, tenant, type, attempts, last error, time.
//! - `POST /api/admin/dlq/replay?type=webhook|export|digest|purge` with `{"id": "..."}`
//!   puts that job back on its queue with a fresh attempt count and removes it
//!   from the dead letters; every replay is audited (`dlq.replay`).
//!
//! `type` names the queue; only the queues this plugin is granted exist here.

use neo_ops_sdk::queue::{self, DeadLetter};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, audit, reply};

/// The queues this plugin administers; `type` must name one.
const TYPES: [&str; 4] = ["webhook", "export", "digest", "purge"];

struct DeadLetters;

impl Plugin for DeadLetters {
    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let kind = queue_type(req)?;
        if req.is("POST", "/api/admin/dlq/replay") {
            return replay(kind, &replay_id(req)?);
        }
        let limit = req.number("limit", 100, 1..=1000)? as u32;
        let items: Vec<Json> = queue::dead_letters(kind, limit)?
            .iter()
            .map(|d| summary(kind, d))
            .collect();
        Ok(reply::ok(json!({"type": kind, "dead_letters": items})))
    }
}

/// The `type` query parameter, which is the queue's name.
fn queue_type(req: &HttpRequest) -> Result<&'static str, Failure> {
    let given = req.query("type").unwrap_or_default();
    TYPES.into_iter().find(|t| *t == given).ok_or_else(|| {
        reply::fail(
            400,
            format!("bad type \"{given}\": expected webhook, export, digest or purge"),
        )
    })
}

/// The `id` of a replay body `{"id": "..."}`.
fn replay_id(req: &HttpRequest) -> Result<String, Failure> {
    let body: Option<Json> = req.json().ok().flatten();
    body.as_ref()
        .and_then(|b| b.get("id"))
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| reply::fail(400, "bad body: expected {\"id\": \"<dead letter id>\"}"))
}

/// A dead letter's error as listed and put on record (the record is kept
/// for good): masked as the host masks it when it dead-letters a job, also
/// for a letter kept from before the host did.
fn kept_error(error: &str) -> String {
    neo_ops_sdk::redact::redact_text(error, "****")
}

fn summary(kind: &str, d: &DeadLetter) -> Json {
    json!({
        "id": d.id,
        "tenant": d.tenant,
        "type": kind,
        "attempts": d.attempts,
        "last_error": d.last_error.as_deref().map(kept_error),
        "time": d.dead_at.as_deref().unwrap_or(&d.enqueued_at),
    })
}

fn replay(kind: &str, id: &str) -> Result<Output, Failure> {
    // The host hands back the dead letter it moved: its tenant and error go
    // into the audit record.
    let Some(letter) = queue::replay(kind, id)? else {
        return Err(reply::fail(
            404,
            format!("no {kind} dead letter with id \"{id}\""),
        ));
    };
    // The error is a plugin's text, which may quote a NUL from the job's
    // payload: the audit log refuses NUL, and every replay would fail its
    // record after the move.
    let last_error = letter
        .last_error
        .map(|e| kept_error(&e).replace('\0', "\u{FFFD}"));
    let details = json!({"attempts": letter.attempts, "last_error": last_error});
    audit::record(
        "dlq.replay",
        &format!("{kind}:{id}"),
        letter.tenant.as_deref(),
        details,
    )
    .map_err(|e| {
        reply::fail(
            500,
            format!(
                "{kind} job \"{id}\" was requeued but its audit record failed: {}",
                e.message
            ),
        )
    })?;
    Ok(reply::ok(json!({"id": id, "type": kind, "requeued": true})))
}

neo_ops_sdk::export_plugin!(DeadLetters);
