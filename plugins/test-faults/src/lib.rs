//! Test plugin: misbehaves on request so the tests can show that a trap, an
//! endless loop or a memory hog fails only its own invocation. `ok` answers a
//! small JSON document (also the benchmark's no-I/O route). A schedule's
//! first argument is its mode.

use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{
    Failure, HttpRequest, Invocation, Output, Plugin, ScheduleEvent, args::Args, reply,
};

struct Faults;

impl Plugin for Faults {
    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        misbehave(req.path_param("mode").unwrap_or_default())
    }

    fn command(_: &Invocation, args: &Args) -> Result<Output, Failure> {
        misbehave(args.positionals(&[]).first().copied().unwrap_or_default())
    }

    fn schedule(_: &Invocation, ev: &ScheduleEvent) -> Result<Output, Failure> {
        misbehave(ev.args.first().map(String::as_str).unwrap_or("ok"))
    }
}

fn misbehave(mode: &str) -> Result<Output, Failure> {
    match mode {
        "ok" => Ok(reply::json(
            200,
            &json!({"hello": "world", "mode": mode, "n": 42}),
        )),
        "trap" => panic!("deliberate trap"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        // Any status a plugin could answer with, or fail with.
        other => {
            let code = |prefix: &str| other.strip_prefix(prefix).and_then(|c| c.parse().ok());
            if let Some(code) = code("status-") {
                Ok(reply::text(code, "status as asked\n"))
            } else if let Some(n) = code("headers-") {
                let mut out = reply::text(200, "headers as asked\n");
                out.headers
                    .extend((0..n).map(|i| (format!("x-h-{i}"), "v".to_string())));
                Ok(out)
            } else if let Some(code) = code("fail-") {
                Err(reply::fail(code, "failed as asked"))
            } else {
                Err(reply::fail(400, format!("unknown mode \"{other}\"")))
            }
        }
    }
}

neo_ops_sdk::export_plugin!(Faults);
