//! The data purge plugin end to end, on both backends: exact counts on seeded
//! data, untouched rows stay byte-for-byte, dry run, idempotence, resuming
//! after an interrupted run, the per-tenant lock, `--all-tenants`, errors.

use crate::support;

use neo_ops::backends::db::{Pool, Value};
use serde_json::Value as Json;
use std::time::{Duration, Instant};
use support::{Backend, Deployment, Server};

const MANIFEST: &str = r#"
[plugins.purge]
component = "purge.wasm"
command = true
grants = { db = ["master", "tenant:*"], kv = ["purge:"], audit = true }
limits = { memory = "64MiB", timeout = "60s" }
config = { lock_ttl = "2m" }
"#;

/// The same plugin cut off after 1s, with a lock that expires soon after.
const INTERRUPTIBLE: &str = r#"
[plugins.purge]
component = "purge.wasm"
command = true
grants = { db = ["master", "tenant:*"], kv = ["purge:"], audit = true }
limits = { memory = "64MiB", timeout = "1s" }
config = { lock_ttl = "5s" }
"#;

const DAY: i64 = 86_400 * 1_000_000;
const RETENTION_DAYS: i64 = 30;

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn start(dep: &Deployment, manifest: &str, replica: &str) -> Server {
    dep.start(manifest, replica).await
}

/// A tenant with a 30-day retention, so the seeded ages are meaningful.
async fn tenant(server: &Server, name: &str, retention_days: i64) -> Pool {
    server.services.db.create_tenant(name, name).await.unwrap();
    server
        .master()
        .execute(
            "UPDATE tenants SET pii_retention_days = $1 WHERE name = $2",
            &[Value::Int(retention_days), Value::Text(name.into())],
        )
        .await
        .unwrap();
    server.services.db.tenant(name).await.unwrap()
}

/// One customer as the seed describes it. Its orders are placed at its last
/// order (else when it was created), unless `ordered_days_ago` says when.
struct Customer {
    key: &'static str,
    last_order_days_ago: Option<i64>,
    created_days_ago: i64,
    anonymized_days_ago: Option<i64>,
    orders: usize,
    ordered_days_ago: Option<i64>,
}

const fn c(
    key: &'static str,
    last_order: Option<i64>,
    created: i64,
    anonymized: Option<i64>,
    orders: usize,
) -> Customer {
    Customer {
        key,
        last_order_days_ago: last_order,
        created_days_ago: created,
        anonymized_days_ago: anonymized,
        orders,
        ordered_days_ago: None,
    }
}

/// Interleaved so every batch size mixes kinds. Keys: `anon` expired with
/// orders, `del` expired without orders, `keep` not expired, `done` already
/// anonymised (expired, with orders).
const CUSTOMERS: &[Customer] = &[
    c("anon-1", Some(40), 400, None, 2),
    c("del-1", None, 100, None, 0), // never ordered: created_at decides
    c("keep-1", Some(5), 400, None, 1), // old customer, recent order
    c("anon-2", Some(400), 800, None, 1),
    c("done-1", Some(500), 900, Some(200), 1),
    c("del-2", Some(45), 300, None, 0), // last order gone, row has none
    c("keep-2", None, 3, None, 0),      // new, never ordered
    c("anon-3", Some(31), 31, None, 3),
    c("keep-3", Some(29), 200, None, 2), // a day inside retention
    c("del-3", None, 31, None, 0),
    c("anon-4", Some(90), 120, None, 1),
    c("done-2", Some(60), 60, Some(10), 2),
    c("keep-4", None, 0, None, 0),
    c("del-4", Some(700), 720, None, 0),
    c("anon-5", Some(35), 50, None, 1),
    c("keep-5", Some(1), 1, None, 1),
    // last_order_at a year stale, but an order two days ago: a regular.
    Customer {
        ordered_days_ago: Some(2),
        ..c("keep-6", Some(400), 800, None, 1)
    },
];
const EXPECT_ANON: u64 = 5;
const EXPECT_DEL: u64 = 4;
/// Outbox statuses in insertion order: 6 delivered, 4 pending, 3 failed;
/// the last two were made 40 days ago, past the retention.
const OUTBOX: &[&str] = &[
    "delivered",
    "pending",
    "delivered",
    "failed",
    "delivered",
    "delivered",
    "pending",
    "delivered",
    "failed",
    "pending",
    "delivered",
    "pending",
    "failed",
];
const OUTBOX_OLD: usize = 2;
/// The delivered, and the undelivered past the retention (before, those
/// stayed for good with a customer's number in them).
const EXPECT_OUTBOX: u64 = 8;

