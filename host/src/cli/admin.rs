//! `neo-ops migrate`, `token create | revoke`, `audit verify`, `queue push`.

use std::process::ExitCode;

use super::{Cli, with_services};
use crate::manifest::Role;
use crate::{audit_log, auth};

pub async fn migrate(cli: &Cli) -> anyhow::Result<ExitCode> {
    with_services(cli, async |services| {
        let (n, failed) = services.db.migrate_tenants().await?;
        println!("master and {n} tenant database(s) migrated");
        for (tenant, why) in &failed {
            eprintln!("error: tenant \"{tenant}\" was not migrated: {why}");
        }
        Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
    .await
}

pub async fn create_token(cli: &Cli, role: &str, name: &str) -> anyhow::Result<ExitCode> {
    let role = Role::parse(role).ok_or_else(|| {
        anyhow::anyhow!("unknown role \"{role}\" (expected admin or super_admin)")
    })?;
    if name.trim().is_empty() {
        anyhow::bail!("token name must not be empty");
    }
    with_services(cli, async |services| {
        let token = auth::create_token(services.db.master(), role, name).await?;
        println!("{token}");
        eprintln!("store this token now: it is not shown again");
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn revoke_token(cli: &Cli, token_id: &str) -> anyhow::Result<ExitCode> {
    with_services(cli, async |services| {
        if auth::revoke_token(services.db.master(), token_id).await? {
            println!("revoked token {token_id}");
            Ok(ExitCode::SUCCESS)
        } else {
            anyhow::bail!("no live token with id \"{token_id}\"")
        }
    })
    .await
}

pub async fn verify_audit(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    with_services(cli, async |services| {
        let v = audit_log::verify(services.db.master()).await?;
        if json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            match &v.broken_at {
                None => println!("audit chain intact: {} record(s)", v.records),
                Some((id, why)) => println!(
                    "audit chain broken at record {id}: {why} ({} intact before it)",
                    v.records
                ),
            }
        }
        Ok(if v.broken_at.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
    .await
}

pub async fn push_job(
    cli: &Cli,
    queue: &str,
    payload: &str,
    tenant: Option<&str>,
) -> anyhow::Result<ExitCode> {
    // A job nobody consumes, or one that is not JSON, would only wait to be
    // dead-lettered: refuse it here, naming what is wrong.
    let consumed: Vec<String> = super::load_manifest(&cli.manifest)?
        .plugins
        .iter()
        .filter_map(|p| p.queue.as_ref().map(|q| q.name.clone()))
        .collect();
    if !consumed.iter().any(|q| q == queue) {
        anyhow::bail!(
            "no plugin consumes queue \"{queue}\" (queues in {}: {})",
            cli.manifest.display(),
            if consumed.is_empty() {
                "none".to_string()
            } else {
                consumed.join(", ")
            }
        );
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(payload) {
        anyhow::bail!("payload \"{payload}\" is not JSON: {e}");
    }
    with_services(cli, async |services| {
        if services.kv.backend_name() == "memory" {
            // The in-process kv ends with this command: the job would be lost.
            anyhow::bail!(
                "queue push needs Redis (set REDIS_URL): without it the queue lives in the \
                 serving process's memory, which this command cannot reach"
            );
        }
        if let Some(tenant) = tenant
            && !services.db.tenant_exists(tenant).await?
        {
            // The job would only fail on every attempt and be dead-lettered.
            anyhow::bail!("no tenant named \"{tenant}\" (see neo-ops tenant list)");
        }
        let id = crate::backends::queue::enqueue(&services.kv, queue, tenant, payload).await?;
        println!("{id}");
        Ok(ExitCode::SUCCESS)
    })
    .await
}
