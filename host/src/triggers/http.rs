//! HTTP trigger: one axum route per manifest route. The host authenticates
//! and checks the route's role before the plugin runs; plugin failures become
//! the spec's `{"ok": false, "error": {"code", "message"}}` envelope.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::manifest::Role;
use crate::runtime::{HttpRequest, Invocation, InvokeError, Principal, Runtime, Trigger};
use crate::{auth, preflight};

/// The policy every HTML response carries. Reports go to `/csp/report`:
/// `report-uri` for browsers that POST `application/csp-report`, `report-to`
/// (with [`REPORTING_ENDPOINTS`]) for those that POST `application/reports+json`.
pub const CSP_REPORT_ONLY: &str =
    "default-src 'self'; report-uri /csp/report; report-to csp-endpoint";
/// Names the `report-to` group of [`CSP_REPORT_ONLY`].
pub const REPORTING_ENDPOINTS: &str = "csp-endpoint=\"/csp/report\"";

/// `{"ok": false, "error": {"code": N, "message": "..."}}` with status N.
pub fn error_envelope(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body =
        serde_json::json!({"ok": false, "error": {"code": code.as_u16(), "message": message}});
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub fn forbidden() -> Response {
    error_envelope(403, "forbidden")
}

#[derive(Clone)]
struct RouteTarget {
    plugin: String,
    role: Option<Role>,
}

#[derive(Clone)]
struct AppState {
    runtime: Arc<Runtime>,
}

/// Builds the router: host endpoints plus every manifest route.
pub fn router(runtime: Arc<Runtime>) -> Router {
    let mut by_path: BTreeMap<String, Vec<(Method, RouteTarget)>> = BTreeMap::new();
    for p in runtime.plugins() {
        for r in &p.manifest.routes {
            let method =
                Method::from_bytes(r.method.as_bytes()).expect("validated by the manifest");
            by_path.entry(r.path.clone()).or_default().push((
                method,
                RouteTarget {
                    plugin: p.manifest.name.clone(),
                    role: r.role,
                },
            ));
        }
    }
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(preflight::ROUTE, get(preflight_checklist));
    for (path, methods) in by_path {
        let mut mr: MethodRouter<AppState> = MethodRouter::new();
        for (method, target) in methods {
            let filter = MethodFilter::try_from(method).expect("standard method");
            mr = mr.merge(on(
                filter,
                move |state: State<AppState>,
                      params: Path<HashMap<String, String>>,
                      query: RawQuery,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      extensions: Extensions,
                      body: Result<Bytes, BytesRejection>| {
                    let target = target.clone();
                    let socket = extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|ConnectInfo(addr)| addr.ip());
                    async move {
                        let trusted = &state.runtime.services.settings.trusted_proxies;
                        let remote_addr =
                            client_addr(socket, &headers, trusted).map(|ip| ip.to_string());
                        // Oversized or unreadable bodies answer in the envelope too.
                        let body = match body {
                            Ok(body) => body,
                            Err(rejection) => return body_rejected(rejection),
                        };
                        let request = RawRequest {
                            method,
                            uri,
                            headers,
                            body,
                            remote_addr,
                        };
                        dispatch(state, target, params, query, request).await
                    }
                },
            ));
        }
        router = router.route(&path, mr);
    }
    router
        .fallback(|| async { error_envelope(404, "not found") })
        .with_state(AppState { runtime })
}

async fn healthz(State(state): State<AppState>) -> Response {
    axum::Json(state.runtime.services.health()).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ok, body) = state.runtime.services.ready().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn preflight_checklist(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = request_id(&headers);
    if let Err(denied) = authorize(&state.runtime, &headers, Some(Role::Admin), &request_id).await {
        return denied;
    }
    let report = preflight::run(&state.runtime, &request_id).await;
    let status = if report.failed() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(report.envelope())).into_response()
}

