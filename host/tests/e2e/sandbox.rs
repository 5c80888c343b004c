//! The sandbox: grants are checked before any I/O (a denied call reaches
//! nothing), and a trapping, looping or memory-hungry plugin fails alone.

use crate::support;

use serde_json::Value as Json;
use std::time::{Duration, Instant};
use support::{Backend, Deployment, HttpReceiver};

fn probe_manifest(allowed: &HttpReceiver) -> String {
    format!(
        r#"
[plugins.probe]
component = "test_probe.wasm"
command = true
grants = {{ db = ["master", "tenant:acme"], kv = ["probe:"], http = ["http://127.0.0.1:{port}"], env = ["NEO_TEST_GRANTED_VAR"] }}

[plugins.mailer]
component = "test_probe.wasm"
command = true
grants = {{ mail = true }}
config = {{ greeting = "namaste" }}

[plugins.own-tenant]
component = "test_probe.wasm"
command = true
grants = {{ db = ["tenant"] }}

[plugins.queuer]
component = "test_probe.wasm"
command = true
grants = {{ db = ["tenant:acme"], queues = ["jobs"] }}

[plugins.any-host]
component = "test_probe.wasm"
command = true
grants = {{ http = ["http://*"] }}
"#,
        port = allowed.addr.port()
    )
}

async fn probe(server: &support::Server, plugin: &str, args: &[&str]) -> Json {
    let out = server.command(plugin, args).await.expect("probe runs");
    serde_json::from_str(&out).unwrap()
}

fn assert_denied(result: &Json, what: &str) {
    assert_eq!(result["ok"], false, "{what}: {result}");
    assert_eq!(result["code"], "denied", "{what}: {result}");
}

