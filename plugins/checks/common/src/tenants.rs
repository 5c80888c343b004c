//! The live tenants, as registered in the master database.

use neo_ops_sdk::{Error, db};

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

/// The db target of a tenant.
pub fn target(name: &str) -> String {
    format!("tenant:{name}")
}
