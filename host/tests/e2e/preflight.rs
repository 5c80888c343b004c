//! Preflight (spec "ops preflight"): every `check = true` plugin runs against
//! real sources — the databases and kv of the backend under test, a real
//! Alertmanager, an HTTP server for the quotas endpoint and the replica
//! metrics, a backup status file — and `GET /api/admin/preflight` reports one
//! result per check. Dropping one partial unique index fails exactly the
//! index check; a check the operator adds (not in plugins.toml) shows up next
//! to the built-in ones; a check whose source hangs is cut off by its own
//! timeout and reported as failed. `neo-ops run preflight` prints the same
//! checklist and exits non-zero on a failure.

use crate::support;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use neo_ops::auth;
use neo_ops::backends::db::{Pool, Value};
use neo_ops::manifest::Role;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::alertmanager::Alertmanager;
use support::proxy::TcpProxy;
use support::{Backend, Deployment, FORBIDDEN};

/// An Alertmanager that routes nowhere: the check only needs it healthy.
const NO_ROUTE: &str = "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n";

const DROPPED_INDEX: &str = "customers_phone_live_uq";

const QUOTAS: &str = r#"{"quotas": [
    {"name": "orders_per_day", "tenant": "acme", "limit": 10000, "used": 12},
    {"name": "sms_per_month", "tenant": "bistro", "limit": 500, "used": 499}
]}"#;
const METRICS: &str = "# HELP neo_replicas_healthy Replicas passing /readyz.\n\
    # TYPE neo_replicas_healthy gauge\n\
    neo_replicas_healthy{deployment=\"api\"} 3\n\
    neo_replicas_healthy{deployment=\"worker\"} 2\n\
    neo_replicas_total 3\n";

/// Every built-in check of plugins.toml, plus the operator's own.
const CHECKS: &[&str] = &[
    "check-alertmanager",
    "check-backups",
    "check-database",
    "check-migrations",
    "check-quotas",
    "check-redis",
    "check-replicas",
    "check-soft-delete-indexes",
    "check-storage",
    "check-webhook-breaker",
    "check-webhook-config",
    "menu-prices",
];

// ---------------------------------------------------------------- sources

/// The HTTP sources a deployment's checks read: a quotas endpoint, a
/// Prometheus metrics endpoint, and one that never answers.
struct Sources {
    addr: SocketAddr,
}

