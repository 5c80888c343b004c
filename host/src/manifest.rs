//! `plugins.toml`: which components run, on which triggers, with which grants
//! and limits. Every mistake is reported as `file:line:column: message`.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Keys under this kv prefix belong to the host (locks, queues, dead
/// letters, liveness); no plugin grant may reach them.
pub const HOST_NAMESPACE: &str = "__";

/// Longest a plugin may run (a purge over a large tenant takes minutes).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Largest request body the host reads for a route (a route may set less:
/// `max_body`).
pub const MAX_REQUEST_BODY: usize = 2 << 20;

/// Largest linear memory any plugin may be granted.
pub const MAX_MEMORY: usize = 1 << 30;
/// The smallest memory limit: the project's plugins start with 3 MiB of
/// initial memory (`plugins/.cargo/config.toml`), and one limited below
/// that could not be instantiated at all.
pub const MIN_MEMORY: usize = 4 << 20;

/// Tenant names double as database-name parts: keep them tame.
pub fn valid_tenant_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Roles, ordered: `super_admin` can do everything `admin` can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Admin,
    SuperAdmin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "super_admin" => Some(Role::SuperAdmin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::SuperAdmin => "super_admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub role: Option<Role>,
    /// Largest body the host reads for it ([`MAX_REQUEST_BODY`] unless the
    /// route's `max_body` says less): a larger one is refused (413) before
    /// it is read, and a body being read holds no more of the budget.
    pub max_body: usize,
}

/// A cron expression, parsed once at load: 5 fields (`0 20 * * *`) or 6
/// with seconds.
#[derive(Debug, Clone)]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
}

impl CronExpr {
    pub fn parse(text: &str) -> Result<Self, String> {
        plain_time_fields(text)?;
        let cron = croner::Cron::new(text)
            .with_seconds_optional()
            .parse()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.to_string(),
            cron,
        })
    }

    /// Whether any date matches: croner takes any field in range, so
    /// "0 3 31 4 *" (April the 31st) parses, and such a schedule would
    /// wait for ever without a word.
    pub fn ever_fires(&self) -> bool {
        self.cron
            .find_next_occurrence(&chrono::Utc::now(), false)
            .is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first slot strictly after `after`, evaluated in `tz`.
    ///
    /// A local time that a DST fall-back repeats is one slot, at its first
    /// reading (croner maps a local time to its earliest instant), so a
    /// daily 01:30 runs once that night. From inside the repeated hour that
    /// first reading is already past: such a slot is passed over, rather
    /// than handed back as due (it was, an hour ago).
    pub fn next_after(
        &self,
        tz: chrono_tz::Tz,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        use chrono::TimeZone;
        let mut from = after.with_timezone(&tz);
        loop {
            let slot = match self.cron.find_next_occurrence(&from, false) {
                Ok(slot) => slot,
                Err(croner::errors::CronError::InvalidTime) => self.after_a_long_gap(tz, &from)?,
                Err(_) => return None,
            };
            if slot.with_timezone(&chrono::Utc) > after {
                return Some(slot.with_timezone(&chrono::Utc));
            }
            // Each pass moves the local time on, and a repeated hour ends.
            from = tz.from_local_datetime(&slot.naive_local()).latest()?;
        }
    }

    /// The next slot after `from` when its local time falls in a clock
    /// gap longer than the hour croner looks past (Antarctica/Troll skips
    /// two): as in a shorter gap, it fires when the gap ends.
    fn after_a_long_gap(
        &self,
        tz: chrono_tz::Tz,
        from: &chrono::DateTime<chrono_tz::Tz>,
    ) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        use chrono::TimeZone;
        use chrono::Timelike;
        // The next matching wall-clock time, on a clock without gaps.
        let wall = chrono::Utc.from_utc_datetime(&from.naive_local());
        let slot = self.cron.find_next_occurrence(&wall, false).ok()?;
        // Gaps end on a whole minute (the slot fires then, its seconds
        // too, as croner's do); none is longer than a day.
        let minute = slot.naive_utc().with_second(0)?;
        (1..=24 * 60).find_map(|minutes| {
            let later = minute + chrono::Duration::minutes(minutes);
            tz.from_local_datetime(&later).earliest()
        })
    }
}

