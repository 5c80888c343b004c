//! `cargo bench --bench purge`: the purge plugin on 1,000,000 expired
//! customers in Postgres against the same batched statements run as a plain
//! SQL script (sqlx, same pool settings, same database). Prints the ratio.
//!
//! Needs Postgres on 127.0.0.1:5432; creates and drops its own databases.

use neo_ops::runtime::Runtime;
use neo_ops::services::Services;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const CUSTOMERS: i64 = 1_000_000;
/// One customer in ten has an order, so it is anonymised rather than deleted.
const WITH_ORDERS_EVERY: i64 = 10;
const BATCH: i64 = 1000;
/// Each round runs both contenders on a freshly seeded table.
const ROUNDS: usize = 3;

const MANIFEST: &str = r#"
[plugins.purge]
component = "purge.wasm"
command = true
grants = { db = ["master", "tenant:*"], kv = ["purge:"], audit = true }
limits = { memory = "64MiB", timeout = "1h" }
config = { lock_ttl = "61m" }
"#;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn seed(pool: &PgPool) {
    sqlx::query("TRUNCATE orders, customers RESTART IDENTITY CASCADE")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO customers (name, phone, email, address, last_order_at, created_at) \
         SELECT 'Guest ' || g, '+91 9' || lpad(g::text, 9, '0'), 'guest' || g || '@example.com', \
                g || ' MG Road', now() - interval '1000 days', now() - interval '1200 days' \
         FROM generate_series(1, $1) g",
    )
    .bind(CUSTOMERS)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO orders (customer_id, status, total_minor, placed_at) \
         SELECT g, 'PAID', 1000, now() - interval '1000 days' FROM generate_series(1, $1, $2) g",
    )
    .bind(CUSTOMERS)
    .bind(WITH_ORDERS_EVERY)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE customers")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE orders")
        .execute(pool)
        .await
        .unwrap();
    // Flush the seed's WAL now: otherwise a checkpoint it triggers lands in
    // whichever contender runs next and swings that round by ±15 %.
    sqlx::query("CHECKPOINT").execute(pool).await.unwrap();
}

const EXPIRED: &str = "anonymized_at IS NULL AND COALESCE(last_order_at, created_at) < $2 \
    AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id AND o.placed_at >= $2)";
const HAS_ORDERS: &str = "EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id)";

/// The plugin's statements, run directly: page by keyset, then one
/// transaction per batch that anonymises and deletes within the page.
async fn sql_script(pool: &PgPool) -> (u64, u64) {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(365);
    let now = chrono::Utc::now();
    let page_sql = format!(
        "SELECT COUNT(*) AS n, MAX(id) AS last FROM \
         (SELECT id FROM customers WHERE id > $1 AND {EXPIRED} ORDER BY id LIMIT $3) page"
    );
    let anonymise = format!(
        "UPDATE customers SET name = 'redacted', phone = NULL, email = NULL, address = NULL, anonymized_at = $4 \
         WHERE id > $1 AND id <= $3 AND {EXPIRED} AND {HAS_ORDERS}"
    );
    let delete = format!(
        "DELETE FROM customers WHERE id > $1 AND id <= $3 AND {EXPIRED} AND NOT {HAS_ORDERS}"
    );
    let (mut anonymised, mut deleted, mut after) = (0u64, 0u64, 0i64);
    loop {
        let (n, last): (i64, Option<i64>) = sqlx::query_as(&page_sql)
            .bind(after)
            .bind(cutoff)
            .bind(BATCH)
            .fetch_one(pool)
            .await
            .unwrap();
        let Some(last) = last else { break };
        let mut tx = pool.begin().await.unwrap();
        anonymised += sqlx::query(&anonymise)
            .bind(after)
            .bind(cutoff)
            .bind(last)
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        deleted += sqlx::query(&delete)
            .bind(after)
            .bind(cutoff)
            .bind(last)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        tx.commit().await.unwrap();
        if n < BATCH {
            break;
        }
        after = last;
    }
    (anonymised, deleted)
}

/// `neo-ops run purge` through the runtime; checks the counts.
async fn run_plugin(runtime: &Runtime) -> Duration {
    let t = Instant::now();
    let args = [
        "--tenant",
        "bench",
        "--batch-size",
        &BATCH.to_string(),
        "--json",
    ];
    let out = neo_ops::triggers::command::run(
        runtime,
        "purge",
        args.iter().map(|a| a.to_string()).collect(),
    )
    .await
    .unwrap();
    let elapsed = t.elapsed();
    let summary: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    let c = &summary["data"]["tenants"][0]["customers"];
    assert_eq!(c["anonymised"], CUSTOMERS / WITH_ORDERS_EVERY);
    assert_eq!(c["deleted"], CUSTOMERS - CUSTOMERS / WITH_ORDERS_EVERY);
    elapsed
}

async fn bench() {
    let pg = common::PgBench::new(MANIFEST).await;
    let (settings, manifest_path, prefix) =
        (pg.settings.clone(), pg.manifest.clone(), pg.prefix.clone());
    let services = Services::connect(settings).await.unwrap();
    services.db.create_tenant("bench", "Bench").await.unwrap();
    let manifest = neo_ops::manifest::load(&manifest_path).unwrap();
    let runtime = Arc::new(Runtime::load(&manifest, services.clone()).unwrap());
    // The host's pool settings: 16 connections, no ping before each use.
    let tenant = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(&format!(
            "postgres://postgres@127.0.0.1:5432/{prefix}_bench"
        ))
        .await
        .unwrap();

    println!(
        "purge benchmark: {CUSTOMERS} expired customers (1 in {WITH_ORDERS_EVERY} with an order), batches of {BATCH}, Postgres"
    );
    // One untimed pass first: on the new database round 0 ran slowest for
    // both contenders, and round 0's first contender is always the plugin.
    seed(&tenant).await;
    sql_script(&tenant).await;
    let mut plugin_times = Vec::new();
    let mut sql_times = Vec::new();
    for round in 0..ROUNDS {
        // Alternate which contender goes first, so neither always meets the
        // database right after the other's vacuum debt.
        for plugin_turn in [round % 2 == 0, round % 2 != 0] {
            seed(&tenant).await;
            if plugin_turn {
                plugin_times.push(run_plugin(&runtime).await);
            } else {
                let t = Instant::now();
                let (anonymised, deleted) = sql_script(&tenant).await;
                sql_times.push(t.elapsed());
                assert_eq!(anonymised as i64, CUSTOMERS / WITH_ORDERS_EVERY);
                assert_eq!(deleted as i64, CUSTOMERS - CUSTOMERS / WITH_ORDERS_EVERY);
            }
        }
        let (p, q) = (plugin_times[round], sql_times[round]);
        println!(
            "round {round}: plugin {:.2} s, sql script {:.2} s, ratio {:.2}x (goal <= 1.1x)",
            p.as_secs_f64(),
            q.as_secs_f64(),
            p.as_secs_f64() / q.as_secs_f64()
        );
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    let (p, s) = (best(&plugin_times), best(&sql_times));
    println!(
        "best of each: plugin {:.2} s, sql script {:.2} s, ratio {:.2}x",
        p.as_secs_f64(),
        s.as_secs_f64(),
        p.as_secs_f64() / s.as_secs_f64()
    );
    tenant.close().await;
    services.db.close().await;
    pg.drop_databases().await;
}
