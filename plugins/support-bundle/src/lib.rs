//! Support bundle (spec "Support Bundle"):
//! `GET /api/outlet/{tenant}/support/bundle.zip` answers a ZIP with
//! `env.txt`, `health.json`, `ready.json`, `version.json`,
//! `recent-logs.txt` and `config.json` for one tenant, every file redacted.
//! Each download is audited (`support.bundle`), and a bundle is only handed
//! out once its audit record is written.

mod archive;
mod contents;

use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{
    Failure, HttpRequest, Invocation, Output, Plugin, audit, host_info, reply, time,
};

use contents::TenantConfig;

struct SupportBundle;

impl Plugin for SupportBundle {
    fn http(inv: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let tenant = inv.tenant.as_deref().unwrap_or_default();
        let Some(config) = contents::tenant_config(tenant)? else {
            return Err(reply::fail(404, "tenant not found"));
        };
        if req.method == "HEAD" {
            // What a download would answer, without building one or
            // recording a download that never happened.
            return Ok(Output {
                status: 200,
                headers: headers(tenant),
                body: Vec::new(),
            });
        }
        bundle(tenant, &config)
    }
}

fn headers(tenant: &str) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/zip".into()),
        (
            "content-disposition".into(),
            format!("attachment; filename=\"support-{tenant}.zip\""),
        ),
        // Diagnostics are per request and may be sensitive: never cached.
        ("cache-control".into(), "no-store".into()),
    ]
}

fn bundle(tenant: &str, config: &TenantConfig) -> Result<Output, Failure> {
    let (recent_logs, audit_records) = contents::recent_logs(tenant)?;
    let files = [
        ("env.txt", contents::env_txt()),
        ("health.json", contents::host_json(&host_info::health())),
        ("ready.json", contents::host_json(&host_info::ready())),
        ("version.json", contents::version_json()),
        ("recent-logs.txt", recent_logs),
        ("config.json", contents::config_json(config)),
    ];
    let body = archive::zip(&files, time::now_micros()).map_err(|e| reply::fail(500, e))?;

    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    let details = json!({"files": names, "bytes": body.len(), "audit_records": audit_records});
    audit::record("support.bundle", tenant, Some(tenant), details)?;

    Ok(Output {
        status: 200,
        headers: headers(tenant),
        body,
    })
}

neo_ops_sdk::export_plugin!(SupportBundle);
