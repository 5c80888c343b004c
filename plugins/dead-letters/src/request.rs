//! Reading the admin request: `type`, `limit` and the replay body.

use neo_ops_sdk::serde_json::{self, Value as Json};
use neo_ops_sdk::{Failure, HttpRequest, reply};

/// The queues this plugin administers; `type` must name one.
pub const TYPES: [&str; 2] = ["webhook", "export"];
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

fn param<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    http.query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `type` query parameter, which is the queue's name.
pub fn queue_type(http: &HttpRequest) -> Result<&'static str, Failure> {
    let given = param(http, "type").unwrap_or_default();
    TYPES.into_iter().find(|t| *t == given).ok_or_else(|| {
        reply::fail(
            400,
            format!("bad type \"{given}\": expected webhook or export"),
        )
    })
}

/// `limit`, 1..=1000, default 100.
pub fn limit(http: &HttpRequest) -> Result<u32, Failure> {
    match param(http, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                reply::fail(400, format!("bad limit \"{v}\": expected 1 to {MAX_LIMIT}"))
            }),
    }
}

/// The `id` of a replay body `{"id": "..."}`.
pub fn replay_id(http: &HttpRequest) -> Result<String, Failure> {
    let body: Option<Json> = serde_json::from_slice(&http.body).ok();
    body.as_ref()
        .and_then(|b| b.get("id"))
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| reply::fail(400, "bad body: expected {\"id\": \"<dead letter id>\"}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &[(&str, &str)], body: &str) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: "/api/admin/dlq/replay".into(),
            path_params: vec![],
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
            remote_addr: None,
        }
    }

    #[test]
    fn type_names_a_queue() {
        assert_eq!(
            queue_type(&request(&[("type", "export")], "")).unwrap(),
            "export"
        );
        let bad = queue_type(&request(&[("type", "mail")], "")).unwrap_err();
        assert_eq!(
            (bad.status, bad.message.as_str()),
            (400, "bad type \"mail\": expected webhook or export")
        );
        assert_eq!(queue_type(&request(&[], "")).unwrap_err().status, 400);
    }

    #[test]
    fn limit_is_bounded() {
        assert_eq!(limit(&request(&[], "")).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(&request(&[("limit", "5")], "")).unwrap(), 5);
        for bad in ["0", "1001", "-1", "x"] {
            assert_eq!(
                limit(&request(&[("limit", bad)], "")).unwrap_err().status,
                400
            );
        }
    }

    #[test]
    fn replay_body_needs_an_id() {
        assert_eq!(
            replay_id(&request(&[], r#"{"id":" abc "}"#)).unwrap(),
            "abc"
        );
        for bad in ["", "abc", r#"{"id":7}"#, r#"{"id":""}"#, "[]"] {
            assert_eq!(
                replay_id(&request(&[], bad)).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }
}
