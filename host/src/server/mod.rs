//! `neo-ops serve`: the HTTP trigger plus the schedule and queue loops, with
//! a graceful, bounded shutdown, and the plugin set reloaded in place when
//! the manifest or a component changes. Tests bind port 0 and call [`run`]
//! or [`run_watching`] directly.

pub mod accept;
mod linger;
mod reload;
mod replica;
mod runs;
pub mod sole;
mod write_stall;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;
use crate::services::Services;
use crate::triggers;
use crate::triggers::queue::consume;
use crate::triggers::schedule::run_schedule;
use crate::triggers::supervise::{RESTART_PAUSE, restarting};

/// How long in-flight work may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves a plugin set loaded beforehand (tests, benchmarks) until
/// `shutdown` is cancelled, then drains within [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let services = runtime.services.clone();
    let named = claimed(&services).await?;
    let live = Arc::new(Live::new(services));
    live.install(runtime, &shutdown);
    serve(listener, live, named, shutdown, None).await
}

/// `neo-ops serve`: answers as soon as its replica name is claimed (routes
/// answer 503 while the plugins compile), then keeps the plugin set in step
/// with `manifest` — a changed manifest or component, or SIGHUP, loads a
/// new set in the background and swaps it in; a bad one keeps the old set
/// serving and says why on `/readyz`.
pub async fn run_watching(
    listener: TcpListener,
    manifest: PathBuf,
    services: Arc<Services>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let named = claimed(&services).await?;
    let live = Arc::new(Live::new(services));
    let watcher = tokio::spawn(reload::watch(live.clone(), manifest, shutdown.clone()));
    serve(listener, live, named, shutdown, Some(watcher)).await
}

/// This process's replica name, claimed and kept fresh, and the run
/// history as the start left it.
struct Named {
    stop_keeping: CancellationToken,
    keeping: JoinHandle<()>,
    tidy: runs::Tidy,
}

/// Claims this process's replica name before any consumer or schedule runs
/// under it and keeps it fresh from then on (a slow start must not look
/// like a dead holder to a second process watching it), then tidies the
/// run history (an earlier life's runs of the name released) before the
/// first slot can be claimed.
async fn claimed(services: &Arc<Services>) -> anyhow::Result<Named> {
    let claim = replica::claim(services).await?;
    let held = claim.held;
    let stop_keeping = CancellationToken::new();
    let keeping = tokio::spawn({
        let (services, stop) = (services.clone(), stop_keeping.clone());
        async move { replica::keep(&services, claim, stop).await }
    });
    let tidy = runs::Tidy::at_start(services, held).await;
    Ok(Named {
        stop_keeping,
        keeping,
        tidy,
    })
}

async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    named: Named,
    shutdown: CancellationToken,
    watcher: Option<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let services = live.services.clone();
    let stop_tidying = CancellationToken::new();
    let tidy = tokio::spawn({
        let (services, stop, tidy) = (services.clone(), stop_tidying.clone(), named.tidy);
        async move { tidy.keep(&services, stop).await }
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, replica = %services.settings.replica, "serving");
    let max_connections = accept::connection_cap(services.settings.max_connections);
    tracing::info!(max_connections, "connection cap");
    let stop = shutdown.clone();
    let routes = live.clone();
    let mut http = tokio::spawn(async move {
        let settings = &routes.services.settings;
        let write_pace = write_stall::WritePace {
            stall: settings.write_stall,
            min_rate: settings.min_write_rate,
        };
        let read_limits = accept::ReadLimits {
            header: accept::HEADER_READ_TIMEOUT,
            idle: settings.keep_alive_idle,
        };
        accept::serve(
            listener,
            routes,
            max_connections,
            read_limits,
            write_pace,
            stop,
        )
        .await;
        anyhow::Ok(())
    });

    // Shutdown first: with no connection open, the accept loop ends the
    // moment shutdown is asked for, and taking its end for the reason
    // would skip the drain below (a schedule run left `running`).
    let ended = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        r = &mut http => Some(r),
    };
    // The accept loop ending on its own (a panic) still drains the rest.
    let http_done = ended.is_some();
    let failed = match ended {
        Some(Ok(Ok(()))) | None => None,
        Some(Ok(Err(e))) => Some(e),
        Some(Err(e)) => Some(anyhow::anyhow!("the HTTP server stopped: {e}")),
    };
    if let Some(e) = &failed {
        tracing::error!(error = %e, "the HTTP server stopped; shutting down");
    }
    tracing::info!("shutting down: no new work, draining in-flight invocations");
    services.stopping.cancel();
    services.plugins_ready.store(false, Ordering::Release);
    if let Some(w) = watcher {
        // A load in progress is abandoned (its set is never installed).
        w.abort();
    }
    // The set served last, for what the in-process kv drops as it ends.
    let last_set = live.runtime();
    let drain = async {
        if !http_done {
            let _ = (&mut http).await;
        }
        live.retire_all().await;
        // Invocations whose caller went away finish too.
        services.unfinished.close();
        services.unfinished.wait().await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("in-flight work did not finish within {SHUTDOWN_GRACE:?}; abandoning it");
        http.abort();
    }
    stop_tidying.cancel();
    let _ = tidy.await;
    // The runs under this name are this process's, unless another live
    // process has the name (they would be its).
    if !services.replica_taken.load(Ordering::Acquire) {
        runs::release(&services, &services.settings.replica).await;
    }
    named.stop_keeping.cancel();
    let _ = named.keeping.await;
    if let Some(runtime) = last_set
        && services.kv.backend_name() == "memory"
    {
        warn_of_dropped_jobs(&runtime).await;
    }
    services.db.close().await;
    tracing::info!("stopped");
    failed.map_or(Ok(()), Err)
}

