//! Deployment settings read from the environment (names from the spec).
//! Unset production variables select the embedded backends.

use std::path::PathBuf;
use std::time::Duration;

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

/// Shares of the slots, in percent of `max_instances`.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionPolicy {
    /// Slots the public class may hold at most (`NEO_OPS_PUBLIC_SHARE`).
    pub public_share: u32,
    /// Slots schedules and queue jobs may hold at most (`NEO_OPS_BACKGROUND_SHARE`).
    pub background_share: u32,
    /// How long an invocation waits for a slot before it is refused
    /// (`NEO_OPS_ADMISSION_WAIT`).
    pub wait: Duration,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self {
            public_share: 50,
            background_share: 40,
            wait: Duration::from_millis(500),
        }
    }
}

pub const DEFAULT_MAX_INSTANCES: u32 = 128;

/// `NEO_OPS_MAX_INSTANCES` (unset: [`DEFAULT_MAX_INSTANCES`]); the benches
/// read it too, so a profiler can shrink the pool.
pub fn max_instances(value: Option<&str>) -> anyhow::Result<u32> {
    let Some(v) = value else {
        return Ok(DEFAULT_MAX_INSTANCES);
    };
    v.parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            anyhow::anyhow!("NEO_OPS_MAX_INSTANCES \"{v}\" is not a number from 1 to 10000")
        })
}

/// `NEO_OPS_PERF_MAP`: `1` or `0` (unset: off); the benches read it too, so
/// `perf report` names a plugin's functions in their profiles.
pub fn perf_map(value: Option<&str>) -> anyhow::Result<bool> {
    match value.map(str::trim) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => anyhow::bail!("NEO_OPS_PERF_MAP \"{v}\" is not 1 or 0"),
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Embedded databases, the outbox and the component cache live here.
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
    /// Shares of the slots per caller class and the bounded wait for one
    /// (`NEO_OPS_PUBLIC_SHARE`, `NEO_OPS_BACKGROUND_SHARE`, `NEO_OPS_ADMISSION_WAIT`).
    pub admission: AdmissionPolicy,
    /// Open HTTP connections at most (`NEO_OPS_MAX_CONNECTIONS`); always
    /// kept below the process's file limit.
    pub max_connections: Option<usize>,
    /// How long a response may wait for its client to read before the
    /// connection is closed (`NEO_OPS_WRITE_STALL`, default 30s).
    pub write_stall: Duration,
    /// How long a kept-alive connection may sit idle between requests
    /// (`NEO_OPS_KEEP_ALIVE_IDLE`, default 75s): longer than a load
    /// balancer's own idle limit (60 s for nginx and AWS), so the balancer,
    /// not neo-ops, closes an idle connection, and never sends a request
    /// down one neo-ops is closing.
    pub keep_alive_idle: Duration,
    /// Bytes per second a client must read, on average while the server
    /// waits for it, to keep its connection (`NEO_OPS_MIN_WRITE_RATE`,
    /// default 1024; 0 leaves only the write stall).
    pub min_write_rate: u32,
    /// Write `/tmp/perf-<pid>.map`, so `perf` names plugin functions
    /// (`NEO_OPS_PERF_MAP=1`).
    pub perf_map: bool,
    /// How far back `serve` looks at start for a slot no replica ran (it
    /// was down, restarting across 03:00): the latest such slot fires once
    /// (`NEO_OPS_SCHEDULE_CATCH_UP`, default 1h; 0 to skip them).
    pub schedule_catch_up: Duration,
    /// The environment's other variables worth seeing in a diagnostic
    /// bundle (masked when shown), read once at start.
    pub diagnostic_env: Vec<(String, String)>,
    /// How long an open tenant database is used before the master is asked
    /// again whether the tenant is still live ([`TENANT_RECHECK`]; tests
    /// shorten it).
    pub tenant_recheck: Duration,
}

/// [`Settings::tenant_recheck`]: a tenant deleted in the master (by the POS,
/// or by hand) stops being served by every replica within this.
pub const TENANT_RECHECK: Duration = Duration::from_secs(30);
/// [`Settings::schedule_catch_up`] unless set.
pub const DEFAULT_SCHEDULE_CATCH_UP: Duration = Duration::from_secs(3600);

/// How long an answer may wait for its client to read (`NEO_OPS_WRITE_STALL`).
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(30);
/// [`Settings::keep_alive_idle`] unless set.
pub const DEFAULT_KEEP_ALIVE_IDLE: Duration = Duration::from_secs(75);
/// [`Settings::min_write_rate`] unless set: 1 KiB/s, far below any real
/// client's link, far above a trickle meant to hold a connection.
pub const DEFAULT_MIN_WRITE_RATE: u32 = 1024;

