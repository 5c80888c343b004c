//! The backends one process shares across all plugins and triggers. Only this
//! struct holds connection pools and credentials; plugins reach them through
//! capabilities that check grants first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backends::{Unreachable, db::Databases, kv::Kv, mail::Mailer};
use crate::settings::Settings;

/// The longest any outbound HTTP request may take.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Version facts: the crate version and git SHA from the build, and the
/// build time as the binary's own modification time (stamping a time into
/// the binary would make every build, and every plugin edit, relink it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    pub version: &'static str,
    pub git_sha: &'static str,
}

pub const VERSION: VersionInfo = VersionInfo {
    version: env!("CARGO_PKG_VERSION"),
    git_sha: env!("NEO_OPS_GIT_SHA"),
};

/// When this binary was built (its file's modification time), in seconds
/// since the epoch, as text; "unknown" when the file cannot be read.
pub fn build_time() -> String {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(|| "unknown".into(), |d| d.as_secs().to_string())
}

pub struct Services {
    pub settings: Settings,
    pub db: Arc<Databases>,
    pub kv: Kv,
    pub mail: Mailer,
    pub http: reqwest::Client,
    /// For wildcard (`scheme://*`) grants: resolves to public addresses only.
    pub public_http: reqwest::Client,
    /// Set once every plugin is loaded; cleared while shutting down.
    pub plugins_ready: AtomicBool,
    /// Why the last plugin set (re)load was refused, until one succeeds.
    pub plugin_error: std::sync::Mutex<Option<String>>,
    /// Counters and gauges for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Each tenant's recent host log lines, for support bundles.
    pub tenant_logs: crate::tenant_logs::TenantLogs,
    /// How far the console last found the audit chain whole.
    pub audit_checked: crate::audit_log::Checked,
    /// The live API tokens as last read, to check presented ones against.
    pub tokens: crate::auth::Tokens,
    /// What request bodies being read may still take; one for the process,
    /// so two plugin sets serving across a reload share it.
    pub request_bodies: crate::triggers::body::BodyBudget,
    /// Invocations whose HTTP caller went away (or was answered by the
    /// request limit) finish here; shutdown waits for them.
    pub unfinished: tokio_util::task::TaskTracker,
    /// Cancelled when the process begins to shut down (not on a reload):
    /// work waiting to start (a schedule slot waiting for a plugin slot)
    /// then gives up instead of starting during the drain.
    pub stopping: tokio_util::sync::CancellationToken,
    pub started: std::time::Instant,
    /// Set while another live process holds this process's replica name
    /// (`server::replica`); readiness fails meanwhile.
    pub replica_taken: AtomicBool,
    /// Set by a command (`neo-ops run`) whose kv is its own memory (no
    /// `REDIS_URL`): a job queued there would end with the command, so
    /// none is taken (`caps/queue.rs`).
    pub queues_end_with_command: AtomicBool,
    /// Set by a `serve` that holds its data dir's lock (`server::sole`):
    /// no other server uses these files, so a run left `running` in them
    /// was cut off.
    pub sole_server: AtomicBool,
    /// Schedule slots this process is firing (plugin, schedule, slot): the
    /// set a reload stops and the one taking over may both fire a slot
    /// already due, and the claim alone cannot tell them apart (both are
    /// this replica's).
    pub firing: std::sync::Mutex<std::collections::HashSet<(String, usize, i64)>>,
}

impl Services {
    /// Connects to every backend and migrates the master database; a
    /// backend that cannot be reached fails the call.
    pub async fn connect(settings: Settings) -> anyhow::Result<Arc<Self>> {
        settings.make_data_dir()?;
        let db = Databases::connect(&settings).await?;
        let kv = Kv::connect(settings.redis_url.as_deref(), &settings.kv_prefix).await?;
        Self::with(settings, db, kv)
    }

