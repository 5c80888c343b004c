//! The one duration grammar: an integer and a unit, `ms`, `s`, `m`, `h` or
//! `d` (`"500ms"`, `"30s"`, `"31m"`, `"26h"`, `"7d"`). A unit is required, so
//! `"300"` is an error rather than a guess at seconds or milliseconds.

use std::time::Duration;

/// Parses `"<n><unit>"`; the error names the value and what was expected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!("\"{s}\" is not a duration (a number and a unit: ms, s, m, h or d, e.g. \"30s\")")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3_600),
        "d" => secs(86_400),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse(" 31m "), Ok(Duration::from_secs(31 * 60)));
        assert_eq!(parse("26h"), Ok(Duration::from_secs(26 * 3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in [
            "300",
            "",
            "s",
            "1.5s",
            "-1s",
            "10 min",
            "1w",
            "99999999999999999999s",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