/// Seconds, minutes and hours take numbers, `*`, ranges, steps and lists
/// only: croner also reads `L` and `W` there, which select no time at all
/// and send its search to the year 5000 a minute at a time (a load or
/// `check` stalled for minutes).
fn plain_time_fields(text: &str) -> Result<(), String> {
    if text.trim_start().starts_with('@') {
        return Ok(());
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let times = if fields.len() == 6 { 3 } else { 2 };
    for field in fields.iter().take(times) {
        let plain = |c: char| c.is_ascii_digit() || "*/,-?".contains(c);
        if let Some(c) = field.chars().find(|c| !plain(*c)) {
            return Err(format!(
                "'{c}' in \"{field}\": seconds, minutes and hours take numbers, *, ranges, steps and lists"
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: CronExpr,
    pub tz: chrono_tz::Tz,
    pub args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it (up to 64×).
    pub backoff: Duration,
    /// Jobs one replica runs at once (its workers), so one slow job (a
    /// webhook receiver taking its time) holds up no other.
    pub concurrency: u32,
}

/// Most workers a queue may have per replica.
pub const MAX_CONCURRENCY: u32 = 32;

/// Which database a plugin may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbGrant {
    Master,
    /// The invocation's own tenant only.
    OwnTenant,
    AnyTenant,
    Tenant(String),
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `https://*`: any host and port with this scheme (webhooks to
    /// customer-configured URLs). Still no other scheme, no redirects.
    pub fn is_any_host(&self) -> bool {
        self.host == "*"
    }
}

/// What a plugin may touch. Everything absent is denied.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub db: Vec<DbGrant>,
    pub kv: Vec<String>,
    pub mail: bool,
    /// May append to the audit log (`audit = true`).
    pub audit: bool,
    pub http: Vec<Endpoint>,
    pub env: Vec<String>,
    /// Absolute paths, or `arg:--flag`: the path given to that flag of the
    /// invocation's command line.
    pub files: Vec<String>,
    pub queues: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub component: PathBuf,
    pub routes: Vec<Route>,
    pub schedules: Vec<Schedule>,
    pub command: bool,
    pub queue: Option<QueueSpec>,
    /// Exports the preflight `check` interface.
    pub check: bool,
    /// `severity = "advisory"`: the check's failure only warns the checklist.
    pub advisory: bool,
    pub grants: Grants,
    pub limits: Limits,
    pub config: HashMap<String, String>,
}

impl Plugin {
    /// Whether a trigger calls the general `run` export.
    pub fn needs_handler(&self) -> bool {
        !self.routes.is_empty()
            || !self.schedules.is_empty()
            || self.command
            || self.queue.is_some()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub plugins: Vec<Plugin>,
}

impl Manifest {
    /// Schedules no date matches (`0 0 31 2 *`), by plugin: accepted, as
    /// that is how a schedule is parked without deleting it, and said where
    /// the manifest is put to use (`serve` and its reloads, `check`) rather
    /// than by every command that reads it.
    pub fn parked_schedules(&self) -> impl Iterator<Item = (&str, &CronExpr)> {
        self.plugins.iter().flat_map(|p| {
            p.schedules
                .iter()
                .filter(|s| !s.cron.ever_fires())
                .map(move |s| (p.name.as_str(), &s.cron))
        })
    }
}

/// A manifest error with its position.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

// ---- raw, as written -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    plugins: BTreeMap<Spanned<String>, RawPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    component: Spanned<String>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    schedules: Vec<Spanned<RawSchedule>>,
    #[serde(default)]
    command: bool,
    queue: Option<Spanned<RawQueue>>,
    #[serde(default)]
    check: bool,
    severity: Option<Spanned<String>>,
    #[serde(default)]
    grants: RawGrants,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Spanned<String>,
    path: Spanned<String>,
    role: Option<Spanned<String>>,
    max_body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Spanned<String>,
    #[serde(default = "utc")]
    tz: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
}

fn utc() -> Spanned<String> {
    Spanned::new(0..0, "UTC".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: Spanned<String>,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    backoff: Option<Spanned<String>>,
    concurrency: Option<Spanned<u32>>,
}

fn default_attempts() -> u32 {
    5
}

/// The first retry's delay when a queue names none.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    db: Vec<Spanned<String>>,
    #[serde(default)]
    kv: Vec<Spanned<String>>,
    #[serde(default)]
    mail: bool,
    #[serde(default)]
    audit: bool,
    #[serde(default)]
    http: Vec<Spanned<String>>,
    #[serde(default)]
    env: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    queues: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

// ---- loading ---------------------------------------------------------------

/// Where relative component paths are looked up: next to the manifest, then
/// in the directory the build script put the plugins in.
pub fn built_plugins_dir() -> PathBuf {
    PathBuf::from(env!("NEO_OPS_BUILT_PLUGINS"))
}

/// Reads and validates a manifest file.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read manifest: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base)
}

/// Parses manifest text; `file` names it in errors, `base` anchors relative paths.
pub fn parse(text: &str, file: &str, base: &Path) -> Result<Manifest, ManifestError> {
    let err_at = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        ManifestError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        err_at(offset, e.message().trim().to_string())
    })?;

    let mut plugins = Vec::new();
    let mut seen_routes: HashMap<(String, String), String> = HashMap::new();
    // The router's own matcher: a pair of paths it cannot tell apart
    // (`/x/{a}` beside `/x/{b}`) is refused here, not by a panic at start.
    let mut matcher: matchit::Router<String> = matchit::Router::new();
    let mut consumers: HashMap<String, String> = HashMap::new();
    for (name, rp) in raw.plugins {
        let at = |s: &std::ops::Range<usize>, m: String| err_at(s.start, m);
        let name_span = name.span();
        let name = name.into_inner();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(at(
                &name_span,
                format!("plugin name \"{name}\" must be lowercase letters, digits and '-'"),
            ));
        }
        let component = resolve_component(base, rp.component.get_ref()).ok_or_else(|| {
            at(
                &rp.component.span(),
                format!("component \"{}\" not found", rp.component.get_ref()),
            )
        })?;

        let mut routes = Vec::new();
        for r in &rp.routes {
            let r = r.get_ref();
            let method = r.method.get_ref().to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                return Err(at(
                    &r.method.span(),
                    format!("unknown method \"{}\"", r.method.get_ref()),
                ));
            }
            let path = r.path.get_ref().clone();
            validate_route_path(&path).map_err(|m| at(&r.path.span(), m))?;
            let role = match &r.role {
                None => None,
                Some(role) => Some(Role::parse(role.get_ref()).ok_or_else(|| {
                    at(
                        &role.span(),
                        format!(
                            "unknown role \"{}\" (expected admin or super_admin)",
                            role.get_ref()
                        ),
                    )
                })?),
            };
            let known_path = seen_routes.keys().any(|(_, p)| p == &path);
            if !known_path && let Err(e) = matcher.insert(&path, name.clone()) {
                let other = match &e {
                    matchit::InsertError::Conflict { with } => format!(" \"{with}\""),
                    _ => String::new(),
                };
                return Err(at(
                    &r.path.span(),
                    format!("route \"{path}\" overlaps route{other}: {e}"),
                ));
            }
            if let Some(other) = seen_routes.insert((method.clone(), path.clone()), name.clone()) {
                return Err(at(
                    &r.path.span(),
                    format!(
                        "duplicate route {method} {path} (already served by plugin \"{other}\")"
                    ),
                ));
            }
            let max_body = match &r.max_body {
                None => MAX_REQUEST_BODY,
                Some(size) => parse_size(size.get_ref())
                    .filter(|n| (1..=MAX_REQUEST_BODY).contains(n))
                    .ok_or_else(|| {
                        at(
                            &size.span(),
                            format!(
                                "bad max_body \"{}\" (e.g. \"64KiB\"; from 1 byte to 2MiB, the host's limit)",
                                size.get_ref()
                            ),
                        )
                    })?,
            };
            routes.push(Route {
                method,
                path,
                role,
                max_body,
            });
        }

        let mut schedules = Vec::new();
        for s in &rp.schedules {
            let s = s.get_ref();
            let cron = CronExpr::parse(s.cron.get_ref()).map_err(|e| {
                at(
                    &s.cron.span(),
                    format!("bad cron \"{}\": {e}", s.cron.get_ref()),
                )
            })?;
            let tz: chrono_tz::Tz = s.tz.get_ref().parse().map_err(|_| {
                at(
                    &s.tz.span(),
                    format!("unknown time zone \"{}\"", s.tz.get_ref()),
                )
            })?;
            schedules.push(Schedule {
                cron,
                tz,
                args: s.args.clone(),
            });
        }

        let queue = match &rp.queue {
            None => None,
            Some(q) => {
                let q = q.get_ref();
                if !is_simple_name(q.name.get_ref()) {
                    return Err(at(
                        &q.name.span(),
                        format!("bad queue name \"{}\"", q.name.get_ref()),
                    ));
                }
                if q.max_attempts == 0 {
                    return Err(at(&q.name.span(), "max_attempts must be at least 1".into()));
                }
                if let Some(other) = consumers.insert(q.name.get_ref().clone(), name.clone()) {
                    return Err(at(
                        &q.name.span(),
                        format!(
                            "queue \"{}\" already has a consumer (plugin \"{other}\"); a queue has one",
                            q.name.get_ref()
                        ),
                    ));
                }
                let backoff = match &q.backoff {
                    None => DEFAULT_BACKOFF,
                    Some(b) => parse_duration(b.get_ref())
                        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                        .ok_or_else(|| {
                            at(
                                &b.span(),
                                format!(
                                    "bad backoff \"{}\" (e.g. \"200ms\", \"30s\"; at most 1h)",
                                    b.get_ref()
                                ),
                            )
                        })?,
                };
                let concurrency = match &q.concurrency {
                    None => 1,
                    Some(c) if (1..=MAX_CONCURRENCY).contains(c.get_ref()) => *c.get_ref(),
                    Some(c) => {
                        return Err(at(
                            &c.span(),
                            format!(
                                "bad concurrency {} (1 to {MAX_CONCURRENCY} jobs at once per replica)",
                                c.get_ref()
                            ),
                        ));
                    }
                };
                Some(QueueSpec {
                    name: q.name.get_ref().clone(),
                    max_attempts: q.max_attempts,
                    backoff,
                    concurrency,
                })
            }
        };

        let advisory = match &rp.severity {
            None => false,
            Some(s) => match s.get_ref().as_str() {
                _ if !rp.check => {
                    return Err(at(
                        &s.span(),
                        "severity applies to checks only (check = true)".into(),
                    ));
                }
                "required" => false,
                "advisory" => true,
                other => {
                    return Err(at(
                        &s.span(),
                        format!("unknown severity \"{other}\" (expected required or advisory)"),
                    ));
                }
            },
        };
        let config = parse_config(&rp.config, &at)?;
        let grants = parse_grants(&rp.grants, &at)?;
        let limits = parse_limits(&rp.limits, &at)?;
        plugins.push(Plugin {
            name,
            component,
            routes,
            schedules,
            command: rp.command,
            queue,
            check: rp.check,
            advisory,
            grants,
            limits,
            config,
        });
    }
    // Allowed, since jobs wait in the queue for a consumer to come back (a
    // test deployment may want exactly that), but said: a plugin enqueueing
    // there (owner-digest's nightly jobs) gets no error and nothing runs.
    for p in &plugins {
        for q in p
            .grants
            .queues
            .iter()
            .filter(|q| !consumers.contains_key(*q))
        {
            tracing::warn!(
                plugin = %p.name,
                queue = %q,
                "the plugin may enqueue on a queue no plugin consumes: its jobs wait until one does"
            );
        }
    }
    Ok(Manifest { plugins })
}

