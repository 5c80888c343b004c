//! The live tenants, as registered in the master database.

use crate::outcome::{describe, fail, skip};
use neo_ops_sdk::{CheckOutcome, Error, db};

/// Names of the tenants not soft-deleted, in name order.
pub fn live() -> Result<Vec<String>, Error> {
    let rows = db::query(
        "master",
        "SELECT name FROM tenants WHERE deleted_at IS NULL ORDER BY name",
        &[],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| r.text("name").map(str::to_string))
        .collect())
}

/// The live tenants, or the failed outcome a check returns when the master
/// database cannot list them.
pub fn live_or_fail(hint: &str) -> Result<Vec<String>, CheckOutcome> {
    live().map_err(|e| fail(format!("listing tenants: {}", describe(&e)), hint))
}

/// Like [`live_or_fail`] for a check about tenant databases only: with no
/// live tenant there is nothing to check, which is a skip, not a pass.
pub fn some_live_or_fail(hint: &str) -> Result<Vec<String>, CheckOutcome> {
    let names = live_or_fail(hint)?;
    if names.is_empty() {
        return Err(skip(
            "no live tenants yet: no tenant database to check",
            "runs once `neo-ops tenant create <name>` has made one",
        ));
    }
    Ok(names)
}

/// The db target of a tenant.
pub fn target(name: &str) -> String {
    format!("tenant:{name}")
}
