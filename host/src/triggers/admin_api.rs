//! Host routes the web console reads besides the plugins' own: whose token
//! this is (`GET /api/admin/whoami`), and the latest audit records with the
//! hash chain's verification (`GET /api/admin/audit?limit=N`). Both need
//! the `admin` role, checked like every other route.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use std::collections::HashMap;

use super::http::{AppState, authorize_admin_read, error_envelope, private};
use super::request_id::request_id;
use crate::backends::db::Value;

/// Records listed at most (and by default).
const MAX_RECORDS: i64 = 200;
const LATEST: &str = "SELECT id, at, actor, action, target, tenant, request_id, plugin \
                      FROM audit_log ORDER BY id DESC LIMIT $1";

pub async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = request_id(&headers);
    match authorize_admin_read(&state.runtime, &headers, &request_id).await {
        Ok(Some(p)) => private(
            axum::Json(json!({"ok": true, "data": {"name": p.name, "role": p.role}}))
                .into_response(),
        ),
        Ok(None) => error_envelope(403, "forbidden"),
        Err(denied) => denied,
    }
}

pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let request_id = request_id(&headers);
    if let Err(denied) = authorize_admin_read(&state.runtime, &headers, &request_id).await {
        return denied;
    }
    let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
        None => MAX_RECORDS,
        Some(Ok(n)) if (1..=MAX_RECORDS).contains(&n) => n,
        Some(_) => {
            let bad = query.get("limit").map(String::as_str).unwrap_or_default();
            return error_envelope(
                400,
                &format!("limit \"{bad}\" is not a number from 1 to {MAX_RECORDS}"),
            );
        }
    };
    let services = &state.runtime.services;
    let master = services.db.master();
    let params = [Value::Int(limit)];
    let (rows, chain) = tokio::join!(
        master.query(LATEST, &params),
        services.audit_checked.verify(master)
    );
    let (rows, chain) = match (rows, chain) {
        (Ok(rows), Ok(chain)) => (rows, chain),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, request_id, "reading the audit log failed");
            return error_envelope(503, "the audit log could not be read");
        }
    };
    let records: Vec<Json> = rows
        .rows
        .iter()
        .map(|row| {
            let mut record = serde_json::Map::new();
            for (column, value) in rows.columns.iter().zip(row) {
                record.insert(column.clone(), to_json(value));
            }
            Json::Object(record)
        })
        .collect();
    let (broken_at, reason) = match &chain.broken_at {
        Some((id, why)) => (json!(id), json!(why)),
        None => (Json::Null, Json::Null),
    };
    private(
        axum::Json(json!({"ok": true, "data": {
            "records": records,
            "chain": {"ok": chain.broken_at.is_none(), "checked": chain.records,
                      "broken_at": broken_at, "reason": reason},
        }}))
        .into_response(),
    )
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int(i) => json!(i),
        Value::Timestamp(micros) => chrono::DateTime::from_timestamp_micros(*micros)
            .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
            .unwrap_or(Json::Null),
        Value::Text(s) | Value::Json(s) => json!(s),
        other => json!(format!("{other:?}")),
    }
}
