//! The plugin's manifest `config`, with defaults.

use neo_ops_sdk::config::{self, ConfigError};
use std::time::Duration;

pub struct Settings {
    /// Larger bodies are refused with 413 (`max_body_bytes`, default 64 KiB).
    pub max_body_bytes: u64,
    /// Distinct reports one client may add per window (`rate_limit`,
    /// default 120); further ones are counted in an overflow entry.
    pub rate_limit: u64,
    /// Posts one client may make per window before 429 (`request_limit`,
    /// default 1200): bounds the parsing a flood can cost.
    pub request_limit: u64,
    /// The fixed window, whole seconds (`rate_window`, default `60s`).
    pub rate_window_seconds: u64,
    /// Entries one client may add per UTC day (`client_share`, default 50,
    /// a tenth of the list): a few clients cannot push everyone else's
    /// reports out of the newest 500 (500 or more: one client may).
    pub client_share: u64,
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        let window = config::duration("rate_window", Duration::from_secs(60))?;
        if window.as_secs() == 0 {
            return Err(ConfigError("config rate_window must be at least 1s".into()));
        }
        Ok(Self {
            max_body_bytes: config::positive("max_body_bytes", 64 * 1024)?,
            rate_limit: config::number("rate_limit", 120)?,
            request_limit: config::number("request_limit", 1200)?,
            rate_window_seconds: window.as_secs(),
            client_share: config::positive("client_share", crate::store::KEEP as u64 / 10)?,
        })
    }
}