async fn denied_capabilities_do_nothing(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let allowed = HttpReceiver::start().await;
    let forbidden = HttpReceiver::start().await;
    let server = dep.start(&probe_manifest(&allowed), "a").await;
    for t in ["acme", "globex"] {
        server.services.db.create_tenant(t, t).await.unwrap();
    }
    let settings_rows = |t: &'static str| {
        let db = server.services.db.clone();
        async move {
            let pool = db.tenant(t).await.unwrap();
            support::ints(&pool, "SELECT COUNT(*) FROM settings", &[]).await[0]
        }
    };

    // db: the granted tenant works, another tenant is denied and untouched.
    let ok = probe(&server, "probe", &["db-write", "tenant:acme", "k1"]).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_denied(
        &probe(&server, "probe", &["db-write", "tenant:globex", "k1"]).await,
        "other tenant",
    );
    assert_denied(
        &probe(&server, "probe", &["db", "tenant:globex"]).await,
        "other tenant read",
    );
    assert_eq!(settings_rows("acme").await, 1);
    assert_eq!(settings_rows("globex").await, 0);
    // The master grant does not reach the host's own tables: no token can
    // be minted or revived, no audit record forged or removed.
    for sql in [
        "INSERT INTO api_tokens (token_id, name, role, token_hash) \
         VALUES ('deadbeef', 'x', 'super_admin', 'h')",
        "UPDATE api_tokens SET revoked_at = NULL",
        "INSERT INTO audit_log (actor, action, target) VALUES ('oncall', 'x', 'y')",
        "DELETE FROM audit_log",
    ] {
        assert_denied(
            &probe(&server, "probe", &["db-sql", "master", sql]).await,
            sql,
        );
    }
    let tokens = neo_ops::auth::list_tokens(server.master(), true)
        .await
        .unwrap();
    assert!(tokens.is_empty(), "{tokens:?}");
    let read = probe(
        &server,
        "probe",
        &["db-sql", "master", "SELECT COUNT(*) AS n FROM audit_log"],
    )
    .await;
    assert_eq!(read["ok"], true, "reading the chain is allowed: {read}");
    // "tenant" grants only the invocation's own tenant.
    let own = probe(
        &server,
        "own-tenant",
        &["db", "tenant:acme", "--tenant", "acme"],
    )
    .await;
    assert_eq!(own["ok"], true, "{own}");
    assert_denied(
        &probe(
            &server,
            "own-tenant",
            &["db", "tenant:globex", "--tenant", "acme"],
        )
        .await,
        "own tenant only",
    );
    assert_denied(
        &probe(&server, "own-tenant", &["db", "master"]).await,
        "no master grant",
    );
    // A job carries the invocation's tenant only if the plugin could act for it.
    let queued = probe(
        &server,
        "queuer",
        &["enqueue", "jobs", "{}", "--tenant", "acme"],
    )
    .await;
    assert_eq!(queued["ok"], true, "{queued}");
    assert_denied(
        &probe(
            &server,
            "queuer",
            &["enqueue", "jobs", "{}", "--tenant", "globex"],
        )
        .await,
        "a tenant outside the db grants",
    );
    let jobs = server
        .services
        .kv
        .list_range(&neo_ops::backends::queue::queue_key("jobs"), 0, -1)
        .await
        .unwrap();
    let tenants: Vec<Option<String>> = jobs
        .iter()
        .map(|j| {
            serde_json::from_slice::<neo_ops::backends::queue::Job>(j)
                .unwrap()
                .tenant
        })
        .collect();
    assert_eq!(
        tenants,
        vec![Some("acme".to_string())],
        "only the granted tenant's job"
    );

    // kv: inside the prefix works; outside (and the host's namespace) is denied and unset.
    assert_eq!(
        probe(&server, "probe", &["kv", "probe:a"]).await["ok"],
        true
    );
    assert_denied(
        &probe(&server, "probe", &["kv", "other:a"]).await,
        "kv prefix",
    );
    assert_denied(
        &probe(&server, "probe", &["kv", "__queue:jobs"]).await,
        "host namespace",
    );
    // A key is a name, not a place to store a value: over 1 KiB is refused.
    let long = format!("probe:{}", "k".repeat(2000));
    let refused = probe(&server, "probe", &["kv", &long]).await;
    assert_eq!(refused["code"], "invalid", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .ends_with("is 2006 bytes, over 1024"),
        "{refused}"
    );
    assert_eq!(
        probe(&server, "probe", &["lock", &long]).await["code"],
        "invalid"
    );
    let kv = &server.services.kv;
    assert_eq!(kv.get(&long).await.unwrap(), None);
    assert_eq!(kv.get("probe:a").await.unwrap(), Some(b"probe".to_vec()));
    assert_eq!(kv.get("other:a").await.unwrap(), None);

    // outbound http: only the allow-listed host:port is contacted.
    let ok = probe(&server, "probe", &["http", &allowed.url("/hook")]).await;
    assert_eq!(ok["detail"], "status 200", "{ok}");
    // The host writes Host and the framing from the request itself: a
    // plugin's own would reach another virtual host behind the granted
    // origin, or leave a pooled connection waiting for a body.
    for (name, value) in [("Host", "vault.internal"), ("content-length", "64")] {
        let out = probe(
            &server,
            "probe",
            &["http", &allowed.url("/hook"), name, value],
        )
        .await;
        assert_eq!(out["code"], "invalid", "{name}: {out}");
    }
    assert_denied(
        &probe(&server, "probe", &["http", &forbidden.url("/hook")]).await,
        "outbound host",
    );
    assert_eq!(allowed.requests().len(), 1);
    assert_eq!(
        forbidden.requests().len(),
        0,
        "a denied request must never connect"
    );
    // A wildcard grant reaches public hosts only: not this machine, by
    // address or by name.
    let port = forbidden.addr.port();
    for url in [
        forbidden.url("/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let out = probe(&server, "any-host", &["http", &url]).await;
        assert_denied(&out, "a wildcard grant to a loopback address");
        let message = out["message"].as_str().unwrap_or("");
        assert!(message.contains("public address"), "{out}");
        // What a name resolves to inside stays in the host's log.
        if url.contains("localhost") {
            assert!(
                !message.contains("127.0.0.1") && !message.contains("::1"),
                "{out}"
            );
        }
    }
    assert_eq!(
        forbidden.requests().len(),
        0,
        "nothing reached the loopback receiver"
    );

    // mail: denied without the grant; with it, the message really arrives.
    assert_denied(
        &probe(&server, "probe", &["mail", "owner@example.com"]).await,
        "mail",
    );
    assert!(dep.sent_mail().is_empty(), "denied mail must not be sent");
    let sent = probe(&server, "mailer", &["mail", "owner@example.com"]).await;
    assert_eq!(sent["ok"], true, "{sent}");
    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Subject: probe"), "{}", mail[0]);
    assert!(mail[0].contains("probe message"));
    assert!(
        mail[0].contains(sent["detail"].as_str().unwrap()),
        "Message-ID returned"
    );

    // env and config: only what the manifest lists.
    assert_denied(&probe(&server, "probe", &["env", "PATH"]).await, "env");
    assert_eq!(
        probe(&server, "mailer", &["setting", "greeting"]).await["detail"],
        "namaste"
    );
    server.stop().await.unwrap();
}