impl Settings {
    /// Makes the data directory (the embedded backends' files) if missing,
    /// the owner's alone: it holds customers' data.
    pub fn make_data_dir(&self) -> anyhow::Result<()> {
        crate::private_fs::create_private_dir(&self.data_dir)
            .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", self.data_dir.display()))
    }

    /// Reads the environment. An invalid value is an error naming it.
    pub fn from_env(data_dir: PathBuf) -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        for warning in smtp_mistakes(&var, std::env::vars_os().map(|(k, _)| k)) {
            tracing::warn!("{warning}");
        }
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
        if let Some(t) = &template {
            check_tenant_template(t)?;
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
            replica: match var("NEO_OPS_REPLICA") {
                // A queue's workers are `<replica>#<n>`: no replica may be named like one.
                Some(r) if r.contains('#') || r.trim().is_empty() => anyhow::bail!(
                    "NEO_OPS_REPLICA \"{r}\" must be a non-empty name without '#' \
                     (a queue's workers are named <replica>#<n>)"
                ),
                Some(r) => r,
                None => default_replica(),
            },
            max_instances: max_instances(var("NEO_OPS_MAX_INSTANCES").as_deref())?,
            trusted_proxies: match var("NEO_OPS_TRUSTED_PROXIES") {
                None => Vec::new(),
                Some(list) => parse_addresses(&list)?,
            },
            admission: admission_policy(&var)?,
            max_connections: match var("NEO_OPS_MAX_CONNECTIONS") {
                None => None,
                Some(v) => Some(v.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    anyhow::anyhow!("NEO_OPS_MAX_CONNECTIONS \"{v}\" is not a positive number")
                })?),
            },
            write_stall: match var("NEO_OPS_WRITE_STALL") {
                None => DEFAULT_WRITE_STALL,
                Some(v) => neo_ops_text::duration::parse(&v)
                    .ok()
                    .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(600)).contains(d))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "NEO_OPS_WRITE_STALL \"{v}\" is not a duration from 1s to 600s (e.g. \"30s\")"
                        )
                    })?,
            },
            keep_alive_idle: match var("NEO_OPS_KEEP_ALIVE_IDLE") {
                None => DEFAULT_KEEP_ALIVE_IDLE,
                Some(v) => neo_ops_text::duration::parse(&v)
                    .ok()
                    .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(d))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "NEO_OPS_KEEP_ALIVE_IDLE \"{v}\" is not a duration from 1s to 3600s (e.g. \"75s\")"
                        )
                    })?,
            },
            min_write_rate: match var("NEO_OPS_MIN_WRITE_RATE") {
                None => DEFAULT_MIN_WRITE_RATE,
                Some(v) => v.trim().parse().ok().filter(|n| *n <= 1 << 30).ok_or_else(|| {
                    anyhow::anyhow!(
                        "NEO_OPS_MIN_WRITE_RATE \"{v}\" is not a number of bytes per second from 0 to 1073741824"
                    )
                })?,
            },
            perf_map: perf_map(var("NEO_OPS_PERF_MAP").as_deref())?,
            schedule_catch_up: match var("NEO_OPS_SCHEDULE_CATCH_UP") {
                None => DEFAULT_SCHEDULE_CATCH_UP,
                Some(v) => neo_ops_text::duration::parse(&v)
                    .ok()
                    // A day at most: at start each schedule steps through the
                    // window's slots (86,400 for a per-second one).
                    .filter(|d| *d <= Duration::from_secs(86_400))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "NEO_OPS_SCHEDULE_CATCH_UP \"{v}\" is not a duration up to 1d (e.g. \"1h\", \"0s\")"
                        )
                    })?,
            },
            diagnostic_env: diagnostic_env(),
            tenant_recheck: TENANT_RECHECK,
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
            admission: AdmissionPolicy::default(),
            max_connections: None,
            write_stall: DEFAULT_WRITE_STALL,
            keep_alive_idle: DEFAULT_KEEP_ALIVE_IDLE,
            min_write_rate: DEFAULT_MIN_WRITE_RATE,
            perf_map: false,
            // Tests and local trials start with no past slot to run.
            schedule_catch_up: Duration::ZERO,
            diagnostic_env: diagnostic_env(),
            tenant_recheck: TENANT_RECHECK,
        }
    }
}