fn resolve_component(base: &Path, name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    [base.join(p), built_plugins_dir().join(p)]
        .into_iter()
        .find(|c| c.is_file())
}

/// The files that decide what a component resolved to `component` (for the
/// manifest at `manifest_path`) is: itself, and, when it was found in the
/// build directory, the file of that name beside the manifest, which is
/// looked up first (a copy dropped there replaces the build).
pub fn component_sources(manifest_path: &Path, component: &Path) -> Vec<PathBuf> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let beside = component
        .strip_prefix(built_plugins_dir())
        .ok()
        .map(|name| base.join(name));
    std::iter::once(component.to_path_buf())
        .chain(beside)
        .collect()
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Config keys that hold a duration; their value must parse as one.
const DURATION_KEYS: &[&str] = &[
    "ttl", "timeout", "window", "cooldown", "age", "interval", "backoff", "delay",
];
/// A unit in a key's name: the convention is a unit in the value instead.
const UNIT_SUFFIXES: &[&str] = &[
    "_seconds", "_secs", "_ms", "_millis", "_minutes", "_hours", "_days",
];

/// One convention for plugin config: durations carry their unit in the value
/// (`lock_ttl = "5m"`), never in the key (`lock_ttl_seconds = "300"`), and a
/// duration-named key with a value that is not a duration is an error here,
/// at load, rather than a failure of every run that reads it.
fn parse_config(
    raw: &BTreeMap<String, Spanned<String>>,
    at: &dyn Fn(&std::ops::Range<usize>, String) -> ManifestError,
) -> Result<HashMap<String, String>, ManifestError> {
    let mut config = HashMap::new();
    for (key, value) in raw {
        if let Some(unit) = UNIT_SUFFIXES.iter().find(|u| key.ends_with(*u)) {
            let bare = &key[..key.len() - unit.len()];
            return Err(at(
                &value.span(),
                format!(
                    "config key \"{key}\" names a unit; durations carry theirs in the value: {bare} = \"30s\""
                ),
            ));
        }
        let last_word = key.rsplit('_').next().unwrap_or(key);
        if DURATION_KEYS.contains(&last_word)
            && let Err(e) = neo_ops_text::duration::parse(value.get_ref())
        {
            return Err(at(&value.span(), format!("config {key}: {e}")));
        }
        config.insert(key.clone(), value.get_ref().clone());
    }
    Ok(config)
}

