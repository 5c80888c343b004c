//! `neo-ops serve`.

use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::{Cli, connect, load_manifest};
use crate::runtime::Runtime;
use crate::server;

pub async fn serve(cli: &Cli, listen: &str) -> anyhow::Result<ExitCode> {
    let manifest = load_manifest(&cli.manifest)?;
    let services = connect(cli).await?;
    let runtime = Arc::new(Runtime::load(&manifest, services)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on \"{listen}\": {e}"))?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        trigger.cancel();
    });
    server::run(listener, runtime, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
