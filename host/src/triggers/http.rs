//! HTTP trigger: one axum route per manifest route. The host authenticates
//! and checks the route's role before the plugin runs; plugin failures become
//! the spec's `{"ok": false, "error": {"code", "message"}}` envelope.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use futures::FutureExt;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::RequestBodyTimeout;

use super::body::{BODY_READ_TIMEOUT, read_body};
use super::deadline::Deadline;
use super::request_id::{RequestIds, request_id};
use crate::auth::AuthError;
use crate::manifest::{Plugin, Role, host_routes};
use crate::preflight;
use crate::runtime::completing::Completing;
use crate::runtime::{
    HttpRequest, Invocation, InvokeError, Principal, Runtime, Trigger, is_final_status,
};

/// The policy every HTML response carries, reports going to `/csp/report`
/// with `report-uri` (browsers POST `application/csp-report`).
pub const CSP_REPORT_ONLY: &str = "default-src 'self'; report-uri /csp/report";
/// The same over HTTPS, also naming the Reporting API group (browsers POST
/// `application/reports+json`): Chromium ignores `report-uri` when
/// `report-to` is present and drops non-HTTPS reporting endpoints, so
/// `report-to` is named only for requests that came over HTTPS.
pub const CSP_REPORT_ONLY_HTTPS: &str =
    "default-src 'self'; report-uri /csp/report; report-to csp-endpoint";
/// Names the `report-to` group of [`CSP_REPORT_ONLY_HTTPS`].
pub const REPORTING_ENDPOINTS: &str = "csp-endpoint=\"/csp/report\"";