/// Routes the host serves itself; no plugin may take them.
pub mod host_routes {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const PREFLIGHT: &str = "/api/admin/preflight";
    pub const METRICS: &str = "/metrics";
    pub const WHOAMI: &str = "/api/admin/whoami";
    pub const AUDIT: &str = "/api/admin/audit";
    pub const ALL: &[&str] = &[HEALTHZ, READYZ, PREFLIGHT, METRICS, WHOAMI, AUDIT];
}

/// A route path the router accepts: `/a/{param}/b`, `/files/{*rest}` (last
/// segment only). The older `:param` / `*rest` syntax gets a hint.
fn validate_route_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("route path \"{path}\" must start with '/'"));
    }
    if host_routes::ALL.contains(&path.trim_end_matches('/')) {
        return Err(format!("route path \"{path}\" is served by the host"));
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        if let Some(name) = seg.strip_prefix(':') {
            return Err(format!(
                "path parameter \"{seg}\" in \"{path}\" uses the old syntax; write \"{{{name}}}\""
            ));
        }
        if let Some(name) = seg.strip_prefix('*') {
            return Err(format!(
                "wildcard \"{seg}\" in \"{path}\" uses the old syntax; write \"{{*{name}}}\""
            ));
        }
        if seg.contains(['{', '}']) {
            let inner = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
            match inner {
                Some(p) if p.starts_with('*') && is_simple_name(&p[1..]) => {
                    if i + 1 != segments.len() {
                        return Err(format!(
                            "wildcard \"{seg}\" in \"{path}\" must be the last segment"
                        ));
                    }
                }
                Some(p) if is_simple_name(p) => {}
                _ => return Err(format!("bad path parameter \"{seg}\" in \"{path}\"")),
            }
        }
    }
    Ok(())
}

