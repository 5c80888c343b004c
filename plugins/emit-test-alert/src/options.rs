//! The command line: message, severity, output format, dry run.

use neo_ops_sdk::{Failure, Invocation, args::Args, reply};

pub const USAGE: &str = "usage: emit-test-alert [--message TEXT] [--severity info|warning|critical] \
                         [--json] [--dry-run]";
const DEFAULT_MESSAGE: &str = "Test alert";
const SEVERITIES: &[&str] = &["info", "warning", "critical"];
const VALUE_FLAGS: &[&str] = &["--message", "--severity", "--tenant"];
const KNOWN_FLAGS: &[&str] = &["--message", "--severity", "--json", "--dry-run", "--tenant"];

pub struct Options {
    pub message: String,
    pub severity: String,
    pub json: bool,
    pub dry_run: bool,
}

impl Options {
    pub fn parse(argv: &[String], inv: &Invocation) -> Result<Self, Failure> {
        let args = Args::new(argv);
        check_known(argv)?;
        let message = args.value("--message").unwrap_or(DEFAULT_MESSAGE).trim();
        if message.is_empty() {
            return Err(reply::fail(400, "--message must not be empty"));
        }
        Ok(Options {
            message: message.to_string(),
            severity: severity(&args)?,
            json: args.flag("--json"),
            // The host sets dry_run when --dry-run is on the command line.
            dry_run: inv.dry_run || args.flag("--dry-run"),
        })
    }
}

/// Refuses stray words and unknown flags, so a typo never pages anyone.
/// A value flag's value is skipped, so `--message "--x"` is a message.
fn check_known(argv: &[String]) -> Result<(), Failure> {
    let mut iter = argv.iter();
    while let Some(arg) = iter.next() {
        let name = arg.split('=').next().unwrap_or(arg);
        if !arg.starts_with("--") {
            return Err(reply::fail(
                400,
                format!("unexpected argument \"{arg}\"; {USAGE}"),
            ));
        }
        if !KNOWN_FLAGS.contains(&name) {
            return Err(reply::fail(400, format!("unknown flag \"{arg}\"; {USAGE}")));
        }
        if VALUE_FLAGS.contains(&arg.as_str()) {
            iter.next();
        }
    }
    Ok(())
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
