//! Dead-letter queue admin (role `admin`):
//!
//! - `GET /api/admin/dlq?type=webhook|export|digest|purge[&limit=N]` lists the newest dead
//!   letters of that queue: id, tenant, type, attempts, last error, time.
//! - `POST /api/admin/dlq/replay?type=webhook|export|digest|purge` with `{"id": "..."}`
//!   puts that job back on its queue with a fresh attempt count and removes it
//!   from the dead letters; every replay is audited (`dlq.replay`).
//!
//! The same from the command line (the queues live in Redis, which the
//! command reaches as the server does):
//!
//! - `neo-ops run dead-letters list <type> [--limit N] [--json]`: one line
//!   per dead letter (id, tenant, attempts, time, last error), tab-separated.
//! - `neo-ops run dead-letters replay <type> <id> [--dry-run] [--json]`: as the
//!   HTTP replay, audited; `--dry-run` says what it would requeue.
//!
//! `type` names the queue; only the queues this plugin is granted exist here.

use neo_ops_sdk::args::Args;
use neo_ops_sdk::queue::{self, DeadLetter};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, audit, backends, reply};

/// The queues this plugin administers; `type` must name one.
const TYPES: [&str; 4] = ["webhook", "export", "digest", "purge"];

const USAGE: &str = "usage: dead-letters list webhook|export|digest|purge [--limit N] [--json] \
                     | dead-letters replay webhook|export|digest|purge <id> [--dry-run] [--json]";

/// How many dead letters a listing shows unless asked for another number.
const DEFAULT_LIMIT: u32 = 100;
/// The most a listing shows (a queue keeps a thousand).
const MAX_LIMIT: u32 = 1000;

struct DeadLetters;

impl Plugin for DeadLetters {
    const USAGE: &'static str = USAGE;
    const DRY_RUN: bool = true;

    fn http(inv: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let kind = queue_type(req.query("type").unwrap_or_default())?;
        if req.is("POST", "/api/admin/dlq/replay") {
            let (_, doc) = requeue(kind, &replay_id(req)?, inv.dry_run)?;
            return Ok(reply::ok(doc));
        }
        let limit = req.number("limit", DEFAULT_LIMIT.into(), 1..=MAX_LIMIT.into())? as u32;
        Ok(reply::ok(listing(kind, &queue::dead_letters(kind, limit)?)))
    }

    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        args.strict(&["--limit"], &["--json"], USAGE)?;
        if backends::kv_in_process() {
            return Err(reply::fail(
                409,
                "dead letters are kept in Redis: without REDIS_URL they live in the serving \
                 process's memory, which this command cannot reach (set REDIS_URL, or use \
                 GET /api/admin/dlq on the server)",
            ));
        }
        let json = args.flag("--json");
        match args.positionals(&["--limit"]).as_slice() {
            ["list", kind] => {
                let kind = queue_type(kind)?;
                let letters = queue::dead_letters(kind, limit(args)?)?;
                Ok(if json {
                    reply::ok(listing(kind, &letters))
                } else {
                    reply::text(200, list_text(kind, &letters))
                })
            }
            ["replay", kind, id] if args.value("--limit").is_none() => {
                let dry_run = args.dry_run(inv);
                let (letter, doc) = requeue(queue_type(kind)?, id, dry_run)?;
                Ok(if json {
                    reply::ok(doc)
                } else {
                    reply::text(200, replay_text(kind, &letter, dry_run))
                })
            }
            _ => Err(reply::fail(400, USAGE)),
        }
    }
}

/// The queue a `type` names.
fn queue_type(given: &str) -> Result<&'static str, Failure> {
    TYPES.into_iter().find(|t| *t == given).ok_or_else(|| {
        reply::fail(
            400,
            format!("bad type \"{given}\": expected webhook, export, digest or purge"),
        )
    })
}

/// `--limit N`, 1 to [`MAX_LIMIT`].
fn limit(args: &Args) -> Result<u32, Failure> {
    let Some(given) = args.value("--limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    given
        .parse()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            reply::fail(
                400,
                format!("bad --limit \"{given}\": expected a number from 1 to {MAX_LIMIT}"),
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

fn listing(kind: &str, letters: &[DeadLetter]) -> Json {
    let items: Vec<Json> = letters.iter().map(|d| summary(kind, d)).collect();
    json!({"type": kind, "dead_letters": items})
}

/// Requeues dead letter `id` (on a dry run only finds it): the letter as
/// it was, and the answer's document.
fn requeue(kind: &str, id: &str, dry_run: bool) -> Result<(DeadLetter, Json), Failure> {
    let letter = if dry_run {
        find(kind, id)?
    } else {
        replay(kind, id)?
    };
    let mut doc = json!({"id": id, "type": kind, "requeued": !dry_run});
    if dry_run {
        doc["dry_run"] = json!(true);
    }
    Ok((letter, doc))
}

/// One line per dead letter: id, tenant, attempts, time, last error, with
/// tabs and line breaks inside a field made spaces.
fn list_text(kind: &str, letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return format!("no {kind} dead letters\n");
    }
    let one_line = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    letters
        .iter()
        .map(|d| {
            let error = d.last_error.as_deref().map(kept_error).unwrap_or_default();
            format!(
                "{}\t{}\t{}\t{}\t{}\n",
                one_line(&d.id),
                one_line(d.tenant.as_deref().unwrap_or("-")),
                d.attempts,
                d.dead_at.as_deref().unwrap_or(&d.enqueued_at),
                one_line(&error),
            )
        })
        .collect()
}

fn replay_text(kind: &str, letter: &DeadLetter, dry_run: bool) -> String {
    let tenant = match &letter.tenant {
        Some(t) => format!("tenant \"{t}\""),
        None => "no tenant".into(),
    };
    let what = format!(
        "{kind} job \"{}\" ({tenant}, dead after {} attempts)",
        letter.id, letter.attempts
    );
    if dry_run {
        format!("would requeue {what}\ndry run: nothing was changed\n")
    } else {
        format!("requeued {what}\n")
    }
}

/// Dead letter `id`, left where it is.
fn find(kind: &str, id: &str) -> Result<DeadLetter, Failure> {
    queue::find_dead_letter(kind, id)?.ok_or_else(|| not_found(kind, id))
}

fn not_found(kind: &str, id: &str) -> Failure {
    reply::fail(404, format!("no {kind} dead letter with id \"{id}\""))
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

/// Requeues dead letter `id`, on record; answers it as it was.
fn replay(kind: &str, id: &str) -> Result<DeadLetter, Failure> {
    // The host hands back the dead letter it moved: its tenant and error go
    // into the audit record.
    let Some(letter) = queue::replay(kind, id)? else {
        return Err(not_found(kind, id));
    };
    // The error is a plugin's text, which may quote a NUL from the job's
    // payload: the audit log refuses NUL, and every replay would fail its
    // record after the move.
    let last_error = letter
        .last_error
        .as_deref()
        .map(|e| kept_error(e).replace('\0', "\u{FFFD}"));
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
    Ok(letter)
}

neo_ops_sdk::export_plugin!(DeadLetters);
