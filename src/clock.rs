//! Wall-clock time and its two text forms: RFC 3339 timestamps for event
//! lines and IMF-fixdate for HTTP `Date`/`Expires` headers.
//!
//! Both are written on every request, so they append straight into the
//! caller's buffer with plain integer arithmetic (days → civil date) instead
//! of pulling in a date crate. Only times from 1970 on are representable
//! (inputs are unsigned); times past the year 9999 are clamped to
//! 9999-12-31T23:59:59.999Z so that the year always has four digits.

use std::time::{SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: u64 = 86_400;

/// Last millisecond of the year 9999: the largest instant with a 4-digit year.
pub const MAX_UNIX_MS: u64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch. A clock set before 1970 reads as 0.
pub fn unix_millis() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

/// Days since 1970-01-01 (UTC) of a Unix time in seconds.
#[inline]
pub fn utc_day(unix_s: u64) -> u64 {
    unix_s / SECS_PER_DAY
}

/// A civil (proleptic Gregorian) date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: u64,
    month: u8,
    day: u8,
}

/// Converts days since 1970-01-01 to a civil date.
///
/// Works in 400-year eras (146 097 days each), with years starting on
/// 1 March so that the leap day is the last day of the shifted year; all
/// values stay non-negative because the input starts at 1970.
fn civil_from_days(days: u64) -> Civil {
    // 1970-01-01 is day 719 468 counted from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month index with March = 0 … February = 11.
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    Civil {
        year,
        month: month as u8,
        day: day as u8,
    }
}

#[inline]
fn push_2(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
}

#[inline]
fn push_3(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&[
        b'0' + (v / 100 % 10) as u8,
        b'0' + (v / 10 % 10) as u8,
        b'0' + (v % 10) as u8,
    ]);
}

#[inline]
fn push_4(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&[
        b'0' + (v / 1000 % 10) as u8,
        b'0' + (v / 100 % 10) as u8,
        b'0' + (v / 10 % 10) as u8,
        b'0' + (v % 10) as u8,
    ]);
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds).
pub fn write_rfc3339_millis(out: &mut Vec<u8>, unix_ms: u64) {
    let unix_ms = unix_ms.min(MAX_UNIX_MS);
    let secs = unix_ms / 1000;
    let c = civil_from_days(utc_day(secs));
    let sod = secs % SECS_PER_DAY;
    push_4(out, c.year);
    out.push(b'-');
    push_2(out, u64::from(c.month));
    out.push(b'-');
    push_2(out, u64::from(c.day));
    out.push(b'T');
    push_2(out, sod / 3600);
    out.push(b':');
    push_2(out, sod / 60 % 60);
    out.push(b':');
    push_2(out, sod % 60);
    out.push(b'.');
    push_3(out, unix_ms % 1000);
    out.push(b'Z');
}

const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Appends an IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sat, 28 Nov 2026 01:24:41 GMT`.
pub fn write_http_date(out: &mut Vec<u8>, unix_s: u64) {
    let unix_s = unix_s.min(MAX_UNIX_MS / 1000);
    let days = utc_day(unix_s);
    let c = civil_from_days(days);
    let sod = unix_s % SECS_PER_DAY;
    // 1970-01-01 was a Thursday.
    out.extend_from_slice(WEEKDAYS[((days + 4) % 7) as usize]);
    out.extend_from_slice(b", ");
    push_2(out, u64::from(c.day));
    out.push(b' ');
    out.extend_from_slice(MONTHS[usize::from(c.month).saturating_sub(1) % 12]);
    out.push(b' ');
    push_4(out, c.year);
    out.push(b' ');
    push_2(out, sod / 3600);
    out.push(b':');
    push_2(out, sod / 60 % 60);
    out.push(b':');
    push_2(out, sod % 60);
    out.extend_from_slice(b" GMT");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(ms: u64) -> String {
        let mut v = Vec::new();
        write_rfc3339_millis(&mut v, ms);
        String::from_utf8(v).unwrap()
    }

    fn http(s: u64) -> String {
        let mut v = Vec::new();
        write_http_date(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn epoch() {
        assert_eq!(rfc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(http(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399), 0);
        assert_eq!(utc_day(86_400), 1);
    }

    #[test]
    fn known_dates() {
        // 2026-11-28T01:24:41.123Z
        assert_eq!(rfc(1_795_829_081_123), "2026-11-28T01:24:41.123Z");
        assert_eq!(http(1_795_829_081), "Sat, 28 Nov 2026 01:24:41 GMT");
        // RFC 9110's example date.
        assert_eq!(http(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        // 32-bit rollover.
        assert_eq!(rfc(2_147_483_647_000), "2038-01-19T03:14:07.000Z");
        assert_eq!(rfc(1_000_000_000_999), "2001-09-09T01:46:40.999Z");
        assert_eq!(rfc(86_399_999), "1970-01-01T23:59:59.999Z");
    }

    #[test]
    fn leap_years() {
        // 2000 is a leap year (divisible by 400).
        assert_eq!(rfc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(http(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(rfc(951_868_800_000), "2000-03-01T00:00:00.000Z");
        // 2024-02-29 and the day after 2023-02-28.
        assert_eq!(rfc(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(rfc(1_677_628_800_000), "2023-03-01T00:00:00.000Z");
        // 2100 is not a leap year: 28 Feb is followed by 1 Mar.
        assert_eq!(rfc(4_107_456_000_000), "2100-02-28T00:00:00.000Z");
        assert_eq!(rfc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        // 2400 is.
        assert_eq!(rfc(13_574_563_200_000), "2400-02-29T00:00:00.000Z");
        // Year ends.
        assert_eq!(rfc(978_307_199_000), "2000-12-31T23:59:59.000Z");
        assert_eq!(rfc(1_735_689_599_000), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn far_future_and_clamp() {
        assert_eq!(rfc(MAX_UNIX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(http(MAX_UNIX_MS / 1000), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(rfc(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(http(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn weekdays_cycle() {
        // 2026-11-23 is a Monday; the next seven days run Mon..Sun.
        let monday = 1_795_392_000;
        let names: Vec<String> = (0..7)
            .map(|i| http(monday + i * 86_400)[..3].to_string())
            .collect();
        assert_eq!(names, ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
    }

    #[test]
    fn civil_round_trip_every_day_for_800_years() {
        // Independent check: count days forward month by month.
        let mut days = 0u64;
        for year in 1970u64..2770 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            for month in 1u8..=12 {
                let len = match month {
                    2 if leap => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for day in 1..=len {
                    assert_eq!(civil_from_days(days), Civil { year, month, day });
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn appends() {
        let mut v = b"x=".to_vec();
        write_rfc3339_millis(&mut v, 0);
        assert_eq!(v, b"x=1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn now_is_after_2020() {
        assert!(unix_millis() > 1_577_836_800_000);
    }
}
