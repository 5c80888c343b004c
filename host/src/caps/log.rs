//! `neo:ops/log`: plugin logs into the host's tracing, tagged with plugin and
//! request id, and capped in size and in lines per invocation; a tenant's
//! invocation's lines also go to that tenant's ring (`tenant_logs`) for its
//! support bundle. Guest text
//! never starts a line of its own: the message and the ring's lines go
//! through [`one_line`]; other fields are string fields, which the log's
//! formatter quotes and escapes itself.

use std::borrow::Cow;

use crate::bindings::neo::ops::log as wit;
use crate::caps::state::StoreState;

const MAX_LOG: usize = 8 << 10;
/// Lines one invocation that no person runs (a route, a schedule, a queue
/// job) may write to the process log: a plugin logging in a loop would
/// otherwise write gigabytes within its timeout. A command is exempt
/// (`--verbose` lists every row of a large file on purpose).
pub const LOG_LINES_PER_INVOCATION: u32 = 1000;
/// Lines of one invocation kept in its tenant's ring, which also holds the
/// host's line for each invocation: one chatty invocation must not push out
/// the record of the ones before it.
pub const RING_LINES_PER_INVOCATION: u32 = 50;

/// How many of an invocation's lines went where.
#[derive(Default)]
pub struct LinesLogged {
    written: u32,
    ringed: u32,
}

/// Whether the next line goes on, counting it: true for the first `limit`,
/// then false, with `on_full` called once as the limit is passed.
fn within(count: &mut u32, limit: u32, on_full: impl FnOnce()) -> bool {
    *count = count.saturating_add(1);
    if *count == limit + 1 {
        on_full();
    }
    *count <= limit
}

/// Guest text as part of one log line: control characters (a newline that
/// would start a line the plugin made up, a terminal escape sequence) are
/// written as escapes (`\n`, `\u{1b}`); tabs stay.
pub(crate) fn one_line(s: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && c != '\t';
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_LOG {
        return s;
    }
    let mut end = MAX_LOG;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether the process log takes lines at `level` (one it filters out
/// costs nothing and counts toward no budget).
fn enabled(level: wit::Level) -> bool {
    match level {
        wit::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
        wit::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
        wit::Level::Info => tracing::enabled!(tracing::Level::INFO),
        wit::Level::Warn => tracing::enabled!(tracing::Level::WARN),
        wit::Level::Error => tracing::enabled!(tracing::Level::ERROR),
    }
}

impl wit::Host for StoreState {
    async fn log(&mut self, level: wit::Level, message: String, fields: Vec<(String, String)>) {
        let plugin = self.call.plugin.name.as_str();
        let request_id = self.call.request_id.as_str();
        let raw = clip(&message);
        let message = one_line(raw);
        // A secret-named field's value masked whole: joined unquoted, a
        // value with spaces would be masked only up to its first.
        let fields = fields
            .iter()
            .map(|(k, v)| match neo_ops_text::redact::is_secret_name(k) {
                true => format!("{k}=****"),
                false => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        // A field other than the message is quoted and escaped by the log's
        // formatter itself; the ring's plain lines escape it here.
        let fields = clip(&fields);
        if let Some(tenant) = &self.call.logged_tenant {
            let ring = &self.call.services.tenant_logs;
            let full = || {
                ring.push(
                    tenant,
                    &format!(
                        "{plugin}: further log lines of this invocation not kept \
                         (over {RING_LINES_PER_INVOCATION}) request_id={request_id}"
                    ),
                )
            };
            if within(&mut self.log_lines.ringed, RING_LINES_PER_INVOCATION, full) {
                let level = format!("{level:?}").to_lowercase();
                let shown = one_line(fields);
                let line = format!("{plugin} {level}: {message} {shown} request_id={request_id}");
                ring.push(tenant, line.trim_end());
            }
        }
        if matches!(level, wit::Level::Error) {
            // As the plugin wrote it: the crash reason a caller is shown
            // (the panic's own lines) is no log line.
            self.last_error = Some(raw.to_string());
        }
        let full = || {
            tracing::warn!(
                plugin,
                request_id,
                "the plugin logged over {LOG_LINES_PER_INVOCATION} lines in one invocation; \
                 its further lines are dropped"
            )
        };
        if !self.call.interactive
            && enabled(level)
            && !within(&mut self.log_lines.written, LOG_LINES_PER_INVOCATION, full)
        {
            return;
        }
        match level {
            wit::Level::Trace => tracing::trace!(plugin, request_id, fields, "{message}"),
            wit::Level::Debug => tracing::debug!(plugin, request_id, fields, "{message}"),
            wit::Level::Info => tracing::info!(plugin, request_id, fields, "{message}"),
            wit::Level::Warn => tracing::warn!(plugin, request_id, fields, "{message}"),
            wit::Level::Error => tracing::error!(plugin, request_id, fields, "{message}"),
        }
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, message: String) {
        let call = &mut self.call;
        let progress = call.progress.get_or_insert_with(|| {
            crate::progress::Progress::new(&call.plugin.name, call.interactive)
        });
        let message = match message.char_indices().nth(crate::progress::MAX_MESSAGE) {
            Some((cut, _)) => &message[..cut],
            None => &message,
        };
        progress.report(done, total, &one_line(message));
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn guest_text_stays_on_one_line() {
        assert_eq!(one_line("plain\ttext"), "plain\ttext");
        assert_eq!(
            one_line("ok\n2026-12-06T00:00:00Z ERROR neo_ops: forged\r\u{1b}[2J"),
            "ok\\n2026-12-06T00:00:00Z ERROR neo_ops: forged\\r\\u{1b}[2J"
        );
    }
}
