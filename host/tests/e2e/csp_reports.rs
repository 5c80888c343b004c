//! CSP reports end to end, on both backends: both wire formats are kept
//! (newest 500, 24 hours) with every `token` redacted; oversized, malformed
//! and wrongly typed bodies and floods are refused; the listing needs the
//! admin role; HTML responses carry the Report-Only policy pointing here.

use crate::support;

use futures::StreamExt;
use neo_ops::manifest::Role;
use serde_json::{Value, json};
use support::{Backend, Deployment, Server};

/// `budget` distinct reports per client a day, `requests` posts before 429;
/// a client may hold the whole list.
fn manifest(budget: u32, requests: u32) -> String {
    format!(
        r#"
[plugins.csp-reports]
component = "csp_reports.wasm"
routes = [
  {{ method = "POST", path = "/csp/report" }},
  {{ method = "GET", path = "/admin/csp/reports", role = "admin" }},
]
grants = {{ kv = ["csp:"] }}
limits = {{ memory = "32MiB", timeout = "5s" }}
# A day-long window: a test never straddles two windows.
config = {{ max_body_bytes = "65536", rate_limit = "{budget}", request_limit = "{requests}", rate_window = "24h", client_share = "100000" }}
"#
    )
}

const LEGACY: &str = "application/csp-report";
const REPORTING_API: &str = "application/reports+json";
use support::FORBIDDEN;

/// The secret carried by report `n`; redaction must remove every one.
fn secret(n: usize) -> String {
    format!("t0k{n:04}SeCrEt")
}

/// Report `n` with its secret in every URL field, odd in the `report-uri`
/// format, even in the Reporting API's (next to a report of another type,
/// which is ignored).
fn report(n: usize) -> (&'static str, String) {
    let token = secret(n);
    let document = format!("https://pos.example.com/orders?page=2&token={token}");
    let blocked = format!("https://cdn.evil.example/x.js?token={token}");
    let referrer = format!("https://pos.example.com/login?next=%2Forders%3Ftoken%3D{token}");
    let source = format!("https://pos.example.com/app.js?v=3&token={token}#L1");
    if n % 2 == 1 {
        let body = json!({"csp-report": {
            "document-uri": document,
            "referrer": referrer,
            "blocked-uri": blocked,
            "effective-directive": "script-src-elem",
            "violated-directive": "script-src-elem",
            "original-policy": "default-src 'self'; report-uri /csp/report",
            "disposition": "report",
            "status-code": 200,
            "source-file": source,
            "line-number": n,
            "column-number": 7,
        }});
        (LEGACY, body.to_string())
    } else {
        let body = json!([
            {"type": "deprecation", "age": 1, "url": document, "user_agent": "Mozilla/5.0",
             "body": {"id": "x", "message": format!("see {document}")}},
            {"type": "csp-violation", "age": 3, "url": document, "user_agent": "Mozilla/5.0",
             "body": {
                "documentURL": document,
                "referrer": referrer,
                "blockedURL": blocked,
                "effectiveDirective": "script-src-elem",
                "originalPolicy": "default-src 'self'; report-to csp-endpoint",
                "disposition": "report",
                "sourceFile": source,
                "lineNumber": n,
                "columnNumber": 7,
                "statusCode": 200,
             }},
        ]);
        (REPORTING_API, body.to_string())
    }
}

async fn post(server: &Server, content_type: &str, body: impl Into<String>) -> reqwest::Response {
    server
        .http
        .post(server.url("/csp/report"))
        .header("content-type", content_type)
        .body(body.into())
        .send()
        .await
        .expect("request")
}

async fn listing(server: &Server, token: &str) -> (String, Vec<Value>) {
    let (code, body) = server.get("/admin/csp/reports", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["ok"], true);
    let reports = doc["data"]["reports"].as_array().unwrap().clone();
    (body, reports)
}

/// The line number a stored report carries, whichever its format.
fn number(entry: &Value) -> u64 {
    let report = &entry["report"];
    report["csp-report"]["line-number"]
        .as_u64()
        .or(report["body"]["lineNumber"].as_u64())
        .unwrap_or_else(|| panic!("no line number in {entry}"))
}

