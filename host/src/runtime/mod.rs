//! Loads plugins once (compile or cache hit, link, `InstancePre`) and invokes
//! them: a fresh store per invocation, memory limit, epoch deadline and a
//! wall-clock bound. Every trigger comes through [`Runtime::invoke`].

pub mod admission;
pub mod cache;
pub mod completing;
pub mod engine;
mod exports;
pub mod file_grants;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use crate::bindings::{Runtime as RuntimeWorld, check_export, handler_export};
use crate::caps::state::{CallContext, StoreState};
use crate::manifest::{Manifest, Plugin};
use crate::services::Services;

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// The manifest route that matched.
    pub route: String,
    pub path: String,
    pub path_params: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address as the socket saw it.
    pub remote_addr: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Trigger {
    Http(HttpRequest),
    Schedule {
        cron: String,
        time_zone: String,
        slot_micros: i64,
        args: Vec<String>,
    },
    Command(Vec<String>),
    Queue {
        queue: String,
        id: String,
        payload: String,
        attempt: u32,
        max_attempts: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub trigger: Trigger,
    pub tenant: Option<String>,
    pub principal: Option<Principal>,
    pub dry_run: bool,
    pub request_id: String,
}

impl Invocation {
    /// `http`, `schedule`, `command` or `queue`.
    pub fn trigger_name(&self) -> &'static str {
        match self.trigger {
            Trigger::Http(_) => "http",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Command(_) => "command",
            Trigger::Queue { .. } => "queue",
        }
    }

    /// The tenant whose log ring hears of this invocation: not one named by
    /// an anonymous request, or anyone could fill the rings with made-up
    /// tenants and push real ones out; and only one named by its name (not
    /// a numeric id, not with spaces around it), the ring its support
    /// bundle reads.
    pub fn logged_tenant(&self) -> Option<&str> {
        match self.class() {
            admission::Class::Public => None,
            _ => self
                .tenant
                .as_deref()
                .filter(|t| crate::manifest::valid_tenant_name(t)),
        }
    }

    /// The admission class: anonymous HTTP is public, schedules and queue
    /// jobs are background, everything an operator started is operator.
    pub fn class(&self) -> admission::Class {
        match &self.trigger {
            Trigger::Http(_) if self.principal.is_none() => admission::Class::Public,
            Trigger::Http(_) | Trigger::Command(_) => admission::Class::Operator,
            Trigger::Schedule { .. } | Trigger::Queue { .. } => admission::Class::Background,
        }
    }
}

/// An invocation that holds its instance slot: what [`Runtime::admit`]
/// gives and [`Runtime::run_admitted`] runs.
pub struct Admitted {
    inv: Invocation,
    slot: admission::Slot,
    started: Instant,
}

/// What an invocation's outcome is counted and logged under.
struct Accounting {
    trigger: &'static str,
    /// The tenant whose log ring hears of it, and the request id.
    logged: Option<(String, String)>,
}

