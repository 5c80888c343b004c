//! `cargo bench --bench runtime`: plugin routes against native axum handlers
//! doing the same work in the same process, driven by a load generator in a
//! second process (this binary re-executed with `--loadgen`). Prints ratios,
//! and what a request costs the server: CPU time and context switches. The
//! no-I/O row has a third contender, the native handler plus as much CPU work
//! as a plugin instance costs in process: the most a plugin route could reach
//! here with nothing else added.
//!
//! Needs Postgres on 127.0.0.1:5432 (as the tests do); creates and drops its
//! own database.

use axum::Json;
use axum::extract::State;
use neo_ops::backends::db::{Pool, Value};
use neo_ops::runtime::{Invocation, Runtime, Trigger};
use neo_ops::services::Services;
use neo_ops::settings::Settings;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod common;

const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

const MANIFEST: &str = r#"
[plugins.faults]
component = "test_faults.wasm"
routes = [{ method = "GET", path = "/faults/{mode}" }]
limits = { memory = "16MiB", timeout = "2s" }

[plugins.status-page]
component = "status_page.wasm"
routes = [{ method = "GET", path = "/status.json" }]
command = true
grants = { db = ["master"], kv = ["status:"], audit = true }
limits = { memory = "32MiB", timeout = "2s" }
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--loadgen") {
        let url = args[i + 1].clone();
        let secs: f64 = args[i + 2].parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let (counted, total) = rt.block_on(loadgen(url, Duration::from_secs_f64(secs)));
        println!("{counted} {total}");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

// ---- load generator (second process) ---------------------------------------

/// Keep-alive HTTP/1.1 GETs on `CONNECTIONS` connections; returns requests
/// completed during `measure` (after a warm-up), and in all.
async fn loadgen(url: String, measure: Duration) -> (u64, u64) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes();
    let start = Instant::now() + WARMUP;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (authority, request) = (authority.to_string(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&authority).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let (mut counted, mut total) = (0u64, 0u64);
            loop {
                let now = Instant::now();
                if now >= end {
                    return (counted, total);
                }
                s.write_all(&request).await.unwrap();
                read_response(&mut s, &mut buf).await;
                total += 1;
                if Instant::now() >= start && Instant::now() < end {
                    counted += 1;
                }
            }
        }));
    }
    let (mut counted, mut total) = (0, 0);
    for t in tasks {
        let (c, t) = t.await.unwrap();
        (counted, total) = (counted + c, total + t);
    }
    (counted, total)
}

async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut [u8]) {
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).await.unwrap();
        assert!(n > 0, "server closed the connection");
        have += n;
        if let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .unwrap()
                .to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "non-200 response: {head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            let total = end + 4 + len;
            while have < total {
                let n = s.read(&mut buf[have..]).await.unwrap();
                assert!(n > 0);
                have += n;
            }
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One load generator run against `url`.
#[derive(Clone, Copy)]
struct Run {
    req_per_s: f64,
    /// This process's CPU time (both servers live here; one is loaded at a
    /// time) per request the load generator completed, warm-up included:
    /// what a request costs the server apart from the database's own work,
    /// without the load generator's share.
    server_us: f64,
    /// The server's context switches per request, voluntary (a worker with
    /// nothing to do parks) and involuntary (the kernel preempts a worker,
    /// for the load generator or Postgres on the same two cores).
    parked: f64,
    preempted: f64,
}

fn run_loadgen(url: &str) -> Run {
    let before = Usage::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--loadgen", url, &MEASURE.as_secs_f64().to_string()])
        .output()
        .unwrap();
    let after = Usage::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (counted, total) = text.trim().split_once(' ').unwrap();
    let (counted, total): (f64, f64) = (counted.parse().unwrap(), total.parse().unwrap());
    Run {
        req_per_s: counted / MEASURE.as_secs_f64(),
        server_us: (after.cpu - before.cpu).as_secs_f64() * 1e6 / total,
        parked: (after.voluntary - before.voluntary) as f64 / total,
        preempted: (after.involuntary - before.involuntary) as f64 / total,
    }
}

/// This process's resource use so far.
struct Usage {
    /// User + system time.
    cpu: Duration,
    voluntary: i64,
    involuntary: i64,
}

impl Usage {
    fn now() -> Self {
        // SAFETY: getrusage only writes the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
            usage
        };
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Self {
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            voluntary: usage.ru_nvcsw,
            involuntary: usage.ru_nivcsw,
        }
    }
}

// ---- native baselines (same process as the plugin server) ------------------

async fn native_ok() -> Json<serde_json::Value> {
    Json(json!({"hello": "world", "mode": "ok", "n": 42}))
}

