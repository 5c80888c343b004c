//! Days in a tenant's time zone (feature `days`): a calendar date in the
//! tenant's zone and the UTC instants `[start, end)` it covers, DST included.
//! The owner digest's business day and the order export's date range.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// The UTC range of one business day, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: i64,
    pub end: i64,
}

/// Parses an IANA zone name such as `Asia/Kolkata`.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone \"{name}\""))
}

/// Parses `--date YYYY-MM-DD`.
/// Only years 1970 to 9999: a business day of the platform, and room for the
/// date arithmetic on it (a week back, a day on) that chrono would panic past.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| (1970..=9999).contains(&d.year()))
        .ok_or_else(|| format!("bad date \"{s}\" (expected YYYY-MM-DD, 1970 to 9999)"))
}

/// The calendar date at instant `micros` in `tz`.
pub fn date_at(tz: Tz, micros: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive()
}

/// `[local midnight of day, local midnight of the next day)` as UTC.
pub fn range(tz: Tz, day: NaiveDate) -> Range {
    let next = day.succ_opt().unwrap_or(day);
    Range {
        start: start_of(tz, day),
        end: start_of(tz, next),
    }
}

/// The first instant of `day` in `tz`, in microseconds. Some zones skip
/// midnight on a DST change, so the day then starts at the first local time
/// that exists.
pub fn start_of(tz: Tz, day: NaiveDate) -> i64 {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..=24 * 4)
        .map(|quarter| midnight + Duration::minutes(15 * quarter))
        .find_map(|local| tz.from_local_datetime(&local).earliest())
        .map(|dt| dt.timestamp_micros())
        .unwrap_or_else(|| midnight.and_utc().timestamp_micros())
}

/// The same local wall-clock time a week before `micros` (across a DST
/// change this is 167 or 169 hours earlier). A time that did not exist a
/// week ago (skipped by DST) becomes the first that did after it.
pub fn week_before(tz: Tz, micros: i64) -> i64 {
    let week = Duration::days(7);
    let Some(now) = DateTime::from_timestamp_micros(micros) else {
        return micros - week.num_microseconds().unwrap_or(0);
    };
    let then = now.with_timezone(&tz).naive_local() - week;
    (0..=4)
        .map(|quarter| then + Duration::minutes(15 * quarter))
        .find_map(|local| tz.from_local_datetime(&local).earliest())
        .map(|dt| dt.timestamp_micros())
        .unwrap_or_else(|| (now - week).timestamp_micros())
}

/// The hour of the day (0 to 23) at instant `micros` in `tz`.
pub fn local_hour(tz: Tz, micros: i64) -> u32 {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .with_timezone(&tz)
        .hour()
}

/// `HH:MM` at instant `micros` in `tz`.
pub fn local_time(tz: Tz, micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .with_timezone(&tz)
        .format("%H:%M")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn dates_outside_1970_to_9999_are_refused() {
        assert!(parse_date("9999-12-31").is_ok());
        assert!(parse_date("1970-01-01").is_ok());
        for bad in [
            "+262143-12-31",
            "-262144-01-03",
            "10000-01-01",
            "1969-12-31",
            "2026-13-01",
        ] {
            let e = parse_date(bad).unwrap_err();
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }

    #[test]
    fn kolkata_day_starts_at_1830_utc_the_day_before() {
        let r = range(
            zone("Asia/Kolkata").unwrap(),
            parse_date("2026-11-24").unwrap(),
        );
        assert_eq!(r.start, utc("2026-11-23T18:30:00Z"));
        assert_eq!(r.end, utc("2026-11-24T18:30:00Z"));
    }

    #[test]
    fn dst_days_are_23_or_25_hours() {
        let ny = zone("America/New_York").unwrap();
        let spring = range(ny, parse_date("2026-03-08").unwrap());
        assert_eq!(spring.end - spring.start, 23 * 3_600_000_000);
        let autumn = range(ny, parse_date("2026-11-01").unwrap());
        assert_eq!(autumn.end - autumn.start, 25 * 3_600_000_000);
    }

    #[test]
    fn skipped_midnight_starts_at_first_valid_time() {
        // Santiago jumps from 00:00 to 01:00 on 2026-09-06.
        let r = range(
            zone("America/Santiago").unwrap(),
            parse_date("2026-09-06").unwrap(),
        );
        assert_eq!(r.start, utc("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn today_is_taken_in_the_zone() {
        let tz = zone("Asia/Kolkata").unwrap();
        assert_eq!(
            date_at(tz, utc("2026-11-24T19:00:00Z")),
            parse_date("2026-11-25").unwrap()
        );
    }

    #[test]
    fn a_week_before_keeps_the_local_time_across_dst() {
        let ny = zone("America/New_York").unwrap();
        // 2026-03-10 12:00 EDT; a week earlier was 2026-03-03 12:00 EST.
        let now = utc("2026-03-10T16:00:00Z");
        assert_eq!(week_before(ny, now), utc("2026-03-03T17:00:00Z"));
        assert_eq!(local_time(ny, week_before(ny, now)), "12:00");
        let kolkata = zone("Asia/Kolkata").unwrap();
        let slot = utc("2026-11-24T14:30:00Z");
        assert_eq!(local_time(kolkata, slot), "20:00");
        assert_eq!(week_before(kolkata, slot), slot - 7 * 86_400_000_000);
    }

    #[test]
    fn bad_inputs_are_quoted() {
        assert_eq!(
            zone("Mars/Olympus").unwrap_err(),
            "unknown time zone \"Mars/Olympus\""
        );
        assert!(
            parse_date("24/11/2026")
                .unwrap_err()
                .contains("\"24/11/2026\"")
        );
    }
}
