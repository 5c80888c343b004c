//! Tenants with demo data on both backends, the CLI around them, and the
//! audit chain verifier catching an edited record.

use crate::support;

use neo_ops::backends::db::Value;
use support::{Backend, Deployment};

async fn demo_tenant_is_seeded(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let services = neo_ops::services::Services::connect(dep.settings("a"))
        .await
        .unwrap();
    services
        .db
        .create_tenant("acme", "Acme Diner")
        .await
        .unwrap();
    let err = services
        .db
        .create_tenant("acme", "again")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "tenant \"acme\" already exists");
    let err = services
        .db
        .create_tenant("Bad Name", "x")
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("bad tenant name \"Bad Name\""),
        "{err}"
    );

    let pool = services.db.tenant("acme").await.unwrap();
    let size = neo_ops::demo::DemoSize {
        customers: 30,
        orders: 120,
        days: 7,
        seed: 7,
    };
    neo_ops::demo::seed(&pool, size).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { support::ints(&pool, sql, &[]).await[0] }
    };
    assert_eq!(count("SELECT COUNT(*) FROM orders").await, 120);
    assert_eq!(count("SELECT COUNT(*) FROM customers").await, 30);
    assert_eq!(count("SELECT COUNT(*) FROM kots").await, 120);
    assert_eq!(count("SELECT COUNT(*) FROM invoices").await, 120);
    assert!(count("SELECT COUNT(*) FROM order_items").await >= 120);
    assert_eq!(
        count("SELECT COUNT(*) FROM staff WHERE pin_locked_at IS NOT NULL").await,
        1
    );
    // Items add up to each non-complimentary order's total.
    let rows = pool
        .query(
            "SELECT COUNT(*) FROM orders o WHERE o.complimentary = $1 AND o.total_minor <> \
             (SELECT SUM(quantity * unit_price_minor) FROM order_items i WHERE i.order_id = o.id)",
            &[Value::Bool(false)],
        )
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0], Value::Int(0));
    // New orders get fresh ids after the explicit ones.
    let (_, set) = pool
        .run(
            "INSERT INTO orders (status) VALUES ('OPEN') RETURNING id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(set.rows[0][0], Value::Int(121));
    // Seeding again (a tenant created over a database with data) is refused
    // before anything is written.
    let err = neo_ops::demo::seed(&pool, size).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the tenant's database already holds 181 rows"),
        "{err}"
    );
    assert_eq!(count("SELECT COUNT(*) FROM orders").await, 121);
    assert_eq!(count("SELECT COUNT(*) FROM customers").await, 30);

    // Empty, but with its counters moved on by rows added and deleted: the
    // demo's orders still find their customers, staff and tables.
    services.db.create_tenant("beta", "Beta").await.unwrap();
    let beta = services.db.tenant("beta").await.unwrap();
    for table in [
        "customers (name) VALUES ('x')",
        "staff (name, role) VALUES ('x', 'waiter')",
    ] {
        beta.execute(&format!("INSERT INTO {table}"), &[])
            .await
            .unwrap();
    }
    beta.execute("DELETE FROM customers", &[]).await.unwrap();
    beta.execute("DELETE FROM staff", &[]).await.unwrap();
    neo_ops::demo::seed(&beta, size).await.unwrap();
    let orphans = "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS \
                   (SELECT 1 FROM customers c WHERE c.id = o.customer_id)";
    assert_eq!(support::ints(&beta, orphans, &[]).await[0], 0);
    assert_eq!(
        support::ints(&beta, "SELECT COUNT(*) FROM orders", &[]).await[0],
        120
    );
    services.db.close().await;
}

on_both_backends!(demo_data, demo_tenant_is_seeded);

/// A registered tenant whose SQLite file is gone (a partial restore) is
/// unavailable: no new empty database takes its place for plugins to write
/// into, and restoring the file brings its data back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tenant_file_is_not_replaced_by_an_empty_one() {
    let dep = Deployment::new(Backend::Embedded).await;
    let services = neo_ops::services::Services::connect(dep.settings("a"))
        .await
        .unwrap();
    services.db.create_tenant("acme", "Acme").await.unwrap();
    let dir = dep.data_dir("a").join("db");
    let (file, kept) = (dir.join("tenant-acme.sqlite"), dir.join("kept.sqlite"));
    std::fs::rename(&file, &kept).unwrap();
    let err = services.db.tenant("acme").await.unwrap_err();
    assert_eq!(err.to_string(), "tenant \"acme\" database unavailable");
    assert!(!file.exists(), "no empty database was created");
    std::fs::rename(&kept, &file).unwrap();
    let pool = services.db.tenant("acme").await.unwrap();
    assert_eq!(
        support::ints(&pool, "SELECT COUNT(*) FROM orders", &[]).await,
        [0]
    );
    services.db.close().await;
}