async fn insert_customer(pool: &Pool, cust: &Customer, at: i64) -> i64 {
    let ago = |d: Option<i64>| d.map_or(Value::Null, |d| Value::Timestamp(at - d * DAY));
    // Already anonymised rows look like the purge left them.
    let pii = |v: String| match cust.anonymized_days_ago {
        Some(_) => Value::Null,
        None => Value::Text(v),
    };
    let name = match cust.anonymized_days_ago {
        Some(_) => "redacted".to_string(),
        None => format!("Guest {}", cust.key),
    };
    let rows = pool
        .query(
            "INSERT INTO customers (name, phone, email, address, last_order_at, created_at, anonymized_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                Value::Text(name),
                pii(format!("+91 {}", cust.key)),
                pii(format!("{}@example.com", cust.key)),
                pii(format!("{} MG Road", cust.key)),
                ago(cust.last_order_days_ago),
                Value::Timestamp(at - cust.created_days_ago * DAY),
                ago(cust.anonymized_days_ago),
            ],
        )
        .await
        .unwrap();
    let Value::Int(id) = rows.rows[0][0] else {
        panic!("id is an integer")
    };
    let placed = cust
        .ordered_days_ago
        .or(cust.last_order_days_ago)
        .unwrap_or(cust.created_days_ago);
    for _ in 0..cust.orders {
        pool.execute(
            "INSERT INTO orders (customer_id, status, total_minor, placed_at) \
             VALUES ($1, 'PAID', 50000, $2)",
            &[Value::Int(id), Value::Timestamp(at - placed * DAY)],
        )
        .await
        .unwrap();
    }
    id
}

/// Seeds [`CUSTOMERS`] and [`OUTBOX`]; returns customer ids by key.
async fn seed(pool: &Pool) -> Vec<(&'static str, i64)> {
    let at = now();
    let mut ids = Vec::new();
    for cust in CUSTOMERS {
        ids.push((cust.key, insert_customer(pool, cust, at).await));
    }
    for (i, status) in OUTBOX.iter().enumerate() {
        let days_ago = if i + OUTBOX_OLD >= OUTBOX.len() {
            40
        } else {
            0
        };
        pool.execute(
            "INSERT INTO notification_outbox (channel, recipient, status, created_at) \
             VALUES ('sms', $1, $2, $3)",
            &[
                Value::Text(format!("+91 9{i:09}")),
                Value::Text(status.to_string()),
                Value::Timestamp(at - days_ago * DAY),
            ],
        )
        .await
        .unwrap();
    }
    ids
}

/// Every customer column, by id.
async fn customers(pool: &Pool) -> Vec<Vec<Value>> {
    pool.query(
        "SELECT id, name, phone, email, address, anonymized_at, last_order_at, created_at, deleted_at \
         FROM customers ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .rows
}

async fn outbox_statuses(pool: &Pool) -> Vec<String> {
    pool.query("SELECT status FROM notification_outbox ORDER BY id", &[])
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| match &r[0] {
            Value::Text(s) => s.clone(),
            other => panic!("status is text, got {other:?}"),
        })
        .collect()
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    support::ints(pool, sql, &[]).await[0]
}

async fn purge_json(server: &Server, args: &[&str]) -> Json {
    let out = server.command("purge", args).await.expect("purge runs");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("json output ({e}): {out}"))
}

/// The one tenant's report in a `--json` answer.
fn report<'a>(out: &'a Json, tenant: &str) -> &'a Json {
    assert_eq!(out["ok"], true, "{out}");
    let tenants = out["data"]["tenants"].as_array().expect("tenants array");
    tenants
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap_or_else(|| panic!("no report for {tenant}: {out}"))
}

fn counts(r: &Json) -> (u64, u64, u64) {
    (
        r["customers"]["anonymised"].as_u64().unwrap(),
        r["customers"]["deleted"].as_u64().unwrap(),
        r["notification_outbox"]["deleted"].as_u64().unwrap(),
    )
}