on_both_backends!(grants_are_enforced, denied_capabilities_do_nothing);

const FAULTS: &str = r#"
[plugins.faults]
component = "test_faults.wasm"
routes = [{ method = "GET", path = "/faults/{mode}" }]
command = true
limits = { memory = "16MiB", timeout = "1s" }

[plugins.status-page]
component = "status_page.wasm"
routes = [{ method = "GET", path = "/status.json" }]
grants = { db = ["master"] }
"#;

/// An answer with thirty thousand headers is served with its first 64. Before, the header map panicked past some 24,000 names and the
/// connection died with no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_too_many_headers_is_served() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(FAULTS, "a").await;
    let resp = server
        .http
        .get(server.url("/faults/headers-30000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let asked = resp
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("x-h-"))
        .count();
    // The 64 include its content type.
    assert_eq!(asked, 63);
    assert_eq!(resp.text().await.unwrap(), "headers as asked\n");
    assert_eq!(server.get("/faults/ok", None).await.0, 200);
    server.stop().await.unwrap();
}

async fn misbehaving_plugins_fail_alone(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(FAULTS, "a").await;
    let failed = r#"{"ok":false,"error":{"code":500,"message":"plugin \"faults\" failed"}}"#;

    let (code, body) = server.get("/faults/ok", None).await;
    assert_eq!(
        (code, body.contains("\"hello\":\"world\"")),
        (200, true),
        "{body}"
    );

    let (code, body) = server.get("/faults/trap", None).await;
    assert_eq!((code, body.as_str()), (500, failed));

    let started = Instant::now();
    let (code, body) = server.get("/faults/hog", None).await;
    assert_eq!((code, body.as_str()), (500, failed));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the memory limit stops a hog quickly"
    );

    // While one request loops forever, other routes keep answering.
    let looping = {
        let url = server.url("/faults/loop");
        let http = server.http.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = http.get(url).send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.text().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (code, _) = server.get("/faults/ok", None).await;
        assert_eq!(code, 200);
        let (code, body) = server.get("/status.json", None).await;
        assert_eq!(code, 200, "{body}");
    }
    assert!(
        !looping.is_finished(),
        "the loop is still running while others answer"
    );
    let (code, body, took) = looping.await.unwrap();
    assert_eq!(code, 504);
    assert_eq!(
        body,
        r#"{"ok":false,"error":{"code":504,"message":"plugin \"faults\" timed out after 1s"}}"#
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Only a final status goes out as the plugin gave it: an informational
    // one made hyper send a bare 500 without the request id and close the
    // connection, and an error envelope said 200.
    for (mode, sent) in [
        ("status-204", 204),
        ("status-599", 599),
        ("status-100", 500),
        ("status-101", 500),
        ("status-700", 500),
        ("fail-200", 500),
        ("fail-302", 500),
        ("fail-418", 418),
    ] {
        let resp = server
            .http
            .get(server.url(&format!("/faults/{mode}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), sent, "{mode}");
        assert!(resp.headers().contains_key("x-request-id"), "{mode}");
    }
    // The same plugin is healthy again, and the CLI path reports failures.
    assert_eq!(server.get("/faults/ok", None).await.0, 200);
    for mode in ["trap", "hog", "loop"] {
        let err = server.command("faults", &[mode]).await.unwrap_err();
        assert_eq!(
            err.status(),
            if mode == "loop" { 504 } else { 500 },
            "{mode}: {err}"
        );
    }
    server.stop().await.unwrap();
}

on_both_backends!(faults_are_contained, misbehaving_plugins_fail_alone);

/// SQL holding a NUL byte is refused before it reaches a database. On
/// SQLite it left sqlx's thread spinning for good (SQLite stops reading at
/// the NUL, and sqlx stepped past it by nothing), a core per call.
async fn sql_with_a_nul_byte_is_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    let server = dep.start(&probe_manifest(&receiver), "a").await;
    for sql in [
        "SELECT 1 AS one\0",
        "\0",
        "SELECT 1 AS one; \0SELECT 2 AS two",
    ] {
        let asked = Instant::now();
        let out = probe(&server, "probe", &["db-sql", "master", sql]).await;
        assert_eq!(out["code"], "invalid", "{sql:?}: {out}");
        assert_eq!(out["message"], "SQL must not contain a NUL byte", "{out}");
        assert!(asked.elapsed() < Duration::from_secs(1), "{sql:?}");
    }
    let ok = probe(&server, "probe", &["db", "master"]).await;
    assert_eq!(ok["ok"], true, "{ok}");
    server.stop().await.unwrap();
}

on_both_backends!(nul_in_sql, sql_with_a_nul_byte_is_refused);

/// Values Postgres holds but the db interface cannot carry (`infinity`, dates
/// past chrono's range) come back as `invalid`, not as a panic in the host
/// (sqlx's own conversion panics on them); ordinary ones convert exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_timestamps_are_refused_not_a_crash() {
    use neo_ops::backends::db::{DbError, Value};
    let dep = Deployment::new(Backend::Real).await;
    let server = dep.start("", "a").await;
    let db = server.master();
    for sql in [
        "SELECT 'infinity'::timestamptz AS t",
        "SELECT '-infinity'::timestamptz AS t",
        "SELECT 'infinity'::timestamp AS t",
        "SELECT '-infinity'::date AS t",
        "SELECT 'infinity'::date AS t",
        "SELECT '5874897-12-31'::date AS t",
    ] {
        match db.query(sql, &[]).await {
            Err(DbError::Invalid(why)) => assert!(why.contains("column 0"), "{sql}: {why}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    let rows = db
        .query(
            "SELECT '2026-12-06 10:00:00.000001+00'::timestamptz AS tz, \
             '1969-12-31 23:59:59'::timestamp AS ts, '2026-12-06'::date AS d",
            &[],
        )
        .await
        .expect("ordinary values");
    assert_eq!(
        rows.rows[0],
        vec![
            Value::Timestamp(1_796_551_200_000_001),
            Value::Timestamp(-1_000_000),
            Value::Text("2026-12-06".into()),
        ]
    );
    // The pool still answers.
    assert_eq!(support::ints(db, "SELECT 1", &[]).await, vec![1]);
    server.stop().await.unwrap();
}

/// Statement connections carry a server-side `statement_timeout` just under
/// the host's own limit, so a statement the host gives up on does not run on
/// in Postgres; too many parameters is refused as invalid, not taken for an
/// outage that opens the breaker for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_limits_hold_on_the_server_too() {
    use neo_ops::backends::db::{DbError, Value};
    let dep = Deployment::new(Backend::Real).await;
    let server = dep.start("", "a").await;
    let db = server.master();
    let rows = db.query("SHOW statement_timeout", &[]).await.unwrap();
    assert_eq!(rows.rows[0], vec![Value::Text("29s".into())]);
    let params = vec![Value::Int(1); 70_000];
    match db.query("SELECT $1::int8 AS n", &params).await {
        Err(DbError::Invalid(why)) => assert!(why.contains("70000 parameters"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The breaker stayed closed: the next statement runs at once.
    assert_eq!(support::ints(db, "SELECT 1", &[]).await, vec![1]);
    server.stop().await.unwrap();
}

/// Every plugin leaves at least 1 MiB of its initial memory past its data
/// and stack, so the SDK's heap takes it on its first request instead of
/// growing memory (before, owner-digest and export-jobs, with their
/// time-zone tables, left about 50 KiB and grew memory on their first
/// allocation past the arena).
#[test]
fn every_plugin_leaves_its_heap_room_in_the_initial_memory() {
    support::ensure_plugins_built();
    let core = std::path::Path::new(env!("NEO_OPS_PLUGINS_TARGET"))
        .join(neo_ops::plugin_build::WASM_TARGET)
        .join("release");
    // The workspace's plugin crates (a crate directory's Cargo.toml names
    // its package); other modules there may be left from older builds.
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let crate_dirs = std::fs::read_dir(&plugins)
        .unwrap()
        .chain(std::fs::read_dir(plugins.join("checks")).unwrap())
        .map(|e| e.unwrap().path());
    let mut seen = Vec::new();
    for dir in crate_dirs {
        let Ok(cargo) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let cargo: toml::Table = toml::from_str(&cargo).unwrap();
        let Some(package) = cargo.get("package").and_then(|p| p.get("name")) else {
            continue;
        };
        let file = neo_ops::plugin_build::component_file(package.as_str().unwrap());
        let path = core.join(file);
        if !path.is_file() {
            continue; // a library: the SDK, the checks' common crate
        }
        let room = neo_ops::plugin_build::heap_room(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|| panic!("{} says nothing of its heap", path.display()));
        assert!(
            room >= neo_ops::plugin_build::HEAP_ROOM_WANTED,
            "{}: {room} bytes",
            path.display()
        );
        seen.push(path);
    }
    assert!(seen.len() >= 20, "{seen:?}");
}