impl Accounting {
    fn of(inv: &Invocation) -> Self {
        Self {
            trigger: inv.trigger_name(),
            logged: inv
                .logged_tenant()
                .map(|tenant| (tenant.to_string(), inv.request_id.clone())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The plugin returned an error: its status and message are for the caller.
    #[error("{message}")]
    Failed { status: u16, message: String },
    /// Trap, limit breach or instantiation failure: the details are logged,
    /// the caller learns only that the plugin failed.
    #[error("plugin \"{plugin}\" failed: {reason}")]
    Crashed { plugin: String, reason: String },
    #[error("plugin \"{plugin}\" timed out after {timeout:?}")]
    TimedOut { plugin: String, timeout: Duration },
    /// No instance slot was free within the admission wait: try again later.
    /// Nothing of the plugin ran.
    #[error("busy: {0}; try again shortly")]
    Busy(#[from] admission::Busy),
    #[error("no plugin named \"{0}\"")]
    UnknownPlugin(String),
    #[error("plugin \"{0}\" does not export {1}")]
    MissingExport(String, &'static str),
}

impl InvokeError {
    pub fn status(&self) -> u16 {
        match self {
            InvokeError::Failed { status, .. } => *status,
            InvokeError::TimedOut { .. } => 504,
            InvokeError::Busy(_) => 503,
            InvokeError::UnknownPlugin(_) => 404,
            _ => 500,
        }
    }
}

/// An invocation's `outcome` label in `/metrics`: `ok`, unless the run
/// failed (and how it did).
fn outcome_label(error: Option<&InvokeError>) -> &'static str {
    match error {
        None => "ok",
        Some(InvokeError::Failed { .. }) => "failed",
        Some(InvokeError::TimedOut { .. }) => "timeout",
        Some(InvokeError::Busy(_)) => "busy",
        Some(InvokeError::Crashed { .. }) => "trap",
        // Nothing ran: no such plugin, or not one for this trigger.
        Some(InvokeError::UnknownPlugin(_) | InvokeError::MissingExport(..)) => "refused",
    }
}

/// The `outcome` label of a plugin's answer: `failed` when its trigger
/// takes its status for a failure (400 or over: a command then exits 1, a
/// schedule records an error, a queue job is retried or dead-lettered),
/// and for a status that is no final HTTP status at all (the route answers
/// 500 for it). An HTTP answer is otherwise the plugin's choice of status
/// (a health route answers 503 on purpose while degraded).
fn answer_label(trigger: &str, status: u16) -> &'static str {
    let fine = match trigger {
        "command" | "schedule" | "queue" => answered_success(status),
        _ => is_final_status(status),
    };
    if fine { "ok" } else { "failed" }
}

/// A status a plugin may answer with: 200 to 599 (hyper answers a 1xx
/// head with a bare 500 and closes the connection; 600 and over mean
/// nothing).
pub fn is_final_status(status: u16) -> bool {
    (200..600).contains(&status)
}

/// Whether an answer with `status` is a success to a command, a schedule
/// or a queue job: 200 to 399. Anything else fails it (exit 1, an error
/// on record, a retry).
pub fn answered_success(status: u16) -> bool {
    (200..400).contains(&status)
}

/// A check's verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Skip,
    Warn,
    Fail,
}

/// Result of a preflight check plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckOutcome {
    pub status: CheckStatus,
    pub detail: String,
    pub hint: Option<String>,
}

pub struct LoadedPlugin {
    pub manifest: Arc<Plugin>,
    pre: InstancePre<StoreState>,
    handler: Option<handler_export::GuestIndices>,
    check: Option<check_export::GuestIndices>,
}

pub struct Runtime {
    engine: Engine,
    _ticker: Arc<engine::EpochTicker>,
    plugins: HashMap<String, LoadedPlugin>,
    pub services: Arc<Services>,
    pub admission: Arc<admission::Admission>,
}

impl Runtime {
    /// Compiles (or loads from cache) and links every plugin in the manifest.
    pub fn load(manifest: &Manifest, services: Arc<Services>) -> anyhow::Result<Self> {
        let cache = services.settings.data_dir.join("cache");
        Self::load_cached_in(manifest, services, &cache)
    }

    /// [`Runtime::load`] with the component cache in `cache`, not in the
    /// services' data dir.
    pub fn load_cached_in(
        manifest: &Manifest,
        services: Arc<Services>,
        cache: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let settings = &services.settings;
        let engine = engine::build_engine(settings.max_instances, settings.perf_map)?;
        let plugins = link_plugins(&engine, manifest, cache)?;
        let ticker = Arc::new(engine::EpochTicker::start(&engine));
        let admission = Arc::new(admission::Admission::new(
            settings.max_instances,
            settings.admission,
        ));
        Ok(Self {
            engine,
            _ticker: ticker,
            plugins,
            services,
            admission,
        })
    }

    /// The manifest's plugins on this runtime's engine, ticker, admission
    /// and services: a new set to swap in while this one keeps serving.
    /// Unchanged components come from the cache.
    pub fn reload(&self, manifest: &Manifest) -> anyhow::Result<Self> {
        let cache = self.services.settings.data_dir.join("cache");
        Ok(Self {
            engine: self.engine.clone(),
            _ticker: self._ticker.clone(),
            plugins: link_plugins(&self.engine, manifest, &cache)?,
            services: self.services.clone(),
            admission: self.admission.clone(),
        })
    }