fn text(v: &Value) -> &str {
    match v {
        Value::Text(s) | Value::Json(s) => s,
        other => panic!("expected text, got {other:?}"),
    }
}

async fn audit_details(server: &Server) -> Vec<Json> {
    server
        .master()
        .query(
            "SELECT details FROM audit_log WHERE plugin = 'purge' AND action = 'purge' \
             AND tenant = 'acme' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .rows
        .iter()
        .map(|r| serde_json::from_str(text(&r[0])).unwrap())
        .collect()
}

async fn exact_counts_dry_run_and_rerun(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, MANIFEST, "a").await;
    let pool = tenant(&server, "acme", RETENTION_DAYS).await;
    let ids = seed(&pool).await;
    let before = customers(&pool).await;
    let orders_before = count(&pool, "SELECT COUNT(*) FROM orders").await;

    // Dry run: the same counts, nothing changed, nothing audited.
    let dry = purge_json(
        &server,
        &[
            "--tenant",
            "acme",
            "--dry-run",
            "--batch-size",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(dry["data"]["dry_run"], true);
    let r = report(&dry, "acme");
    assert_eq!(counts(r), (EXPECT_ANON, EXPECT_DEL, EXPECT_OUTBOX), "{dry}");
    assert_eq!(r["retention_days"], RETENTION_DAYS);
    assert_eq!(customers(&pool).await, before, "a dry run changes nothing");
    assert_eq!(outbox_statuses(&pool).await, OUTBOX);
    assert!(audit_details(&server).await.is_empty());

    // The real run, in batches of 2 so batches cross kinds.
    let started = now();
    let out = purge_json(
        &server,
        &["--tenant", "acme", "--batch-size", "2", "--json"],
    )
    .await;
    assert_eq!(out["data"]["dry_run"], false);
    let r = report(&out, "acme");
    assert_eq!(counts(r), (EXPECT_ANON, EXPECT_DEL, EXPECT_OUTBOX), "{out}");
    // 9 expired customers in pages of 2 = 5 pages; 6 delivered entries and
    // 2 old undelivered = 4 pages.
    assert_eq!(r["batches"], 9, "{out}");
    assert!(r["duration_ms"].is_u64());

    let after = customers(&pool).await;
    let row_of =
        |rows: &[Vec<Value>], id: i64| rows.iter().find(|r| r[0] == Value::Int(id)).cloned();
    for (key, id) in &ids {
        let old = row_of(&before, *id).unwrap();
        let new = row_of(&after, *id);
        if key.starts_with("del") {
            assert_eq!(new, None, "{key} is deleted");
        } else if key.starts_with("anon") {
            let new = new.unwrap_or_else(|| panic!("{key} survives for accounting"));
            assert_eq!(new[1], Value::Text("redacted".into()), "{key}");
            assert_eq!(
                &new[2..5],
                &[Value::Null, Value::Null, Value::Null],
                "{key}"
            );
            let Value::Timestamp(t) = new[5] else {
                panic!("{key}: anonymized_at is set, got {:?}", new[5])
            };
            assert!(t >= started - 1_000_000 && t <= now() + 1_000_000, "{key}");
            assert_eq!(&new[6..], &old[6..], "{key}: dates kept");
        } else {
            assert_eq!(new, Some(old), "{key} is untouched");
        }
    }
    assert_eq!(after.len(), CUSTOMERS.len() - EXPECT_DEL as usize);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM orders").await,
        orders_before,
        "orders keep pointing at anonymised customers"
    );
    assert_eq!(
        outbox_statuses(&pool).await,
        ["pending", "failed", "pending", "failed", "pending"]
    );

    // One audit record with counts only: no names, phones or addresses.
    let audit = audit_details(&server).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["customers"]["anonymised"], EXPECT_ANON);
    assert_eq!(audit[0]["customers"]["deleted"], EXPECT_DEL);
    assert_eq!(audit[0]["notification_outbox"]["deleted"], EXPECT_OUTBOX);
    let raw = audit[0].to_string();
    assert!(
        !raw.contains("Guest") && !raw.contains("+91") && !raw.contains("@"),
        "{raw}"
    );

    // A second run finds nothing; the text summary says so.
    let again = server
        .command("purge", &["--tenant", "acme"])
        .await
        .unwrap();
    assert!(
        again.starts_with(
            "purge acme: customers: 0 anonymised, 0 deleted; notification_outbox: 0 deleted; 0 batches"
        ),
        "{again}"
    );
    assert_eq!(customers(&pool).await, after);
    server.stop().await.unwrap();
}