async fn keeps_newest_500_redacted(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(100_000, 100_000), "a").await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();

    for n in 1..=600 {
        let (content_type, body) = report(n);
        let resp = post(&server, content_type, body).await;
        assert_eq!(resp.status().as_u16(), 204, "report {n}");
        assert!(resp.bytes().await.unwrap().is_empty());
    }

    let (body, reports) = listing(&server, &admin).await;
    assert_eq!(reports.len(), 500);
    let numbers: Vec<u64> = reports.iter().map(number).collect();
    let expected: Vec<u64> = (101..=600).rev().collect();
    assert_eq!(numbers, expected, "newest first, the 600th on top");
    for entry in &reports {
        let odd = number(entry) % 2 == 1;
        let (kind, content_type) = if odd {
            ("csp-report", LEGACY)
        } else {
            ("csp-violation", REPORTING_API)
        };
        assert_eq!(entry["kind"], kind);
        assert_eq!(entry["content_type"], content_type);
        let received = entry["received_at"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(received).expect("received_at is RFC 3339");
    }
    // No token value anywhere; every URL still readable around the mask.
    assert!(!body.contains("SeCrEt"), "a token survived");
    let newest = &reports[0]["report"];
    assert_eq!(newest["type"], "csp-violation");
    assert_eq!(
        newest["url"],
        "https://pos.example.com/orders?page=2&token=REDACTED"
    );
    let fields = &newest["body"];
    assert_eq!(
        fields["documentURL"],
        "https://pos.example.com/orders?page=2&token=REDACTED"
    );
    assert_eq!(
        fields["blockedURL"],
        "https://cdn.evil.example/x.js?token=REDACTED"
    );
    assert_eq!(
        fields["referrer"],
        "https://pos.example.com/login?next=%2Forders%3Ftoken%3DREDACTED"
    );
    assert_eq!(
        fields["sourceFile"],
        "https://pos.example.com/app.js?v=3&token=REDACTED#L1"
    );
    let legacy = &reports[1]["report"]["csp-report"];
    for field in ["document-uri", "blocked-uri", "referrer", "source-file"] {
        let url = legacy[field].as_str().unwrap();
        assert!(
            url.contains("token=REDACTED") || url.contains("token%3DREDACTED"),
            "{url}"
        );
    }
    assert_eq!(legacy["effective-directive"], "script-src-elem");

    // A copy of a report pushed out of the newest 500 is listed again, on
    // top, not only counted against an entry no longer shown.
    let (content_type, body) = report(1);
    assert_eq!(
        post(&server, content_type, body).await.status().as_u16(),
        204
    );
    let (_, reports) = listing(&server, &admin).await;
    assert_eq!((number(&reports[0]), &reports[0]["count"]), (1, &json!(1)));
    assert_eq!(number(&reports[1]), 600);

    // Kept for 24 hours from the last write, trimmed to 500.
    let key = "csp:reports";
    let kv = &server.services.kv;
    assert_eq!(kv.list_len(key).await.unwrap(), 500);
    let ttl = kv.ttl(key).await.unwrap().expect("the list expires");
    assert!(ttl > 0 && ttl <= 86_400_000, "{ttl} ms");
    if backend == Backend::Real {
        let client = redis::Client::open(support::REDIS).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let full_key = format!("{}{key}", dep.kv_prefix());
        let ttl: i64 = redis::cmd("TTL")
            .arg(&full_key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 86_400, "TTL {ttl}");
        let len: i64 = redis::cmd("LLEN")
            .arg(&full_key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(len, 500);
    }
    server.stop().await.unwrap();
}

on_both_backends!(newest_500_redacted, keeps_newest_500_redacted);

fn envelope(code: u16, message: &str) -> String {
    json!({"ok": false, "error": {"code": code, "message": message}}).to_string()
}

async fn bad_requests_are_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(100_000, 100_000), "a").await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();

    // Over 64 KiB, however well-formed.
    let big =
        json!({"csp-report": {"document-uri": "https://a/", "script-sample": "x".repeat(70_000)}})
            .to_string();
    let resp = post(&server, LEGACY, big.clone()).await;
    assert_eq!(resp.status().as_u16(), 413);
    let message = format!("report body of {} bytes exceeds 65536 bytes", big.len());
    assert_eq!(resp.text().await.unwrap(), envelope(413, &message));
    // Past the host's own request limit (2 MiB) the host answers, in the same
    // envelope. Through the router directly: over a socket the server's early
    // answer races the client still sending, which may see a reset instead.
    let huge = json!({"csp-report": {"script-sample": "x".repeat(3 << 20)}}).to_string();
    let request = axum::http::Request::post("/csp/report")
        .header("content-type", LEGACY)
        .body(axum::body::Body::from(huge))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(
        neo_ops::triggers::http::router(server.runtime.clone()),
        request,
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body),
        envelope(413, "request body too large (at most 2097152 bytes here)")
    );

    let resp = post(&server, LEGACY, r#"{"csp-report": {"document-uri": "#).await;
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (doc["ok"].clone(), doc["error"]["code"].clone()),
        (json!(false), json!(400))
    );
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed report: "),
        "{text}"
    );
    let resp = post(
        &server,
        REPORTING_API,
        r#"[{"type": "csp-violation", "url": "x"}]"#,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        envelope(400, "malformed report: report 0 has no \"body\" object")
    );

    let resp = post(&server, "text/plain", "{}").await;
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(
        resp.text().await.unwrap(),
        envelope(415, "unsupported content type \"text/plain\"")
    );

    // Nothing of the above was stored; plain application/json is accepted.
    let (_, reports) = listing(&server, &admin).await;
    assert!(reports.is_empty());
    let resp = post(&server, "application/json; charset=utf-8", report(1).1).await;
    assert_eq!(resp.status().as_u16(), 204);
    let (_, reports) = listing(&server, &admin).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["content_type"], "application/json");

    // The listing is for admins only.
    assert_eq!(
        server.get("/admin/csp/reports", None).await,
        (403, FORBIDDEN.to_string())
    );
    assert_eq!(
        server
            .get("/admin/csp/reports", Some("neo_00000000_bad"))
            .await,
        (403, FORBIDDEN.to_string())
    );
    server.stop().await.unwrap();
}