impl Sources {
    async fn start() -> Self {
        let app = Router::new()
            .route(
                "/v1/quotas",
                get(|| async { ([(CONTENT_TYPE, "application/json")], QUOTAS) }),
            )
            .route(
                "/metrics",
                get(|| async { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS) }),
            )
            .route("/hang", get(std::future::pending::<&'static str>));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

/// A backup status file as a backup script writes it, finished `hours_ago`.
fn write_backup_status(path: &Path, hours_ago: i64) {
    let finished = chrono::Utc::now() - chrono::Duration::hours(hours_ago);
    let doc = serde_json::json!({"finished_at": finished.to_rfc3339(), "bytes": 123_456});
    std::fs::write(path, doc.to_string()).unwrap();
}

// ---------------------------------------------------------------- manifests

/// The checks as plugins.toml declares them, with their sources filled in.
/// Settings go through `config`, never the environment: env vars are
/// process-global and the tests run in parallel.
fn manifest(sources: &Sources, am: &Alertmanager, status_file: &Path) -> String {
    let status_file = status_file.display();
    let db = r#"grants = { db = ["master", "tenant:*"] }"#;
    let limits = r#"limits = { timeout = "20s", memory = "32MiB" }"#;
    format!(
        r#"
[plugins.check-database]
component = "check_database.wasm"
check = true
{db}
{limits}

[plugins.check-redis]
component = "check_redis.wasm"
check = true
grants = {{ kv = ["preflight:"] }}
{limits}
# The shared test Redis keeps nothing on disk (operator.rs tests the warning).
config = {{ allow_no_persistence = "true" }}

[plugins.check-migrations]
component = "check_migrations.wasm"
check = true
{db}
{limits}

[plugins.check-storage]
component = "check_storage.wasm"
check = true
{limits}

[plugins.check-webhook-config]
component = "check_webhook_config.wasm"
check = true
{db}
{limits}
config = {{ allow_http_hosts = "127.0.0.1,localhost" }}

[plugins.check-alertmanager]
component = "check_alertmanager.wasm"
check = true
grants = {{ env = ["ALERTMANAGER_URL"], http = ["{am}"] }}
{limits}
config = {{ alertmanager_url = "{am}" }}

[plugins.check-backups]
component = "check_backups.wasm"
check = true
grants = {{ files = ["{status_file}"] }}
{limits}
config = {{ status_file = "{status_file}", max_age = "26h" }}

[plugins.check-soft-delete-indexes]
component = "check_soft_delete_indexes.wasm"
check = true
{db}
{limits}

[plugins.check-quotas]
component = "check_quotas.wasm"
check = true
grants = {{ http = ["{origin}"] }}
{limits}
config = {{ quotas_url = "{quotas}" }}

[plugins.check-webhook-breaker]
component = "check_webhook_breaker.wasm"
check = true
{db}
{limits}
config = {{ window = "24h", fail_threshold = "10" }}

[plugins.check-replicas]
component = "check_replicas.wasm"
check = true
grants = {{ http = ["{origin}"] }}
{limits}
config = {{ metrics_url = "{metrics}", min_healthy = "2" }}

# Not in plugins.toml: an operator's own check, added without touching the host.
[plugins.menu-prices]
component = "test_extra_check.wasm"
check = true
{db}
{limits}
"#,
        am = am.url,
        origin = sources.origin(),
        quotas = sources.url("/v1/quotas"),
        metrics = sources.url("/metrics"),
    )
}

/// A quotas check whose endpoint never answers, cut off by a 1s timeout
/// (its own HTTP timeout is 5s), next to one that answers.
fn hanging_manifest(sources: &Sources) -> String {
    format!(
        r#"
[plugins.check-quotas]
component = "check_quotas.wasm"
check = true
grants = {{ http = ["{origin}"] }}
limits = {{ timeout = "1s", memory = "32MiB" }}
config = {{ quotas_url = "{hang}" }}

[plugins.check-database]
component = "check_database.wasm"
check = true
grants = {{ db = ["master", "tenant:*"] }}
limits = {{ timeout = "20s", memory = "32MiB" }}
"#,
        origin = sources.origin(),
        hang = sources.url("/hang"),
    )
}

// ---------------------------------------------------------------- reading reports

/// Checks every result has the documented fields and returns them by name.
fn results(report: &Json) -> BTreeMap<String, Json> {
    let checks = report["data"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {report}"));
    let mut out = BTreeMap::new();
    for c in checks {
        let name = c["name"].as_str().unwrap_or_else(|| panic!("no name: {c}"));
        let status = c["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no status: {c}"));
        assert!(
            ["pass", "warn", "fail", "skip"].contains(&status),
            "bad status: {c}"
        );
        assert!(
            c["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "no detail: {c}"
        );
        assert!(c["duration_ms"].is_u64(), "no duration_ms: {c}");
        let hint = c
            .get("hint")
            .unwrap_or_else(|| panic!("no hint field: {c}"));
        if status != "pass" {
            assert!(
                hint.as_str().is_some_and(|h| !h.is_empty()),
                "a {status} needs a hint: {c}"
            );
        }
        assert!(
            out.insert(name.to_string(), c.clone()).is_none(),
            "{name} reported twice in {report}"
        );
    }
    out
}

fn statuses(results: &BTreeMap<String, Json>) -> BTreeMap<String, String> {
    results
        .iter()
        .map(|(n, c)| (n.clone(), c["status"].as_str().unwrap().to_string()))
        .collect()
}

fn detail<'a>(results: &'a BTreeMap<String, Json>, name: &str) -> &'a str {
    results[name]["detail"].as_str().unwrap()
}

async fn preflight(server: &support::Server, token: &str) -> (u16, Json) {
    let (status, body) = server.get("/api/admin/preflight", Some(token)).await;
    let report = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not json ({e}): {body}"));
    (status, report)
}

// ---------------------------------------------------------------- data

/// Two tenants: `acme` with the demo data (its webhook endpoint given a real
/// secret) and `bistro`, empty.
async fn tenants(server: &support::Server) -> Pool {
    let db = &server.services.db;
    db.create_tenant("acme", "Acme Diner").await.unwrap();
    db.create_tenant("bistro", "Bistro").await.unwrap();
    let acme = db.tenant("acme").await.unwrap();
    let size = neo_ops::demo::DemoSize {
        customers: 10,
        orders: 20,
        days: 2,
        seed: 3,
    };
    neo_ops::demo::seed(&acme, size).await.unwrap();
    acme.execute(
        "UPDATE webhook_endpoints SET secret = $1",
        &[Value::Text("4f1c9a0e7b2d4c6e8a1f3b5d7c9e0a2b".into())],
    )
    .await
    .unwrap();
    acme
}

/// One breaker opening within the window, one before it, and a close that
/// is not an opening.
async fn breaker_events(acme: &Pool) {
    let endpoint = support::ints(acme, "SELECT id FROM webhook_endpoints", &[]).await[0];
    let ago = |h: i64| {
        Value::Timestamp((chrono::Utc::now() - chrono::Duration::hours(h)).timestamp_micros())
    };
    for (event, at) in [("open", ago(1)), ("open", ago(30)), ("close", ago(0))] {
        acme.execute(
            "INSERT INTO webhook_breaker_events (endpoint_id, event, at) VALUES ($1, $2, $3)",
            &[Value::Int(endpoint), Value::Text(event.into()), at],
        )
        .await
        .unwrap();
    }
}

// ---------------------------------------------------------------- tests

async fn checklist_catches_a_dropped_index(backend: Backend) {
    let sources = Sources::start().await;
    let am = Alertmanager::start(NO_ROUTE).await;
    let dep = Deployment::new(backend).await;
    let status_file = dep.dir.path().join("backup-status.json");
    write_backup_status(&status_file, 2);
    let server = dep.start(&manifest(&sources, &am, &status_file), "a").await;
    let acme = tenants(&server).await;
    breaker_events(&acme).await;
    let token = auth::create_token(server.master(), Role::Admin, "ops")
        .await
        .unwrap();

    let (code, body) = server.get("/api/admin/preflight", None).await;
    assert_eq!((code, body.as_str()), (403, FORBIDDEN));

    // Everything configured and healthy: the breaker opening warns, and so
    // do the embedded backends; nothing fails.
    let (code, report) = preflight(&server, &token).await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["data"]["status"], "warn", "{report}");
    let before = results(&report);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        CHECKS
    );
    let storage = match backend {
        Backend::Embedded => "warn",
        Backend::Real => "pass",
    };
    let expected: BTreeMap<String, String> = CHECKS
        .iter()
        .map(|&n| {
            let s = match n {
                "check-storage" => storage,
                "check-webhook-breaker" => "warn",
                _ => "pass",
            };
            (n.to_string(), s.to_string())
        })
        .collect();
    assert_eq!(statuses(&before), expected, "{report}");
    assert!(
        detail(&before, "check-database").contains("master and 2 tenant database(s)"),
        "{report}"
    );
    assert!(
        detail(&before, "check-alertmanager").contains("healthy"),
        "{report}"
    );
    assert!(
        detail(&before, "check-backups").contains(", 2h"),
        "{report}"
    );
    assert!(
        detail(&before, "check-quotas").starts_with("2 quota(s)"),
        "{report}"
    );
    assert!(
        detail(&before, "check-replicas")
            .contains("neo_replicas_healthy{deployment=\"worker\"} = 2"),
        "{report}"
    );
    assert!(
        detail(&before, "check-soft-delete-indexes")
            .contains("6 partial unique index(es) present in 2 tenant database(s)"),
        "{report}"
    );
    assert!(
        detail(&before, "check-webhook-config").starts_with("1 active webhook endpoint(s)"),
        "{report}"
    );
    // Only the opening within the 24h window counts.
    let breaker = detail(&before, "check-webhook-breaker");
    assert!(
        breaker.contains("opened 1 time(s)") && breaker.contains("tenant \"acme\" 1 (endpoint"),
        "{breaker}"
    );
    if backend == Backend::Embedded {
        assert!(
            detail(&before, "check-storage").contains("kv memory"),
            "{report}"
        );
    }

