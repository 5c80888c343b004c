//! Dead-letter queue admin (role `admin`):
//!
//! - `GET /api/admin/dlq?type=webhook|export[&limit=N]` lists the newest dead
//!   letters of that queue: id, tenant, type, attempts, last error, time.
//! - `POST /api/admin/dlq/replay?type=webhook|export` with `{"id": "..."}`
//!   puts that job back on its queue with a fresh attempt count and removes it
//!   from the dead letters; every replay is audited (`dlq.replay`).
//!
//! `type` names the queue; only the queues this plugin is granted exist here.

mod request;

use neo_ops_sdk::queue::{self, DeadLetter};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, Trigger, audit, reply};

struct DeadLetters;

impl Plugin for DeadLetters {
    fn run(inv: Invocation) -> Result<Output, Failure> {
        let Trigger::Http(http) = &inv.trigger else {
            return Err(reply::fail(400, "dead-letters runs from its routes"));
        };
        let kind = request::queue_type(http)?;
        match (http.method.as_str(), is_replay(http)) {
            ("GET", false) => list(kind, request::limit(http)?),
            ("POST", true) => replay(kind, &request::replay_id(http)?, &inv),
            (method, _) => Err(reply::fail(
                404,
                format!("no dead-letter route for {method} \"{}\"", http.path),
            )),
        }
    }
}

fn is_replay(http: &HttpRequest) -> bool {
    http.path.trim_end_matches('/').ends_with("/replay")
}

fn list(kind: &str, limit: u32) -> Result<Output, Failure> {
    let letters = queue::dead_letters(kind, limit)?;
    let items: Vec<Json> = letters.iter().map(|d| summary(kind, d)).collect();
    Ok(reply::ok(json!({"type": kind, "dead_letters": items})))
}

fn summary(kind: &str, d: &DeadLetter) -> Json {
    json!({
        "id": d.id,
        "tenant": d.tenant,
        "type": kind,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "time": d.dead_at.as_deref().unwrap_or(&d.enqueued_at),
    })
}

fn replay(kind: &str, id: &str, inv: &Invocation) -> Result<Output, Failure> {
    // The host hands back the dead letter it moved: its tenant and error go
    // into the audit record.
    let Some(letter) = queue::replay(kind, id)? else {
        return Err(reply::fail(
            404,
            format!("no {kind} dead letter with id \"{id}\""),
        ));
    };
    let entry = audit::Entry {
        actor: inv
            .principal
            .as_ref()
            .map_or_else(|| "unknown".into(), |p| p.name.clone()),
        action: "dlq.replay".into(),
        target: format!("{kind}:{id}"),
        tenant: letter.tenant.clone(),
        details: json!({
            "attempts": letter.attempts,
            "last_error": letter.last_error,
        })
        .to_string(),
    };
    audit::append(&entry).map_err(|e| {
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
