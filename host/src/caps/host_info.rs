//! `neo:ops/host-info`: health, readiness and version, as the host serves
//! them; the host's configuration with secrets masked; the expected schema;
//! the wall clock.

use crate::bindings::neo::ops::host_info as wit;
use crate::caps::state::StoreState;
use crate::services::VERSION;

impl wit::Host for StoreState {
    async fn health(&mut self) -> String {
        self.call.services.health().to_string()
    }

    /// `/readyz`'s document, and what the kv keeps across a restart: asked
    /// of Redis here, not on every probe of the public page.
    async fn ready(&mut self) -> String {
        let services = &self.call.services;
        let ((_, mut doc), persistence) = tokio::join!(services.ready(), services.kv.persistence());
        doc["checks"]["kv"]["persistence"] = persistence.name().into();
        doc.to_string()
    }

    async fn version(&mut self) -> wit::VersionInfo {
        wit::VersionInfo {
            version: VERSION.version.into(),
            git_sha: VERSION.git_sha.into(),
            build_time: crate::services::build_time(),
        }
    }

    async fn env_flags(&mut self) -> Vec<(String, String)> {
        self.call.services.settings.env_flags()
    }

    /// Only for a tenant an operator or the host named: an anonymous request
    /// naming a tenant does not get to read that tenant's log lines.
    async fn tenant_logs(&mut self) -> Vec<String> {
        match &self.call.logged_tenant {
            Some(tenant) => self.call.services.tenant_logs.recent(tenant),
            None => Vec::new(),
        }
    }

    async fn expected_schema(&mut self) -> wit::SchemaVersions {
        let (master, tenant) = self.call.services.db.expected_schema();
        wit::SchemaVersions { master, tenant }
    }

    async fn now_micros(&mut self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    async fn pause(&mut self, ms: u32) {
        let asked = tokio::time::Instant::now() + std::time::Duration::from_millis(ms.into());
        tokio::time::sleep_until(asked.min(self.call.io_deadline())).await;
    }
}