/// Iterations of [`work`] for `/native/work`, set once measured.
static WORK_ITERATIONS: AtomicU64 = AtomicU64::new(0);

/// `native_ok` after `WORK_ITERATIONS` of CPU work.
async fn native_work() -> Json<serde_json::Value> {
    std::hint::black_box(work(WORK_ITERATIONS.load(Ordering::Relaxed)));
    native_ok().await
}

/// Arithmetic the optimiser cannot skip: a fixed amount of CPU work.
fn work(iterations: u64) -> u64 {
    (0..iterations).fold(0xcbf2_9ce4_8422_2325, |h, i| {
        std::hint::black_box((h ^ i).wrapping_mul(0x0100_0000_01b3))
    })
}

/// How many iterations of [`work`] take a microsecond here: the fastest
/// of a few timed runs.
fn work_iterations_per_us() -> f64 {
    const N: u64 = 2_000_000;
    (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(work(N));
            N as f64 / (t.elapsed().as_secs_f64() * 1e6)
        })
        .fold(0.0, f64::max)
}

/// The plugin's `/status.json` document, typed as the plugin types it.
#[derive(serde::Serialize)]
struct StatusDocument<'a> {
    state: &'static str,
    incidents: Vec<SeedIncident<'a>>,
    page: Page,
    status: Indicator,
}

#[derive(serde::Serialize)]
struct SeedIncident<'a> {
    title: &'a str,
    details: &'a str,
    started_at: Option<String>,
}

#[derive(serde::Serialize)]
struct Page {
    id: &'static str,
    name: &'static str,
    url: &'static str,
    time_zone: &'static str,
    updated_at: String,
}

#[derive(serde::Serialize)]
struct Indicator {
    indicator: &'static str,
    description: &'static str,
}

/// The plugin's `/status.json` done natively: the same query (active
/// incidents with their updates, one row per update), the same document
/// (the spec's fields plus Statuspage's `page` and `status`, serialised from
/// types as the plugin does), the same entity tag, cache and CORS headers.
async fn native_status(
    State(pool): State<Pool>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let rows = pool
        .query(
            "SELECT i.id, i.title, i.details, i.impact, i.started_at, i.resolved_at, \
             u.id AS update_id, u.status AS update_status, u.message, u.created_at AS update_at \
             FROM incidents i LEFT JOIN incident_updates u ON u.incident_id = i.id \
             WHERE i.resolved_at IS NULL ORDER BY i.started_at, i.id, u.created_at DESC, u.id DESC",
            &[],
        )
        .await
        .unwrap();
    let text = |v: &Value| match v {
        Value::Text(s) => s.clone(),
        _ => String::new(),
    };
    let micros = |v: &Value| match v {
        Value::Timestamp(t) => Some(*t),
        _ => None,
    };
    let rfc3339 = |t: i64| {
        chrono::DateTime::from_timestamp_micros(t)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    // (id, title, details, impact rank, started_at, updated_at)
    let mut active: Vec<(i64, String, String, u8, i64, i64)> = Vec::new();
    for r in &rows.rows {
        let Value::Int(id) = r[0] else { continue };
        let started = micros(&r[4]).unwrap_or(0);
        if active.last().is_none_or(|i| i.0 != id) {
            let rank = match text(&r[3]).as_str() {
                "critical" => 3,
                "major" => 2,
                _ => 1,
            };
            active.push((id, text(&r[1]), text(&r[2]), rank, started, started));
        }
        if let (Some(at), Some(last)) = (micros(&r[9]), active.last_mut()) {
            last.5 = last.5.max(at);
        }
    }
    let (indicator, description) = match active.iter().map(|i| i.3).max() {
        None => ("none", "All Systems Operational"),
        Some(1) => ("minor", "Minor Service Outage"),
        Some(2) => ("major", "Partial System Outage"),
        Some(_) => ("critical", "Major Service Outage"),
    };
    let doc = StatusDocument {
        state: if active.is_empty() {
            "operational"
        } else {
            "degraded"
        },
        incidents: active
            .iter()
            .map(|i| SeedIncident {
                title: &i.1,
                details: &i.2,
                started_at: rfc3339(i.4),
            })
            .collect(),
        page: Page {
            id: "neo",
            name: "neo",
            url: "",
            time_zone: "Etc/UTC",
            updated_at: active
                .iter()
                .map(|i| i.5)
                .max()
                .and_then(rfc3339)
                .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into()),
        },
        status: Indicator {
            indicator,
            description,
        },
    };
    let body = serde_json::to_vec(&doc).unwrap();
    let tag = format!(
        "\"{:016x}\"",
        body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    );
    let fresh = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag)
        });
    let status = if fresh { 304 } else { 200 };
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [
            ("content-type", "application/json".to_string()),
            ("etag", tag),
            ("cache-control", "no-cache".into()),
            ("access-control-allow-origin", "*".into()),
        ],
        if fresh { Vec::new() } else { body },
    )
        .into_response()
}

