//! The end-to-end suite, one binary: the real `neo-ops` server and CLI with
//! real plugins, on the embedded backends and on real Postgres, Redis and
//! SMTP (see `support`). One module per area, one `#[tokio::test]` per
//! behaviour. Every `.rs` file beside this one must be declared below; the
//! `every_module_is_declared` test fails otherwise, so a new file never
//! silently goes unrun.

#[macro_use]
mod support;

mod console;
mod csp_reports;
mod dlq_webhooks;
mod emit_test_alert;
mod hardening;
mod manifest;
mod metrics;
mod operator;
mod owner_digest;
mod preflight;
mod purge;
mod reload;
mod sandbox;
mod status_page;
mod stock_kot_reconcile;
mod support_bundle;
mod tenants_audit;
mod triggers;
mod web_console;

#[test]
fn every_module_is_declared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let main = std::fs::read_to_string(dir.join("main.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs")
            && module != "main"
            && !main.contains(&format!("\nmod {module};\n"))
        {
            missing.push(module.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "not declared in tests/e2e/main.rs: {missing:?}"
    );
}
