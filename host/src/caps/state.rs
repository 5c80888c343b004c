//! Per-invocation store state: WASI context (no files, env or sockets unless
//! granted), resource limits, and who is calling with which grants.

use std::sync::Arc;
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