on_both_backends!(bad_requests, bad_requests_are_refused);

async fn floods_are_cut_off(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(100_000, 5), "a").await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    for n in 1..=5 {
        let (content_type, body) = report(n);
        assert_eq!(
            post(&server, content_type, body).await.status().as_u16(),
            204
        );
    }
    for n in 6..=8 {
        let (content_type, body) = report(n);
        let resp = post(&server, content_type, body).await;
        assert_eq!(resp.status().as_u16(), 429);
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry_after), "{retry_after}");
        assert_eq!(
            resp.text().await.unwrap(),
            envelope(429, "too many reports")
        );
    }
    // The limit is per client address: another loopback address is let in.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (content_type, body) = report(9);
    let resp = other
        .post(server.url("/csp/report"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    // Refused reports are not stored; reading is not limited.
    for _ in 0..3 {
        let (_, reports) = listing(&server, &admin).await;
        assert_eq!(reports.len(), 6);
    }
    server.stop().await.unwrap();
}

on_both_backends!(floods, floods_are_cut_off);

/// A report as large as the endpoint takes (64 KiB), every field long.
fn maximal_report(n: usize) -> String {
    let filler = |c: char| c.to_string().repeat(12_000);
    let body = json!({"csp-report": {
        "document-uri": format!("https://pos.example.com/{}?token=t{n}", filler('d')),
        "blocked-uri": format!("https://cdn.example/{}", filler('b')),
        "effective-directive": "script-src-elem",
        "original-policy": filler('p'),
        "script-sample": filler('s'),
        "referrer": filler('r'),
        "line-number": n,
    }})
    .to_string();
    assert!(
        body.len() > 60_000 && body.len() <= 65_536,
        "{}",
        body.len()
    );
    body
}

/// 500 maximal reports (the stored maximum) list as JSON and as HTML within
/// the plugin's 32 MiB: each stored report is capped (long fields cut with
/// a marker) and the listing copies stored entries instead of rebuilding
/// them. Before the cap, about 80 such reports made every listing fail.
async fn maximal_reports_still_list(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(100_000, 100_000), "a").await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    let posts = futures::stream::iter(1..=500).map(|n| {
        let server = &server;
        async move {
            let resp = post(server, LEGACY, maximal_report(n)).await;
            assert_eq!(resp.status().as_u16(), 204, "report {n}");
        }
    });
    futures::StreamExt::buffer_unordered(posts, 8)
        .collect::<Vec<()>>()
        .await;
    let (_, reports) = listing(&server, &admin).await;
    assert_eq!(reports.len(), 500);
    for entry in &reports {
        let stored = entry["report"].to_string();
        assert!(stored.len() <= 4096, "{}", stored.len());
        let doc = &entry["report"]["csp-report"];
        assert_eq!(doc["effective-directive"], "script-src-elem");
        assert!(!stored.contains("token=t"), "redacted before the cut");
    }
    let (code, html) = server
        .http
        .get(server.url("/admin/csp/reports"))
        .bearer_auth(&admin)
        .header("accept", "text/html")
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(code, 200);
    let html = html.text().await.unwrap();
    assert_eq!(html.matches("<tr><td>").count(), 500);
    assert!(html.contains("500 report(s), newest first."));
    server.stop().await.unwrap();
}