fn parse_grants(
    g: &RawGrants,
    at: &dyn Fn(&std::ops::Range<usize>, String) -> ManifestError,
) -> Result<Grants, ManifestError> {
    let mut db = Vec::new();
    for d in &g.db {
        let v = d.get_ref();
        db.push(match v.as_str() {
            "master" => DbGrant::Master,
            "tenant" => DbGrant::OwnTenant,
            "tenant:*" => DbGrant::AnyTenant,
            other => match other.strip_prefix("tenant:") {
                Some(t) if valid_tenant_name(t) => DbGrant::Tenant(t.to_string()),
                _ => {
                    return Err(at(
                        &d.span(),
                        format!("unknown db grant \"{v}\" (expected master, tenant, tenant:* or tenant:<name>)"),
                    ));
                }
            },
        });
    }
    let mut kv = Vec::new();
    for k in &g.kv {
        let prefix = k.get_ref();
        if prefix.is_empty() {
            return Err(at(
                &k.span(),
                "an empty kv prefix would grant every key".into(),
            ));
        }
        let host = HOST_NAMESPACE;
        if prefix.starts_with(host) || host.starts_with(prefix.as_str()) {
            return Err(at(
                &k.span(),
                format!(
                    "kv prefix \"{prefix}\" overlaps the host's namespace \"{host}\" (locks, queues, idempotency); pick another prefix"
                ),
            ));
        }
        kv.push(k.get_ref().clone());
    }
    let mut files = Vec::new();
    for f in &g.files {
        let v = f.get_ref();
        let ok = v.strip_prefix("arg:--").is_some_and(is_simple_name)
            || v == "data-dir"
            || Path::new(v).is_absolute();
        if !ok {
            return Err(at(
                &f.span(),
                format!(
                    "bad files grant \"{v}\" (expected an absolute path, arg:--<flag> or data-dir)"
                ),
            ));
        }
        files.push(v.clone());
    }
    let mut env = Vec::new();
    for e in &g.env {
        let name = e.get_ref();
        if is_host_setting(name) {
            return Err(at(
                &e.span(),
                format!(
                    "env grant \"{name}\" names one of the host's own settings: its credentials and pools stay with the host"
                ),
            ));
        }
        env.push(name.clone());
    }
    let mut queues = Vec::new();
    for q in &g.queues {
        let name = q.get_ref();
        // As a consumer's queue: anything else could name the host's own
        // keys beside a queue (another replica's in-flight list).
        if !is_simple_name(name) {
            return Err(at(
                &q.span(),
                format!("bad queue grant \"{name}\" (letters, digits, '-', '_' and '.' only)"),
            ));
        }
        queues.push(name.clone());
    }
    let mut http = Vec::new();
    for h in &g.http {
        http.push(parse_endpoint(h.get_ref()).map_err(|m| at(&h.span(), m))?);
    }
    Ok(Grants {
        db,
        kv,
        mail: g.mail,
        audit: g.audit,
        http,
        env,
        files,
        queues,
    })
}

