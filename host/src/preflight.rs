//! The preflight checklist: every plugin whose manifest says `check = true`
//! runs concurrently, each bounded by its own timeout, and the worst status
//! wins. `GET /api/admin/preflight` and `neo-ops run preflight` both serve this.

use serde::Serialize;
use std::time::Instant;

use crate::runtime::{InvokeError, Runtime};

/// The route the host serves the checklist on (role `admin`).
pub const ROUTE: &str = crate::manifest::host_routes::PREFLIGHT;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: &'static str,
    pub detail: String,
    pub hint: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `fail` if any check failed, else `warn` if any warned, else `pass`.
    pub status: &'static str,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.status == "fail"
    }

    /// The `ok` envelope the HTTP route answers with.
    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!({"ok": !self.failed(), "data": self})
    }

    /// One line per check, for the terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!("preflight: {}\n", self.status.to_uppercase());
        for c in &self.checks {
            out.push_str(&format!(
                "  [{:<4}] {:<28} {} ({} ms)\n",
                c.status, c.name, c.detail, c.duration_ms
            ));
            if let Some(hint) = c.hint.as_deref().filter(|_| c.status != "pass") {
                out.push_str(&format!("         hint: {hint}\n"));
            }
        }
        out
    }
}

/// Runs every check plugin concurrently. A check that times out or crashes
/// is a failed check (the checklist itself always answers).
pub async fn run(runtime: &Runtime, request_id: &str) -> Report {
    let mut names: Vec<String> = runtime
        .plugins()
        .filter(|p| p.manifest.check)
        .map(|p| p.manifest.name.clone())
        .collect();
    names.sort();
    let checks = futures::future::join_all(names.into_iter().map(|name| async move {
        let started = Instant::now();
        let outcome = runtime.check(&name, request_id).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(o) => CheckResult {
                name,
                status: o.status,
                detail: o.detail,
                hint: o.hint,
                duration_ms,
            },
            Err(e) => {
                let hint = match &e {
                    InvokeError::TimedOut { .. } => {
                        "the check's source did not answer in time; raise its limits.timeout only if it is slow by design"
                    }
                    _ => "see the neo-ops log for the check plugin's error",
                };
                CheckResult {
                    name,
                    status: "fail",
                    detail: e.to_string(),
                    hint: Some(hint.into()),
                    duration_ms,
                }
            }
        }
    }))
    .await;
    let status = if checks.iter().any(|c| c.status == "fail") {
        "fail"
    } else if checks.iter().any(|c| c.status == "warn") {
        "warn"
    } else {
        "pass"
    };
    Report { status, checks }
}
