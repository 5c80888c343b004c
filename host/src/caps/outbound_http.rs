//! `neo:ops/outbound-http`: requests only to allow-listed (scheme, host, port),
//! checked before connecting; no redirects, bounded time and body size.

use std::time::Duration;

use crate::backends::public_dns;
use crate::bindings::neo::ops::outbound_http as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::state::StoreState;
use crate::manifest::Endpoint;

use crate::services::MAX_TIMEOUT;
const MAX_RESPONSE: usize = 10 << 20;
/// Most headers a request may carry.
const MAX_HEADERS: usize = 100;

/// Headers the host's client writes from the request itself: `Host` from
/// the granted URL (a plugin's own would reach another virtual host behind
/// the granted origin), and the body's framing and the connection's (a
/// `Content-Length` the body does not have leaves a pooled connection
/// waiting for bytes that the next request then supplies).
const HOST_SET_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
];

/// How a URL is on the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// An exact origin the manifest names: any address, as the operator chose.
    Origin,
    /// Only through a `scheme://*` grant: public addresses only.
    AnyPublicHost,
}

/// Whether `url` is on the allow-list: same scheme, host and port, or the
/// scheme of a wildcard grant.
pub fn is_allowed(allow: &[Endpoint], url: &reqwest::Url) -> Option<Allowed> {
    let host = url.host_str()?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = url.port_or_known_default()?;
    let same_scheme = |e: &&Endpoint| e.scheme == url.scheme();
    if allow
        .iter()
        .filter(same_scheme)
        .any(|e| !e.is_any_host() && e.host == host && e.port == port)
    {
        Some(Allowed::Origin)
    } else if allow.iter().filter(same_scheme).any(Endpoint::is_any_host) {
        Some(Allowed::AnyPublicHost)
    } else {
        None
    }
}

impl wit::Host for StoreState {
    async fn send(&mut self, request: wit::Request) -> Result<wit::Response, WitError> {
        let plugin = &self.call.plugin;
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| WitError::invalid(format!("bad url \"{}\": {e}", request.url)))?;
        let denied = |why: String| {
            tracing::warn!(plugin = %plugin.name, host = ?url.host_str(), why, "outbound http denied");
            WitError::denied(format!(
                "plugin \"{}\" may not connect to {}://{}:{}{why}",
                plugin.name,
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0)
            ))
        };
        let asked = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(MAX_TIMEOUT)
            .min(MAX_TIMEOUT);
        // No later than the invocation's I/O deadline: a receiver that never
        // answers fails the request while the plugin has time to record it.
        let now = tokio::time::Instant::now();
        let deadline = (now + asked).min(self.call.io_deadline());
        let timeout = deadline.saturating_duration_since(now);
        let client = match is_allowed(&plugin.grants.http, &url) {
            None => return Err(denied(String::new())),
            Some(Allowed::Origin) => &self.call.services.http,
            Some(Allowed::AnyPublicHost) => {
                let host = url.host_str().unwrap_or("");
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = url.port_or_known_default().unwrap_or(0);
                // The check's lookup counts against the request's time too:
                // a nameserver that never answers must not hold the call.
                match tokio::time::timeout(timeout, public_dns::resolve_public(host, port)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(why)) => return Err(denied(format!(": {why}"))),
                    Err(_) => {
                        return Err(WitError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "resolving \"{host}\" took longer than {} ms",
                                timeout.as_millis()
                            ),
                        ));
                    }
                }
                &self.call.services.public_http
            }
        };
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| WitError::invalid(format!("bad method \"{}\"", request.method)))?;
        // What the lookup above left of the request's time.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // A request's header map panics past some 24,000 names.
        if request.headers.len() > MAX_HEADERS {
            return Err(WitError::invalid(format!(
                "{} headers exceed {MAX_HEADERS}",
                request.headers.len()
            )));
        }
        let mut req = client.request(method, url.clone()).timeout(left);
        for (k, v) in &request.headers {
            if let Some(refused) = HOST_SET_HEADERS.iter().find(|h| k.eq_ignore_ascii_case(h)) {
                return Err(WitError::invalid(format!(
                    "header \"{refused}\" is set by the host, not by a plugin"
                )));
            }
            req = req.header(k, v);
        }
        // Name only the origin: webhook paths often carry secrets.
        let origin = url.origin().ascii_serialization();
        let unavailable = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                format!(
                    "request to {origin} timed out after {} ms",
                    timeout.as_millis()
                )
            } else {
                format!("request to {origin} failed: {}", e.without_url())
            };
            WitError::new(ErrorCode::Unavailable, why)
        };
        let mut resp = req
            .body(request.body.clone())
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(WitError::new(
                    ErrorCode::Failed,
                    format!("response from {origin} exceeds {MAX_RESPONSE} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(wit::Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_endpoint;

    #[test]
    fn allow_list_matches_scheme_host_and_port() {
        let allow = vec![
            parse_endpoint("http://127.0.0.1:9000").unwrap(),
            parse_endpoint("https://hooks.slack.com").unwrap(),
            parse_endpoint("http://[::1]:8081").unwrap(),
        ];
        let ok = |u: &str| is_allowed(&allow, &reqwest::Url::parse(u).unwrap()).is_some();
        assert!(ok("http://127.0.0.1:9000/x?y=1"));
        assert!(ok("https://hooks.slack.com/services/T/B/X"));
        assert!(ok("http://[::1]:8081/"));
        assert!(!ok("http://127.0.0.1:9001/"));
        assert!(!ok("https://127.0.0.1:9000/"));
        assert!(!ok("http://hooks.slack.com/"));
        assert!(!ok("https://hooks.slack.com.evil.example/"));
        assert!(!ok("http://user@127.0.0.2:9000/"));
    }

    /// A grant matches the request URLs that name its host in another
    /// spelling: hosts are compared as the URL parser writes them.
    #[test]
    fn a_grant_is_compared_as_urls_spell_it() {
        let allow = vec![
            parse_endpoint("http://127.1:9000").unwrap(),
            parse_endpoint("https://Bücher.example").unwrap(),
            parse_endpoint("http://[0:0::1]:8081").unwrap(),
            parse_endpoint("https://hooks.example.com:443").unwrap(),
        ];
        let ok = |u: &str| is_allowed(&allow, &reqwest::Url::parse(u).unwrap()).is_some();
        assert!(ok("http://127.0.0.1:9000/"));
        assert!(ok("https://bücher.example/x"));
        assert!(ok("https://xn--bcher-kva.example/x"));
        assert!(ok("http://[::1]:8081/"));
        assert!(ok("https://hooks.example.com/"));
        assert!(!ok("http://127.0.0.2:9000/"));
        assert!(parse_endpoint("http://exa mple.com").is_err());
    }

    #[test]
    fn a_wildcard_grant_allows_any_host_of_its_scheme_only() {
        let allow = vec![parse_endpoint("https://*").unwrap()];
        let ok = |u: &str| is_allowed(&allow, &reqwest::Url::parse(u).unwrap()).is_some();
        assert!(ok("https://hooks.example.com/x"));
        assert!(ok("https://10.0.0.1:8443/"));
        assert!(!ok("http://hooks.example.com/x"));
        assert!(parse_endpoint("https://*.example.com").is_err());
        assert!(parse_endpoint("ftp://*").is_err());
    }
}
