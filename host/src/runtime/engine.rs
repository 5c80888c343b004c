//! The wasmtime engine: pooling allocator, epoch interruption, and the ticker
//! that advances epochs so runaway plugins are stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use crate::manifest::MAX_MEMORY;
/// How often the epoch advances: the granularity of timeouts and of yields
/// back to the async executor during long computations.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most core instances, and tables, one component may have.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 16;

/// `max_instances` is the number of plugin instances that can run at once
/// (pool slots); an invocation beyond it fails instead of allocating more.
/// `perf_map` writes `/tmp/perf-<pid>.map` naming every function compiled
/// or loaded from the cache.
pub fn build_engine(max_instances: u32, perf_map: bool) -> anyhow::Result<Engine> {
    let slots = max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // Core instances and tables for `slots` components of the largest
    // shape allowed (a Python component uses 14 core instances): admission
    // lets `slots` invocations in, and a pool that ran out first would fail
    // one of them as a crash. Both are bookkeeping, not linear memory, which
    // is why memories are one per slot and one per component (ours, Python's
    // included, have one): a component with more is refused as it loads.
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_memory_size(MAX_MEMORY)
        .max_memories_per_component(1)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        // Reset reused slots by rewriting the pages a call dirtied (found with
        // PAGEMAP_SCAN where the kernel has it) instead of madvise + page
        // faults on the next call: fewer syscalls, TLB shootdowns and faults.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(512 << 10)
        .async_stack_keep_resident(256 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if perf_map {
        // Names for the plugins' compiled code, for `perf report`.
        config.profiler(ProfilingStrategy::PerfMap);
    }
    Ok(Engine::new(&config)?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("neo-ops-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::Component;

    /// The pool holds one linear memory per slot, so a component with more
    /// (two core modules with a memory each) is refused when it loads, not
    /// failed as a crash under load once the pool's memories ran out before
    /// its slots did.
    #[test]
    fn a_component_with_two_memories_is_refused_at_load() {
        let engine = super::build_engine(2, false).unwrap();
        let component = |modules: usize| {
            let each = "(core module (memory 1)) (core instance (instantiate 0))";
            let text = format!("(component {})", [each].repeat(modules).join(" "));
            Component::new(&engine, wat::parse_str(text).unwrap())
        };
        assert!(component(1).is_ok());
        let refused = component(2).unwrap_err();
        assert!(
            format!("{refused:#}").contains("contains 2 Wasm linear memories"),
            "{refused:#}"
        );
    }
}
