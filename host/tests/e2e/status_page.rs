//! The status page end to end: commands change state, `GET /status.json`
//! reports it, on both backends.

use crate::support;

use support::{Backend, Deployment};

const MANIFEST: &str = r#"
[plugins.status-page]
component = "status_page.wasm"
routes = [
  { method = "GET", path = "/status.json" },
  { method = "GET", path = "/status" },
  { method = "GET", path = "/status/style.css" },
  { method = "GET", path = "/status/health" },
  { method = "GET", path = "/api/v2/status.json" },
  { method = "GET", path = "/api/v2/summary.json" },
  { method = "GET", path = "/api/v2/incidents/unresolved.json" },
]
command = true
grants = { db = ["master"], kv = ["status:"], audit = true }
limits = { memory = "32MiB", timeout = "5s" }
"#;

async fn status(server: &support::Server) -> serde_json::Value {
    let (code, body) = server.get("/status.json", None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn start_resolve_and_state(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;

    let s = status(&server).await;
    assert_eq!(s["state"], "operational");
    assert_eq!(s["incidents"], serde_json::json!([]));
    // No incident ever: a time all the same, one that never moves.
    assert_eq!(s["page"]["updated_at"], "1970-01-01T00:00:00.000Z");

    let out = server
        .command(
            "status-page",
            &["start", "Checkout slow", "Payment gateway latency above 5s"],
        )
        .await
        .unwrap();
    assert!(out.contains("started incident \"Checkout slow\""), "{out}");
    server
        .command(
            "status-page",
            &["start", "KOT printers offline", "Outlet 12"],
        )
        .await
        .unwrap();

    let s = status(&server).await;
    assert_eq!(s["state"], "degraded");
    let incidents = s["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents[0]["title"], "Checkout slow");
    assert_eq!(incidents[0]["details"], "Payment gateway latency above 5s");
    let started = incidents[0]["started_at"].as_str().unwrap();
    millis_and_z(started);
    let started = chrono::DateTime::parse_from_rfc3339(started).expect("started_at is RFC 3339");
    assert!((chrono::Utc::now() - started.to_utc()).num_seconds().abs() < 60);

    // Starting an active title again is refused and changes nothing.
    let err = server
        .command("status-page", &["start", "Checkout slow", "dup"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409);
    assert!(err.to_string().contains("already active"), "{err}");

    // Resolving an unknown title is a clear error.
    let err = server
        .command("status-page", &["resolve", "No such thing"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), 404);
    // It names the titles that are active, so a typo is put right at once.
    let message = err.to_string();
    assert!(
        message.starts_with("no active incident titled \"No such thing\" (active: ")
            && message.contains("\"Checkout slow\""),
        "{message}"
    );

    // Bad usage names the usage.
    let err = server
        .command("status-page", &["frobnicate"])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("usage: status-page"), "{err}");

    server
        .command("status-page", &["resolve", "Checkout slow"])
        .await
        .unwrap();
    let s = status(&server).await;
    assert_eq!(s["state"], "degraded");
    assert_eq!(s["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(s["incidents"][0]["title"], "KOT printers offline");

    server
        .command("status-page", &["resolve", "KOT printers offline"])
        .await
        .unwrap();
    let s = status(&server).await;
    assert_eq!(s["state"], "operational");
    assert_eq!(s["incidents"], serde_json::json!([]));
    // With nothing active the page last changed at the last resolution
    // (Statuspage clients read updated_at as a time, never null).
    let updated = s["page"]["updated_at"].as_str().expect("page.updated_at");
    millis_and_z(updated);
    let updated = chrono::DateTime::parse_from_rfc3339(updated).unwrap();
    assert!((chrono::Utc::now() - updated.to_utc()).num_seconds().abs() < 60);
    // Each resolution closes its incident's timeline with a resolved entry.
    let resolved = support::ints(
        server.master(),
        "SELECT COUNT(*) FROM incident_updates WHERE status = 'resolved' \
         AND message = 'This incident has been resolved.'",
        &[],
    )
    .await;
    assert_eq!(resolved, vec![2]);

    // The same title can be started again once resolved; history is kept.
    server
        .command("status-page", &["start", "Checkout slow", "again"])
        .await
        .unwrap();
    let total = support::ints(server.master(), "SELECT COUNT(*) FROM incidents", &[]).await;
    assert_eq!(total, vec![3], "two started, one refused, one restarted");
    // Every change is on record, nothing refused is.
    let records = server
        .master()
        .query(
            "SELECT action, target FROM audit_log WHERE plugin = 'status-page' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let text = |v: &neo_ops::backends::db::Value| match v {
        neo_ops::backends::db::Value::Text(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    let records: Vec<(String, String)> = records
        .rows
        .iter()
        .map(|r| (text(&r[0]), text(&r[1])))
        .collect();
    let want = [
        ("incident.start", "incident:Checkout slow"),
        ("incident.start", "incident:KOT printers offline"),
        ("incident.resolve", "incident:Checkout slow"),
        ("incident.resolve", "incident:KOT printers offline"),
        ("incident.start", "incident:Checkout slow"),
    ];
    assert_eq!(records, want.map(|(a, t)| (a.to_string(), t.to_string())));
    server.stop().await.unwrap();
}

on_both_backends!(status_page_lifecycle, start_resolve_and_state);

/// Read as a Statuspage client would: the indicator and description follow
/// the incidents and their impact; updates show; conditional requests get
/// 304; another origin may read the documents; `/status/health` is 200,
/// then 503 while degraded, then 200 again; `/status` shows it to people.
async fn statuspage_clients(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    let get = |path: &str, etag: Option<&str>| {
        let mut req = server.http.get(server.url(path));
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        req.send()
    };
    let json = |path: &'static str| async move {
        let resp = get(path, None).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.json::<serde_json::Value>().await.unwrap()
    };
    let s = json("/api/v2/summary.json").await;
    assert_eq!(s["status"]["indicator"], "none");
    assert_eq!(s["status"]["description"], "All Systems Operational");
    let components = s["components"].as_array().unwrap();
    assert!(!components.is_empty() && components.iter().all(|c| c["status"] == "operational"));
    // Every key a Statuspage component has, for clients that index them.
    let c = &components[0];
    assert_eq!(
        (&c["group"], &c["group_id"], &c["showcase"], &c["page_id"]),
        (
            &serde_json::json!(false),
            &serde_json::Value::Null,
            &serde_json::json!(true),
            &s["page"]["id"]
        ),
        "{c}"
    );
    assert!(c["only_show_if_degraded"] == false && c["updated_at"].is_string());
    assert_eq!(s["incidents"], serde_json::json!([]));
    assert_eq!(
        get("/status/health", None).await.unwrap().status().as_u16(),
        200
    );

    let cmd = |args: &'static [&'static str]| server.command("status-page", args);
    cmd(&[
        "start",
        "Checkout slow",
        "Gateway latency",
        "--impact",
        "major",
    ])
    .await
    .unwrap();
    cmd(&["start", "KOT printers", "Outlet 12"]).await.unwrap();
    cmd(&[
        "update",
        "Checkout slow",
        "Failing over to the backup gateway",
    ])
    .await
    .unwrap();
    let err = cmd(&["start", "X", "y", "--impact", "apocalyptic"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown impact \"apocalyptic\" (minor, major or critical)"
    );
    let err = cmd(&["update", "Nothing", "msg"]).await.unwrap_err();
    assert_eq!(err.status(), 404);

    let s = json("/api/v2/summary.json").await;
    assert_eq!(s["status"]["indicator"], "major", "the worst impact wins");
    assert_eq!(s["status"]["description"], "Partial System Outage");
    let components = s["components"].as_array().unwrap();
    assert!(components.iter().all(|c| c["status"] == "partial_outage"));
    let incidents = s["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2);
    let checkout = incidents
        .iter()
        .find(|i| i["name"] == "Checkout slow")
        .unwrap();
    assert_eq!(checkout["impact"], "major");
    assert_eq!(checkout["status"], "identified");
    assert_eq!(
        checkout["incident_updates"][0]["body"],
        "Failing over to the backup gateway"
    );
    // Newest first, down to the details it was started with: what an
    // aggregator shows for an incident nobody has updated yet.
    let opened = &checkout["incident_updates"][1];
    assert_eq!(
        (&opened["status"], &opened["body"], &opened["created_at"]),
        (
            &serde_json::json!("investigating"),
            &serde_json::json!("Gateway latency"),
            &checkout["started_at"]
        )
    );
    assert_eq!(checkout["page_id"], "neo");
    assert_eq!(checkout["monitoring_at"], serde_json::Value::Null);
    assert_eq!(opened["incident_id"], checkout["id"]);
    assert_eq!(opened["affected_components"], serde_json::json!([]));
    let kot = incidents
        .iter()
        .find(|i| i["name"] == "KOT printers")
        .unwrap();
    assert_eq!(kot["incident_updates"][0]["body"], "Outlet 12");

    // An update escalates with the words that say why; resolve takes no
    // impact.
    let out = cmd(&[
        "update",
        "KOT printers",
        "Every outlet now",
        "--impact",
        "critical",
    ])
    .await
    .unwrap();
    assert_eq!(out, "updated incident \"KOT printers\", now critical\n");
    let s = json("/api/v2/summary.json").await;
    assert_eq!(s["status"]["indicator"], "critical");
    let err = cmd(&["resolve", "KOT printers", "--impact", "minor"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    let unresolved = json("/api/v2/incidents/unresolved.json").await;
    assert_eq!(unresolved["incidents"].as_array().unwrap().len(), 2);

    // The spec's document keeps its shape and gains Statuspage's fields.
    let resp = get("/status.json", None).await.unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    // A widget on another origin reads the tag to send it back.
    assert_eq!(resp.headers()["access-control-expose-headers"], "etag");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["state"], "degraded");
    assert_eq!(doc["incidents"].as_array().unwrap().len(), 2);
    assert_eq!(doc["status"]["indicator"], "critical");
    assert_eq!(doc["page"]["name"], "neo");
    let api = json("/api/v2/status.json").await;
    assert_eq!(api["status"], doc["status"]);

    // Revalidation: the same document is 304 with no body; a change is not.
    let again = get("/status.json", Some(&etag)).await.unwrap();
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    // The tag also counts on a second If-None-Match line (a list split up).
    let split = server
        .http
        .get(server.url("/status.json"))
        .header("if-none-match", "\"other\"")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(split.status().as_u16(), 304);
    // HEAD: a 304 carries no length (RFC 9110 §8.6 bars a false one); a
    // 200 carries the one a GET's body has.
    let head = |etag: Option<&str>| {
        let mut req = server.http.head(server.url("/status.json"));
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        req.send()
    };
    let not_modified = head(Some(&etag)).await.unwrap();
    assert_eq!(not_modified.status().as_u16(), 304);
    assert_eq!(not_modified.headers().get("content-length"), None);
    let full = head(None).await.unwrap();
    assert_eq!(full.status().as_u16(), 200);
    let body_len = get("/status.json", None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    assert_eq!(
        full.headers()["content-length"],
        body_len.to_string().as_str()
    );
    assert_eq!(
        get("/status/health", None).await.unwrap().status().as_u16(),
        503
    );

    // People: the HTML page shows the active incident and its update.
    let page = get("/status", None).await.unwrap();
    let content_type = page.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Major Service Outage") && html.contains("Checkout slow"),
        "{html}"
    );
    assert!(
        html.contains("Failing over to the backup gateway"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("style="),
        "no inline script or style"
    );
    // In a real browser, on a phone and on a desktop: the incident and its
    // update are visible text, and a screenshot is kept as an artefact.
    for (width, height) in [(390, 844), (1280, 800)] {
        let browser = support::webdriver::Session::start(width, height, None).await;
        browser.client.goto(&server.url("/status")).await.unwrap();
        let text = browser.visible_text().await;
        assert!(
            text.contains("Major Service Outage")
                && text.contains("Checkout slow")
                && text.contains("Failing over to the backup gateway"),
            "{text}"
        );
        let widths = browser
            .eval("return [window.innerWidth, document.documentElement.scrollWidth];")
            .await;
        assert_eq!(widths, serde_json::json!([width, width]), "viewport, page");
        browser
            .screenshot(&format!("status-{backend:?}-{width}.png"))
            .await;
        browser.close().await;
    }

    cmd(&["resolve", "Checkout slow"]).await.unwrap();
    cmd(&["resolve", "KOT printers"]).await.unwrap();
    let changed = get("/status.json", Some(&etag)).await.unwrap();
    assert_eq!(changed.status().as_u16(), 200);
    assert_eq!(
        get("/status/health", None).await.unwrap().status().as_u16(),
        200
    );
    let s = json("/api/v2/summary.json").await;
    assert_eq!(s["status"]["indicator"], "none");
    let html = get("/status", None).await.unwrap().text().await.unwrap();
    assert!(
        html.contains("Resolved in the last 14 days") && html.contains("Checkout slow"),
        "{html}"
    );
    server.stop().await.unwrap();
}

on_both_backends!(statuspage_compatible, statuspage_clients);

async fn health_and_readiness(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    let (code, body) = server.get("/healthz", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ok"
    );
    let (code, body) = server.get("/readyz", None).await;
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    let expected_db = if backend == Backend::Real {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(ready["checks"]["database"]["backend"], expected_db);
    let (code, body) = server.get("/no/such/route", None).await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        r#"{"ok":false,"error":{"code":404,"message":"no route \"/no/such/route\""}}"#
    );
    server.stop().await.unwrap();
}

on_both_backends!(health_and_ready, health_and_readiness);

/// With the master database away, the routes answer with the board as last
/// kept (after the last incident change), saying how old it is; once it is
/// back they are live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_answers_through_a_master_outage() {
    let dep = Deployment::new(Backend::Real).await;
    // The shipped time limit: the kept board must come within it.
    let manifest = MANIFEST.replace("timeout = \"5s\"", "timeout = \"2s\"");
    let (server, pg) = dep.start_with_master_proxy(&manifest).await;
    server
        .command(
            "status-page",
            &["start", "Checkout slow", "Gateway latency"],
        )
        .await
        .unwrap();
    let live = status(&server).await;
    assert_eq!(live["state"], "degraded");
    let tag = |resp: &reqwest::Response| resp.headers()["etag"].to_str().unwrap().to_string();
    let live_tag = tag(&server
        .http
        .get(server.url("/status.json"))
        .send()
        .await
        .unwrap());

    pg.set_up(false);
    // The proxy cuts its open connections as it goes down: a statement
    // already through them may still answer live.
    let resp = status_json_until(&server, "the kept board", |resp| {
        resp.headers().contains_key("x-status-as-of")
    })
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    // The same body, dated: another representation, so a cache holding the
    // live one does not get a 304 (whose headers it would keep after).
    let kept_tag = tag(&resp);
    assert_ne!(kept_tag, live_tag);
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "x-status-as-of, etag",
        "a widget on another origin may read it"
    );
    let as_of = resp.headers()["x-status-as-of"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&as_of).is_ok(),
        "{as_of}"
    );
    let kept: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(kept, live, "the same document, kept");
    // A checker reading only the code never hears "healthy" from a kept board.
    let (code, body) = server.get("/status/health", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""state":"unknown""#), "{body}");
    let (code, page) = server.get("/status", None).await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("Live status is unavailable: this is the page as of")
            && page.contains("Checkout slow"),
        "{page}"
    );
    // A change cannot be made meanwhile, and says so.
    assert!(
        server
            .command("status-page", &["resolve", "Checkout slow"])
            .await
            .is_err()
    );

    pg.set_up(true);
    live_again_within_10s(&server).await;
    // A cache holding the kept board gets the live one, undated. Before,
    // the tag was the body's alone: a 304, and the cache went on showing
    // the outage's `x-status-as-of` until the board next changed.
    let resp = server
        .http
        .get(server.url("/status.json"))
        .header("if-none-match", &kept_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("x-status-as-of").is_none());
    assert_eq!(tag(&resp), live_tag);
    server.stop().await.unwrap();
}

/// With the master away and no board kept yet, the human page still
/// answers as a page: 503 in HTML, saying so, with `Retry-After`. Before,
/// a person opening `/status` got the machines' JSON error envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_says_so_in_html_when_nothing_is_kept() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = MANIFEST.replace("timeout = \"5s\"", "timeout = \"2s\"");
    let (server, pg) = dep.start_with_master_proxy(&manifest).await;
    pg.set_up(false);
    let resp = server.http.get(server.url("/status")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(resp.headers()["retry-after"], "30");
    let page = resp.text().await.unwrap();
    assert!(
        page.starts_with("<!doctype html>") && page.contains("Live status is unavailable"),
        "{page}"
    );
    // The documents for machines keep the envelope.
    let (code, body) = server.get("/status.json", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with(r#"{"ok":false"#), "{body}");
    pg.set_up(true);
    server.stop().await.unwrap();
}

/// Asks for `/status.json` until its answer is `wanted`, failing with
/// `what` after 10 s; returns that answer.
async fn status_json_until(
    server: &support::Server,
    what: &str,
    wanted: impl Fn(&reqwest::Response) -> bool,
) -> reqwest::Response {
    let within = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let resp = server
            .http
            .get(server.url("/status.json"))
            .send()
            .await
            .unwrap();
        if wanted(&resp) {
            return resp;
        }
        assert!(std::time::Instant::now() < within, "never {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until `/status.json` is served live again (no `x-status-as-of`),
/// failing after 10 s.
async fn live_again_within_10s(server: &support::Server) {
    status_json_until(server, "live again", |resp| {
        resp.status().as_u16() == 200 && resp.headers().get("x-status-as-of").is_none()
    })
    .await;
}

/// A master that takes connections but never answers (a blackholed host,
/// not a refusing one): the page still answers with the kept board within
/// its 2 s, the database being given up on at 1.5 s; the host then pings
/// it and keeps statements failing fast while it stays silent, so later
/// requests are answered at once; once it answers again the page is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_answers_through_a_hung_master() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = MANIFEST.replace("timeout = \"5s\"", "timeout = \"2s\"");
    let (server, pg) = dep.start_with_master_proxy(&manifest).await;
    server
        .command("status-page", &["start", "Till offline", "Outlet 4"])
        .await
        .unwrap();
    let live = status(&server).await;

    pg.set_hanging();
    let kept = |asked: std::time::Instant| {
        let server = &server;
        async move {
            let resp = server
                .http
                .get(server.url("/status.json"))
                .send()
                .await
                .unwrap();
            let waited = asked.elapsed();
            assert_eq!(resp.status().as_u16(), 200, "after {waited:?}");
            assert!(resp.headers().contains_key("x-status-as-of"));
            let body: serde_json::Value = resp.json().await.unwrap();
            (body, waited)
        }
    };
    let (first, waited) = kept(std::time::Instant::now()).await;
    assert_eq!(first, live, "the same document, kept");
    assert!(waited < std::time::Duration::from_secs(2), "{waited:?}");
    // The host's probe goes unanswered too (within 2 s): statements then
    // fail at once, and the kept board comes without waiting.
    let probed = std::time::Instant::now();
    while kept(std::time::Instant::now()).await.1 >= std::time::Duration::from_millis(500) {
        assert!(
            probed.elapsed() < std::time::Duration::from_secs(8),
            "every request still waits for the database"
        );
    }
    for _ in 0..5 {
        let (_, waited) = kept(std::time::Instant::now()).await;
        assert!(waited < std::time::Duration::from_millis(500), "{waited:?}");
    }

    pg.set_up(true);
    live_again_within_10s(&server).await;
    server.stop().await.unwrap();
}

/// The binary itself: `neo-ops run` prints the output and exits non-zero on error.
#[test]
fn cli_run_exit_codes() {
    let cli = support::Cli::new(MANIFEST);
    let ok = cli.run(&["run", "status-page", "start", "Checkout slow", "latency"]);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    assert_eq!(ok.stdout, "started incident \"Checkout slow\"\n");
    let bad = cli.run(&["run", "status-page", "resolve", "Unknown"]);
    assert_eq!(bad.code, Some(1));
    assert_eq!(
        bad.stderr.trim(),
        "error: no active incident titled \"Unknown\" (active: \"Checkout slow\")"
    );
    let missing = cli.run(&["run", "no-such-plugin"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing
            .stderr
            .contains("no plugin named \"no-such-plugin\"")
    );
    let check = cli.run(&["check"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
}

/// A time written as Statuspage writes one, `YYYY-MM-DDTHH:MM:SS.mmmZ`:
/// always three digits of fraction, so a client parsing with one pattern
/// reads every value. Before, a time on a whole second had none.
fn millis_and_z(time: &str) {
    let b = time.as_bytes();
    assert!(
        b.len() == 24 && b[19] == b'.' && b[23] == b'Z' && b[20..23].iter().all(u8::is_ascii_digit),
        "{time}"
    );
}
