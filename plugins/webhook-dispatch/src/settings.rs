//! The dispatcher's settings, from the manifest's `config` table.

use neo_ops_sdk::{Failure, config, reply};

pub struct Settings {
    /// Consecutive failures that open an endpoint's circuit.
    pub breaker_threshold: i64,
    /// How long an open circuit fails fast before one trial request.
    pub breaker_cooldown_ms: u64,
    /// Bound on one webhook request.
    pub request_timeout_ms: u32,
}

impl Settings {
    pub fn load() -> Result<Self, Failure> {
        let timeout = duration_setting("request_timeout", 5_000)?;
        Ok(Self {
            breaker_threshold: number_setting("breaker_threshold", 5)?,
            breaker_cooldown_ms: duration_setting("breaker_cooldown", 60_000)?,
            request_timeout_ms: u32::try_from(timeout).unwrap_or(u32::MAX),
        })
    }
}

fn number_setting(key: &str, default: i64) -> Result<i64, Failure> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_config(key, &v, "a positive number")),
    }
}

fn duration_setting(key: &str, default_ms: u64) -> Result<u64, Failure> {
    match config::get(key) {
        None => Ok(default_ms),
        Some(v) => parse_duration_ms(&v).ok_or_else(|| bad_config(key, &v, "a duration like 60s")),
    }
}

fn bad_config(key: &str, value: &str, expected: &str) -> Failure {
    reply::fail(500, format!("config {key} \"{value}\" is not {expected}"))
}

/// `250ms`, `5s`, `2m`; a bare number is seconds. Zero is not a duration here.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1_000)
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("5s"), Some(5_000));
        assert_eq!(parse_duration_ms(" 2m "), Some(120_000));
        assert_eq!(parse_duration_ms("60"), Some(60_000));
        assert_eq!(parse_duration_ms("0s"), None);
        assert_eq!(parse_duration_ms("soon"), None);
    }
}