/// With a `/{tenant}` DSN template, a tenant named like a database the
/// Postgres server relies on is refused before anything is written: its
/// tables would land in the maintenance database, or in template1, which
/// every later CREATE DATABASE copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_named_like_a_server_database_is_refused() {
    let dep = Deployment::new(Backend::Real).await;
    let mut settings = dep.settings("a");
    let template = settings.postgres_tenant_dsn_template.as_mut().unwrap();
    let (server, _) = template.rsplit_once('/').unwrap();
    *template = format!("{server}/{{tenant}}");
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    for name in ["template1", "postgres"] {
        let err = services.db.create_tenant(name, "x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "tenant \"{name}\" would use the server's own database \"{name}\"; choose another name"
            )
        );
        assert!(!services.db.tenant_exists(name).await.unwrap());
    }
    services.db.close().await;
}

/// A database already there under a tenant's name is taken over when it
/// is a neo-ops tenant's (a create retried after it failed part-way), but
/// one holding another application's tables is refused, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_not_created_over_another_applications_database() {
    let dep = Deployment::new(Backend::Real).await;
    let settings = dep.settings("a");
    let template = settings.postgres_tenant_dsn_template.clone().unwrap();
    let create_database = async |tenant: &str| {
        let dsn = template.replace("{tenant}", tenant);
        let name = dsn.rsplit_once('/').unwrap().1.to_string();
        let admin = sqlx::PgPool::connect(support::PG_ADMIN).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        name
    };
    let db_name = create_database("legacy").await;
    let legacy = sqlx::PgPool::connect(&template.replace("{tenant}", "legacy"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE invoices (id int PRIMARY KEY)")
        .execute(&legacy)
        .await
        .unwrap();
    let services = neo_ops::services::Services::connect(settings)
        .await
        .unwrap();
    let err = services.db.create_tenant("legacy", "x").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "database \"{db_name}\" exists and holds tables that are not a neo-ops tenant's; \
             it is left as it is: choose another tenant name or move that database"
        )
    );
    assert!(!services.db.tenant_exists("legacy").await.unwrap());
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&legacy)
    .await
    .unwrap();
    assert_eq!(tables, ["invoices"]);
    legacy.close().await;

    // An empty one, as a create cut off after CREATE DATABASE leaves it, is
    // taken over.
    create_database("retried").await;
    services.db.create_tenant("retried", "x").await.unwrap();
    assert!(services.db.tenant_exists("retried").await.unwrap());
    services.db.close().await;
}

const AUDITOR: &str = r#"
[plugins.probe]
component = "test_probe.wasm"
command = true
grants = { audit = true }
"#;

async fn edited_audit_record_is_caught(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(AUDITOR, "a").await;
    for action in ["resend_invoice", "reprint_kot", "unlock_pin"] {
        let out = server.command("probe", &["audit", action]).await.unwrap();
        assert!(out.contains("\"ok\":true"), "{out}");
    }
    let master = server.master().clone();
    let v = neo_ops::audit_log::verify(&master).await.unwrap();
    assert_eq!((v.records, v.broken_at.is_none()), (3, true));
    // From a command line the host names the operator and the plugin,
    // whatever the plugin passed.
    let operator = neo_ops::audit_log::cli_actor();
    let actors = master
        .query("SELECT DISTINCT actor, plugin FROM audit_log", &[])
        .await
        .unwrap();
    assert_eq!(
        actors.rows,
        vec![vec![
            Value::Text(operator.clone()),
            Value::Text("probe".into())
        ]]
    );

    let ids = support::ints(&master, "SELECT id FROM audit_log ORDER BY id", &[]).await;
    master
        .execute(
            "UPDATE audit_log SET actor = 'mallory' WHERE id = $1",
            &[Value::Int(ids[1])],
        )
        .await
        .unwrap();
    let v = neo_ops::audit_log::verify(&master).await.unwrap();
    assert_eq!(v.records, 1);
    let (id, why) = v.broken_at.unwrap();
    assert_eq!(id, ids[1]);
    assert_eq!(why, "contents do not match its hash");

    // Deleting a record breaks the link of the next one.
    master
        .execute(
            "UPDATE audit_log SET actor = $2 WHERE id = $1",
            &[Value::Int(ids[1]), Value::Text(operator)],
        )
        .await
        .unwrap();
    master
        .execute("DELETE FROM audit_log WHERE id = $1", &[Value::Int(ids[1])])
        .await
        .unwrap();
    let v = neo_ops::audit_log::verify(&master).await.unwrap();
    assert_eq!(
        v.broken_at.unwrap(),
        (ids[2], "does not link to the previous record".to_string())
    );
    server.stop().await.unwrap();
}

