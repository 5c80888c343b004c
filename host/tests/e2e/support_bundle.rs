//! The support bundle end to end, on both backends: a real unzip reads the
//! archive, every file is there and parses, the tenant's config and audit
//! lines are in it (and no other tenant's), and a canary secret planted in
//! the environment, the database URLs, tenant config and audit details
//! appears in no file.

use crate::support;

use neo_ops::audit_log::{self, NewRecord};
use neo_ops::backends::db::Value;
use neo_ops::manifest::Role;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use support::{Backend, Deployment};
use tokio_util::sync::CancellationToken;

const CANARY: &str = "CANARYq7x2k9";

const MANIFEST: &str = r#"
[plugins.support-bundle]
component = "support_bundle.wasm"
routes = [{ method = "GET", path = "/api/outlet/{tenant}/support/bundle.zip", role = "admin" }]
grants = { db = ["master"], audit = true }
limits = { memory = "64MiB", timeout = "10s" }
"#;

const FILES: [&str; 6] = [
    "config.json",
    "env.txt",
    "health.json",
    "ready.json",
    "recent-logs.txt",
    "version.json",
];

/// Secrets in variables the host reports as environment flags, as the
/// settings read them from the environment at start (not planted in this
/// process's environment: other tests' threads read it meanwhile).
fn env_canaries() -> Vec<(String, String)> {
    vec![
        ("NEO_OPS_API_SECRET".into(), format!("{CANARY}-api")),
        ("SMTP_PASS".into(), format!("{CANARY}-smtp")),
        (
            "NEO_OPS_UPSTREAM_URL".into(),
            format!("https://svc:{CANARY}@upstream.example.com/v1?token={CANARY}&region=in"),
        ),
    ]
}