    pub fn plugin(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
    }

    /// Names this runtime's engine in the component cache.
    pub fn engine_tag(&self) -> String {
        cache::engine_tag(&self.engine)
    }

    pub fn plugins(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.plugins.values()
    }

    fn new_store(
        &self,
        plugin: &LoadedPlugin,
        inv: Option<&Invocation>,
        request_id: &str,
    ) -> Store<StoreState> {
        let started = Instant::now();
        let timeout = plugin.manifest.limits.timeout;
        let files = file_grants::resolve_grants(
            &plugin.manifest.grants.files,
            inv.map(|i| &i.trigger),
            &self.services.settings.data_dir,
        );
        let state = StoreState::new(CallContext {
            services: self.services.clone(),
            plugin: plugin.manifest.clone(),
            tenant: inv.and_then(|i| i.tenant.clone()),
            request_id: request_id.to_string(),
            actor: actor(&plugin.manifest.name, inv),
            files,
            tasks: tokio_util::task::TaskTracker::new(),
            held_locks: Vec::new(),
            uncertain_locks: Vec::new(),
            interactive: inv.is_some_and(|i| matches!(i.trigger, Trigger::Command(_))),
            logged_tenant: inv.and_then(|i| i.logged_tenant()).map(str::to_string),
            progress: None,
            ends_at: (started + timeout).into(),
        });
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Each epoch tick: trap past the deadline, otherwise yield so a long
        // computation never starves the executor.
        let deadline = started + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs a plugin's `run` export for one invocation (counted for `/metrics`).
    pub async fn invoke(&self, plugin_name: &str, inv: Invocation) -> Result<Output, InvokeError> {
        let admitted = self.admit(plugin_name, inv).await?;
        self.run_admitted(plugin_name, admitted).await
    }

    /// Waits for an instance slot for `inv`. A caller that stops waiting
    /// leaves nothing behind to run; a refusal is counted and logged as the
    /// invocation's outcome.
    pub async fn admit(&self, plugin_name: &str, inv: Invocation) -> Result<Admitted, InvokeError> {
        let started = Instant::now();
        // A plugin that cannot run is said to be so at once, not after
        // waiting for a slot (or as busy).
        let refused = match self.handler_of(plugin_name) {
            Err(e) => e,
            Ok(_) => match self.admission.acquire(inv.class()).await {
                Ok(slot) => return Ok(Admitted { inv, slot, started }),
                Err(busy) => InvokeError::Busy(busy),
            },
        };
        self.account(plugin_name, &Accounting::of(&inv), Err(&refused), started);
        Err(refused)
    }

    /// The plugin and its `run` export, or why it has none.
    fn handler_of(
        &self,
        plugin_name: &str,
    ) -> Result<(&LoadedPlugin, &handler_export::GuestIndices), InvokeError> {
        let plugin = self
            .plugins
            .get(plugin_name)
            .ok_or_else(|| InvokeError::UnknownPlugin(plugin_name.to_string()))?;
        let indices = plugin.handler.as_ref().ok_or_else(|| {
            InvokeError::MissingExport(plugin_name.to_string(), "neo:ops/handler")
        })?;
        Ok((plugin, indices))
    }

    /// Runs an invocation [`Runtime::admit`] let in, in its slot.
    pub async fn run_admitted(
        &self,
        plugin_name: &str,
        admitted: Admitted,
    ) -> Result<Output, InvokeError> {
        let Admitted { inv, slot, started } = admitted;
        let accounting = Accounting::of(&inv);
        let result = self.invoke_uncounted(plugin_name, inv, slot).await;
        self.account(plugin_name, &accounting, result.as_ref(), started);
        result
    }

    /// Counts an invocation's outcome for `/metrics` and tells its tenant's
    /// log ring.
    fn account(
        &self,
        plugin_name: &str,
        accounting: &Accounting,
        result: Result<&Output, &InvokeError>,
        started: Instant,
    ) {
        let outcome = match result {
            Ok(out) => answer_label(accounting.trigger, out.status),
            Err(e) => outcome_label(Some(e)),
        };
        self.count(plugin_name, accounting.trigger, outcome, started);
        if let Some((tenant, request_id)) = &accounting.logged {
            let outcome = match result {
                Ok(out) => format!("status {}", out.status),
                Err(e) => format!("error: {}", crate::caps::log::one_line(&e.to_string())),
            };
            let line = format!(
                "{plugin_name} ({}) {outcome} in {:.1} ms request_id={request_id}",
                accounting.trigger,
                started.elapsed().as_secs_f64() * 1000.0
            );
            self.services.tenant_logs.push(tenant, &line);
        }
    }

    /// Counts an invocation for `/metrics`: ok, or how it failed.
    fn count(&self, plugin: &str, trigger: &'static str, outcome: &'static str, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        self.services
            .metrics
            .invocation(plugin, trigger, outcome, seconds);
    }

    async fn invoke_uncounted(
        &self,
        plugin_name: &str,
        inv: Invocation,
        _slot: admission::Slot,
    ) -> Result<Output, InvokeError> {
        let (plugin, indices) = self.handler_of(plugin_name)?;
        let timeout = plugin.manifest.limits.timeout;
        let mut store = self.new_store(plugin, Some(&inv), &inv.request_id);
        let wit_inv = to_wit(inv);
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            let guest = indices.load(&mut store, &instance)?;
            guest.call_run(&mut store, &wit_inv).await
        };
        let outcome = tokio::time::timeout(timeout, call).await;
        match self
            .finish(plugin_name, timeout, &mut store, outcome)
            .await?
        {
            Err(failure) => Err(InvokeError::Failed {
                status: failure.status,
                message: failure.message,
            }),
            Ok(out) => Ok(Output {
                status: out.status,
                headers: out.headers,
                body: out.body,
            }),
        }
    }

