//! `search`: a table by code and an order by id, in one tenant's database.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, reply};

use neo_ops_sdk::tenants::Tenant;

/// What was asked for; an empty parameter counts as not asked.
pub struct Query {
    table: Option<String>,
    order: Option<i64>,
}

impl Query {
    pub fn parse(http: &HttpRequest) -> Result<Self, Failure> {
        let param = |name| http.query(name).map(str::trim).filter(|v| !v.is_empty());
        let order = param("order")
            .map(|raw| {
                raw.parse::<i64>()
                    .map_err(|_| reply::fail(400, format!("order \"{raw}\" is not an order id")))
            })
            .transpose()?;
        Ok(Self {
            table: param("table").map(str::to_string),
            order,
        })
    }
}

pub struct Found {
    /// The response's `data`.
    pub data: Json,
    /// For the audit record.
    pub details: Json,
}

pub fn run(tenant: &Tenant, q: &Query) -> Result<Found, Failure> {
    let target = tenant.target();
    let table = match &q.table {
        None => Json::Null,
        Some(code) => db::query(
            &target,
            "SELECT id, code FROM dining_tables WHERE code = $1 AND deleted_at IS NULL",
            &[Value::from(code.as_str())],
        )?
        .iter()
        .next()
        .map_or(
            Json::Null,
            |r| json!({"id": r.int("id").map(|i| i.to_string()), "code": r.text("code")}),
        ),
    };
    let order = match q.order {
        None => Json::Null,
        Some(id) => db::query(
            &target,
            "SELECT id, status FROM orders WHERE id = $1 AND deleted_at IS NULL",
            &[Value::Int(id)],
        )?
        .iter()
        .next()
        .map_or(
            Json::Null,
            |r| json!({"id": r.int("id"), "status": r.text("status")}),
        ),
    };
    let details = json!({
        "table": q.table,
        "order": q.order,
        "table_found": !table.is_null(),
        "order_found": !order.is_null(),
    });
    Ok(Found {
        data: json!({"tenant": tenant.json(), "table": table, "order": order}),
        details,
    })
}
