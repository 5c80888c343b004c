//! The tenant a console call is about, from the master database.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, reply};

pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub display_name: String,
}

impl Tenant {
    /// The db target of this tenant's own database.
    pub fn db(&self) -> String {
        format!("tenant:{}", self.name)
    }

    /// As the spec shows it: the id as a string.
    pub fn json(&self) -> Json {
        json!({"id": self.id.to_string(), "name": self.name})
    }
}

const LIVE_TENANT: &str =
    "SELECT id, name, display_name FROM tenants WHERE deleted_at IS NULL AND ";

/// Looks a tenant up by numeric id or by name (names start with a letter,
/// so the two never collide). Unknown: exactly 404 "tenant not found".
pub fn resolve(param: &str) -> Result<Tenant, Failure> {
    let rows = match param.parse::<i64>() {
        Ok(id) => db::query(
            "master",
            &format!("{LIVE_TENANT}id = $1"),
            &[Value::Int(id)],
        )?,
        Err(_) => db::query(
            "master",
            &format!("{LIVE_TENANT}name = $1"),
            &[Value::from(param)],
        )?,
    };
    rows.iter()
        .next()
        .and_then(|r| {
            Some(Tenant {
                id: r.int("id")?,
                name: r.text("name")?.to_string(),
                display_name: r.text("display_name").unwrap_or_default().to_string(),
            })
        })
        .ok_or_else(|| reply::fail(404, "tenant not found"))
}
