//! The preflight checklist: every plugin whose manifest says `check = true`
//! runs concurrently, each bounded by its own timeout, and the worst status
//! wins. `GET /api/admin/preflight` and `neo-ops run preflight` both serve this.

use serde::Serialize;
use std::time::Instant;

use crate::runtime::{CheckStatus, InvokeError, Runtime};

/// The route the host serves the checklist on (role `admin`).
pub const ROUTE: &str = crate::manifest::host_routes::PREFLIGHT;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    pub hint: Option<String>,
    pub duration_ms: u64,
    /// `advisory` checks warn where they would fail (`severity` in the manifest).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `fail` if any required check failed, else `warn` if any check warned
    /// or an advisory one failed, else `pass`.
    pub status: CheckStatus,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Fail
    }

    /// The `ok` envelope the HTTP route answers with; a failed one carries
    /// the `error` every failure envelope has (the route's 503 and the
    /// checks that failed), with the checklist still in `data`.
    pub fn envelope(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({"ok": !self.failed(), "data": self});
        if self.failed() {
            let failed: Vec<&str> = self
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail)
                .map(|c| c.name.as_str())
                .collect();
            let message = format!("preflight failed: {}", failed.join(", "));
            doc["error"] = serde_json::json!({"code": 503, "message": message});
        }
        doc
    }

    /// One line per check, for the terminal.
    pub fn to_text(&self) -> String {
        let name = |s: CheckStatus| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        };
        let mut out = format!("preflight: {}\n", name(self.status).to_uppercase());
        for c in &self.checks {
            let advisory = if c.advisory { " (advisory)" } else { "" };
            out.push_str(&format!(
                "  [{:<4}] {:<28} {}{advisory} ({} ms)\n",
                name(c.status),
                c.name,
                c.detail,
                c.duration_ms
            ));
            if let Some(hint) = c.hint.as_deref().filter(|_| c.status != CheckStatus::Pass) {
                out.push_str(&format!("         hint: {hint}\n"));
            }
        }
        out
    }
}

/// The check plugins `only` names (all of them when `None`); an unknown
/// name or a plugin that is not a check is an error naming it.
pub fn select(runtime: &Runtime, only: Option<&[String]>) -> Result<Vec<String>, String> {
    let mut all: Vec<String> = runtime
        .plugins()
        .filter(|p| p.manifest.check)
        .map(|p| p.manifest.name.clone())
        .collect();
    all.sort();
    let Some(only) = only else {
        return Ok(all);
    };
    for name in only {
        if !all.contains(name) {
            return Err(format!(
                "\"{name}\" is not a check (checks: {})",
                all.join(", ")
            ));
        }
    }
    all.retain(|n| only.contains(n));
    Ok(all)
}

/// Runs the named checks concurrently. A check that times out or crashes is
/// a failed check (the checklist itself always answers).
/// `progress`, when given, hears of each check as it finishes (the CLI's
/// bar or log lines; the HTTP route passes none).
pub async fn run(
    runtime: &Runtime,
    names: Vec<String>,
    request_id: &str,
    progress: Option<crate::progress::Progress>,
) -> Report {
    let total = names.len() as u64;
    let progress = std::sync::Mutex::new(progress.map(|p| (p, 0u64)));
    let finished = |name: &str| {
        if let Some((p, done)) = progress.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *done += 1;
            p.report(*done, Some(total), &format!("{name} finished"));
        }
    };
    let checks = futures::future::join_all(names.into_iter().map(|name| async move {
        let advisory = runtime
            .plugin(&name)
            .is_some_and(|p| p.manifest.advisory);
        let started = Instant::now();
        let outcome = runtime.check(&name, request_id).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        finished(&name);
        match outcome {
            Ok(o) => CheckResult {
                name,
                status: o.status,
                detail: o.detail,
                hint: o.hint,
                duration_ms,
                advisory,
            },
            Err(e) => {
                let hint = match &e {
                    InvokeError::TimedOut { .. } => {
                        "the check's source did not answer in time; raise its limits.timeout only if it is slow by design"
                    }
                    InvokeError::Busy(_) => {
                        "not run: every plugin slot was taken; run preflight again, or raise NEO_OPS_MAX_INSTANCES if this keeps happening"
                    }
                    _ => "see the neo-ops log for the check plugin's error",
                };
                CheckResult {
                    name,
                    // Not run is not passed: the gate stays shut.
                    status: CheckStatus::Fail,
                    detail: e.to_string(),
                    hint: Some(hint.into()),
                    duration_ms,
                    advisory,
                }
            }
        }
    }))
    .await;
    // Worst wins; an advisory failure counts as a warning; a skip as a pass.
    let status = checks
        .iter()
        .map(|c| match c.status {
            CheckStatus::Fail if c.advisory => CheckStatus::Warn,
            CheckStatus::Skip => CheckStatus::Pass,
            s => s,
        })
        .max()
        .unwrap_or(CheckStatus::Pass);
    Report { status, checks }
}
