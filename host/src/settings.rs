//! Deployment settings read from the environment (names from the spec).
//! Unset production variables select the embedded backends.

use std::path::PathBuf;

/// SMTP relay settings: `SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`, `SMTP_PASS`, `SMTP_FROM`.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub from: String,
}

impl std::fmt::Debug for SmtpSettings {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_MAX_INSTANCES: u32 = 128;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Embedded databases, kv snapshot, outbox and component cache live here.
    pub data_dir: PathBuf,
    /// `POSTGRES_MASTER_URL`; embedded SQLite when unset.
    pub postgres_master_url: Option<String>,
    /// `POSTGRES_TENANT_DSN_TEMPLATE`, with a `{tenant}` placeholder.
    pub postgres_tenant_dsn_template: Option<String>,
    /// `REDIS_URL`; in-process kv when unset.
    pub redis_url: Option<String>,
    /// `NEO_OPS_KV_PREFIX`: every kv key and queue lives under it.
    pub kv_prefix: String,
    pub smtp: Option<SmtpSettings>,
    /// Identifies this process in run history (`NEO_OPS_REPLICA`).
    pub replica: String,
    /// Plugin instances that may run at once (`NEO_OPS_MAX_INSTANCES`).
    pub max_instances: u32,
}

impl Settings {
    /// Reads the environment. An invalid value is an error naming it.
    pub fn from_env(data_dir: PathBuf) -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let smtp = match var("SMTP_HOST") {
            None => None,
            Some(host) => {
                let port = match var("SMTP_PORT") {
                    None => 25,
                    Some(p) => p
                        .parse()
                        .map_err(|_| anyhow::anyhow!("SMTP_PORT \"{p}\" is not a port number"))?,
                };
                Some(SmtpSettings {
                    host,
                    port,
                    user: var("SMTP_USER"),
                    pass: var("SMTP_PASS"),
                    from: var("SMTP_FROM").unwrap_or_else(|| "neo-ops@localhost".into()),
                })
            }
        };
        let master = var("POSTGRES_MASTER_URL");
        let template = var("POSTGRES_TENANT_DSN_TEMPLATE");
        if let Some(t) = &template
            && !t.contains("{tenant}")
        {
            anyhow::bail!("POSTGRES_TENANT_DSN_TEMPLATE has no \"{{tenant}}\" placeholder");
        }
        if master.is_some() != template.is_some() {
            anyhow::bail!(
                "set both POSTGRES_MASTER_URL and POSTGRES_TENANT_DSN_TEMPLATE, or neither (embedded SQLite)"
            );
        }
        Ok(Self {
            data_dir,
            postgres_master_url: master,
            postgres_tenant_dsn_template: template,
            redis_url: var("REDIS_URL"),
            kv_prefix: var("NEO_OPS_KV_PREFIX").unwrap_or_else(|| "neo-ops:".into()),
            smtp,
            replica: var("NEO_OPS_REPLICA").unwrap_or_else(default_replica),
            max_instances: match var("NEO_OPS_MAX_INSTANCES") {
                None => DEFAULT_MAX_INSTANCES,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "NEO_OPS_MAX_INSTANCES \"{v}\" is not a number from 1 to 10000"
                        )
                    })?,
            },
        })
    }

    /// Settings for the embedded backends only (tests, local trials).
    pub fn embedded(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            postgres_master_url: None,
            postgres_tenant_dsn_template: None,
            redis_url: None,
            kv_prefix: "neo-ops:".into(),
            smtp: None,
            replica: default_replica(),
            max_instances: DEFAULT_MAX_INSTANCES,
        }
    }
}

fn default_replica() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// Replaces the password in a URL-shaped string with `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://neo:s3cret@db:5432/master"),
            "postgres://neo:***@db:5432/master"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://:pw@h/0?x=a@b"),
            "redis://:***@h/0?x=a@b"
        );
    }
}