/// Says what the in-process kv takes with it as the process ends: each
/// queue's jobs still waiting, waiting for a retry, dead-lettered, and in
/// hand (a job the drain gave up waiting for) (with Redis they would be
/// there for the next start), for every queue a plugin consumes or may
/// queue on (one nobody consumes keeps its jobs for a consumer to come).
/// Silent when there are none.
async fn warn_of_dropped_jobs(runtime: &Runtime) {
    let mut queues: Vec<String> = runtime
        .plugins()
        .flat_map(|p| {
            let consumed = p.manifest.queue.iter().map(|q| q.name.clone());
            consumed.chain(p.manifest.grants.queues.iter().cloned())
        })
        .collect();
    queues.sort();
    queues.dedup();
    let kv = &runtime.services.kv;
    let replica = &runtime.services.settings.replica;
    let lengths = triggers::http::lengths_of(kv, queues, Duration::from_secs(1)).await;
    let mut dropped = Vec::new();
    for (queue, [ready, dead, retrying]) in lengths {
        let [ready, dead, retrying] = [ready, dead, retrying].map(|n| n.unwrap_or(0));
        let workers = runtime
            .plugins()
            .filter_map(|p| p.manifest.queue.as_ref())
            .filter(|q| q.name == queue)
            .map(|q| q.concurrency)
            .max()
            .unwrap_or(0);
        let mut in_hand = 0;
        for worker in 0..workers {
            let name = triggers::queue::worker_name(replica, worker);
            let list = crate::backends::queue::processing_key(&queue, &name);
            in_hand += kv.list_len(&list).await.unwrap_or(0);
        }
        if ready + dead + retrying + in_hand > 0 {
            dropped.push(format!(
                "\"{queue}\": {ready} waiting, {retrying} waiting for a retry, {dead} dead letters, {in_hand} in hand"
            ));
        }
    }
    if !dropped.is_empty() {
        tracing::warn!(
            dropped = dropped.join("; "),
            "the in-process kv ends with this process, and these queued jobs with it (set REDIS_URL to keep them across restarts)"
        );
    }
}

/// The plugin set being served, swapped whole on reload: routes, schedules
/// and queue consumers all follow it, and an invocation already running
/// finishes on the set it started on (it holds its `Runtime`).
pub struct Live {
    pub services: Arc<Services>,
    router: RwLock<triggers::http::Service>,
    current: Mutex<Option<Generation>>,
}

/// One installed plugin set and the task running its schedules and
/// consumers.
struct Generation {
    runtime: Arc<Runtime>,
    stop: CancellationToken,
    background: JoinHandle<()>,
    consumers: ConsumersStopped,
}

/// For each queue, cancelled once the consumer of the latest set that
/// consumes it (and every one before it) has stopped. A new set's consumer
/// of a queue starts only then, so a replica never runs two consumers of a
/// queue under one name, and waits for nothing else.
type ConsumersStopped = Arc<std::collections::HashMap<String, CancellationToken>>;

impl Live {
    fn new(services: Arc<Services>) -> Self {
        Self {
            router: RwLock::new(triggers::http::loading_router(services.clone())),
            services,
            current: Mutex::new(None),
        }
    }

