//! Preflight `backups`: the last successful backup is recent enough.
//!
//! Contract with the backup job: after each *successful* backup it writes
//! (atomically: write a temp file, then rename) a status file whose whole
//! content is the time the backup finished, either as RFC 3339 text
//! (`2026-11-25T03:12:09Z`) or as JSON `{"finished_at": "2026-11-25T03:12:09Z", ...}`
//! (other keys are ignored). A failed backup leaves the file alone, so its
//! age is the age of the newest good backup.
//!
//! Config: `status_file` (absolute path; unset = skip), `max_age` (default
//! `"26h"`: a daily job plus slack). Fails when the file is missing,
//! unreadable, malformed or older than `max_age`; warns when it lies in the
//! future (clock skew).
//!
//! Grants: `files = ["<the status_file path>"]`.

use check_common::settings::{self, human_micros};
use check_common::{describe, fail, pass, skip, warn};
use neo_ops_sdk::{Check, CheckOutcome, ErrorCode, files, serde_json, time};

/// Far more than a timestamp or a small JSON document needs.
const MAX_STATUS_BYTES: u32 = 64 * 1024;
/// Clock skew tolerated before a future time is reported.
const SKEW_MICROS: i64 = 5 * 60 * 1_000_000;
const WRITE_HINT: &str = "after each successful backup the job must write the finish time \
    (RFC 3339, or JSON {\"finished_at\": \"...\"}) to the status file, e.g. \
    `date -u +%Y-%m-%dT%H:%M:%SZ > status.tmp && mv status.tmp <status_file>`";

struct Backups;

impl Check for Backups {
    fn check() -> CheckOutcome {
        let Some(path) = settings::get("status_file") else {
            return skip(
                "backup status file not configured (config status_file unset)",
                format!(
                    "set status_file to the file the backup job writes and grant it with files = [\"/path\"]; {WRITE_HINT}"
                ),
            );
        };
        let max_age = match settings::duration_micros("max_age", "26h") {
            Ok(m) => m,
            Err(e) => return fail(e, "set max_age like \"26h\""),
        };
        let text = match read(&path) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let finished = match finished_at(&text) {
            Ok(t) => t,
            Err(e) => return fail(format!("{path}: {e}"), WRITE_HINT),
        };
        let age = time::now_micros() - finished;
        let when = time::rfc3339(finished);
        if age < -SKEW_MICROS {
            warn(
                format!(
                    "last backup finished {when}, {} in the future",
                    human_micros(-age)
                ),
                "check the clocks of the backup host and this host (NTP)",
            )
        } else if age > max_age {
            fail(
                format!(
                    "last successful backup finished {when}, {} ago (more than {})",
                    human_micros(age),
                    human_micros(max_age)
                ),
                "check the backup job's schedule and its last runs' logs; run a backup now",
            )
        } else {
            pass(format!(
                "last successful backup finished {when}, {} ago (limit {})",
                human_micros(age),
                human_micros(max_age)
            ))
        }
    }
}

/// The status file as text; a failure outcome when it cannot be read.
fn read(path: &str) -> Result<String, CheckOutcome> {
    let bytes = files::size(path).and_then(|_| files::read(path, 0, MAX_STATUS_BYTES));
    match bytes {
        Ok(b) => {
            String::from_utf8(b).map_err(|_| fail(format!("{path} is not utf-8 text"), WRITE_HINT))
        }
        Err(e) if e.code == ErrorCode::NotFound => Err(fail(
            format!("{path} does not exist: no successful backup recorded"),
            format!("run the backup job and check it writes the status file; {WRITE_HINT}"),
        )),
        Err(e) if e.code == ErrorCode::Denied => Err(fail(
            format!("{path}: {}", describe(&e)),
            format!("grant the file to this check: files = [\"{path}\"]"),
        )),
        Err(e) => Err(fail(format!("{path}: {}", describe(&e)), WRITE_HINT)),
    }
}

/// The finish time in the status text, as microseconds since the epoch.
fn finished_at(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let stamp = if text.starts_with('{') {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid json ({e})"))?;
        doc["finished_at"]
            .as_str()
            .ok_or("json has no \"finished_at\" string")?
            .to_string()
    } else {
        text.to_string()
    };
    chrono::DateTime::parse_from_rfc3339(stamp.trim())
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("bad time \"{}\" (expected RFC 3339): {e}", excerpt(&stamp)))
}

fn excerpt(s: &str) -> String {
    s.chars().take(60).collect()
}

neo_ops_sdk::export_check!(Backups);

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_662_729_000_000; // 2026-11-26T03:12:09Z

    #[test]
    fn plain_and_json_status_files() {
        assert_eq!(finished_at("2026-11-26T03:12:09Z\n"), Ok(T));
        assert_eq!(finished_at("2026-11-26T08:42:09+05:30"), Ok(T));
        assert_eq!(
            finished_at(r#"{"finished_at": "2026-11-26T03:12:09Z", "bytes": 123}"#),
            Ok(T)
        );
    }

    #[test]
    fn malformed_status_files_say_why() {
        assert!(finished_at("").unwrap_err().contains("bad time"));
        assert!(
            finished_at("yesterday")
                .unwrap_err()
                .contains("\"yesterday\"")
        );
        assert!(
            finished_at(r#"{"started_at": "x"}"#)
                .unwrap_err()
                .contains("finished_at")
        );
        assert!(finished_at("{nope").unwrap_err().contains("not valid json"));
    }
}
