//! `neo-ops run <plugin> [args…]` and `neo-ops check`.

use std::io::Write;
use std::process::ExitCode;

use super::{Cli, PreflightArgs, connect, load_manifest};
use crate::runtime::Runtime;
use crate::triggers;

/// Runs a plugin's command, or, for a check plugin, that one check.
pub async fn run(cli: &Cli, plugin: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let mut manifest = load_manifest(&cli.manifest)?;
    let Some(spec) = manifest.plugins.iter().find(|p| p.name == plugin) else {
        anyhow::bail!("no plugin named \"{plugin}\" in {}", cli.manifest.display());
    };
    if spec.check && !spec.command {
        // A check takes no arguments of its own: `--json` (and `--verbose`,
        // which the log filter reads) only.
        let usage = format!(
            "usage: neo-ops run {plugin} [--json] [--verbose] (runs this one preflight check)"
        );
        if args.iter().any(|a| a == "--help" || a == "-h") {
            println!("{usage}");
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(other) = args.iter().find(|a| *a != "--json" && *a != "--verbose") {
            anyhow::bail!("unknown argument \"{other}\" ({usage})");
        }
        let only = PreflightArgs {
            json: args.iter().any(|a| a == "--json"),
            only: Some(vec![plugin.to_string()]),
        };
        return super::preflight::preflight(cli, &only).await;
    }
    // Only the plugin being run is compiled and linked.
    manifest.plugins.retain(|p| p.name == plugin);
    let services = connect(cli).await?;
    let runtime = Runtime::load(&manifest, services.clone())?;
    let result = triggers::command::run(&runtime, plugin, args.to_vec()).await;
    services.db.close().await;
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out.body)?;
            if !out.body.ends_with(b"\n") && !out.body.is_empty() {
                stdout.write_all(b"\n")?;
            }
            Ok(if out.status >= 400 {
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