    /// After a call: waits for its database work, gives back the locks of a
    /// call that trapped or timed out, and names how it failed.
    async fn finish<T>(
        &self,
        plugin_name: &str,
        timeout: Duration,
        store: &mut Store<StoreState>,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, InvokeError> {
        let tasks = store.data().call.tasks.clone();
        settle(&tasks).await;
        release_locks(&self.services, store, matches!(outcome, Ok(Ok(_)))).await;
        let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).into_owned();
        if !stderr.trim().is_empty() {
            // As a string field: the formatter quotes and escapes it.
            tracing::warn!(
                plugin = plugin_name,
                stderr = stderr.trim(),
                "plugin wrote to stderr"
            );
        }
        match outcome {
            Err(_) => Err(timed_out(plugin_name, timeout)),
            Ok(Err(e)) => {
                // The SDK logs a panic as `plugin panicked at …`; another
                // error line is no reason for a trap.
                let said = match &store.data().last_error {
                    Some(logged) if logged.contains(" panicked at ") => {
                        format!("{stderr}\n{logged}")
                    }
                    _ => stderr,
                };
                Err(call_failed(plugin_name, timeout, e, &said))
            }
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// Runs a plugin's preflight `check` export (counted for `/metrics`).
    pub async fn check(
        &self,
        plugin_name: &str,
        request_id: &str,
    ) -> Result<CheckOutcome, InvokeError> {
        let started = Instant::now();
        let result = self.check_uncounted(plugin_name, request_id).await;
        let outcome = outcome_label(result.as_ref().err());
        self.count(plugin_name, "check", outcome, started);
        result
    }

    async fn check_uncounted(
        &self,
        plugin_name: &str,
        request_id: &str,
    ) -> Result<CheckOutcome, InvokeError> {
        let plugin = self
            .plugins
            .get(plugin_name)
            .ok_or_else(|| InvokeError::UnknownPlugin(plugin_name.to_string()))?;
        let indices = plugin
            .check
            .as_ref()
            .ok_or_else(|| InvokeError::MissingExport(plugin_name.to_string(), "neo:ops/check"))?;
        let timeout = plugin.manifest.limits.timeout;
        let _slot = self.admission.acquire(admission::Class::Operator).await?;
        let mut store = self.new_store(plugin, None, request_id);
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            let guest = indices.load(&mut store, &instance)?;
            guest.call_check(&mut store).await
        };
        let outcome = tokio::time::timeout(timeout, call).await;
        let o = self
            .finish(plugin_name, timeout, &mut store, outcome)
            .await?;
        use check_export::Status;
        Ok(CheckOutcome {
            status: match o.status {
                Status::Pass => CheckStatus::Pass,
                Status::Warn => CheckStatus::Warn,
                Status::Fail => CheckStatus::Fail,
                Status::Skip => CheckStatus::Skip,
            },
            detail: o.detail,
            hint: o.hint,
        })
    }
}

/// The audit actor of an invocation (see `CallContext::actor`).
fn actor(plugin: &str, inv: Option<&Invocation>) -> String {
    let Some(inv) = inv else {
        return format!("{plugin} (check)");
    };
    if let Some(p) = &inv.principal {
        return p.name.clone();
    }
    // A command line is an operator's act: named like the CLI's own
    // changes, the record's plugin column says which plugin it ran.
    if matches!(inv.trigger, Trigger::Command(_)) {
        return crate::audit_log::cli_actor();
    }
    format!("{plugin} ({})", inv.trigger_name())
}

fn timed_out(plugin: &str, timeout: Duration) -> InvokeError {
    tracing::error!(plugin, ?timeout, "plugin timed out");
    InvokeError::TimedOut {
        plugin: plugin.to_string(),
        timeout,
    }
}

/// A call that ended in a trap: the epoch deadline is a timeout, anything
/// else a crash whose details go to the log only. `said` is the guest's
/// stderr, and the panic it logged if any.
fn call_failed(plugin: &str, timeout: Duration, e: wasmtime::Error, said: &str) -> InvokeError {
    if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        return timed_out(plugin, timeout);
    }
    let trap = format!("{e:#}");
    tracing::error!(plugin, reason = %trap, "plugin invocation failed");
    // What the guest said as it died beats a wasm backtrace.
    let reason = crash_message(said).unwrap_or_else(|| {
        e.downcast_ref::<wasmtime::Trap>().map_or_else(
            || trap.lines().next().unwrap_or("trap").to_string(),
            |t| t.to_string(),
        )
    });
    InvokeError::Crashed {
        plugin: plugin.to_string(),
        reason,
    }
}

/// The message a guest left on stderr as it crashed: a Python exception
/// (the traceback's last line; componentize-py then panics with a generic
/// message), else a Rust panic's message with where, else the last line.
fn crash_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim_end).collect();
    let panic_at = lines.iter().position(|l| l.contains(" panicked at "));
    if let Some(tb) = lines
        .iter()
        .position(|l| l.starts_with("Traceback (most recent call last)"))
    {
        let end = panic_at.filter(|p| *p > tb).unwrap_or(lines.len());
        if let Some(exception) = lines[tb..end].iter().rev().find(|l| !l.trim().is_empty()) {
            return Some(exception.trim().to_string());
        }
    }
    if let Some(i) = panic_at {
        let place = lines[i]
            .split(" panicked at ")
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(':');
        let message: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace"))
            .copied()
            .collect();
        return Some(format!(
            "panicked: {} (at {place})",
            message.join(" ").trim()
        ));
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Releases the locks an invocation that trapped or timed out still held:
/// such a lock would otherwise block others until it expires. A plugin that
/// returned normally keeps what it chose to keep (a double-click guard).
/// Locks whose taking failed are released either way: the plugin never
/// learned it held them.
async fn release_locks(services: &Services, store: &mut Store<StoreState>, returned: bool) {
    let call = &mut store.data_mut().call;
    let mut locks = std::mem::take(&mut call.uncertain_locks);
    if !returned {
        locks.append(&mut call.held_locks);
    }
    if locks.is_empty() {
        return;
    }
    // All at once, and no longer than one kv call: with Redis hanging, one
    // after another held the invocation (and its slot) for seconds each.
    let plugin = &store.data().call.plugin.name;
    let unlocks = futures::future::join_all(locks.iter().map(|(name, token)| async move {
        match services.kv.unlock(name, token).await {
            Ok(true) => tracing::info!(
                %plugin,
                lock = %name,
                "released a lock the finished invocation still held"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lock = %name, error = %e, "could not release a lock; it will expire")
            }
        }
    }));
    if tokio::time::timeout(crate::backends::kv::KV_TIMEOUT, unlocks)
        .await
        .is_err()
    {
        tracing::warn!(%plugin, locks = locks.len(), "releasing locks timed out; they will expire");
    }
}

