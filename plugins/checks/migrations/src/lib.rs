//! Preflight `migrations`: the schema each database has against the one this
//! build carries (`host_info::expected_schema()`), read from sqlx's
//! `_sqlx_migrations` (`version`, `success`) on the master database and on
//! every live tenant database. Fails listing each database that is behind or
//! has a failed migration; warns when a database is ahead of this build.
//!
//! Grants: `db = ["master", "tenant:*"]`.

use check_common::{describe, fail, pass, tenants, warn};
use neo_ops_sdk::{Check, CheckOutcome, Error, ErrorCode, db, host_info};

const MIGRATE_HINT: &str = "run `neo-ops migrate` (applies pending master and tenant migrations); \
    a failed migration needs its schema change repaired by hand and its row removed from \
    _sqlx_migrations first";
const UNREADABLE_HINT: &str =
    "check that each database named is up and reachable from the host (check-database)";
const AHEAD_HINT: &str = "a newer neo-ops migrated these databases: deploy that version (or newer) \
    rather than this one";

/// What one database has applied.
#[derive(Debug, PartialEq)]
struct Applied {
    /// Highest version applied successfully, 0 when none.
    newest: i64,
    failed: Vec<i64>,
}

#[derive(Debug, PartialEq)]
enum Finding {
    Ok,
    Behind(String),
    Ahead(String),
    /// The database did not answer: nothing is known about its schema.
    Unreadable(String),
}

struct Migrations;

impl Check for Migrations {
    fn check() -> CheckOutcome {
        let expected = host_info::expected_schema();
        let names = match tenants::live_or_fail(MIGRATE_HINT) {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        let mut findings = vec![judge("master", applied("master"), expected.master)];
        for t in &names {
            let label = format!("tenant \"{t}\"");
            findings.push(judge(&label, applied(&tenants::target(t)), expected.tenant));
        }
        let of = |kind: fn(&Finding) -> Option<&String>| -> Vec<&str> {
            findings
                .iter()
                .filter_map(kind)
                .map(String::as_str)
                .collect()
        };
        let behind = of(|f| match f {
            Finding::Behind(s) => Some(s),
            _ => None,
        });
        let unreadable = of(|f| match f {
            Finding::Unreadable(s) => Some(s),
            _ => None,
        });
        let ahead = of(|f| match f {
            Finding::Ahead(s) => Some(s),
            _ => None,
        });
        if !behind.is_empty() || !unreadable.is_empty() {
            let hints: Vec<&str> = [(&behind, MIGRATE_HINT), (&unreadable, UNREADABLE_HINT)]
                .into_iter()
                .filter(|(found, _)| !found.is_empty())
                .map(|(_, hint)| hint)
                .collect();
            fail([behind, unreadable].concat().join("; "), hints.join("; "))
        } else if !ahead.is_empty() {
            warn(ahead.join("; "), AHEAD_HINT)
        } else {
            pass(format!(
                "master at version {}, {} tenant database(s) at version {}",
                expected.master,
                names.len(),
                expected.tenant
            ))
        }
    }
}

fn applied(target: &str) -> Result<Applied, Error> {
    let rows = db::query(
        target,
        "SELECT version, success FROM _sqlx_migrations ORDER BY version",
        &[],
    )?;
    let mut out = Applied {
        newest: 0,
        failed: Vec::new(),
    };
    for row in rows.iter() {
        let Some(version) = row.int("version") else {
            continue;
        };
        if row.get("success").as_bool() == Some(true) {
            out.newest = out.newest.max(version);
        } else {
            out.failed.push(version);
        }
    }
    Ok(out)
}

fn judge(label: &str, applied: Result<Applied, Error>, expected: i64) -> Finding {
    match applied {
        Err(e) if e.code == ErrorCode::Unavailable => Finding::Unreadable(format!(
            "{label}: cannot read _sqlx_migrations ({})",
            describe(&e)
        )),
        // No such table (never migrated), or the like.
        Err(e) => Finding::Behind(format!(
            "{label}: cannot read _sqlx_migrations ({})",
            describe(&e)
        )),
        Ok(a) if !a.failed.is_empty() => Finding::Behind(format!(
            "{label}: migration {} failed",
            a.failed
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(a) if a.newest < expected => Finding::Behind(format!(
            "{label} at version {}, this build expects {expected}",
            a.newest
        )),
        Ok(a) if a.newest > expected => Finding::Ahead(format!(
            "{label} at version {}, newer than this build's {expected}",
            a.newest
        )),
        Ok(_) => Finding::Ok,
    }
}

neo_ops_sdk::export_check!(Migrations);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(newest: i64, failed: &[i64]) -> Result<Applied, Error> {
        Ok(Applied {
            newest,
            failed: failed.to_vec(),
        })
    }

    #[test]
    fn behind_failed_ahead_and_current() {
        assert_eq!(judge("master", at(1, &[]), 1), Finding::Ok);
        assert_eq!(
            judge("tenant \"acme\"", at(1, &[]), 2),
            Finding::Behind("tenant \"acme\" at version 1, this build expects 2".into())
        );
        assert_eq!(
            judge("master", at(1, &[2]), 2),
            Finding::Behind("master: migration 2 failed".into())
        );
        let down = Err(Error {
            code: ErrorCode::Unavailable,
            message: "database unavailable".into(),
        });
        assert_eq!(
            judge("master", down, 2),
            Finding::Unreadable(
                "master: cannot read _sqlx_migrations (unavailable: database unavailable)".into()
            )
        );
        let never_migrated = Err(Error {
            code: ErrorCode::Failed,
            message: "relation \"_sqlx_migrations\" does not exist".into(),
        });
        assert!(matches!(
            judge("master", never_migrated, 2),
            Finding::Behind(_)
        ));
        assert_eq!(
            judge("master", at(3, &[]), 2),
            Finding::Ahead("master at version 3, newer than this build's 2".into())
        );
    }
}