/// The caller's principal when the route needs a role; the exact 403
/// envelope when the token is missing, unknown, revoked or of a lower role.
async fn authorize(
    runtime: &Runtime,
    headers: &HeaderMap,
    required: Option<Role>,
    request_id: &str,
) -> Result<Option<Principal>, Response> {
    let Some(required) = required else {
        return Ok(None);
    };
    let Some(token) = bearer(headers) else {
        return Err(forbidden());
    };
    match auth::authenticate(runtime.services.db.master(), token).await {
        Ok(Some(p)) if p.role >= required => Ok(Some(Principal {
            name: p.name,
            role: p.role.as_str().to_string(),
        })),
        Ok(_) => Err(forbidden()),
        Err(e) => {
            tracing::error!(error = %e, request_id, "token lookup failed");
            Err(error_envelope(503, "authentication unavailable"))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .unwrap_or_else(super::new_request_id)
}

/// The client's address: the socket's peer, or, when that peer is a trusted
/// proxy, the nearest `X-Forwarded-For` hop that is not one (a client can
/// prepend anything to the header, so it is read from the right).
pub fn client_addr(
    socket: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = socket?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    Some(
        hops.into_iter()
            .rev()
            .find(|hop| !trusted.contains(hop))
            .unwrap_or(peer),
    )
}

fn body_rejected(rejection: BytesRejection) -> Response {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body too large"
    } else {
        "unreadable request body"
    };
    error_envelope(status.as_u16(), message)
}

/// The parts of a request a plugin may see.
struct RawRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    remote_addr: Option<String>,
}

async fn dispatch(
    State(state): State<AppState>,
    target: RouteTarget,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw_query): RawQuery,
    request: RawRequest,
) -> Response {
    let RawRequest {
        method,
        uri,
        headers,
        body,
        remote_addr,
    } = request;
    let runtime = &state.runtime;
    let request_id = request_id(&headers);
    let principal = match authorize(runtime, &headers, target.role, &request_id).await {
        Ok(p) => p,
        Err(denied) => return denied,
    };
    let query: Vec<(String, String)> = raw_query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let tenant = params.get("tenant").cloned().or_else(|| {
        query
            .iter()
            .find(|(k, _)| k == "tenant")
            .map(|(_, v)| v.clone())
    });
    let dry_run = query
        .iter()
        .any(|(k, v)| k == "dry_run" && (v == "1" || v == "true"));
    let header_list = headers
        .iter()
        .filter(|(k, _)| *k != "authorization" && *k != "cookie")
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let mut path_params: Vec<(String, String)> = params.into_iter().collect();
    path_params.sort();
    let inv = Invocation {
        trigger: Trigger::Http(HttpRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            path_params,
            query,
            headers: header_list,
            body: body.to_vec(),
            remote_addr,
        }),
        tenant,
        principal,
        dry_run,
        request_id: request_id.clone(),
    };
    let started = std::time::Instant::now();
    let mut response = match runtime.invoke(&target.plugin, inv).await {
        Ok(out) => plugin_response(out.status, out.headers, out.body),
        Err(InvokeError::Failed { status, message }) => error_envelope(status, &message),
        Err(e @ InvokeError::TimedOut { .. }) => error_envelope(500, &e.to_string()),
        Err(e) => {
            tracing::error!(plugin = %target.plugin, request_id, error = %e, "invocation failed");
            error_envelope(500, &format!("plugin \"{}\" failed", target.plugin))
        }
    };
    tracing::debug!(
        plugin = %target.plugin,
        request_id,
        %method,
        path = uri.path(),
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Hop-by-hop and framing headers are the server's business, not the plugin's.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
];

fn plugin_response(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (k, v) in headers {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            continue;
        };
        if RESERVED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&v) {
            map.append(name, value);
        }
    }
    let is_html = map
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        map.insert(
            "content-security-policy-report-only",
            HeaderValue::from_static(CSP_REPORT_ONLY),
        );
        map.insert(
            "reporting-endpoints",
            HeaderValue::from_static(REPORTING_ENDPOINTS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.2"),
        );
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        // From a proxy: the nearest untrusted hop (not the spoofable first one).
        assert_eq!(
            client_addr(Some(ip("10.0.0.1")), &headers, &proxies),
            Some(ip("203.0.113.9"))
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_addr(Some(ip("198.51.100.7")), &headers, &proxies),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_addr(Some(ip("10.0.0.1")), &HeaderMap::new(), &proxies),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(client_addr(None, &headers, &proxies), None);
    }
}
