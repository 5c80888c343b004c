//! Wall-clock time and RFC 3339 formatting without pulling a date crate into
//! every plugin.

/// Microseconds since the Unix epoch, from the host's wall clock (plugins
/// are built without WASI, so `std` has no clock of its own).
pub fn now_micros() -> i64 {
    crate::host_info::now_micros()
}

/// Waits about `ms` milliseconds, in the host (the guest burns no CPU),
/// ending early while the invocation still has time to act on what it
/// waited for.
pub fn pause(ms: u32) {
    crate::host_info::pause(ms)
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`
/// (whole seconds when there is no fraction). Digits are written directly:
/// status documents format several instants per request, and `format!`'s
/// padding machinery cost more than the rest of the conversion.
pub fn rfc3339(micros: i64) -> String {
    instant(micros, Fraction::AsNeeded)
}

/// As [`rfc3339`], always with three digits of fraction (`.mmmZ`, cut, not
/// rounded), as Statuspage writes its times: a client that parses with one
/// pattern (Swift's `.withFractionalSeconds`, `strptime`'s `.%f`) reads
/// every value, not only those with a fraction.
pub fn rfc3339_millis(micros: i64) -> String {
    instant(micros, Fraction::Millis)
}

#[derive(Clone, Copy)]
enum Fraction {
    AsNeeded,
    Millis,
}

fn instant(micros: i64, fraction: Fraction) -> String {
    let (y, [m, d, hh, mm, ss, frac]) = civil_fields(micros);
    let Ok(year @ 0..=9999) = u32::try_from(y) else {
        // A sign or a fifth digit: rare enough for the general formatter.
        return rfc3339_formatted(micros, fraction);
    };
    let mut out = String::with_capacity(27);
    for (n, width, after) in [
        (year, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (hh, 2, ':'),
        (mm, 2, ':'),
        (ss, 2, '.'),
    ] {
        push_digits(&mut out, n, width);
        out.push(after);
    }
    match fraction {
        Fraction::Millis => push_digits(&mut out, frac / 1000, 3),
        Fraction::AsNeeded if frac == 0 => {
            out.pop();
        }
        Fraction::AsNeeded => push_digits(&mut out, frac, 6),
    }
    out.push('Z');
    out
}

/// [`instant`] through `format!`, for any year: a year before 1 BC with
/// its sign and four digits at least (`-0001`), as ISO 8601 writes it.
fn rfc3339_formatted(micros: i64, fraction: Fraction) -> String {
    let (y, [m, d, hh, mm, ss, frac]) = civil_fields(micros);
    let frac = match fraction {
        Fraction::Millis => format!(".{:03}", frac / 1000),
        Fraction::AsNeeded if frac == 0 => String::new(),
        Fraction::AsNeeded => format!(".{frac:06}"),
    };
    let year = if y < 0 {
        format!("-{:04}", y.unsigned_abs())
    } else {
        format!("{y:04}")
    };
    format!("{year}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}Z")
}

/// The year, then month, day, hour, minute, second and microsecond of an
/// instant, UTC.
fn civil_fields(micros: i64) -> (i64, [u32; 6]) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (y, m, d) = civil_from_days(days);
    (y, [m, d, sod / 3600, sod % 3600 / 60, sod % 60, frac])
}

/// `n`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_625_319_123_456),
            "2026-11-25T16:48:39.123Z"
        );
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_625_319_123_456),
            "2026-11-25T16:48:39.123456Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(1_000_007), "1970-01-01T00:00:01.000007Z");
        assert_eq!(rfc3339(253_402_300_799_000_000), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn matches_the_general_formatter() {
        // Instants from year -300 to 12000, odd steps so every field varies.
        let mut micros = -71_600_000_000_000_000_i64;
        while micros < 316_000_000_000_000_000 {
            assert_eq!(
                rfc3339(micros),
                rfc3339_formatted(micros, Fraction::AsNeeded),
                "{micros}"
            );
            assert_eq!(
                rfc3339_millis(micros),
                rfc3339_formatted(micros, Fraction::Millis),
                "{micros}"
            );
            micros += 7_777_777_777_777;
        }
    }

    #[test]
    fn formats_years_beyond_four_digits() {
        assert_eq!(rfc3339(253_402_300_800_000_000), "10000-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(-62_167_219_200_000_001),
            "-0001-12-31T23:59:59.999999Z"
        );
        // The extremes do not overflow.
        assert!(rfc3339(i64::MAX).ends_with(".775807Z"));
        assert!(rfc3339(i64::MIN).ends_with(".224192Z"));
    }
}
