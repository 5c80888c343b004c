//! The operator's command line: `tenant set`, `preflight --only`, running one
//! check by name, advisory checks and migrate, through the real binary on
//! the embedded backends (and Postgres, for `migrate --dry-run`).

use crate::support::{self, Backend, Deployment};

/// Two checks: one that passes on the embedded backends, one that fails
/// because it lacks the db grant it needs (advisory where asked).
fn checks(severity: &str) -> String {
    format!(
        r#"
[plugins.check-redis]
component = "check_redis.wasm"
check = true
grants = {{ kv = ["preflight:"] }}

[plugins.check-database]
component = "check_database.wasm"
check = true
{severity}
"#
    )
}

#[test]
fn tenant_set_changes_what_list_shows() {
    let cli = support::Cli::new("");
    let ok = |args: &[&str]| {
        let o = cli.run(args);
        assert_eq!(o.code, Some(0), "{args:?}: {}", o.stderr);
        o.stdout
    };
    ok(&["tenant", "create", "acme", "--demo"]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["tenant", "list", "--json"])).unwrap();
    assert_eq!(
        listed[0]["owner_email"], "owner@acme.example",
        "--demo fills an owner email"
    );
    // A dry run shows the change and makes none.
    let out = ok(&[
        "tenant",
        "set",
        "acme",
        "--retention-days",
        "1",
        "--dry-run",
    ]);
    assert_eq!(
        out,
        "dry run: tenant \"acme\" would change\n  retention_days: \"365\" -> \"1\"\n"
    );
    let unchanged: serde_json::Value =
        serde_json::from_str(&ok(&["tenant", "list", "--json"])).unwrap();
    assert_eq!(unchanged, listed);
    let out = ok(&[
        "tenant",
        "set",
        "acme",
        "--owner-email",
        "priya@acme.example",
        "--display-name",
        "Acme Diner",
        "--time-zone",
        "Europe/Lisbon",
        "--retention-days",
        "90",
        "--plan",
        "pro",
    ]);
    assert!(out.contains("updated tenant \"acme\""), "{out}");
    // What changed is shown, old to new.
    assert!(
        out.contains("  owner_email: \"owner@acme.example\" -> \"priya@acme.example\"\n"),
        "{out}"
    );
    assert!(
        out.contains("  retention_days: \"365\" -> \"90\"\n"),
        "{out}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["tenant", "list", "--json"])).unwrap();
    let t = &listed[0];
    assert_eq!(
        (
            &t["owner_email"],
            &t["display_name"],
            &t["time_zone"],
            &t["retention_days"],
            &t["plan"]
        ),
        (
            &serde_json::json!("priya@acme.example"),
            &serde_json::json!("Acme Diner"),
            &serde_json::json!("Europe/Lisbon"),
            &serde_json::json!(90),
            &serde_json::json!("pro")
        )
    );
    // Bad input: an error naming the value, exit 2 (the command line is
    // wrong), nothing changed.
    for (args, says) in [
        (
            vec!["--time-zone", "Mars/Olympus"],
            "--time-zone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            vec!["--owner-email", "not-an-email"],
            "--owner-email: \"not-an-email\" is not an email address",
        ),
        (
            vec!["--retention-days", "0"],
            "--retention-days 0 is out of range",
        ),
        (vec!["--plan", ""], "--plan: \"\" is blank"),
        (
            vec!["--display-name", "  "],
            "--display-name: \"  \" is blank",
        ),
        (vec![], "nothing to set"),
    ] {
        let mut argv = vec!["tenant", "set", "acme"];
        argv.extend(args);
        let o = cli.run(&argv);
        assert_eq!(o.code, Some(2), "{argv:?}");
        assert!(o.stderr.contains(says), "{argv:?}: {}", o.stderr);
    }
    let o = cli.run(&["tenant", "set", "nobody", "--plan", "pro"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("tenant \"nobody\" not found"),
        "{}",
        o.stderr
    );
    let again: serde_json::Value =
        serde_json::from_str(&ok(&["tenant", "list", "--json"])).unwrap();
    assert_eq!(again, listed);

    // Piped into a reader that has gone (`| head -0`): the change is on
    // record before the first line is printed. Before, the process died at
    // that line, with the tenant changed and no `tenant.set` record.
    let mut piped = cli
        .command(&["tenant", "set", "acme", "--plan", "enterprise"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    piped.wait().unwrap();
    let master = cli.dir.path().join("data/db/master.sqlite");
    let recorded = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", master.display()))
            .await
            .unwrap();
        let (sets,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM audit_log WHERE action = 'tenant.set' AND details LIKE '%enterprise%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        sets
    });
    let now: serde_json::Value = serde_json::from_str(&ok(&["tenant", "list", "--json"])).unwrap();
    assert_eq!(now[0]["plan"], "enterprise");
    assert_eq!(recorded, 1, "the change is on the audit record");
}

/// A queue's further workers are `<replica>#<n>`: a replica named like one
/// is refused before anything starts.
#[test]
fn a_replica_name_with_a_hash_is_refused() {
    let cli = support::Cli::new(&checks(""));
    let out = cli
        .command(&["check"])
        .env("NEO_OPS_REPLICA", "web#1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NEO_OPS_REPLICA \"web#1\" must be a non-empty name without '#'"),
        "{err}"
    );
}

#[test]
fn preflight_only_runs_the_checks_named() {
    let cli = support::Cli::new(&checks(""));
    let o = cli.run(&["run", "preflight", "--only", "check-redis", "--json"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let names: Vec<&str> = doc["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["check-redis"]);
    assert_eq!(doc["data"]["status"], "pass");
    // The same through the real subcommand; both checks without --only.
    let o = cli.run(&["preflight", "--json"]);
    assert_eq!(o.code, Some(1), "check-database fails without its grant");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["data"]["checks"].as_array().unwrap().len(), 2);
    assert_eq!(doc["data"]["status"], "fail");
    // An unknown name is an error naming it and the checks there are.
    let o = cli.run(&["run", "preflight", "--only", "check-nope", "--json"]);
    assert_eq!(o.code, Some(2));
    let envelope: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(envelope["error"]["code"], 400, "{envelope}");
    assert!(
        o.stderr.contains("\"check-nope\" is not a check in")
            && o.stderr.contains("check-database, check-redis"),
        "{}",
        o.stderr
    );
    // A flag neither form takes is a usage error (2) either way.
    for argv in [
        &["run", "preflight", "--bogus"][..],
        &["preflight", "--bogus"],
    ] {
        let o = cli.run(argv);
        assert_eq!(o.code, Some(2), "{argv:?}: {}", o.stderr);
        assert!(o.stderr.contains("--bogus"), "{}", o.stderr);
    }
}

/// Redis that keeps nothing on disk loses every queue when it restarts:
/// the redis check warns, unless its config accepts that; snapshots or
/// the append-only file pass and say which.
#[test]
fn the_redis_check_warns_when_redis_keeps_nothing_on_disk() {
    use support::redis_server::RedisServer;
    let accepting = checks("").replace(
        "grants = { kv = [\"preflight:\"] }",
        "grants = { kv = [\"preflight:\"] }\nconfig = { allow_no_persistence = \"true\" }",
    );
    let check = |cli: &support::Cli, redis: &RedisServer| {
        let mut command = cli.command(&["run", "check-redis", "--json"]);
        command.env("REDIS_URL", &redis.url);
        let o = support::CliOutput::of(command);
        assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
        let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let check = doc["data"]["checks"][0].clone();
        assert_eq!(check["name"], "check-redis", "{doc}");
        check
    };
    let cli = support::Cli::new(&checks(""));

    let volatile = RedisServer::start(&["--save", "", "--appendonly", "no"]);
    let c = check(&cli, &volatile);
    assert_eq!(c["status"], "warn", "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Redis keeps nothing on disk")
            && detail.contains("loses every queued job, retry and dead letter"),
        "{c}"
    );
    assert!(
        c["hint"].as_str().unwrap().contains("appendonly yes"),
        "{c}"
    );
    let c = check(&support::Cli::new(&accepting), &volatile);
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .ends_with("(allowed by config)"),
        "{c}"
    );

    let snapshots = RedisServer::start(&["--save", "3600 1", "--appendonly", "no"]);
    let c = check(&cli, &snapshots);
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("snapshots only"),
        "{c}"
    );

    let append_only = RedisServer::start(&["--save", "", "--appendonly", "yes"]);
    let c = check(&cli, &append_only);
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("append-only file"),
        "{c}"
    );
}

