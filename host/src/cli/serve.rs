//! `neo-ops serve`.

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use super::{Cli, connect, load_manifest};
use crate::server;

pub async fn serve(cli: &Cli, listen: &str) -> anyhow::Result<ExitCode> {
    // A manifest that does not parse stops the start (there is nothing to
    // serve yet); once serving, a bad edit keeps the running set instead.
    load_manifest(&cli.manifest)?;
    let services = connect(cli).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on \"{listen}\": {e}"))?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        trigger.cancel();
    });
    server::run_watching(listener, cli.manifest.clone(), services, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