    /// As [`Services::connect`], for a command that reports on the
    /// backends (preflight): the master is read as it stands, never
    /// migrated or made (a newer build's preflight must neither change the
    /// schema under the older `serve` nor hide that the master is behind;
    /// no embedded master yet is an empty one in memory, with no schema),
    /// and a Postgres or Redis that cannot be reached yet ([`Unreachable`])
    /// is logged and connected on first use instead, so its checks fail and
    /// name it rather than the whole command failing before it prints a
    /// checklist.
    pub async fn connect_to_check(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let none_yet = crate::backends::db::no_master_yet(&settings)?;
        settings.make_data_dir()?;
        let db = match none_yet {
            true => Databases::empty(&settings, false).await?,
            false => match Databases::open_to_read(&settings).await {
                Err(e) if e.downcast_ref::<Unreachable>().is_some() => {
                    tracing::warn!("{e:#}; checking without it");
                    Databases::unreached(&settings)?
                }
                db => db?,
            },
        };
        let url = settings.redis_url.as_deref();
        let kv = match Kv::connect(url, &settings.kv_prefix).await {
            Err(e) if e.downcast_ref::<Unreachable>().is_some() => {
                tracing::warn!("{e:#}; checking without it");
                Kv::unreached(url.unwrap_or_default(), &settings.kv_prefix)?
            }
            kv => kv?,
        };
        Self::with(settings, db, kv)
    }

    /// As [`Services::connect`], over databases opened already (a dry run
    /// reads the master as it stands: `Databases::open_to_read`).
    pub async fn connect_over(settings: Settings, db: Arc<Databases>) -> anyhow::Result<Arc<Self>> {
        let kv = Kv::connect(settings.redis_url.as_deref(), &settings.kv_prefix).await?;
        Self::with(settings, db, kv)
    }

    fn with(settings: Settings, db: Arc<Databases>, kv: Kv) -> anyhow::Result<Arc<Self>> {
        let mail = Mailer::new(settings.smtp.as_ref(), &settings.data_dir)?;
        let client = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(MAX_TIMEOUT)
        };
        let http = client().build()?;
        // No proxy: a proxy would resolve the customer's host itself, past
        // the public-address check in this client's resolver.
        let public_http = client()
            .dns_resolver(Arc::new(crate::backends::public_dns::PublicOnly))
            .no_proxy()
            .build()?;
        Ok(Arc::new(Self {
            settings,
            db,
            kv,
            mail,
            http,
            public_http,
            plugins_ready: AtomicBool::new(false),
            plugin_error: std::sync::Mutex::new(None),
            metrics: crate::metrics::Metrics::default(),
            tenant_logs: Default::default(),
            audit_checked: Default::default(),
            tokens: crate::auth::Tokens::new(),
            request_bodies: Default::default(),
            unfinished: Default::default(),
            stopping: Default::default(),
            started: std::time::Instant::now(),
            replica_taken: AtomicBool::new(false),
            queues_end_with_command: AtomicBool::new(false),
            sole_server: AtomicBool::new(false),
            firing: Default::default(),
        }))
    }

    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "version": VERSION.version,
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
    }

    /// Readiness: every backend answers and the plugins are loaded.
    pub async fn ready(&self) -> (bool, serde_json::Value) {
        let (db_ok, kv_ok) = tokio::join!(self.db.master().ping(), self.kv.ping());
        let plugins_ok = self.plugins_ready.load(Ordering::Acquire);
        let replica_ok = !self.replica_taken.load(Ordering::Acquire);
        let ok = db_ok && kv_ok && plugins_ok && replica_ok;
        let state = |b: bool| if b { "ok" } else { "unavailable" };
        let mut plugins = serde_json::json!({"status": state(plugins_ok)});
        if let Some(e) = self
            .plugin_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // A refused reload: the previous set (if any) keeps serving.
            plugins["error"] = serde_json::json!(e);
        }
        (
            ok,
            serde_json::json!({
                "status": if ok { "ready" } else { "not_ready" },
                "checks": {
                    "database": {"status": state(db_ok), "backend": self.db.backend_name()},
                    "kv": {"status": state(kv_ok), "backend": self.kv.backend_name()},
                    "mail": {"status": "ok", "backend": self.mail.backend_name()},
                    "plugins": plugins,
                    "replica": if replica_ok {
                        serde_json::json!({"status": "ok"})
                    } else {
                        // The name is in the log; this page is public.
                        serde_json::json!({"status": "unavailable", "error": "another live process has this replica's name"})
                    },
                }
            }),
        )
    }
}
