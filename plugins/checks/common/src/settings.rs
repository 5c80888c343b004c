//! A check's settings: the SDK's config readers (`neo_ops_sdk::config`),
//! with errors as the text a check puts in its detail.

use neo_ops_sdk::config;
use std::str::FromStr;

pub use neo_ops_sdk::config::split_list;

/// A non-empty config value, trimmed.
pub fn get(key: &str) -> Option<String> {
    config::text(key)
}

/// Config `key`, else env var `env`.
pub fn lookup(key: &str, env: &str) -> Result<String, String> {
    config::lookup(key, env).map_err(|e| e.to_string())
}

/// Whether a config flag is set to `true` (also `1`, `yes`).
pub fn flag(key: &str) -> bool {
    config::flag(key)
}

/// A number from config, or `default` when unset.
pub fn number<T: FromStr>(key: &str, default: T) -> Result<T, String> {
    config::number(key, default).map_err(|e| e.to_string())
}

/// A finite number from config, or `default` when unset (`"nan"` and
/// `"inf"` parse as numbers, and every comparison with NaN is false: a limit
/// of NaN would make a check pass whatever it measured).
pub fn real(key: &str, default: f64) -> Result<f64, String> {
    let n: f64 = number(key, default)?;
    if !n.is_finite() {
        return Err(format!("config {key} = \"{n}\" is not a finite number"));
    }
    Ok(n)
}

/// A duration from config in microseconds, or `default` (same syntax) when
/// unset; one too long to count in microseconds is refused, not wrapped.
pub fn duration_micros(key: &str, default: &str) -> Result<i64, String> {
    let default = neo_ops_sdk::duration::parse(default).expect("defaults are valid durations");
    let d = config::duration(key, default).map_err(|e| e.to_string())?;
    i64::try_from(d.as_micros())
        .map_err(|_| format!("config {key}: {}s is too long a duration", d.as_secs()))
}

/// A comma-separated list from config, or `default` when unset.
pub fn list(key: &str, default: &[&str]) -> Vec<String> {
    config::list(key, default)
}

/// Microseconds as a short human duration: `45s`, `12m`, `30h 5m`, `3d 2h`
/// (hours up to two days, so `26h` limits read as written).
pub fn human_micros(micros: i64) -> String {
    let secs = micros.max(0) / 1_000_000;
    let (hours, m) = (secs / 3_600, secs % 3_600 / 60);
    match (hours, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m"),
        (h, 0) if h < 48 => format!("{h}h"),
        (h, m) if h < 48 => format!("{h}h {m}m"),
        (h, _) if h % 24 == 0 => format!("{}d", h / 24),
        (h, _) => format!("{}d {}h", h / 24, h % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_are_short() {
        assert_eq!(human_micros(45_000_000), "45s");
        assert_eq!(human_micros((30 * 3_600 + 5 * 60) * 1_000_000), "30h 5m");
        assert_eq!(human_micros(26 * 3_600 * 1_000_000), "26h");
        assert_eq!(human_micros(3 * 86_400 * 1_000_000), "3d");
        assert_eq!(human_micros((50 * 3_600 + 59) * 1_000_000), "2d 2h");
    }
}
