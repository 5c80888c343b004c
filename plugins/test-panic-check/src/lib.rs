//! A preflight check that panics, for the test that a guest's panic message
//! becomes the check's detail instead of a wasm backtrace.

use neo_ops_sdk::{Check, CheckOutcome};

struct Panics;

impl Check for Panics {
    fn check() -> CheckOutcome {
        let probe: Option<u64> = std::hint::black_box(None);
        let Some(free) = probe else {
            panic!("disk probe returned nothing for /var/lib/neo-ops");
        };
        CheckOutcome {
            status: neo_ops_sdk::CheckStatus::Pass,
            detail: format!("{free} bytes free"),
            hint: None,
        }
    }
}

neo_ops_sdk::export_check!(Panics);
