//! Preflight `database`: `SELECT 1` on the master database and on the database
//! of every live tenant. Fails naming each database that did not answer.
//!
//! Grants: `db = ["master", "tenant:*"]`.

use check_common::{describe, fail, pass, tenants};
use neo_ops_sdk::{Check, CheckOutcome, Error, db};

const HINT: &str = "check that the database server is up and reachable from the host \
    (POSTGRES_MASTER_URL / POSTGRES_TENANT_DSN_TEMPLATE); the host log has the connection error";

struct Database;

impl Check for Database {
    fn check() -> CheckOutcome {
        if let Err(e) = ping("master") {
            return fail(format!("master database: {}", describe(&e)), HINT);
        }
        let names = match tenants::live_or_fail(HINT) {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        let failed: Vec<String> = names
            .iter()
            .filter_map(|t| {
                ping(&tenants::target(t))
                    .err()
                    .map(|e| format!("tenant \"{t}\": {}", describe(&e)))
            })
            .collect();
        if failed.is_empty() {
            pass(format!(
                "master and {} tenant database(s) answer SELECT 1",
                names.len()
            ))
        } else {
            fail(
                format!(
                    "{} of {} tenant database(s) failed: {}",
                    failed.len(),
                    names.len(),
                    failed.join("; ")
                ),
                HINT,
            )
        }
    }
}

fn ping(target: &str) -> Result<(), Error> {
    db::query(target, "SELECT 1 AS one", &[]).map(|_| ())
}

neo_ops_sdk::export_check!(Database);
