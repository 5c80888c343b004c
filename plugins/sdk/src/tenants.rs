//! The tenants registered in the master database (needs `db = ["master"]`).

use serde_json::{Value as Json, json};

use crate::db::{self, Value};
use crate::reply::fail;
use crate::rows::Row;
use crate::{Error, Failure};

/// A live (not soft-deleted) tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub display_name: String,
    pub plan: String,
    /// IANA zone of the tenant's business day.
    pub time_zone: String,
    pub owner_email: Option<String>,
    pub retention_days: i64,
}

impl Tenant {
    /// The db target of this tenant's own database.
    pub fn target(&self) -> String {
        target(&self.name)
    }

    /// As the spec shows a tenant: `{"id": "<id as text>", "name": …}`.
    pub fn json(&self) -> Json {
        json!({"id": self.id.to_string(), "name": self.name})
    }
}

/// The db target of tenant `name`.
pub fn target(name: &str) -> String {
    format!("tenant:{name}")
}

const LIVE: &str = "SELECT id, name, display_name, plan, time_zone, owner_email, \
                    pii_retention_days FROM tenants WHERE deleted_at IS NULL";

fn from_row(r: Row<'_>) -> Option<Tenant> {
    Some(Tenant {
        id: r.int("id")?,
        name: r.text("name")?.to_string(),
        display_name: r.text("display_name").unwrap_or_default().to_string(),
        plan: r.text("plan").unwrap_or_default().to_string(),
        time_zone: r.text("time_zone").unwrap_or("UTC").to_string(),
        owner_email: r
            .text("owner_email")
            .filter(|e| !e.trim().is_empty())
            .map(str::to_string),
        retention_days: r.int("pii_retention_days").unwrap_or(365),
    })
}

/// Every live tenant, by name.
pub fn live() -> Result<Vec<Tenant>, Error> {
    let rows = db::query("master", &format!("{LIVE} ORDER BY name"), &[])?;
    Ok(rows.iter().filter_map(from_row).collect())
}

/// A live tenant by name, or by numeric id (names start with a letter, so
/// the two never collide).
pub fn find(name_or_id: &str) -> Result<Option<Tenant>, Error> {
    let rows = match name_or_id.parse::<i64>() {
        Ok(id) => db::query("master", &format!("{LIVE} AND id = $1"), &[Value::Int(id)])?,
        Err(_) => db::query(
            "master",
            &format!("{LIVE} AND name = $1"),
            &[Value::from(name_or_id)],
        )?,
    };
    Ok(rows.iter().next().and_then(from_row))
}

/// [`find`], with the spec's exact `404 tenant not found` when there is none.
pub fn require(name_or_id: &str) -> Result<Tenant, Failure> {
    find(name_or_id)?.ok_or_else(|| fail(404, "tenant not found"))
}
