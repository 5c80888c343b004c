//! The files of a bundle. Every file goes through the redactor, whatever
//! the host already masked: a secret has to slip past both to leak.

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{self, Value as Json, json};
use neo_ops_sdk::{Failure, host_info, time};

use neo_ops_sdk::redact::{mask_flag, redact_json, redact_text};

pub const MASK: &str = "****";

/// Audit records a bundle carries.
pub const AUDIT_RECORDS: i64 = 200;

/// `env.txt`: the host's environment flags, one `NAME=value` a line, sorted.
/// Masked again by the host's own rule (`mask_flag`: secret-named values
/// whole, empty ones kept so "not set" is visible, a connection URL's
/// userinfo), which keeps what only says where: the tenant DSN template's
/// host and database, which a mask by name alone (`DSN`) would hide.
pub fn env_txt() -> String {
    let mut flags = host_info::env_flags();
    flags.sort();
    flags
        .iter()
        .map(|(name, value)| format!("{}={}\n", redact_text(name, MASK), mask_flag(name, value)))
        .collect()
}

/// A JSON document from the host (health, readiness), redacted and pretty.
pub fn host_json(raw: &str) -> String {
    let mut doc = serde_json::from_str(raw).unwrap_or_else(|_| Json::String(raw.to_string()));
    pretty(&mut doc)
}

/// `version.json`: version, git SHA and build time as the host reports it,
/// plus `built_at` in RFC 3339 when that is seconds since the epoch.
pub fn version_json() -> String {
    let v = host_info::version();
    let built_at = v
        .build_time
        .parse::<i64>()
        .ok()
        .map(|secs| time::rfc3339(secs.saturating_mul(1_000_000)));
    pretty(&mut json!({
        "version": v.version,
        "git_sha": v.git_sha,
        "build_time": v.build_time,
        "built_at": built_at,
    }))
}

/// The tenant's row in master `tenants`; `None` for an unknown or deleted one.
pub struct TenantConfig(Json);

const TENANT: &str = "SELECT name, display_name, plan, feature_flags, limits, time_zone, \
                      pii_retention_days FROM tenants WHERE name = $1 AND deleted_at IS NULL";

pub fn tenant_config(tenant: &str) -> Result<Option<TenantConfig>, Failure> {
    let rows = db::query("master", TENANT, &[Value::from(tenant)])?;
    let Some(row) = rows.iter().next() else {
        return Ok(None);
    };
    // JSONB on Postgres arrives as `json`, the same column on SQLite as text.
    let document = |column: &str| match row.text(column) {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.into())),
        None => Json::Null,
    };
    Ok(Some(TenantConfig(json!({
        "name": row.text("name"),
        "display_name": row.text("display_name"),
        "plan": row.text("plan"),
        "time_zone": row.text("time_zone"),
        "pii_retention_days": row.int("pii_retention_days"),
        "feature_flags": document("feature_flags"),
        "limits": document("limits"),
    }))))
}

/// `config.json`.
pub fn config_json(config: &TenantConfig) -> String {
    let mut doc = config.0.clone();
    let limits = doc.get("limits").cloned();
    redact_json(&mut doc, MASK);
    // A limit that counts something (`"api_keys": 3`) is no credential,
    // though its key alone has it masked: its number is put back. A number
    // under any other secret-looking key (`"signing_secret": 8392…`) stays
    // masked.
    if let (Some(Json::Object(limits)), Some(Json::Object(masked))) =
        (limits, doc.get_mut("limits"))
    {
        let counts = |(key, value): &(String, Json)| value.is_number() && counts_something(key);
        masked.extend(limits.into_iter().filter(counts));
    }
    text_of(&doc)
}

/// Whether a limit's key names a count or a bound (`api_keys`,
/// `max_sessions`, `webhook_limit`, `tokens_per_day`), not one value: a
/// plural, though not a word that ends in `ss` (`kiosk_pass` is a PIN).
fn counts_something(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    (key.ends_with('s') && !key.ends_with("ss"))
        || key.starts_with("max")
        || key.starts_with("min")
        || ["limit", "count", "_per_"].iter().any(|w| key.contains(w))
}

const RECENT_AUDIT: &str = "SELECT id, at, actor, action, target, tenant, request_id, plugin, details \
                            FROM audit_log WHERE tenant = $1 ORDER BY id DESC LIMIT $2";

/// `recent-logs.txt`: the tenant's recent host log lines (this replica's
/// in-memory ring: invocations and what plugins logged during them), then
/// its last [`AUDIT_RECORDS`] audit records, both oldest first (read like a
/// log); says so when there are none. An audit record is one line:
/// `<at> #<id> actor="…" action="…" target="…" tenant="…" request_id="…" plugin="…" details={…}`.
/// Returns the text and the number of audit records.
pub fn recent_logs(tenant: &str) -> Result<(String, usize), Failure> {
    let rows = db::query(
        "master",
        RECENT_AUDIT,
        &[Value::from(tenant), Value::Int(AUDIT_RECORDS)],
    )?;
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let quoted = |column: &str| match r.text(column) {
                Some(s) => Json::String(redact_text(s, MASK)).to_string(),
                None => "null".to_string(),
            };
            let mut details = r
                .text("details")
                .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Json::String(d.into())))
                .unwrap_or(Json::Null);
            redact_json(&mut details, MASK);
            let at = r
                .get("at")
                .as_timestamp()
                .map(time::rfc3339)
                .unwrap_or_else(|| "-".into());
            format!(
                "{at} #{id} actor={actor} action={action} target={target} tenant={tenant} \
                 request_id={request_id} plugin={plugin} details={details}\n",
                id = r.int("id").unwrap_or_default(),
                actor = quoted("actor"),
                action = quoted("action"),
                target = quoted("target"),
                tenant = quoted("tenant"),
                request_id = quoted("request_id"),
                plugin = quoted("plugin"),
            )
        })
        .collect();
    lines.reverse();
    let count = lines.len();
    let host_lines = host_info::tenant_logs();
    let mut text = String::new();
    if host_lines.is_empty() && lines.is_empty() {
        text.push_str(&format!(
            "No host log lines and no audit records for tenant \"{tenant}\" yet.\n"
        ));
        return Ok((text, 0));
    }
    text.push_str(&format!(
        "# Host log lines for tenant \"{tenant}\" (this replica, oldest first): {}\n",
        host_lines.len()
    ));
    for line in &host_lines {
        text.push_str(&redact_text(line, MASK));
        text.push('\n');
    }
    text.push_str(&format!(
        "\n# Audit records for tenant \"{tenant}\" (the last {AUDIT_RECORDS} at most, oldest first): {count}\n"
    ));
    text.push_str(&lines.concat());
    Ok((text, count))
}

fn pretty(doc: &mut Json) -> String {
    redact_json(doc, MASK);
    text_of(doc)
}

/// `doc` as indented JSON text ending in a line break.
fn text_of(doc: &Json) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("a json value always serialises");
    text.push('\n');
    text
}
