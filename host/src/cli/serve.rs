//! `neo-ops serve`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::{Cli, load_manifest};
use crate::backends::Unreachable;
use crate::server;
use crate::services::Services;
use crate::settings::Settings;

/// The longest pause between tries to reach Postgres or Redis at start.
const START_RETRY_MAX: Duration = Duration::from_secs(30);

pub async fn serve(cli: &Cli, listen: &str) -> anyhow::Result<ExitCode> {
    // A manifest that does not parse stops the start (there is nothing to
    // serve yet); once serving, a bad edit keeps the running set instead.
    load_manifest(&cli.manifest)?;
    // A bad or taken address is said now, not after the wait for Postgres
    // and Redis (for ever, while they are down). Bound again once serving:
    // held meanwhile, the port would take connections nobody answers.
    drop(bind(listen).await?);
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        trigger.cancel();
    });
    // Held until serve returns (the kernel lets go however it ends), and
    // taken before anything is opened.
    let sole = server::sole::claim(&Settings::from_env(cli.data_dir.clone())?)?;
    let Some(services) = connect_when_reachable(cli, &shutdown).await? else {
        return Ok(ExitCode::SUCCESS); // stopped while waiting
    };
    if sole.is_some() {
        services
            .sole_server
            .store(true, std::sync::atomic::Ordering::Release);
    }
    let data_dir = &services.settings.data_dir;
    if let Some(mode) = crate::private_fs::readable_by_others(data_dir) {
        tracing::warn!(
            "data dir \"{}\" is open to other local users (mode {mode:o}); it holds customers' data (embedded databases, outbox mail): chmod 700 it",
            data_dir.display()
        );
    }
    if services.kv.backend_name() == "memory" {
        tracing::warn!(
            "no REDIS_URL: queued jobs, their retries and dead letters live in this process's memory, and a stop or crash loses them (set REDIS_URL to keep them)"
        );
    }
    let listener = bind(listen).await?;
    server::run_watching(listener, cli.manifest.clone(), services, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on \"{listen}\": {e}"))
}

/// Connects, trying again while Postgres or Redis cannot be reached yet:
/// after a reboot neo-ops may start before they take connections, and a
/// process that exits at once is soon given up on by its supervisor
/// (systemd's start limit), so it would stay down once they are up. Each
/// failed try is logged with its cause. Only such errors are waited out
/// ([`Unreachable`]): a wrong password, a missing database or a failed
/// migration ends the start as before. A stop asked for meanwhile ends it
/// too, a connect still under way (a migration waiting for a lock)
/// included. `None`: stopped.
async fn connect_when_reachable(
    cli: &Cli,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<Services>>> {
    let settings = Settings::from_env(cli.data_dir.clone())?;
    let mut pause = Duration::from_secs(1);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            connected = Services::connect(settings.clone()) => connected,
        };
        match connected {
            Ok(_) if shutdown.is_cancelled() => return Ok(None),
            Ok(services) => return Ok(Some(services)),
            Err(e) if e.downcast_ref::<Unreachable>().is_some() => {
                tracing::error!(
                    "cannot start yet: {e:#}; trying again in {}s (stop with Ctrl-C or SIGTERM)",
                    pause.as_secs()
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(START_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}
