//! `GET /metrics` read by a real Prometheus (Debian `prometheus`, started by
//! the test): the invocation count of a plugin the test called comes back
//! through Prometheus's query API.

use neo_ops::manifest::Role;
use std::time::{Duration, Instant};

use crate::support::{self, Backend, Deployment};

const MANIFEST: &str = r#"
[plugins.status-page]
component = "status_page.wasm"
routes = [{ method = "GET", path = "/status.json" }]
grants = { db = ["master"], kv = ["status:"], audit = true }
"#;

/// What Prometheus 2.42 asks a target for.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Runs `promtool check metrics` (Debian's `prometheus`) over `text`: it
/// parses the Prometheus text format and lints it.
fn promtool_finds_clean(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("Debian's prometheus (promtool) must be installed (.ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the Prometheus the test started.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_invocation_counts() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(MANIFEST, "a").await;
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "prometheus")
        .await
        .unwrap();
    for _ in 0..7 {
        assert_eq!(server.get("/status.json", None).await.0, 200);
    }
    // The role is checked; the text is Prometheus's.
    assert_eq!(
        server.get("/metrics", None).await,
        (403, support::FORBIDDEN.to_string())
    );
    let (status, text) = server.get("/metrics", Some(&token)).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            r#"neo_ops_invocations_total{plugin="status-page",trigger="http",outcome="ok"} 7"#
        ),
        "{text}"
    );
    assert!(text.contains("neo_ops_slots_in_use"), "{text}");
    // Asked for without OpenMetrics (curl, an agent that reads only the
    // Prometheus text), the answer is Prometheus text 0.0.4, which
    // `promtool` (a 0.0.4 reader) finds clean. Before, it was OpenMetrics
    // whatever was asked: promtool read the counters as untyped, with no
    // help ("neo_ops_invocations_total no help text", exit 3).
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let mut request = server.http.get(server.url("/metrics")).bearer_auth(&token);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("# TYPE neo_ops_invocations_total counter\n") && !text.contains("# EOF"),
            "{text}"
        );
        promtool_finds_clean(&text);
    }
    let resp = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(&token)
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(resp.text().await.unwrap().ends_with("# EOF\n"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: neo-ops\n    \
             authorization:\n      type: Bearer\n      credentials: {token}\n    \
             static_configs:\n      - targets: [\"{}\"]\n",
            server.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Debian's prometheus must be installed (.ci/run installs it)");
    let _prometheus = Prometheus(child);
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        "neo_ops_invocations_total%7Bplugin%3D%22status-page%22%2Coutcome%3D%22ok%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = server.http.get(&query).send().await
            && let Ok(doc) = resp.json::<serde_json::Value>().await
            && let Some(value) = doc["data"]["result"][0]["value"][1].as_str()
        {
            assert_eq!(value, "7", "{doc}");
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never had the count");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.stop().await.unwrap();
}

/// An answer of 400 or over to a command (which then exits 1) counts as
/// `failed`; a route's answer counts as `ok` whatever its final status (a
/// health route answers 503 on purpose while degraded), and as `failed`
/// when its status is no final HTTP status (logged, answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_answers_count_as_failed() {
    const FAULTS: &str = r#"
[plugins.faults]
component = "test_faults.wasm"
routes = [{ method = "GET", path = "/faults/{mode}" }]
command = true
"#;
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(FAULTS, "a").await;
    assert_eq!(server.get("/faults/status-404", None).await.0, 404);
    assert_eq!(server.get("/faults/status-503", None).await.0, 503);
    // No final HTTP status at all: the plugin's fault, answered 500.
    let (code, body) = server.get("/faults/status-700", None).await;
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains(r#"answered status 700, which is not a final HTTP status"#),
        "{body}"
    );
    for mode in ["ok", "status-409"] {
        server.command("faults", &[mode]).await.unwrap();
    }
    let text = server.services.metrics.render();
    for (trigger, outcome, count) in [
        ("http", "ok", 2),
        ("http", "failed", 1),
        ("command", "ok", 1),
        ("command", "failed", 1),
    ] {
        let line = format!(
            "neo_ops_invocations_total{{plugin=\"faults\",trigger=\"{trigger}\",outcome=\"{outcome}\"}} {count}\n"
        );
        assert!(text.contains(&line), "{line} in {text}");
    }
    server.stop().await.unwrap();
}
