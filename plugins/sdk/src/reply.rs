//! Building outputs and failures in the shapes the spec uses.

use crate::{ErrorCode, Failure, Output};
use serde::Serialize;
use serde_json::{Value, json};

/// A JSON body with the given status: a `serde_json::Value` or any type that
/// serialises (a typed document skips building a map per request).
pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Output {
    Output {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(body).expect("a json document always serialises"),
    }
}

/// `{"ok": true, "data": …}` with status 200.
pub fn ok(data: Value) -> Output {
    json(200, &json!({"ok": true, "data": data}))
}

/// Plain text with the given status (for command output).
pub fn text(status: u16, body: impl Into<String>) -> Output {
    Output {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: body.into().into_bytes(),
    }
}

/// A failure the host turns into `{"ok": false, "error": {"code", "message"}}`.
pub fn fail(status: u16, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

/// `failed`'s envelope with `data` as well, as an answer with its status: a
/// run over many tenants that failed for some still shows what it did for
/// the others (`--json`), and fails.
pub fn failed_with_data(failed: &Failure, data: Value) -> Output {
    json(
        failed.status,
        &json!({
            "ok": false,
            "error": {"code": failed.status, "message": failed.message},
            "data": data,
        }),
    )
}

/// A queue job whose payload the plugin cannot use: 400 (so the queue
/// dead-letters it at once), quoting at most 200 characters of it.
pub fn bad_job_payload(queue: &str, payload: &str, expected: &str) -> Failure {
    let shown: String = payload.chars().take(200).collect();
    fail(
        400,
        format!("bad {queue} job payload \"{shown}\": expected {expected}"),
    )
}

/// The HTTP status a host error maps to when a plugin passes it on.
pub fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::Invalid => 400,
        ErrorCode::NotFound => 404,
        ErrorCode::Conflict => 409,
        ErrorCode::Unavailable => 503,
        ErrorCode::Denied | ErrorCode::Failed => 500,
    }
}

impl From<crate::Error> for Failure {
    fn from(err: crate::Error) -> Self {
        fail(status_of(err.code), err.message)
    }
}

impl ErrorCode {
    /// The WIT name of the code, e.g. `"not-found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Denied => "denied",
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Failed => "failed",
        }
    }
}

/// A public document other sites and monitors read: an `ETag` (so a
/// client's `If-None-Match` gets `304` and no body), `Cache-Control:
/// no-cache` (revalidate every time) and `Access-Control-Allow-Origin: *`
/// (a status widget on another origin may read it, and its tag, to send
/// back in `If-None-Match`).
///
/// The tag covers the headers `out` already has as well as its body: a
/// cache merges a `304`'s headers into what it keeps and never drops one
/// the `304` lacks, so the same body under other headers (a board kept
/// through an outage, `x-status-as-of`) must be another representation.
pub fn public_document(req: &crate::HttpRequest, mut out: Output) -> Output {
    let headers = out
        .headers
        .iter()
        .flat_map(|(k, v)| [k.as_bytes(), b"\0", v.as_bytes(), b"\0"]);
    let hash = headers.fold(fnv1a(FNV_OFFSET, &out.body), fnv1a);
    let tag = format!("\"{hash:016x}\"");
    out.headers.push(("etag".into(), tag.clone()));
    out.headers
        .push(("cache-control".into(), "no-cache".into()));
    out.headers
        .push(("access-control-allow-origin".into(), "*".into()));
    let exposed = out
        .headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("access-control-expose-headers"));
    match exposed {
        Some((_, names)) => names.push_str(", etag"),
        None => out
            .headers
            .push(("access-control-expose-headers".into(), "etag".into())),
    }
    // Every `If-None-Match` line: a proxy may send the list as several.
    let matches = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("if-none-match"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*");
    if matches {
        out.status = 304;
        out.body.clear();
    }
    out
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, from `hash` on: a cheap, stable content hash for entity tags.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