on_both_backends!(purge_exact_counts, exact_counts_dry_run_and_rerun);

async fn usage_and_unknown_tenants(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, MANIFEST, "a").await;
    tenant(&server, "acme", RETENTION_DAYS).await;
    tenant(&server, "gone", RETENTION_DAYS).await;
    server
        .master()
        .execute(
            "UPDATE tenants SET deleted_at = $1 WHERE name = 'gone'",
            &[Value::Timestamp(now())],
        )
        .await
        .unwrap();

    let fails = |args: &'static [&'static str]| {
        let server = &server;
        async move { server.command("purge", args).await.unwrap_err() }
    };
    let usage = "usage: purge --tenant NAME | --all-tenants [--batch-size N] [--dry-run] [--json]";
    for args in [&[][..], &["--json"], &["--tenant", "acme", "--all-tenants"]] {
        let err = fails(args).await;
        assert_eq!(
            (err.status(), err.to_string()),
            (400, usage.into()),
            "{args:?}"
        );
    }
    let err = fails(&["--tenant", "nope"]).await;
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (404, "tenant \"nope\" not found")
    );
    let err = fails(&["--tenant", "gone"]).await;
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (404, "tenant \"gone\" not found")
    );
    let err = fails(&["--tenant", "acme", "--batch-size", "0"]).await;
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (400, "bad --batch-size \"0\" (expected 1 to 10000)")
    );
    let err = fails(&["--tenant", "acme", "--dryrun"]).await;
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string().starts_with("unknown flag \"--dryrun\""),
        "{err}"
    );
    // A retention edited in by hand outside what `tenant set` allows (0, or
    // so large the cutoff would wrap into the future) purges nothing.
    let pool = server.services.db.tenant("acme").await.unwrap();
    seed(&pool).await;
    let before = customers(&pool).await;
    for bad in [0, -1, 2_000_000_000] {
        server
            .master()
            .execute(
                "UPDATE tenants SET pii_retention_days = $1 WHERE name = 'acme'",
                &[Value::Int(bad)],
            )
            .await
            .unwrap();
        let err = fails(&["--tenant", "acme"]).await;
        assert_eq!(
            (err.status(), err.to_string()),
            (
                400,
                format!("tenant \"acme\" has a bad pii_retention_days {bad} (1 to 36500)")
            )
        );
    }
    assert_eq!(customers(&pool).await, before, "nothing was purged");
    server.stop().await.unwrap();
}

on_both_backends!(purge_usage_errors, usage_and_unknown_tenants);

/// [`MANIFEST`] with the nightly schedule queueing a job per tenant, each
/// tried `attempts` times a second apart (doubling).
fn queued(attempts: u32) -> String {
    MANIFEST
        .replace(
            "command = true\n",
            &format!(
                "command = true\nschedules = [{{ cron = \"0 3 * * *\", tz = \"UTC\", args = [\"--all-tenants\"] }}]\n\
                 queue = {{ name = \"purge\", max_attempts = {attempts}, backoff = \"1s\" }}\n"
            ),
        )
        .replace("audit = true }", "audit = true, queues = [\"purge\"] }")
}