/// The console's Audit tab checks the chain from where its last look ended:
/// new records are checked as they come, an edit in them is caught, and a
/// record it had checked that is then deleted (the log cut back, which a
/// walk from the start cannot see) is reported from then on.
async fn the_console_checks_the_chain_as_it_grows(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(AUDITOR, "a").await;
    let master = server.master().clone();
    let token = neo_ops::auth::create_token(&master, neo_ops::manifest::Role::Admin, "oncall")
        .await
        .unwrap();
    let chain = || async {
        let (status, body) = server.get("/api/admin/audit?limit=5", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["chain"].clone()
    };
    let probe = &server;
    let append = |n: usize| async move {
        for _ in 0..n {
            probe
                .command("probe", &["audit", "console.look"])
                .await
                .unwrap();
        }
    };
    let count = || async { support::ints(&master, "SELECT COUNT(*) FROM audit_log", &[]).await[0] };
    append(3).await;
    let first = chain().await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["checked"], count().await, "{first}");
    append(2).await;
    let second = chain().await;
    assert_eq!(
        (second["ok"].clone(), second["checked"].clone()),
        (true.into(), count().await.into())
    );

    // An edit among the records added since is caught.
    append(1).await;
    let newest = support::ints(&master, "SELECT MAX(id) FROM audit_log", &[]).await[0];
    master
        .execute(
            "UPDATE audit_log SET actor = 'mallory' WHERE id = $1",
            &[Value::Int(newest)],
        )
        .await
        .unwrap();
    let edited = chain().await;
    assert_eq!(edited["ok"], false, "{edited}");
    assert_eq!(edited["broken_at"], newest);
    assert_eq!(edited["reason"], "contents do not match its hash");
    master
        .execute("DELETE FROM audit_log WHERE id = $1", &[Value::Int(newest)])
        .await
        .unwrap();
    let mended = chain().await;
    assert_eq!(
        mended["ok"], true,
        "the edited record was never checked: {mended}"
    );

    // The newest record checked is deleted: reported, and it stays reported.
    let checked_last = support::ints(&master, "SELECT MAX(id) FROM audit_log", &[]).await[0];
    master
        .execute(
            "DELETE FROM audit_log WHERE id = $1",
            &[Value::Int(checked_last)],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let cut = chain().await;
        assert_eq!(cut["ok"], false, "{cut}");
        assert_eq!(cut["broken_at"], checked_last);
        assert_eq!(cut["reason"], "was checked earlier and is gone");
    }
    server.stop().await.unwrap();
}

on_both_backends!(audit_tab_chain, the_console_checks_the_chain_as_it_grows);

/// Without `audit = true` a plugin cannot write to the audit log at all.
async fn audit_needs_its_grant(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let ungranted = AUDITOR.replace("grants = { audit = true }\n", "");
    let server = dep.start(&ungranted, "a").await;
    let out = server.command("probe", &["audit", "forged"]).await;
    let text = format!("{out:?}");
    assert!(text.contains("no audit grant"), "{text}");
    let n = support::ints(server.master(), "SELECT COUNT(*) FROM audit_log", &[]).await;
    assert_eq!(n, vec![0]);
    server.stop().await.unwrap();
}

on_both_backends!(audit_grant, audit_needs_its_grant);

on_both_backends!(audit_chain, edited_audit_record_is_caught);

