//! Where each channel is configured: the manifest's `config` table first, then
//! the environment variables the manifest grants.

use neo_ops_sdk::config;

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
        let to = config::list_from("ops_email", "OPS_EMAIL", DEFAULT_OPS_EMAIL);
        Settings {
            slack: lookup("slack_webhook_url", "SLACK_WEBHOOK_URL"),
            slack_channel: config::text("slack_channel")
                .unwrap_or_else(|| DEFAULT_SLACK_CHANNEL.to_string()),
            ops_email: to,
            alertmanager: lookup("alertmanager_url", "ALERTMANAGER_URL"),
        }
    }
}

/// A non-empty setting, or a skip reason naming both places it may come from.
fn lookup(key: &str, env: &str) -> Target {
    config::lookup(key, env).map_err(|e| e.to_string())
}
