//! The status page end to end: commands change state, `GET /status.json`
//! reports it, on both backends.

use crate::support;

use support::{Backend, Deployment};

const MANIFEST: &str = r#"
[plugins.status-page]
component = "status_page.wasm"
routes = [{ method = "GET", path = "/status.json" }]
command = true
grants = { db = ["master"] }
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
    assert_eq!(
        err.to_string(),
        "no active incident titled \"No such thing\""
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

    // The same title can be started again once resolved; history is kept.
    server
        .command("status-page", &["start", "Checkout slow", "again"])
        .await
        .unwrap();
    let total = support::ints(server.master(), "SELECT COUNT(*) FROM incidents", &[]).await;
    assert_eq!(total, vec![3], "two started, one refused, one restarted");
    server.stop().await.unwrap();
}

on_both_backends!(status_page_lifecycle, start_resolve_and_state);

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
        r#"{"ok":false,"error":{"code":404,"message":"not found"}}"#
    );
    server.stop().await.unwrap();
}

on_both_backends!(health_and_ready, health_and_readiness);

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
        "error: no active incident titled \"Unknown\""
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
