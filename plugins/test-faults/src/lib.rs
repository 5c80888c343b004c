//! Test plugin: misbehaves on request so the tests can show that a trap, an
//! endless loop or a memory hog fails only its own invocation. `ok` answers a
//! small JSON document (also the benchmark's no-I/O route).

use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{Failure, Invocation, Output, Plugin, Trigger, reply};

struct Faults;

impl Plugin for Faults {
    fn run(inv: Invocation) -> Result<Output, Failure> {
        let mode = match &inv.trigger {
            Trigger::Http(req) => req
                .path_params
                .iter()
                .find(|(k, _)| k == "mode")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            Trigger::Command(argv) => argv.first().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        match mode.as_str() {
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
            other => Err(reply::fail(400, format!("unknown mode \"{other}\""))),
        }
    }
}

neo_ops_sdk::export_plugin!(Faults);