/// One replica whose database URLs carry the canary as their password
/// (Postgres trust auth ignores it): the host really uses these settings.
struct Replica {
    addr: SocketAddr,
    services: Arc<neo_ops::services::Services>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dep: &Deployment) -> Replica {
    let mut settings = dep.settings("a");
    for url in [
        &mut settings.postgres_master_url,
        &mut settings.postgres_tenant_dsn_template,
    ]
    .into_iter()
    .flatten()
    {
        *url = url.replacen("postgres@", &format!("postgres:{CANARY}@"), 1);
    }
    settings.diagnostic_env.extend(env_canaries());
    let manifest = neo_ops::manifest::load(&dep.manifest(MANIFEST)).expect("manifest");
    let services = neo_ops::services::Services::connect(settings)
        .await
        .expect("services");
    let runtime =
        Arc::new(neo_ops::runtime::Runtime::load(&manifest, services.clone()).expect("runtime"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(neo_ops::server::run(listener, runtime, shutdown.clone()));
    Replica {
        addr,
        services,
        shutdown,
        task,
    }
}

impl Replica {
    async fn get(&self, tenant: &str, token: Option<&str>) -> reqwest::Response {
        let url = format!(
            "http://{}/api/outlet/{tenant}/support/bundle.zip",
            self.addr
        );
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// acme: config with a secret flag, 206 audit records (the last one full of
/// secrets); globex: records of its own. Returns the API token planted in
/// acme's details.
async fn seed(replica: &Replica) -> String {
    let db = &replica.services.db;
    db.create_tenant("acme", "Acme Diner").await.unwrap();
    db.create_tenant("globex", "Globex Grill").await.unwrap();
    db.create_tenant("initech", "Initech Cafe").await.unwrap();
    let master = db.master();
    master
        .execute(
            "UPDATE tenants SET plan = 'pro', feature_flags = $1, limits = $2 WHERE name = 'acme'",
            &[
                Value::Json(
                    json!({"kds": true, "loyalty": false, "webhook_secret": CANARY}).to_string(),
                ),
                Value::Json(
                    json!({"max_outlets": 3, "api_keys": 2, "webhook_secret": CANARY, "signing_secret": 83920174, "kiosk_pass": 4821})
                        .to_string(),
                ),
            ],
        )
        .await
        .unwrap();

    let record = |tenant: &str, action: String, details: serde_json::Value| NewRecord {
        actor: "oncall".into(),
        action,
        target: format!("{tenant}/order/7"),
        tenant: Some(tenant.into()),
        request_id: Some("req-1".into()),
        plugin: Some("support-console".into()),
        details,
    };
    for i in 0..205 {
        let r = record("acme", format!("seed.{i:03}"), json!({"n": i}));
        audit_log::append(master, r).await.unwrap();
    }
    for i in 0..3 {
        let r = record("globex", format!("globex.only.{i}"), json!({}));
        audit_log::append(master, r).await.unwrap();
    }
    let api_token = neo_ops::auth::create_token(master, Role::Admin, "rotated")
        .await
        .unwrap();
    let secrets = json!({
        "callback": format!("https://hooks.example.com/cb?id=7&token={CANARY}"),
        "password": CANARY,
        "dsn": format!("postgres://neo:{CANARY}@db.internal/acme"),
        "note": format!("rotated {api_token} after the incident"),
        "payload": json!({"api_key": CANARY, "order": 7}).to_string(),
        "customer": "bad address \"priya.s@example.in\"",
    });
    let r = record("acme", "webhook.replay".into(), secrets);
    audit_log::append(master, r).await.unwrap();
    api_token
}

/// Extracts with the system's Info-ZIP `unzip` after `unzip -t` and Python's
/// `zipfile` (a second, independent reader) have checked every entry's CRC.
fn unzip(zip: &[u8], dir: &Path) {
    let path = dir.join("bundle.zip");
    std::fs::write(&path, zip).unwrap();
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             bad = z.testzip()\n\
             assert bad is None, f'bad CRC in {bad}'\n\
             print(len(z.namelist()))",
        ])
        .arg(&path)
        .output()
        .expect("python3 is installed");
    assert!(
        python.status.success(),
        "python zipfile: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&python.stdout).trim(),
        FILES.len().to_string(),
        "python zipfile sees every entry"
    );
    let test = std::process::Command::new("unzip")
        .arg("-t")
        .arg(&path)
        .output()
        .expect("unzip is installed");
    assert!(
        test.status.success(),
        "unzip -t: {}",
        String::from_utf8_lossy(&test.stdout)
    );
    let out = dir.join("out");
    let status = std::process::Command::new("unzip")
        .arg("-q")
        .arg(&path)
        .arg("-d")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
}

async fn bundle_is_complete_and_leaks_nothing(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let replica = start(&dep).await;
    let api_token = seed(&replica).await;
    let master = replica.services.db.master().clone();
    let admin = neo_ops::auth::create_token(&master, Role::Admin, "support-lead")
        .await
        .unwrap();

    // No token: the spec's 403, exactly.
    let resp = replica.get("acme", None).await;
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"ok":false,"error":{"code":403,"message":"forbidden"}}"#
    );
    let resp = replica.get("nosuch", Some(&admin)).await;
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"ok":false,"error":{"code":404,"message":"tenant not found"}}"#
    );

    // A first download leaves a host log line in acme's ring; a line with
    // a secret in it is masked on the way in.
    assert_eq!(replica.get("acme", Some(&admin)).await.status(), 200);
    replica.services.tenant_logs.push(
        "acme",
        &format!("probe https://x.example/?token={CANARY} for guest.name@example.com"),
    );
    let resp = replica.get("acme", Some(&admin)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("content-type"), "application/zip");
    assert_eq!(
        header("content-disposition"),
        r#"attachment; filename="support-acme.zip""#
    );
    let zip = resp.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    unzip(&zip, dir.path());

    let out = dir.path().join("out");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, FILES);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let parse = |name: &str| -> serde_json::Value {
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    // Not one byte of any secret, in any file or in the archive itself.
    for name in FILES {
        let text = read(name);
        assert!(!text.contains(CANARY), "{name} leaks the canary:\n{text}");
        assert!(!text.contains(&api_token), "{name} leaks an API token");
    }
    let raw = String::from_utf8_lossy(&zip);
    assert!(!raw.contains(CANARY) && !raw.contains(&api_token));

    // env.txt: sorted NAME=value lines, secrets masked, the rest readable.
    let env = read("env.txt");
    let lines: Vec<&str> = env.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(lines.iter().all(|l| l.contains('=')), "{env}");
    assert!(lines.contains(&"NEO_OPS_API_SECRET=****"), "{env}");
    assert!(lines.contains(&"SMTP_PASS=****"), "{env}");
    let upstream = lines
        .iter()
        .find(|l| l.starts_with("NEO_OPS_UPSTREAM_URL="))
        .unwrap_or_else(|| panic!("{env}"));
    // The host shows an unknown URL's origin only: paths and queries often
    // carry tokens.
    assert_eq!(
        *upstream,
        "NEO_OPS_UPSTREAM_URL=https://****@upstream.example.com/****"
    );
    assert!(lines.contains(&format!("NEO_OPS_KV_PREFIX={}", dep.kv_prefix()).as_str()));
    if backend == Backend::Real {
        let pg = lines
            .iter()
            .find(|l| l.starts_with("POSTGRES_MASTER_URL="))
            .unwrap_or_else(|| panic!("{env}"));
        assert!(pg.contains("@127.0.0.1:5432/neo_t_"), "{pg}");
        // The template says where tenants live, as the host shows it,
        // though its name holds "DSN".
        let template = lines
            .iter()
            .find(|l| l.starts_with("POSTGRES_TENANT_DSN_TEMPLATE="))
            .unwrap_or_else(|| panic!("{env}"));
        assert!(template.contains("127.0.0.1:5432/"), "{template}");
        assert!(template.contains("{tenant}"), "{template}");
    }

    assert!(parse("health.json").is_object());
    assert_eq!(parse("ready.json")["status"], "ready");
    let version = parse("version.json");
    for key in ["version", "git_sha", "build_time", "built_at"] {
        assert!(
            version[key].as_str().is_some_and(|v| !v.is_empty()),
            "{version}"
        );
    }

    let config = parse("config.json");
    assert_eq!(config["name"], "acme");
    assert_eq!(config["display_name"], "Acme Diner");
    assert_eq!(config["plan"], "pro");
    assert_eq!(config["time_zone"], "Asia/Kolkata");
    assert_eq!(
        config["feature_flags"],
        json!({"kds": true, "loyalty": false, "webhook_secret": "****"})
    );
    // A limit's count stays, under a key that looks secret too; a number
    // under another secret-looking key does not, a `pass` (no plural) too.
    assert_eq!(
        config["limits"],
        json!({"max_outlets": 3, "api_keys": 2, "webhook_secret": "****", "signing_secret": "****", "kiosk_pass": "****"})
    );

    // recent-logs.txt: acme's host log lines (the first download, the
    // probe), then its last 200 records, oldest first; none of globex's.
    let logs = read("recent-logs.txt");
    let (host, audit) = logs.split_once("\n\n").unwrap_or_else(|| panic!("{logs}"));
    let host: Vec<&str> = host.lines().collect();
    assert_eq!(
        host[0],
        r#"# Host log lines for tenant "acme" (this replica, oldest first): 2"#
    );
    assert!(
        host[1].contains("support-bundle (http) status 200 in ") && host[1].contains("request_id="),
        "{logs}"
    );
    assert!(
        host[2].ends_with("probe https://x.example/?token=**** for ****@example.com"),
        "{logs}"
    );
    let mut audit = audit.lines();
    assert_eq!(
        audit.next(),
        Some(r#"# Audit records for tenant "acme" (the last 200 at most, oldest first): 200"#)
    );
    let lines: Vec<&str> = audit.collect();
    assert_eq!(lines.len(), 200, "{logs}");
    assert!(!logs.contains("globex"), "{logs}");
    // The first download's own record is the newest of the 200.
    assert!(!logs.contains("seed.006") && lines[0].contains(r#"action="seed.007""#));
    assert!(
        lines[199].contains(r#"action="support.bundle""#),
        "{}",
        lines[199]
    );
    let ids: Vec<i64> = lines
        .iter()
        .map(|l| {
            let id = l.split(" #").nth(1).and_then(|r| r.split(' ').next());
            id.and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("{l}"))
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert!(lines.iter().all(|l| l.contains(r#"tenant="acme""#)));
    let last = lines[198];
    for expected in [
        r#"action="webhook.replay""#,
        r#"actor="oncall""#,
        r#"plugin="support-console""#,
        r#""password":"****""#,
        "token=****",
        r#""dsn":"****""#,
        "rotated **** after",
        r#"bad address \"****@example.in\""#,
    ] {
        assert!(last.contains(expected), "{expected} missing in {last}");
    }
    assert!(
        !logs.contains("priya") && !logs.contains("guest.name"),
        "{logs}"
    );

    // A HEAD answers as a download would, with no body and no record.
    let url = format!("http://{}/api/outlet/acme/support/bundle.zip", replica.addr);
    let head = reqwest::Client::new()
        .head(url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/zip");
    // No length rather than a false `0`: a download is not empty.
    assert_eq!(head.headers().get("content-length"), None);

    // The download is on the record, under the token's name; the refused
    // requests (and the HEAD) are not.
    let rows = master
        .query(
            "SELECT actor, target, tenant, details FROM audit_log WHERE action = 'support.bundle' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let row = &rows.rows[1];
    assert_eq!(row[0], Value::Text("support-lead".into()));
    assert_eq!(row[1], Value::Text("acme".into()));
    assert_eq!(row[2], Value::Text("acme".into()));
    let details: serde_json::Value = match &row[3] {
        Value::Text(s) | Value::Json(s) => serde_json::from_str(s).unwrap(),
        other => panic!("details: {other:?}"),
    };
    assert_eq!(details["files"].as_array().unwrap().len(), 6);
    assert_eq!(rows.rows.len(), 2, "both downloads are on the record");
    assert_eq!(details["audit_records"], 200);
    assert_eq!(details["bytes"], zip.len());
    assert!(
        audit_log::verify(&master)
            .await
            .unwrap()
            .broken_at
            .is_none()
    );

    // A tenant with neither log lines nor audit records is told so.
    let resp = replica.get("initech", Some(&admin)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    unzip(&bytes, dir.path());
    let logs = std::fs::read_to_string(dir.path().join("out/recent-logs.txt")).unwrap();
    assert_eq!(
        logs,
        "No host log lines and no audit records for tenant \"initech\" yet.\n"
    );

    replica.stop().await;
}

on_both_backends!(support_bundle, bundle_is_complete_and_leaks_nothing);