/// `NEO_OPS_PUBLIC_SHARE` / `NEO_OPS_BACKGROUND_SHARE` (percent of the slots,
/// 1–100) and `NEO_OPS_ADMISSION_WAIT` (a duration with its unit).
fn admission_policy(var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<AdmissionPolicy> {
    let mut policy = AdmissionPolicy::default();
    let percent = |name: &str, default: u32| -> anyhow::Result<u32> {
        match var(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| anyhow::anyhow!("{name} \"{v}\" is not a percentage from 1 to 100")),
        }
    };
    policy.public_share = percent("NEO_OPS_PUBLIC_SHARE", policy.public_share)?;
    policy.background_share = percent("NEO_OPS_BACKGROUND_SHARE", policy.background_share)?;
    // Public and background callers together must leave operators slots.
    if policy.public_share + policy.background_share >= 100 {
        anyhow::bail!(
            "NEO_OPS_PUBLIC_SHARE ({}) and NEO_OPS_BACKGROUND_SHARE ({}) add up to 100 or more: operators would have no slot left",
            policy.public_share,
            policy.background_share
        );
    }
    if let Some(v) = var("NEO_OPS_ADMISSION_WAIT") {
        policy.wait = neo_ops_text::duration::parse(&v)
            .ok()
            .filter(|d| *d <= Duration::from_secs(60))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "NEO_OPS_ADMISSION_WAIT \"{v}\" is not a duration up to 60s (e.g. \"500ms\")"
                )
            })?;
    }
    Ok(policy)
}

/// The mail settings the host reads.
const SMTP_VARS: &[&str] = &[
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USER",
    "SMTP_PASS",
    "SMTP_FROM",
];

/// Mail settings that cannot mean what they say: without `SMTP_HOST` mail
/// goes to the `.eml` outbox and "sends" succeed (a misspelt host would
/// quietly stop every digest), a user without a password (or the reverse)
/// logs in as nobody, and an `SMTP_*` name the host does not read (say
/// `SMTP_PASSWORD`, `SMTP_SERVER`) is ignored; Kubernetes' service
/// variables are not mistakes.
fn smtp_mistakes(
    var: &impl Fn(&str) -> Option<String>,
    names: impl Iterator<Item = std::ffi::OsString>,
) -> Vec<String> {
    let mut found = Vec::new();
    let set: Vec<&str> = SMTP_VARS[1..]
        .iter()
        .copied()
        .filter(|n| var(n).is_some())
        .collect();
    if var("SMTP_HOST").is_none() && !set.is_empty() {
        found.push(format!(
            "{} set but SMTP_HOST is not: mail goes to the .eml outbox, not to a server",
            set.join(", ")
        ));
    }
    if var("SMTP_HOST").is_none() && var("POSTGRES_MASTER_URL").is_some() {
        found.push(
            "POSTGRES_MASTER_URL set but SMTP_HOST is not: mail goes to the .eml outbox, read by no one"
                .into(),
        );
    }
    let port = var("SMTP_PORT");
    if var("SMTP_HOST").is_some()
        && var("SMTP_USER").is_some()
        && !matches!(port.as_deref().map(str::trim), Some("465" | "587"))
    {
        found.push(format!(
            "SMTP_USER set with SMTP_PORT {}: a server on another machine must offer STARTTLS for the login, or no mail goes; use 465 (TLS) or 587 (STARTTLS)",
            port.as_deref().unwrap_or("25 (unset)")
        ));
    }
    if var("SMTP_USER").is_some() != var("SMTP_PASS").is_some() {
        found.push(
            "set both SMTP_USER and SMTP_PASS, or neither: one alone logs in as nobody".into(),
        );
    }
    let mut unknown: Vec<String> = names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with("SMTP_") && !SMTP_VARS.contains(&n.as_str()))
        .filter(|n| !set_for_a_service(n, var(n)))
        .collect();
    unknown.sort();
    for name in unknown {
        found.push(format!(
            "{name} is not a setting neo-ops reads (it reads {}); ignored",
            SMTP_VARS.join(", ")
        ));
    }
    found
}

/// Whether an `SMTP_*` variable is one Kubernetes set for a service whose
/// name starts with `smtp` (`SMTP_RELAY_SERVICE_HOST`,
/// `SMTP_RELAY_PORT=tcp://…`, `SMTP_RELAY_PORT_25_TCP_ADDR`), not a mail
/// setting someone meant.
fn set_for_a_service(name: &str, value: Option<String>) -> bool {
    name.contains("SERVICE")
        || name.contains("_TCP")
        || name.contains("_UDP")
        || value.is_some_and(|v| v.starts_with("tcp://") || v.starts_with("udp://"))
}

/// The process environment's variables worth seeing in a diagnostic bundle.
fn diagnostic_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            EXTRA_FLAGS.contains(&k.as_str())
                || EXTRA_FLAG_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .collect()
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
    /// name, every secret masked (`neo_ops_text::redact::mask_flag`). What the host actually
    /// uses wins over the raw environment.
    pub fn env_flags(&self) -> Vec<(String, String)> {
        let mut flags: std::collections::BTreeMap<String, String> =
            self.diagnostic_env.iter().cloned().collect();
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
                let masked = neo_ops_text::redact::mask_flag(&k, &v);
                (k, masked)
            })
            .collect()
    }
}

