//! Preflight `soft-delete-indexes`: the partial unique indexes that keep live
//! (not soft-deleted) rows unique exist in every live tenant database, and are
//! still unique and partial (`... WHERE deleted_at IS NULL`). Expected names:
//! config `indexes` (comma list), by default the six `*_live_uq` indexes of
//! `host/migrations/*/tenant/0001_init.sql`. Fails naming tenant and index.
//!
//! Postgres is read through `pg_indexes`, SQLite through `sqlite_master`; the
//! backend is the one the host's readiness document names.
//!
//! Grants: `db = ["master", "tenant:*"]`.

use check_common::{describe, fail, pass, settings, tenants};
use neo_ops_sdk::{Check, CheckOutcome, Error, backends, db};

/// The tenant schema's partial unique indexes and how they are created.
const KNOWN: &[(&str, &str)] = &[
    (
        "customers_phone_live_uq",
        "ON customers(phone) WHERE deleted_at IS NULL AND phone IS NOT NULL",
    ),
    (
        "dining_tables_code_live_uq",
        "ON dining_tables(code) WHERE deleted_at IS NULL",
    ),
    (
        "staff_name_live_uq",
        "ON staff(name) WHERE deleted_at IS NULL",
    ),
    (
        "menu_items_sku_live_uq",
        "ON menu_items(sku) WHERE deleted_at IS NULL",
    ),
    (
        "invoices_number_live_uq",
        "ON invoices(number) WHERE deleted_at IS NULL",
    ),
    (
        "webhook_endpoints_url_live_uq",
        "ON webhook_endpoints(url) WHERE deleted_at IS NULL",
    ),
];

const PG_INDEXES: &str =
    "SELECT indexname AS name, indexdef AS def FROM pg_indexes WHERE schemaname = 'public'";
const SQLITE_INDEXES: &str =
    "SELECT name, sql AS def FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL";

struct SoftDeleteIndexes;

impl Check for SoftDeleteIndexes {
    fn check() -> CheckOutcome {
        let default: Vec<&str> = KNOWN.iter().map(|(n, _)| *n).collect();
        let expected = settings::list("indexes", &default);
        let names = match tenants::some_live_or_fail("check the master database") {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        let catalog = match backends::in_use().map(|b| b.database) {
            Ok(db) if db == "sqlite" => SQLITE_INDEXES,
            _ => PG_INDEXES,
        };
        let mut problems = Vec::new();
        let mut broken = Vec::new();
        for t in &names {
            match indexes(&tenants::target(t), catalog) {
                Err(e) => {
                    problems.push(format!("tenant \"{t}\": reading indexes: {}", describe(&e)))
                }
                Ok(found) => {
                    for name in &expected {
                        if let Some(p) = judge(name, &found) {
                            problems.push(format!("tenant \"{t}\": {p}"));
                            broken.push(name.as_str());
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            return pass(format!(
                "{} partial unique index(es) present in {} tenant database(s)",
                expected.len(),
                names.len()
            ));
        }
        broken.sort_unstable();
        broken.dedup();
        if broken.is_empty() {
            // Only reading failed: nothing is known to be wrong with an index.
            return fail(
                problems.join("; "),
                "check that each tenant database named is up (check-database)",
            );
        }
        fail(problems.join("; "), hint(&broken))
    }
}

/// (name, definition) of every index in a tenant database.
fn indexes(target: &str, catalog: &str) -> Result<Vec<(String, String)>, Error> {
    let rows = db::query(target, catalog, &[])?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.text("name")?.to_string(),
                r.text("def").unwrap_or_default().to_string(),
            ))
        })
        .collect())
}