/// The 03:00 slot queues one job per tenant: each purges its tenant; one
/// whose lock is held (a purge by hand still running) fails, is retried, and
/// purges once the lock is free.
async fn scheduled_purge_is_a_job_per_tenant(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, &queued(5), "a").await;
    let acme = tenant(&server, "acme", RETENTION_DAYS).await;
    let globex = tenant(&server, "globex", RETENTION_DAYS).await;
    for pool in [&acme, &globex] {
        seed(pool).await;
    }
    let kv = &server.services.kv;
    let held = kv
        .lock("purge:globex", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the test takes globex's lock");

    let slot = chrono::Utc::now();
    neo_ops::triggers::schedule::fire(&server.runtime, "purge", 0, slot).await;
    let runs = support::ints(
        server.master(),
        "SELECT COUNT(*) FROM runs WHERE plugin = 'purge' AND status = 'ok'",
        &[],
    )
    .await;
    assert_eq!(runs, vec![1], "the slot's run only queues");
    let purged = |pool: &Pool| {
        let pool = pool.clone();
        async move {
            count(&pool, "SELECT COUNT(*) FROM customers").await
                == (CUSTOMERS.len() as u64 - EXPECT_DEL) as i64
        }
    };
    support::wait_until("acme is purged", || purged(&acme)).await;
    support::wait_for_failed_job(&server, "purge", "tenant \"globex\" is busy").await;
    assert!(
        !purged(&globex).await,
        "nothing purged under another's lock"
    );

    assert!(kv.unlock("purge:globex", &held).await.unwrap());
    support::wait_until("globex is purged on a retry", || purged(&globex)).await;
    support::wait_until("every purge job is done", || async {
        support::queued_jobs(&server, "purge").await.is_empty()
    })
    .await;
    // Each tenant's purge is on record once (the record follows the last
    // batch, so it is waited for).
    let records = || async {
        let sql = "SELECT COUNT(*) FROM audit_log WHERE action = 'purge'";
        support::ints(server.master(), sql, &[]).await[0]
    };
    support::wait_until("both purges are on record", || async {
        records().await >= 2
    })
    .await;
    assert_eq!(records().await, 2);
    server.stop().await.unwrap();
}

on_both_backends!(purge_scheduled, scheduled_purge_is_a_job_per_tenant);

/// A tenant database that turns read-only (a primary demoted in a
/// failover) fails its purge job as a passing fault: the job waits for a
/// retry and purges once writes are back, instead of going to the dead
/// letters at once as a bad job (SQLSTATE 25006 was read as the
/// statement's own fault). The read-only sessions are not reused: once
/// writes are back the retry purges without the test ending them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tenant_database_is_retried_not_dead_lettered() {
    let dep = Deployment::new(Backend::Real).await;
    let server = start(&dep, &queued(8), "a").await;
    let acme = tenant(&server, "acme", RETENTION_DAYS).await;
    seed(&acme).await;
    let template = dep.settings("a").postgres_tenant_dsn_template.unwrap();
    let database = template
        .rsplit('/')
        .next()
        .unwrap()
        .replace("{tenant}", "acme");
    let admin = sqlx::PgPool::connect(support::PG_ADMIN).await.unwrap();
    // New sessions take the database's default.
    let read_only = async |on: bool| {
        let sql = format!("ALTER DATABASE \"{database}\" SET default_transaction_read_only = {on}");
        sqlx::query(&sql).execute(&admin).await.unwrap();
    };
    read_only(true).await;
    // The sessions open now end, as a failover ends them.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();

    neo_ops::triggers::schedule::fire(&server.runtime, "purge", 0, chrono::Utc::now()).await;
    support::wait_for_failed_job(&server, "purge", "read-only for now").await;
    let dead = neo_ops::backends::queue::dead_letter_key("purge");
    let dead_letters = || async { server.services.kv.list_range(&dead, 0, -1).await.unwrap() };
    assert!(dead_letters().await.is_empty(), "dead-lettered at once");

    read_only(false).await;
    // The test's own pool lost its sessions too: a new one counts.
    let tenant_url = template.replace("{tenant}", "acme");
    let counted = sqlx::PgPool::connect(&tenant_url).await.unwrap();
    support::wait_until("acme is purged on a retry", || async {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
            .fetch_one(&counted)
            .await
            .unwrap();
        left == (CUSTOMERS.len() as u64 - EXPECT_DEL) as i64
    })
    .await;
    counted.close().await;
    assert!(dead_letters().await.is_empty());
    admin.close().await;
    server.stop().await.unwrap();
}