/// The trusted proxies, each in its canonical form (`::ffff:10.0.0.1` is
/// `10.0.0.1`), as peers and hops are compared.
fn parse_addresses(list: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<std::net::IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| {
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

/// The tenant DSN template names each tenant's database with `{tenant}`:
/// with the placeholder elsewhere (a query parameter, the user) every
/// tenant would get the same database and share its tables. Not quoted
/// whole: it may hold a password.
fn check_tenant_template(template: &str) -> anyhow::Result<()> {
    match crate::backends::db::database_name(template) {
        Some(name) if name.contains("{tenant}") => Ok(()),
        found => anyhow::bail!(
            "POSTGRES_TENANT_DSN_TEMPLATE must have \"{{tenant}}\" in its database name \
             (postgres://user@host/neo_{{tenant}}); its database name is \"{}\"",
            found.unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_tenant_template_names_the_database_with_the_tenant() {
        for good in [
            "postgres://neo:pw@db:5432/neo_{tenant}?sslmode=require",
            "postgres://db/{tenant}",
        ] {
            assert!(check_tenant_template(good).is_ok(), "{good}");
        }
        for (bad, named) in [
            (
                "postgres://neo:pw@db/tenants?application_name={tenant}",
                "tenants",
            ),
            ("postgres://{tenant}:pw@db/tenants", "tenants"),
            ("postgres://db:5432", ""),
        ] {
            let err = check_tenant_template(bad).unwrap_err().to_string();
            assert!(
                err.ends_with(&format!("its database name is \"{named}\"")),
                "{err}"
            );
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn a_trusted_proxy_is_compared_in_its_canonical_form() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            parse_addresses("::ffff:10.0.0.1, 2001:db8::1").unwrap(),
            [ip("10.0.0.1"), ip("2001:db8::1")]
        );
        assert!(parse_addresses("10.0.0.1, proxy").is_err());
    }
    use super::*;

    #[test]
    fn mail_settings_that_cannot_mean_what_they_say_are_named() {
        fn check(pairs: &[(&str, &str)]) -> Vec<String> {
            let var = |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            };
            smtp_mistakes(&var, pairs.iter().map(|(k, _)| k.into()))
        }
        let login = [("SMTP_HOST", "mx"), ("SMTP_USER", "u"), ("SMTP_PASS", "p")];
        for port in ["465", "587"] {
            assert!(check(&[login[0], login[1], login[2], ("SMTP_PORT", port)]).is_empty());
        }
        assert!(check(&[]).is_empty());
        // A login on a port without TLS of its own, and a production
        // database whose mail nobody would read.
        assert_eq!(
            check(&[login[0], login[1], login[2], ("SMTP_PORT", "2525")]),
            [
                "SMTP_USER set with SMTP_PORT 2525: a server on another machine must offer STARTTLS for the login, or no mail goes; use 465 (TLS) or 587 (STARTTLS)"
            ]
        );
        assert_eq!(check(&login).len(), 1, "port 25 by default");
        assert!(
            check(&[("SMTP_HOST", "mx")]).is_empty(),
            "no login, no secret"
        );
        assert_eq!(
            check(&[("POSTGRES_MASTER_URL", "postgres://db/master")]),
            [
                "POSTGRES_MASTER_URL set but SMTP_HOST is not: mail goes to the .eml outbox, read by no one"
            ]
        );
        // What a Kubernetes service named smtp-relay brings is not a typo.
        assert!(
            check(&[
                ("SMTP_RELAY_SERVICE_HOST", "10.0.0.1"),
                ("SMTP_RELAY_PORT", "tcp://10.0.0.1:25"),
                ("SMTP_RELAY_PORT_25_TCP_ADDR", "10.0.0.1"),
                ("SMTP_HOST_PORT", "tcp://10.0.0.2:25"),
            ])
            .is_empty()
        );
        assert_eq!(check(&[("SMTP_SERVER", "mx")]).len(), 1, "an unknown name");
        let reads = "it reads SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASS, SMTP_FROM";
        assert_eq!(
            check(&[
                ("SMTP_HSOT", "mx"),
                ("SMTP_USER", "u"),
                ("SMTP_PASSWORD", "p")
            ]),
            [
                "SMTP_USER set but SMTP_HOST is not: mail goes to the .eml outbox, not to a server"
                    .to_string(),
                "set both SMTP_USER and SMTP_PASS, or neither: one alone logs in as nobody".into(),
                format!("SMTP_HSOT is not a setting neo-ops reads ({reads}); ignored"),
                format!("SMTP_PASSWORD is not a setting neo-ops reads ({reads}); ignored"),
            ]
        );
    }
}
