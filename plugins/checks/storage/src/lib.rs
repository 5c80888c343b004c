//! Preflight `storage`: which backends the host runs on, from its readiness
//! document (`host_info::ready()`). Production wants Postgres, Redis and SMTP;
//! the embedded ones (SQLite, the in-process kv, the `.eml` outbox) are for a
//! single node or development and give a warning unless config
//! `allow_embedded = "true"` says that is intended.
//!
//! Grants: none.

use check_common::{fail, pass, settings, warn};
use neo_ops_sdk::backends::{self, Backends};
use neo_ops_sdk::{Check, CheckOutcome};

const HINT: &str = "for production set POSTGRES_MASTER_URL and POSTGRES_TENANT_DSN_TEMPLATE, \
    REDIS_URL and SMTP_HOST; for a single-node or development deployment set \
    allow_embedded = \"true\" in this check's config";

struct Storage;

impl Check for Storage {
    fn check() -> CheckOutcome {
        let used = match backends::in_use() {
            Ok(b) => b,
            Err(e) => {
                return fail(
                    e,
                    "the host's /readyz should name its backends; upgrade or report a bug",
                );
            }
        };
        let summary = format!(
            "database {}, kv {}, mail {}",
            used.database, used.kv, used.mail
        );
        let embedded = embedded(&used);
        if embedded.is_empty() {
            pass(summary)
        } else if settings::flag("allow_embedded") {
            pass(format!("{summary} (embedded backends allowed by config)"))
        } else {
            warn(
                format!("embedded backends in use: {}", embedded.join(", ")),
                HINT,
            )
        }
    }
}

/// The embedded backends in use, described; unknown names count as embedded
/// so that a new backend is looked at rather than waved through.
fn embedded(used: &Backends) -> Vec<String> {
    let mut out = Vec::new();
    match used.database.as_str() {
        "postgres" => {}
        "sqlite" => out.push("database sqlite (files in the data dir)".to_string()),
        other => out.push(format!("database {other} (unknown)")),
    }
    match used.kv.as_str() {
        "redis" => {}
        "memory" => out.push("kv memory (in-process: not shared between replicas)".to_string()),
        other => out.push(format!("kv {other} (unknown)")),
    }
    match used.mail.as_str() {
        "smtp" => {}
        "outbox" => out.push("mail outbox (.eml files, nothing is delivered)".to_string()),
        other => out.push(format!("mail {other} (unknown)")),
    }
    out
}

neo_ops_sdk::export_check!(Storage);

#[cfg(test)]
mod tests {
    use super::*;

    fn b(database: &str, kv: &str, mail: &str) -> Backends {
        Backends {
            database: database.into(),
            kv: kv.into(),
            mail: mail.into(),
        }
    }

    #[test]
    fn only_the_production_backends_pass() {
        assert!(embedded(&b("postgres", "redis", "smtp")).is_empty());
        assert_eq!(embedded(&b("sqlite", "memory", "outbox")).len(), 3);
        assert_eq!(
            embedded(&b("postgres", "memory", "smtp")),
            vec!["kv memory (in-process: not shared between replicas)"]
        );
    }
}
