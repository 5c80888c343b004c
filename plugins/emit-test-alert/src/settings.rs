//! Where each channel is configured: the manifest's `config` table first, then
//! the environment variables the manifest grants.

use neo_ops_sdk::{ErrorCode, config};

const DEFAULT_OPS_EMAIL: &str = "ops@example.com";
const DEFAULT_SLACK_CHANNEL: &str = "#ops";

/// A channel's target, or why the channel is skipped.
pub type Target = Result<String, String>;

pub struct Settings {
    pub slack: Target,
    pub slack_channel: String,
    pub ops_email: Vec<String>,
    pub alertmanager: Target,
}

impl Settings {
    pub fn load() -> Self {
        let ops_email = lookup("ops_email", "OPS_EMAIL").unwrap_or_default();
        let mut to: Vec<String> = ops_email
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if to.is_empty() {
            to.push(DEFAULT_OPS_EMAIL.to_string());
        }
        Settings {
            slack: lookup("slack_webhook_url", "SLACK_WEBHOOK_URL"),
            slack_channel: config::get("slack_channel")
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_SLACK_CHANNEL.to_string()),
            ops_email: to,
            alertmanager: lookup("alertmanager_url", "ALERTMANAGER_URL"),
        }
    }
}

/// A non-empty setting, or a skip reason naming both places it may come from.
fn lookup(key: &str, env: &str) -> Target {
    if let Some(v) = config::get(key).filter(|v| !v.trim().is_empty()) {
        return Ok(v.trim().to_string());
    }
    match config::env(env) {
        Ok(Some(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Err(format!("not configured (config {key} and {env} unset)")),
        // An ungranted variable is simply not a source; say so, so an operator
        // who set it in the environment learns why it was ignored.
        Err(e) if e.code == ErrorCode::Denied => Err(format!(
            "not configured (config {key} unset, env {env} not granted)"
        )),
        Err(e) => Err(format!("not configured (reading {env}: {})", e.message)),
    }
}
