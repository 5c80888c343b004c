//! The dispatcher's settings, from the manifest's `config` table.

use neo_ops_sdk::config::{self, ConfigError};
use std::time::Duration;

pub struct Settings {
    /// Consecutive failures that open an endpoint's circuit.
    pub breaker_threshold: i64,
    /// How long an open circuit fails fast before one trial request.
    pub breaker_cooldown_ms: u64,
    /// Bound on one webhook request.
    pub request_timeout_ms: u32,
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        let timeout = config::duration("request_timeout", Duration::from_secs(5))?;
        let cooldown = config::duration("breaker_cooldown", Duration::from_secs(60))?;
        if timeout.is_zero() || cooldown.is_zero() {
            return Err(ConfigError(
                "config request_timeout and breaker_cooldown must be longer than 0s".into(),
            ));
        }
        Ok(Self {
            breaker_threshold: config::positive("breaker_threshold", 5)? as i64,
            breaker_cooldown_ms: cooldown.as_millis() as u64,
            request_timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        })
    }
}
