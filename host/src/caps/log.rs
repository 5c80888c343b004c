//! `neo:ops/log`: plugin logs into the host's tracing, tagged with plugin and
//! request id, and capped in size; a tenant's invocation's lines also go to
//! that tenant's ring (`tenant_logs`) for its support bundle.

use crate::bindings::neo::ops::log as wit;
use crate::caps::state::StoreState;

const MAX_LOG: usize = 8 << 10;

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

impl wit::Host for StoreState {
    async fn log(&mut self, level: wit::Level, message: String, fields: Vec<(String, String)>) {
        let plugin = self.call.plugin.name.as_str();
        let request_id = self.call.request_id.as_str();
        let message = clip(&message);
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let fields = clip(&fields);
        if let Some(tenant) = &self.call.logged_tenant {
            let level = format!("{level:?}").to_lowercase();
            let line = format!("{plugin} {level}: {message} {fields} request_id={request_id}");
            self.call.services.tenant_logs.push(tenant, line.trim_end());
        }
        match level {
            wit::Level::Trace => tracing::trace!(plugin, request_id, fields, "{message}"),
            wit::Level::Debug => tracing::debug!(plugin, request_id, fields, "{message}"),
            wit::Level::Info => tracing::info!(plugin, request_id, fields, "{message}"),
            wit::Level::Warn => tracing::warn!(plugin, request_id, fields, "{message}"),
            wit::Level::Error => tracing::error!(plugin, request_id, fields, "{message}"),
        }
        if matches!(level, wit::Level::Error) {
            self.last_error = Some(message.to_string());
        }
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, message: String) {
        let call = &mut self.call;
        let progress = call.progress.get_or_insert_with(|| {
            crate::progress::Progress::new(&call.plugin.name, call.interactive)
        });
        progress.report(done, total, clip(&message));
    }
}
