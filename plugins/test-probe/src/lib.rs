//! Test plugin: exercises one capability per command and reports what the host
//! answered, so tests can show grants are enforced before any I/O. Also the
//! schedule and queue consumer used by the trigger tests.
//!
//! Commands: `db TARGET`, `db-write TARGET KEY`, `db-nul TARGET`, `db-sql TARGET SQL`
//! (rows and bytes a query brought back), `db-tx TARGET SQL…` (one
//! transaction), `kv KEY`, `expire KEY MS`,
//! `kv-delete KEY`, `lock NAME`, `http URL [HEADER VALUE]`, `mail TO`, `env NAME`,
//! `enqueue QUEUE PAYLOAD`, `audit ACTION [TIMES]`, `audit-tx TARGET [SQL]` (a
//! transaction with its record), `sleep MS`, `lock-sleep NAME MS`,
//! `tenant-logs` (how many of the invocation tenant's log lines it may read),
//! `log N` (N info lines, `probe line <i>`).

use neo_ops_sdk::db::Value;
use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{
    Error, Failure, HttpRequest, Invocation, Output, Plugin, QueueMessage, ScheduleEvent,
    args::Args, audit, config, db, files, host_info, kv, log, mail, outbound_http, queue, reply,
    time,
};

struct Probe;

impl Plugin for Probe {
    fn command(_: &Invocation, args: &Args) -> Result<Output, Failure> {
        probe(&args.positionals(&[]))
    }

    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let argv: Vec<&str> = req
            .query
            .iter()
            .filter(|(k, _)| k != "tenant")
            .map(|(_, v)| v.as_str())
            .collect();
        probe(&argv)
    }

    /// Schedules and queue jobs count each delivery in kv so the tests can
    /// check "once per slot" and "consumed once".
    fn schedule(_: &Invocation, ev: &ScheduleEvent) -> Result<Output, Failure> {
        for arg in &ev.args {
            if let Some(ms) = arg.strip_prefix("sleep:") {
                pause(ms.parse().unwrap_or(0));
            }
        }
        let n = kv::incr(&format!("probe:slot:{}", ev.slot), 1)?;
        Ok(reply::json(200, &json!({"slot": ev.slot, "count": n})))
    }

    fn queue(_: &Invocation, msg: &QueueMessage) -> Result<Output, Failure> {
        if msg.payload.contains("fail") {
            return Err(reply::fail(
                500,
                format!("job {} failed on purpose", msg.id),
            ));
        }
        // An error status answered, not raised: still a failed job.
        if let Some(status) = msg.payload.strip_prefix("answer-") {
            let status: u16 = status.parse().unwrap_or(500);
            let body = json!({"ok": false, "error": format!("answered {status} on purpose")});
            return Ok(reply::json(status, &body));
        }
        if let Some(ms) = msg.payload.strip_prefix("sleep:") {
            let ms: u64 = ms.split('-').next().unwrap_or("0").parse().unwrap_or(0);
            pause(ms);
        }
        if msg.payload.contains("no-kv") {
            // Done without a kv call, so a test can cut Redis meanwhile.
            return Ok(reply::json(200, &json!({"job": msg.id})));
        }
        let n = kv::incr(&format!("probe:job:{}", msg.payload), 1)?;
        Ok(reply::json(200, &json!({"job": msg.id, "count": n})))
    }
}

/// Waits `ms` on the host's clock. Plugins have no WASI, so no `std` sleep:
/// this spins, which is what a test needs (a plugin busy past its timeout).
fn pause(ms: u64) {
    let until = time::now_micros() + ms as i64 * 1000;
    while time::now_micros() < until {}
}

