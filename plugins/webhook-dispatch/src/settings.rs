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
    /// How long a pending or failed delivery no job has tried waits before
    /// the sweep queues it again, or why the configured value cannot be
    /// used: that fails the sweep only, never a delivery.
    pub sweep_after: Result<Duration, String>,
}

/// `sweep_after` unless configured.
const SWEEP_AFTER: Duration = Duration::from_secs(3600);

/// The shortest `sweep_after`: well past a job's retries (about 4 minutes
/// with the shipped backoff), so a delivery still being retried is never
/// taken for stuck.
const SHORTEST_SWEEP_AFTER: Duration = Duration::from_secs(600);

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        let timeout = config::duration("request_timeout", Duration::from_secs(5))?;
        let cooldown = config::duration("breaker_cooldown", Duration::from_secs(60))?;
        if timeout.is_zero() || cooldown.is_zero() {
            return Err(ConfigError(
                "config request_timeout and breaker_cooldown must be longer than 0s".into(),
            ));
        }
        let sweep_after = match config::duration("sweep_after", SWEEP_AFTER) {
            Ok(d) if d < SHORTEST_SWEEP_AFTER => Err(
                "config sweep_after must be at least 10m: a delivery still being retried is not stuck"
                    .to_string(),
            ),
            Ok(d) => Ok(d),
            Err(e) => Err(e.0),
        };
        Ok(Self {
            sweep_after,
            breaker_threshold: config::positive("breaker_threshold", 5)? as i64,
            breaker_cooldown_ms: cooldown.as_millis() as u64,
            request_timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        })
    }
}

impl Settings {
    /// How long an attempt marks its delivery seen: `sweep_after`, or the
    /// default while that is unusable.
    pub fn seen_for(&self) -> Duration {
        self.sweep_after.clone().unwrap_or(SWEEP_AFTER)
    }
}
