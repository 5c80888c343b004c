//! Per-invocation store state: WASI context (no files, env or sockets unless
//! granted), resource limits, and who is calling with which grants.

use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Guest stderr kept per invocation.
const STDERR_CAPACITY: usize = 16 << 10;

use crate::manifest::Plugin;
use crate::services::Services;

/// What a capability needs to know about the current call.
pub struct CallContext {
    pub services: Arc<Services>,
    pub plugin: Arc<Plugin>,
    pub tenant: Option<String>,
    pub request_id: String,
    /// Who acts, for the audit log: the authenticated caller's token name,
    /// else `<plugin> (<trigger>)`. Never what the plugin says.
    pub actor: String,
    /// Files this invocation may read, resolved from the grants and its arguments.
    pub files: Vec<std::path::PathBuf>,
    /// Database work runs here, so a statement already sent finishes (and is
    /// waited for) even when the invocation is cut off mid-call.
    pub tasks: tokio_util::task::TaskTracker,
    /// Locks taken and not yet released (name, token): the runtime releases
    /// them for a plugin that trapped or timed out (one that returned keeps
    /// what it chose to keep: a double-click guard).
    pub held_locks: Vec<(String, String)>,
    /// Locks asked for whose answer never came (the kv call failed, so Redis
    /// may have taken them): released when the invocation ends, however it
    /// ended.
    pub uncertain_locks: Vec<(String, String)>,
    /// The tenant whose log ring hears this invocation's log lines
    /// (`Invocation::logged_tenant`).
    pub logged_tenant: Option<String>,
    /// Whether a person runs this invocation (a command): progress may then
    /// be drawn as a bar on a terminal.
    pub interactive: bool,
    /// The job's progress, from its first report on.
    pub progress: Option<crate::progress::Progress>,
    /// When the invocation's time is up (its timeout from its start).
    pub ends_at: tokio::time::Instant,
}

/// Most of an invocation's time left kept back from one backend call: a
/// quarter of it, at most this.
const MOST_KEPT_BACK: Duration = Duration::from_secs(5);

/// When a backend call made at `now` (a database statement, a kv call, an
/// outbound request) is given up on: a quarter of the invocation's time
/// left (at most [`MOST_KEPT_BACK`]) before `ends_at`. A backend that hangs
/// then fails the call with time left for the plugin to act on it (serve
/// what it kept, record the failure) instead of the plugin being cut off;
/// each later call again keeps a quarter of what is left.
pub fn io_deadline(
    now: tokio::time::Instant,
    ends_at: tokio::time::Instant,
) -> tokio::time::Instant {
    let left = ends_at.saturating_duration_since(now);
    now + left - (left / 4).min(MOST_KEPT_BACK)
}

impl CallContext {
    /// [`io_deadline`] for a backend call made now.
    pub fn io_deadline(&self) -> tokio::time::Instant {
        io_deadline(tokio::time::Instant::now(), self.ends_at)
    }
}

pub struct StoreState {
    /// Built on the guest's first WASI call: the project's plugins are built
    /// without WASI and make none; a Python check or an operator's plugin
    /// built for `wasm32-wasip2` does (a std `HashMap`'s seed, stderr).
    /// Building one (its random generators) costs a few percent of a fresh
    /// instance.
    wasi: Option<WasiCtx>,
    /// What the guest wrote to stderr (a panic message, a Python traceback):
    /// logged under the plugin's name, and a crash's reason.
    pub stderr: MemoryOutputPipe,
    /// What the guest last logged at error level: the SDK sends a Rust
    /// plugin's panic message this way (it has no stderr), so with stderr it
    /// is a crash's reason.
    pub last_error: Option<String>,
    /// This invocation's log lines so far: written to the process log, and
    /// kept in its tenant's ring (`caps::log` bounds both).
    pub log_lines: crate::caps::log::LinesLogged,
    table: ResourceTable,
    pub limits: StoreLimits,
    pub call: CallContext,
}

impl StoreState {
    pub fn new(call: CallContext) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(call.plugin.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        Self {
            wasi: None,
            stderr: MemoryOutputPipe::new(STDERR_CAPACITY),
            last_error: None,
            log_lines: Default::default(),
            table: ResourceTable::new(),
            limits,
            call,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Deny by default: no preopened directories, no environment, no
        // network; stderr is captured for this invocation.
        let stderr = &self.stderr;
        let ctx = self.wasi.get_or_insert_with(|| {
            WasiCtx::builder()
                .stderr(stderr.clone())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_call_leaves_a_quarter_of_the_time_left_at_most_five_seconds() {
        let now = tokio::time::Instant::now();
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(io_deadline(now, now + secs(2)), now + ms(1500));
        assert_eq!(io_deadline(now + ms(1500), now + secs(2)), now + ms(1875));
        assert_eq!(io_deadline(now, now + secs(60)), now + secs(55));
        assert_eq!(io_deadline(now + secs(3), now + secs(2)), now + secs(3));
    }
}