    // A partial unique index goes missing in one tenant: exactly that check fails.
    let bistro = server.services.db.tenant("bistro").await.unwrap();
    bistro
        .execute(&format!("DROP INDEX {DROPPED_INDEX}"), &[])
        .await
        .unwrap();
    let (code, report) = preflight(&server, &token).await;
    assert_eq!(code, 503, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["data"]["status"], "fail", "{report}");
    // The failure envelope's error, as every other failure has it.
    assert_eq!(
        report["error"],
        serde_json::json!({"code": 503, "message": "preflight failed: check-soft-delete-indexes"}),
        "{report}"
    );
    let after = results(&report);
    let mut expected = statuses(&before);
    expected.insert("check-soft-delete-indexes".into(), "fail".into());
    assert_eq!(statuses(&after), expected, "{report}");
    let failed = &after["check-soft-delete-indexes"];
    assert_eq!(
        failed["detail"],
        format!("tenant \"bistro\": index {DROPPED_INDEX} is missing"),
        "{report}"
    );
    assert!(
        failed["hint"].as_str().unwrap().contains(&format!(
            "CREATE UNIQUE INDEX {DROPPED_INDEX} ON customers(phone) WHERE deleted_at IS NULL"
        )),
        "{report}"
    );
    server.stop().await.unwrap();