/// The environment the host reads its own settings from (database and
/// Redis URLs, SMTP credentials, `NEO_OPS_*`, and the `PG*` variables its
/// Postgres driver falls back to, `PGPASSWORD` among them): never a
/// plugin's to read.
fn is_host_setting(name: &str) -> bool {
    // libpq's names are PG and capitals only (PGPASSWORD, PGSSLKEY):
    // `PGP_SIGNING_KEY` is not one of them.
    let libpq = name
        .strip_prefix("PG")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase()));
    libpq
        || name == "REDIS_URL"
        || ["POSTGRES_", "SMTP_", "NEO_OPS_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// `scheme://host[:port]` with no path.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = || format!("bad http grant \"{s}\" (expected scheme://host[:port])");
    let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest == "*" {
        return Ok(Endpoint {
            scheme,
            host: "*".into(),
            port: 0,
        });
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*']) {
        return Err(bad());
    }
    split_host_port(rest, default_port).ok_or_else(bad)?;
    // The host as a request's URL spells it (`127.1` is `127.0.0.1`,
    // `bücher.example` is `xn--bcher-kva.example`, `[0:0::1]` is `[::1]`):
    // compared as written, such a grant would deny every request.
    let url = url::Url::parse(&format!("{scheme}://{rest}/")).map_err(|_| bad())?;
    let host = url.host_str().ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(default_port);
    Ok(Endpoint {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Splits `host[:port]`, keeping `[v6]` brackets off the host.
pub fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_ascii_lowercase(), p.parse().ok()?)),
        None => Some((s.to_ascii_lowercase(), default_port)),
    }
}

