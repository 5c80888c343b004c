//! `neo-ops run <plugin> [args…]` and `neo-ops check`.

use std::io::Write;
use std::process::ExitCode;

use super::{Cli, PreflightArgs, connect_by_hand, load_manifest};
use crate::runtime::{Runtime, answered_success};
use crate::services::Services;
use crate::settings::Settings;
use crate::triggers;

/// Runs a plugin's command, or, for a check plugin, that one check.
pub async fn run(cli: &Cli, plugin: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let mut manifest = load_manifest(&cli.manifest)?;
    let Some(spec) = manifest.plugins.iter().find(|p| p.name == plugin) else {
        let runnable: Vec<&str> = manifest
            .plugins
            .iter()
            .filter(|p| p.command || p.check)
            .map(|p| p.name.as_str())
            .collect();
        anyhow::bail!(
            "no plugin named \"{plugin}\" in {} (it runs: {})",
            cli.manifest.display(),
            runnable.join(", ")
        );
    };
    if spec.check && !spec.command {
        // A check takes no arguments of its own: `--json` (and `--verbose`,
        // which the log filter reads) only.
        let usage = format!(
            "usage: neo-ops run {plugin} [--json] [--verbose] (runs this one preflight check)"
        );
        if asks_for_help(args) {
            println!("{usage}");
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(other) = args.iter().find(|a| *a != "--json" && *a != "--verbose") {
            // A usage error of neo-ops's own: exit 2, as clap's are, and
            // the envelope on stdout when JSON was asked for.
            let message = format!("unknown argument \"{other}\" ({usage})");
            eprintln!("error: {message}");
            if super::json_in(args) {
                super::print_error_envelope(400, &message);
            }
            return Ok(ExitCode::from(2));
        }
        let only = PreflightArgs {
            json: args.iter().any(|a| a == "--json"),
            only: Some(vec![plugin.to_string()]),
        };
        return super::preflight::preflight(cli, &only).await;
    }
    // Only the plugin being run is compiled and linked.
    manifest.plugins.retain(|p| p.name == plugin);
    let (services, cache, _scratch) = if asks_for_help(args) {
        // Usage needs no backend: it prints during a database or Redis
        // outage and makes nothing in the data dir, and a plugin that does
        // not answer `--help` itself acts on an empty database, not the
        // real one.
        let scratch = tempfile::tempdir()?;
        let mut settings = Settings::from_env(scratch.path().to_path_buf())?;
        (
            settings.postgres_master_url,
            settings.postgres_tenant_dsn_template,
        ) = (None, None);
        (settings.redis_url, settings.smtp) = (None, None);
        let cache = if cli.data_dir.exists() {
            cli.data_dir.join("cache")
        } else {
            scratch.path().join("cache")
        };
        (Services::connect(settings).await?, cache, Some(scratch))
    } else if triggers::command::asks_for_dry_run(args) {
        // A dry run changes nothing, the schema included: the master is
        // read as it stands (one behind this build is refused, naming the
        // migrations), never migrated under an older `serve` or made.
        let cache = cli.data_dir.join("cache");
        (super::connect_to_read(cli).await?, cache, None)
    } else {
        a_shared_kv_or_none(cli, &manifest, plugin)?;
        let cache = cli.data_dir.join("cache");
        (connect_by_hand(cli).await?, cache, None)
    };
    if services.kv.backend_name() == "memory" {
        services
            .queues_end_with_command
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let runtime = Runtime::load_cached_in(&manifest, services.clone(), &cache)?;
    let result = triggers::command::run(&runtime, plugin, args.to_vec()).await;
    services.db.close().await;
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out.body)?;
            if !out.body.ends_with(b"\n") && !out.body.is_empty() {
                stdout.write_all(b"\n")?;
            }
            Ok(if !answered_success(out.status) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(e) => {
            // `Failed` shows the plugin's own message; the rest say which
            // plugin and why.
            let message = e.to_string();
            eprintln!("error: {message}");
            // A script reading `--json` output gets the failure as JSON
            // too, with the status an HTTP caller would get.
            if super::json_in(args) {
                super::print_error_envelope(e.status(), &message);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Whether a command line asks for usage, as the SDK reads it.
fn asks_for_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// What `serve` builds, short of connecting: its settings, the route table,
/// and every plugin compiled (warming the cache) and linked.
pub fn check(cli: &Cli) -> anyhow::Result<ExitCode> {
    // The settings `serve` reads, without connecting: a bad value fails here.
    crate::settings::Settings::from_env(cli.data_dir.clone())?;
    let manifest = load_manifest(&cli.manifest)?;
    let _routes = std::panic::catch_unwind(|| triggers::http::routes(manifest.plugins.iter()))
        .map_err(|_| anyhow::anyhow!("the manifest's routes cannot be served (see above)"))?;
    let engine = crate::runtime::engine::build_engine(1, false)?;
    crate::runtime::link_plugins(&engine, &manifest, &cli.data_dir.join("cache"))?;
    for (plugin, cron) in manifest.parked_schedules() {
        eprintln!(
            "warning: plugin \"{plugin}\": the schedule \"{}\" never fires (no date matches it)",
            cron.as_str()
        );
    }
    println!(
        "{}: {} plugin(s) ok",
        cli.manifest.display(),
        manifest.plugins.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Refuses a plugin that keeps state in kv (a per-tenant lock, a sent
/// mark, the status board's copy) when the databases are the shared
/// Postgres but there is no Redis: its kv would be this command's own
/// memory, and a purge or digest the serving replicas run meanwhile would
/// not see its lock (the owner mailed twice). A shell without `REDIS_URL`
/// is the likely cause, and said so.
fn a_shared_kv_or_none(
    cli: &Cli,
    manifest: &crate::manifest::Manifest,
    plugin: &str,
) -> anyhow::Result<()> {
    let settings = Settings::from_env(cli.data_dir.clone())?;
    let keeps_kv = manifest.plugins.iter().any(|p| !p.grants.kv.is_empty());
    if keeps_kv && settings.postgres_master_url.is_some() && settings.redis_url.is_none() {
        anyhow::bail!(
            "plugin \"{plugin}\" keeps its locks and marks in kv, and with POSTGRES_MASTER_URL \
             set but no REDIS_URL they would be this command's own, unseen by the serving \
             replicas: set REDIS_URL as the servers have it"
        );
    }
    Ok(())
}
