//! The plugin's manifest `config`, with defaults.

use neo_ops_sdk::{Failure, config, reply};

pub struct Settings {
    /// Larger bodies are refused with 413 (`max_body_bytes`, default 64 KiB).
    pub max_body_bytes: u64,
    /// Reports one client may post per window (`rate_limit`, default 120).
    pub rate_limit: u64,
    /// The fixed window, in seconds (`rate_window_seconds`, default 60).
    pub rate_window_seconds: u64,
}

impl Settings {
    pub fn load() -> Result<Self, Failure> {
        let settings = Self {
            max_body_bytes: number("max_body_bytes", 64 * 1024)?,
            rate_limit: number("rate_limit", 120)?,
            rate_window_seconds: number("rate_window_seconds", 60)?,
        };
        if settings.rate_window_seconds == 0 {
            return Err(reply::fail(
                500,
                "config rate_window_seconds \"0\" must be positive",
            ));
        }
        Ok(settings)
    }
}

fn number(key: &str, default: u64) -> Result<u64, Failure> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| reply::fail(500, format!("config {key} \"{v}\" is not a whole number"))),
    }
}