/// `token create --expires-in`: a bad or absurd length is refused naming
/// it; a token made with one says until when it is valid, and the list
/// shows when it expires (as `--json` too); one made without lasts until
/// revoked.
#[test]
fn cli_tokens_that_expire() {
    let cli = support::Cli::new(AUDITOR);
    let run = |args: &[&str]| {
        let o = cli.run(args);
        (o.code, o.stdout, o.stderr)
    };
    let create = ["token", "create", "--role", "admin", "--name"];
    for (bad, why) in [
        ("90", "\"90\" is not a duration"),
        (
            "0d",
            "--expires-in \"0d\" must be more than 0 and at most 3650d",
        ),
        (
            "3651d",
            "--expires-in \"3651d\" must be more than 0 and at most 3650d",
        ),
    ] {
        let (code, out, err) = run(&[&create[..], &["temp", "--expires-in", bad]].concat());
        assert_eq!(code, Some(2), "{out}");
        assert!(err.contains(why), "{err}");
    }
    assert_eq!(
        run(&["token", "list", "--json"]).1.trim(),
        r#"{"tokens":[]}"#
    );

    let (code, _, err) = run(&[&create[..], &["contractor", "--expires-in", "30d"]].concat());
    assert_eq!(code, Some(0), "{err}");
    let until = (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d");
    assert!(err.contains(&format!("valid until {until}T")), "{err}");
    let (code, _, err) = run(&[&create[..], &["oncall"]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("valid until revoked"), "{err}");

    let (_, out, _) = run(&["token", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(&format!("\texpires {until}T")), "{out}");
    assert!(!lines[1].contains("expire"), "{out}");
    let (_, out, _) = run(&["token", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        listed["tokens"][0]["expires_at"]
            .as_str()
            .unwrap()
            .starts_with(&until.to_string()),
        "{out}"
    );
    assert_eq!(listed["tokens"][1]["expires_at"], serde_json::Value::Null);
}

/// `tenant create --demo`, `tenant list --json`, `token create` and
/// `audit verify` through the real binary on the embedded backends.
#[test]
fn cli_tenants_tokens_audit() {
    let cli = support::Cli::new(AUDITOR);
    let run = |args: &[&str]| {
        let o = cli.run(args);
        (o.code, o.stdout, o.stderr)
    };
    let (code, out, err) = run(&[
        "tenant",
        "create",
        "acme",
        "--display-name",
        "Acme Diner",
        "--demo",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("created tenant \"acme\"") && out.contains("400 orders"),
        "{out}"
    );
    // The first command says it made a new embedded master; the next, which
    // finds it, says nothing of it.
    assert!(
        err.contains("no POSTGRES_MASTER_URL: this command made a new embedded database"),
        "{err}"
    );
    let (code, _, err) = run(&["tenant", "create", "acme"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim(), "error: tenant \"acme\" already exists");
    let (code, out, _) = run(&["tenant", "list", "--json"]);
    assert_eq!(code, Some(0));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "acme");
    assert_eq!(list[0]["display_name"], "Acme Diner");

    let (code, out, err) = run(&[
        "token",
        "create",
        "--role",
        "super_admin",
        "--name",
        "oncall",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let token = out.trim();
    assert!(
        token.starts_with("neo_") && token.len() == 4 + 8 + 1 + 64,
        "{token}"
    );
    assert!(err.contains("not shown again"));
    let (code, _, err) = run(&["token", "create", "--role", "root", "--name", "x"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim(),
        "error: --role: unknown role \"root\" (expected admin or super_admin)"
    );

    let id = &token[4..12];
    // A second live token of one name could not be told apart on record;
    // a name shaped like a plugin's actor is refused.
    let (code, _, err) = run(&["token", "create", "--role", "admin", "--name", "oncall"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim(),
        format!(
            "error: a live token named \"oncall\" exists (id {id}): revoke it first or pick another name"
        )
    );
    let (code, _, err) = run(&[
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "purge (schedule)",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad token name \"purge (schedule)\""), "{err}");
    let (code, out, err) = run(&["token", "create", "--role", "admin", "--name", "grafana"]);
    assert_eq!(code, Some(0), "{err}");
    let second = out.trim().to_string();

    // The list shows ids, roles and names, never a secret.
    let (code, out, _) = run(&["token", "list", "--json"]);
    assert_eq!(code, Some(0));
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<(&str, &str)> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["role"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("oncall", "super_admin"), ("grafana", "admin")]);
    assert_eq!(listed["tokens"][0]["token_id"], id);
    assert!(
        !out.contains(&token[13..]) && !out.contains(&second[13..]),
        "{out}"
    );
    // Revoking by the whole token, pasted as it is: done by its id, and the
    // secret is never echoed back, even when nothing matched.
    let (code, out, err) = run(&["token", "revoke", &second, "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "would revoke token {} (\"grafana\", admin); nothing changed (--dry-run)",
            &second[4..12]
        )
    );
    let (code, out, err) = run(&["token", "revoke", &second]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("revoked token {} (\"grafana\", admin)", &second[4..12])
    );
    let (code, _, err) = run(&["token", "revoke", &second]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no live token with id") && !err.contains(&second[13..]),
        "{err}"
    );
    let (code, _, err) = run(&["token", "revoke", "neo_nothex"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("bad token id") && !err.contains("nothex"),
        "{err}"
    );
    let (_, out, _) = run(&["token", "list"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!("{id}\tsuper_admin\toncall\tcreated ")),
        "{out}"
    );
    let (_, out, _) = run(&["token", "list", "--all"]);
    assert!(out.lines().nth(1).unwrap().contains("\trevoked "), "{out}");

    assert_eq!(run(&["run", "probe", "audit", "unlock_pin"]).0, Some(0));
    let (code, out, _) = run(&["audit", "verify"]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "audit chain intact: 5 record(s)")
    );
    // The CLI's own changes are on record, by who ran them.
    let out = cli
        .command(&["tenant", "set", "acme", "--retention-days", "30"])
        .env("SUDO_USER", "priya")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let master = cli.dir.path().join("data/db/master.sqlite");
    let records = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", master.display()))
            .await
            .unwrap();
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT actor, action, target, details FROM audit_log \
             WHERE plugin IS NULL ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    });
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.1.as_str(), r.2.as_str()))
        .collect();
    let (first, second) = (format!("token:{id}"), format!("token:{}", &second[4..12]));
    assert_eq!(
        actions,
        [
            ("tenant.create", "tenant:acme"),
            ("token.create", first.as_str()),
            ("token.create", second.as_str()),
            ("token.revoke", second.as_str()),
            ("tenant.set", "tenant:acme"),
        ]
    );
    assert!(
        records.iter().all(|r| r.0.starts_with("cli (")),
        "{records:?}"
    );
    assert_eq!(records[4].0, "cli (priya)");
    let details: serde_json::Value = serde_json::from_str(&records[4].3).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"changes": {"retention_days": ["365", "30"]}})
    );
    assert!(!records[1].3.contains(&token[13..]), "no secret on record");

    // A display name with a tab, a newline and a terminal escape stays one
    // tab-separated line in the plain list (the JSON keeps it as it is).
    let hostile = "Acme\tDiner\n\u{1b}[2Jx";
    let (code, _, err) = run(&["tenant", "set", "acme", "--display-name", hostile]);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = run(&["tenant", "list"]);
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(out.ends_with("\tAcme Diner  [2Jx\n"), "{out:?}");
    let (_, out, _) = run(&["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["display_name"], hostile);
}

/// Two replicas appending at once never fork the chain: each append takes
/// the chain's lock and reads the last hash after it holds it.
async fn concurrent_appends_keep_one_chain(backend: Backend) {
    appends_from_two_replicas(Deployment::new(backend).await).await;
}

on_both_backends!(audit_concurrent, concurrent_appends_keep_one_chain);

/// The same where the database's default isolation is repeatable read: a
/// snapshot taken before the chain's lock was granted would miss the append
/// that held it, and the chain would fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_keep_one_chain_under_repeatable_read() {
    let dep = Deployment::new(Backend::Real).await;
    // Set before the replicas below open their connections.
    let first = dep.start(AUDITOR, "a").await;
    let rows = first
        .master()
        .query("SELECT current_database() AS d", &[])
        .await
        .unwrap();
    let Some(Value::Text(db)) = rows.rows[0].first().cloned() else {
        panic!("no database name: {rows:?}");
    };
    first
        .master()
        .execute(
            &format!(
                "ALTER DATABASE \"{db}\" SET default_transaction_isolation = 'repeatable read'"
            ),
            &[],
        )
        .await
        .unwrap();
    first.stop().await.unwrap();
    appends_from_two_replicas(dep).await;
}

async fn appends_from_two_replicas(dep: Deployment) {
    let (a, b) = (dep.start(AUDITOR, "a").await, dep.start(AUDITOR, "b").await);
    let append = |master: neo_ops::backends::db::Pool, replica: &'static str, n: usize| async move {
        let record = neo_ops::audit_log::NewRecord {
            actor: format!("replica {replica}"),
            action: "test.append".into(),
            target: format!("record {n}"),
            tenant: None,
            request_id: None,
            plugin: None,
            details: serde_json::json!({"n": n}),
        };
        neo_ops::audit_log::append(&master, record).await.unwrap()
    };
    let mut appends = Vec::new();
    for n in 0..25 {
        appends.push(tokio::spawn(append(a.master().clone(), "a", n)));
        appends.push(tokio::spawn(append(b.master().clone(), "b", n)));
    }
    let mut ids = Vec::new();
    for append in appends {
        ids.push(append.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    let v = neo_ops::audit_log::verify(a.master()).await.unwrap();
    assert_eq!((v.records, v.broken_at), (50, None));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

const MASTER_AUDITOR: &str = r#"
[plugins.probe]
component = "test_probe.wasm"
command = true
grants = { audit = true, db = ["master"] }
"#;

/// The probe's answer, which must say it did what it was asked.
async fn probe_ok(server: &support::Server, args: &[&str]) -> String {
    let out = server.command("probe", args).await.unwrap();
    assert!(out.contains("\"ok\":true"), "{args:?}: {out}");
    out
}

/// A plugin that may write the master cannot stop the audit chain, or fork
/// it, through the table's id counter: each record takes the id after the
/// chain's end. Before, a counter set to its end failed every append after
/// (the CLI's too), and one set back gave a record a lower id than the one
/// it links to.
async fn the_id_counter_cannot_stop_or_fork_the_chain(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MASTER_AUDITOR, "a").await;
    let counter_at = |n: &str| match backend {
        Backend::Real => format!("SELECT setval('audit_log_id_seq', {n}) AS v"),
        Backend::Embedded => {
            format!("UPDATE sqlite_sequence SET seq = {n} WHERE name = 'audit_log'")
        }
    };
    probe_ok(&server, &["audit", "before"]).await;
    probe_ok(
        &server,
        &["db-sql", "master", &counter_at("9223372036854775807")],
    )
    .await;
    probe_ok(&server, &["audit", "at-the-end"]).await;
    let change = "UPDATE incidents SET details = 'x' WHERE id < 0";
    probe_ok(&server, &["audit-tx", "master", change]).await;
    probe_ok(&server, &["db-sql", "master", &counter_at("1")]).await;
    probe_ok(&server, &["audit", "set-back"]).await;
    let master = server.master().clone();
    // The counter gone altogether (a plugin is refused that; an operator's
    // hand is not): records still go in.
    if backend == Backend::Real {
        let drop = "DROP SEQUENCE audit_log_id_seq CASCADE";
        master.execute(drop, &[]).await.unwrap();
        probe_ok(&server, &["audit", "no-counter"]).await;
    }
    let ids = support::ints(&master, "SELECT id FROM audit_log ORDER BY id", &[]).await;
    let expected: &[i64] = match backend {
        Backend::Real => &[1, 2, 3, 4, 5],
        Backend::Embedded => &[1, 2, 3, 4],
    };
    assert_eq!(ids, expected);
    let v = neo_ops::audit_log::verify(&master).await.unwrap();
    assert_eq!((v.records, v.broken_at), (expected.len() as u64, None));
    server.stop().await.unwrap();
}

on_both_backends!(
    audit_id_counter,
    the_id_counter_cannot_stop_or_fork_the_chain
);

/// On the master a change and its record commit together: a record that
/// cannot be written takes its change back with it. Before, the change
/// committed first and its record followed in a transaction of its own, so
/// a crash or outage between them left the change off the record.
async fn a_master_change_commits_with_its_record(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MASTER_AUDITOR, "a").await;
    let master = server.master().clone();
    let insert =
        |title: &str| format!("INSERT INTO incidents (title, details) VALUES ('{title}', 'x')");
    probe_ok(&server, &["audit-tx", "master", &insert("kept")]).await;
    let rows = master
        .query(
            "SELECT details FROM audit_log WHERE action = 'probe.tx'",
            &[],
        )
        .await
        .unwrap();
    let Some(Value::Json(details) | Value::Text(details)) = rows.rows[0].first().cloned() else {
        panic!("{rows:?}");
    };
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["rows"], serde_json::json!([1]));

    // No id is left after the chain's end, so the next record cannot be written.
    master
        .execute(
            "UPDATE audit_log SET id = 9223372036854775807 WHERE id = (SELECT MAX(id) FROM audit_log)",
            &[],
        )
        .await
        .unwrap();
    let out = server
        .command("probe", &["audit-tx", "master", &insert("lost")])
        .await
        .unwrap();
    assert!(out.contains("\"ok\":false"), "{out}");
    assert!(
        !out.contains(neo_ops_text::audit::COMMITTED_UNRECORDED),
        "{out}"
    );
    let titles = master
        .query("SELECT title FROM incidents ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(titles.rows, vec![vec![Value::Text("kept".into())]]);
    server.stop().await.unwrap();
}

on_both_backends!(audit_master_atomic, a_master_change_commits_with_its_record);

/// An audit record is bounded: details past 64 KiB and an action past
/// 1 KiB are refused, naming the size, and nothing is written. Before, a
/// plugin could append a record of any size, kept for good and read whole
/// by every chain check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_record_is_bounded() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(AUDITOR, "a").await;
    probe_ok(&server, &["audit-padded", "60000"]).await;
    let big = server
        .command("probe", &["audit-padded", "70000"])
        .await
        .unwrap();
    assert!(
        big.contains("\"ok\":false") && big.contains("audit details of 70010 bytes exceed 65536"),
        "{big}"
    );
    let action = "a".repeat(1025);
    let long = server.command("probe", &["audit", &action]).await.unwrap();
    assert!(
        long.contains("audit action of 1025 bytes exceeds 1024"),
        "{long}"
    );
    let v = neo_ops::audit_log::verify(server.master()).await.unwrap();
    assert_eq!((v.records, v.broken_at), (1, None));
    server.stop().await.unwrap();
}

/// A master a newer neo-ops migrated past this build (a rolling deploy's
/// first new replica does) is used as it stands: an older replica that
/// restarts serves, and an older CLI's write command works. Before, sqlx
/// refused it ("migration 99999 was previously applied but is missing")
/// and the replica stayed down. `migrate` still refuses it.
async fn a_master_a_newer_build_migrated_is_used(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(AUDITOR, "a").await;
    server
        .master()
        .execute(
            "INSERT INTO _sqlx_migrations \
             (version, description, success, checksum, execution_time) \
             VALUES (99999, 'from a newer build', TRUE, $1, 1)",
            &[Value::Bytes(vec![1, 2, 3])],
        )
        .await
        .unwrap();
    server.stop().await.unwrap();

    let again = dep.start(AUDITOR, "a").await;
    probe_ok(&again, &["audit", "after_restart"]).await;
    again.stop().await.unwrap();
    // The CLI of the tests keeps an embedded master of its own.
    if backend == Backend::Embedded {
        return;
    }
    let settings = dep.settings("a");
    let cli = support::Cli::new(AUDITOR);
    let token = tokio::task::block_in_place(|| {
        cli.run_on(
            &["token", "create", "--role", "admin", "--name", "ops"],
            &settings,
        )
    });
    assert_eq!(token.code, Some(0), "{}", token.stderr);
    assert!(
        token
            .stderr
            .contains("was migrated by a newer neo-ops (migration 99999)"),
        "{}",
        token.stderr
    );
    // A tenant's database would get only this build's tenant schema.
    let created =
        tokio::task::block_in_place(|| cli.run_on(&["tenant", "create", "acme"], &settings));
    assert_eq!(created.code, Some(1), "{}", created.stderr);
    assert!(
        created.stderr.contains(
            "the master was migrated by a newer neo-ops (migration 99999): create tenant \"acme\" with that neo-ops"
        ),
        "{}",
        created.stderr
    );
    let migrated = tokio::task::block_in_place(|| cli.run_on(&["migrate"], &settings));
    assert_eq!(migrated.code, Some(1), "{}", migrated.stdout);
    assert!(
        migrated
            .stderr
            .contains("master database: migration 99999 was applied by a newer neo-ops"),
        "{}",
        migrated.stderr
    );
}

on_both_backends!(newer_master, a_master_a_newer_build_migrated_is_used);

/// Details with numbers JSONB gives back in another form (`-0.0`, a whole
/// float written with an exponent) still verify: no false alarm of tampering.
async fn numbers_in_details_survive_the_database(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(AUDITOR, "a").await;
    for details in [
        serde_json::json!({"zero": -0.0, "big": 1e16, "bigger": 1.0000000000000001e18}),
        serde_json::json!({"neg": -2.5e16, "huge": 2e19, "small": 1.5e-7, "whole": 3.0}),
    ] {
        let record = neo_ops::audit_log::NewRecord {
            actor: "oncall".into(),
            action: "test.numbers".into(),
            target: "numbers".into(),
            tenant: None,
            request_id: None,
            plugin: None,
            details,
        };
        neo_ops::audit_log::append(server.master(), record)
            .await
            .unwrap();
    }
    let v = neo_ops::audit_log::verify(server.master()).await.unwrap();
    assert_eq!((v.records, v.broken_at), (2, None));
    server.stop().await.unwrap();
}

on_both_backends!(audit_numbers, numbers_in_details_survive_the_database);

/// Processes appending to one embedded audit log at once (`neo-ops run`
/// beside another `neo-ops run` or `serve`) keep one unbroken chain.
#[test]
fn appends_from_several_processes_keep_one_chain() {
    let cli = support::Cli::new(AUDITOR);
    let warm = cli.run(&["run", "probe", "audit", "warm"]);
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    let children: Vec<_> = (0..4)
        .map(|_| {
            cli.command(&["run", "probe", "audit", "test.parallel", "25"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("25 records"));
    }
    let verified = cli.run(&["audit", "verify", "--json"]);
    assert_eq!(
        verified.code,
        Some(0),
        "{}{}",
        verified.stdout,
        verified.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&verified.stdout).unwrap();
    assert_eq!(v["records"], 101, "{v}");
}

/// A NUL in an audit entry (which Postgres would refuse only after a
/// `record-transaction` had committed its change) is refused up front as
/// invalid, on both backends alike.
async fn audit_entries_with_nul_are_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(AUDITOR, "a").await;
    let out = server
        .command("probe", &["audit", "test.nul\0byte"])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"invalid""#), "{out}");
    assert!(out.contains("NUL"), "{out}");
    let out = server
        .command("probe", &["audit", "test.ok"])
        .await
        .unwrap();
    assert!(out.contains(r#""ok":true"#), "{out}");
    let v = neo_ops::audit_log::verify(server.master()).await.unwrap();
    assert_eq!((v.records, v.broken_at), (1, None));
    server.stop().await.unwrap();
}

on_both_backends!(audit_nul, audit_entries_with_nul_are_refused);

/// An expired token can still be revoked (put on the record as revoked,
/// not merely expired); a revoked one cannot be revoked again.
#[test]
fn an_expired_token_can_be_revoked() {
    let cli = support::Cli::new("");
    let o = cli.run(&[
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "temp",
        "--expires-in",
        "1s",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let id = o.stdout.trim()[4..12].to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = cli.run(&["token", "list", "--all"]);
    assert!(o.stdout.contains("\texpired "), "{}", o.stdout);
    let o = cli.run(&["token", "revoke", &id]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        format!("revoked token {id} (\"temp\", admin)")
    );
    let o = cli.run(&["token", "revoke", &id]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(o.stderr.contains("no live token with id"), "{}", o.stderr);
}

const TENANT_READER: &str = r#"
[plugins.probe]
component = "test_probe.wasm"
command = true
grants = { db = ["tenant:*"] }
"#;

/// A tenant deleted in the master (soft-deleted by the POS, by hand, or
/// through another replica) stops being served by a replica that has its
/// database open, once the master is asked again; brought back, it is
/// served again. Before, an open tenant was served until the replica
/// restarted.
async fn a_deleted_tenant_stops_being_served(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let mut settings = dep.settings("a");
    settings.tenant_recheck = std::time::Duration::from_millis(300);
    let services = neo_ops::services::Services::connect(settings)
        .await
        .expect("services");
    let server = dep.start_with_services(TENANT_READER, services).await;
    server
        .services
        .db
        .create_tenant("acme", "Acme")
        .await
        .unwrap();
    probe_ok(&server, &["db", "tenant:acme"]).await;
    let deleted = async |at: &str| {
        let sql = format!("UPDATE tenants SET deleted_at = {at} WHERE name = 'acme'");
        assert_eq!(server.master().execute(&sql, &[]).await.unwrap(), 1);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    };
    deleted("CURRENT_TIMESTAMP").await;
    let out = server
        .command("probe", &["db", "tenant:acme"])
        .await
        .unwrap();
    assert!(
        out.contains(r#""code":"not-found""#) && out.contains(r#"tenant \"acme\" not found"#),
        "{out}"
    );
    deleted("NULL").await;
    probe_ok(&server, &["db", "tenant:acme"]).await;
    server.stop().await.unwrap();
}

on_both_backends!(deleted_tenant, a_deleted_tenant_stops_being_served);