/// Waits for database work the invocation started, so that when `invoke`
/// returns — even after a timeout — none of its statements is still in flight.
async fn settle(tasks: &tokio_util::task::TaskTracker) {
    tasks.close();
    // The longest piece of tracked work: a transaction (bounded by the
    // statement timeout) and then its audit record (bounded the same).
    let bound = 2 * crate::backends::db::STATEMENT_TIMEOUT + std::time::Duration::from_secs(1);
    if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
        tracing::error!("database work of a finished invocation is still running");
    }
}

/// Compiles and links every plugin, failing with the plugin's name when a
/// component lacks an export its triggers need (`neo-ops check` runs this alone).
pub fn link_plugins(
    engine: &Engine,
    manifest: &Manifest,
    cache_dir: &std::path::Path,
) -> anyhow::Result<HashMap<String, LoadedPlugin>> {
    let mut linker: Linker<StoreState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    RuntimeWorld::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    let mut plugins = HashMap::new();
    for p in &manifest.plugins {
        let component = cache::load_component(engine, &p.component, cache_dir)
            .map_err(|e| anyhow::anyhow!("plugin \"{}\": {e:#}", p.name))?;
        within_its_memory(&component, p)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("plugin \"{}\": cannot link: {e:#}", p.name))?;
        let named = |e: anyhow::Error| {
            anyhow::anyhow!(
                "plugin \"{}\": component {}: {e:#}",
                p.name,
                p.component.display()
            )
        };
        let handler = exports::handler(&pre).map_err(named)?;
        let check = exports::check(&pre).map_err(named)?;
        if p.needs_handler() && handler.is_none() {
            anyhow::bail!(
                "plugin \"{}\": component {} does not export neo:ops/handler, which its triggers need",
                p.name,
                p.component.display()
            );
        }
        if p.check && check.is_none() {
            anyhow::bail!(
                "plugin \"{}\": component {} does not export neo:ops/check",
                p.name,
                p.component.display()
            );
        }
        plugins.insert(
            p.name.clone(),
            LoadedPlugin {
                manifest: Arc::new(p.clone()),
                pre,
                handler,
                check,
            },
        );
    }
    Ok(plugins)
}

