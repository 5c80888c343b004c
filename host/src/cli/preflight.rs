//! `neo-ops preflight [--json] [--only NAME[,NAME]]` (also `neo-ops run
//! preflight …`): the checklist `GET /api/admin/preflight` serves, printed;
//! exits 1 when a required check fails.

use clap::Parser;
use std::process::ExitCode;

use super::{Cli, PreflightArgs, admin_settings, bad_argument, load_manifest};
use crate::runtime::Runtime;
use crate::services::Services;
use crate::triggers;

/// `run preflight ARGS…`: the same flags, parsed the same way.
pub async fn from_run_args(cli: &Cli, args: &[String]) -> anyhow::Result<ExitCode> {
    #[derive(Parser)]
    #[command(name = "neo-ops run preflight")]
    struct Flags {
        #[command(flatten)]
        args: PreflightArgs,
    }
    let argv = std::iter::once("preflight".to_string()).chain(args.iter().cloned());
    match Flags::try_parse_from(argv) {
        Ok(flags) => preflight(cli, &flags.args).await,
        // As `neo-ops preflight` with the same flags answers.
        Err(e) => Ok(super::usage_error(&e, super::json_in(args))),
    }
}

pub async fn preflight(cli: &Cli, args: &PreflightArgs) -> anyhow::Result<ExitCode> {
    let mut manifest = load_manifest(&cli.manifest)?;
    let checks: Vec<&str> = manifest
        .plugins
        .iter()
        .filter(|p| p.check)
        .map(|p| p.name.as_str())
        .collect();
    for name in args.only.iter().flatten() {
        if !checks.contains(&name.as_str()) {
            return Err(bad_argument(format!(
                "\"{name}\" is not a check in {} (checks: {})",
                cli.manifest.display(),
                checks.join(", ")
            )));
        }
    }
    // Only the checks asked for are compiled and linked.
    manifest
        .plugins
        .retain(|p| p.check && args.only.as_ref().is_none_or(|only| only.contains(&p.name)));
    // A Postgres or Redis that cannot be reached is what a preflight is
    // for: their checks fail and say so, the rest still run.
    let (settings, fresh) = admin_settings(cli)?;
    let services = Services::connect_to_check(settings).await?;
    if fresh {
        tracing::warn!(
            "no POSTGRES_MASTER_URL and no embedded database in \"{}\" yet (serve or migrate makes it): the checks that read the master report it",
            cli.data_dir.display()
        );
    }
    let runtime = Runtime::load(&manifest, services.clone())?;
    let names = crate::preflight::select(&runtime, None).unwrap_or_default();
    let progress = crate::progress::Progress::new("preflight", true);
    let report =
        crate::preflight::run(&runtime, names, &triggers::new_request_id(), Some(progress)).await;
    services.db.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.envelope())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
