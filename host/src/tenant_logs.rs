//! The recent host log lines of each tenant, in memory, for the support
//! bundle's `recent-logs.txt`: every invocation for a tenant (plugin,
//! trigger, outcome, time taken, request id) and what the plugin logged
//! during it. Bounded twice: [`LINES_PER_TENANT`] lines per tenant and
//! [`TENANTS`] tenants (the one written longest ago is dropped first).
//! Lines are redacted as they are written; a restart forgets them. An
//! anonymous request's tenant is never logged here (see
//! `Invocation::logged_tenant`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub const LINES_PER_TENANT: usize = 200;
pub const TENANTS: usize = 1000;
/// A longer line is cut (at a character boundary) with a marker.
const MAX_LINE: usize = 1024;

#[derive(Default)]
pub struct TenantLogs {
    inner: Mutex<Rings>,
}

#[derive(Default)]
struct Rings {
    lines: HashMap<String, VecDeque<String>>,
    /// Tenants in the order they were last written, oldest first.
    recency: VecDeque<String>,
}

impl TenantLogs {
    /// Adds `line` (redacted, timestamped) to `tenant`'s ring.
    pub fn push(&self, tenant: &str, line: &str) {
        let mut line = neo_ops_text::redact::redact_text(line, "****");
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str(" …[cut]");
        }
        let stamped = format!(
            "{} {line}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let mut rings = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Rings { lines, recency } = &mut *rings;
        if recency.back().is_some_and(|t| t == tenant) {
            // Already the most recently written (the common case).
        } else if let Some(at) = recency.iter().position(|t| t == tenant) {
            // Moved to the back: most recently written.
            let name = recency.remove(at).unwrap_or_default();
            recency.push_back(name);
        } else {
            if recency.len() >= TENANTS
                && let Some(oldest) = recency.pop_front()
            {
                lines.remove(&oldest);
            }
            recency.push_back(tenant.to_string());
        }
        let ring = lines.entry(tenant.to_string()).or_default();
        if ring.len() >= LINES_PER_TENANT {
            ring.pop_front();
        }
        ring.push_back(stamped);
    }

    /// `tenant`'s lines, oldest first.
    pub fn recent(&self, tenant: &str) -> Vec<String> {
        let rings = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        rings
            .lines
            .get(tenant)
            .map(|ring| ring.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_tenant_and_in_tenants_and_redacted() {
        let logs = TenantLogs::default();
        for n in 0..LINES_PER_TENANT + 5 {
            logs.push("t1", &format!("line {n} https://x/?token=abc{n}"));
        }
        let lines = logs.recent("t1");
        assert_eq!(lines.len(), LINES_PER_TENANT);
        assert!(
            lines[0].ends_with("line 5 https://x/?token=****"),
            "{}",
            lines[0]
        );
        assert!(lines.iter().all(|l| !l.contains("abc")));
        assert!(logs.recent("t2").is_empty());

        for n in 0..TENANTS {
            logs.push(&format!("other{n}"), "x");
        }
        assert!(
            logs.recent("t1").is_empty(),
            "the tenant written longest ago went"
        );
        assert_eq!(logs.recent("other0").len(), 1);
        logs.push("other0", "y");
        logs.push("new", "z");
        assert_eq!(logs.recent("other0").len(), 2, "rewritten: kept");
        assert!(logs.recent("other1").is_empty());

        logs.push("t3", &"é".repeat(2000));
        let long = &logs.recent("t3")[0];
        assert!(long.ends_with(" …[cut]") && long.len() < MAX_LINE + 64);
    }
}