on_both_backends!(maximal_reports, maximal_reports_still_list);

async fn html_carries_the_report_only_policy(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(100_000, 100_000), "a").await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    let hostile = json!({"csp-report": {
        "document-uri": "https://pos.example.com/?token=abc",
        "blocked-uri": "javascript:<img src=x onerror=alert(1)>",
        "effective-directive": "script-src",
    }});
    assert_eq!(
        post(&server, LEGACY, hostile.to_string())
            .await
            .status()
            .as_u16(),
        204
    );

    let resp = server
        .http
        .get(server.url("/admin/csp/reports"))
        .bearer_auth(&admin)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let headers = resp.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = headers["content-security-policy-report-only"]
        .to_str()
        .unwrap();
    // Over plain HTTP only report-uri: with report-to present Chromium would
    // ignore report-uri, and it drops non-HTTPS reporting endpoints.
    assert_eq!(policy, neo_ops::triggers::http::CSP_REPORT_ONLY);
    assert!(policy.contains("report-uri /csp/report"), "{policy}");
    assert!(!policy.contains("report-to"), "{policy}");
    assert!(headers.get("reporting-endpoints").is_none());
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("javascript:&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains("https://pos.example.com/?token=REDACTED"),
        "{page}"
    );

    // JSON responses do not carry it.
    let resp = server
        .http
        .get(server.url("/admin/csp/reports"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        resp.headers()
            .get("content-security-policy-report-only")
            .is_none()
    );
    server.stop().await.unwrap();
}

on_both_backends!(report_only_header, html_carries_the_report_only_policy);

/// A POS web app on its own origin reporting through the Reporting API:
/// the CORS preflight is answered, the report's answer may be read across
/// origins, and `report-to` is named for requests that came over HTTPS
/// (through a trusted proxy's `X-Forwarded-Proto`), never over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporting_api_across_origins_over_https() {
    let dep = Deployment::new(Backend::Embedded).await;
    let mut settings = dep.settings("a");
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let server = dep.start_with_services(&manifest(100, 100), services).await;
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/csp/report"))
        .header("origin", "https://pos.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, if-none-match"
    );
    // The admin listing (a role route) answers no preflight.
    let admin_preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/admin/csp/reports"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_preflight.status().as_u16(), 405);
    assert!(
        admin_preflight.headers().contains_key("allow"),
        "{:?}",
        admin_preflight.headers()
    );
    assert_eq!(
        admin_preflight.text().await.unwrap(),
        envelope(405, "method \"OPTIONS\" is not allowed here")
    );

    let (content_type, body) = report(2);
    let resp = server
        .http
        .post(server.url("/csp/report"))
        .header("content-type", content_type)
        .header("origin", "https://pos.example.com")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");

    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    let html = server
        .http
        .get(server.url("/admin/csp/reports"))
        .bearer_auth(&admin)
        .header("accept", "text/html")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let policy = html.headers()["content-security-policy-report-only"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(policy, neo_ops::triggers::http::CSP_REPORT_ONLY_HTTPS);
    assert_eq!(
        html.headers()["reporting-endpoints"].to_str().unwrap(),
        "csp-endpoint=\"/csp/report\""
    );
    server.stop().await.unwrap();
}