    /// The router requests go to now.
    pub fn router(&self) -> triggers::http::Service {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The runtime of the set being served, once one is.
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|g| g.runtime.clone())
    }

    /// Makes `runtime` the set served: its routes take the next request and
    /// its schedules the next slot at once; each queue's consumer starts once
    /// the previous set's consumer of that queue has finished its job and
    /// stopped, so one replica never runs two consumers of a queue under one
    /// name (and a long job on one queue holds up no other). Nothing changes
    /// once `shutdown` has begun.
    fn install(&self, runtime: Arc<Runtime>, shutdown: &CancellationToken) {
        if shutdown.is_cancelled() {
            return;
        }
        let stop = shutdown.child_token();
        let router = triggers::http::router(runtime.clone());
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let previous = current.take();
        // Read before the old set stops: a slot due between its stop and
        // this moment would otherwise fall to neither set (one due on both
        // sides of it is claimed once in `runs`).
        let now = chrono::Utc::now();
        if let Some(old) = &previous {
            old.stop.cancel();
        }
        let before = previous
            .as_ref()
            .map(|g| g.consumers.clone())
            .unwrap_or_default();
        // A queue this set does not consume keeps the previous set's token,
        // so a later set that consumes it again still waits for that one.
        let mut consumers = (*before).clone();
        for q in runtime.plugins().filter_map(|p| p.manifest.queue.as_ref()) {
            consumers.insert(q.name.clone(), CancellationToken::new());
        }
        let consumers = Arc::new(consumers);
        // The first set also fires the latest slot due within the catch-up
        // (no replica was up to claim it, or the claim in `runs` keeps it
        // once); a later set goes on from the moment the previous stopped.
        let since = match &previous {
            None => chrono::Duration::from_std(self.services.settings.schedule_catch_up)
                .map_or(now, |back| now - back),
            Some(_) => now,
        };
        let background = tokio::spawn(run_background(
            runtime.clone(),
            previous.map(|g| g.background),
            (before, consumers.clone()),
            since,
            stop.clone(),
        ));
        *current = Some(Generation {
            runtime,
            stop,
            background,
            consumers,
        });
        drop(current);
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = router;
        // A shutdown begun meanwhile has said "not ready": it stays said.
        if !shutdown.is_cancelled() {
            self.services.plugins_ready.store(true, Ordering::Release);
        }
    }

    /// Stops the current set's background tasks and waits for them.
    async fn retire_all(&self) {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(g) = current {
            g.stop.cancel();
            let _ = g.background.await;
        }
    }
}

/// A set's schedules and queue consumers, run until `stop`, then drained.
/// Schedules start at once from `since` (when the set was installed), so no
/// slot falls in the gap while the previous set drains; each consumer waits
/// for the previous set's consumer of its queue (`consumers`: the previous
/// set's tokens and this set's). Ends once the previous set's background
/// has too, so shutdown waits for every set.
async fn run_background(
    runtime: Arc<Runtime>,
    previous: Option<JoinHandle<()>>,
    (before, mine): (ConsumersStopped, ConsumersStopped),
    since: chrono::DateTime<chrono::Utc>,
    stop: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for p in runtime.plugins() {
        let name = p.manifest.name.clone();
        for i in 0..p.manifest.schedules.len() {
            let (runtime, name, stop) = (runtime.clone(), name.clone(), stop.child_token());
            tasks.spawn(async move {
                let what = format!("schedule {i} of plugin \"{name}\"");
                let restarted = AtomicBool::new(false);
                restarting(&what, &stop.clone(), RESTART_PAUSE, || {
                    // Started again after a panic from then on: the slot
                    // that panicked is not fired twice.
                    let since = match restarted.swap(true, Ordering::Relaxed) {
                        true => chrono::Utc::now(),
                        false => since,
                    };
                    run_schedule(runtime.clone(), name.clone(), i, since, stop.clone())
                })
                .await;
            });
        }
        if let Some(queue) = &p.manifest.queue {
            let previous_consumer = before.get(&queue.name).cloned();
            // Said when the last of this queue's workers ends, a panic included.
            let stopped = Arc::new(mine[&queue.name].clone().drop_guard());
            for worker in 0..queue.concurrency {
                let (runtime, stop, name) = (runtime.clone(), stop.child_token(), name.clone());
                let (stopped, previous_consumer) = (stopped.clone(), previous_consumer.clone());
                tasks.spawn(async move {
                    let _stopped = stopped;
                    // Waited for even when stopped meanwhile: "stopped" must
                    // cover every earlier consumer too.
                    if let Some(previous) = previous_consumer {
                        previous.cancelled().await;
                    }
                    if !stop.is_cancelled() {
                        let what = format!("queue worker {worker} of plugin \"{name}\"");
                        restarting(&what, &stop.clone(), RESTART_PAUSE, || {
                            consume(runtime.clone(), name.clone(), worker, stop.clone())
                        })
                        .await;
                    }
                });
            }
        }
    }
    tasks.spawn(runtime.admission.clone().log_refusals(stop.child_token()));
    while tasks.join_next().await.is_some() {}
    if let Some(previous) = previous {
        let _ = previous.await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