#[test]
fn one_check_runs_by_its_name() {
    let cli = support::Cli::new(&checks(""));
    let o = cli.run(&["run", "check-redis"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("check-redis") && !o.stdout.contains("check-database"),
        "{}",
        o.stdout
    );
    let o = cli.run(&["run", "check-database", "--json"]);
    assert_eq!(o.code, Some(1));
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["data"]["checks"][0]["name"], "check-database");
    assert_eq!(doc["data"]["checks"][0]["status"], "fail");
}

/// A check that panics fails with its panic message as the detail, not a
/// wasm backtrace; the message is also in the log under the plugin's name.
#[test]
fn a_panicking_check_says_why() {
    let cli = support::Cli::new(
        "[plugins.check-panics]\ncomponent = \"test_panic_check.wasm\"\ncheck = true\n",
    );
    let o = cli.run(&["--log-format", "json", "run", "check-panics", "--json"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let check = &doc["data"]["checks"][0];
    assert_eq!(check["status"], "fail");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("plugin \"check-panics\" failed: panicked: disk probe returned nothing for /var/lib/neo-ops (at "),
        "{detail}"
    );
    assert!(!detail.contains("wasm backtrace"), "{detail}");
    // The SDK's panic hook logs through the host's logger: JSON lines, named;
    // the panic's second line stays on the log line, escaped, as all guest
    // text does.
    let logged = o
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["fields"]["message"].as_str().is_some_and(|m| {
                m.starts_with("plugin panicked at ")
                    && m.ends_with("\\ndisk probe returned nothing for /var/lib/neo-ops")
            })
        })
        .unwrap_or_else(|| panic!("no panic log line in {}", o.stderr));
    assert_eq!(logged["level"], "ERROR");
    assert_eq!(logged["fields"]["plugin"], "check-panics");
    assert!(
        o.stderr.lines().all(|l| l.starts_with('{')),
        "only JSON lines: {}",
        o.stderr
    );
}

