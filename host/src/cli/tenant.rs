//! `neo-ops tenant create | list | set`. Creating and changing a tenant is
//! on the audit record.

use std::process::ExitCode;

use super::admin::record;
use super::{Access, Cli, TenantSetArgs, bad_argument, one_line, with_databases};
use crate::demo;

pub async fn create(
    cli: &Cli,
    name: &str,
    display_name: Option<&str>,
    with_demo: bool,
) -> anyhow::Result<ExitCode> {
    not_blank("--display-name", display_name)?;
    with_databases(cli, Access::Write, async |db| {
        db.create_tenant(name, display_name.unwrap_or(name)).await?;
        let seeded = match with_demo {
            true => Some(seed_demo(db, name).await),
            false => None,
        };
        // On record before anything is printed (a closed pipe ends the
        // process at the first line), with what the seeding came to.
        let target = format!("tenant:{name}");
        let mut details = serde_json::json!({"demo": with_demo});
        if let Some(Err(e)) = &seeded {
            details["demo_failed"] = serde_json::json!(format!("{e:#}"));
        }
        record(db, "tenant.create", &target, Some(name), details).await;
        println!("created tenant \"{name}\"");
        match seeded {
            Some(Ok(counts)) => println!("seeded demo data: {counts}"),
            Some(Err(e)) => {
                return Err(e.context(format!(
                    "tenant \"{name}\" is created, but its demo data is not (all) in"
                )));
            }
            None => {}
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Refuses a blank value: a blank plan or name reads as none in every list
/// and report.
fn not_blank(flag: &str, value: Option<&str>) -> anyhow::Result<()> {
    match value {
        Some(v) if v.trim().is_empty() => Err(bad_argument(format!("{flag}: \"{v}\" is blank"))),
        _ => Ok(()),
    }
}

/// Fills a new tenant with a week of demo data and an owner address (the
/// owner digest needs somewhere to go); what was seeded, counted.
async fn seed_demo(db: &crate::backends::db::Databases, name: &str) -> anyhow::Result<String> {
    let pool = db.tenant(name).await?;
    let counts = demo::seed(&pool, demo::DemoSize::default()).await?;
    db.update_tenant(
        name,
        &crate::backends::db::TenantUpdate {
            owner_email: Some(demo_owner(name)),
            ..Default::default()
        },
    )
    .await?;
    Ok(counts)
}

/// A demo tenant's owner address: `owner@<name>.example`, unless the name
/// ends in `-` or holds `_`, which no domain label may (every digest to it
/// would fail).
fn demo_owner(name: &str) -> String {
    Some(format!("owner@{name}.example"))
        .filter(|a| neo_ops_text::address::is_plain(a))
        .unwrap_or_else(|| format!("owner+{name}@tenants.example"))
}

pub async fn list(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    with_databases(cli, Access::Read, async |db| {
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
            bad_argument(format!(
                "--time-zone: unknown time zone \"{tz}\" (an IANA name such as Asia/Kolkata)"
            ))
        })?;
    }
    if let Some(email) = &args.owner_email
        && !neo_ops_text::address::is_plain(email)
    {
        return Err(bad_argument(format!(
            "--owner-email: \"{email}\" is not an email address"
        )));
    }
    not_blank("--plan", args.plan.as_deref())?;
    not_blank("--display-name", args.display_name.as_deref())?;
    if let Some(days) = args.retention_days
        && !(1..=36_500).contains(&days)
    {
        return Err(bad_argument(format!(
            "--retention-days {days} is out of range (1 to 36500)"
        )));
    }
    let update = crate::backends::db::TenantUpdate {
        owner_email: args.owner_email.clone(),
        display_name: args.display_name.clone(),
        time_zone: args.time_zone.clone(),
        retention_days: args.retention_days,
        plan: args.plan.clone(),
    };
    if update.is_empty() {
        return Err(bad_argument(
            "nothing to set (give --owner-email, --display-name, --time-zone, --retention-days or --plan)",
        ));
    }
    with_databases(cli, Access::unless(args.dry_run), async |db| {
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
        if !args.dry_run {
            db.update_tenant(&args.name, &update).await?;
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
        // Printed once on record: a closed pipe ends the process here.
        match args.dry_run {
            true => println!("dry run: tenant \"{}\" would change", args.name),
            false => println!("updated tenant \"{}\"", args.name),
        }
        for (field, old, new) in &changes {
            println!("  {field}: {old:?} -> {new:?}");
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_tenant_name_gets_a_demo_owner_the_mailer_takes() {
        for (name, owner) in [
            ("acme", "owner@acme.example"),
            ("x-", "owner+x-@tenants.example"),
            ("a_b", "owner+a_b@tenants.example"),
        ] {
            assert!(crate::manifest::valid_tenant_name(name));
            assert_eq!(super::demo_owner(name), owner);
            assert!(owner.parse::<lettre::Address>().is_ok(), "{owner}");
        }
    }
}
