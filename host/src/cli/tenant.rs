//! `neo-ops tenant create | list | set`. Creating and changing a tenant is
//! on the audit record.

use std::process::ExitCode;

use super::admin::record;
use super::{Cli, TenantSetArgs, one_line, with_databases};
use crate::demo;

pub async fn create(
    cli: &Cli,
    name: &str,
    display_name: Option<&str>,
    with_demo: bool,
) -> anyhow::Result<ExitCode> {
    with_databases(cli, async |db| {
        db.create_tenant(name, display_name.unwrap_or(name)).await?;
        let target = format!("tenant:{name}");
        let details = serde_json::json!({"demo": with_demo});
        record(db, "tenant.create", &target, Some(name), details).await;
        println!("created tenant \"{name}\"");
        if with_demo {
            let pool = db.tenant(name).await?;
            let counts = demo::seed(&pool, demo::DemoSize::default()).await?;
            // The owner digest needs somewhere to go.
            db.update_tenant(
                name,
                &crate::backends::db::TenantUpdate {
                    owner_email: Some(format!("owner@{name}.example")),
                    ..Default::default()
                },
            )
            .await?;
            println!("seeded demo data: {counts}");
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn list(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    with_databases(cli, async |db| {
        let tenants = db.list_tenants().await?;
        if json {
            println!("{}", serde_json::to_string(&tenants)?);
        } else {
            for t in tenants {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.name,
                    one_line(&t.plan),
                    t.time_zone,
                    t.owner_email.as_deref().unwrap_or("-"),
                    one_line(&t.display_name)
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn set(cli: &Cli, args: &TenantSetArgs) -> anyhow::Result<ExitCode> {
    if let Some(tz) = &args.time_zone {
        tz.parse::<chrono_tz::Tz>().map_err(|_| {
            anyhow::anyhow!("unknown time zone \"{tz}\" (an IANA name such as Asia/Kolkata)")
        })?;
    }
    if let Some(email) = &args.owner_email
        && !neo_ops_text::address::is_plain(email)
    {
        anyhow::bail!("\"{email}\" is not an email address");
    }
    if let Some(days) = args.retention_days
        && !(1..=36_500).contains(&days)
    {
        anyhow::bail!("--retention-days {days} is out of range (1 to 36500)");
    }
    let update = crate::backends::db::TenantUpdate {
        owner_email: args.owner_email.clone(),
        display_name: args.display_name.clone(),
        time_zone: args.time_zone.clone(),
        retention_days: args.retention_days,
        plan: args.plan.clone(),
    };
    if update.is_empty() {
        anyhow::bail!(
            "nothing to set (give --owner-email, --display-name, --time-zone, --retention-days or --plan)"
        );
    }
    with_databases(cli, async |db| {
        let Some(before) = db
            .list_tenants()
            .await?
            .into_iter()
            .find(|t| t.name == args.name)
        else {
            anyhow::bail!(
                "tenant \"{}\" not found (see neo-ops tenant list)",
                args.name
            );
        };
        // What changes, old to new: a retention cut from a year to days is
        // what tonight's purge acts on, so say so plainly, before as after.
        let old_email = before.owner_email.unwrap_or_default();
        let changes: Vec<(&str, String, String)> = [
            ("owner_email", old_email, update.owner_email.clone()),
            (
                "display_name",
                before.display_name,
                update.display_name.clone(),
            ),
            ("time_zone", before.time_zone, update.time_zone.clone()),
            (
                "retention_days",
                before.retention_days.to_string(),
                update.retention_days.map(|d| d.to_string()),
            ),
            ("plan", before.plan, update.plan.clone()),
        ]
        .into_iter()
        .filter_map(|(field, old, new)| new.map(|new| (field, old, new)))
        .collect();
        if args.dry_run {
            println!("dry run: tenant \"{}\" would change", args.name);
        } else {
            db.update_tenant(&args.name, &update).await?;
            println!("updated tenant \"{}\"", args.name);
        }
        for (field, old, new) in &changes {
            println!("  {field}: {old:?} -> {new:?}");
        }
        if !args.dry_run {
            // Old and new values on record, but not the owner's address.
            let fields: serde_json::Map<String, serde_json::Value> = changes
                .iter()
                .map(|(field, old, new)| {
                    let change = if *field == "owner_email" {
                        serde_json::json!("changed")
                    } else {
                        serde_json::json!([old, new])
                    };
                    (field.to_string(), change)
                })
                .collect();
            let target = format!("tenant:{}", args.name);
            let details = serde_json::json!({ "changes": fields });
            record(db, "tenant.set", &target, Some(&args.name), details).await;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}