async fn lock_and_all_tenants(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, MANIFEST, "a").await;
    let acme = tenant(&server, "acme", RETENTION_DAYS).await;
    let globex = tenant(&server, "globex", 365).await;
    let gone = tenant(&server, "gone", RETENTION_DAYS).await;
    for pool in [&acme, &globex, &gone] {
        seed(pool).await;
    }
    server
        .master()
        .execute(
            "UPDATE tenants SET deleted_at = $1 WHERE name = 'gone'",
            &[Value::Timestamp(now())],
        )
        .await
        .unwrap();
    let acme_before = customers(&acme).await;

    // Another run holds acme's lock: a run for acme refuses and changes nothing.
    let kv = &server.services.kv;
    let token = kv
        .lock("purge:acme", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("lock is free");
    let err = server
        .command("purge", &["--tenant", "acme"])
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (409, "tenant \"acme\" is busy: another purge is running")
    );
    assert_eq!(customers(&acme).await, acme_before);
    // A dry run writes nothing, so takes no lock: it previews meanwhile.
    let out = server
        .command("purge", &["--tenant", "acme", "--dry-run"])
        .await
        .unwrap();
    assert!(out.contains("acme"), "{out}");
    assert_eq!(customers(&acme).await, acme_before);

    // --all-tenants purges the free tenant, reports the busy one, exits
    // non-zero, and still shows what it did to the free one.
    let err = server
        .command("purge", &["--all-tenants"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409);
    let why = "purge failed for 1 of 2 tenants: tenant \"acme\" is busy: another purge is running";
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{why}\npurge globex: customers: 1 anonymised, 1 deleted;"
        )),
        "{message}"
    );
    let out = server
        .runtime
        .invoke(
            "purge",
            neo_ops::triggers::command::invocation(vec!["--all-tenants".into(), "--json".into()]),
        )
        .await
        .unwrap();
    assert_eq!(out.status, 409);
    let doc: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["code"], 409);
    assert_eq!(
        doc["data"]["failed"],
        serde_json::json!([{"tenant": "acme", "code": 409, "message": "tenant \"acme\" is busy: another purge is running"}])
    );
    // The first run purged globex; this one found nothing more there.
    let globex_report = &doc["data"]["tenants"][0];
    assert_eq!(globex_report["tenant"], "globex");
    assert_eq!(globex_report["customers"]["deleted"], 0);
    assert_eq!(customers(&acme).await, acme_before);
    // globex keeps PII for 365 days: only the older expired customers go
    // (anon-2 400d, del-4 700d), and every delivered entry; the undelivered
    // ones 40 days old are within its retention.
    let names: Vec<String> = customers(&globex)
        .await
        .iter()
        .map(|r| text(&r[1]).to_string())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "redacted").count(),
        3,
        "anon-2 plus done-1, done-2"
    );
    assert!(
        !names.contains(&"Guest del-4".to_string()) && !names.contains(&"Guest anon-2".to_string())
    );
    assert_eq!(names.len(), CUSTOMERS.len() - 1);
    assert_eq!(
        outbox_statuses(&globex).await.len(),
        OUTBOX.len() - (EXPECT_OUTBOX as usize - OUTBOX_OLD)
    );
    assert_eq!(
        outbox_statuses(&gone).await,
        OUTBOX,
        "deleted tenants are skipped"
    );

    // Released, the schedule's run covers acme; globex has nothing left.
    assert!(kv.unlock("purge:acme", &token).await.unwrap());
    let out = purge_json(&server, &["--all-tenants", "--json"]).await;
    assert_eq!(out["data"]["tenants"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(
        counts(report(&out, "acme")),
        (EXPECT_ANON, EXPECT_DEL, EXPECT_OUTBOX)
    );
    assert_eq!(counts(report(&out, "globex")), (0, 0, 0));
    assert_eq!(
        kv.lock("purge:acme", Duration::from_secs(1))
            .await
            .unwrap()
            .map(|_| ()),
        Some(()),
        "the run released its lock"
    );
    server.stop().await.unwrap();
}

on_both_backends!(purge_lock_and_all_tenants, lock_and_all_tenants);

const BIG_EXPIRED: i64 = 12_000;
const BIG_RECENT: i64 = 300;
const BIG_DELIVERED: i64 = 500;
const BATCH: usize = 4;

/// A tenant too big to purge in 1s in batches of 4 (a run gets through
/// about 3000 here): expired customers
/// alternate with and without orders; recent ones and outbox entries follow.
async fn seed_big(pool: &Pool) {
    let at = now();
    let fill = |n: i64, prefix: &str, last_order: i64| {
        (
            format!(
                "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {n}) \
                 INSERT INTO customers (name, phone, email, address, last_order_at, created_at) \
                 SELECT '{prefix}' || n, '+91 {prefix}' || n, '{prefix}' || n || '@example.com', \
                 'MG Road', $1, $1 FROM seq"
            ),
            vec![Value::Timestamp(last_order)],
        )
    };
    let stmts = vec![
        fill(BIG_EXPIRED, "old-", at - 100 * DAY),
        fill(BIG_RECENT, "new-", at - DAY),
        (
            "INSERT INTO orders (customer_id, status, total_minor, placed_at) \
             SELECT id, 'PAID', 1000, last_order_at FROM customers \
             WHERE id % 2 = 0 OR name LIKE 'new-%'"
                .into(),
            vec![],
        ),
        (
            format!(
                "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {}) \
                 INSERT INTO notification_outbox (channel, recipient, status) \
                 SELECT 'sms', 'r' || n, CASE WHEN n % 3 = 0 THEN 'pending' ELSE 'delivered' END FROM seq",
                BIG_DELIVERED * 3 / 2
            ),
            vec![],
        ),
    ];
    pool.transaction(&stmts).await.unwrap();
}

/// Ids of expired customers not yet purged, and whether each has orders.
async fn expired_ids(pool: &Pool) -> Vec<i64> {
    support::ints(
        pool,
        "SELECT id FROM customers WHERE name LIKE 'old-%' ORDER BY id",
        &[],
    )
    .await
}

async fn interrupted_purge_resumes(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, INTERRUPTIBLE, "a").await;
    let pool = tenant(&server, "acme", RETENTION_DAYS).await;
    seed_big(&pool).await;
    let expired = expired_ids(&pool).await;
    assert_eq!(expired.len() as i64, BIG_EXPIRED);
    let with_orders = count(
        &pool,
        "SELECT COUNT(*) FROM customers WHERE name LIKE 'old-%' AND id % 2 = 0",
    )
    .await;
    let delivered = count(
        &pool,
        "SELECT COUNT(*) FROM notification_outbox WHERE status = 'delivered'",
    )
    .await;
    assert_eq!(delivered, BIG_DELIVERED);
    let recent_before = customers(&pool)
        .await
        .into_iter()
        .filter(|r| text(&r[1]).starts_with("new-"))
        .collect::<Vec<_>>();

    // The host cuts the run off after 1s, mid-way through the customers:
    // by its timeout (504), or, when a backend call falls past the I/O
    // deadline a quarter of the time before it, by the plugin giving up on
    // that call (503). Either way the run stops between batches.
    let started = Instant::now();
    let err = server
        .command(
            "purge",
            &["--tenant", "acme", "--batch-size", &BATCH.to_string()],
        )
        .await
        .unwrap_err();
    assert!(matches!(err.status(), 503 | 504), "{}: {err}", err.status());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Only whole batches were applied: the purged customers are exactly the
    // first k*BATCH expired ids (a half-applied batch would break the prefix).
    let untouched: std::collections::HashSet<i64> = expired_ids(&pool).await.into_iter().collect();
    let purged: Vec<i64> = expired
        .iter()
        .copied()
        .filter(|id| !untouched.contains(id))
        .collect();
    let anonymised = count(
        &pool,
        "SELECT COUNT(*) FROM customers WHERE name = 'redacted'",
    )
    .await;
    let deleted = BIG_EXPIRED - untouched.len() as i64 - anonymised;
    assert!(
        !purged.is_empty(),
        "some batches committed before the timeout"
    );
    assert!(
        (purged.len() as i64) < BIG_EXPIRED,
        "the run was cut off mid-way"
    );
    assert_eq!(purged, expired[..purged.len()], "purged in id order");
    assert_eq!(
        purged.len() % BATCH,
        0,
        "no half-applied batch: {} purged",
        purged.len()
    );
    assert_eq!(anonymised + deleted, purged.len() as i64);

    // Every committed batch has its audit record, written with it: the
    // records add up to exactly what was purged, one per batch.
    let batches = batch_records(&server).await;
    assert_eq!(batches.len(), purged.len() / BATCH, "one record per batch");
    let recorded: u64 = batches.iter().map(|b| b.iter().sum::<u64>()).sum();
    assert_eq!(recorded, purged.len() as u64);
    server.stop().await.unwrap();

    // The host released the killed run's lock: a rerun right away (well
    // within the lock's TTL) finishes the job exactly.
    let server = start(&dep, MANIFEST, "b").await;
    // Stopping replica a closed its pools.
    let pool = server.services.db.tenant("acme").await.unwrap();
    let out = purge_json(&server, &["--tenant", "acme", "--json"]).await;
    let (a, d, o) = counts(report(&out, "acme"));
    assert_eq!(a as i64, with_orders - anonymised, "{out}");
    assert_eq!(d as i64, (BIG_EXPIRED - with_orders) - deleted, "{out}");
    assert_eq!(o as i64, delivered, "the outbox was never reached");
    // The final state equals an uninterrupted run's.
    assert_eq!(expired_ids(&pool).await, Vec::<i64>::new());
    let redacted = "SELECT COUNT(*) FROM customers \
                    WHERE name = 'redacted' AND phone IS NULL AND anonymized_at IS NOT NULL";
    assert_eq!(count(&pool, redacted).await, with_orders);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM customers").await,
        with_orders + BIG_RECENT
    );
    let recent_after = customers(&pool)
        .await
        .into_iter()
        .filter(|r| text(&r[1]).starts_with("new-"))
        .collect::<Vec<_>>();
    assert_eq!(recent_after, recent_before, "recent customers untouched");
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM notification_outbox WHERE status = 'delivered'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM notification_outbox").await,
        BIG_DELIVERED / 2
    );
    // Both runs' batches are on record, and add up to every change made.
    let all: u64 = batch_records(&server).await.iter().flatten().sum();
    assert_eq!(all as i64, BIG_EXPIRED + delivered);
    let again = purge_json(&server, &["--tenant", "acme", "--json"]).await;
    assert_eq!(counts(report(&again, "acme")), (0, 0, 0));
    server.stop().await.unwrap();
}

