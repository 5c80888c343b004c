//! The command line: which tenants, batch size, dry run, output format.

use neo_ops_sdk::{Failure, Invocation, args::Args, reply};

pub const USAGE: &str =
    "usage: purge --tenant NAME | --all-tenants [--batch-size N] [--dry-run] [--json]";
const DEFAULT_BATCH: i64 = 1000;
/// Keeps one batch's statement and result set small for the host and guest.
pub const MAX_BATCH: i64 = 10_000;

pub enum Scope {
    One(String),
    All,
}

pub struct Options {
    pub scope: Scope,
    pub batch_size: i64,
    pub dry_run: bool,
    pub json: bool,
}

impl Options {
    pub fn parse(args: &Args, inv: &Invocation) -> Result<Self, Failure> {
        // A typo never runs a real purge.
        args.only_flags(
            &["--tenant", "--batch-size"],
            &["--all-tenants", "--json"],
            USAGE,
        )?;
        let tenant = args.value("--tenant").map(str::to_string);
        let tenant = tenant.or_else(|| inv.tenant.clone());
        let scope = match (tenant, args.flag("--all-tenants")) {
            (Some(name), false) if !name.is_empty() => Scope::One(name),
            (None, true) => Scope::All,
            _ => return Err(reply::fail(400, USAGE)),
        };
        Ok(Options {
            scope,
            batch_size: batch_size(args)?,
            dry_run: args.dry_run(inv),
            json: args.flag("--json"),
        })
    }
}

fn batch_size(args: &Args) -> Result<i64, Failure> {
    let Some(raw) = args.value("--batch-size") else {
        return Ok(DEFAULT_BATCH);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(n),
        _ => Err(reply::fail(
            400,
            format!("bad --batch-size \"{raw}\" (expected 1 to {MAX_BATCH})"),
        )),
    }
}