    // A check whose source never answers hears so with a quarter of its
    // time left (its 1 s timeout), and fails saying why.
    let server = dep.start(&hanging_manifest(&sources), "b").await;
    let token = auth::create_token(server.master(), Role::Admin, "ops2")
        .await
        .unwrap();
    let started = Instant::now();
    let (code, report) = preflight(&server, &token).await;
    assert!(started.elapsed() < Duration::from_secs(4), "{report}");
    assert_eq!(code, 503, "{report}");
    let hung = results(&report);
    assert_eq!(hung["check-database"]["status"], "pass", "{report}");
    let quotas = &hung["check-quotas"];
    assert_eq!(quotas["status"], "fail", "{report}");
    assert!(
        quotas["detail"]
            .as_str()
            .unwrap()
            .contains("timed out after "),
        "{report}"
    );
    let ms = quotas["duration_ms"].as_u64().unwrap();
    assert!((500..1000).contains(&ms), "{report}");
    server.stop().await.unwrap();
}
on_both_backends!(preflight, checklist_catches_a_dropped_index);

/// `neo-ops preflight` with Postgres and Redis out of reach still prints
/// the whole checklist, their checks failing, and exits 1; with Postgres
/// back it reports the master unmigrated and leaves it so; once migrated,
/// only Redis's check fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_checklist_names_the_backends_out_of_reach() {
    let dep = Deployment::new(Backend::Real).await;
    let sources = Sources::start().await;
    let am = Alertmanager::start(NO_ROUTE).await;
    let state = tempfile::tempdir().unwrap();
    let status_file = state.path().join("backup-status.json");
    write_backup_status(&status_file, 3);
    let pg = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let redis = TcpProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    pg.set_up(false);
    redis.set_up(false);
    let mut settings = dep.settings_with_master_at("a", pg.addr);
    settings.redis_url = Some(format!("redis://{}", redis.addr));
    let cli = support::Cli::new(&manifest(&sources, &am, &status_file));
    // The binary blocks this thread; the proxies and sources run on others.
    let preflight = || {
        let out = tokio::task::block_in_place(|| cli.run_on(&["preflight", "--json"], &settings));
        assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
        let report: Json = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["data"]["status"], "fail", "{report}");
        let results = results(&report);
        assert_eq!(
            results.keys().map(String::as_str).collect::<Vec<_>>(),
            CHECKS,
            "{report}"
        );
        // What reaches neither backend still runs and passes.
        assert_eq!(results["check-backups"]["status"], "pass", "{report}");
        (statuses(&results), out.stderr)
    };

    let (down, said) = preflight();
    for check in ["check-database", "check-migrations", "check-redis"] {
        assert_eq!(down[check], "fail", "{check}: {down:?}");
    }
    assert_eq!(said.matches("checking without it").count(), 2, "{said}");
    assert!(said.contains("connecting to redis"), "{said}");

    pg.set_up(true);
    // The master as it stands: never migrated, and a preflight leaves it
    // so (it reports; a newer build's must not migrate under the older
    // serve, or hide that the master is behind).
    let (unmigrated, _) = preflight();
    assert_eq!(unmigrated["check-migrations"], "fail", "{unmigrated:?}");
    let master_url = settings.postgres_master_url.clone().unwrap();
    let migrated = async || support::pg_migrated(&master_url).await;
    assert!(!migrated().await, "preflight migrated the master");
    let done = tokio::task::block_in_place(|| cli.run_on(&["migrate"], &settings));
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(migrated().await);

    let (redis_down, said) = preflight();
    assert_eq!(redis_down["check-database"], "pass", "{redis_down:?}");
    assert_eq!(redis_down["check-migrations"], "pass", "{redis_down:?}");
    assert_eq!(redis_down["check-redis"], "fail", "{redis_down:?}");
    assert_eq!(said.matches("checking without it").count(), 1, "{said}");
}