/// Refuses a component that starts with more memory than its plugin's
/// `limits.memory`: every instantiation would be refused (a 500 on every
/// call), and a reload would have swapped it in over a working one.
fn within_its_memory(component: &wasmtime::component::Component, p: &Plugin) -> anyhow::Result<()> {
    const PAGE: u64 = 64 << 10;
    let pages = component
        .resources_required()
        .and_then(|r| r.max_initial_memory_size)
        .unwrap_or(0);
    let limit = p.limits.memory_bytes as u64;
    if pages.saturating_mul(PAGE) > limit {
        anyhow::bail!(
            "plugin \"{}\": component {} starts with {} KiB of memory, over its limit of {} KiB \
             (raise limits.memory, or build it with less initial memory)",
            p.name,
            p.component.display(),
            pages.saturating_mul(PAGE) >> 10,
            limit >> 10
        );
    }
    Ok(())
}

/// Converts the host's invocation into the generated WIT type, at the edge.
fn to_wit(inv: Invocation) -> handler_export::Invocation {
    use handler_export as h;
    let trigger = match inv.trigger {
        Trigger::Http(r) => h::Trigger::Http(h::HttpRequest {
            method: r.method,
            route: r.route,
            path: r.path,
            path_params: r.path_params,
            query: r.query,
            headers: r.headers,
            body: r.body,
            remote_addr: r.remote_addr,
        }),
        Trigger::Schedule {
            cron,
            time_zone,
            slot_micros,
            args,
        } => h::Trigger::Schedule(h::ScheduleEvent {
            cron,
            time_zone,
            slot: slot_micros,
            args,
        }),
        Trigger::Command(args) => h::Trigger::Command(args),
        Trigger::Queue {
            queue,
            id,
            payload,
            attempt,
            max_attempts,
        } => h::Trigger::Queue(h::QueueMessage {
            queue,
            id,
            payload,
            attempt,
            max_attempts,
        }),
    };
    h::Invocation {
        trigger,
        tenant: inv.tenant,
        principal: inv.principal.map(|p| h::Principal {
            name: p.name,
            role: p.role,
        }),
        dry_run: inv.dry_run,
        request_id: inv.request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_that_never_ran_is_refused_not_trapped() {
        let crashed = InvokeError::Crashed {
            plugin: "p".into(),
            reason: "unreachable".into(),
        };
        assert_eq!(outcome_label(Some(&crashed)), "trap");
        let unknown = InvokeError::UnknownPlugin("p".into());
        let missing = InvokeError::MissingExport("p".into(), "check");
        for never_ran in [unknown, missing] {
            assert_eq!(outcome_label(Some(&never_ran)), "refused");
        }
        assert_eq!(outcome_label(None), "ok");
    }

    #[test]
    fn an_answer_fails_as_its_trigger_takes_it() {
        for (trigger, status, outcome) in [
            ("http", 404, "ok"),
            ("http", 503, "ok"),
            ("command", 200, "ok"),
            ("command", 409, "failed"),
            ("schedule", 400, "failed"),
            ("schedule", 399, "ok"),
            ("queue", 200, "ok"),
            ("queue", 500, "failed"),
            ("http", 101, "failed"),
            ("http", 700, "failed"),
            ("command", 0, "failed"),
        ] {
            assert_eq!(answer_label(trigger, status), outcome, "{trigger} {status}");
        }
    }

    #[test]
    fn an_anonymous_request_names_no_tenant_for_the_log_ring() {
        let http = Trigger::Http(HttpRequest {
            method: "GET".into(),
            route: "/status.json".into(),
            path: "/status.json".into(),
            path_params: vec![],
            query: vec![("tenant".into(), "made-up".into())],
            headers: vec![],
            body: vec![],
            remote_addr: None,
        });
        let mut inv = Invocation {
            trigger: http,
            tenant: Some("made-up".into()),
            principal: None,
            dry_run: false,
            request_id: "r".into(),
        };
        assert_eq!(inv.logged_tenant(), None);
        inv.principal = Some(Principal {
            name: "oncall".into(),
            role: "admin".into(),
        });
        assert_eq!(inv.logged_tenant(), Some("made-up"));
        inv.trigger = Trigger::Command(vec![]);
        inv.principal = None;
        assert_eq!(inv.logged_tenant(), Some("made-up"));
        // Not a tenant's name: its lines would go to a ring no bundle reads.
        for named in ["1", " made-up", "Made-Up"] {
            inv.tenant = Some(named.into());
            assert_eq!(inv.logged_tenant(), None, "{named:?}");
        }
    }

    #[test]
    fn a_crash_is_explained_by_what_the_guest_said() {
        let rust = "\nthread '<unnamed>' panicked at src/lib.rs:9:9:\nno free space\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            crash_message(rust).as_deref(),
            Some("panicked: no free space (at src/lib.rs:9:9)")
        );
        let python = "Traceback (most recent call last):\n  File \"app.py\", line 3\nValueError: disk is full\n\nthread '<unnamed>' panicked at runtime/src/lib.rs:1280:25:\nPython function threw an unexpected exception\n";
        assert_eq!(
            crash_message(python).as_deref(),
            Some("ValueError: disk is full")
        );
        assert_eq!(crash_message("  \n"), None);
    }
}