// ---- the benchmark ---------------------------------------------------------

async fn bench() {
    let pg = common::PgBench::new(MANIFEST).await;
    let (settings, manifest_path) = (pg.settings.clone(), pg.manifest.clone());
    let services = Services::connect(settings.clone()).await.unwrap();
    let manifest = neo_ops::manifest::load(&manifest_path).unwrap();
    let runtime = Arc::new(Runtime::load(&manifest, services.clone()).unwrap());
    for (title, details) in [
        ("Checkout slow", "p95 above 5s"),
        ("KOT printers", "Outlet 12 offline"),
        ("SMS delays", "Provider queueing"),
    ] {
        neo_ops::triggers::command::run(
            &runtime,
            "status-page",
            vec!["start".into(), title.into(), details.into()],
        )
        .await
        .unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plugin_addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(neo_ops::server::run(
        listener,
        runtime.clone(),
        stop.clone(),
    ));
    let native = axum::Router::new()
        .route("/native/ok", axum::routing::get(native_ok))
        .route("/native/work", axum::routing::get(native_work))
        .route("/native/status.json", axum::routing::get(native_status))
        .with_state(services.db.master().clone());
    let native_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native_addr = native_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(native_listener, native).await });

    if std::env::var("NEO_BENCH_ONLY").as_deref() == Ok("serve") {
        // For profiling under an outside load generator: both servers, their
        // addresses printed, until killed. NEO_BENCH_WORK_US sets the CPU
        // work of `/native/work` (0 by default).
        let work_us: f64 = std::env::var("NEO_BENCH_WORK_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        WORK_ITERATIONS.store(
            (work_us * work_iterations_per_us()) as u64,
            Ordering::Relaxed,
        );
        println!("plugin http://{plugin_addr} native http://{native_addr}");
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
        services.db.close().await;
        pg.drop_databases().await;
        return;
    }
    if std::env::var("NEO_BENCH_ONLY").as_deref() == Ok("invoke") {
        // For profiling the invocation path alone: perf record this.
        let n: usize = std::env::var("NEO_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        // NEO_BENCH_PLUGIN=status-page: its `/status.json` (one query, the
        // document built in the guest) instead of the no-I/O plugin;
        // NEO_BENCH_PLUGIN=native-status: the native handler for it.
        let plugin = std::env::var("NEO_BENCH_PLUGIN").unwrap_or_else(|_| "faults".into());
        let invocation = match plugin.as_str() {
            "status-page" => status_invocation,
            _ => ok_invocation,
        };
        // NEO_BENCH_PAR=2: that many invocations at once, one per worker.
        let (t, before) = (Instant::now(), Usage::now());
        let par: usize = std::env::var("NEO_BENCH_PAR")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut tasks = Vec::new();
        for _ in 0..par {
            let (runtime, plugin) = (runtime.clone(), plugin.clone());
            let pool = services.db.master().clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..n / par {
                    if plugin == "native-status" {
                        // The native `/status.json` handler, called directly:
                        // the baseline for `status-page` in process.
                        let headers = axum::http::HeaderMap::new();
                        std::hint::black_box(native_status(State(pool.clone()), headers).await);
                    } else {
                        runtime.invoke(&plugin, invocation()).await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "{plugin}: {:.2} us per invoke, {:.2} us of this process's CPU",
            t.elapsed().as_secs_f64() * 1e6 / n as f64,
            (Usage::now().cpu - before.cpu).as_secs_f64() * 1e6 / n as f64
        );
        stop.cancel();
        services.db.close().await;
        pg.drop_databases().await;
        return;
    }
    println!(
        "neo-ops runtime benchmark ({CONNECTIONS} keep-alive connections, {MEASURE:?} per run, load generator in a second process)"
    );

    // Instantiate + call, in process, with pooling and precompiled components.
    let mut samples = Vec::with_capacity(5000);
    for i in 0..5500 {
        let inv = ok_invocation();
        let t = Instant::now();
        runtime.invoke("faults", inv).await.unwrap();
        if i >= 500 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    let instance_line = format!(
        "instantiate+call             median {:.1} us  p99 {:.1} us (goal median <= 10 us)",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    // The third contender of the no-I/O row: the native handler plus as
    // much CPU work as a plugin instance costs in process. What it loses
    // against the plain handler is what any handler that much slower loses
    // here (the load generator waits, and each response has to wake it).
    WORK_ITERATIONS.store(
        (median.as_secs_f64() * 1e6 * work_iterations_per_us()) as u64,
        Ordering::Relaxed,
    );

    // Rounds alternate which contender goes first, and the median round's
    // ratio is the figure: one run of each swings by ±30 % on a shared VM.
    for (label, plugin_path, native_path, work_path, goal) in [
        (
            "json, no I/O",
            "/faults/ok",
            "/native/ok",
            Some("/native/work"),
            0.6,
        ),
        (
            "/status.json from Postgres",
            "/status.json",
            "/native/status.json",
            None,
            0.9,
        ),
    ] {
        let mut urls = vec![
            format!("http://{plugin_addr}{plugin_path}"),
            format!("http://{native_addr}{native_path}"),
        ];
        urls.extend(work_path.map(|path| format!("http://{native_addr}{path}")));
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            // Each round starts with a different contender.
            let mut runs = vec![None; urls.len()];
            for k in 0..urls.len() {
                let i = (round + k) % urls.len();
                runs[i] = Some(run_loadgen(&urls[i]));
            }
            let runs: Vec<Run> = runs.into_iter().map(Option::unwrap).collect();
            rounds.push((runs[0].req_per_s / runs[1].req_per_s, runs));
        }
        let shown: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.0)).collect();
        let work_shown: Vec<String> = rounds
            .iter()
            .filter_map(|(_, runs)| {
                Some(format!("{:.2}", runs[0].req_per_s / runs.get(2)?.req_per_s))
            })
            .collect();
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, runs) = &rounds[rounds.len() / 2];
        let (plugin, native) = (runs[0], runs[1]);
        println!(
            "{label:28} plugin {:>9.0} req/s  native {:>9.0} req/s  ratio {ratio:.2} (median of rounds {}; goal >= {goal})",
            plugin.req_per_s,
            native.req_per_s,
            shown.join(", ")
        );
        println!(
            "{:28} server per request: plugin {:.1} us CPU, {:.2} parked, {:.2} preempted; native {:.1} us, {:.2}, {:.2}",
            "",
            plugin.server_us,
            plugin.parked,
            plugin.preempted,
            native.server_us,
            native.parked,
            native.preempted
        );
        if let Some(work) = runs.get(2) {
            println!(
                "{:28} native + {:.1} us of CPU work {:>9.0} req/s ({:.2} of native; {:.1} us CPU per request); plugin / it {:.2} (rounds {})",
                "",
                median.as_secs_f64() * 1e6,
                work.req_per_s,
                work.req_per_s / native.req_per_s,
                work.server_us,
                plugin.req_per_s / work.req_per_s,
                work_shown.join(", ")
            );
        }
    }
    println!("{instance_line}");

    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    services.db.close().await;

    // Start-up to first request, warm component cache (the runs above filled it).
    let mut startups = Vec::new();
    for _ in 0..5 {
        startups.push(startup_time(&manifest_path, &settings.data_dir, &settings).await);
    }
    startups.sort();
    println!(
        "start-up to first request    median {:.0} ms  (warm cache; goal <= 200 ms)",
        startups[startups.len() / 2].as_secs_f64() * 1e3
    );

    pg.drop_databases().await;
}

