//! Shared end-to-end harness: the real `neo-ops` server on port 0 with real
//! plugins, on the embedded backends or on the machine's real Postgres and
//! Redis (unique databases and key prefixes, removed afterwards), with a real
//! SMTP server and HTTP receiver started by the test.
#![allow(dead_code, unused_imports)]

pub mod alertmanager;
pub mod browser;
pub mod proxy;
pub mod receivers;
pub mod redis_server;
pub mod webdriver;

use neo_ops::backends::db::{Pool, Value};
use neo_ops::manifest;
use neo_ops::runtime::Runtime;
use neo_ops::services::Services;
use neo_ops::settings::{Settings, SmtpSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use receivers::{HttpReceiver, SmtpSink};

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Builds the plugins once per test run (cargo's no-op when nothing changed):
/// the host build no longer watches them, so a plugin edit is tested as
/// `neo-ops plugin build` would build it.
pub fn ensure_plugins_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::path::Path::new(env!("NEO_OPS_PLUGINS_TARGET"));
        neo_ops::plugin_build::build("cargo", &root.join("plugins"), target, &[])
            .expect("building the plugins");
    });
}

/// The spec's exact answer to a request without the route's role.
pub const FORBIDDEN: &str = r#"{"ok":false,"error":{"code":403,"message":"forbidden"}}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite files, in-process kv, .eml outbox.
    Embedded,
    /// Postgres, Redis and a real SMTP server.
    Real,
}

/// Where one test's state lives; shared by the replicas of that test.
pub struct Deployment {
    pub backend: Backend,
    pub id: String,
    pub dir: tempfile::TempDir,
    pub smtp: Option<SmtpSink>,
    pg_prefix: Option<String>,
}

impl Deployment {
    /// Creates a fresh deployment. Real backends must be reachable: a missing
    /// Postgres or Redis fails the test, it never skips it.
    pub async fn new(backend: Backend) -> Self {
        ensure_plugins_built();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let (smtp, pg_prefix) = match backend {
            Backend::Embedded => (None, None),
            Backend::Real => {
                let admin = sqlx::PgPool::connect(PG_ADMIN).await.expect(
                    "Postgres must be running on 127.0.0.1:5432 (see README: tests need it)",
                );
                let prefix = format!("neo_t_{id}");
                sqlx::query(&format!("CREATE DATABASE {prefix}"))
                    .execute(&admin)
                    .await
                    .expect("create test database");
                admin.close().await;
                let client = redis::Client::open(REDIS).unwrap();
                let mut c = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("Redis must be running on 127.0.0.1:6379 (see README: tests need it)");
                let _: String = redis::cmd("PING")
                    .query_async(&mut c)
                    .await
                    .expect("redis ping");
                (Some(SmtpSink::start().await), Some(prefix))
            }
        };
        Self {
            backend,
            id,
            dir,
            smtp,
            pg_prefix,
        }
    }

    /// A deployment whose mail goes to an SMTP server the test reads, on
    /// either backend (the embedded one otherwise writes an outbox).
    pub async fn with_smtp(backend: Backend) -> Self {
        let mut dep = Self::new(backend).await;
        if dep.smtp.is_none() {
            dep.smtp = Some(SmtpSink::start().await);
        }
        dep
    }

    pub fn data_dir(&self, replica: &str) -> PathBuf {
        // Embedded replicas share one data dir, so they share the SQLite files.
        self.dir.path().join(match self.backend {
            Backend::Embedded => "data",
            Backend::Real => replica,
        })
    }

    pub fn kv_prefix(&self) -> String {
        format!("neo-test:{}:", self.id)
    }

    pub fn settings(&self, replica: &str) -> Settings {
        let mut s = Settings::embedded(self.data_dir(replica));
        s.replica = format!("{}-{replica}", self.id);
        s.kv_prefix = self.kv_prefix();
        s.max_instances = 16;
        if let Some(prefix) = &self.pg_prefix {
            s.postgres_master_url = Some(format!("postgres://postgres@127.0.0.1:5432/{prefix}"));
            s.postgres_tenant_dsn_template = Some(format!(
                "postgres://postgres@127.0.0.1:5432/{prefix}_{{tenant}}"
            ));
            s.redis_url = Some(REDIS.into());
        }
        if let Some(smtp) = &self.smtp {
            s.smtp = Some(SmtpSettings {
                host: "127.0.0.1".into(),
                port: smtp.addr.port(),
                user: None,
                pass: None,
                from: "neo-ops <ops-bot@example.com>".into(),
            });
        }
        s
    }

