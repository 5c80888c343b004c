//! The command line: message, severity, output format, dry run.

use neo_ops_sdk::{Failure, Invocation, args::Args, reply};

pub const USAGE: &str = "usage: emit-test-alert [--message TEXT] [--severity info|warning|critical] \
                         [--json] [--dry-run]";
const DEFAULT_MESSAGE: &str = "Test alert";
const SEVERITIES: &[&str] = &["info", "warning", "critical"];

pub struct Options {
    pub message: String,
    pub severity: String,
    pub json: bool,
    pub dry_run: bool,
}

impl Options {
    pub fn parse(args: &Args, inv: &Invocation) -> Result<Self, Failure> {
        // A typo never pages anyone.
        args.only_flags(&["--message", "--severity"], &["--json"], USAGE)?;
        let message = args.value("--message").unwrap_or(DEFAULT_MESSAGE).trim();
        if message.is_empty() {
            return Err(reply::fail(400, "--message must not be empty"));
        }
        Ok(Options {
            message: message.to_string(),
            severity: severity(args)?,
            json: args.flag("--json"),
            dry_run: args.dry_run(inv),
        })
    }
}

fn severity(args: &Args) -> Result<String, Failure> {
    let raw = args.value("--severity").unwrap_or("info");
    if SEVERITIES.contains(&raw) {
        Ok(raw.to_string())
    } else {
        Err(reply::fail(
            400,
            format!("unknown severity \"{raw}\" (use info, warning or critical)"),
        ))
    }
}