/// `neo-ops run preflight [--json]` through the real binary (embedded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_prints_the_checklist_and_fails_on_a_failed_check() {
    let sources = Sources::start().await;
    let am = Alertmanager::start(NO_ROUTE).await;
    let state = tempfile::tempdir().unwrap();
    let status_file = state.path().join("backup-status.json");
    write_backup_status(&status_file, 3);
    let cli = support::Cli::new(&manifest(&sources, &am, &status_file));
    // The binary blocks this thread; the sources keep answering on the others.
    let run = |args: &[&str]| tokio::task::block_in_place(|| cli.run(args));

    let created = run(&["tenant", "create", "acme"]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let ok = run(&["run", "preflight", "--json"]);
    assert_eq!(ok.code, Some(0), "{}{}", ok.stdout, ok.stderr);
    let report: Json = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["data"]["status"], "warn", "{report}");
    let before = results(&report);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        CHECKS
    );
    assert_eq!(before["check-storage"]["status"], "warn", "{report}");

    let text = run(&["run", "preflight"]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(
        text.stdout.starts_with("preflight: WARN\n"),
        "{}",
        text.stdout
    );
    for name in CHECKS {
        assert!(text.stdout.contains(name), "{name} in {}", text.stdout);
    }

    let tenant_db = cli.dir.path().join("data/db/tenant-acme.sqlite");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", tenant_db.display()))
        .await
        .unwrap();
    sqlx::query(&format!("DROP INDEX {DROPPED_INDEX}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let failed = run(&["run", "preflight", "--json"]);
    assert_eq!(failed.code, Some(1), "{}{}", failed.stdout, failed.stderr);
    let report: Json = serde_json::from_str(&failed.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["data"]["status"], "fail", "{report}");
    let after = results(&report);
    let mut expected = statuses(&before);
    expected.insert("check-soft-delete-indexes".into(), "fail".into());
    assert_eq!(statuses(&after), expected, "{report}");
    assert_eq!(
        detail(&after, "check-soft-delete-indexes"),
        format!("tenant \"acme\": index {DROPPED_INDEX} is missing")
    );

    let text = run(&["run", "preflight"]);
    assert_eq!(text.code, Some(1), "{}", text.stderr);
    assert!(
        text.stdout.starts_with("preflight: FAIL\n"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains(&format!("index {DROPPED_INDEX} is missing"))
            && text.stdout.contains("hint: "),
        "{}",
        text.stdout
    );
}