/// Copies of one report collapse into one entry whose count and last-seen
/// time move; distinct reports past a client's budget are counted in one
/// overflow entry, so the counts add up to every report received.
async fn identical_reports_collapse(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(3, 100_000), "a").await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    // 40 copies of report 2 (the Reporting API's copies differ in `age`).
    let (content_type, body) = report(2);
    for age in 0..40 {
        let copy = body.replace("\"age\":3", &format!("\"age\":{age}"));
        assert!(copy.contains(&format!("\"age\":{age},")), "{copy}");
        let resp = post(&server, content_type, copy).await;
        assert_eq!(resp.status().as_u16(), 204);
    }
    let (_, reports) = listing(&server, &admin).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["count"], 40);
    let first = reports[0]["received_at"].as_str().unwrap();
    let last = reports[0]["last_seen"].as_str().unwrap();
    assert!(last >= first, "{first} .. {last}");

    // Ten distinct reports against a budget of 3: two more entries of their
    // own, the other eight in the overflow entry.
    for n in 11..=20 {
        let (content_type, body) = report(n);
        assert_eq!(
            post(&server, content_type, body).await.status().as_u16(),
            204
        );
    }
    let (body, reports) = listing(&server, &admin).await;
    assert_eq!(reports.len(), 4, "{reports:?}");
    let overflow = &reports[0];
    assert_eq!(overflow["kind"], "overflow");
    assert_eq!(overflow["count"], 8);
    assert_eq!(number(&json!({"report": overflow["report"]["first"]})), 13);
    let total: u64 = reports.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 50);
    assert!(!body.contains("SeCrEt"), "a token survived");
    server.stop().await.unwrap();
}

on_both_backends!(collapse, identical_reports_collapse);

/// One client flooding distinct reports (an attacker hiding the reports of
/// a script it injected) holds at most its daily share of the list, plus
/// one overflow entry counting the rest: another client's reports stay
/// listed. A share of none is refused, naming the setting.
async fn a_client_holds_at_most_its_share(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let mut settings = dep.settings("a");
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let manifest =
        manifest(100, 100_000).replace(r#"client_share = "100000""#, r#"client_share = "4""#);
    let server = dep.start_with_services(&manifest, services).await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    let post_from = |client: &'static str, n: usize| {
        let (content_type, body) = report(n);
        let request = server
            .http
            .post(server.url("/csp/report"))
            .header("content-type", content_type)
            .header("x-forwarded-for", client)
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post_from("198.51.100.8", 1).await, 204);
    for n in 101..=130 {
        assert_eq!(post_from("198.51.100.7", n).await, 204);
    }
    assert_eq!(post_from("198.51.100.8", 2).await, 204);

    let (_, reports) = listing(&server, &admin).await;
    let from_flood = |e: &&Value| {
        let first = json!({"report": e["report"]["first"]});
        let line = if e["kind"] == "overflow" {
            number(&first)
        } else {
            number(e)
        };
        line > 100
    };
    let flood: Vec<&Value> = reports.iter().filter(from_flood).collect();
    assert_eq!(flood.len(), 5, "four entries and one overflow: {reports:?}");
    let overflow = flood
        .iter()
        .find(|e| e["kind"] == "overflow")
        .expect("an overflow entry");
    assert_eq!(overflow["count"], 26);
    assert_eq!(overflow["report"]["client"], "198.51.100.7");
    assert_eq!(
        overflow["report"]["note"],
        "distinct reports past this client's share of the list for the day, counted here; the first is kept"
    );
    assert_eq!(number(&json!({"report": overflow["report"]["first"]})), 105);
    let others: Vec<u64> = reports
        .iter()
        .filter(|e| !from_flood(e))
        .map(number)
        .collect();
    assert_eq!(
        others,
        [2, 1],
        "the other client's reports stay: {reports:?}"
    );
    let total: u64 = reports.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 32);
    server.stop().await.unwrap();

    let manifest = manifest.replace(r#"client_share = "4""#, r#"client_share = "0""#);
    let server = dep.start(&manifest, "a").await;
    let (content_type, body) = report(1);
    let resp = post(&server, content_type, body).await;
    assert_eq!(resp.status().as_u16(), 500);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("config client_share must be at least 1"),
        "{text}"
    );
    server.stop().await.unwrap();
}

on_both_backends!(client_share, a_client_holds_at_most_its_share);

/// The entries for the images of the page at `path`, with their counts
/// summed (an overflow entry counts for the report it keeps first).
fn reports_from(reports: &[Value], path: &str) -> (Vec<Value>, u64) {
    let field = |entry: &Value, legacy: &str, reporting_api: &str| {
        let mut report = &entry["report"];
        if entry["kind"] == "overflow" {
            report = &report["first"];
        }
        report["csp-report"][legacy]
            .as_str()
            .or(report["body"][reporting_api].as_str())
            .unwrap_or("")
            .to_string()
    };
    let matching: Vec<Value> = reports
        .iter()
        .filter(|e| field(e, "document-uri", "documentURL").ends_with(path))
        .cloned()
        .collect();
    let total = matching.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    (matching, total)
}

