//! Manifest errors name the file, line and column, and say what is wrong.

use std::path::Path;

fn error_of(text: &str) -> String {
    neo_ops::manifest::parse(text, "plugins.toml", Path::new("."))
        .expect_err("manifest should be rejected")
        .to_string()
}

#[test]
fn golden_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutez = []\n",
            "plugins.toml:3:1: unknown field `routez`",
        ),
        (
            "[plugins.a]\ncomponent = \"missing.wasm\"\n",
            "plugins.toml:2:13: component \"missing.wasm\" not found",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nschedules = [{ cron = \"61 * * * *\" }]\n",
            "plugins.toml:3:23: bad cron \"61 * * * *\":",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nschedules = [{ cron = \"0 20 * * *\", tz = \"Mars/Olympus\" }]\n",
            "plugins.toml:3:42: unknown time zone \"Mars/Olympus\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x\" }]\n\n[plugins.b]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x\" }]\n",
            "plugins.toml:7:36: duplicate route GET /x (already served by plugin \"a\")",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { sockets = true }\n",
            "plugins.toml:3:12: unknown field `sockets`",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { db = [\"everything\"] }\n",
            "plugins.toml:3:18: unknown db grant \"everything\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { http = [\"ftp://x\"] }\n",
            "plugins.toml:3:20: bad http grant \"ftp://x\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nlimits = { memory = \"lots\" }\n",
            "plugins.toml:3:21: bad memory limit \"lots\"",
        ),
        // Below the 3 MiB the project's plugins start with.
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nlimits = { memory = \"2MiB\" }\n",
            "plugins.toml:3:21: bad memory limit \"2MiB\" (e.g. \"32MiB\"; from 4MiB",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x\", role = \"root\" }]\n",
            "plugins.toml:3:49: unknown role \"root\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"POST\", path = \"/x\", max_body = \"3MiB\" }]\n",
            "plugins.toml:3:54: bad max_body \"3MiB\" (e.g. \"64KiB\"; from 1 byte to 2MiB, the host's limit)",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nqueue = { name = \"q\", concurrency = 0 }\n",
            "plugins.toml:3:37: bad concurrency 0 (1 to 32 jobs at once per replica)",
        ),
        (
            "[plugins.Bad_Name]\ncomponent = \"status_page.wasm\"\n",
            "plugins.toml:1:10: plugin name \"Bad_Name\"",
        ),
        ("[plugins.a\n", "plugins.toml:1:11:"),
        // Each of these once passed here and made `serve` panic at start.
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/api/admin/preflight\" }]\n",
            "plugins.toml:3:36: route path \"/api/admin/preflight\" is served by the host",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x/:id\" }]\n",
            "plugins.toml:3:36: path parameter \":id\" in \"/x/:id\" uses the old syntax; write \"{id}\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x/*rest\" }]\n",
            "plugins.toml:3:36: wildcard \"*rest\" in \"/x/*rest\" uses the old syntax; write \"{*rest}\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x/{*rest}/y\" }]\n",
            "plugins.toml:3:36: wildcard \"{*rest}\" in \"/x/{*rest}/y\" must be the last segment",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x/{a}\" }]\n\n[plugins.b]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"POST\", path = \"/x/{b}\" }]\n",
            "plugins.toml:7:37: route \"/x/{b}\" overlaps route \"/x/{a}\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nqueue = { name = \"jobs\" }\n\n[plugins.b]\ncomponent = \"status_page.wasm\"\nqueue = { name = \"jobs\" }\n",
            "plugins.toml:7:18: queue \"jobs\" already has a consumer (plugin \"a\"); a queue has one",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { kv = [\"__lock:\"] }\n",
            "plugins.toml:3:18: kv prefix \"__lock:\" overlaps the host's namespace \"__\"",
        ),
        // Durations carry their unit; a wrong one fails at load, naming the key.
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nconfig = { breaker_cooldown = \"1 hour\" }\n",
            "plugins.toml:3:31: config breaker_cooldown: \"1 hour\" is not a duration",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\nconfig = { lock_ttl_seconds = \"300\" }\n",
            "plugins.toml:3:31: config key \"lock_ttl_seconds\" names a unit; durations carry theirs in the value: lock_ttl = \"30s\"",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { kv = [\"_\"] }\n",
            "plugins.toml:3:18: kv prefix \"_\" overlaps the host's namespace \"__\"",
        ),
        // The host's own settings (credentials among them) stay with it.
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { env = [\"OPS_EMAIL\", \"SMTP_PASS\"] }\n",
            "plugins.toml:3:32: env grant \"SMTP_PASS\" names one of the host's own settings",
        ),
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { env = [\"REDIS_URL\"] }\n",
            "plugins.toml:3:19: env grant \"REDIS_URL\" names one of the host's own settings",
        ),
        // The Postgres driver reads the password from PGPASSWORD.
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { env = [\"PGPASSWORD\"] }\n",
            "plugins.toml:3:19: env grant \"PGPASSWORD\" names one of the host's own settings",
        ),
        // A queue grant names a queue, not the host's keys beside one.
        (
            "[plugins.a]\ncomponent = \"status_page.wasm\"\ngrants = { queues = [\"webhook:processing:host-1\"] }\n",
            "plugins.toml:3:22: bad queue grant \"webhook:processing:host-1\"",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in cases {
        let err = error_of(text);
        if !err.starts_with(expected) {
            wrong.push(format!("expected prefix: {expected}\n     got: {err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// What the manifest accepts, the router serves: routes that share a shape
/// by method, statics beside parameters, a trailing wildcard.
#[test]
fn accepted_routes_build_the_router() {
    let text = "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [\n\
        { method = \"GET\", path = \"/x/{id}\" },\n\
        { method = \"POST\", path = \"/x/{id}\" },\n\
        { method = \"GET\", path = \"/x/static\" },\n\
        { method = \"GET\", path = \"/files/{*rest}\" },\n]\n";
    let m = neo_ops::manifest::parse(text, "plugins.toml", Path::new(".")).unwrap();
    let built = std::panic::catch_unwind(|| neo_ops::triggers::http::routes(m.plugins.iter()));
    assert!(built.is_ok());
}

/// `neo-ops check` refuses what `serve` could not start, naming the place.
#[test]
fn check_refuses_what_serve_cannot_start() {
    let (code, stderr) = check(
        "[plugins.a]\ncomponent = \"status_page.wasm\"\nroutes = [{ method = \"GET\", path = \"/x/{a}\" }, { method = \"POST\", path = \"/x/{b}\" }]\n",
        |_| {},
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("plugins.toml:3:"), "{stderr}");
    assert!(stderr.contains("overlaps route \"/x/{a}\""), "{stderr}");
    // A setting serve would refuse fails check too.
    let (code, stderr) = check(
        "[plugins.a]\ncomponent = \"status_page.wasm\"\n",
        |_| {},
        &[("NEO_OPS_MAX_INSTANCES", "lots")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("NEO_OPS_MAX_INSTANCES \"lots\" is not a number"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_manifest_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let m = neo_ops::manifest::load(&root.join("plugins.toml")).unwrap();
    let status = m.plugins.iter().find(|p| p.name == "status-page").unwrap();
    assert_eq!(status.routes[0].path, "/status.json");
    assert!(status.command);
}

#[test]
fn sizes_and_durations() {
    use neo_ops::manifest::{parse_duration, parse_size};
    use std::time::Duration;
    assert_eq!(parse_size("32MiB"), Some(32 << 20));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("12 parsecs"), None);
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("soon"), None);
}

/// A component whose `run` has another type than this host's (built against
/// another version of the WIT) is refused by `check`, naming the plugin and
/// the function: it used to load, and then fail every invocation.
#[test]
fn a_component_built_against_another_wit_is_refused() {
    let run = "run: func(invocation: invocation) -> result<output, failure>;";
    // The failure a bare string, as another version might have it.
    let component = dummy_plugin(
        |wit| {
            wit.replace(
                run,
                "run: func(invocation: invocation) -> result<output, string>;",
            )
        },
        |_| {},
    );
    let (code, stderr) = check(
        "[plugins.other]\ncomponent = \"other.wasm\"\ncommand = true\n",
        |dir| std::fs::write(dir.join("other.wasm"), component).unwrap(),
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("plugin \"other\""), "{stderr}");
    assert!(
        stderr.contains("has \"run\" of another type than this host's"),
        "{stderr}"
    );
}

/// A component of the `plugin` world that does nothing, built from our WIT
/// as `wit` rewrites it, its core module as `module` patches it.
fn dummy_plugin(wit: impl Fn(String) -> String, module: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};
    let dir = tempfile::tempdir().unwrap();
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    for entry in std::fs::read_dir(&ours).unwrap() {
        let path = entry.unwrap().path();
        let text = wit(std::fs::read_to_string(&path).unwrap());
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let mut resolve = Resolve::new();
    let (package, _) = resolve.push_dir(dir.path()).unwrap();
    let world = resolve.select_world(&[package], Some("plugin")).unwrap();
    let mut core =
        wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    module(&mut core);
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// Sets the initial size of a core module's one memory to `pages` (< 128).
fn set_initial_memory(module: &mut Vec<u8>, pages: u8) {
    let leb = |bytes: &[u8], at: &mut usize| {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let b = bytes[*at];
            *at += 1;
            value |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return value;
            }
        }
    };
    let mut at = 8; // past the magic number and version
    while at < module.len() {
        let start = at;
        let id = module[at];
        at += 1;
        let size = leb(module, &mut at);
        let end = at + size;
        if id == 5 {
            // One memory, no maximum, `pages` at first.
            module.splice(start..end, [5, 3, 1, 0, pages]);
            return;
        }
        at = end;
    }
    panic!("the module has no memory");
}

/// A component that starts with more memory than its `limits.memory` is
/// refused by `check`, naming both: every call of it would have failed.
#[test]
fn a_component_starting_over_its_memory_limit_is_refused() {
    let big = dummy_plugin(|wit| wit, |m| set_initial_memory(m, 80));
    let manifest = |memory: &str| {
        format!(
            "[plugins.big]\ncomponent = \"big.wasm\"\ncommand = true\nlimits = {{ memory = \"{memory}\" }}\n"
        )
    };
    let write = |dir: &Path| std::fs::write(dir.join("big.wasm"), &big).unwrap();
    let (code, stderr) = check(&manifest("4MiB"), write, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("plugin \"big\": component "), "{stderr}");
    assert!(
        stderr.contains("big.wasm starts with 5120 KiB of memory, over its limit of 4096 KiB"),
        "{stderr}"
    );
    let (code, stderr) = check(&manifest("8MiB"), write, &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// `neo-ops check` of `manifest`, written to a fresh directory that
/// `prepare` may add to first, with `env` set: the exit code and stderr.
fn check(
    manifest: &str,
    prepare: impl FnOnce(&Path),
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugins.toml"), manifest).unwrap();
    prepare(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neo-ops"))
        .arg("--manifest")
        .arg(dir.path().join("plugins.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("check")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PROBE: &str = "[plugins.probe]\ncomponent = \"test_probe.wasm\"\ncommand = true\n";

/// A schedule no date matches is how one is parked: accepted, and said by
/// `check` (and by `serve`), not by every command that reads the manifest.
#[test]
fn a_parked_schedule_is_said_by_check_only() {
    let parked = format!("{PROBE}schedules = [{{ cron = \"0 0 31 2 *\", tz = \"UTC\" }}]\n");
    let cli = crate::support::Cli::new(&parked);
    let (code, stderr) = check(&parked, |_| {}, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: plugin \"probe\": the schedule \"0 0 31 2 *\" never fires (no date matches it)"
        ),
        "{stderr}"
    );
    let listed = cli.run(&["token", "list"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(!listed.stderr.contains("never fires"), "{}", listed.stderr);
}

/// The compile cache only saves the next start a compile: when it cannot be
/// written (here its directory is a file; a full disk does the same) the
/// plugins still load, with a warning naming the directory.
#[test]
fn an_unwritable_cache_costs_a_compile_not_the_load() {
    let (code, stderr) = check(
        PROBE,
        |dir| {
            std::fs::create_dir_all(dir.join("data")).unwrap();
            std::fs::write(dir.join("data/cache"), "not a directory").unwrap();
        },
        &[("NEO_OPS_LOG", "warn")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("could not cache a compiled component"),
        "{stderr}"
    );
    assert!(stderr.contains("data/cache"), "{stderr}");
}

/// A log filter that does not parse is said so, not silently replaced.
#[test]
fn a_bad_log_filter_is_reported() {
    let (code, stderr) = check(PROBE, |_| {}, &[("NEO_OPS_LOG", "neo_ops=dbug")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: NEO_OPS_LOG \"neo_ops=dbug\" is not a log filter"),
        "{stderr}"
    );
}
