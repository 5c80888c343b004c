//! The operator's loop against a server that keeps running: a new check
//! scaffolded, edited, built and live in the preflight with no restart; a
//! broken manifest edit keeping the old set serving and saying why; a start
//! whose plugins cannot load answering 503 until they can.

use neo_ops::manifest::Role;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Backend, Deployment};

const REDIS_CHECK: &str = r#"
[plugins.check-redis]
component = "check_redis.wasm"
check = true
grants = { kv = ["preflight:"] }
"#;

/// A server started with `run_watching` on a manifest file the test edits.
struct Watched {
    addr: std::net::SocketAddr,
    services: std::sync::Arc<neo_ops::services::Services>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
    token: String,
}

impl Watched {
    async fn start(dep: &Deployment, manifest: &Path) -> Self {
        let services = neo_ops::services::Services::connect(dep.settings("a"))
            .await
            .unwrap();
        let token = neo_ops::auth::create_token(services.db.master(), Role::Admin, "oncall")
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(neo_ops::server::run_watching(
            listener,
            manifest.to_path_buf(),
            services.clone(),
            shutdown.clone(),
        ));
        Self {
            addr,
            services,
            shutdown,
            task,
            http: reqwest::Client::new(),
            token,
        }
    }

    /// Starts and waits until the first plugin set is live.
    async fn ready(dep: &Deployment, manifest: &Path) -> Self {
        let server = Self::start(dep, manifest).await;
        server
            .until(
                "/readyz",
                Duration::from_secs(30),
                "the first set loads",
                |s, _| s == 200,
            )
            .await;
        server
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Polls `path` until `done` holds; panics with `what` after `limit`.
    async fn until(
        &self,
        path: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> (u16, serde_json::Value) {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get(path).await;
            if done(status, &body) {
                return (status, body);
            }
            assert!(Instant::now() < deadline, "{what}: last {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn check_names(preflight: &serde_json::Value) -> Vec<String> {
    preflight["data"]["checks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the scaffolded crate and restores the workspace lock file, even
/// when the test fails half-way.
struct Scaffold {
    dir: PathBuf,
    lock: PathBuf,
    lock_text: String,
}

impl Drop for Scaffold {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::write(&self.lock, &self.lock_text);
    }
}

fn cli(manifest: &Path, data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neo-ops"))
        .arg("--manifest")
        .arg(manifest)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_rust_check_goes_live_without_a_restart() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = dep.manifest(REDIS_CHECK);
    let server = Watched::ready(&dep, &manifest).await;
    let (_, before) = server.get("/api/admin/preflight").await;
    assert_eq!(check_names(&before), ["check-redis"]);

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let name = format!("live{}", &dep.id[..8]);
    let lock = root.join("plugins/Cargo.lock");
    let _scaffold = Scaffold {
        dir: root.join("plugins/checks").join(&name),
        lock_text: std::fs::read_to_string(&lock).unwrap(),
        lock,
    };
    let data = dep.dir.path().join("cli-data");
    let started = Instant::now();
    let (ok, out, err) = cli(&manifest, &data, &["plugin", "new", "check", &name]);
    assert!(ok, "{out}{err}");
    let scaffolded = started.elapsed();
    let plugin = format!("check-{name}");
    // Built before the manifest named it: the scaffold itself goes live.
    let detail = |b: &serde_json::Value| {
        b["data"]["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == plugin.as_str()))
            .map(|c| c["detail"].clone())
    };
    server
        .until(
            "/api/admin/preflight",
            Duration::from_secs(30),
            "the scaffold is served",
            |_, b| detail(b) == Some(serde_json::json!("all good")),
        )
        .await;
    // The one function an operator edits.
    let lib = root.join("plugins/checks").join(&name).join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        text.replace("pass(\"all good\")", "pass(\"live from the edit loop\")"),
    )
    .unwrap();
    let edited = Instant::now();
    let (ok, out, err) = cli(&manifest, &data, &["plugin", "build", &plugin]);
    assert!(ok, "{out}{err}");
    assert!(out.trim().ends_with(&format!("check_{name}.wasm")), "{out}");
    let built = edited.elapsed();
    let (_, live) = server
        .until(
            "/api/admin/preflight",
            Duration::from_secs(30),
            "the edited check is served",
            |_, b| detail(b) == Some(serde_json::json!("live from the edit loop")),
        )
        .await;
    let to_live = edited.elapsed();
    let check = live["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == plugin.as_str())
        .unwrap();
    assert_eq!(
        (&check["status"], &check["detail"]),
        (
            &serde_json::json!("pass"),
            &serde_json::json!("live from the edit loop")
        )
    );
    let lines = std::fs::read_to_string(&lib).unwrap().lines().count()
        + std::fs::read_to_string(&manifest).unwrap().lines().count()
        - REDIS_CHECK.lines().count();
    eprintln!(
        "edit loop (rust): scaffold {:.1}s, build {:.1}s, edit to live {:.1}s, {lines} lines",
        scaffolded.as_secs_f64(),
        built.as_secs_f64(),
        to_live.as_secs_f64()
    );

    // A broken edit: the set keeps serving, /readyz says why and where.
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{good}\n[plugins.oops\n")).unwrap();
    let (status, ready) = server
        .until(
            "/readyz",
            Duration::from_secs(10),
            "the refusal is reported",
            |_, b| b["checks"]["plugins"]["error"].is_string(),
        )
        .await;
    assert_eq!(status, 200, "the old set still serves: {ready}");
    let why = ready["checks"]["plugins"]["error"].as_str().unwrap();
    assert!(why.contains("plugins.toml:") && why.contains(':'), "{why}");
    let (status, still) = server.get("/api/admin/preflight").await;
    assert_eq!(status, 200);
    assert_eq!(check_names(&still).len(), 2);
    // Fixed again: the error clears.
    std::fs::write(&manifest, &good).unwrap();
    server
        .until(
            "/readyz",
            Duration::from_secs(10),
            "the fix is loaded",
            |s, b| s == 200 && b["checks"]["plugins"]["error"].is_null(),
        )
        .await;
    // A save cut short (the file emptied): the serving set stays.
    std::fs::write(&manifest, "").unwrap();
    let (status, ready) = server
        .until(
            "/readyz",
            Duration::from_secs(10),
            "the empty manifest is refused",
            |_, b| b["checks"]["plugins"]["error"].is_string(),
        )
        .await;
    assert_eq!(status, 200, "{ready}");
    let why = ready["checks"]["plugins"]["error"].as_str().unwrap();
    assert!(why.contains("names no plugin; the 2 serving stay"), "{why}");
    let (_, still) = server.get("/api/admin/preflight").await;
    assert_eq!(check_names(&still).len(), 2);
    std::fs::write(&manifest, good).unwrap();
    server
        .until(
            "/readyz",
            Duration::from_secs(10),
            "the manifest is back",
            |s, b| s == 200 && b["checks"]["plugins"]["error"].is_null(),
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_answer_503_until_a_good_set_loads() {
    let dep = Deployment::new(Backend::Embedded).await;
    // A component that is not WebAssembly: the set cannot load.
    std::fs::write(dep.dir.path().join("broken.wasm"), b"not wasm").unwrap();
    let manifest = dep.manifest(
        "[plugins.status-page]\ncomponent = \"broken.wasm\"\nroutes = [{ method = \"GET\", path = \"/status.json\" }]\ngrants = { db = [\"master\"] }\n",
    );
    // An artefact no component uses any more (a plugin rebuilt since).
    let cache = dep.data_dir("a").join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let stale = cache.join(format!("{}-0123456789abcdef.cwasm", "ab".repeat(32)));
    std::fs::write(&stale, b"stale").unwrap();
    let server = Watched::start(&dep, &manifest).await;
    let (status, ready) = server
        .until(
            "/readyz",
            Duration::from_secs(10),
            "the failure is reported",
            |_, b| b["checks"]["plugins"]["error"].is_string(),
        )
        .await;
    assert_eq!(status, 503, "{ready}");
    let resp = server
        .http
        .get(format!("http://{}/status.json", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    // /healthz answers all along.
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    // Fix the manifest: the set loads and the route serves.
    std::fs::write(
        &manifest,
        "[plugins.status-page]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/status.json\" }]\ngrants = { db = [\"master\"] }\n",
    )
    .unwrap();
    let (_, status_doc) = server
        .until(
            "/status.json",
            Duration::from_secs(30),
            "the fixed set serves",
            |s, _| s == 200,
        )
        .await;
    assert_eq!(status_doc["state"], "operational");
    // Loading the set evicted what it does not use, and kept what it does.
    assert!(!stale.exists(), "the stale artefact was evicted");
    let kept = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(kept, 1, "status_page's artefact stays");
    server.stop().await;
    support::ensure_plugins_built();
}

/// Removes a scaffolded Python check (and `plugins/python` when it empties).
struct PythonScaffold(PathBuf);

impl Drop for PythonScaffold {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The same loop in Python (componentize-py, pinned in `.ci/run`): a check
/// scaffolded, edited, built and live with no restart; then made to raise,
/// and its exception text is the check's detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_python_check_goes_live_without_a_restart() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = dep.manifest(REDIS_CHECK);
    let server = Watched::ready(&dep, &manifest).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let name = format!("py{}", &dep.id[..8]);
    let app_dir = root.join("plugins/python").join(format!("check_{name}"));
    let _scaffold = PythonScaffold(app_dir.clone());
    let data = dep.dir.path().join("cli-data");
    let (ok, out, err) = cli(
        &manifest,
        &data,
        &["plugin", "new", "check", &name, "--lang", "python"],
    );
    assert!(ok, "{out}{err}");
    let app = app_dir.join("app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, text.replace("\"all good\"", "\"live from python\"")).unwrap();
    let edited = Instant::now();
    let plugin = format!("check-{name}");
    let (ok, out, err) = cli(&manifest, &data, &["plugin", "build", &plugin]);
    assert!(
        ok,
        "componentize-py must be installed (pip install componentize-py==0.25.1): {out}{err}"
    );
    let built = edited.elapsed();
    let detail_of = |b: &serde_json::Value| {
        b["data"]["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == plugin.as_str()))
            .map(|c| {
                (
                    c["status"].clone(),
                    c["detail"].as_str().unwrap_or("").to_string(),
                )
            })
    };
    let (_, live) = server
        .until(
            "/api/admin/preflight",
            Duration::from_secs(120),
            "the edited python check is served",
            |_, b| detail_of(b).is_some_and(|(_, d)| d == "live from python"),
        )
        .await;
    let to_live = edited.elapsed();
    assert_eq!(
        detail_of(&live),
        Some((serde_json::json!("pass"), "live from python".to_string()))
    );
    let lines = std::fs::read_to_string(&app).unwrap().lines().count() + 4;
    eprintln!(
        "edit loop (python): build {:.1}s, edit to live {:.1}s, {lines} lines",
        built.as_secs_f64(),
        to_live.as_secs_f64()
    );

    // With a single instance slot, the pool still fits a Python component
    // (14 core instances): admission's one slot is a slot the pool can fill.
    let one_slot = std::process::Command::new(env!("CARGO_BIN_EXE_neo-ops"))
        .arg("--manifest")
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .args(["run", &plugin])
        .env("NEO_OPS_MAX_INSTANCES", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&one_slot.stdout),
        String::from_utf8_lossy(&one_slot.stderr),
    );
    assert!(one_slot.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("live from python"), "{stdout}{stderr}");

    // A check that raises: its exception is the detail.
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(
        &app,
        text.replace(
            "        healthy = True\n",
            "        raise ValueError(\"the backup volume is not mounted\")\n",
        ),
    )
    .unwrap();
    let (ok, out, err) = cli(&manifest, &data, &["plugin", "build", &plugin]);
    assert!(ok, "{out}{err}");
    let (_, raised) = server
        .until(
            "/api/admin/preflight",
            Duration::from_secs(120),
            "the raising check is served",
            |_, b| detail_of(b).is_some_and(|(s, _)| s == "fail"),
        )
        .await;
    let (_, detail) = detail_of(&raised).unwrap();
    assert!(
        detail.ends_with("ValueError: the backup volume is not mounted"),
        "{detail}"
    );
    server.stop().await;
}

/// A reload while a queue job runs: the new set's consumer starts only once
/// the old one has finished that job, so it runs once, not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_never_runs_a_running_job_twice() {
    let dep = Deployment::new(Backend::Embedded).await;
    let text = "[plugins.probe]\ncomponent = \"test_probe.wasm\"\nqueue = { name = \"jobs\", max_attempts = 3 }\ngrants = { kv = [\"probe:\"] }\n";
    let manifest = dep.manifest(text);
    let server = Watched::ready(&dep, &manifest).await;
    let kv = &server.services.kv;
    neo_ops::backends::queue::enqueue(kv, "jobs", None, "sleep:1500")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A manifest edit mid-job: the set reloads.
    std::fs::write(&manifest, format!("{text}# edited\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while kv.get("probe:job:sleep:1500").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the job never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a second run to have finished too, had one started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(kv.get("probe:job:sleep:1500").await.unwrap().unwrap(), b"1");
    let dead = neo_ops::backends::queue::dead_letters(kv, "jobs", 10, usize::MAX)
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    server.stop().await;
}

/// A copy of a component beside the manifest is what the manifest loads, so
/// `plugin build` says that the component it just built is not the one in
/// use (a running `serve` would never pick the build up).
#[test]
fn a_build_shadowed_by_a_copy_beside_the_manifest_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("plugins.toml");
    std::fs::write(
        &manifest,
        "[plugins.probe]\ncomponent = \"test_probe.wasm\"\ncommand = true\n",
    )
    .unwrap();
    let (ok, out, err) = cli(
        &manifest,
        &dir.path().join("data"),
        &["plugin", "build", "probe"],
    );
    assert!(ok, "{out}{err}");
    assert!(!err.contains("warning:"), "{err}");
    let built = out.trim();
    std::fs::copy(built, dir.path().join("test_probe.wasm")).unwrap();
    let (ok, out, err) = cli(
        &manifest,
        &dir.path().join("data"),
        &["plugin", "build", "probe"],
    );
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("warning: plugin \"probe\"") && err.contains("not the component just built"),
        "{err}"
    );
}

/// A reload while a long job runs on one queue holds up only that queue:
/// the new set's consumer of another queue starts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_job_on_one_queue_holds_up_no_other_after_a_reload() {
    let dep = Deployment::new(Backend::Embedded).await;
    let text = "[plugins.slow]\ncomponent = \"test_probe.wasm\"\nqueue = { name = \"slow\" }\ngrants = { kv = [\"probe:\"] }\n\n\
                [plugins.fast]\ncomponent = \"test_probe.wasm\"\nqueue = { name = \"fast\" }\ngrants = { kv = [\"probe:\"] }\n";
    let manifest = dep.manifest(text);
    let server = Watched::ready(&dep, &manifest).await;
    let kv = &server.services.kv;
    neo_ops::backends::queue::enqueue(kv, "slow", None, "sleep:6000")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The edit gives `fast` a route, which says when the new set serves.
    std::fs::write(
        &manifest,
        text.replace(
            "queue = { name = \"fast\" }",
            "queue = { name = \"fast\" }\nroutes = [{ method = \"GET\", path = \"/fast\" }]",
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/fast").await.0 == 404 {
        assert!(Instant::now() < deadline, "the edited set never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    neo_ops::backends::queue::enqueue(kv, "fast", None, "quick")
        .await
        .unwrap();
    while kv.get("probe:job:quick").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the fast job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        kv.get("probe:job:sleep:6000").await.unwrap().is_none(),
        "the fast queue waited for the slow job"
    );
    while kv.get("probe:job:sleep:6000").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the slow job never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// A manifest replaced by one of the same length with its old modification
/// time kept (`cp -p`, `rsync -t`, an unpacked archive) is still picked up:
/// its inode and status-change time moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_that_keeps_length_and_mtime_is_still_reloaded() {
    let dep = Deployment::new(Backend::Embedded).await;
    let body = |path: &str| {
        format!(
            "[plugins.status-page]\ncomponent = \"status_page.wasm\"\nroutes = [{{ method = \"GET\", path = \"{path}\" }}]\ngrants = {{ db = [\"master\"] }}\n"
        )
    };
    let manifest = dep.manifest(&body("/status.json"));
    let server = Watched::ready(&dep, &manifest).await;
    let (status, _) = server.get("/status.json").await;
    assert_eq!(status, 200);
    let modified = std::fs::metadata(&manifest).unwrap().modified().unwrap();
    let copy = manifest.with_extension("copy");
    std::fs::write(&copy, body("/statuz.json")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::rename(&copy, &manifest).unwrap();
    let meta = std::fs::metadata(&manifest).unwrap();
    assert_eq!(meta.modified().unwrap(), modified);
    assert_eq!(meta.len() as usize, body("/status.json").len());
    server
        .until(
            "/statuz.json",
            Duration::from_secs(30),
            "the copied manifest loads",
            |s, _| s == 200,
        )
        .await;
    let (status, _) = server.get("/status.json").await;
    assert_eq!(status, 404, "the old route went with the old set");
    server.stop().await;
}

/// A component served from the build directory is replaced by a file of
/// its name dropped beside the manifest (looked up first): that is noticed
/// and loaded. Before, only the build's file was watched, so `serve` kept
/// the old code while `neo-ops check` reported the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_dropped_beside_the_manifest_is_loaded() {
    let dep = Deployment::new(Backend::Embedded).await;
    let manifest = dep.manifest(
        "[plugins.faults]\ncomponent = \"test_faults.wasm\"\nroutes = [{ method = \"GET\", path = \"/faults/{mode}\" }]\n",
    );
    let server = Watched::ready(&dep, &manifest).await;
    let (status, body) = server.get("/faults/ok").await;
    assert_eq!(
        (status, &body["hello"]),
        (200, &serde_json::json!("world")),
        "{body}"
    );
    let built = neo_ops::manifest::built_plugins_dir().join("test_probe.wasm");
    let beside = manifest.parent().unwrap().join("test_faults.wasm");
    std::fs::copy(built, beside).unwrap();
    server
        .until(
            "/faults/ok",
            Duration::from_secs(30),
            "the component beside the manifest loads",
            |_, body| body.to_string().contains("unknown probe"),
        )
        .await;
    server.stop().await;
}