fn parse_limits(
    l: &RawLimits,
    at: &dyn Fn(&std::ops::Range<usize>, String) -> ManifestError,
) -> Result<Limits, ManifestError> {
    let mut limits = Limits::default();
    if let Some(m) = &l.memory {
        limits.memory_bytes = parse_size(m.get_ref())
            .filter(|b| (MIN_MEMORY..=MAX_MEMORY).contains(b))
            .ok_or_else(|| {
                at(
                    &m.span(),
                    format!(
                        "bad memory limit \"{}\" (e.g. \"32MiB\"; from 4MiB, the project's plugins \
                         start with 3 MiB, to 1GiB)",
                        m.get_ref()
                    ),
                )
            })?;
    }
    if let Some(t) = &l.timeout {
        limits.timeout = parse_duration(t.get_ref())
            .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
            .ok_or_else(|| {
                at(
                    &t.span(),
                    format!(
                        "bad timeout \"{}\" (e.g. \"500ms\", \"2s\", \"5m\"; at most 24h)",
                        t.get_ref()
                    ),
                )
            })?;
    }
    Ok(limits)
}

/// `"32MiB"`, `"512KiB"`, `"1GiB"` or a byte count.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A duration with its unit (`"500ms"`, `"2s"`, `"5m"`, `"1h"`, `"1d"`):
/// the grammar the plugins' config uses too.
pub fn parse_duration(s: &str) -> Option<Duration> {
    neo_ops_text::duration::parse(s).ok()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn eight_pm_in_kolkata_is_half_past_two_utc() {
        let cron = CronExpr::parse("0 20 * * *").unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let next = cron.next_after(chrono_tz::Asia::Kolkata, after).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 25, 14, 30, 0).unwrap());
    }

    /// An instant of 2026, in UTC.
    fn at(month: u32, day: u32, hour: u32, minute: u32) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, day, hour, minute, 0)
            .unwrap()
    }

    /// New York, 2026: clocks go back at 02:00 EDT on 1 November (01:00 to
    /// 02:00 local happens twice) and forward at 02:00 EST on 8 March.
    #[test]
    fn a_slot_in_a_dst_change_fires_once() {
        let ny = chrono_tz::America::New_York;
        let daily = CronExpr::parse("30 1 * * *").unwrap();
        // Autumn: 01:30 EDT (05:30 UTC), then not 01:30 EST: the next day.
        assert_eq!(
            daily.next_after(ny, at(11, 1, 4, 0)),
            Some(at(11, 1, 5, 30))
        );
        assert_eq!(
            daily.next_after(ny, at(11, 1, 5, 30)),
            Some(at(11, 2, 6, 30))
        );
        // From inside the repeated hour (01:10 EST) the night's slot is
        // past: never an instant before `after`.
        assert_eq!(
            daily.next_after(ny, at(11, 1, 6, 10)),
            Some(at(11, 2, 6, 30))
        );
        let quarter = CronExpr::parse("*/15 * * * *").unwrap();
        assert_eq!(
            quarter.next_after(ny, at(11, 1, 6, 10)),
            Some(at(11, 1, 7, 0))
        );
        // Spring: 02:30 does not exist that night; the slot is 03:00 EDT.
        let spring = CronExpr::parse("30 2 * * *").unwrap();
        assert_eq!(spring.next_after(ny, at(3, 8, 6, 0)), Some(at(3, 8, 7, 0)));
        assert_eq!(spring.next_after(ny, at(3, 8, 7, 0)), Some(at(3, 9, 6, 30)));
    }

    #[test]
    fn a_slot_in_a_two_hour_gap_fires_after_it() {
        // Troll's clocks go from 01:00 +00 to 03:00 +02 on 2026-03-29.
        let troll = chrono_tz::Antarctica::Troll;
        let daily = CronExpr::parse("30 1 * * *").unwrap();
        assert_eq!(
            daily.next_after(troll, at(3, 29, 0, 0)),
            Some(at(3, 29, 1, 0))
        );
        assert_eq!(
            daily.next_after(troll, at(3, 29, 1, 0)),
            Some(at(3, 29, 23, 30))
        );
        let with_seconds = CronExpr::parse("30 30 1 * * *").unwrap();
        assert_eq!(
            with_seconds.next_after(troll, at(3, 29, 0, 0)),
            Some(at(3, 29, 1, 0))
        );
    }

    #[test]
    fn the_host_s_settings_and_its_driver_s_are_not_granted() {
        for host in [
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSSLKEY",
            "REDIS_URL",
            "SMTP_PASS",
        ] {
            assert!(is_host_setting(host), "{host}");
        }
        for plugin in ["PGP_SIGNING_KEY", "PG", "SLACK_WEBHOOK_URL", "OPS_EMAIL"] {
            assert!(!is_host_setting(plugin), "{plugin}");
        }
    }

    #[test]
    fn bad_cron_is_an_error() {
        assert!(CronExpr::parse("61 * * * *").is_err());
        assert!(CronExpr::parse("every day").is_err());
        assert!(CronExpr::parse("*/5 * * * * *").is_ok());
        // `L` and `W` where no time can match: refused, not searched for.
        for no_time in ["L * * * * *", "0 L * * *", "0 0 l * * *", "0 W * * *"] {
            let err = CronExpr::parse(no_time).unwrap_err();
            assert!(
                err.contains("seconds, minutes and hours take numbers"),
                "{err}"
            );
        }
        for fine in [
            "0 0 L * *",
            "0 9 * * 5L",
            "0 9 * * MON#2",
            "@daily",
            "0 0 1 JUL *",
        ] {
            assert!(CronExpr::parse(fine).is_ok(), "{fine}");
        }
        for never in ["0 3 31 4 *", "0 0 30 2 *"] {
            assert!(!CronExpr::parse(never).unwrap().ever_fires(), "{never}");
        }
        // Every four years is still a schedule.
        assert!(CronExpr::parse("0 0 29 2 *").unwrap().ever_fires());
        assert!(CronExpr::parse("*/5 * * * * *").unwrap().ever_fires());
    }
}
