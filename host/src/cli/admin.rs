//! `neo-ops migrate`, `token create | list | revoke`, `audit verify`,
//! `queue push`. Token changes are on the audit record.

use std::process::ExitCode;

use super::{Access, Cli, admin_settings, bad_argument, with_databases, with_services};
use crate::backends::db::{Databases, pending};
use crate::manifest::Role;
use crate::{audit_log, auth};

/// `migrate --dry-run [--json]`: each database's pending migrations, and
/// what would make `migrate` refuse one (exit 1 then). Nothing is
/// migrated, and a missing embedded master is not created.
pub async fn migrate_dry_run(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let (databases, fresh) = pending_now(cli).await?;
    let refused = databases.iter().any(|d| d.problem.is_some());
    if json {
        let doc = serde_json::json!({"dry_run": true, "databases": databases});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for d in &databases {
            println!("{}", pending_line(d));
        }
        if fresh {
            println!(
                "no master database yet in \"{}\": migrate would create it",
                cli.data_dir.display()
            );
        }
        println!("dry run: nothing was migrated");
    }
    Ok(if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Each database's pending migrations as they stand, and whether there is
/// no master yet (a new embedded one: nothing read, nothing made).
async fn pending_now(cli: &Cli) -> anyhow::Result<(Vec<pending::Pending>, bool)> {
    let (settings, fresh) = admin_settings(cli)?;
    if fresh {
        return Ok((vec![pending::new_embedded_master()], true));
    }
    let db = Databases::open_to_read(&settings).await?;
    let databases = db.pending_migrations().await;
    db.close().await;
    Ok((databases, false))
}

/// `master` or `tenant "acme"`.
fn database_name(d: &pending::Pending) -> String {
    match &d.tenant {
        None => "master".to_string(),
        Some(tenant) => format!("tenant \"{tenant}\""),
    }
}

/// Migrations as `3 token expiry, 4 digest covered until`.
pub(super) fn migration_list(migrations: &[pending::Migration]) -> String {
    let each: Vec<String> = migrations
        .iter()
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    each.join(", ")
}

/// `master: 2 to apply: 3 token expiry, 4 digest covered until`.
fn pending_line(d: &pending::Pending) -> String {
    let name = database_name(d);
    let mut line = match d.pending.as_deref() {
        None => format!("{name}: not read"),
        Some([]) if d.problem.is_some() => format!("{name}: nothing to apply"),
        Some([]) => format!("{name}: up to date"),
        Some(pending) => format!(
            "{name}: {} to apply: {}",
            pending.len(),
            migration_list(pending)
        ),
    };
    match (&d.problem, &d.pending) {
        (Some(problem), None) => line.push_str(&format!(" ({problem})")),
        (Some(problem), Some(_)) => line.push_str(&format!("; migrate would fail: {problem}")),
        (None, _) => {}
    }
    line
}

pub async fn migrate(cli: &Cli) -> anyhow::Result<ExitCode> {
    // Read first, so the run can say what it applied to each database.
    let (before, _) = pending_now(cli).await?;
    // The other commands use a master a newer neo-ops migrated as it
    // stands; `migrate` is asked to bring it to this build, which it cannot.
    if let Some(problem) = before
        .iter()
        .find(|d| d.tenant.is_none())
        .and_then(|master| master.problem.as_deref())
    {
        anyhow::bail!("master database: {problem}");
    }
    with_databases(cli, Access::Write, async |db| {
        let (n, failed) = db.migrate_tenants().await?;
        for d in &before {
            let failed_here = d
                .tenant
                .as_ref()
                .is_some_and(|t| failed.iter().any(|(f, _)| f == t));
            match d.pending.as_deref() {
                Some(applied) if !applied.is_empty() && !failed_here => {
                    println!("{}: applied {}", database_name(d), migration_list(applied));
                }
                _ => {}
            }
        }
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

/// The longest `--expires-in`: ten years.
const MAX_EXPIRES_IN: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// When a token made now with `--expires-in <given>` expires.
fn expiry(given: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let d = neo_ops_text::duration::parse(given)
        .map_err(|e| bad_argument(format!("--expires-in: {e}")))?;
    if d.is_zero() || d > MAX_EXPIRES_IN {
        return Err(bad_argument(format!(
            "--expires-in \"{given}\" must be more than 0 and at most 3650d"
        )));
    }
    Ok(chrono::Utc::now() + d)
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub async fn create_token(
    cli: &Cli,
    role: &str,
    name: &str,
    expires_in: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let role = Role::parse(role).ok_or_else(|| {
        bad_argument(format!(
            "--role: unknown role \"{role}\" (expected admin or super_admin)"
        ))
    })?;
    let expires_at = expires_in.map(expiry).transpose()?;
    if !auth::valid_token_name(name) {
        return Err(bad_argument(format!(
            "bad token name \"{name}\": 1 to 64 letters, digits, spaces and . _ - @ \
             (it is the actor in the audit log)"
        )));
    }
    with_databases(cli, Access::Write, async |db| {
        let master = db.master();
        let live = auth::list_tokens(master, false).await?;
        if let Some(same) = live.iter().find(|t| t.name == name) {
            // Two live tokens of one name could not be told apart on record.
            anyhow::bail!(
                "a live token named \"{name}\" exists (id {}): revoke it first or pick another name",
                same.token_id
            );
        }
        let micros = expires_at.map(|at| at.timestamp_micros());
        let token = auth::create_token_expiring(master, role, name, micros).await?;
        let id = token.split('_').nth(1).unwrap_or_default().to_string();
        let expires = expires_at.map(rfc3339);
        let details =
            serde_json::json!({"role": role.as_str(), "name": name, "expires_at": expires});
        record(db, "token.create", &format!("token:{id}"), None, details).await;
        println!("{token}");
        let lasts = expires.map_or_else(|| "until revoked".into(), |at| format!("until {at}"));
        eprintln!("store this token now: it is not shown again (id {id}; valid {lasts})");
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn list_tokens(cli: &Cli, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    with_databases(cli, Access::Read, async |db| {
        let tokens = auth::list_tokens(db.master(), all).await?;
        let now = chrono::Utc::now();
        if json {
            println!("{}", serde_json::json!({ "tokens": tokens }));
            return Ok(ExitCode::SUCCESS);
        }
        if tokens.is_empty() {
            println!("no tokens (create one with: neo-ops token create --role admin --name NAME)");
        }
        for t in &tokens {
            let revoked = t
                .revoked_at
                .as_deref()
                .map(|at| format!("\trevoked {at}"))
                .unwrap_or_default();
            let expires = t.expires_at.as_deref().map_or_else(String::new, |at| {
                let past = chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|at| at <= now);
                format!("\t{} {at}", if past { "expired" } else { "expires" })
            });
            println!(
                "{}\t{}\t{}\tcreated {}{revoked}{expires}",
                t.token_id,
                t.role,
                super::one_line(&t.name),
                t.created_at.as_deref().unwrap_or("?")
            );
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Revokes a live token, naming whose it was; `dry_run` only names it.
pub async fn revoke_token(cli: &Cli, given: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    // Never echoed back whole: what was given may be the secret itself.
    let Some(token_id) = auth::given_token_id(given) else {
        anyhow::bail!(
            "bad token id (expected the 8 hex digits after \"neo_\", or the whole token); \
             see neo-ops token list"
        );
    };
    let not_live =
        || anyhow::anyhow!("no live token with id \"{token_id}\" (see neo-ops token list)");
    with_databases(cli, Access::unless(dry_run), async |db| {
        // Expired ones too: revoking one is still on the record.
        let tokens = auth::list_tokens(db.master(), true).await?;
        let token = tokens
            .iter()
            .find(|t| t.token_id == token_id && t.revoked_at.is_none())
            .ok_or_else(not_live)?;
        // Which token it is, so a wrong id pasted at 3 AM shows before or
        // as it is revoked.
        let which = format!(
            "token {token_id} (\"{}\", {})",
            super::one_line(&token.name),
            token.role
        );
        if dry_run {
            println!("would revoke {which}; nothing changed (--dry-run)");
            return Ok(ExitCode::SUCCESS);
        }
        if !auth::revoke_token(db.master(), &token_id).await? {
            return Err(not_live());
        }
        let target = format!("token:{token_id}");
        record(db, "token.revoke", &target, None, serde_json::json!({})).await;
        println!("revoked {which}");
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Puts a change this command made on the audit record. The change is
/// already committed, so a record that cannot be written is said on
/// stderr, not turned into a failure of the command.
pub(super) async fn record(
    db: &crate::backends::db::Databases,
    action: &str,
    target: &str,
    tenant: Option<&str>,
    details: serde_json::Value,
) {
    let entry = audit_log::NewRecord {
        actor: audit_log::cli_actor(),
        action: action.into(),
        target: target.into(),
        tenant: tenant.map(str::to_string),
        request_id: None,
        plugin: None,
        details,
    };
    if let Err(e) = audit_log::append_after_commit(db.master(), entry).await {
        eprintln!("warning: the change was made but its audit record was not written: {e}");
    }
}

pub async fn verify_audit(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    with_databases(cli, Access::Read, async |db| {
        let v = audit_log::verify(db.master()).await?;
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
        return Err(bad_argument(format!(
            "no plugin consumes queue \"{queue}\" (queues in {}: {})",
            cli.manifest.display(),
            if consumed.is_empty() {
                "none".to_string()
            } else {
                consumed.join(", ")
            }
        )));
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(payload) {
        return Err(bad_argument(format!(
            "payload \"{payload}\" is not JSON: {e}"
        )));
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
        // A job may mail a tenant's orders out or purge them: on record.
        let details = serde_json::json!({"job": id});
        record(
            &services.db,
            "queue.push",
            &format!("queue:{queue}"),
            tenant,
            details,
        )
        .await;
        println!("{id}");
        Ok(ExitCode::SUCCESS)
    })
    .await
}
