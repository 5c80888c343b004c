//! Plain GETs to a URL the operator configured, with only its scheme, host,
//! port and path ever shown (user info and query strings may be credentials).

use crate::outcome::fail;
use neo_ops_sdk::{CheckOutcome, ErrorCode, outbound_http};

/// Short enough that a check stays well inside its own timeout.
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;

/// The check's `request_timeout` (a duration, default 5s) in milliseconds.
pub fn timeout_ms() -> Result<u32, String> {
    let default = std::time::Duration::from_millis(u64::from(DEFAULT_TIMEOUT_MS));
    let timeout =
        neo_ops_sdk::config::duration("request_timeout", default).map_err(|e| e.to_string())?;
    Ok(u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1))
}

/// GETs `url`; the error is ready for a check's detail.
pub fn get(url: &str, timeout_ms: u32) -> Result<outbound_http::Response, String> {
    fetch(url, timeout_ms).map_err(|(_, detail)| detail)
}

/// GETs `url` and wants a 2xx answer; otherwise the failed outcome the check
/// returns: with `setup_hint` when the URL is malformed or not on the check's
/// allow-list (its configuration is wrong), with `down_hint` when the service
/// did not answer or answered an error.
pub fn get_ok(
    url: &str,
    timeout_ms: u32,
    setup_hint: &str,
    down_hint: &str,
) -> Result<outbound_http::Response, CheckOutcome> {
    let resp = fetch(url, timeout_ms).map_err(|(misconfigured, detail)| {
        fail(detail, if misconfigured { setup_hint } else { down_hint })
    })?;
    if !success(&resp) {
        return Err(fail(
            format!(
                "GET {} answered {}: {}",
                redact(url),
                resp.status,
                excerpt(&resp.body)
            ),
            down_hint,
        ));
    }
    Ok(resp)
}

/// The GET itself; the error says whether the check's configuration is at
/// fault (a bad or not allow-listed URL) and what happened.
fn fetch(url: &str, timeout_ms: u32) -> Result<outbound_http::Response, (bool, String)> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err((
            true,
            format!("bad url \"{}\" (expected http:// or https://)", redact(url)),
        ));
    }
    outbound_http::send(&outbound_http::Request {
        method: "GET".into(),
        url: url.to_string(),
        headers: vec![("accept".into(), "application/json, text/plain".into())],
        body: vec![],
        timeout_ms: Some(timeout_ms),
    })
    .map_err(|e| {
        let shown = redact(url);
        match e.code {
            ErrorCode::Denied => (
                true,
                format!("{shown} is not on this check's http allow-list"),
            ),
            // A URL the host could not parse: the configuration again.
            ErrorCode::Invalid => (
                true,
                format!("GET {shown}: {}", e.message.replace(url, &shown)),
            ),
            _ => (
                false,
                format!("GET {shown} failed: {}", e.message.replace(url, &shown)),
            ),
        }
    })
}

/// Whether the status is 2xx.
pub fn success(resp: &outbound_http::Response) -> bool {
    (200..300).contains(&resp.status)
}

/// The start of a body, on one line, for a detail.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = line.chars().take(120).collect();
    if line.chars().count() > 120 {
        out.push('…');
    }
    out
}

/// `scheme://host:port/path`: no user info, query or fragment. In a URL
/// whose authority does not end in a host and numeric port (too malformed to
/// parse: a password with an unencoded `/` or `?`), everything up to the last
/// `@` counts as user info, since that is where the secret is.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split('#').next().unwrap_or("");
    let authority = rest.split(['/', '\\', '?']).next().unwrap_or("");
    let rest = if host_and_port(authority.rsplit('@').next().unwrap_or("")) {
        authority.rfind('@').map_or(rest, |at| &rest[at + 1..])
    } else {
        rest.rsplit('@').next().unwrap_or(rest)
    };
    let rest = rest.split('?').next().unwrap_or("");
    let (host, path) = rest.split_at(rest.find(['/', '\\']).unwrap_or(rest.len()));
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// Whether `s` is a host with at most a numeric port (`[v6]:port` too).
fn host_and_port(s: &str) -> bool {
    let port = match s.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, after)) => after.strip_prefix(':').or(after.is_empty().then_some("")),
            None => None,
        },
        None => Some(s.split_once(':').map_or("", |(_, p)| p)),
    };
    port.is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The host of a URL, lowercase, without port or brackets; `None` when absent.
/// The authority ends where a client ends it: at `/`, `\\`, `?` or `#`.
pub fn host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '\\', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_origin_and_path_only() {
        assert_eq!(
            redact("https://user:pw@q.example:8443/v1/quotas?token=s3cret#x"),
            "https://q.example:8443/v1/quotas"
        );
        assert_eq!(redact("http://127.0.0.1:9/"), "http://127.0.0.1:9/");
        // Too malformed to parse: the password after its unencoded `/` or
        // `?` stays hidden.
        assert_eq!(
            redact("https://svc:p/ss@quotas.internal/v1"),
            "https://quotas.internal/v1"
        );
        assert_eq!(redact("https://u:pa?ss@host/x"), "https://host/x");
        assert_eq!(redact("https://u:p\\s@host/x"), "https://host/x");
        // Well formed: an `@` in the path or query is not user info.
        assert_eq!(
            redact("https://u:pw@[::1]:9093/a@b?to=x@y"),
            "https://[::1]:9093/a@b"
        );
        assert_eq!(redact("http://am:9093/?to=x@y"), "http://am:9093/");
    }

    #[test]
    fn hosts_come_without_port_or_user() {
        assert_eq!(
            host("https://a:b@Hooks.Example:443/x").as_deref(),
            Some("hooks.example")
        );
        assert_eq!(host("http://[::1]:8080/").as_deref(), Some("::1"));
        assert_eq!(host("http://127.0.0.1/").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("not a url"), None);
        // Clients end the authority at a backslash: this is evil.com.
        assert_eq!(
            host("http://evil.com\\@127.0.0.1/").as_deref(),
            Some("evil.com")
        );
        assert_eq!(host("https:///path"), None);
    }
}