on_both_backends!(purge_resumes_after_interruption, interrupted_purge_resumes);

/// The rows each `purge.batch` audit record says its batch changed.
async fn batch_records(server: &Server) -> Vec<Vec<u64>> {
    server
        .master()
        .query(
            "SELECT details FROM audit_log WHERE action = 'purge.batch' AND tenant = 'acme' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .rows
        .iter()
        .map(|r| {
            let d: Json = serde_json::from_str(text(&r[0])).unwrap();
            d["rows"]
                .as_array()
                .unwrap_or_else(|| panic!("no rows in {d}"))
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect()
        })
        .collect()
}

/// A purge stopped part-way (here its lock taken from it, as when the lock
/// expired during a stalled batch) says what the batches it committed did:
/// rows already gone are not taken for still there.
async fn a_purge_stopped_part_way_says_what_it_did(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = start(&dep, MANIFEST, "a").await;
    let pool = tenant(&server, "acme", RETENTION_DAYS).await;
    seed_big(&pool).await;
    let redacted = "SELECT COUNT(*) FROM customers WHERE name = 'redacted'";
    let thief = tokio::spawn({
        let (services, pool) = (server.services.clone(), pool.clone());
        let lock = format!("{}lock:purge:acme", neo_ops::backends::kv::HOST_NAMESPACE);
        async move {
            // Once a batch is in, the lock goes.
            support::wait_until("a batch is committed", || async {
                count(&pool, redacted).await > 0
            })
            .await;
            assert!(services.kv.delete(&lock).await.unwrap(), "the run's lock");
        }
    });
    let err = server
        .command(
            "purge",
            &["--tenant", "acme", "--batch-size", &BATCH.to_string()],
        )
        .await
        .unwrap_err();
    thief.await.unwrap();
    assert_eq!(err.status(), 409, "{err}");
    let anonymised = count(&pool, redacted).await;
    let deleted = BIG_EXPIRED - expired_ids(&pool).await.len() as i64 - anonymised;
    let said = format!(
        "batches; customers: {anonymised} anonymised, {deleted} deleted; \
         notification_outbox: 0 deleted; a rerun goes on from there)"
    );
    assert!(err.to_string().contains(&said), "{err}");
    assert!(err.to_string().contains("lost the lock"), "{err}");
    server.stop().await.unwrap();
}

on_both_backends!(
    purge_stopped_part_way,
    a_purge_stopped_part_way_says_what_it_did
);
