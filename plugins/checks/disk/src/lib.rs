//! `check-disk`: free space on the filesystem holding the data directory
//! (or `path`): warns below `warn_free_percent` (15), fails below
//! `fail_free_percent` (5). Grants: `files = ["data-dir"]` (or the path).

use check_common::{describe, fail, pass, settings, warn};
use neo_ops_sdk::{Check, CheckOutcome, files};

const HINT: &str = "free space (old backups, logs, the component cache) or grow the volume";

struct Disk;

impl Check for Disk {
    fn check() -> CheckOutcome {
        let path = settings::get("path").unwrap_or_else(|| "data-dir".into());
        let limits = settings::real("warn_free_percent", 15.0)
            .and_then(|w| Ok((w, settings::real("fail_free_percent", 5.0)?)));
        let (warn_below, fail_below) = match limits {
            Ok(l) => l,
            Err(e) => return fail(e, "set warn_free_percent and fail_free_percent to numbers"),
        };
        let space = match files::disk_usage(&path) {
            Ok(s) => s,
            Err(e) => {
                return fail(
                    format!("reading the free space of \"{path}\": {}", describe(&e)),
                    "grant the path in files (data-dir for the data directory)",
                );
            }
        };
        let percent = 100.0 * space.free_bytes as f64 / space.total_bytes.max(1) as f64;
        let detail = format!(
            "{} free of {} ({percent:.1}%) on the filesystem of \"{path}\"",
            gib(space.free_bytes),
            gib(space.total_bytes)
        );
        if percent < fail_below {
            fail(detail, HINT)
        } else if percent < warn_below {
            warn(detail, HINT)
        } else {
            pass(detail)
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

neo_ops_sdk::export_check!(Disk);
