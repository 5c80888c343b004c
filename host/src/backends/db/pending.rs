//! What `neo-ops migrate --dry-run` reports: each database's migrations
//! that this build carries and the database has not applied, and what
//! would make `migrate` refuse it, read from its `_sqlx_migrations` table
//! without changing anything.

use sqlx::migrate::Migrator;
use std::collections::HashMap;

use super::{
    Databases, Kind, LITE_MASTER, LITE_TENANT, PG_MASTER, PG_TENANT, PgHandle, Pool, pg_pool_lazy,
    sqlite_pool_to_read, tenant_file,
};

/// One migration not applied yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    pub version: i64,
    pub description: String,
}

/// One database against this build.
#[derive(Debug, serde::Serialize)]
pub struct Pending {
    /// The tenant's name; `None` for the master.
    pub tenant: Option<String>,
    /// `None` when its record could not be read (see `problem`).
    pub pending: Option<Vec<Migration>>,
    /// Why `migrate` would fail on it, if it would: a migration failed
    /// part-way, one applied has changed since, or one applied is not this
    /// build's (a newer neo-ops migrated it); or why its record could not
    /// be read.
    pub problem: Option<String>,
}

/// An applied migration as `_sqlx_migrations` records it.
struct Applied {
    checksum: Vec<u8>,
    success: bool,
}

impl Databases {
    /// What `migrate` would do, database by database: the master, then
    /// every live tenant. Reads only.
    pub async fn pending_migrations(&self) -> Vec<Pending> {
        let (master_migrator, tenant_migrator) = match self.kind {
            Kind::Postgres { .. } => (&PG_MASTER, &PG_TENANT),
            Kind::Sqlite { .. } => (&LITE_MASTER, &LITE_TENANT),
        };
        let master = applied(&self.master).await;
        // Without its first migration a master has no tenants table yet.
        let has_tenants = master
            .as_ref()
            .is_ok_and(|m| m.get(&1).is_some_and(|first| first.success));
        let mut out = vec![compare(None, master_migrator, master)];
        if has_tenants {
            match self.live_tenant_names().await {
                Ok(names) => {
                    for name in names {
                        let applied = self.tenant_applied(&name).await;
                        out.push(compare(Some(name), tenant_migrator, applied));
                    }
                }
                Err(e) => {
                    let listing = format!("listing its tenants: {e}");
                    let problem = &mut out[0].problem;
                    *problem = Some(match problem.take() {
                        Some(first) => format!("{first}; {listing}"),
                        None => listing,
                    });
                }
            }
        }
        out
    }

    /// The master against this build, read only: what a command that only
    /// reads checks before it reads.
    pub async fn master_pending(&self) -> Pending {
        let migrator = match self.kind {
            Kind::Postgres { .. } => &PG_MASTER,
            Kind::Sqlite { .. } => &LITE_MASTER,
        };
        compare(None, migrator, applied(&self.master).await)
    }

    /// What tenant `name`'s database has applied, read on a pool of its
    /// own, closed after (read-only for a file): a dry run over many
    /// tenants holds one connection at a time and changes no file.
    async fn tenant_applied(&self, name: &str) -> anyhow::Result<HashMap<i64, Applied>> {
        let pool = match &self.kind {
            Kind::Postgres { template } => Pool::Pg(PgHandle::new(pg_pool_lazy(
                &template.replace("{tenant}", name),
            )?)),
            Kind::Sqlite { dir } => {
                Pool::Sqlite(sqlite_pool_to_read(tenant_file(dir, name)).await?)
            }
        };
        let read = applied(&pool).await;
        pool.close().await;
        read
    }
}

/// A new embedded master: every master migration is still to apply.
pub fn new_embedded_master() -> Pending {
    compare(None, &LITE_MASTER, Ok(HashMap::new()))
}

/// What `pool` has applied, by version; empty when it has no record yet.
async fn applied(pool: &Pool) -> anyhow::Result<HashMap<i64, Applied>> {
    const ROWS: &str = "SELECT version, checksum, success FROM _sqlx_migrations";
    let rows: Vec<(i64, Vec<u8>, bool)> = match pool {
        Pool::Pg(pg) => {
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(&pg.pool)
                    .await?;
            if !exists {
                return Ok(HashMap::new());
            }
            sqlx::query_as(ROWS).fetch_all(&pg.pool).await?
        }
        Pool::Sqlite(lite) => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                 WHERE type = 'table' AND name = '_sqlx_migrations')",
            )
            .fetch_one(lite)
            .await?;
            if !exists {
                return Ok(HashMap::new());
            }
            sqlx::query_as(ROWS).fetch_all(lite).await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(version, checksum, success)| (version, Applied { checksum, success }))
        .collect())
}