    /// [`Deployment::settings`] with the master database reached at `addr`
    /// (a [`proxy::TcpProxy`] in front of Postgres) instead of directly.
    pub fn settings_with_master_at(&self, replica: &str, addr: std::net::SocketAddr) -> Settings {
        let mut s = self.settings(replica);
        let direct = s.postgres_master_url.take().expect("the real backends");
        s.postgres_master_url = Some(direct.replace("127.0.0.1:5432", &addr.to_string()));
        s
    }

    /// Starts replica "a" with its master database behind a
    /// [`proxy::TcpProxy`] the test controls (the real backends).
    pub async fn start_with_master_proxy(&self, manifest_text: &str) -> (Server, proxy::TcpProxy) {
        let pg = proxy::TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
        let settings = self.settings_with_master_at("a", pg.addr);
        let services = Services::connect(settings).await.expect("services");
        (self.start_with_services(manifest_text, services).await, pg)
    }

    /// Starts replica "a" with Redis behind a [`proxy::TcpProxy`] the test
    /// controls (the real backends).
    pub async fn start_with_redis_proxy(&self, manifest_text: &str) -> (Server, proxy::TcpProxy) {
        let redis = proxy::TcpProxy::start("127.0.0.1:6379".parse().unwrap()).await;
        let mut settings = self.settings("a");
        settings.redis_url = Some(format!("redis://{}", redis.addr));
        let services = Services::connect(settings).await.expect("services");
        (
            self.start_with_services(manifest_text, services).await,
            redis,
        )
    }

    /// Writes a manifest into the deployment dir and returns its path.
    pub fn manifest(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("plugins.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts one replica of the server.
    pub async fn start(&self, manifest_text: &str, replica: &str) -> Server {
        let services = Services::connect(self.settings(replica))
            .await
            .expect("services");
        self.start_with_services(manifest_text, services).await
    }

    /// Starts a server on services the test already holds (the embedded kv
    /// lives in the process that opened it, so a test that prepares kv state
    /// hands the server the same services).
    pub async fn start_with_services(
        &self,
        manifest_text: &str,
        services: Arc<Services>,
    ) -> Server {
        let path = self.manifest(manifest_text);
        let manifest = manifest::load(&path).expect("test manifest is valid");
        let runtime = Arc::new(Runtime::load(&manifest, services.clone()).expect("runtime"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(neo_ops::server::run(
            listener,
            runtime.clone(),
            shutdown.clone(),
        ));
        let mut server = Server {
            addr,
            runtime,
            services,
            shutdown,
            task: Some(task),
            http: reqwest::Client::new(),
        };
        server.until_serving().await;
        server
    }

    /// Mail that reached the SMTP server or the embedded outbox, as raw text.
    pub fn sent_mail(&self) -> Vec<String> {
        match &self.smtp {
            Some(s) => s.messages().into_iter().map(|m| m.data).collect(),
            None => {
                let outbox = self.data_dir("a").join("outbox");
                let mut files: Vec<_> = std::fs::read_dir(&outbox)
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                    .unwrap_or_default();
                files.sort();
                files
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                    .map(|p| std::fs::read_to_string(p).unwrap())
                    .collect()
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let prefix = self.pg_prefix.clone();
        let kv_prefix = self.kv_prefix();
        let backend = self.backend;
        // Drop runs outside any async context we may block: use a thread.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if backend != Backend::Real {
                    return;
                }
                if let Some(prefix) = prefix
                    && let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN).await
                {
                    let names: Vec<String> =
                        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
                            .bind(format!("{prefix}%"))
                            .fetch_all(&admin)
                            .await
                            .unwrap_or_default();
                    for n in names {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"))
                                .execute(&admin)
                                .await;
                    }
                    admin.close().await;
                }
                if let Ok(client) = redis::Client::open(REDIS)
                    && let Ok(mut c) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{kv_prefix}*"))
                        .query_async(&mut c)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<i64, _> =
                            redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                    }
                }
            });
        })
        .join()
        .ok();
    }
}

/// One running replica.
pub struct Server {
    pub addr: SocketAddr,
    pub runtime: Arc<Runtime>,
    pub services: Arc<Services>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut req = self.http.post(self.url(path)).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Waits until the server answers (its start-up, the replica's claim
    /// and the run history's tidying, is over), so a test's first request
    /// races nothing of the start.
    pub async fn until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let ended = self.task.take().expect("checked").await;
                panic!("the server stopped during its start: {ended:?}");
            }
            let asked = self
                .http
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(2));
            match asked.send().await {
                Ok(r) if r.status() == 200 => return,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => panic!("the server did not start: {other:?}"),
            }
        }
    }

    pub fn master(&self) -> &Pool {
        self.services.db.master()
    }

    /// Runs a plugin's command through the same path `neo-ops run` uses.
    pub async fn command(
        &self,
        plugin: &str,
        args: &[&str],
    ) -> Result<String, neo_ops::runtime::InvokeError> {
        let args = args.iter().map(|s| s.to_string()).collect();
        neo_ops::triggers::command::run(&self.runtime, plugin, args)
            .await
            .map(|o| String::from_utf8_lossy(&o.body).into_owned())
    }

    /// Graceful shutdown, as on SIGTERM; returns the server's result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after 30 s.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A queue's jobs, waiting, in hand on any of its consumers or waiting for