/// `{"ok": false, "error": {"code": N, "message": "..."}}` with status N;
/// never cached, since it answers one request.
/// A status outside 400–599 (a plugin's `fail(200, …)`) is sent as 500.
pub fn error_envelope(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status)
        .ok()
        .filter(|c| c.is_client_error() || c.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body =
        serde_json::json!({"ok": false, "error": {"code": code.as_u16(), "message": message}});
    private(
        (
            code,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

/// An answer for an operator (a route that needs a role, or an error): no
/// browser or proxy keeps a copy (whatever its plugin said: operator data
/// in a shared cache is a leak), and none reads it as another type.
pub(crate) fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    not_sniffed(h);
    response
}

/// Browsers take the content type as given (a JSON answer quoting a path
/// is never run as a page), whatever a plugin said.
fn not_sniffed(h: &mut HeaderMap) {
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

pub fn forbidden() -> Response {
    error_envelope(403, "forbidden")
}

/// Seconds a refused client is asked to wait before trying again.
pub const RETRY_AFTER_SECS: u32 = 1;

/// No plugin slot was free in time: 503 with `Retry-After`. Counted and
/// logged in summary by the admission control, not per request.
pub fn busy() -> Response {
    try_again_soon("busy, try again shortly")
}

/// 503 in the envelope with `Retry-After`: the caller may try again shortly.
fn try_again_soon(message: &str) -> Response {
    let mut response = error_envelope(503, message);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(RETRY_AFTER_SECS));
    response
}

#[derive(Clone)]
struct RouteTarget {
    plugin: String,
    role: Option<Role>,
    /// The manifest's path pattern, handed to the plugin.
    route: String,
    /// The largest body read for it.
    max_body: usize,
}

#[derive(Clone)]
pub struct AppState {
    pub(crate) runtime: Arc<Runtime>,
}

/// What serves HTTP: a router inside the host's time limits.
pub type Service = RequestIds<Deadline<RequestBodyTimeout<Router>>>;

/// A slow body or a stuck handler cannot hold a connection forever, and
/// every answer names its request. These wrap the whole router rather than
/// each route (`Router::layer`): each layered route is another box that
/// every request clones and whose future it boxes again.
fn time_limited(router: Router) -> Service {
    RequestIds::new(Deadline::new(
        RequestBodyTimeout::new(router, BODY_READ_TIMEOUT),
        REQUEST_TIMEOUT,
    ))
}

/// Builds the service: host endpoints plus every manifest route.
pub fn router(runtime: Arc<Runtime>) -> Service {
    time_limited(
        routes(runtime.plugins().map(|p| p.manifest.as_ref())).with_state(AppState { runtime }),
    )
}

/// The route table of a set of plugins, before any state is attached:
/// `neo-ops check` builds it too, so a manifest it accepts always serves.
pub fn routes<'a>(plugins: impl Iterator<Item = &'a Plugin>) -> Router<AppState> {
    let mut by_path: BTreeMap<String, Vec<(Method, RouteTarget)>> = BTreeMap::new();
    for p in plugins {
        for r in &p.routes {
            let method =
                Method::from_bytes(r.method.as_bytes()).expect("validated by the manifest");
            by_path.entry(r.path.clone()).or_default().push((
                method,
                RouteTarget {
                    plugin: p.name.clone(),
                    role: r.role,
                    route: r.path.clone(),
                    max_body: r.max_body,
                },
            ));
        }
    }
    let mut router = Router::new()
        .route(host_routes::HEALTHZ, get(healthz))
        .route(host_routes::READYZ, get(readyz))
        .route(preflight::ROUTE, get(preflight_checklist))
        .route(host_routes::METRICS, get(metrics))
        .route(host_routes::WHOAMI, get(super::admin_api::whoami))
        .route(host_routes::AUDIT, get(super::admin_api::audit));
    for (path, methods) in by_path {
        let mut mr: MethodRouter<AppState> = MethodRouter::new();
        // A path anyone may call answers CORS preflights (a POS web app on
        // its own origin posting CSP reports through the Reporting API).
        if methods.iter().all(|(_, t)| t.role.is_none()) {
            let allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
            let allow = format!("{}, OPTIONS", allow.join(", "));
            mr = mr.options(move || cors_preflight(allow.clone()));
            // A method it does not take, refused readably too (a page's
            // POST to /status.json sees the 405, not a network error).
            mr = mr.fallback(async |method, uri, headers| {
                readable_cross_origin(method_not_allowed(method, uri, headers).await)
            });
        }
        for (method, target) in methods {
            let filter = MethodFilter::try_from(method).expect("standard method");
            // Shared, so a request clones a pointer rather than two names.
            let target = Arc::new(target);
            mr = mr.merge(on(
                filter,
                move |state: State<AppState>,
                      params: Result<Path<Vec<(String, String)>>, PathRejection>,
                      request: Request| {
                    let target = target.clone();
                    async move {
                        let Ok(Path(params)) = params else {
                            // Percent-decodes to bytes that are not UTF-8.
                            let refused = error_envelope(
                                400,
                                &format!(
                                    "path {} has a parameter that is not UTF-8 once decoded",
                                    quoted_path(request.uri().path())
                                ),
                            );
                            return match target.role {
                                None => readable_cross_origin(refused),
                                Some(_) => refused,
                            };
                        };
                        dispatch(state, target, params, request).await
                    }
                },
            ));
        }
        router = router.route(&path, mr);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|uri: axum::http::Uri| async move {
            error_envelope(404, &format!("no route {}", quoted_path(uri.path())))
        })
}

/// A request path for an error message: quoted, and cut at 200 characters.
fn quoted_path(path: &str) -> String {
    match path.char_indices().nth(200) {
        Some((end, _)) => format!("\"{}…\"", &path[..end]),
        None => format!("\"{path}\""),
    }
}

/// 405 in the envelope, logged at debug with the request id: a browser's
/// refused preflight is otherwise invisible.
async fn method_not_allowed(method: Method, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let request_id = request_id(&headers);
    tracing::debug!(
        request_id,
        %method,
        path = uri.path(),
        "refused a method the route does not take (405)"
    );
    error_envelope(405, &format!("method \"{method}\" is not allowed here"))
}

/// `204` to a CORS preflight of a public path.
async fn cors_preflight(allow: String) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    if let Ok(v) = HeaderValue::from_str(&allow) {
        h.insert("access-control-allow-methods", v);
    }
    h.insert(
        "access-control-allow-headers",
        // A status widget revalidating with the tag it read.
        HeaderValue::from_static("content-type, if-none-match"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    not_sniffed(h);
    response
}

/// Whether the client's request came over HTTPS: this server speaks plain
/// HTTP, so only through a trusted proxy that says `X-Forwarded-Proto: https`.
fn came_over_https(socket: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> bool {
    socket.is_some_and(|peer| trusted.contains(&peer.to_canonical()))
        && headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// What serves while the first plugin set compiles: health and readiness
/// (not ready yet), and 503 with `Retry-After` for every other route.
pub fn loading_router(services: Arc<crate::services::Services>) -> Service {
    let router = Router::new()
        .route(
            host_routes::HEALTHZ,
            get(
                |State(s): State<Arc<crate::services::Services>>| async move {
                    private(axum::Json(s.health()).into_response())
                },
            ),
        )
        .route(
            host_routes::READYZ,
            get(
                |State(s): State<Arc<crate::services::Services>>| async move {
                    let (_, body) = s.ready().await;
                    private((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response())
                },
            ),
        )
        // Any route, public ones among them: readable from another origin.
        .fallback(|| async {
            readable_cross_origin(try_again_soon("plugins are loading, try again shortly"))
        })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(services);
    time_limited(router)
}

/// Health and readiness are never cached: a stale "ok" would hide an outage.
async fn healthz(State(state): State<AppState>) -> Response {
    private(axum::Json(state.runtime.services.health()).into_response())
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ok, body) = state.runtime.services.ready().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    private((status, axum::Json(body)).into_response())
}

async fn preflight_checklist(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = request_id(&headers);
    if let Err(denied) = authorize_admin_read(&state.runtime, &headers, &request_id).await {
        return denied;
    }
    let names = preflight::select(&state.runtime, None).unwrap_or_default();
    // As a plugin route's invocation: a client that hangs up (or the request
    // limit) does not cut the checks off with their slots and locks held.
    let runtime = state.runtime.clone();
    let unfinished = &state.runtime.services.unfinished;
    let report = Completing::tracked(
        async move { preflight::run(&runtime, names, &request_id, None).await },
        unfinished,
    )
    .await;
    let status = if report.failed() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    private((status, axum::Json(report.envelope())).into_response())
}

/// The longest a scrape waits for the queue lengths: a Redis that hangs
/// leaves them out, and the rest of the scrape still answers well within
/// Prometheus's 10 s scrape timeout.
const QUEUE_LENGTHS_WITHIN: Duration = Duration::from_secs(2);

/// How long this scrape may wait for the queue lengths: within
/// [`QUEUE_LENGTHS_WITHIN`], and within the timeout Prometheus announces
/// (`X-Prometheus-Scrape-Timeout-Seconds`) less half a second for the rest,
/// so a Redis that hangs never makes the whole target look down.
fn queue_lengths_within(headers: &HeaderMap) -> Duration {
    let announced = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64((s - 0.5).clamp(0.1, 10.0)));
    announced.map_or(QUEUE_LENGTHS_WITHIN, |a| a.min(QUEUE_LENGTHS_WITHIN))
}

/// The lengths of the queues the current plugin set consumes (ready, dead,
/// retrying), all asked at once within `within`. A length kv could not give
/// in time is `None`, left out rather than shown as an empty queue (a scrape
/// during a Redis outage must not look healthy).
async fn queue_lengths(runtime: &Runtime, within: Duration) -> Vec<(String, [Option<u64>; 3])> {
    let queues: Vec<String> = runtime
        .plugins()
        .filter_map(|p| p.manifest.queue.as_ref().map(|q| q.name.clone()))
        .collect();
    lengths_of(&runtime.services.kv, queues, within).await
}

/// The lengths of `queues` (ready, dead, retrying), as [`queue_lengths`].
pub(crate) async fn lengths_of(
    kv: &crate::backends::kv::Kv,
    queues: Vec<String>,
    within: Duration,
) -> Vec<(String, [Option<u64>; 3])> {
    use crate::backends::queue::{dead_letter_key, queue_key, retrying_key};
    let asked = futures::future::join_all(queues.into_iter().map(|queue| async move {
        let keys = [
            queue_key(&queue),
            dead_letter_key(&queue),
            retrying_key(&queue),
        ];
        let (depth, dead, retrying) = tokio::join!(
            kv.list_len(&keys[0]),
            kv.list_len(&keys[1]),
            kv.sorted_len(&keys[2]),
        );
        (queue, [depth.ok(), dead.ok(), retrying.ok()])
    }));
    tokio::time::timeout(within, asked)
        .await
        .unwrap_or_default()
}

/// Sets the queue gauges to `lengths`; a queue no plugin consumes any more
/// has no series.
fn set_queue_gauges(m: &crate::metrics::Metrics, lengths: Vec<(String, [Option<u64>; 3])>) {
    let families = [&m.queue_depth, &m.dead_letters, &m.queue_retrying];
    for family in families {
        family.clear();
    }
    for (queue, lengths) in lengths {
        let labels = crate::metrics::QueueLabels { queue };
        for (family, len) in families.into_iter().zip(lengths) {
            if let Some(n) = len {
                family.get_or_create(&labels).set(n as i64);
            }
        }
    }
}

/// `GET /metrics` (role `admin`): the Prometheus text of the process.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = request_id(&headers);
    if let Err(denied) = authorize_admin_read(&state.runtime, &headers, &request_id).await {
        return denied;
    }
    let runtime = &state.runtime;
    let m = &runtime.services.metrics;
    m.slots_in_use.set(i64::from(runtime.admission.in_use()));
    m.slots_waiting.set(runtime.admission.waiting() as i64);
    // Asked before the lock: concurrent scrapes (an HA pair of Prometheus)
    // wait for Redis side by side, not one after another.
    let lengths = queue_lengths(runtime, queue_lengths_within(&headers)).await;
    // One scrape at a time sets and reads the queue gauges: another's
    // clearing them must not leave this one's text without them.
    let text = {
        let _scrape = SCRAPE.lock().await;
        set_queue_gauges(m, lengths);
        m.render()
    };
    let openmetrics = headers
        .get(ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(crate::metrics::accepts_openmetrics);
    let (content_type, text) = if openmetrics {
        (crate::metrics::OPENMETRICS, text)
    } else {
        (
            crate::metrics::PROMETHEUS_TEXT,
            crate::metrics::prometheus_text(&text),
        )
    };
    private(([(CONTENT_TYPE, content_type)], text).into_response())
}

/// Held while a scrape sets and reads the queue gauges.
static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The caller's principal when the route needs a role; the exact 403
/// envelope when the token is missing, unknown, revoked or of a lower role.
/// On a request that changes nothing (`GET`, `HEAD`) the host's token copy
/// vouches for a genuine token while the master cannot be reached.
pub(crate) async fn authorize(
    runtime: &Runtime,
    headers: &HeaderMap,
    required: Option<Role>,
    safe: bool,
    request_id: &str,
) -> Result<Option<Principal>, Response> {
    let Some(required) = required else {
        return Ok(None);
    };
    let Some(token) = bearer(headers) else {
        return Err(forbidden());
    };
    let services = &runtime.services;
    match services
        .tokens
        .authenticate(services.db.master(), token, safe)
        .await
    {
        Ok(Some(p)) if p.role >= required => Ok(Some(Principal {
            name: p.name,
            role: p.role.as_str().to_string(),
        })),
        Ok(_) => Err(forbidden()),
        Err(e) => {
            // A flood of made-up tokens is expected; a database failure is not.
            match &e {
                AuthError::Busy => tracing::debug!(request_id, "{e}"),
                AuthError::Db(_) => tracing::warn!(error = %e, request_id, "token lookup failed"),
            }
            Err(try_again_soon(
                "authentication unavailable, try again shortly",
            ))
        }
    }
}

/// [`authorize`] for the host's own admin routes, all reads (`GET`).
pub(crate) async fn authorize_admin_read(
    runtime: &Runtime,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Option<Principal>, Response> {
    authorize(runtime, headers, Some(Role::Admin), true, request_id).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the socket's peer, or, when that peer is a trusted
/// proxy, the nearest `X-Forwarded-For` hop that is not one (a client can
/// prepend anything to the header, so it is read from the right).
pub fn client_addr(
    socket: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = socket?.to_canonical();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop_addr(hop) {
            Some(ip) if trusted.contains(&ip) => client = ip,
            Some(ip) => return Some(ip),
            // A hop no proxy of ours wrote in a form we read ("unknown"):
            // what lies left of it is the client's own say, not a fact.
            None => break,
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` hop's address: bare, or with the port some proxies
/// add (`203.0.113.9:51234`, `[2001:db8::1]:443`).
fn hop_addr(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = match hop.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match hop.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']')?.0.parse().ok()?,
            None => IpAddr::V4(*hop.parse::<std::net::SocketAddrV4>().ok()?.ip()),
        },
    };
    Some(ip.to_canonical())
}

/// Longest any request may take, plugin included (plugin timeouts are
/// shorter; this bounds the host's own waits too).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the request asks for a dry run: `dry_run` (or `dry-run`) in the
/// query, bare or `1`, `true`, `yes`, `on`, or `true` at the top of a JSON
/// body; `0`, `false`, `no`, `off` or none ask for the real thing. Any
/// other value is refused, not read as "no": a dry run asked for in a
/// spelling not known must never do the real thing.
fn dry_run_of(query: &[(String, String)], body: Option<&[BodyField]>) -> Result<bool, String> {
    let from_query = query
        .iter()
        .filter(|(key, _)| DRY_RUN_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.as_str(), Some(value.as_str())));
    let from_body = body
        .unwrap_or_default()
        .iter()
        .filter(|(key, _)| DRY_RUN_KEYS.contains(key))
        .map(|(key, value)| (*key, value.as_deref()));
    let mut asked = false;
    for (key, value) in from_query.chain(from_body) {
        // A JSON null says nothing either way.
        let Some(value) = value else { continue };
        match value.to_ascii_lowercase().as_str() {
            "" | "1" | "true" | "yes" | "on" => asked = true,
            "0" | "false" | "no" | "off" => {}
            _ => {
                return Err(format!(
                    "bad {key} value \"{value}\" (expected 1 or true for a dry run, 0 or false for none)"
                ));
            }
        }
    }
    Ok(asked)
}

/// The names a dry run is asked for by.
const DRY_RUN_KEYS: [&str; 2] = ["dry_run", "dry-run"];

/// The invocation's tenant from the path, the query and a JSON body. A
/// tenant given twice (a repeated query key, a repeated JSON key) or two
/// sources that disagree is refused: settling it silently could act on the
/// wrong tenant.
fn tenant_of(
    path_params: &[(String, String)],
    query: &[(String, String)],
    body: Option<&[BodyField]>,
) -> Result<Option<String>, String> {
    let ambiguous = |what: &str| Err(format!("ambiguous tenant: {what}; give it once"));
    let from_query: Vec<&String> = query
        .iter()
        .filter(|(k, _)| k == "tenant")
        .map(|(_, v)| v)
        .collect();
    if from_query.len() > 1 {
        return ambiguous("\"tenant\" is repeated in the query");
    }
    let mut found = body
        .unwrap_or_default()
        .iter()
        .filter(|(key, _)| *key == "tenant")
        .filter_map(|(_, value)| value.as_ref());
    let from_body = found.next();
    if found.next().is_some() {
        return ambiguous("\"tenant\" is repeated in the JSON body");
    }
    let mut sources = [
        (
            "path",
            path_params
                .iter()
                .find(|(k, _)| k == "tenant")
                .map(|(_, v)| v),
        ),
        ("query", from_query.first().copied()),
        ("body", from_body),
    ]
    .into_iter()
    .filter_map(|(place, t)| Some((place, t?)));
    let first = sources.next();
    if let Some((place, first)) = first
        && let Some((other_place, other)) = sources.find(|(_, t)| *t != first)
    {
        return ambiguous(&format!(
            "\"{first}\" in the {place} and \"{other}\" in the {other_place} differ"
        ));
    }
    Ok(first.map(|(_, t)| t.clone()))
}

/// A top-level field of a JSON object body the host itself reads (the
/// tenant, a dry run), its value as text (`None` for null).
type BodyField = (&'static str, Option<String>);

/// The top-level `"tenant"`, `"dry_run"` and `"dry-run"` fields of a JSON
/// object body, in order, or `None` when the body is not a JSON object.
/// Nothing is built but the values' text: a field holding a huge array (a
/// public request's body, read before any admission) costs a scan, not a
/// tree of values.
fn body_fields(body: &[u8]) -> Option<Vec<BodyField>> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    const READ: [&str; 3] = ["tenant", "dry_run", "dry-run"];
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<BodyField>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = Vec::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match READ.iter().find(|k| **k == key) {
                    Some(read) => found.push((*read, map.next_value::<FieldValue>()?.0)),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }
    /// A field's value as text: a string's own, a number's or a bool's
    /// digits or word, none for null, and a marker for an array or object
    /// (skipped, not kept), which names no tenant and no dry run.
    struct FieldValue(Option<String>);
    impl<'de> serde::Deserialize<'de> for FieldValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ValueText).map(FieldValue)
        }
    }
    struct ValueText;
    impl<'de> Visitor<'de> for ValueText {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a value")
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Some("[…]".into()))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Some("{…}".into()))
        }
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::Deserializer::from_slice(body)
        .deserialize_map(Fields)
        .ok()
}

async fn dispatch(
    state: State<AppState>,
    target: Arc<RouteTarget>,
    path_params: Vec<(String, String)>,
    request: Request,
) -> Response {
    let public = target.role.is_none();
    let response = answer(state, target, path_params, request).await;
    match public {
        true => readable_cross_origin(response),
        false => response,
    }
}

/// An error on an anonymous route, readable by a page on another origin (a
/// status widget polling `/status.json`): without these headers a browser
/// turns a 503 and its `Retry-After` into a bare network error, so "busy,
/// try again in a second" looks like "host down". Anonymous answers carry
/// nothing a credential guards.
pub(super) fn readable_cross_origin(mut response: Response) -> Response {
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let h = response.headers_mut();
        h.entry("access-control-allow-origin")
            .or_insert(HeaderValue::from_static("*"));
        h.entry("access-control-expose-headers")
            .or_insert(HeaderValue::from_static("retry-after, x-request-id"));
    }
    response
}

async fn answer(
    State(state): State<AppState>,
    target: Arc<RouteTarget>,
    mut path_params: Vec<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let socket = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let runtime = &state.runtime;
    let headers = &parts.headers;
    let request_id = request_id(headers);
    // The role is checked before a byte of the body is read: an anonymous
    // flood of large bodies costs a header parse, not a buffer each.
    // A script fetched to be a service worker would see every request of
    // the origin, the console's tokens included: no plugin serves one.
    if headers.get("service-worker").is_some() {
        // Debug: anyone can send it, and the log is not theirs to fill.
        tracing::debug!(request_id = %request_id, path = parts.uri.path(), "refused a service worker script");
        return error_envelope(403, "no service worker is served here");
    }
    let safe = matches!(parts.method, Method::GET | Method::HEAD);
    let principal = match authorize(runtime, headers, target.role, safe, &request_id).await {
        Ok(p) => p,
        Err(denied) => return denied,
    };
    // Held (with its share of the body budget) until the invocation ends,
    // which outlives the request if its client leaves.
    let public = target.role.is_none();
    let bodies = &runtime.services.request_bodies;
    let limit = target.max_body;
    let mut read = match read_body(bodies, public, limit, headers, body, &request_id).await {
        Ok(read) => read,
        Err(rejected) => return rejected,
    };
    let trusted = &runtime.services.settings.trusted_proxies;
    let remote_addr = client_addr(socket, headers, trusted).map(|ip| {
        // Sized for the longest address, so it is written without regrowing.
        let mut text = String::with_capacity(45);
        let _ = write!(text, "{ip}");
        text
    });
    let https = came_over_https(socket, headers, trusted);
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let fields = body_fields(&read.bytes);
    let tenant = match tenant_of(&path_params, &query, fields.as_deref()) {
        Ok(t) => t,
        Err(why) => return error_envelope(400, &why),
    };
    let dry_run = match dry_run_of(&query, fields.as_deref()) {
        Ok(asked) => asked,
        Err(why) => return error_envelope(400, &why),
    };
    let header_list = headers
        .iter()
        .filter(|(k, _)| *k != "authorization" && *k != "cookie")
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    path_params.sort();
    let method = parts.method;
    let uri = parts.uri;
    let inv = Invocation {
        trigger: Trigger::Http(HttpRequest {
            method: method.as_str().to_owned(),
            route: target.route.clone(),
            path: uri.path().to_string(),
            path_params,
            query,
            headers: header_list,
            // Without a copy when the body is the one buffer it was read
            // into (a body that came in pieces); its share of the budget
            // stays held by `read` until the invocation ends.
            body: Vec::from(std::mem::take(&mut read.bytes)),
            remote_addr,
        }),
        tenant,
        principal,
        dry_run,
        request_id: request_id.clone(),
    };
    let started = std::time::Instant::now();
    let outcome = match runtime.admit(&target.plugin, inv).await {
        Err(refused) => Err(refused),
        Ok(admitted) => run_to_the_end(runtime, &target, admitted, read).await,
    };
    let response = match outcome {
        Ok(out) if !is_final_status(out.status) => {
            tracing::error!(plugin = %target.plugin, request_id, status = out.status, "plugin answered a status that is not a final HTTP status");
            let message = format!(
                "plugin \"{}\" answered status {}, which is not a final HTTP status",
                target.plugin, out.status
            );
            error_envelope(500, &message)
        }
        Ok(out) if target.role.is_some() => {
            private(plugin_response(out.status, out.headers, out.body, https))
        }
        Ok(out) => plugin_response(out.status, out.headers, out.body, https),
        Err(InvokeError::Failed { status, message }) => error_envelope(status, &message),
        Err(InvokeError::Busy(_)) => busy(),
        // 504, as a gateway says its upstream did not answer in time: a
        // client or load balancer may retry a GET, and status aggregators
        // tell it apart from a crash.
        Err(e @ InvokeError::TimedOut { .. }) => error_envelope(504, &e.to_string()),
        Err(e) => {
            // As a string field (not `%e`): the formatter quotes and escapes
            // it, so guest text in a crash reason stays on this line.
            let error = e.to_string();
            tracing::error!(plugin = %target.plugin, request_id, error, "invocation failed");
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
    response
}

/// Runs an admitted invocation. Once it has its slot, a client that goes
/// away does not cut it off mid-way (its database work, lock releases and
/// accounting complete): the rest of it moves to a task that shutdown waits
/// for, still holding its body's share of the budget. A client that leaves
/// while it still waits for a slot leaves nothing to run.
async fn run_to_the_end(
    runtime: &Arc<Runtime>,
    target: &RouteTarget,
    admitted: crate::runtime::Admitted,
    read: super::body::ReadBody,
) -> Result<crate::runtime::Output, InvokeError> {
    let invocation = {
        let unfinished = &runtime.services.unfinished;
        let (runtime, plugin) = (runtime.clone(), target.plugin.clone());
        Completing::tracked(
            async move {
                let _body_budget = read;
                runtime.run_admitted(&plugin, admitted).await
            },
            unfinished,
        )
    };
    match AssertUnwindSafe(invocation).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => Err(InvokeError::Crashed {
            plugin: target.plugin.clone(),
            reason: format!(
                "invocation panicked: {}",
                super::supervise::panic_message(&*panic)
            ),
        }),
    }
}

/// Headers a plugin's answer may not carry: hop-by-hop and framing ones,
/// the server's business; and those that act for the whole origin, which
/// every plugin shares with the web console (cookies, its storage, HTTPS
/// for it and its subdomains, credentials to other origins, a service
/// worker's scope): a plugin answers for its own routes only.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "set-cookie",
    "clear-site-data",
    "strict-transport-security",
    "access-control-allow-credentials",
    "service-worker-allowed",
    // Network error reports for every request of the origin, sent where
    // the plugin says; another server for the whole origin.
    "nel",
    "report-to",
    "alt-svc",
];

/// Most headers a plugin's answer may set.
const MAX_PLUGIN_HEADERS: usize = 64;

fn plugin_response(
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    https: bool,
) -> Response {
    // A final status only (the router answers any other in the envelope).
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| is_final_status(s.as_u16()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    // As a bad header is, those past the first 64 are left out: a map of
    // some 24,000 names would panic, and with the host's own the answer
    // stays within the 100 headers clients such as hyper take.
    for (k, v) in headers.into_iter().take(MAX_PLUGIN_HEADERS) {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            continue;
        };
        if RESERVED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        // Visible ASCII only, as `HeaderValue::from_str` takes; the
        // plugin's string becomes the value without a copy.
        if !v.is_ascii() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(v)) {
            map.append(name, value);
        }
    }
    not_sniffed(map);
    // Any type a browser runs scripts in, however it is written.
    let is_html = map
        .get("content-type")
        .map(|v| v.as_bytes().trim_ascii_start())
        .is_some_and(|v| {
            ["text/html", "application/xhtml+xml", "image/svg+xml"]
                .iter()
                .any(|t| v.len() >= t.len() && v[..t.len()].eq_ignore_ascii_case(t.as_bytes()))
        });
    if is_html && https {
        map.insert(
            "content-security-policy-report-only",
            HeaderValue::from_static(CSP_REPORT_ONLY_HTTPS),
        );
        map.insert(
            "reporting-endpoints",
            HeaderValue::from_static(REPORTING_ENDPOINTS),
        );
    } else if is_html {
        map.insert(
            "content-security-policy-report-only",
            HeaderValue::from_static(CSP_REPORT_ONLY),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_sets_its_own_headers_but_not_framing_or_non_ascii_ones() {
        let headers = vec![
            ("content-type".to_string(), "text/plain".to_string()),
            ("x-total".to_string(), "3".to_string()),
            ("x-total".to_string(), "4".to_string()),
            ("content-length".to_string(), "999".to_string()),
            ("x-name".to_string(), "caf\u{e9}".to_string()),
            ("x-bad".to_string(), "a\nb".to_string()),
            ("bad name".to_string(), "x".to_string()),
            (
                "Set-Cookie".to_string(),
                "s=1; Domain=example.com".to_string(),
            ),
            (
                "strict-transport-security".to_string(),
                "max-age=1".to_string(),
            ),
            ("service-worker-allowed".to_string(), "/".to_string()),
            (
                "NEL".to_string(),
                r#"{"report_to":"x","max_age":1}"#.to_string(),
            ),
            ("x-content-type-options".to_string(), "x".to_string()),
        ];
        let response = plugin_response(201, headers, b"hi".to_vec(), false);
        assert_eq!(response.status(), StatusCode::CREATED);
        let h = response.headers();
        assert_eq!(h["content-type"], "text/plain");
        let totals: Vec<_> = h.get_all("x-total").iter().collect();
        assert_eq!(totals, ["3", "4"]);
        for refused in [
            "content-length",
            "x-name",
            "x-bad",
            "bad name",
            "set-cookie",
            "strict-transport-security",
            "service-worker-allowed",
            "nel",
        ] {
            assert!(!h.contains_key(refused), "{refused} was passed on");
        }
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(!h.contains_key("content-security-policy-report-only"));
        // An operator's answer is kept nowhere, whatever its plugin said.
        let cached = vec![(
            "cache-control".to_string(),
            "public, max-age=600".to_string(),
        )];
        let response = private(plugin_response(200, cached, Vec::new(), false));
        assert_eq!(response.headers()["cache-control"], "no-store");
        // HTML however its type is written gets the policy.
        for html in ["Text/HTML; charset=utf-8", "image/svg+xml"] {
            let headers = vec![("content-type".to_string(), html.to_string())];
            let response = plugin_response(200, headers, Vec::new(), false);
            let h = response.headers();
            assert!(
                h.contains_key("content-security-policy-report-only"),
                "{html}"
            );
        }
    }

    #[test]
    fn the_tenant_comes_from_the_path_parameter_named_tenant() {
        let path = [
            ("id".to_string(), "7".to_string()),
            ("tenant".to_string(), "acme".to_string()),
        ];
        assert_eq!(
            tenant_of(&path, &[], None).unwrap().as_deref(),
            Some("acme")
        );
        let query = [("tenant".to_string(), "other".to_string())];
        let err = tenant_of(&path, &query, None).unwrap_err();
        assert!(
            err.contains("\"acme\" in the path and \"other\" in the query"),
            "{err}"
        );
        assert_eq!(tenant_of(&path[..1], &[], None).unwrap(), None);
    }

    #[test]
    fn a_body_tenant_is_a_scalar_as_text_and_anything_else_a_marker() {
        let of = |body: &str| tenant_of(&[], &[], body_fields(body.as_bytes()).as_deref()).unwrap();
        assert_eq!(of(r#"{"tenant": "acme"}"#).as_deref(), Some("acme"));
        assert_eq!(of(r#"{"tenant": 7}"#).as_deref(), Some("7"));
        assert_eq!(of(r#"{"tenant": null}"#), None);
        assert_eq!(
            of(r#"{"tenant": [1, [2], {"a": 3}]}"#).as_deref(),
            Some("[…]")
        );
        assert_eq!(
            of(r#"{"tenant": {"name": "acme"}}"#).as_deref(),
            Some("{…}")
        );
        // A huge array is skipped, whatever its length.
        let huge = format!(r#"{{"tenant": [{}0]}}"#, "0,".repeat(500_000));
        assert_eq!(of(&huge).as_deref(), Some("[…]"));
        let twice = body_fields(br#"{"tenant": "a", "tenant": "b"}"#);
        assert!(tenant_of(&[], &[], twice.as_deref()).is_err());
    }

    /// A dry run is asked for in the query or at the top of a JSON body,
    /// in any known spelling; an unknown one is refused, never read as no.
    #[test]
    fn a_dry_run_is_asked_for_in_the_query_or_the_body() {
        let query = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let asked = |q: &[(&str, &str)], body: &str| {
            dry_run_of(&query(q), body_fields(body.as_bytes()).as_deref())
        };
        for yes in ["1", "true", "YES", "on", ""] {
            assert_eq!(asked(&[("dry_run", yes)], ""), Ok(true), "{yes}");
        }
        assert_eq!(asked(&[("dry-run", "1")], ""), Ok(true));
        assert_eq!(asked(&[("dry_run", "0"), ("dry_run", "on")], ""), Ok(true));
        assert_eq!(asked(&[("dry_run", "false")], ""), Ok(false));
        assert_eq!(asked(&[], r#"{"id": "x", "dry_run": true}"#), Ok(true));
        assert_eq!(
            asked(&[], r#"{"dry_run": false, "nested": {"dry_run": true}}"#),
            Ok(false)
        );
        assert_eq!(asked(&[], r#"{"dry_run": null}"#), Ok(false));
        assert_eq!(asked(&[], "[1]"), Ok(false));
        let refused = asked(&[("dry_run", "maybe")], "").unwrap_err();
        assert!(refused.contains("bad dry_run value \"maybe\""), "{refused}");
        assert!(asked(&[], r#"{"dry_run": [true]}"#).is_err());
    }

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
        // A proxy that writes ports (or brackets) is still read; a hop it
        // could not have written ends the walk at the last trusted one,
        // so a client cannot pick its address by prepending one.
        let via = |xff: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static(xff));
            client_addr(Some(ip("10.0.0.1")), &h, &proxies)
        };
        assert_eq!(via("6.6.6.6, 203.0.113.9:51234"), Some(ip("203.0.113.9")));
        assert_eq!(via("6.6.6.6, [2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(via("6.6.6.6, unknown"), Some(ip("10.0.0.1")));
        assert_eq!(via("6.6.6.6, unknown, 10.0.0.2"), Some(ip("10.0.0.2")));
        // An IPv4 peer on a dual-stack listener is the same proxy.
        assert_eq!(
            client_addr(Some(ip("::ffff:10.0.0.1")), &headers, &proxies),
            Some(ip("203.0.113.9"))
        );
    }
}
