//! A check's settings: the manifest's `config` table, then (for the few that
//! may come from the deployment) the environment variables the manifest grants.

use neo_ops_sdk::{ErrorCode, config};
use std::str::FromStr;

/// A non-empty config value, trimmed.
pub fn get(key: &str) -> Option<String> {
    config::get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Config `key`, else env var `env`; the error says why neither gave a value,
/// so an operator who set the variable learns when it was not granted.
pub fn lookup(key: &str, env: &str) -> Result<String, String> {
    if let Some(v) = get(key) {
        return Ok(v);
    }
    match config::env(env) {
        Ok(Some(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Err(format!("not configured (config {key} and env {env} unset)")),
        Err(e) if e.code == ErrorCode::Denied => Err(format!(
            "not configured (config {key} unset, env {env} not granted)"
        )),
        Err(e) => Err(format!("not configured (reading env {env}: {})", e.message)),
    }
}

/// Whether a config flag is set to `true` (also `1`, `yes`).
pub fn flag(key: &str) -> bool {
    get(key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// A number from config, or `default` when unset.
pub fn number<T: FromStr>(key: &str, default: T) -> Result<T, String> {
    match get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("bad config {key} = \"{v}\" (expected a number)")),
    }
}

/// A duration from config in microseconds, or `default` (same syntax) when unset.
pub fn duration_micros(key: &str, default: &str) -> Result<i64, String> {
    let text = get(key).unwrap_or_else(|| default.to_string());
    parse_duration_micros(&text).ok_or_else(|| {
        format!("bad config {key} = \"{text}\" (e.g. \"90s\", \"30m\", \"26h\", \"7d\")")
    })
}

/// A comma-separated list from config, or `default` when unset.
pub fn list(key: &str, default: &[&str]) -> Vec<String> {
    match get(key) {
        Some(v) => split_list(&v),
        None => default.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `500ms`, `90s`, `30m`, `26h`, `7d` as microseconds.
pub fn parse_duration_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let unit_micros: i64 = match unit.trim() {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60 * 1_000_000,
        "h" => 3_600 * 1_000_000,
        "d" => 86_400 * 1_000_000,
        _ => return None,
    };
    n.checked_mul(unit_micros)
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
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration_micros("26h"), Some(26 * 3_600 * 1_000_000));
        assert_eq!(parse_duration_micros("500ms"), Some(500_000));
        assert_eq!(parse_duration_micros(" 7d "), Some(7 * 86_400 * 1_000_000));
        assert_eq!(parse_duration_micros("26"), None);
        assert_eq!(parse_duration_micros("h"), None);
        assert_eq!(parse_duration_micros("2w"), None);
        assert_eq!(parse_duration_micros("-1h"), None);
    }

    #[test]
    fn human_durations_are_short() {
        assert_eq!(human_micros(45_000_000), "45s");
        assert_eq!(human_micros((30 * 3_600 + 5 * 60) * 1_000_000), "30h 5m");
        assert_eq!(human_micros(26 * 3_600 * 1_000_000), "26h");
        assert_eq!(human_micros(3 * 86_400 * 1_000_000), "3d");
        assert_eq!(human_micros((50 * 3_600 + 59) * 1_000_000), "2d 2h");
    }

    #[test]
    fn lists_drop_blanks() {
        assert_eq!(split_list(" a, ,b ,"), vec!["a", "b"]);
    }
}
