//! What a console request carries: the tenant, path ids, the idempotency key.

use neo_ops_sdk::serde_json::{self, Value as Json};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, reply};

/// Longest `Idempotency-Key` accepted (it becomes part of a kv key).
const MAX_KEY_LEN: usize = 128;

/// A query parameter's value, if present.
pub fn query<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    http.query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    http.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `tenant` the caller asked for: `?tenant=` (the host also passes it as
/// the invocation's tenant) or, when `body_too`, a JSON body `{"tenant": …}`.
/// Two different values are refused rather than guessed between.
pub fn tenant_param(
    inv: &Invocation,
    http: &HttpRequest,
    body_too: bool,
) -> Result<String, Failure> {
    let from_query = inv
        .tenant
        .as_deref()
        .or_else(|| query(http, "tenant"))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let from_body = if body_too {
        body_tenant(&http.body)?
    } else {
        None
    };
    match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => Err(reply::fail(
            400,
            format!("tenant \"{q}\" in the query and \"{b}\" in the body differ"),
        )),
        (Some(q), _) => Ok(q.to_string()),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(reply::fail(400, "tenant is required")),
    }
}

fn body_tenant(body: &[u8]) -> Result<Option<String>, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc: Json = serde_json::from_slice(body)
        .map_err(|e| reply::fail(400, format!("request body is not JSON: {e}")))?;
    let Json::Object(fields) = doc else {
        return Err(reply::fail(400, "request body must be a JSON object"));
    };
    match fields.get("tenant") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(reply::fail(400, format!("bad tenant {other} in the body"))),
    }
}

/// A positive integer path parameter such as `order_id`.
pub fn path_id(http: &HttpRequest, name: &str) -> Result<i64, Failure> {
    let raw = http
        .path_params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| reply::fail(500, format!("route has no {{{name}}} parameter")))?;
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| reply::fail(400, format!("{name} \"{raw}\" is not a positive integer")))
}

/// The `Idempotency-Key` header, if sent: 1 to 128 visible ASCII characters.
pub fn idempotency_key(http: &HttpRequest) -> Result<Option<&str>, Failure> {
    let Some(key) = header(http, "idempotency-key") else {
        return Ok(None);
    };
    let valid = (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(Some(key))
    } else {
        Err(reply::fail(
            400,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ))
    }
}