fn ok_invocation() -> Invocation {
    Invocation {
        trigger: Trigger::Command(vec!["ok".into()]),
        tenant: None,
        principal: None,
        dry_run: false,
        request_id: "bench".into(),
    }
}

fn status_invocation() -> Invocation {
    Invocation {
        trigger: Trigger::Http(neo_ops::runtime::HttpRequest {
            method: "GET".into(),
            route: "/status.json".into(),
            path: "/status.json".into(),
            path_params: Vec::new(),
            query: Vec::new(),
            headers: vec![("host".into(), "127.0.0.1".into())],
            body: Vec::new(),
            remote_addr: Some("127.0.0.1".into()),
        }),
        ..ok_invocation()
    }
}

async fn startup_time(
    manifest: &std::path::Path,
    data_dir: &std::path::Path,
    settings: &Settings,
) -> Duration {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_neo-ops"))
        .arg("--manifest")
        .arg(manifest)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env(
            "POSTGRES_MASTER_URL",
            settings.postgres_master_url.as_ref().unwrap(),
        )
        .env(
            "POSTGRES_TENANT_DSN_TEMPLATE",
            settings.postgres_tenant_dsn_template.as_ref().unwrap(),
        )
        .env("NEO_OPS_LOG", "error")
        .env_remove("REDIS_URL")
        .env_remove("SMTP_HOST")
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/status.json");
    let client = reqwest::Client::new();
    let took = loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    took
}