/// a retry (a job moving between these as it is read may be missed).
pub async fn queued_jobs(server: &Server, queue: &str) -> Vec<neo_ops::backends::queue::Job> {
    use neo_ops::backends::queue::{consumers_key, processing_key, queue_key, retrying_key};
    let kv = &server.services.kv;
    let consumers = kv.list_range(&consumers_key(queue), 0, -1).await.unwrap();
    let mut lists = vec![queue_key(queue)];
    lists.extend(
        consumers
            .iter()
            .map(|c| processing_key(queue, &String::from_utf8_lossy(c))),
    );
    let mut jobs = Vec::new();
    for list in lists {
        for raw in kv.list_range(&list, 0, -1).await.unwrap() {
            jobs.push(serde_json::from_slice(&raw).unwrap());
        }
    }
    for (raw, _due) in kv.sorted_range(&retrying_key(queue), 0, -1).await.unwrap() {
        jobs.push(serde_json::from_slice(&raw).unwrap());
    }
    jobs
}

/// Waits until a job on `queue` has failed at least once with an error
/// containing `needle` (it then waits for its retry).
pub async fn wait_for_failed_job(server: &Server, queue: &str, needle: &str) {
    wait_until(
        &format!("a {queue} job failed with \"{needle}\""),
        || async {
            queued_jobs(server, queue).await.iter().any(|j| {
                j.attempts >= 1 && j.last_error.as_deref().is_some_and(|e| e.contains(needle))
            })
        },
    )
    .await;
}

/// Whether the Postgres database at `url` has been migrated at all (has
/// sqlx's record of migrations), asked on a connection of its own.
pub async fn pg_migrated(url: &str) -> bool {
    let db = sqlx::PgPool::connect(url).await.unwrap();
    let migrated = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    migrated
}

/// First column of every row, as integers (for counting queries).
pub async fn ints(pool: &Pool, sql: &str, params: &[Value]) -> Vec<i64> {
    pool.query(sql, params)
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| match &r[0] {
            Value::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        })
        .collect()
}

/// Runs the same async test body on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                $body(support::Backend::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_redis_smtp() {
                $body(support::Backend::Real).await;
            }
        }
    };
}

/// The real `neo-ops` binary on the embedded backends, in its own temp dir.
pub struct Cli {
    pub dir: tempfile::TempDir,
    manifest: PathBuf,
}

/// What a command printed and how it exited.
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn new(manifest_text: &str) -> Self {
        ensure_plugins_built();
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("plugins.toml");
        std::fs::write(&manifest, manifest_text).unwrap();
        Self { dir, manifest }
    }

    /// The command line `run` runs, for a test that needs more control.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_neo-ops"));
        cmd.arg("--manifest")
            .arg(&self.manifest)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(args)
            .env_remove("POSTGRES_MASTER_URL")
            .env_remove("POSTGRES_TENANT_DSN_TEMPLATE")
            .env_remove("REDIS_URL");
        // Embedded backends throughout: no mail setting (another test may
        // have planted one in this process) reaches the command.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SMTP_") {
                cmd.env_remove(name);
            }
        }
        cmd
    }

    /// [`Cli::command`] on the backends `settings` names: its Postgres,
    /// Redis, key prefix and replica name.
    pub fn command_on(&self, args: &[&str], settings: &Settings) -> std::process::Command {
        let mut cmd = self.command(args);
        let urls = [
            ("POSTGRES_MASTER_URL", &settings.postgres_master_url),
            (
                "POSTGRES_TENANT_DSN_TEMPLATE",
                &settings.postgres_tenant_dsn_template,
            ),
            ("REDIS_URL", &settings.redis_url),
        ];
        for (name, value) in urls {
            if let Some(value) = value {
                cmd.env(name, value);
            }
        }
        cmd.env("NEO_OPS_KV_PREFIX", &settings.kv_prefix)
            .env("NEO_OPS_REPLICA", &settings.replica);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> CliOutput {
        CliOutput::of(self.command(args))
    }

    /// [`Cli::run`] on the backends `settings` names.
    pub fn run_on(&self, args: &[&str], settings: &Settings) -> CliOutput {
        CliOutput::of(self.command_on(args, settings))
    }
}

impl CliOutput {
    pub fn of(mut command: std::process::Command) -> Self {
        let out = command.output().unwrap();
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
