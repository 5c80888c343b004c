//! `neo-ops serve`: the HTTP trigger plus the schedule and queue loops, with
//! a graceful, bounded shutdown. Tests bind port 0 and call [`run`] directly.

pub mod accept;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backends::db::Value;
use crate::runtime::Runtime;
use crate::triggers;

/// How long in-flight work may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves until `shutdown` is cancelled, then drains within [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let services = runtime.services.clone();
    let mut background = JoinSet::new();
    for p in runtime.plugins() {
        let name = p.manifest.name.clone();
        for i in 0..p.manifest.schedules.len() {
            background.spawn(triggers::schedule::run_schedule(
                runtime.clone(),
                name.clone(),
                i,
                shutdown.child_token(),
            ));
        }
        if p.manifest.queue.is_some() {
            background.spawn(triggers::queue::consume(
                runtime.clone(),
                name.clone(),
                shutdown.child_token(),
            ));
        }
    }
    services.plugins_ready.store(true, Ordering::Release);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, replica = %services.settings.replica, "serving");

    let app = triggers::http::router(runtime.clone());
    let max_connections = accept::connection_cap(services.settings.max_connections);
    tracing::info!(max_connections, "connection cap");
    background.spawn(
        runtime
            .admission
            .clone()
            .log_refusals(shutdown.child_token()),
    );
    let stop = shutdown.clone();
    let mut http = tokio::spawn(async move {
        accept::serve(listener, app, max_connections, stop).await;
        anyhow::Ok(())
    });

    tokio::select! {
        r = &mut http => { r??; return Ok(()); }
        _ = shutdown.cancelled() => {}
    }
    tracing::info!("shutting down: no new work, draining in-flight invocations");
    services.plugins_ready.store(false, Ordering::Release);
    let drain = async {
        let _ = (&mut http).await;
        while background.join_next().await.is_some() {}
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("in-flight work did not finish within {SHUTDOWN_GRACE:?}; abandoning it");
        http.abort();
        background.abort_all();
    }
    release_runs(&runtime).await;
    services.db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Marks this replica's unfinished schedule runs as interrupted, so history
/// never shows a run as still going after the process left.
async fn release_runs(runtime: &Runtime) {
    let services = &runtime.services;
    let result = services
        .db
        .master()
        .execute(
            "UPDATE runs SET status = 'interrupted', finished_at = $1 WHERE replica = $2 AND status = 'running'",
            &[
                Value::Timestamp(chrono::Utc::now().timestamp_micros()),
                Value::Text(services.settings.replica.clone()),
            ],
        )
        .await;
    match result {
        Ok(0) => {}
        Ok(n) => tracing::warn!(runs = n, "marked unfinished runs as interrupted"),
        Err(e) => tracing::error!(error = %e, "could not release schedule runs"),
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