/// A page with `images` distinct blocked images, each URL carrying a token.
fn violating_page(images: usize) -> String {
    // The icon in the page (allowed) keeps Chromium from fetching
    // /favicon.ico, a violation of its own.
    let mut html = String::from(
        "<!doctype html><html><head><title>pos</title>\
         <link rel=\"icon\" href=\"data:,\"></head><body>",
    );
    for i in 0..images {
        html.push_str(&format!(
            "<img alt=\"\" src=\"/img/{i}.png?token=PaGeSeCrEt{i}\">"
        ));
    }
    html + "</body></html>"
}

/// Real Chromium (headless) loads pages of a POS app served over HTTPS from
/// another origin, whose Report-Only policy points at neo-ops behind a TLS
/// front (a self-signed certificate trusted by its SPKI hash): with both
/// `report-uri` and the Reporting API named, Chromium reports through the
/// Reporting API (a CORS preflight, then `application/reports+json`) and
/// every violation is listed with its token redacted; a page with 150
/// violations reported through `report-uri` (150 posts from one client,
/// past its budget of 120 entries) loses none: the counts add up to 150.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reports_reach_the_listing() {
    use http_body_util::Full;
    use std::sync::Arc;
    use support::browser::{Browser, Certificate, Handler, Site};

    let dep = Deployment::new(Backend::Real).await;
    let mut settings = dep.settings("a");
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let server = dep
        .start_with_services(&manifest(120, 1200), services)
        .await;
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "sec")
        .await
        .unwrap();
    let cert = Certificate::new();
    let front = Site::front(&cert, server.addr).await;
    let endpoint = front.url("127.0.0.1", "/csp/report");
    let pages: Handler = Arc::new(move |req| {
        let endpoint = endpoint.clone();
        Box::pin(async move {
            let (policy, images) = match req.uri().path() {
                "/both" => (
                    format!("img-src data:; report-uri {endpoint}; report-to csp"),
                    12,
                ),
                "/burst" => (format!("img-src data:; report-uri {endpoint}"), 150),
                _ => {
                    return hyper::Response::builder()
                        .status(404)
                        .body(Full::default())
                        .unwrap();
                }
            };
            hyper::Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .header("content-security-policy-report-only", policy)
                .header("reporting-endpoints", format!("csp=\"{endpoint}\""))
                .body(Full::from(violating_page(images)))
                .unwrap()
        })
    });
    let app = Site::start(&cert, pages).await;

    // Both named: Chromium takes the Reporting API.
    let browser = Browser::open(&app.url("localhost", "/both"), Some(&cert.spki));
    let (body, both) = wait_for_reports(&server, &admin, "/both", 12).await;
    drop(browser);
    assert_eq!(both.len(), 12, "{both:?}");
    for entry in &both {
        assert_eq!(entry["kind"], "csp-violation", "{entry}");
        assert_eq!(entry["content_type"], REPORTING_API);
        let blocked = entry["report"]["body"]["blockedURL"].as_str().unwrap();
        assert!(blocked.ends_with("?token=REDACTED"), "{blocked}");
        assert_eq!(entry["report"]["body"]["effectiveDirective"], "img-src");
    }
    assert!(!body.contains("PaGeSeCrEt"), "a token survived");

    // 150 violations, one post each.
    let browser = Browser::open(&app.url("localhost", "/burst"), Some(&cert.spki));
    let (body, burst) = wait_for_reports(&server, &admin, "/burst", 150).await;
    drop(browser);
    assert!(
        burst.iter().any(|e| e["kind"] == "overflow"),
        "past the budget, reports are counted in an overflow entry"
    );
    assert!(burst.iter().all(|e| e["kind"] != "csp-violation"));
    assert!(!body.contains("PaGeSeCrEt"), "a token survived");
    server.stop().await.unwrap();
}

/// Polls the listing until the reports from `path` add up to `expected`
/// (or 30 s pass); returns the listing's text and those entries.
async fn wait_for_reports(
    server: &Server,
    admin: &str,
    path: &str,
    expected: u64,
) -> (String, Vec<Value>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (body, reports) = listing(server, admin).await;
        let (matching, total) = reports_from(&reports, path);
        if total >= expected || std::time::Instant::now() > deadline {
            assert_eq!(total, expected, "reports from {path}: {matching:?}");
            return (body, matching);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
