//! The backends the host runs on, as its readiness document names them:
//! database `postgres` | `sqlite`, kv `redis` | `memory`, mail `smtp` | `outbox`.

use crate::host_info;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    pub database: String,
    pub kv: String,
    pub mail: String,
}

/// Reads `checks.{database,kv,mail}.backend` from `host_info::ready()`.
pub fn in_use() -> Result<Backends, String> {
    parse(&host_info::ready())
}

/// Whether the host writes mail to its data dir's outbox (no SMTP relay is
/// set): mail sent there reached no one.
pub fn goes_to_the_outbox() -> bool {
    in_use().is_ok_and(|b| b.mail == "outbox")
}

/// Whether the kv (and with it every queue) is the host process's own
/// memory (no Redis is set): what a command sees there is not what the
/// serving process has.
pub fn kv_in_process() -> bool {
    in_use().is_ok_and(|b| b.kv == "memory")
}

/// What the kv keeps across a restart of its store, as the host found it:
/// `aof`, `rdb` (snapshots only), `none`, `unknown` (Redis did not say) or
/// `memory` (the in-process kv); `None` from a host that does not tell.
pub fn kv_persistence() -> Option<String> {
    persistence_in(&host_info::ready())
}

fn persistence_in(ready: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(ready).ok()?;
    doc["checks"]["kv"]["persistence"]
        .as_str()
        .map(str::to_string)
}

pub fn parse(ready: &str) -> Result<Backends, String> {
    let doc: serde_json::Value =
        serde_json::from_str(ready).map_err(|e| format!("host readiness is not json ({e})"))?;
    let name = |part: &str| {
        doc["checks"][part]["backend"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("host readiness names no {part} backend"))
    };
    Ok(Backends {
        database: name("database")?,
        kv: name("kv")?,
        mail: name("mail")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_backends() {
        let ready = r#"{"status":"ready","checks":{"database":{"status":"ok","backend":"sqlite"},
            "kv":{"status":"ok","backend":"memory"},"mail":{"status":"ok","backend":"outbox"},
            "plugins":{"status":"ok"}}}"#;
        assert_eq!(
            parse(ready),
            Ok(Backends {
                database: "sqlite".into(),
                kv: "memory".into(),
                mail: "outbox".into()
            })
        );
        assert!(parse(r#"{"checks":{}}"#).unwrap_err().contains("database"));
    }

    #[test]
    fn reads_what_the_kv_keeps() {
        let ready = r#"{"checks":{"kv":{"status":"ok","backend":"redis","persistence":"none"}}}"#;
        assert_eq!(persistence_in(ready).as_deref(), Some("none"));
        assert_eq!(persistence_in(r#"{"checks":{"kv":{}}}"#), None);
        assert_eq!(persistence_in("not json"), None);
    }
}