/// What is wrong with one expected index, if anything: it must be created
/// `UNIQUE` and its condition must hold `deleted_at IS NULL` (not merely
/// mention the words, as a column named `unique_name` would).
fn judge(name: &str, found: &[(String, String)]) -> Option<String> {
    let Some((_, def)) = found.iter().find(|(n, _)| n == name) else {
        return Some(format!("index {name} is missing"));
    };
    // Words only, upper case: Postgres writes `WHERE ((deleted_at IS NULL))`.
    let words: Vec<String> = def
        .split(|c: char| c.is_whitespace() || "()\"`[]".contains(c))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let unique = words.starts_with(&["CREATE".into(), "UNIQUE".into(), "INDEX".into()]);
    let condition = words
        .iter()
        .position(|w| w == "WHERE")
        .map(|at| &words[at + 1..]);
    // One of the conditions ANDed together (an OR could let deleted rows in).
    let live_only = condition.is_some_and(|c| {
        !c.iter().any(|w| w == "OR")
            && c.windows(3).enumerate().any(|(i, w)| {
                w == ["DELETED_AT", "IS", "NULL"]
                    && (i == 0 || c[i - 1] == "AND")
                    && c.get(i + 3).is_none_or(|next| next == "AND")
            })
    });
    if !unique || !live_only {
        return Some(format!(
            "index {name} is not a partial unique index on live rows (unique, WHERE deleted_at IS NULL)"
        ));
    }
    None
}

/// The statements that put the broken indexes back.
fn hint(broken: &[&str]) -> String {
    let statements: Vec<String> = broken
        .iter()
        .map(|name| {
            let body = KNOWN
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.to_string())
                .unwrap_or_else(|| "ON <table>(<column>) WHERE deleted_at IS NULL".to_string());
            format!("DROP INDEX IF EXISTS {name}; CREATE UNIQUE INDEX {name} {body};")
        })
        .collect();
    format!(
        "in each tenant database named, resolve duplicate live rows, then run: {}",
        statements.join(" ")
    )
}

neo_ops_sdk::export_check!(SoftDeleteIndexes);

#[cfg(test)]
mod tests {
    use super::*;

    fn found(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect()
    }

    #[test]
    fn missing_and_non_partial_indexes_are_named() {
        let f = found(&[
            (
                "staff_name_live_uq",
                "CREATE UNIQUE INDEX staff_name_live_uq ON public.staff USING btree (name) WHERE (deleted_at IS NULL)",
            ),
            (
                "menu_items_sku_live_uq",
                "CREATE UNIQUE INDEX menu_items_sku_live_uq ON menu_items(sku)",
            ),
        ]);
        assert_eq!(judge("staff_name_live_uq", &f), None);
        let not_partial_unique = |name: &str| {
            Some(format!(
                "index {name} is not a partial unique index on live rows (unique, WHERE deleted_at IS NULL)"
            ))
        };
        assert_eq!(
            judge("menu_items_sku_live_uq", &f),
            not_partial_unique("menu_items_sku_live_uq")
        );
        assert_eq!(
            judge("customers_phone_live_uq", &f),
            Some("index customers_phone_live_uq is missing".into())
        );
    }

    #[test]
    fn only_unique_indexes_on_live_rows_pass() {
        let judged = |def: &str| judge("i", &found(&[("i", def)]));
        // As Postgres and SQLite write them.
        for good in [
            "CREATE UNIQUE INDEX i ON public.customers USING btree (phone) WHERE ((deleted_at IS NULL) AND (phone IS NOT NULL))",
            "CREATE UNIQUE INDEX i ON customers(phone) WHERE deleted_at IS NULL AND phone IS NOT NULL",
            "create unique index \"i\" on staff(name) where \"deleted_at\" is null",
        ] {
            assert_eq!(judged(good), None, "{good}");
        }
        for bad in [
            // Unique and partial, but soft-deleted rows still count.
            "CREATE UNIQUE INDEX i ON staff(name) WHERE name IS NOT NULL",
            // Partial, not unique: "UNIQUE" is only in a column's name.
            "CREATE INDEX i ON staff(unique_name) WHERE deleted_at IS NULL",
            "CREATE UNIQUE INDEX i ON staff(name) WHERE NOT deleted_at IS NULL",
            "CREATE UNIQUE INDEX i ON staff(name) WHERE x_deleted_at IS NULL",
            "CREATE UNIQUE INDEX i ON staff(name) WHERE deleted_at IS NULL OR true",
        ] {
            assert!(judged(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn hints_recreate_the_index() {
        assert!(hint(&["customers_phone_live_uq"]).contains(
            "CREATE UNIQUE INDEX customers_phone_live_uq ON customers(phone) WHERE deleted_at IS NULL AND phone IS NOT NULL;"
        ));
        assert!(
            hint(&["custom_uq"]).contains("CREATE UNIQUE INDEX custom_uq ON <table>(<column>)")
        );
    }
}