/// The first migration `pool` has applied that this build does not carry,
/// when every one this build does carry is applied as it is: a newer
/// neo-ops migrated the database past this build (a rolling deploy's first
/// new replica does), and this build can use it as it stands. `None` when
/// it is not so (behind, a migration failed or changed) or cannot be read:
/// migrating decides then.
pub(super) async fn ahead_of_this_build(pool: &Pool, migrator: &Migrator) -> Option<i64> {
    let applied = applied(pool).await.ok()?;
    let mut ours = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration());
    let current = ours.all(|m| {
        applied
            .get(&m.version)
            .is_some_and(|a| a.success && a.checksum == *m.checksum)
    });
    let newer = applied
        .keys()
        .filter(|v| migrator.iter().all(|m| m.version != **v))
        .min();
    let failed = applied.values().any(|a| !a.success);
    newer.copied().filter(|_| current && !failed)
}

/// `applied` against what `migrator` carries, as `Migrator::run` would
/// judge it.
fn compare(
    tenant: Option<String>,
    migrator: &Migrator,
    applied: anyhow::Result<HashMap<i64, Applied>>,
) -> Pending {
    let applied = match applied {
        Ok(applied) => applied,
        Err(e) => {
            return Pending {
                tenant,
                pending: None,
                problem: Some(format!("reading its migrations: {e:#}")),
            };
        }
    };
    let ours = || {
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
    };
    let mut problems = Vec::new();
    // The lowest, as `migrate` names it.
    if let Some(v) = applied
        .iter()
        .filter(|(_, a)| !a.success)
        .map(|(v, _)| v)
        .min()
    {
        problems.push(format!("migration {v} failed part-way (repair it by hand)"));
    }
    for m in ours() {
        if applied
            .get(&m.version)
            .is_some_and(|a| a.checksum != *m.checksum)
        {
            problems.push(format!(
                "migration {} changed since it was applied",
                m.version
            ));
        }
    }
    let mut unknown: Vec<_> = applied
        .keys()
        .filter(|v| ours().all(|m| m.version != **v))
        .collect();
    unknown.sort();
    if let Some(v) = unknown.first() {
        problems.push(format!(
            "migration {v} was applied by a newer neo-ops than this one"
        ));
    }
    Pending {
        tenant,
        pending: Some(
            ours()
                .filter(|m| !applied.contains_key(&m.version))
                .map(|m| Migration {
                    version: m.version,
                    description: m.description.to_string(),
                })
                .collect(),
        ),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(versions: &[(i64, &[u8], bool)]) -> anyhow::Result<HashMap<i64, Applied>> {
        Ok(versions
            .iter()
            .map(|(v, checksum, success)| {
                let checksum = checksum.to_vec();
                (
                    *v,
                    Applied {
                        checksum,
                        success: *success,
                    },
                )
            })
            .collect())
    }

    fn checksum(version: i64) -> Vec<u8> {
        let m = LITE_MASTER.iter().find(|m| m.version == version).unwrap();
        m.checksum.to_vec()
    }

    #[test]
    fn lists_what_is_missing_and_what_migrate_would_refuse() {
        let all: Vec<i64> = LITE_MASTER.iter().map(|m| m.version).collect();
        let fresh = new_embedded_master();
        let versions: Vec<i64> = fresh.pending.unwrap().iter().map(|m| m.version).collect();
        assert_eq!((versions, fresh.problem), (all.clone(), None));

        let first = checksum(1);
        let behind = compare(None, &LITE_MASTER, applied(&[(1, &first, true)]));
        let pending = behind.pending.unwrap();
        assert_eq!(pending.len(), all.len() - 1);
        assert_eq!(pending[0].version, 2);
        assert_eq!(behind.problem, None);

        let changed = compare(None, &LITE_MASTER, applied(&[(1, b"other", true)]));
        assert_eq!(
            changed.problem.as_deref(),
            Some("migration 1 changed since it was applied")
        );
        let dirty = [(1, &first[..], true), (3, b"x", false), (2, b"x", false)];
        let dirty = compare(None, &LITE_MASTER, applied(&dirty));
        assert!(
            dirty
                .problem
                .as_deref()
                .unwrap()
                .starts_with("migration 2 failed part-way (repair it by hand); "),
            "{dirty:?}"
        );
        let newer = compare(None, &LITE_MASTER, applied(&[(99, b"x", true)]));
        assert_eq!(
            newer.problem.as_deref(),
            Some("migration 99 was applied by a newer neo-ops than this one")
        );
        let unread = compare(None, &LITE_MASTER, Err(anyhow::anyhow!("refused")));
        assert_eq!(
            (unread.pending, unread.problem.as_deref()),
            (None, Some("reading its migrations: refused"))
        );
    }
}
