//! The plugin's settings: its manifest block's `config` table, then (where a
//! setting may come from the deployment) an environment variable the
//! manifest grants. One error style for every reader: it names the key and
//! the value. Durations always carry a unit (`"30s"`, `"5m"`); the host
//! rejects a config key named `*_seconds` and a malformed duration under a
//! duration-named key at load, so these readers rarely see a bad one.

use std::str::FromStr;
use std::time::Duration;

use crate::bindings::neo::ops::config as host;
use crate::{ErrorCode, Failure};

pub use host::{env, get};

/// A setting that is present but wrong, naming the key and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        crate::reply::fail(500, e.0)
    }
}

/// A non-empty config value, trimmed.
pub fn text(key: &str) -> Option<String> {
    get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Config `key`, else env var `env`; the error says why neither gave a value,
/// so an operator who set the variable learns when it was not granted.
pub fn lookup(key: &str, env_var: &str) -> Result<String, ConfigError> {
    if let Some(v) = text(key) {
        return Ok(v);
    }
    match env(env_var) {
        Ok(Some(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Err(ConfigError(format!(
            "not configured (config {key} and env {env_var} unset)"
        ))),
        Err(e) if e.code == ErrorCode::Denied => Err(ConfigError(format!(
            "not configured (config {key} unset, env {env_var} not granted)"
        ))),
        Err(e) => Err(ConfigError(format!(
            "not configured (reading env {env_var}: {})",
            e.message
        ))),
    }
}

/// Config `key`, else env var `env_var`, else `None`.
pub fn optional(key: &str, env_var: &str) -> Option<String> {
    lookup(key, env_var).ok()
}

/// Whether a flag is on: `true`, `1`, `yes` (anything else, or unset, is off).
pub fn flag(key: &str) -> bool {
    text(key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// A number, or `default` when unset.
pub fn number<T: FromStr>(key: &str, default: T) -> Result<T, ConfigError> {
    match text(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError(format!("config {key} = \"{v}\" is not a number"))),
    }
}

/// A positive number, or `default` when unset.
pub fn positive(key: &str, default: u64) -> Result<u64, ConfigError> {
    let n = number(key, default)?;
    if n == 0 {
        return Err(ConfigError(format!("config {key} must be at least 1")));
    }
    Ok(n)
}

/// A duration with its unit (the manifest's grammar), or `default` when unset.
pub fn duration(key: &str, default: Duration) -> Result<Duration, ConfigError> {
    match text(key) {
        None => Ok(default),
        Some(v) => {
            neo_ops_text::duration::parse(&v).map_err(|e| ConfigError(format!("config {key}: {e}")))
        }
    }
}

/// A comma-separated list, or `default` when unset.
pub fn list(key: &str, default: &[&str]) -> Vec<String> {
    match text(key) {
        Some(v) => split_list(&v),
        None => default.iter().map(|s| s.to_string()).collect(),
    }
}

/// A comma-separated list from config `key`, else env var `env_var`, else
/// just `default` (e.g. the ops mailbox: `ops_email` / `OPS_EMAIL`).
pub fn list_from(key: &str, env_var: &str, default: &str) -> Vec<String> {
    let list = optional(key, env_var)
        .map(|v| split_list(&v))
        .unwrap_or_default();
    if list.is_empty() {
        vec![default.to_string()]
    } else {
        list
    }
}

/// `"a, b,,c"` → `["a", "b", "c"]`.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
