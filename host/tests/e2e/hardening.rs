//! Holding up under load, faults and hostile input (issue 8): admission
//! control under a flood, the role checked before a body is read, ambiguous
//! tenants refused, idle sockets under a low file limit, backends coming
//! back after an outage, host namespaces out of reach, database error text
//! kept out of responses and secrets out of start-up errors.

use crate::support;

use neo_ops::manifest::Role;
use neo_ops::runtime::admission::AdmissionPolicy;
use neo_ops::services::Services;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::proxy::TcpProxy;
use support::{Backend, Deployment, FORBIDDEN, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The probe on a public route, an admin route (GET and POST) and a queue.
const PROBE: &str = r#"
[plugins.probe]
component = "test_probe.wasm"
command = true
routes = [
  { method = "GET", path = "/public/probe" },
  { method = "GET", path = "/admin/probe", role = "admin" },
  { method = "POST", path = "/admin/probe", role = "admin" },
]
queue = { name = "jobs", max_attempts = 1 }
grants = { kv = ["probe:", "lock:"], db = ["master"] }
limits = { timeout = "10s" }
"#;

async fn start(dep: &Deployment, slots: u32, wait: Duration) -> Server {
    let mut settings = dep.settings("a");
    settings.max_instances = slots;
    settings.admission = AdmissionPolicy {
        wait,
        ..AdmissionPolicy::default()
    };
    let services = Services::connect(settings).await.expect("services");
    dep.start_with_services(PROBE, services).await
}

async fn admin_token(server: &Server) -> String {
    neo_ops::auth::create_token(server.master(), Role::Admin, "oncall")
        .await
        .unwrap()
}

/// 48 clients hammer a slow public route of a server with 8 slots: the
/// public share (4) fills, the rest get 503 + Retry-After, never a 500, and
/// an admin calling meanwhile is answered every time.
async fn public_flood_never_costs_operators(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, 8, Duration::from_millis(150)).await;
    let token = admin_token(&server).await;
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let url = server.url("/public/probe?c=sleep&ms=100");
    let flood: Vec<_> = (0..48)
        .map(|_| {
            let (http, url) = (server.http.clone(), url.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < stop_at {
                    let resp = http.get(&url).send().await.expect("request");
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let body = resp.text().await.unwrap();
                    seen.push((status, retry_after, body));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin_statuses = Vec::new();
    for _ in 0..15 {
        let (status, body) = server.get("/admin/probe?c=sleep&ms=20", Some(&token)).await;
        assert!(body.contains("slept"), "{body}");
        admin_statuses.push(status);
    }
    assert!(
        admin_statuses.iter().all(|s| *s == 200),
        "{admin_statuses:?}"
    );
    let mut ok = 0;
    let mut busy = 0;
    for task in flood {
        for (status, retry_after, body) in task.await.unwrap() {
            match status {
                200 => ok += 1,
                503 => {
                    busy += 1;
                    assert_eq!(retry_after.as_deref(), Some("1"));
                    assert_eq!(
                        body,
                        r#"{"ok":false,"error":{"code":503,"message":"busy, try again shortly"}}"#
                    );
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
    }
    assert!(ok > 0 && busy > 0, "ok {ok}, busy {busy}");
    assert_eq!(server.runtime.admission.refused(), busy as u64);
    server.stop().await.unwrap();
}

on_both_backends!(public_flood, public_flood_never_costs_operators);

/// A queue job that finds every slot taken waits in the queue without being
/// charged an attempt: with max_attempts = 1 a charged refusal would
/// dead-letter it; instead it runs once the slots are free.
async fn refused_job_keeps_its_attempts(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = Arc::new(start(&dep, 2, Duration::from_millis(50)).await);
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.command("probe", &["sleep", "1500"]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kv = &server.services.kv;
    neo_ops::backends::queue::enqueue(kv, "jobs", None, "job-a")
        .await
        .unwrap();
    for s in sleepers {
        assert!(s.await.unwrap().unwrap().contains("slept"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = kv.get("probe:job:job-a").await.unwrap() {
            assert_eq!(v, b"1");
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = neo_ops::backends::queue::dead_letters(kv, "jobs", 10, usize::MAX)
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    assert!(
        server.runtime.admission.refused() > 0,
        "the job was refused a slot first"
    );
    Arc::try_unwrap(server).ok().unwrap().stop().await.unwrap();
}

on_both_backends!(refused_job, refused_job_keeps_its_attempts);

/// Writes raw request text (a head, perhaps some body) on a socket and
/// reads the answer.
async fn answer_without_body(server: &Server, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&buf).contains("}}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer while the body was still unsent");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The role is checked on the headers alone: an anonymous 2.2 MB POST gets
/// the spec's exact 403 before a byte of its body is sent; with a token the
/// host's own body limit answers 413, also without reading 2.2 MB.
async fn role_before_body(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, 8, Duration::from_millis(500)).await;
    let token = admin_token(&server).await;
    let head = |auth: &str| {
        format!(
            "POST /admin/probe HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: 2306867\r\n{auth}\r\n"
        )
    };
    let answer = answer_without_body(&server, &head("")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.ends_with(FORBIDDEN), "{answer}");
    let answer = answer_without_body(
        &server,
        &head(&format!("authorization: Bearer {token}\r\n")),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.ends_with(r#"{"ok":false,"error":{"code":413,"message":"request body too large (at most 2097152 bytes here)"}}"#),
        "{answer}"
    );
    server.stop().await.unwrap();
}

on_both_backends!(role_checked_first, role_before_body);

/// A route's `max_body` is the most the host reads for it: a body up to it
/// reaches the plugin, a larger one is refused with 413 naming the limit,
/// and a larger declared length before a byte of it is read (a public
/// route's slow senders hold a body's share of the budget no larger than
/// the route takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_max_body_is_the_most_read_for_it() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = r#"
[plugins.probe]
component = "test_probe.wasm"
routes = [{ method = "POST", path = "/public/limited", max_body = "1KiB" }]
"#;
    let server = dep.start(manifest, "a").await;
    let post = |n: usize| {
        server
            .http
            .post(server.url("/public/limited?c=big&n=3"))
            .body(vec![b'r'; n])
            .send()
    };
    let fits = post(1024).await.unwrap();
    assert_eq!(fits.status().as_u16(), 200);
    assert_eq!(fits.text().await.unwrap(), r#"{"ok":true,"detail":"xxx"}"#);
    let over = post(1025).await.unwrap();
    assert_eq!(over.status().as_u16(), 413);
    assert!(
        over.text()
            .await
            .unwrap()
            .contains("request body too large (at most 1024 bytes here)")
    );
    // Declared larger, nothing sent: answered at once.
    let head =
        "POST /public/limited?c=big&n=3 HTTP/1.1\r\nhost: neo\r\ncontent-length: 5000\r\n\r\n";
    let answer = answer_without_body(&server, head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    server.stop().await.unwrap();
}

/// A tenant named twice, or differently in two places, is refused with 400:
/// settling it silently could act on the wrong tenant.
async fn ambiguous_tenants_are_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, 8, Duration::from_millis(500)).await;
    let token = admin_token(&server).await;
    let post = |path: &str, body: &str| {
        server
            .http
            .post(server.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let (status, body) = server
        .get(
            "/admin/probe?c=sleep&ms=1&tenant=acme&tenant=bistro",
            Some(&token),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(r#"ambiguous tenant: \"tenant\" is repeated in the query"#),
        "{body}"
    );
    for (path, json, why) in [
        (
            "/admin/probe?c=sleep&ms=1",
            r#"{"tenant": "acme", "tenant": "bistro"}"#,
            r#"\"tenant\" is repeated in the JSON body"#,
        ),
        (
            "/admin/probe?c=sleep&ms=1&tenant=acme",
            r#"{"tenant": "bistro"}"#,
            r#"\"acme\" in the query and \"bistro\" in the body differ"#,
        ),
    ] {
        let resp = post(path, json).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.contains(why), "{text}");
    }
    // The same tenant in both places is not ambiguous.
    let resp = post(
        "/admin/probe?c=sleep&ms=1&tenant=acme",
        r#"{"tenant": "acme"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    server.stop().await.unwrap();
}

on_both_backends!(ambiguous_tenant, ambiguous_tenants_are_refused);

/// A plugin granted `lock:` cannot reach a host lock: locks live in the
/// host namespace, which no grant reaches.
async fn lock_grant_cannot_touch_host_locks(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, 8, Duration::from_millis(500)).await;
    let kv = &server.services.kv;
    let token = kv
        .lock("purge:acme", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("free");
    let out = server
        .command("probe", &["kv-delete", "lock:purge:acme"])
        .await
        .unwrap();
    assert!(out.contains("existed false"), "{out}");
    let out = server
        .command("probe", &["kv-delete", "__lock:purge:acme"])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"denied""#), "{out}");
    assert!(
        kv.lock("purge:acme", Duration::from_secs(1))
            .await
            .unwrap()
            .is_none(),
        "purge's lock is still held"
    );
    assert!(kv.unlock("purge:acme", &token).await.unwrap());
    server.stop().await.unwrap();
}

on_both_backends!(host_namespace, lock_grant_cannot_touch_host_locks);

/// A lock held by an invocation that timed out is released by the host at
/// once, not left to block the next run until it expires.
async fn timed_out_invocations_release_their_locks(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let manifest = r#"
[plugins.probe]
component = "test_probe.wasm"
command = true
grants = { kv = ["probe:"] }
limits = { timeout = "300ms" }
"#;
    let server = dep.start(manifest, "a").await;
    // Takes the lock (for a minute), then is cut off by its 300ms timeout.
    let err = server
        .command("probe", &["lock-sleep", "probe:l", "2000"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), 504, "{err}");
    let out = server.command("probe", &["lock", "probe:l"]).await.unwrap();
    assert!(out.contains("held"), "the host released the lock: {out}");
    // A plugin that returns normally keeps what it chose to keep.
    let out = server.command("probe", &["lock", "probe:l"]).await.unwrap();
    assert!(out.contains("busy"), "{out}");
    server.stop().await.unwrap();
}

on_both_backends!(lock_release, timed_out_invocations_release_their_locks);

/// A client that hangs up while its request runs does not cut the plugin
/// off: the invocation runs to its end and is counted as a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_does_not_cut_its_invocation_off() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let token = admin_token(&server).await;
    let finished = r#"neo_ops_invocations_total{plugin="probe",trigger="http",outcome="ok"} 1"#;
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /public/probe?c=sleep&ms=600 HTTP/1.1\r\nhost: neo\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(socket);
    let (_, metrics) = server.get("/metrics", Some(&token)).await;
    assert!(!metrics.contains(finished), "still sleeping: {metrics}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, metrics) = server.get("/metrics", Some(&token)).await;
        assert_eq!(status, 200);
        if metrics.contains(finished) {
            break;
        }
        assert!(Instant::now() < deadline, "never finished: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}

/// The real binary under `ulimit -n 128`, with 300 idle sockets open against
/// it: the connection cap stays below the file limit and the oldest idle
/// connections make room, so a health probe is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_never_lock_out_health_probes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugins.toml"), "").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin = env!("CARGO_BIN_EXE_neo-ops");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec {bin} --manifest {m} --data-dir {d} serve --listen 127.0.0.1:{port}",
            m = dir.path().join("plugins.toml").display(),
            d = dir.path().join("data").display(),
        ))
        .env_remove("POSTGRES_MASTER_URL")
        .env_remove("POSTGRES_TENANT_DSN_TEMPLATE")
        .env_remove("REDIS_URL")
        .env_remove("SMTP_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(&healthz).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 200, "only {} sockets opened", idle.len());
    for _ in 0..5 {
        let started = Instant::now();
        let resp = http.get(&healthz).send().await.expect("healthz answered");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}

/// Redis and Postgres cut off through a proxy the test controls: `/readyz`
/// goes 503 while they are away and back to 200 within a few seconds of
/// their return (redis-rs's default backoff took close to a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_come_back_after_an_outage() {
    let dep = Deployment::new(Backend::Real).await;
    let redis = TcpProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let pg = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut settings = dep.settings_with_master_at("a", pg.addr);
    settings.redis_url = Some(format!("redis://{}", redis.addr));
    let services = Services::connect(settings).await.expect("services");
    let server = dep.start_with_services(PROBE, services).await;
    let ready = || async {
        let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
        resp.status().as_u16()
    };
    assert_eq!(ready().await, 200);
    let token = admin_token(&server).await;
    let depth = r#"neo_ops_queue_depth{queue="jobs"}"#;
    let metrics = || async {
        let (status, body) = server.get("/metrics", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    assert!(metrics().await.contains(depth));
    for proxy in [&redis, &pg] {
        proxy.set_up(false);
        let went_down = Instant::now();
        while ready().await != 503 {
            assert!(
                went_down.elapsed() < Duration::from_secs(5),
                "readyz never noticed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if std::ptr::eq(proxy, &redis) {
            // A queue's length Redis cannot give is left out of /metrics,
            // not shown as an empty queue.
            let body = metrics().await;
            assert!(!body.contains(depth), "{body}");
        }
        if std::ptr::eq(proxy, &pg) {
            // Meanwhile a public route that needs the database answers at
            // once (the pool's breaker is open), not after the acquire timeout.
            for _ in 0..5 {
                let asked = Instant::now();
                let (status, body) = server.get("/public/probe?c=db&t=master", None).await;
                assert_eq!(status, 200, "{body}");
                assert!(body.contains(r#""code":"unavailable""#), "{body}");
                assert!(
                    asked.elapsed() < Duration::from_millis(500),
                    "{:?}",
                    asked.elapsed()
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set_up(true);
        let back = Instant::now();
        while ready().await != 200 {
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "readyz still 503 five seconds after the backend returned"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(metrics().await.contains(depth), "the queue's depth is back");
    // kv works again through the reconnected client.
    let out = server
        .command("probe", &["kv", "probe:after"])
        .await
        .unwrap();
    assert!(out.contains("stored"), "{out}");
    server.stop().await.unwrap();
}

/// A Redis that stops answering without closing (a blackholed host) does
/// not take the scrape down with it: `/metrics` answers within Prometheus's
/// timeout, without the queue gauges it could not read, and they come back
/// with Redis. A plugin's kv call is given up on in time for the plugin to
/// answer, and says its time ran out rather than that the store is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_redis_leaves_the_queue_gauges_out_of_a_prompt_scrape() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = PROBE.replace(r#"timeout = "10s""#, r#"timeout = "2s""#);
    let (server, redis) = dep.start_with_redis_proxy(&manifest).await;
    let token = admin_token(&server).await;
    let depth = r#"neo_ops_queue_depth{queue="jobs"}"#;
    let scrape = || async {
        let asked = Instant::now();
        let (status, body) = server.get("/metrics", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        (body, asked.elapsed())
    };
    assert!(scrape().await.0.contains(depth));

    redis.set_hanging();
    // Three at once (an HA pair and a person) wait side by side, not in
    // turn: before, the third answered after three waits.
    let scrapes = futures::future::join_all((0..3).map(|_| scrape())).await;
    for (body, took) in scrapes {
        assert!(!body.contains(depth), "{body}");
        assert!(body.contains("neo_ops_slots_in_use"), "{body}");
        assert!(took < Duration::from_secs(3), "the scrape took {took:?}");
    }
    // Within the timeout Prometheus announces.
    let asked = Instant::now();
    let resp = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(&token)
        .header("x-prometheus-scrape-timeout-seconds", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "the scrape took {took:?}"
    );
    let asked = Instant::now();
    let out = server
        .command("probe", &["kv", "probe:hung"])
        .await
        .unwrap();
    let waited = asked.elapsed();
    assert!(out.contains(r#""code":"unavailable""#), "{out}");
    assert!(
        out.contains(
            "the kv store did not answer in time; whether the call took effect is unknown"
        ),
        "{out}"
    );
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(1900),
        "given up on at 1.5 s of 2 s: {waited:?}"
    );

    redis.set_up(true);
    let back = Instant::now();
    while !scrape().await.0.contains(depth) {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "the queue's depth never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await.unwrap();
}

/// Postgres's own error text (which can quote data) stays in the log; the
/// plugin, and so any HTTP response, gets a generic message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_error_text_stays_in_the_log() {
    let dep = Deployment::new(Backend::Real).await;
    let server = start(&dep, 8, Duration::from_millis(500)).await;
    let token = admin_token(&server).await;
    let (status, body) = server
        .get("/admin/probe?c=db-nul&t=master", Some(&token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("the database rejected the statement"),
        "{body}"
    );
    assert!(
        !body.contains("0x00") && !body.contains("byte sequence"),
        "{body}"
    );
    server.stop().await.unwrap();
}

/// Statement connections go back for reuse only when their exchange is
/// complete: after a refused statement or a failed transaction the next
/// statement runs on the same connection, outside any transaction, with the
/// failed transaction rolled back; a statement cut off mid-way never hands
/// its connection to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_connections_are_reused_only_when_clean() {
    let dep = Deployment::new(Backend::Real).await;
    let server = start(&dep, 4, Duration::from_millis(100)).await;
    let master = server.master().clone();
    master
        .execute("CREATE TABLE lease_probe (id INT PRIMARY KEY)", &[])
        .await
        .unwrap();
    let duplicate = "INSERT INTO lease_probe VALUES (1), (1)";
    assert!(master.execute(duplicate, &[]).await.is_err());
    let insert = ("INSERT INTO lease_probe VALUES (2)".to_string(), Vec::new());
    assert!(
        master
            .transaction(&[insert.clone(), insert.clone()])
            .await
            .is_err()
    );
    // What the next statement writes is committed (seen from another
    // session), so no transaction was left open on the reused connection.
    master
        .execute("INSERT INTO lease_probe VALUES (3)", &[])
        .await
        .unwrap();
    let url = dep.settings("a").postgres_master_url.unwrap();
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM lease_probe")
        .fetch_all(&mut other)
        .await
        .unwrap();
    assert_eq!(ids, [3]);
    let probe = "SELECT pg_backend_pid() AS pid";
    let mut pids = Vec::new();
    for _ in 0..5 {
        pids.push(master.query(probe, &[]).await.unwrap().rows[0][0].clone());
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "sequential statements reuse one connection");

    // Cut a statement off mid-way, as a timeout or a vanished caller would.
    let sleeper = master.clone();
    let cut = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_millis(600),
            sleeper.query("SELECT pg_sleep(3) AS slept", &[]),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sleeping = master
        .query(
            "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3) AS slept' AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(sleeping.len(), 1, "{sleeping:?}");
    assert!(cut.await.unwrap().is_err(), "the statement was cut off");
    for _ in 0..5 {
        let t = Instant::now();
        let rows = master.query(probe, &[]).await.unwrap().rows;
        assert_ne!(
            rows[0][0], sleeping[0][0],
            "a cut-off connection was reused"
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    server.stop().await.unwrap();
}

/// A password in a connection URL's query never reaches a start-up error;
/// the admin commands that need only the master work without Redis.
#[test]
fn startup_errors_mask_url_passwords() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugins.toml"), "").unwrap();
    for (var, url) in [
        (
            "POSTGRES_MASTER_URL",
            "postgres://neo@127.0.0.1:1/master?password=s3cretpw",
        ),
        ("REDIS_URL", "redis://:s3cretpw@127.0.0.1:1/0"),
    ] {
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_neo-ops"));
            cmd.arg("--manifest")
                .arg(dir.path().join("plugins.toml"))
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(args)
                .env_remove("POSTGRES_MASTER_URL")
                .env_remove("POSTGRES_TENANT_DSN_TEMPLATE")
                .env_remove("REDIS_URL")
                .env(var, url);
            if var == "POSTGRES_MASTER_URL" {
                cmd.env(
                    "POSTGRES_TENANT_DSN_TEMPLATE",
                    "postgres://neo@127.0.0.1:1/{tenant}?password=s3cretpw",
                );
            }
            cmd.output().unwrap()
        };
        // The admin commands need the master, not Redis: a token can be
        // listed (and revoked) during a Redis outage.
        if var == "REDIS_URL" {
            let out = run(&["token", "list", "--json"]);
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                r#"{"tokens":[]}"#
            );
        }
        // A preflight reports a backend it cannot reach through its checks
        // (none here), saying on stderr which, masked, and goes on.
        let out = run(&["preflight"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("; checking without it"), "{stderr}");
        assert!(!stderr.contains("error:"), "{stderr}");
        assert!(!stderr.contains("s3cretpw"), "{var}: {stderr}");
        if var == "REDIS_URL" {
            assert!(
                stderr.contains("connecting to redis redis://:****@127.0.0.1:1/0"),
                "{stderr}"
            );
            continue;
        }
        let out = run(&["tenant", "list"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("error:"), "{stderr}");
        assert!(!stderr.contains("s3cretpw"), "{var}: {stderr}");
        // A listing asked for as JSON fails as JSON on stdout, for a script.
        let lists: [&[&str]; 3] = [
            &["tenant", "list", "--json"],
            &["token", "list", "--json"],
            &["migrate", "--dry-run", "--json"],
        ];
        for list in lists {
            let out = run(list);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let envelope: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{list:?}: {e}: {stdout:?}"));
            assert_eq!(envelope["ok"], false, "{list:?}: {stdout}");
            assert!(!stdout.contains("s3cretpw"), "{list:?}: {stdout}");
        }
    }
}

/// The alertmanager check pointed at `addr`, a listener that never answers:
/// a check that holds its slot for `timeout`.
fn silent_alertmanager_check(addr: std::net::SocketAddr, timeout: &str) -> String {
    format!(
        r#"
[plugins.check-alertmanager]
component = "check_alertmanager.wasm"
check = true
grants = {{ http = ["http://{addr}"] }}
config = {{ alertmanager_url = "http://{addr}", request_timeout = "{timeout}" }}
"#
    )
}

/// A server with at most `cap` connections and one check that waits
/// `check_timeout` on an "Alertmanager" that accepts and never answers, and
/// a connection whose preflight is running on it. Abort the returned task
/// (the silent listener) when done.
async fn a_slow_preflight_at_the_cap(
    cap: usize,
    check_timeout: &str,
) -> (
    Deployment,
    Server,
    tokio::task::JoinHandle<()>,
    tokio::net::TcpStream,
) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let dep = Deployment::new(Backend::Embedded).await;
    let mut settings = dep.settings("a");
    settings.max_connections = Some(cap);
    let services = Services::connect(settings).await.expect("services");
    let manifest = silent_alertmanager_check(silent_addr, check_timeout);
    let server = dep.start_with_services(&manifest, services).await;
    let token = admin_token(&server).await;
    let mut busy = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(
        format!(
            "GET /api/admin/preflight HTTP/1.1\r\nhost: neo\r\nauthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    (dep, server, held, busy)
}

/// At the connection cap a connection whose request is still running is not
/// taken for idle, even on a host route whose handler no longer holds the
/// request (the preflight, waiting on a check): the idle connection is the
/// one closed to make room, and the preflight's answer arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_closes_idle_connections_not_busy_ones() {
    let (_dep, server, held, mut busy) = a_slow_preflight_at_the_cap(2, "2s").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third connection at the cap of two: room is made for it at once.
    let asked = Instant::now();
    let mut probe = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: neo\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // The idle connection was the one closed.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    // The busy one gets its whole answer once the check gives up.
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), busy.read(&mut head))
        .await
        .expect("the preflight answered")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(head.contains("alertmanager"), "{head}");
    held.abort();
    server.stop().await.unwrap();
}

/// The body of the answer [`ask_for_a_big_answer`] asks for, in bytes.
const BIG: usize = 12 << 20;

/// A client with a receive buffer of `receive_buffer` bytes that has asked
/// for a [`BIG`] answer, read nothing yet.
async fn ask_for_a_big_answer(server: &Server, receive_buffer: u32) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(receive_buffer).unwrap();
    let mut client = socket.connect(server.addr).await.unwrap();
    client
        .write_all(
            format!("GET /public/probe?c=big&n={BIG} HTTP/1.1\r\nhost: neo\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    client
}

/// A client that asks for a large answer and never reads it: once the
/// server's writes have waited the write-stall limit the connection is
/// closed, instead of staying open (and counted busy, so never evicted at
/// the connection cap) for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_the_write_stall() {
    let dep = Deployment::new(Backend::Embedded).await;
    let mut settings = dep.settings("a");
    settings.write_stall = Duration::from_secs(1);
    let services = Services::connect(settings).await.expect("services");
    let server = dep.start_with_services(PROBE, services).await;
    // A small receive window, so the answer cannot all sit in buffers.
    let mut client = ask_for_a_big_answer(&server, 4096).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now gets what was already sent, then the end: the server gave up.
    let mut received = 0;
    let mut buf = vec![0u8; 64 << 10];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open after {received} bytes"
    );
    assert!(
        received < BIG,
        "the whole answer was sent: {received} bytes"
    );
    let (code, _) = server.get("/healthz", None).await;
    assert_eq!(code, 200);
    server.stop().await.unwrap();
}

/// A kept-alive connection stays open while idle up to
/// `NEO_OPS_KEEP_ALIVE_IDLE`, well past the 10 s a request's headers get
/// (a load balancer keeps its connections 60 s and would send the next
/// request down one closed under it: a 502), and is closed after it; a
/// client that opens a connection and says nothing, or starts a request
/// and stalls, is still closed after the header limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_outlasts_the_header_limit_and_silence_does_not() {
    let dep = Deployment::new(Backend::Embedded).await;
    let mut settings = dep.settings("a");
    settings.keep_alive_idle = Duration::from_secs(14);
    let services = Services::connect(settings).await.expect("services");
    let server = dep.start_with_services(PROBE, services).await;
    const ASK: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: neo\r\n\r\n";
    // One answer, read whole (the head and a small body come together).
    let answer = async |client: &mut tokio::net::TcpStream| -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // How long until the server closes `client`'s connection.
    let closed_after = async |client: &mut tokio::net::TcpStream| -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        start.elapsed()
    };
    let kept = async {
        let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        client.write_all(ASK).await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_secs(11)).await;
        client.write_all(ASK).await.unwrap();
        let again = answer(&mut client).await;
        assert!(
            again.starts_with("HTTP/1.1 200"),
            "after 11 s idle: {again}"
        );
        // Idle again: closed at the keep-alive limit, not before.
        let idle = closed_after(&mut client).await;
        assert!(
            (Duration::from_secs(13)..Duration::from_secs(17)).contains(&idle),
            "{idle:?}"
        );
    };
    let silent = async {
        let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let waited = closed_after(&mut client).await;
        assert!(
            (Duration::from_secs(9)..Duration::from_secs(12)).contains(&waited),
            "a silent client: {waited:?}"
        );
    };
    // Half a request's headers after 11 s idle (past the watch's first
    // look): closed 10 s after its first byte, not at the idle limit.
    let stalled = async {
        let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        client.write_all(ASK).await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_secs(11)).await;
        client
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let waited = closed_after(&mut client).await;
        assert!(
            (Duration::from_secs(9)..Duration::from_secs(12)).contains(&waited),
            "half a request's headers: {waited:?}"
        );
    };
    tokio::join!(kept, silent, stalled);
    server.stop().await.unwrap();
}

/// A client that keeps reading, 64 KiB every 50 ms (about 1.3 MB/s), so
/// its writes never wait long: with no minimum rate it is served the whole
/// answer; with `NEO_OPS_MIN_WRITE_RATE` above what it reads, the waits add
/// up and its connection is closed within a few seconds, though no single
/// wait reached the write-stall limit. (What the server had already handed
/// to its socket still arrives after the close, so the client then reads
/// the rest at full speed to see which it was.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_below_the_minimum_rate_is_closed() {
    for (min_write_rate, closes) in [(0, false), (16 << 20, true)] {
        let dep = Deployment::new(Backend::Embedded).await;
        let mut settings = dep.settings("a");
        settings.write_stall = Duration::from_secs(4);
        settings.min_write_rate = min_write_rate;
        let services = Services::connect(settings).await.expect("services");
        let server = dep.start_with_services(PROBE, services).await;
        let mut client = ask_for_a_big_answer(&server, 256 << 10).await;
        let mut received = 0;
        let mut buf = vec![0u8; 64 << 10];
        let trickle_until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < trickle_until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match tokio::time::timeout(Duration::from_secs(1), client.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => received += n,
                Err(_) => {}
            }
        }
        let trickled = received;
        // The whole answer (its body and a head), or an end before it.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while received <= BIG {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => received += n,
                }
            }
            false
        })
        .await
        .expect("the answer neither ended nor went on");
        assert_eq!(
            (closed, received > BIG),
            (closes, !closes),
            "minimum rate {min_write_rate}: {trickled} bytes trickled, {received} in all"
        );
        drop(client);
        server.stop().await.unwrap();
    }
}

/// An anonymous client trickling a body in (a byte every 300 ms, each well
/// inside the 30 s stall limit) is answered 408 once 10 s have passed,
/// instead of holding its share of the public body budget for as long as
/// it likes: sixteen such clients used to shut every public body out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_body_trickled_in_is_cut_off() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = client.into_split();
    write
        .write_all(
            b"GET /public/probe?c=sleep&ms=0 HTTP/1.1\r\nhost: neo\r\ncontent-length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..999 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if write.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(20), read.read(&mut buf))
            .await
            .expect("an answer within 20 s")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not sent whole within 10s"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
    server.stop().await.unwrap();
}

/// A request whose client hangs up mid-invocation still finishes before
/// shutdown ends: the invocation carries on without its client, and `serve`
/// waits for it (before, it was a task nobody waited for, cut off as the
/// process ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_invocation_whose_client_left() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(
            b"GET /public/probe?c=late-kv&ms=1500&k=probe:late HTTP/1.1\r\nhost: neo\r\n\r\n",
        )
        .await
        .unwrap();
    let services = server.services.clone();
    support::wait_until("the invocation runs", || async {
        services
            .kv
            .get("probe:late:started")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await.unwrap();
    let stored = services.kv.get("probe:late").await.unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(&b"late"[..]),
        "the invocation was cut off"
    );
}

/// A download still being written when shutdown comes is written out
/// whole. hyper lets go of a response body as soon as it has queued the
/// last frame, and the connection then looked idle: shutdown gave it
/// 200 ms and cut the download off (at the connection cap, the oldest
/// connection, a long download's, was the first closed the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_progress_at_shutdown_is_written_out() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // 10 MiB: more than the socket buffers hold unread (about 4 MiB), the
    // rest in hyper's.
    client
        .write_all(b"GET /public/probe?c=big&n=10485760 HTTP/1.1\r\nhost: neo\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 64 << 10];
    let mut read = client.read(&mut head).await.unwrap();
    while !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        read += client.read(&mut head[read..]).await.unwrap();
    }
    let text = String::from_utf8_lossy(&head[..read]).into_owned();
    let (headers, body_start) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .unwrap();
    assert!(length > 10 << 20, "{headers}");
    let stopping = tokio::spawn(server.stop());
    // Past the 200 ms an idle connection is given, before reading on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut body = body_start.len();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body += n,
        }
    }
    assert_eq!(body, length, "the download was cut off");
    stopping.await.unwrap().unwrap();
}

/// A request whose client hangs up while it still waits for a slot is not
/// run once one frees: nobody is there for its answer, and it would take a
/// slot from a client who is. One whose client stays is run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_while_waiting_is_not_run() {
    let dep = Deployment::new(Backend::Embedded).await;
    // Two slots: the public share is one.
    let server = start(&dep, 2, Duration::from_secs(5)).await;
    let sleeper = {
        let (http, url) = (
            server.http.clone(),
            server.url("/public/probe?c=sleep&ms=1500"),
        );
        tokio::spawn(async move { http.get(&url).send().await.unwrap().status().as_u16() })
    };
    let admission = server.runtime.admission.clone();
    support::wait_until("the sleeper holds the public slot", || {
        let admission = admission.clone();
        async move { admission.in_use() == 1 }
    })
    .await;
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /public/probe?c=kv&k=probe:orphan HTTP/1.1\r\nhost: neo\r\n\r\n")
        .await
        .unwrap();
    support::wait_until("the request waits for a slot", || {
        let admission = admission.clone();
        async move { admission.waiting() == 1 }
    })
    .await;
    drop(client);
    assert_eq!(sleeper.await.unwrap(), 200);
    let stays = {
        let (http, url) = (
            server.http.clone(),
            server.url("/public/probe?c=kv&k=probe:stayed"),
        );
        tokio::spawn(async move { http.get(&url).send().await.unwrap().status().as_u16() })
    };
    assert_eq!(stays.await.unwrap(), 200);
    let kv = &server.services.kv;
    assert!(kv.get("probe:stayed").await.unwrap().is_some());
    assert_eq!(
        kv.get("probe:orphan").await.unwrap(),
        None,
        "the request whose client left was run"
    );
    assert_eq!(admission.waiting(), 0);
    assert_eq!(admission.refused(), 0, "leaving is not a refusal");
    server.stop().await.unwrap();
}

/// A FIFO where a granted file should be is refused as not a file, at once:
/// reading it does not wait for a writer (a thread held for ever, past the
/// plugin's timeout). A granted file is still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_a_granted_path_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("backup-status");
    let file = dir.path().join("status.json");
    std::fs::write(&file, b"{\"ok\":true}").unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string naming a path in our own temp directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let manifest = format!(
        "[plugins.probe]\ncomponent = \"test_probe.wasm\"\ncommand = true\n\
         grants = {{ files = [\"{}\", \"{}\"] }}\nlimits = {{ timeout = \"5s\" }}\n",
        fifo.display(),
        file.display()
    );
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(&manifest, "a").await;
    let asked = Instant::now();
    let out = server
        .command("probe", &["read", fifo.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("is not a file"), "{out}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let out = server
        .command("probe", &["read", file.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("11 bytes"), "{out}");
    server.stop().await.unwrap();
}

/// `?dry_run=1` on a route of a plugin with no dry run is refused with 400
/// before the plugin does anything; so is a bare `?dry_run`, `dry-run`,
/// or a spelling not known (`dry_run=maybe`), which was taken as "no" and
/// ran the real thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_request_to_a_plugin_without_one_is_refused() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    for asked in [
        "dry_run=1",
        "dry_run",
        "dry-run=1",
        "dry_run=YES",
        "dry_run=0&dry_run=on",
    ] {
        let (status, body) = server
            .get(&format!("/public/probe?c=kv&k=probe:dry&{asked}"), None)
            .await;
        assert_eq!(status, 400, "{asked}: {body}");
        assert!(body.contains("no dry run"), "{asked}: {body}");
    }
    let (status, body) = server
        .get("/public/probe?c=kv&k=probe:dry&dry_run=maybe", None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(r#"bad dry_run value \"maybe\" (expected 1 or true"#),
        "{body}"
    );
    let (status, body) = server
        .get("/public/probe?c=kv-delete&k=probe:dry", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("existed false"), "nothing was stored: {body}");
    server.stop().await.unwrap();
}

/// A path parameter that percent-decodes to bytes that are not UTF-8 gets a
/// 400 in the envelope naming the path (axum's own answer is plain text),
/// and an unknown path a 404 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_answered_in_the_envelope() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = r#"
[plugins.probe]
component = "test_probe.wasm"
routes = [{ method = "GET", path = "/public/probe/{name}" }]
"#;
    let server = dep.start(manifest, "a").await;
    let (status, body) = server.get("/public/probe/%FF%FE?c=sleep&ms=1", None).await;
    assert_eq!(status, 400, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("an envelope");
    assert_eq!(
        json["error"]["message"],
        "path \"/public/probe/%FF%FE\" has a parameter that is not UTF-8 once decoded"
    );
    // Readable by a page on another origin, as the route's other errors.
    let resp = server
        .http
        .get(server.url("/public/probe/%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let (status, body) = server
        .get("/public/probe/caf%C3%A9?c=sleep&ms=1", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let long = format!("/{}", "x".repeat(300));
    let (status, body) = server.get(&long, None).await;
    assert_eq!(status, 404, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("an envelope");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("no route \"/xxx"), "{message}");
    assert!(message.ends_with("x…\""), "cut short: {message}");
    server.stop().await.unwrap();
}

/// One invocation's log lines take at most 50 of its tenant's 200 ring
/// places, so the host's record of the invocations before it stays (the
/// support bundle's recent logs); a marker says more were not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_invocation_keeps_its_tenants_earlier_records() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let token = admin_token(&server).await;
    for c in ["c=kv&k=probe:x", "c=log&n=500"] {
        let (status, body) = server
            .get(&format!("/admin/probe?{c}&tenant=acme"), Some(&token))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let lines = server.services.tenant_logs.recent("acme");
    let logged = lines.iter().filter(|l| l.contains(": probe line ")).count();
    assert_eq!(logged, 50, "{lines:#?}");
    assert!(
        lines[0].contains("probe (http) status 200"),
        "the earlier invocation's record stays: {lines:#?}"
    );
    assert!(lines[51].contains("further log lines of this invocation not kept"));
    assert!(lines[52].contains("probe (http) status 200"));
    assert_eq!(lines.len(), 53);
    server.stop().await.unwrap();
}

/// A served invocation writes at most 1,000 lines to the process log (a
/// plugin logging in a loop would fill the disk within its timeout), and
/// one warning says the rest were dropped; each invocation has its own
/// budget. A command an operator runs is not cut (`--verbose` lists every
/// row on purpose).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_invocation_has_a_log_budget() {
    let cli = support::Cli::new(PROBE);
    let (child, base, log) = Serving::start(&cli, "serve");
    let url = |path: &str| format!("{base}{path}");
    let http = reqwest::Client::new();
    until_ready(&url(""), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    for n in [1500, 10] {
        let r = http
            .get(url(&format!("/public/probe?c=log&n={n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("probe line "),
        1010,
        "1,000 of the first, all 10 of the second"
    );
    let numbered = |i: u32| count(&format!("probe line {i} "));
    assert_eq!((numbered(999), numbered(1000)), (1, 0), "the first 1,000");
    assert_eq!(count("logged over 1000 lines in one invocation"), 1);

    let run = cli.run(&["run", "probe", "log", "1200", "--verbose"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = run
        .stderr
        .lines()
        .filter(|l| l.contains("probe line "))
        .count();
    assert_eq!(lines, 1200, "a command's lines are all shown");
}

/// The process log is masked whoever writes to it, in either format: a
/// plugin's line quoting a DSN and a customer's address, its secret-named
/// field. Before, only the tenant's ring was.
#[test]
fn the_process_log_is_redacted() {
    let cli = support::Cli::new(PROBE);
    let said = "connecting to postgres://ops:hunter2@db/x for ann@a.example";
    for format in ["text", "json"] {
        let run = cli.run(&["--log-format", format, "run", "probe", "warn", said]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let log = &run.stderr;
        assert!(
            log.contains("postgres://ops:****@db/x for ****@a.example"),
            "{format}: {log}"
        );
        assert!(log.contains("api_key=****"), "{format}: {log}");
        for secret in ["hunter2", "ann@", "k-123", "k-456"] {
            assert!(!log.contains(secret), "{format}: {secret} in {log}");
        }
    }
}

/// A tenant's recent log lines go to an operator's invocation for that
/// tenant, never to an anonymous request that names the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_cannot_read_a_tenants_logs() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let token = admin_token(&server).await;
    server.services.tenant_logs.push("acme", "order 7 refunded");
    let (status, body) = server
        .get("/public/probe?c=tenant-logs&tenant=acme", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"0 lines\""), "{body}");
    let (status, body) = server
        .get("/admin/probe?c=tenant-logs&tenant=acme", Some(&token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(" lines\"") && !body.contains("\"0 lines\""),
        "{body}"
    );
    server.stop().await.unwrap();
}

/// A time to live past what Redis can count (here `u64::MAX` ms, which
/// wrapped to a negative time and deleted the key) is refused as invalid,
/// and the key stays as it was.
async fn absurd_ttls_are_refused_and_keys_kept(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(PROBE, "a").await;
    let out = server.command("probe", &["kv", "probe:ttl"]).await.unwrap();
    assert!(out.contains("stored"), "{out}");
    let out = server
        .command("probe", &["expire", "probe:ttl", &u64::MAX.to_string()])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"invalid""#), "{out}");
    assert!(out.contains("exceeds"), "{out}");
    let out = server
        .command("probe", &["kv-delete", "probe:ttl"])
        .await
        .unwrap();
    assert!(out.contains("existed true"), "the key was kept: {out}");
    server.stop().await.unwrap();
}

on_both_backends!(absurd_ttls, absurd_ttls_are_refused_and_keys_kept);

/// `incr` on a value that is not an integer (as Redis reads one) is the
/// plugin's mistake on both backends: `invalid`, not `unavailable`, and the
/// value is kept.
async fn incr_of_a_non_integer_is_invalid(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(PROBE, "a").await;
    let kv = &server.services.kv;
    for (value, want) in [
        (&b"probe"[..], "value is not an integer"),
        (b"+5", "value is not an integer"),
        (b"05", "value is not an integer"),
        (b"9223372036854775807", "increment would overflow"),
    ] {
        kv.set("probe:n", value, None).await.unwrap();
        let out = server.command("probe", &["incr", "probe:n"]).await.unwrap();
        assert!(out.contains(r#""code":"invalid""#), "{value:?}: {out}");
        assert!(out.contains(want), "{value:?}: {out}");
        assert_eq!(kv.get("probe:n").await.unwrap().as_deref(), Some(value));
    }
    kv.set("probe:n", b"-41", None).await.unwrap();
    let out = server.command("probe", &["incr", "probe:n"]).await.unwrap();
    assert!(out.contains("now -40"), "{out}");
    kv.delete("probe:n").await.unwrap();
    server.stop().await.unwrap();
}

on_both_backends!(incr_of_a_non_integer, incr_of_a_non_integer_is_invalid);

/// A result larger than the plugin could take in (its memory limit, 64 MiB
/// here) is refused as invalid before the host holds it; the rest of it is
/// read and dropped, so on Postgres the same connection serves the next
/// statement. A result under the limit comes back whole.
async fn results_past_the_memory_limit_are_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(PROBE, "a").await;
    // `n` rows of 1 MiB of text each, in SQL both databases speak.
    let mib = match backend {
        Backend::Real => "repeat('0', 1048576)",
        Backend::Embedded => "hex(zeroblob(524288))",
    };
    let rows = |n: u32| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             SELECT {mib} AS t FROM n"
        )
    };
    let pid = "SELECT pg_backend_pid() AS pid";
    let before = match backend {
        Backend::Real => Some(server.master().query(pid, &[]).await.unwrap().rows),
        Backend::Embedded => None,
    };
    let out = server
        .command("probe", &["db-sql", "master", &rows(80)])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"invalid""#), "{out}");
    assert!(out.contains("the result is over 67108864 bytes"), "{out}");
    if let Some(before) = before {
        let after = server.master().query(pid, &[]).await.unwrap().rows;
        assert_eq!(
            before, after,
            "the connection was kept, its exchange complete"
        );
    }
    let out = server
        .command("probe", &["db-sql", "master", &rows(16)])
        .await
        .unwrap();
    assert!(out.contains("16 rows, 16777216 bytes"), "{out}");
    server.stop().await.unwrap();
}

on_both_backends!(
    results_past_the_limit,
    results_past_the_memory_limit_are_refused
);

/// A kv value or list range larger than the plugin could take in (its
/// memory limit, 64 MiB here) is refused as invalid before the host holds
/// it; a smaller range of the same list comes back whole, and the list is
/// untouched. The values were written by the host, as another tool sharing
/// the Redis could: a plugin itself cannot store more than 1 MiB at once.
async fn kv_answers_past_the_memory_limit_are_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(PROBE, "a").await;
    let kv = &server.services.kv;
    let mib = vec![b'0'; 1 << 20];
    for _ in 0..66 {
        kv.list_push("probe:big", std::slice::from_ref(&mib))
            .await
            .unwrap();
    }
    kv.set("probe:huge", &vec![b'0'; 65 << 20], None)
        .await
        .unwrap();
    for args in [
        &["kv-range", "probe:big", "0", "-1"][..],
        &["kv-range", "probe:big", "-65", "-1"],
        &["kv-get", "probe:huge"],
    ] {
        let out = server.command("probe", args).await.unwrap();
        assert!(out.contains(r#""code":"invalid""#), "{args:?}: {out}");
        assert!(out.contains("over 67108864 bytes"), "{args:?}: {out}");
    }
    for (args, want) in [
        (
            &["kv-range", "probe:big", "2", "17"][..],
            "16 items, 16777216 bytes",
        ),
        (
            &["kv-range", "probe:big", "-3", "100"],
            "3 items, 3145728 bytes",
        ),
        (&["kv-range", "probe:big", "70", "80"], "0 items, 0 bytes"),
        (&["kv-range", "probe:none", "0", "-1"], "0 items, 0 bytes"),
        (&["kv-get", "probe:none"], "0 bytes"),
    ] {
        let out = server.command("probe", args).await.unwrap();
        assert!(out.contains(want), "{args:?}: {out}");
    }
    assert_eq!(kv.list_len("probe:big").await.unwrap(), 66);
    assert_eq!(
        kv.get("probe:huge").await.unwrap().map(|v| v.len()),
        Some(65 << 20)
    );
    kv.delete("probe:big").await.unwrap();
    kv.delete("probe:huge").await.unwrap();
    server.stop().await.unwrap();
}

on_both_backends!(
    kv_answers_past_the_limit,
    kv_answers_past_the_memory_limit_are_refused
);

/// Bodies being read share a budget (32 MiB for routes that need a role):
/// 16 clients that each send all but the last byte of a 2 MiB body fill it
/// (to 16 bytes), so a request with a body gets 503 and `Retry-After`,
/// while a request without one is still served; once the slow clients go
/// the budget is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_bodies_is_refused_not_buffered() {
    use neo_ops::triggers::body::{MAX_BODY, OPERATOR_BODIES};
    let dep = Deployment::new(Backend::Embedded).await;
    let server = start(&dep, 8, Duration::from_millis(500)).await;
    let token = admin_token(&server).await;
    let post = |len: usize| {
        format!(
            "POST /admin/probe?c=db&t=master HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             connection: close\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    let slow_clients = OPERATOR_BODIES / MAX_BODY;
    let mut slow = Vec::new();
    for _ in 0..slow_clients {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(post(MAX_BODY).as_bytes()).await.unwrap();
        s.write_all(&vec![b' '; MAX_BODY - 1]).await.unwrap();
        slow.push(s);
    }
    let budget = &server.services.request_bodies;
    let deadline = Instant::now() + Duration::from_secs(20);
    while budget.held(false) < slow_clients * (MAX_BODY - 1) {
        assert!(Instant::now() < deadline, "held {}", budget.held(false));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = answer_without_body(&server, &format!("{}{}", post(1024), " ".repeat(1024))).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        answer.ends_with(r#""message":"busy, try again shortly"}}"#),
        "{answer}"
    );
    let (status, body) = server.get("/admin/probe?c=db&t=master", Some(&token)).await;
    assert_eq!((status, body.contains("1 row")), (200, true), "{body}");
    drop(slow);
    while budget.held(false) > 0 {
        assert!(Instant::now() < deadline, "the budget never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = server
        .post(
            "/admin/probe?c=db&t=master",
            Some(&token),
            &" ".repeat(1 << 20),
        )
        .await;
    assert_eq!((status, body.contains("1 row")), (200, true), "{body}");
    server.stop().await.unwrap();
}

/// A plugin that raises a connection-exception SQLSTATE itself (08006, at
/// severity ERROR) has its statement refused like any other, and the
/// breaker stays shut: the next statement runs at once. Taken for an
/// outage, it opened the breaker for every plugin for a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_outage_code_does_not_open_the_breaker() {
    let dep = Deployment::new(Backend::Real).await;
    let server = dep.start(PROBE, "a").await;
    // A function, since a plugin may not send `DO` itself.
    server
        .master()
        .execute(
            "CREATE FUNCTION not_really_gone() RETURNS int LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'not really gone' USING ERRCODE = '08006'; END $$",
            &[],
        )
        .await
        .unwrap();
    let out = server
        .command("probe", &["db-sql", "master", "SELECT not_really_gone()"])
        .await
        .unwrap();
    assert!(out.contains("the database rejected the statement"), "{out}");
    let out = server.command("probe", &["db", "master"]).await.unwrap();
    assert!(out.contains("1 row"), "{out}");
    server.stop().await.unwrap();
}

/// A runaway statement on the embedded database (a recursive CTE with no
/// end) is stopped by SQLite at the 30 s statement limit, and its
/// connection goes back to the pool. Before, the host gave up on it and
/// sqlx's thread ran it on for good, its pool slot taken: eight of them
/// wedged the master, the host's own queries included. Parameters sqlx
/// cannot bind are the statement's fault: `$0` no longer kills the
/// connection's thread and reads as success, and a named one is not an
/// outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_sqlite_statement_is_stopped_and_its_connection_returned() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = PROBE.replace(r#"timeout = "10s""#, r#"timeout = "45s""#);
    let server = dep.start(&manifest, "a").await;
    let neo_ops::backends::db::Pool::Sqlite(pool) = server.master() else {
        panic!("the embedded master is SQLite");
    };
    let runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                   SELECT count(*) AS n FROM c";
    let asked = Instant::now();
    let out = server
        .command("probe", &["db-sql", "master", runaway])
        .await
        .unwrap();
    assert!(out.contains("statement timed out"), "{out}");
    assert!(
        asked.elapsed() < Duration::from_secs(40),
        "{:?}",
        asked.elapsed()
    );
    support::wait_until("the runaway's connection is back in the pool", || async {
        pool.num_idle() as u32 == pool.size()
    })
    .await;
    for (sql, says) in [
        (
            "SELECT $0 AS n",
            "no parameter $0: parameters count from $1",
        ),
        ("SELECT :name AS n", "unsupported SQL parameter format"),
    ] {
        let out = server
            .command("probe", &["db-sql", "master", sql])
            .await
            .unwrap();
        assert!(out.contains(r#""code":"invalid""#), "{sql}: {out}");
        assert!(out.contains(says), "{sql}: {out}");
    }
    let out = server.command("probe", &["db", "master"]).await.unwrap();
    assert!(out.contains("1 row"), "{out}");
    server.stop().await.unwrap();
}

/// Every plugin connection held by slow statements: a caller that waits
/// out the acquire timeout is told the database is busy, and that opens no
/// breaker, so the next caller gets the first connection freed; `/readyz`
/// stays 200 (the database answers). Before, the wait counted as an outage:
/// every statement failed for a second, and readiness went 503 under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_pool_is_not_an_outage() {
    let dep = Deployment::new(Backend::Real).await;
    let server = Arc::new(start(&dep, 24, Duration::from_millis(100)).await);
    let sleepers: Vec<_> = (0..neo_ops::backends::db::MAX_CONNECTIONS)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .command(
                        "probe",
                        &["db-sql", "master", "SELECT 1 AS n FROM pg_sleep(5)"],
                    )
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the database answers");
    let out = server.command("probe", &["db", "master"]).await.unwrap();
    assert!(out.contains(r#""code":"unavailable""#), "{out}");
    assert!(out.contains("every database connection is in use"), "{out}");
    // The sleepers end about 1.5 s later; this caller waits for one.
    let out = server.command("probe", &["db", "master"]).await.unwrap();
    assert!(out.contains("1 row"), "{out}");
    for sleeper in sleepers {
        let out = sleeper.await.unwrap().unwrap();
        assert!(out.contains("1 rows"), "{out}");
    }
    Arc::into_inner(server).unwrap().stop().await.unwrap();
}

/// A call to the database given up on at the probe's I/O deadline (1.5 s
/// of its 2 s), so the plugin answers `unavailable`, saying `why`, itself.
fn assert_given_up_in_time(out: &str, waited: Duration, why: &str) {
    assert!(out.contains(r#""code":"unavailable""#), "{out}");
    assert!(out.contains(why), "{out}");
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(1900),
        "given up on at 1.5 s of 2 s: {waited:?}"
    );
}

/// No outage: the next statement runs at once.
async fn assert_next_statement_runs_at_once(server: &support::Server) {
    let next = Instant::now();
    let out = server.command("probe", &["db", "master"]).await.unwrap();
    assert!(out.contains("1 row"), "{out}");
    assert!(
        next.elapsed() < Duration::from_secs(1),
        "{:?}",
        next.elapsed()
    );
}

/// A statement slower than its plugin has time for is given up on a
/// quarter of that time before the plugin's end, so the plugin answers with
/// the error itself instead of being cut off (a 504); Postgres ends the
/// statement too, seeing its connection closed, rather than running it on
/// to the statement timeout; and a slow statement is no outage: the next
/// caller's statement runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_past_the_plugins_time_fails_in_time_and_ends() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = PROBE.replace(r#"timeout = "10s""#, r#"timeout = "2s""#);
    let server = Arc::new(dep.start(&manifest, "a").await);
    let slow = "SELECT 1 AS n FROM pg_sleep(25)";
    let running = format!(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE query = '{slow}' AND state = 'active'"
    );
    let sleeping = || {
        let (server, running) = (server.clone(), running.clone());
        async move {
            let rows = server.master().query(&running, &[]).await.unwrap().rows;
            rows[0][0] != neo_ops::backends::db::Value::Int(0)
        }
    };
    let asked = Instant::now();
    let call = tokio::spawn({
        let server = server.clone();
        async move { server.command("probe", &["db-sql", "master", slow]).await }
    });
    support::wait_until("the slow statement runs", sleeping).await;
    let out = call.await.unwrap().unwrap();
    let said = "the database did not answer in the time the plugin had";
    assert_given_up_in_time(&out, asked.elapsed(), said);
    assert_next_statement_runs_at_once(&server).await;
    // And the server has ended the statement the host gave up on.
    let cut = Instant::now();
    while sleeping().await {
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "the server still runs the statement the host gave up on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Arc::into_inner(server).unwrap().stop().await.unwrap();
}

/// A transaction slower than its plugin has time for is stopped by
/// Postgres itself at the plugin's deadline (its statement timeout, set for
/// that transaction), rolled back, and said to be so: the plugin answers in
/// time, nothing of it committed, nothing runs on, and the connection
/// serves the next caller. Before, it ran on up to the host's 30 s limit,
/// holding its connection and locks, and the invocation waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_past_the_plugins_time_rolls_back_in_time() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = PROBE.replace(r#"timeout = "10s""#, r#"timeout = "2s""#);
    let server = dep.start(&manifest, "a").await;
    let write = "INSERT INTO incidents (title, details) VALUES ('cut short', 'probe')";
    let kept = "SELECT COUNT(*) AS n FROM incidents WHERE title = 'cut short'";
    let count = async |sql: &str| server.master().query(sql, &[]).await.unwrap().rows[0][0].clone();
    let none = neo_ops::backends::db::Value::Int(0);
    let running = "SELECT COUNT(*) AS n FROM pg_stat_activity \
                   WHERE query LIKE '%pg_sleep%' AND query NOT LIKE '%pg_stat_activity%' \
                   AND state = 'active' AND datname = current_database()";
    // One long statement, and many short ones that add up to too long.
    let long = ["SELECT 1 AS n FROM pg_sleep(25)"; 1];
    let short = ["SELECT 1 AS n FROM pg_sleep(0.2)"; 20];
    for sleeps in [&long[..], &short[..]] {
        let mut args = vec!["db-tx", "master", write];
        args.extend(sleeps);
        let asked = Instant::now();
        let out = server.command("probe", &args).await.unwrap();
        let said = "did not finish in the time the plugin had; nothing of it was committed";
        assert_given_up_in_time(&out, asked.elapsed(), said);
        assert_eq!(count(kept).await, none, "the insert was rolled back");
        assert_eq!(count(running).await, none, "nothing runs on");
        assert_next_statement_runs_at_once(&server).await;
    }
    // In time, the same transaction commits.
    let out = server
        .command("probe", &["db-tx", "master", write, short[0]])
        .await
        .unwrap();
    assert!(out.contains("2 statements"), "{out}");
    assert_eq!(count(kept).await, neo_ops::backends::db::Value::Int(1));
    server.stop().await.unwrap();
}

/// A change committed on a tenant database while the master blips still
/// gets its audit record: the append is asked again until the master is
/// back. Before, the plugin got "committed but the audit log is
/// unavailable" and the change stayed off the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_after_a_commit_waits_out_a_master_blip() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = PROBE.replace(
        r#"db = ["master"] }"#,
        r#"db = ["master", "tenant:*"], audit = true }"#,
    );
    let (server, pg) = dep.start_with_master_proxy(&manifest).await;
    let server = Arc::new(server);
    server
        .services
        .db
        .create_tenant("acme", "Acme")
        .await
        .unwrap();
    // The tenant's statement takes half a second, so the record is first
    // asked for while the master is still away.
    let slow = "SELECT 1 AS one FROM pg_sleep(0.5)";
    let tx = |server: Arc<Server>| async move {
        server
            .command("probe", &["audit-tx", "tenant:acme", slow])
            .await
            .unwrap()
    };
    let out = tx(server.clone()).await;
    assert!(out.contains("\"detail\":\"record "), "{out}");
    pg.set_up(false);
    let during = tokio::spawn(tx(server.clone()));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!during.is_finished(), "the record waits for the master");
    pg.set_up(true);
    let out = during.await.unwrap();
    assert!(out.contains("\"detail\":\"record "), "{out}");
    let records = server
        .master()
        .query(
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'probe.tx'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(records.rows[0][0], neo_ops::backends::db::Value::Int(2));
    Arc::into_inner(server).unwrap().stop().await.unwrap();
}

/// A token made to expire works until then and is refused like a revoked
/// one from then on (the copy of the token table knows it, but a genuine
/// token is always confirmed by the database); the live list leaves it out,
/// and the whole list still shows it, with when it expired.
async fn an_expired_token_is_refused(backend: Backend) {
    use neo_ops::auth;
    let dep = Deployment::new(backend).await;
    let server = dep.start(PROBE, "a").await;
    let master = server.master();
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let micros = Some(expires.timestamp_micros());
    let token = auth::create_token_expiring(master, Role::Admin, "contractor", micros)
        .await
        .unwrap();
    let status = || server.get("/admin/probe?c=env&n=X", Some(&token));
    assert_eq!(status().await.0, 200);
    let live = auth::list_tokens(master, false).await.unwrap();
    assert_eq!(live.len(), 1);
    let listed = live[0].expires_at.as_deref().unwrap();
    let listed = chrono::DateTime::parse_from_rfc3339(listed).unwrap();
    assert!(
        (listed.timestamp() - expires.timestamp()).abs() <= 1,
        "{listed}"
    );

    // It expires (as if an hour had passed).
    let past = chrono::Utc::now().timestamp_micros() - 1_000_000;
    master
        .execute(
            "UPDATE api_tokens SET expires_at = $1 WHERE token_id = $2",
            &[
                neo_ops::backends::db::Value::Timestamp(past),
                neo_ops::backends::db::Value::Text(token[4..12].into()),
            ],
        )
        .await
        .unwrap();
    let (code, body) = status().await;
    assert_eq!((code, body.as_str()), (403, FORBIDDEN));
    assert!(auth::list_tokens(master, false).await.unwrap().is_empty());
    let all = auth::list_tokens(master, true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "contractor");
    assert_eq!(all[0].revoked_at, None);
    server.stop().await.unwrap();
}

on_both_backends!(token_expiry, an_expired_token_is_refused);

/// A check the host was too busy to run (its one slot held past the
/// admission wait) says so: "not run", with what to do, not "see the
/// log". It still fails the checklist, which vouches only for what ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_refused_a_slot_says_it_was_not_run() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let dep = Deployment::new(Backend::Embedded).await;
    let mut settings = dep.settings("a");
    settings.max_instances = 1;
    settings.admission = AdmissionPolicy {
        wait: Duration::from_millis(200),
        ..Default::default()
    };
    let services = Services::connect(settings).await.expect("services");
    let manifest = silent_alertmanager_check(silent_addr, "2s")
        + "\n[plugins.check-redis]\ncomponent = \"check_redis.wasm\"\ncheck = true\n\
           grants = { kv = [\"preflight:\"] }\n";
    let server = dep.start_with_services(&manifest, services).await;
    // The slow check takes the only slot for two seconds.
    let slow = tokio::spawn({
        let runtime = server.runtime.clone();
        async move { runtime.check("check-alertmanager", "held").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report =
        neo_ops::preflight::run(&server.runtime, vec!["check-redis".into()], "asked", None).await;
    let check = &report.checks[0];
    // Not run is not passed, but it says why.
    assert_eq!(
        check.status,
        neo_ops::runtime::CheckStatus::Fail,
        "{check:?}"
    );
    assert!(
        check
            .hint
            .as_deref()
            .is_some_and(|h| h.starts_with("not run: every plugin slot was taken")),
        "{check:?}"
    );
    assert!(report.failed(), "{report:?}");
    slow.await.unwrap().ok();
    drop(silent);
    server.stop().await.unwrap();
}

/// A statement that would outlive the call on a pooled connection (open or
/// end a transaction, change the session, attach another SQLite file) is
/// refused before it reaches the database; the next statement runs as usual.
async fn session_statements_are_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(PROBE, "a").await;
    let attach = format!(
        "ATTACH '{}' AS m",
        dep.data_dir("a").join("db/master.sqlite").display()
    );
    let attach_after = format!("SELECT 1; {attach}");
    for (sql, keyword) in [
        ("BEGIN", "BEGIN"),
        (";BEGIN", "BEGIN"),
        ("  commit", "COMMIT"),
        (attach_after.as_str(), "ATTACH"),
        ("CREATE TEMP TABLE api_tokens (id int)", "TEMP"),
        ("SELECT pg_advisory_lock(7305425512)", "pg_advisory_lock"),
        ("SET statement_timeout = 0", "SET"),
        ("/* x */ set search_path to elsewhere", "SET"),
        ("SELECT set_config('search_path', 'x', false)", "set_config"),
        ("DO $$ BEGIN NULL; END $$", "DO"),
        ("PRAGMA foreign_keys = OFF", "PRAGMA"),
        (attach.as_str(), "ATTACH"),
        ("VACUUM INTO 'copy.sqlite'", "VACUUM"),
    ] {
        let out = server
            .command("probe", &["db-sql", "master", sql])
            .await
            .unwrap();
        assert!(out.contains(r#""code":"invalid""#), "{sql}: {out}");
        assert!(
            out.contains(&format!("statement \\\"{keyword}\\\" is not allowed")),
            "{sql}: {out}"
        );
    }
    assert!(!dep.data_dir("a").join("copy.sqlite").exists());
    let out = server.command("probe", &["db", "master"]).await.unwrap();
    assert!(out.contains("1 row"), "{out}");
    server.stop().await.unwrap();
}

on_both_backends!(session_statements, session_statements_are_refused);

/// A job whose acknowledgement Redis misses (an outage while it runs) is
/// settled once Redis is back, without a restart: the consumer keeps trying
/// with the job in hand instead of leaving it in its processing list, where
/// only the next start would have found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_finished_during_a_redis_outage_is_acknowledged_after_it() {
    use neo_ops::backends::queue;
    let dep = Deployment::new(Backend::Real).await;
    let (server, redis) = dep.start_with_redis_proxy(PROBE).await;
    // Read past the proxy, straight from Redis.
    let direct = Services::connect(dep.settings("observer")).await.unwrap();
    let kv = &direct.kv;
    let processing = queue::processing_key("jobs", &server.services.settings.replica);
    queue::enqueue(kv, "jobs", None, "sleep:1500-no-kv")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kv.list_len(&processing).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the job was never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.set_up(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        kv.list_len(&processing).await.unwrap(),
        1,
        "still in flight"
    );
    redis.set_up(true);
    let back = Instant::now();
    while kv.list_len(&processing).await.unwrap() != 0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the finished job stayed in the processing list"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kv.list_len(&queue::queue_key("jobs")).await.unwrap(), 0);
    assert_eq!(
        kv.list_len(&queue::dead_letter_key("jobs")).await.unwrap(),
        0
    );
    server.stop().await.unwrap();
}

/// A flood of made-up tokens stays off the master database: the host
/// checks a wrong secret for a real token's id against its copy of the
/// token table, and remembers a made-up id the database did not know. So
/// with the database cut off both are still refused with 403, while a
/// genuine token, which the database would confirm, is vouched for by the
/// copy on a GET (so Prometheus still scrapes `/metrics`), until it
/// expires; a POST gets 503. A
/// token made after the copy was read works at once, and a revoked one is
/// refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_tokens_are_refused_without_the_database() {
    let dep = Deployment::new(Backend::Real).await;
    let (server, pg) = dep.start_with_master_proxy(PROBE).await;
    let token = admin_token(&server).await;
    let secret = "0".repeat(64);
    let wrong_secret = format!("neo_{}_{secret}", &token[4..12]);
    let made_up = format!("neo_deadbeef_{secret}");
    let status = |token: String| {
        let server = &server;
        async move { server.get("/admin/probe?c=env&n=X", Some(&token)).await }
    };
    assert_eq!(status(token.clone()).await.0, 200);
    for fake in [&wrong_secret, &made_up] {
        let (code, body) = status(fake.clone()).await;
        assert_eq!((code, body.as_str()), (403, FORBIDDEN));
    }
    let expires = tokio::time::Instant::now() + Duration::from_secs(8);
    let expiring = neo_ops::auth::create_token_expiring(
        server.master(),
        Role::Admin,
        "contractor",
        Some(chrono::Utc::now().timestamp_micros() + 8_000_000),
    )
    .await
    .unwrap();
    assert_eq!(status(expiring.clone()).await.0, 200, "the copy learns it");

    pg.set_up(false);
    let (code, body) = status(expiring.clone()).await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..20 {
        for fake in [&wrong_secret, &made_up] {
            let (code, body) = status(fake.clone()).await;
            assert_eq!((code, body.as_str()), (403, FORBIDDEN), "{fake}");
        }
    }
    let (code, body) = status(token.clone()).await;
    assert_eq!(code, 200, "the copy vouches for a genuine token: {body}");
    // Not for a request that may change something.
    let (code, body) = server
        .post("/admin/probe?c=env&n=X", Some(&token), "")
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("authentication unavailable"), "{body}");
    tokio::time::sleep_until(expires + Duration::from_millis(200)).await;
    let (code, body) = status(expiring.clone()).await;
    assert_eq!((code, body.as_str()), (403, FORBIDDEN), "expired meanwhile");
    pg.set_up(true);

    // The master answers again (a ping closes the breaker the outage opened).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.master().ping().await {
        assert!(Instant::now() < deadline, "the master never answered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let newer = admin_token(&server).await;
    assert_eq!(
        status(newer.clone()).await.0,
        200,
        "a token made after the copy"
    );
    assert!(
        neo_ops::auth::revoke_token(server.master(), &token[4..12])
            .await
            .unwrap()
    );
    let (code, body) = status(token.clone()).await;
    assert_eq!((code, body.as_str()), (403, FORBIDDEN), "revoked");
    assert_eq!(status(newer).await.0, 200);
    server.stop().await.unwrap();
}

/// Answers for an operator (role routes, host admin routes, every error)
/// are never stored by a browser or proxy; every answer tells browsers not
/// to sniff its type; a public plugin answer keeps its own caching; every
/// answer of a route that runs for someone carries its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_answers_are_not_cached_and_nothing_is_sniffed() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = start(&dep, 8, Duration::from_millis(500)).await;
    let token = admin_token(&server).await;
    for (path, auth, status, cache) in [
        ("/admin/probe?c=db&t=master", true, 200, Some("no-store")),
        ("/api/admin/whoami", true, 200, Some("no-store")),
        ("/api/admin/audit", true, 200, Some("no-store")),
        ("/metrics", true, 200, Some("no-store")),
        ("/admin/probe?c=db&t=master", false, 403, Some("no-store")),
        ("/no/such/route", false, 404, Some("no-store")),
        ("/public/probe?c=db&t=master", false, 200, None),
        ("/healthz", false, 200, Some("no-store")),
        ("/readyz", false, 200, Some("no-store")),
    ] {
        let mut req = server.http.get(server.url(path));
        if auth {
            req = req.bearer_auth(&token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(
            h.get("cache-control").map(|v| v.to_str().unwrap()),
            cache,
            "{path}"
        );
        // Every answer names its request, also a refusal or a 404, so it
        // can be found in the host's log.
        assert!(h.contains_key("x-request-id"), "{path}");
    }
    // A method the route does not take is refused naming the request too.
    let resp = server
        .http
        .post(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.headers().contains_key("x-request-id"));
    // An id the client sent comes back on a refusal, before any handler ran.
    for path in [
        "/api/admin/audit",
        "/metrics",
        "/admin/probe?c=db&t=master",
        "/no/such/route",
    ] {
        let resp = server
            .http
            .get(server.url(path))
            .header("x-request-id", "trace-403")
            .send()
            .await
            .unwrap();
        let refused = if path == "/no/such/route" { 404 } else { 403 };
        assert_eq!(resp.status().as_u16(), refused, "{path}");
        assert_eq!(resp.headers()["x-request-id"], "trace-403", "{path}");
    }
    // While the first plugin set loads, a wrong method gets the same
    // envelope and headers (before, axum's bare 405).
    let loading = neo_ops::triggers::http::loading_router(server.services.clone());
    let request = axum::http::Request::post("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let Ok(resp) = tower::ServiceExt::oneshot(loading, request).await;
    assert_eq!(resp.status().as_u16(), 405);
    let h = resp.headers();
    let header = |name: &str| h[name].to_str().unwrap();
    assert_eq!(
        (header("x-content-type-options"), header("cache-control")),
        ("nosniff", "no-store")
    );
    assert_eq!(header("allow"), "GET,HEAD");
    assert!(h.contains_key("x-request-id"));
    let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
    assert_eq!(
        body,
        r#"{"ok":false,"error":{"code":405,"message":"method \"POST\" is not allowed here"}}"#
    );
    server.stop().await.unwrap();
}

/// An anonymous route's errors are readable from another origin: a status
/// widget polling from another site sees a 503 and its `Retry-After`, not
/// a bare network error. An operator route's errors are not opened up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_errors_are_readable_cross_origin() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let get = |path: &str| {
        server
            .http
            .get(server.url(path))
            .header("origin", "https://pos.example")
            .send()
    };
    let resp = get("/public/probe?c=no-such-probe").await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "retry-after, x-request-id"
    );
    let resp = get("/admin/probe?c=no-such-probe").await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    // A method the public path does not take: 405, readable, with Allow.
    let resp = server
        .http
        .delete(server.url("/public/probe"))
        .header("origin", "https://pos.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        resp.headers()["allow"].to_str().unwrap().contains("GET"),
        "{:?}",
        resp.headers()
    );

    // While the first plugin set loads.
    let loading = neo_ops::triggers::http::loading_router(server.services.clone());
    let request = axum::http::Request::get("/status.json")
        .body(axum::body::Body::empty())
        .unwrap();
    let Ok(resp) = tower::ServiceExt::oneshot(loading, request).await;
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert_eq!(resp.headers()["retry-after"], "1");
    server.stop().await.unwrap();
}

/// At the cap, with every connection busy, a new one does not wait for a
/// busy connection to close: once that connection's request is answered
/// and it sits idle on keep-alive, it is closed to make room (before, the
/// new one waited for the 10 s header timeout to close it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_looks_again_for_a_connection_gone_idle() {
    // The only slot: a preflight that takes about a second, then keep-alive.
    let (_dep, server, held, mut busy) = a_slow_preflight_at_the_cap(1, "1s").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let mut probe = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: neo\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), probe.read_to_string(&mut answer))
        .await
        .expect("the probe was answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "waited {:?} for a slot",
        asked.elapsed()
    );
    // The busy connection got its answer before it was closed.
    let mut head = vec![0u8; 4096];
    let n = busy.read(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 "),
        "the preflight answered"
    );
    held.abort();
    server.stop().await.unwrap();
}

/// `serve` started while its master database cannot be reached (a reboot
/// that brings neo-ops up before Postgres) waits for it, saying why on
/// each try, rather than exiting (a supervisor gives up on a process that
/// keeps exiting at once), and serves once the database is there. An error
/// that does not pass by itself (a database that does not exist) still
/// ends the start, and so does an address it cannot listen on, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_its_database_at_start() {
    let dep = Deployment::new(Backend::Real).await;
    let pg = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    pg.set_up(false);
    let settings = dep.settings_with_master_at("a", pg.addr);
    let master = settings.postgres_master_url.clone().unwrap();
    let cli = support::Cli::new("");
    let log = cli.dir.path().join("serve.log");
    let serve = |master: &str| {
        cli.command_on(&["serve", "--listen", "127.0.0.1:0"], &settings)
            .env("POSTGRES_MASTER_URL", master)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
    };
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let exit_code = async |child: &mut Serving| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status.code();
            }
            assert!(Instant::now() < deadline, "still waiting: {}", said());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // An address it cannot listen on is said at once, not after the wait
    // (for ever, were the database never back).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let mut child = Serving(
        cli.command_on(&["serve", "--listen", &taken], &settings)
            .env("POSTGRES_MASTER_URL", &master)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert_eq!(exit_code(&mut child).await, Some(1), "{}", said());
    assert!(
        said().contains(&format!("listening on \"{taken}\"")),
        "{}",
        said()
    );
    assert!(!said().contains("cannot start yet"), "{}", said());
    drop(held);

    // Not a passing fault: the start ends, naming it.
    let direct = dep.settings("a").postgres_master_url.unwrap();
    let missing = direct.rsplit_once('/').unwrap().0.to_string() + "/neo_no_such_database";
    let mut child = Serving(serve(&missing));
    let code = exit_code(&mut child).await;
    assert_eq!(code, Some(1), "{}", said());
    assert!(said().contains("does not exist"), "{}", said());
    assert!(!said().contains("cannot start yet"), "{}", said());

    let mut child = Serving(serve(&master));
    let deadline = Instant::now() + Duration::from_secs(20);
    while said().matches("cannot start yet").count() < 2 {
        assert!(Instant::now() < deadline, "no word of the wait: {}", said());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(child.0.try_wait().unwrap().is_none(), "{}", said());
    assert!(said().contains("trying again in"), "{}", said());

    pg.set_up(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = said();
        let serving = text.lines().find(|l| l.contains(" serving "));
        if let Some(addr) = serving.and_then(|l| l.split("addr=").nth(1)) {
            break addr.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "never served: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    until_ready(&format!("http://{addr}"), said).await;
}

/// A `neo-ops serve` process a test started, stopped however the test ends
/// (a failed assertion too), before its deployment's databases and keys
/// are dropped.
struct Serving(std::process::Child);

impl Serving {
    /// `neo-ops serve` on `cli`'s files and a free port, its log in
    /// `<name>.log`: the process, its base URL and the log's path.
    fn start(cli: &support::Cli, name: &str) -> (Self, String, std::path::PathBuf) {
        let log = cli.dir.path().join(format!("{name}.log"));
        let port = support::alertmanager::free_port();
        let child = cli
            .command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Self(child), format!("http://127.0.0.1:{port}"), log)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 30 s for `GET {base}/readyz` to answer 200; `log` is what
/// the failure shows (the server's own log).
async fn until_ready(base: &str, log: impl Fn() -> String) {
    let http = reqwest::Client::new();
    let url = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(&url).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{base} never ready: {}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On the embedded backends one `serve` has the data dir: a second is
/// refused at start, saying why (its queues and locks would be its own).
/// So the one that starts after a `kill -9` knows the runs left `running`
/// there were cut off, and marks them interrupted at once. Before, a second
/// serve ran beside the first, and a killed one's runs stayed `running`
/// for good (its name was its pid, never seen again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serve_per_data_dir_and_a_killed_ones_runs_are_released() {
    let manifest = r#"
[plugins.probe]
component = "test_probe.wasm"
schedules = [{ cron = "* * * * * *", args = ["sleep:60000"] }]
grants = { kv = ["probe:"] }
limits = { timeout = "120s" }
"#;
    let cli = support::Cli::new(manifest);
    let serve = |name: &str| Serving::start(&cli, name);
    let read = |log: &std::path::Path| std::fs::read_to_string(log).unwrap_or_default();
    let (mut first, base, first_log) = serve("first");
    until_ready(&base, || read(&first_log)).await;

    let (mut second, _, second_log) = serve("second");
    let status = tokio::task::block_in_place(|| second.0.wait().unwrap());
    assert!(!status.success(), "{}", read(&second_log));
    assert!(
        read(&second_log).contains("another neo-ops serve is using data dir"),
        "{}",
        read(&second_log)
    );

    let master = cli.dir.path().join("data/db/master.sqlite");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", master.display()))
        .await
        .unwrap();
    let running = async |replica: Option<&str>| -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT replica FROM runs WHERE status = 'running' AND (?1 IS NULL OR replica = ?1)",
        )
        .bind(replica)
        .fetch_all(&db)
        .await
        .unwrap();
        rows.into_iter().map(|(r,)| r).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let killed = loop {
        if let Some(replica) = running(None).await.pop() {
            break replica;
        }
        assert!(
            Instant::now() < deadline,
            "no run started: {}",
            read(&first_log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert_eq!(running(Some(&killed)).await, std::slice::from_ref(&killed));

    let (_third, base, third_log) = serve("third");
    until_ready(&base, || read(&third_log)).await;
    assert_eq!(
        running(Some(&killed)).await,
        Vec::<String>::new(),
        "{}",
        read(&third_log)
    );
    // Marked interrupted (the catch-up may then claim its slot again).
    let log = read(&third_log);
    assert!(
        log.contains("marked unfinished runs as interrupted") && log.contains(&killed),
        "{log}"
    );
}

/// With the in-process kv, what the queues hold ends with the process:
/// `serve` says so as it stops, naming each queue's jobs (a restart during
/// the night's retries lost them without a word), the one in hand that the
/// drain gave up waiting for included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_names_the_queued_jobs_the_in_process_kv_drops() {
    let manifest = r#"
[plugins.probe]
component = "test_probe.wasm"
routes = [{ method = "GET", path = "/public/probe" }]
queue = { name = "jobs", max_attempts = 3, backoff = "1h" }
grants = { kv = ["probe:"], queues = ["jobs"] }
limits = { timeout = "120s" }
"#;
    let cli = support::Cli::new(manifest);
    let (mut child, base, log) = Serving::start(&cli, "serve");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    until_ready(&base, text).await;
    assert!(text().contains("no REDIS_URL: queued jobs, their retries and dead letters live in this process's memory"), "{}", text());
    let queued = reqwest::get(format!("{base}/public/probe?c=enqueue&q=jobs&p=fail-me"))
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 200);
    // Failed once: it now waits an hour for its retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text().contains("will retry") {
        assert!(Instant::now() < deadline, "{}", text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A job longer than the stop's 30 s grace is in hand as it stops.
    let long = reqwest::get(format!(
        "{base}/public/probe?c=enqueue&q=jobs&p=sleep:90000"
    ))
    .await
    .unwrap();
    assert_eq!(long.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let stopped = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().unwrap();
        (child, status)
    });
    let (_child, status) = tokio::time::timeout(Duration::from_secs(50), stopped)
        .await
        .expect("serve stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}: {}", text());
    let text = text();
    assert!(
        text.contains("these queued jobs with it")
            && text.contains(
                r#"\"jobs\": 0 waiting, 1 waiting for a retry, 0 dead letters, 1 in hand"#
            ),
        "{text}"
    );
}

/// An answer given before a request's body was read (here 403: an upload to
/// a role route with no credentials) reaches a client that sends its whole
/// body before reading, as a browser or curl without `Expect` does. Before,
/// the connection was closed with the body unread, the kernel answered the
/// rest with a reset, and the client saw "connection reset" instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_reaches_a_client_still_sending_its_body() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(PROBE, "a").await;
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        // Far more than the two sockets' buffers hold.
        let body = vec![b'x'; 32 << 20];
        write!(
            client,
            "POST /admin/probe HTTP/1.1\r\nhost: neo\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        client
            .write_all(&body)
            .map_err(|e| format!("sending the body: {e}"))?;
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .map_err(|e| format!("reading the answer: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .unwrap();
    let answer = answer.expect("the answer, not a reset");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    server.stop().await.unwrap();
}