#[test]
fn an_advisory_failure_only_warns() {
    let cli = support::Cli::new(&checks("severity = \"advisory\""));
    let o = cli.run(&["preflight", "--json"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["data"]["status"], "warn");
    let db = doc["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "check-database")
        .unwrap();
    assert_eq!(
        (&db["status"], &db["advisory"]),
        (&serde_json::json!("fail"), &serde_json::json!(true))
    );
    let text = cli.run(&["preflight"]);
    assert!(
        text.stdout.starts_with("preflight: WARN"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("(advisory)"), "{}", text.stdout);
    // Only checks have a severity, and only these two.
    let bad = support::Cli::new(
        "[plugins.s]\ncomponent = \"status_page.wasm\"\nseverity = \"advisory\"\n",
    );
    let o = bad.run(&["check"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr
            .contains("plugins.toml:3:12: severity applies to checks only"),
        "{}",
        o.stderr
    );
}

/// Free and total bytes of the filesystem holding `path`, as the test sees them.
fn statvfs(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs to be written over, and a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
}

/// `files.disk-usage` answers only for granted places, and right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_usage_needs_a_grant() {
    let dep = support::Deployment::new(support::Backend::Embedded).await;
    let ungranted = "[plugins.probe]\ncomponent = \"test_probe.wasm\"\ncommand = true\n";
    let server = dep.start(ungranted, "a").await;
    let out = server
        .command("probe", &["disk", "data-dir"])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"denied""#), "{out}");
    server.stop().await.unwrap();

    let granted = format!("{ungranted}grants = {{ files = [\"data-dir\"] }}\n");
    let server = dep.start(&granted, "a").await;
    let out = server
        .command("probe", &["disk", "data-dir"])
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let detail = doc["detail"].as_str().unwrap_or_else(|| panic!("{out}"));
    let numbers: Vec<u64> = detail
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (free, total) = statvfs(&dep.data_dir("a"));
    assert_eq!(numbers[1], total, "{detail}");
    assert!(
        numbers[0].abs_diff(free) < total / 100,
        "{detail} vs {free}"
    );
    // Under the granted directory is granted; elsewhere is not.
    let sub = dep.data_dir("a").join("db");
    let out = server
        .command("probe", &["disk", sub.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("free "), "{out}");
    let out = server.command("probe", &["disk", "/etc"]).await.unwrap();
    assert!(out.contains(r#""code":"denied""#), "{out}");
    // Nor where a symlink under it leads.
    let out_link = dep.data_dir("a").join("elsewhere");
    std::os::unix::fs::symlink("/etc", &out_link).unwrap();
    let out = server
        .command("probe", &["disk", out_link.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"denied""#), "{out}");
    server.stop().await.unwrap();
}

/// What the embedded backends keep names customers: the data dir, the
/// databases (and their journals) and the outbox's mail are the owner's
/// alone whatever the umask. Before, they were readable by every local user.
#[test]
fn the_data_dir_is_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let cli = support::Cli::new(
        "[plugins.mailer]\ncomponent = \"test_probe.wasm\"\ncommand = true\ngrants = { mail = true }\n",
    );
    for args in [
        &["tenant", "create", "acme", "--demo"][..],
        &["run", "mailer", "mail", "owner@acme.example"],
    ] {
        let o = cli.run(args);
        assert_eq!(o.code, Some(0), "{args:?}: {}{}", o.stdout, o.stderr);
    }
    let data = cli.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in [data.clone(), data.join("db"), data.join("outbox")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let files: Vec<_> = ["db", "outbox"]
        .iter()
        .flat_map(|d| std::fs::read_dir(data.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    let named = |end: &str| {
        files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(end))
            .count()
    };
    assert!(
        named("master.sqlite") == 1 && named("tenant-acme.sqlite") == 1 && named(".eml") == 1,
        "{files:?}"
    );
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

/// Outbox mail (it names customers) is deleted after 30 days, and a
/// temporary file a dead process left after ten minutes, by the tidying
/// `serve` does at start and every ten minutes. Before, the outbox only
/// grew, keeping customers' mail past any retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_outbox_mail_is_deleted() {
    let dep = support::Deployment::new(support::Backend::Embedded).await;
    let outbox = dep.data_dir("a").join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    let planted = [
        ("20250101T000000.000000Z-old.eml", now - day * 31),
        ("20251201T000000.000000Z-recent.eml", now - day * 29),
        (".20251201T000000.000000Z-dead.eml.tmp", now - day),
        ("notes.txt", now - day * 400),
    ];
    for (name, at) in planted {
        let file = std::fs::File::create(outbox.join(name)).unwrap();
        file.set_modified(at).unwrap();
    }
    let server = dep.start("", "a").await;
    let mut left: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["20251201T000000.000000Z-recent.eml", "notes.txt"]);
    server.stop().await.unwrap();
}

/// A job a command queues on the embedded kv would end with the command,
/// unrun: it is refused, naming why. Before, the command was told it was
/// queued.
#[test]
fn a_command_without_redis_queues_nothing() {
    let cli = support::Cli::new(
        "[plugins.queuer]\ncomponent = \"test_probe.wasm\"\ncommand = true\ngrants = { queues = [\"jobs\"] }\n",
    );
    let o = cli.run(&["run", "queuer", "enqueue", "jobs", "{}"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        (&doc["ok"], &doc["code"]),
        (&false.into(), &"conflict".into()),
        "{doc}"
    );
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.starts_with("not queued on \"jobs\": without REDIS_URL the queues live in the serving process's memory"),
        "{message}"
    );
}

/// The shipped `check-disk` passes, warns and fails by its thresholds.
#[test]
fn check_disk_follows_its_thresholds() {
    for (config, status) in [
        (
            "warn_free_percent = \"0\", fail_free_percent = \"0\"",
            "pass",
        ),
        (
            "warn_free_percent = \"101\", fail_free_percent = \"0\"",
            "warn",
        ),
        (
            "warn_free_percent = \"101\", fail_free_percent = \"101\"",
            "fail",
        ),
    ] {
        let cli = support::Cli::new(&format!(
            "[plugins.check-disk]\ncomponent = \"check_disk.wasm\"\ncheck = true\ngrants = {{ files = [\"data-dir\"] }}\nconfig = {{ {config} }}\n"
        ));
        let o = cli.run(&["run", "check-disk", "--json"]);
        let doc: serde_json::Value =
            serde_json::from_str(&o.stdout).unwrap_or_else(|_| panic!("{}{}", o.stdout, o.stderr));
        let check = &doc["data"]["checks"][0];
        assert_eq!(check["status"], status, "{config}: {check}");
        assert!(
            check["detail"].as_str().unwrap().contains("GiB free of"),
            "{check}"
        );
    }
    // A limit of NaN made every comparison false: the check always passed.
    let cli = support::Cli::new(
        "[plugins.check-disk]\ncomponent = \"check_disk.wasm\"\ncheck = true\ngrants = { files = [\"data-dir\"] }\nconfig = { fail_free_percent = \"nan\" }\n",
    );
    let o = cli.run(&["run", "check-disk", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let check = &doc["data"]["checks"][0];
    assert_eq!(check["status"], "fail", "{check}");
    assert_eq!(
        check["detail"], "config fail_free_percent = \"NaN\" is not a finite number",
        "{check}"
    );
}

/// Every message says it is automatic (no out-of-office replies) and has a
/// Message-ID on the sender's domain, through a real SMTP server. A message
/// the server refuses for good (550: no such mailbox) is `invalid`, not
/// `unavailable`: a queue job sending it is not retried into the same 550;
/// refused to one recipient of several, it goes to the rest, and the send
/// says who did not get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_marked_automatic_with_the_senders_domain() {
    let dep = support::Deployment::new(support::Backend::Real).await;
    let server = dep
        .start(
            "[plugins.probe]\ncomponent = \"test_probe.wasm\"\ncommand = true\ngrants = { mail = true }\n",
            "a",
        )
        .await;
    let out = server
        .command("probe", &["mail", "owner@acme.example"])
        .await
        .unwrap();
    assert!(out.contains(r#""ok":true"#), "{out}");
    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 1);
    let headers = mail[0].split("\r\n\r\n").next().unwrap();
    assert!(
        headers.contains("Auto-Submitted: auto-generated"),
        "{headers}"
    );
    let message_id = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap();
    assert!(
        message_id.trim_end().ends_with("@example.com>"),
        "{message_id}"
    );
    let out = server
        .command("probe", &["mail", "unknown@acme.example"])
        .await
        .unwrap();
    assert!(out.contains(r#""code":"invalid""#), "{out}");
    assert!(out.contains("refused the message for good"), "{out}");
    assert_eq!(dep.sent_mail().len(), 1);
    // One stale address in a list: the others still get the message, as
    // it was written (the headers name them all), and the send fails
    // naming who did not. Before, the first refusal ended the send and
    // nobody had it.
    let out = server
        .command(
            "probe",
            &[
                "mail",
                "unknown@acme.example,owner@acme.example,ops@acme.example",
            ],
        )
        .await
        .unwrap();
    assert!(out.contains(r#""code":"invalid""#), "{out}");
    assert!(
        out.contains("for 2 of 3 recipients, not for unknown@acme.example"),
        "{out}"
    );
    let received = dep.smtp.as_ref().unwrap().messages();
    let delivered: Vec<&[String]> = received[1..].iter().map(|m| m.to.as_slice()).collect();
    assert_eq!(
        delivered,
        [["<owner@acme.example>"], ["<ops@acme.example>"]],
        "each once"
    );
    assert!(
        received[1].data.contains("unknown@acme.example") && received[1].data == received[2].data,
        "{}",
        received[1].data
    );
    server.stop().await.unwrap();
}

/// The purge plugin, run by hand.
const PURGE: &str = r#"
[plugins.purge]
component = "purge.wasm"
command = true
grants = { db = ["master", "tenant:*"], kv = ["purge:"], audit = true }
limits = { memory = "64MiB", timeout = "60s" }
config = { batch_size = "50", lock_ttl = "60s" }
"#;

/// Long jobs say how far they are: in a pipe (as here) as log lines on
/// stderr, the first and the last always; on a terminal (a pty from
/// `script`) as a progress bar.
#[test]
fn long_jobs_report_progress() {
    let cli = support::Cli::new(PURGE);
    for name in ["acme", "globex"] {
        let o = cli.run(&["tenant", "create", name, "--demo"]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
    }
    let o = cli.run(&["run", "purge", "--all-tenants", "--dry-run"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("progress:"))
        .collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("progress: tenant acme")
                && l.contains("done=0")
                && l.contains("total=2")),
        "{}",
        o.stderr
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("progress: every tenant done") && l.contains("done=2")),
        "{}",
        o.stderr
    );

    // On a terminal: a bar that ends at 2/2, and no progress log lines.
    let command = format!(
        "{} --manifest {} --data-dir {} run purge --all-tenants --dry-run",
        env!("CARGO_BIN_EXE_neo-ops"),
        cli.dir.path().join("plugins.toml").display(),
        cli.dir.path().join("data").display(),
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("POSTGRES_MASTER_URL")
        .env_remove("REDIS_URL")
        .env_remove("SMTP_HOST")
        .output()
        .expect("script (util-linux) runs a command on a pty");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("purge [") && shown.contains("2/2 every tenant done"),
        "{shown}"
    );
    assert!(!shown.contains("progress:"), "{shown}");
}

/// A plugin that keeps locks and marks in kv is not run on the shared
/// Postgres from a shell without `REDIS_URL`: its lock would be the
/// command's own memory, and a purge or digest a replica runs meanwhile
/// would not see it. Refused before anything is connected.
#[test]
fn a_plugin_with_kv_is_not_run_on_postgres_without_redis() {
    let cli = support::Cli::new(
        "[plugins.probe]\ncomponent = \"test_probe.wasm\"\ncommand = true\n\
         grants = { kv = [\"probe:\"] }\n",
    );
    let out = cli
        .command(&["run", "probe", "log", "1"])
        .env("POSTGRES_MASTER_URL", "postgres://neo@127.0.0.1:1/master")
        .env(
            "POSTGRES_TENANT_DSN_TEMPLATE",
            "postgres://neo@127.0.0.1:1/{tenant}",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "plugin \"probe\" keeps its locks and marks in kv, and with POSTGRES_MASTER_URL set but no REDIS_URL"
        ),
        "{stderr}"
    );
}

/// Mail from `neo-ops@localhost` (the default sender) is junk to most
/// receivers: with an SMTP relay configured, every command that can send
/// mail (`serve`, `run`, `preflight`) warns until `SMTP_FROM` is an address
/// on a real domain.
#[test]
fn a_localhost_sender_is_warned_about() {
    let cli = support::Cli::new("");
    let run = |from: Option<&str>| {
        let mut cmd = cli.command(&["preflight"]);
        cmd.env_remove("POSTGRES_MASTER_URL")
            .env_remove("REDIS_URL")
            .env("SMTP_HOST", "127.0.0.1")
            .env("SMTP_PORT", "2525");
        match from {
            Some(from) => cmd.env("SMTP_FROM", from),
            None => cmd.env_remove("SMTP_FROM"),
        };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = run(None);
    assert!(
        warned.contains("SMTP_FROM is a local address") && warned.contains("neo-ops@localhost"),
        "{warned}"
    );
    let quiet = run(Some("ops@neo.example.com"));
    assert!(!quiet.contains("SMTP_FROM"), "{quiet}");
}

/// `NEO_OPS_PERF_MAP=1` leaves `/tmp/perf-<pid>.map` naming the plugins'
/// compiled functions (also those loaded from the cache), so `perf report`
/// can say where a plugin spends its time; a value other than 1 or 0 is
/// refused.
#[test]
fn perf_map_names_plugin_functions() {
    use std::process::Stdio;
    let cli = support::Cli::new(
        r#"
[plugins.faults]
component = "test_faults.wasm"
command = true
"#,
    );
    // The second run loads the component from the cache the first one filled.
    for _ in 0..2 {
        let child = cli
            .command(&["run", "faults", "ok"])
            .env("NEO_OPS_PERF_MAP", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
        let out = child.wait_with_output().unwrap();
        let text = std::fs::read_to_string(&map);
        let _ = std::fs::remove_file(&map);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"hello\""));
        let text = text.unwrap_or_else(|e| panic!("{}: {e}", map.display()));
        // The project's plugins are stripped: their functions are named by
        // index (a plugin built with its names keeps them in the map).
        assert!(text.contains(" wasm[0]::function["), "{text}");
    }

    let refused = cli
        .command(&["run", "faults", "ok"])
        .env("NEO_OPS_PERF_MAP", "yes")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("NEO_OPS_PERF_MAP \"yes\" is not 1 or 0"),
        "{stderr}"
    );
}

/// `--dry-run` to a plugin that has none (status-page) is refused with exit 1
/// and does nothing: the incident it would have resolved is still active.
#[test]
fn a_dry_run_the_plugin_lacks_is_refused_not_done() {
    let cli = support::Cli::new(
        r#"
[plugins.status-page]
component = "status_page.wasm"
command = true
grants = { db = ["master"], audit = true }
"#,
    );
    let o = cli.run(&["run", "status-page", "start", "Fryers down", "oil"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = cli.run(&["run", "status-page", "resolve", "Fryers down", "--dry-run"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(o.stderr.contains("no dry run"), "{}", o.stderr);
    // Still active: resolving it for real works, and only once.
    let o = cli.run(&["run", "status-page", "resolve", "Fryers down"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = cli.run(&["run", "status-page", "resolve", "Fryers down"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
}

/// A failed run prints `error: …` on stderr; with `--json` it also prints
/// the error envelope HTTP callers get on stdout, so a script piping the
/// output into `jq` sees the failure.
#[test]
fn a_failed_run_with_json_prints_the_envelope() {
    let cli = support::Cli::new(
        r#"
[plugins.owner-digest]
component = "owner_digest.wasm"
command = true
grants = { db = ["master", "tenant:*"], kv = ["digest:"], mail = true }
"#,
    );
    let o = cli.run(&["run", "owner-digest", "--tenant", "nope"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    // (After the warning that this first command made the database.)
    assert_eq!(
        o.stderr.trim().lines().last(),
        Some("error: tenant \"nope\" not found")
    );
    let o = cli.run(&["run", "owner-digest", "--tenant", "nope", "--json"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert_eq!(o.stderr.trim(), "error: tenant \"nope\" not found");
    let envelope: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({"ok": false, "error": {"code": 404, "message": "tenant \"nope\" not found"}})
    );
    // A failure before any plugin runs (no such plugin; a manifest that does
    // not load) is JSON on stdout too when JSON was asked for.
    let o = cli.run(&["run", "nope", "--json"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let envelope: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(envelope["ok"], false);
    assert!(
        envelope["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("no plugin named \"nope\""),
        "{envelope}"
    );
    // It names the plugins there are to run.
    let runs = o.stderr.split("(it runs: ").nth(1).unwrap_or_default();
    assert!(runs.contains("owner-digest"), "{}", o.stderr);
    std::fs::write(
        cli.dir.path().join("plugins.toml"),
        "[plugins.x]\ncomponent = \"missing.wasm\"\n",
    )
    .unwrap();
    let o = cli.run(&["preflight", "--json"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let envelope: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(envelope["ok"], false, "{envelope}");
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
}

/// `queue push` refuses what would be lost or never consumed: a queue no
/// plugin consumes, a payload that is not JSON, and (without Redis) any job,
/// since the in-process kv ends with the command, naming the problem (exit
/// 2 for what the command line got wrong, 1 for Redis). A job for no tenant
/// must say so (exit 2 without `--tenant` or `--no-tenant`); a job pushed
/// is on the audit record.
#[test]
fn queue_push_refuses_jobs_that_would_be_lost() {
    let cli = support::Cli::new(
        r#"
[plugins.probe]
component = "test_probe.wasm"
queue = { name = "jobs", max_attempts = 1 }
grants = { kv = ["probe:"] }
"#,
    );
    let refused = |args: &[&str], code: i32, why: &str| {
        let o = cli.run(args);
        assert_eq!(o.code, Some(code), "{args:?}: {}", o.stdout);
        assert!(o.stderr.contains(why), "{args:?}: {}", o.stderr);
    };
    let o = cli.run(&["queue", "push", "jobs", r#"{"a":1}"#]);
    assert_eq!(o.code, Some(2), "{}", o.stdout);
    assert!(
        o.stderr.contains("--tenant <TENANT>|--no-tenant"),
        "{}",
        o.stderr
    );
    refused(
        &["queue", "push", "jbos", r#"{"a":1}"#, "--no-tenant"],
        2,
        "no plugin consumes queue \"jbos\" (queues in",
    );
    refused(
        &["queue", "push", "jobs", "{a:1", "--no-tenant"],
        2,
        "is not JSON",
    );
    refused(
        &["queue", "push", "jobs", r#"{"a":1}"#, "--no-tenant"],
        1,
        "needs Redis",
    );
    // With Redis: a tenant that does not exist is refused, a real one's job
    // is queued.
    let prefix = format!("neo-test-push-{}:", uuid::Uuid::new_v4().simple());
    let with_redis = |args: &[&str]| {
        let out = cli
            .command(args)
            .env("REDIS_URL", support::REDIS)
            .env("NEO_OPS_KV_PREFIX", &prefix)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(cli.run(&["tenant", "create", "acme"]).code, Some(0));
    let push =
        |tenant: &str| with_redis(&["queue", "push", "jobs", r#"{"a":1}"#, "--tenant", tenant]);
    let (code, _, stderr) = push("acmee");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no tenant named \"acmee\""), "{stderr}");
    let records = || {
        let o = cli.run(&["audit", "verify", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["records"].as_u64().unwrap()
    };
    let before = records();
    let (code, stdout, stderr) = push("acme");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(records(), before + 1, "the push is on record");
    let kv = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let kv = neo_ops::backends::kv::Kv::connect(Some(support::REDIS), &prefix)
            .await
            .unwrap();
        let key = neo_ops::backends::queue::queue_key("jobs");
        let queued = kv.list_len(&key).await.unwrap();
        kv.delete(&key).await.unwrap();
        queued
    });
    assert_eq!(kv, 1, "one job queued: {stdout}");
}

/// `--verbose` on `neo-ops run` shows the plugin's debug lines (each row the
/// reconcile reads), which a run without it keeps quiet.
#[test]
fn verbose_shows_the_plugins_debug_lines() {
    let cli = support::Cli::new(
        r#"
[plugins.stock-kot-reconcile]
component = "stock_kot_reconcile.wasm"
command = true
grants = { files = ["arg:--csv"] }
"#,
    );
    let csv = cli.dir.path().join("report.csv");
    std::fs::write(
        &csv,
        "date,outlet,item,sold_qty,KOT_cnt,variance\n2026-12-01,MG Road,Paneer Tikka,10,4,6\n",
    )
    .unwrap();
    let csv = csv.display().to_string();
    let run = |verbose: bool| {
        let mut args = vec![
            "run",
            "stock-kot-reconcile",
            "--csv",
            &csv,
            "--threshold",
            "5",
        ];
        args.extend(["--dry-run"]);
        if verbose {
            args.push("--verbose");
        }
        cli.run(&args)
    };
    let quiet = run(false);
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("Paneer Tikka"), "{}", quiet.stderr);
    let loud = run(true);
    assert_eq!(loud.code, Some(0), "{}", loud.stderr);
    assert!(
        loud.stderr.contains("DEBUG") && loud.stderr.contains("Paneer Tikka"),
        "{}",
        loud.stderr
    );
}

/// `plugin new` refuses a name whose route (`/<name>`) the host or another
/// plugin already serves, or that a plugin or a plugin crate already has,
/// before writing anything: the manifest or the plugins workspace would
/// otherwise stop loading for every command.
#[test]
fn plugin_new_refuses_a_route_already_served() {
    let cli = support::Cli::new(
        r#"
[plugins.status-page]
component = "status_page.wasm"
routes = [{ method = "GET", path = "/status" }]

[plugins."quoted"]
component = "test_probe.wasm"
command = true
"#,
    );
    let before = std::fs::read_to_string(cli.dir.path().join("plugins.toml")).unwrap();
    for (name, why) in [
        ("status", "already served by plugin \"status-page\""),
        ("healthz", "served by the host"),
        // `plugin new check` with the check's name forgotten.
        ("check", "a check needs a name"),
        // The package name a check's crate has (and its component file):
        // a second crate of one name stops the plugins workspace building.
        ("check-common", "already builds check_common.wasm"),
        ("check-redis", "already builds check_redis.wasm"),
        // Named in the manifest as `[plugins."x"]`, not `[plugins.x]`.
        ("quoted", "already has a plugin named \"quoted\""),
    ] {
        let o = cli.run(&["plugin", "new", name]);
        assert_eq!(o.code, Some(1), "{name}: {}", o.stdout);
        assert!(o.stderr.contains(why), "{name}: {}", o.stderr);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins")
            .join(name);
        assert!(!dir.exists(), "{} was created", dir.display());
    }
    let after = std::fs::read_to_string(cli.dir.path().join("plugins.toml")).unwrap();
    assert_eq!(before, after);
}

/// `neo-ops run <plugin> --help` prints the plugin's usage and runs nothing
/// (exit 0): status-page's `resolve --help` leaves the incident active. It
/// needs no backend: with Postgres and Redis unreachable it still prints,
/// and it makes no data dir. A check takes `--json` only: `--help` says
/// so, and any other argument is refused instead of being ignored while the
/// check runs.
#[test]
fn help_prints_the_usage_and_runs_nothing() {
    let cli = support::Cli::new(&format!(
        "{}\n[plugins.status-page]\ncomponent = \"status_page.wasm\"\ncommand = true\ngrants = {{ db = [\"master\"], audit = true }}\n",
        checks("")
    ));
    let unreachable = cli
        .command(&["run", "status-page", "--help"])
        .env("POSTGRES_MASTER_URL", "postgres://postgres@127.0.0.1:1/neo")
        .env(
            "POSTGRES_TENANT_DSN_TEMPLATE",
            "postgres://postgres@127.0.0.1:1/{tenant}",
        )
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&unreachable.stdout);
    assert_eq!(unreachable.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("usage: status-page start"), "{stdout}");
    assert!(!cli.dir.path().join("data").exists());

    // The first real run says it made a new embedded database.
    let o = cli.run(&["run", "status-page", "start", "Fryers down", "oil"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("no POSTGRES_MASTER_URL: this command made a new embedded database"),
        "{}",
        o.stderr
    );
    for help in ["--help", "-h"] {
        let o = cli.run(&["run", "status-page", "resolve", "Fryers down", help]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        assert!(
            o.stdout.starts_with("usage: status-page start"),
            "{}",
            o.stdout
        );
    }
    let o = cli.run(&["run", "status-page", "resolve", "Fryers down"]);
    assert_eq!(o.code, Some(0), "still active until now: {}", o.stderr);

    let o = cli.run(&["run", "--help"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout
            .contains("Usage: neo-ops run [OPTIONS] <PLUGIN> [ARGS]..."),
        "{}",
        o.stdout
    );
    let o = cli.run(&["run", "check-redis", "--help"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "usage: neo-ops run check-redis [--json] [--verbose] (runs this one preflight check)"
    );
    let o = cli.run(&["run", "check-redis", "--jsn"]);
    assert_eq!(o.code, Some(2), "{}", o.stdout);
    assert!(
        o.stderr.contains("unknown argument \"--jsn\""),
        "{}",
        o.stderr
    );
    // With --json the envelope says so on stdout too.
    let o = cli.run(&["run", "check-redis", "--json", "--bogus"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    let envelope: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(envelope["ok"], false);
    assert_eq!(envelope["error"]["code"], 400);
    // So does a flag neo-ops's own parser refuses, in any command asked for
    // JSON. Before, only clap's text went out, on stderr.
    for args in [
        &["run", "preflight", "--json", "--bogus"][..],
        &["preflight", "--json", "--bogus"],
        &["tenant", "list", "--json", "--bogus"],
    ] {
        let o = cli.run(args);
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("--bogus"), "{args:?}: {}", o.stderr);
        let envelope: serde_json::Value = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {:?}", o.stdout));
        assert_eq!(envelope["ok"], false);
        assert_eq!(envelope["error"]["code"], 400);
        let message = envelope["error"]["message"].as_str().unwrap();
        assert!(message.contains("'--bogus'"), "{message}");
        assert!(!message.starts_with("error"), "{message}");
    }
    // The envelope names what is missing, not only that something is.
    let o = cli.run(&["migrate", "--json"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    let envelope: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        envelope["error"]["message"],
        "the following required arguments were not provided: --dry-run"
    );
    let o = cli.run(&["tenant", "list", "--bogus"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert_eq!(o.stdout, "", "JSON only when asked for");
}

/// `migrate` goes through every tenant: one whose database cannot be
/// migrated (here its file is not SQLite) is named and fails the command,
/// and the tenants after it are still migrated.
#[test]
fn migrate_names_a_failing_tenant_and_goes_on() {
    let cli = support::Cli::new("");
    for name in ["acme", "bravo", "carol"] {
        assert_eq!(cli.run(&["tenant", "create", name]).code, Some(0));
    }
    let db = cli.dir.path().join("data/db");
    std::fs::write(
        db.join("tenant-bravo.sqlite"),
        b"not a database, ".repeat(512),
    )
    .unwrap();
    let o = cli.run(&["migrate"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("master and 2 tenant database(s) migrated"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr
            .contains("error: tenant \"bravo\" was not migrated: "),
        "{}",
        o.stderr
    );
}

/// `migrate --dry-run` lists what each database lacks and what would make
/// `migrate` refuse one, and changes nothing: not a missing master (it is
/// not created), not a tenant behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_dry_run_lists_and_changes_nothing() {
    let cli = support::Cli::new("");
    let db = cli.dir.path().join("data/db");
    let fresh = cli.run(&["migrate", "--dry-run"]);
    assert_eq!(fresh.code, Some(0), "{}", fresh.stderr);
    assert!(
        fresh.stdout.starts_with("master: 4 to apply: 1 init, 2 "),
        "{}",
        fresh.stdout
    );
    assert!(
        fresh.stdout.contains("no master database yet"),
        "{}",
        fresh.stdout
    );
    assert!(!db.join("master.sqlite").exists());
    assert_eq!(cli.run(&["migrate", "--json"]).code, Some(2));
    // The real run says what it applied.
    let migrated = cli.run(&["migrate"]);
    assert_eq!(migrated.code, Some(0), "{}", migrated.stderr);
    assert!(
        migrated.stdout.starts_with("master: applied 1 init, 2 "),
        "{}",
        migrated.stdout
    );
    assert!(
        migrated
            .stdout
            .ends_with("\nmaster and 0 tenant database(s) migrated\n"),
        "{}",
        migrated.stdout
    );

    for name in ["acme", "bravo", "carol"] {
        assert_eq!(cli.run(&["tenant", "create", name]).code, Some(0));
    }
    // A file gone (a partial restore): its record cannot be read.
    std::fs::remove_file(db.join("tenant-carol.sqlite")).unwrap();
    let tenant = async |name: &str| {
        let file = db.join(format!("tenant-{name}.sqlite"));
        sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap()
    };
    let (acme, bravo) = (tenant("acme").await, tenant("bravo").await);
    sqlx::query("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1")
        .execute(&acme)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 2")
        .execute(&bravo)
        .await
        .unwrap();

    let text = tokio::task::block_in_place(|| cli.run(&["migrate", "--dry-run"]));
    assert_eq!(text.code, Some(1), "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "master: up to date",
            "tenant \"acme\": nothing to apply; migrate would fail: migration 1 changed since it was applied",
            "tenant \"bravo\": 1 to apply: 2 orders customer placed",
        ],
        "{}",
        text.stdout
    );
    let unread = format!(
        "tenant \"carol\": not read (reading its migrations: opening {}/tenant-carol.sqlite to read: ",
        db.display()
    );
    assert!(lines[3].starts_with(&unread), "{}", text.stdout);
    assert_eq!(lines[4..], ["dry run: nothing was migrated"]);
    assert!(!db.join("tenant-carol.sqlite").exists());
    let json = tokio::task::block_in_place(|| cli.run(&["migrate", "--dry-run", "--json"]));
    assert_eq!(json.code, Some(1), "{}", json.stderr);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(
        doc["databases"][2],
        serde_json::json!({
            "tenant": "bravo",
            "pending": [{"version": 2, "description": "orders customer placed"}],
            "problem": null,
        })
    );
    assert_eq!(doc["databases"][3]["pending"], serde_json::Value::Null);
    let still_behind: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 2")
            .fetch_one(&bravo)
            .await
            .unwrap();
    assert_eq!(still_behind, 0);
}

/// The commands that only read (`tenant list`, `token list`, `audit
/// verify`, the dry runs of `token revoke`, `tenant set` and a plugin) neither
/// migrate nor make the master: none yet reads as empty, and one behind
/// this build is refused, naming what `migrate` would apply, and left as
/// it was (a newer neo-ops's listing must not leave the older `serve`
/// unable to start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_leave_the_master_as_it_is() {
    let cli = support::Cli::new(PURGE);
    let db = cli.dir.path().join("data/db");
    let empty: [(&[&str], &str); 3] = [
        (&["tenant", "list", "--json"], "[]"),
        (&["token", "list", "--json"], r#"{"tokens":[]}"#),
        (
            &["audit", "verify", "--json"],
            r#"{"records":0,"broken_at":null}"#,
        ),
    ];
    for (read, listed) in empty {
        let out = cli.run(read);
        assert_eq!(out.code, Some(0), "{read:?}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), listed, "{read:?}");
        assert!(out.stderr.contains("nothing to read"), "{}", out.stderr);
    }
    assert!(!db.join("master.sqlite").exists());

    assert_eq!(cli.run(&["tenant", "create", "acme"]).code, Some(0));
    let created = cli.run(&["token", "create", "--role", "admin", "--name", "ops"]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let token_id = created.stdout.trim().split('_').nth(1).unwrap().to_string();
    // The master as an older neo-ops left it: its last migration not
    // applied (its column gone too, so a migration would go through).
    let master_file = format!("sqlite://{}", db.join("master.sqlite").display());
    let master = sqlx::SqlitePool::connect(&master_file).await.unwrap();
    for undo in [
        "DELETE FROM _sqlx_migrations WHERE version = 4",
        "ALTER TABLE digest_sends DROP COLUMN covered_until",
    ] {
        sqlx::query(undo).execute(&master).await.unwrap();
    }
    let reads: [&[&str]; 6] = [
        &["tenant", "list"],
        &["token", "list"],
        &["audit", "verify"],
        &["token", "revoke", &token_id, "--dry-run"],
        &["tenant", "set", "acme", "--plan", "pro", "--dry-run"],
        &["run", "purge", "--tenant", "acme", "--dry-run"],
    ];
    for read in reads {
        let out = tokio::task::block_in_place(|| cli.run(read));
        assert_eq!(out.code, Some(1), "{read:?}: {}", out.stdout);
        assert!(
            out.stderr.contains(
                "the master database is behind this neo-ops: 1 migration(s) to apply \
                 (4 digest covered until); run `neo-ops migrate` first"
            ),
            "{read:?}: {}",
            out.stderr
        );
    }
    let json = tokio::task::block_in_place(|| cli.run(&["token", "list", "--json"]));
    let envelope: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(envelope["ok"], false, "{}", json.stdout);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&master)
        .await
        .unwrap();
    assert_eq!(applied, 3, "a reading command migrated the master");
    // A command that writes still migrates first.
    let revoked = tokio::task::block_in_place(|| cli.run(&["token", "revoke", &token_id]));
    assert_eq!(revoked.code, Some(0), "{}", revoked.stderr);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&master)
        .await
        .unwrap();
    assert_eq!(applied, 4);
    master.close().await;
}

/// The same on Postgres: an unmigrated master is listed and left
/// unmigrated; a tenant behind is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_dry_run_reads_postgres_without_migrating() {
    let dep = Deployment::new(Backend::Real).await;
    let settings = dep.settings("a");
    let cli = support::Cli::new("");
    let dry_run = || {
        let out = tokio::task::block_in_place(|| {
            cli.run_on(&["migrate", "--dry-run", "--json"], &settings)
        });
        assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let pending = |d: &serde_json::Value| {
            let versions = d["pending"].as_array().unwrap().iter();
            versions
                .map(|m| m["version"].as_i64().unwrap())
                .collect::<Vec<_>>()
        };
        let databases = doc["databases"].as_array().unwrap();
        databases
            .iter()
            .map(|d| (d["tenant"].as_str().map(str::to_string), pending(d)))
            .collect::<Vec<_>>()
    };
    let master_url = settings.postgres_master_url.clone().unwrap();
    let migrated = async || support::pg_migrated(&master_url).await;

    assert_eq!(dry_run(), [(None, vec![1, 2, 3, 4])]);
    assert!(!migrated().await);
    let listed = tokio::task::block_in_place(|| cli.run_on(&["tenant", "list"], &settings));
    assert_eq!(listed.code, Some(1), "{}", listed.stdout);
    assert!(
        listed.stderr.contains(
            "the master database is behind this neo-ops: 4 migration(s) to apply (1 init, 2 "
        ),
        "{}",
        listed.stderr
    );
    assert!(!migrated().await, "tenant list migrated the master");

    let created =
        tokio::task::block_in_place(|| cli.run_on(&["tenant", "create", "acme"], &settings));
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    assert!(migrated().await);
    let template = settings.postgres_tenant_dsn_template.clone().unwrap();
    let acme = sqlx::PgPool::connect(&template.replace("{tenant}", "acme"))
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 2")
        .execute(&acme)
        .await
        .unwrap();
    assert_eq!(
        dry_run(),
        [(None, vec![]), (Some("acme".to_string()), vec![2])]
    );
    acme.close().await;
}

/// A command whose reader has gone (`neo-ops tenant list | head -0`) ends
/// quietly on the closed pipe, as Unix tools do: no panic, no message.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let cli = support::Cli::new("");
    assert_eq!(cli.run(&["tenant", "create", "acme"]).code, Some(0));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cli
        .command(&["tenant", "list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
