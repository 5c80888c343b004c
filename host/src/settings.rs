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
    /// Proxies whose `X-Forwarded-For` names the client (`NEO_OPS_TRUSTED_PROXIES`,
    /// comma-separated addresses); from anyone else the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
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
            trusted_proxies: match var("NEO_OPS_TRUSTED_PROXIES") {
                None => Vec::new(),
                Some(list) => parse_addresses(&list)?,
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
            trusted_proxies: Vec::new(),
        }
    }
}

/// Other variables worth seeing in a diagnostic bundle (read from the process
/// environment; masked like the rest).
const EXTRA_FLAG_PREFIXES: &[&str] = &["NEO_OPS_", "NEO_", "SMTP_", "POSTGRES_"];
const EXTRA_FLAGS: &[&str] = &[
    "REDIS_URL",
    "ALERTMANAGER_URL",
    "SLACK_WEBHOOK_URL",
    "OPS_EMAIL",
    "RUST_LOG",
];

impl Settings {
    /// The configuration as `NAME=value` flags for diagnostics, sorted by
    /// name, every secret masked (see [`mask_flag`]). What the host actually
    /// uses wins over the raw environment.
    pub fn env_flags(&self) -> Vec<(String, String)> {
        let mut flags: std::collections::BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                EXTRA_FLAGS.contains(&k.as_str())
                    || EXTRA_FLAG_PREFIXES.iter().any(|p| k.starts_with(p))
            })
            .collect();
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                flags.insert(k.to_string(), v);
            }
        };
        set(
            "NEO_OPS_DATA_DIR",
            Some(self.data_dir.display().to_string()),
        );
        set("POSTGRES_MASTER_URL", self.postgres_master_url.clone());
        set(
            "POSTGRES_TENANT_DSN_TEMPLATE",
            self.postgres_tenant_dsn_template.clone(),
        );
        set("REDIS_URL", self.redis_url.clone());
        set("NEO_OPS_KV_PREFIX", Some(self.kv_prefix.clone()));
        set("NEO_OPS_REPLICA", Some(self.replica.clone()));
        set(
            "NEO_OPS_MAX_INSTANCES",
            Some(self.max_instances.to_string()),
        );
        if !self.trusted_proxies.is_empty() {
            let list: Vec<String> = self.trusted_proxies.iter().map(|a| a.to_string()).collect();
            set("NEO_OPS_TRUSTED_PROXIES", Some(list.join(",")));
        }
        if let Some(smtp) = &self.smtp {
            set("SMTP_HOST", Some(smtp.host.clone()));
            set("SMTP_PORT", Some(smtp.port.to_string()));
            set("SMTP_USER", smtp.user.clone());
            set("SMTP_PASS", smtp.pass.clone());
            set("SMTP_FROM", Some(smtp.from.clone()));
        }
        flags
            .into_iter()
            .map(|(k, v)| {
                let masked = mask_flag(&k, &v);
                (k, masked)
            })
            .collect()
    }
}

/// Names that hold a secret outright: the whole value is masked.
const SECRET_NAME_PARTS: &[&str] = &[
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASS",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "WEBHOOK",
    "DSN",
];

/// URLs whose path says where, not who: shown with their path (their
/// userinfo and secret query parameters are still masked).
const INFRASTRUCTURE_URLS: &[&str] = &[
    "POSTGRES_MASTER_URL",
    "POSTGRES_TENANT_DSN_TEMPLATE",
    "REDIS_URL",
    "ALERTMANAGER_URL",
];

/// Masks one flag: secret-named variables entirely (a Slack webhook URL is a
/// credential); in URLs the whole userinfo (a bare user may be a token),
/// secret-looking query parameters, and the path of any URL not known to be
/// infrastructure (paths often carry tokens).
pub fn mask_flag(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    let is_url_setting = upper.ends_with("_URL") || upper.ends_with("_TEMPLATE");
    if value.is_empty() {
        return String::new();
    }
    if SECRET_NAME_PARTS.iter().any(|p| upper.contains(p)) && !is_url_setting {
        return "****".into();
    }
    if upper.contains("WEBHOOK") {
        return "****".into();
    }
    mask_url(value, INFRASTRUCTURE_URLS.contains(&upper.as_str()))
}

/// `scheme://****@host:port/path?query` with the userinfo masked, secret
/// query values masked, and the path kept only when `keep_path`.
fn mask_url(value: &str, keep_path: bool) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_string();
    };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = match authority.rfind('@') {
        Some(at) => format!("****@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = &rest[authority_end..];
    let tail = if tail.is_empty() || tail == "/" || keep_path {
        mask_url_query(tail)
    } else {
        "/****".to_string()
    };
    format!("{}{host}{tail}", &value[..scheme_end + 3])
}

/// Replaces the values of credential-like query parameters in a URL.
fn mask_url_query(value: &str) -> String {
    let Some((base, query)) = value.split_once('?') else {
        return value.to_string();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=****"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", masked.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "token",
        "password",
        "secret",
        "key",
        "sig",
        "signature",
        "auth",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

fn parse_addresses(list: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                anyhow::anyhow!("NEO_OPS_TRUSTED_PROXIES: \"{a}\" is not an IP address")
            })
        })
        .collect()
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
    use super::{mask_flag, redact_url};

    #[test]
    fn flags_never_show_secrets() {
        assert_eq!(mask_flag("SMTP_PASS", "hunter2"), "****");
        assert_eq!(mask_flag("NEO_API_TOKEN", "neo_x"), "****");
        assert_eq!(
            mask_flag(
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/x"
            ),
            "****"
        );
        assert_eq!(
            mask_flag(
                "POSTGRES_MASTER_URL",
                "postgres://neo:pw@db/master?sslpassword=p2&x=1"
            ),
            "postgres://****@db/master?sslpassword=****&x=1"
        );
        assert_eq!(
            mask_flag(
                "NEO_OPS_UPSTREAM_URL",
                "https://ghp_abc@api.example.com/v1/s3cretpath?token=t&x=1"
            ),
            "https://****@api.example.com/****"
        );
        assert_eq!(
            mask_flag("ALERTMANAGER_URL", "http://am.internal:9093"),
            "http://am.internal:9093"
        );
        assert_eq!(
            mask_flag("SMTP_HOST", "mail.example.com"),
            "mail.example.com"
        );
        assert_eq!(mask_flag("SMTP_PORT", ""), "");
    }

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