fn probe(argv: &[&str]) -> Result<Output, Failure> {
    let result: Result<String, Error> = match argv {
        ["db", target] => {
            db::query(target, "SELECT 1 AS one", &[]).map(|rows| format!("{} row", rows.rows.len()))
        }
        ["db-write", target, key] => {
            let sql = if *target == "master" {
                "INSERT INTO incidents (title, details) VALUES ($1, 'probe')"
            } else {
                "INSERT INTO settings (key, value) VALUES ($1, 'probe')"
            };
            db::execute(target, sql, &[Value::from(*key)]).map(|n| format!("{n} row"))
        }
        // A NUL byte Postgres refuses: its error text must not come back.
        ["db-nul", target] => db::query(target, "SELECT $1 AS t", &[Value::from("a\0b")])
            .map(|rows| format!("{} row", rows.rows.len())),
        ["db-tx", target, sqls @ ..] => {
            let statements: Vec<db::Statement> = sqls
                .iter()
                .map(|sql| db::Statement {
                    sql: sql.to_string(),
                    params: vec![],
                })
                .collect();
            db::transaction(target, &statements).map(|done| format!("{} statements", done.len()))
        }
        ["db-sql", target, sql] => db::query(target, sql, &[]).map(|rows| {
            let bytes: usize = rows.rows.iter().flatten().map(text_len).sum();
            format!("{} rows, {bytes} bytes", rows.rows.len())
        }),
        ["kv", key] => kv::set(key, b"probe", Some(60_000)).map(|_| "stored".into()),
        ["expire", key, ms] => {
            kv::expire(key, ms.parse().unwrap_or(0)).map(|set| format!("expire {set}"))
        }
        ["disk", path] => files::disk_usage(path)
            .map(|d| format!("free {} total {}", d.free_bytes, d.total_bytes)),
        ["read", path] => files::read(path, 0, 1 << 20).map(|b| format!("{} bytes", b.len())),
        ["incr", key] => kv::incr(key, 1).map(|n| format!("now {n}")),
        ["kv-get", key] => kv::get(key).map(|v| format!("{} bytes", v.map_or(0, |v| v.len()))),
        ["kv-range", key, start, stop] => {
            kv::list_range(key, start.parse().unwrap_or(0), stop.parse().unwrap_or(-1)).map(
                |items| {
                    let bytes: usize = items.iter().map(Vec::len).sum();
                    format!("{} items, {bytes} bytes", items.len())
                },
            )
        }
        ["kv-delete", key] => kv::delete(key).map(|existed| format!("existed {existed}")),
        ["lock", name] => {
            kv::lock(name, 60_000).map(|token| if token.is_some() { "held" } else { "busy" }.into())
        }
        ["lock-sleep", name, ms] => kv::lock(name, 60_000).map(|token| {
            pause(ms.parse().unwrap_or(0));
            if token.is_some() { "held" } else { "busy" }.into()
        }),
        ["big", bytes] => Ok("x".repeat(bytes.parse::<usize>().unwrap_or(0).min(16 << 20))),
        ["late-kv", ms, key] => {
            kv::set(&format!("{key}:started"), b"", Some(60_000))?;
            pause(ms.parse().unwrap_or(0));
            kv::set(key, b"late", Some(60_000)).map(|_| "stored".into())
        }
        ["sleep", ms] => {
            pause(ms.parse().unwrap_or(0));
            Ok("slept".into())
        }
        ["http", url, header @ ..] if header.len() <= 2 => {
            outbound_http::send(&outbound_http::Request {
                method: "GET".into(),
                url: url.to_string(),
                headers: match header {
                    [name, value] => vec![(name.to_string(), value.to_string())],
                    _ => vec![],
                },
                body: vec![],
                timeout_ms: Some(2_000),
            })
            .map(|r| format!("status {}", r.status))
        }
        ["mail", to] => mail::send(&mail::Message {
            to: to.split(',').map(str::to_string).collect(),
            cc: vec![],
            subject: "probe".into(),
            text: "probe message".into(),
            html: None,
            attachments: vec![],
        }),
        ["env", name] => config::env(name).map(|v| v.unwrap_or_default()),
        ["setting", key] => Ok(config::get(key).unwrap_or_default()),
        ["tenant-logs"] => Ok(format!("{} lines", host_info::tenant_logs().len())),
        ["log", n] => {
            let n = n.parse::<u32>().unwrap_or(0);
            for i in 0..n {
                log::log(log::Level::Info, &format!("probe line {i}"), &[]);
            }
            Ok(format!("logged {n}"))
        }
        ["warn", text] => {
            let field = ("api_key".to_string(), "k-123 k-456".to_string());
            log::log(log::Level::Warn, text, &[field]);
            Ok("warned".into())
        }
        ["enqueue", q, payload] => queue::enqueue(q, payload),
        ["audit", action] => audit::append(&audit::Entry {
            actor: "probe".into(),
            action: action.to_string(),
            target: "probe".into(),
            tenant: None,
            details: "{}".into(),
        })
        .map(|id| id.to_string()),
        ["audit-padded", bytes] => {
            let pad = "x".repeat(bytes.parse::<usize>().unwrap_or(0));
            audit::record("probe.padded", "probe", None, json!({ "pad": pad }))
                .map(|id| id.to_string())
        }
        ["audit", action, times] => (0..times.parse::<u32>().unwrap_or(1))
            .try_for_each(|_| audit::record(action, "probe", None, json!({})).map(drop))
            .map(|()| format!("{times} records")),
        ["audit-tx", target, rest @ ..] if rest.len() <= 1 => {
            let statement = db::Statement {
                sql: rest.first().unwrap_or(&"SELECT 1 AS one").to_string(),
                params: vec![],
            };
            let entry = audit::entry("probe.tx", "probe", None, json!({}));
            audit::record_transaction(target, &[statement], &entry)
                .map(|(id, _)| format!("record {id}"))
        }
        _ => return Err(reply::fail(400, format!("unknown probe {argv:?}"))),
    };
    Ok(match result {
        Ok(detail) => reply::json(200, &json!({"ok": true, "detail": detail})),
        Err(e) => reply::json(
            200,
            &json!({"ok": false, "code": e.code.as_str(), "message": e.message}),
        ),
    })
}

/// Bytes of text a value carries.
fn text_len(v: &Value) -> usize {
    match v {
        Value::Text(s) => s.len(),
        _ => 0,
    }
}

neo_ops_sdk::export_plugin!(Probe);
