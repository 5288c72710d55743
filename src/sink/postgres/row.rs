//! One event as the PostgreSQL sink writes it: the `event_id` and `ts`
//! columns read from the event line, and the whole line as `payload`.
//!
//! The three column values encode themselves in PostgreSQL's binary format
//! ([`ToSql`] for `uuid`, `timestamptz` and `jsonb`), so binary COPY and the
//! INSERT path share them and no text is formatted or re-parsed per row.
//! An event whose line is not a JSON object, or lacks a valid `event_id`
//! (a UUID string) or time, is poison: [`Row::parse`] says why, and the sink
//! dead-letters it without a round trip to the server.

use bytes::{BufMut, BytesMut};
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use simd_json::prelude::*;
use std::error::Error;
use uuid::Uuid;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
const PG_EPOCH_UNIX_S: i64 = 946_684_800;

/// An event ready to be written.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub event_id: EventId,
    pub ts: Timestamp,
    pub payload: Jsonb<'a>,
}

impl<'a> Row<'a> {
    /// Reads `event_id` and the event time from the line: the top-level
    /// `timestamp` field (the name trackgate's event lines use), or `ts` when
    /// there is no `timestamp`; an RFC 3339 string either way. The line is
    /// checked to be one JSON object.
    pub fn parse(line: &'a [u8]) -> Result<Row<'a>, String> {
        let mut buf = line.to_vec();
        let value = simd_json::to_borrowed_value(&mut buf)
            .map_err(|e| format!("the event is not valid JSON ({e})"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| String::from("the event is not a JSON object"))?;
        let id = obj
            .get("event_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| String::from("the event has no string field event_id"))?;
        let event_id = Uuid::try_parse(id)
            .map_err(|_| format!("the event's event_id {id:?} is not a UUID"))?;
        let (name, ts) = match obj.get("timestamp") {
            Some(v) => ("timestamp", v),
            None => (
                "ts",
                obj.get("ts")
                    .ok_or_else(|| String::from("the event has no timestamp (nor ts) field"))?,
            ),
        };
        let ts_str = ts
            .as_str()
            .ok_or_else(|| format!("the event's {name} is not an RFC 3339 string"))?;
        let ts = parse_rfc3339(ts_str)
            .ok_or_else(|| format!("the event's {name} {ts_str:?} is not an RFC 3339 time"))?;
        Ok(Row {
            event_id: EventId(event_id),
            ts,
            payload: Jsonb(line),
        })
    }
}

/// A `uuid` column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId(pub Uuid);

impl ToSql for EventId {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }

    to_sql_checked!();
}

/// A `timestamptz` column value: microseconds since 2000-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl ToSql for Timestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i64(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

/// A `jsonb` column value: the event line as it is (the server parses it;
/// what it refuses, e.g. `\u0000`, fails the batch and is bisected out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jsonb<'a>(pub &'a [u8]);

impl ToSql for Jsonb<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // jsonb's binary format: a version byte (1), then the JSON text.
        out.put_u8(1);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (years 1 to 9999;
/// digits past microseconds are truncated) into a [`Timestamp`].
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let unix_s = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(Timestamp((unix_s - PG_EPOCH_UNIX_S) * 1_000_000 + micros))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_micros(t: Timestamp) -> i64 {
        t.0 + PG_EPOCH_UNIX_S * 1_000_000
    }

    #[test]
    fn rfc3339_times_parse_to_postgres_micros() {
        assert_eq!(parse_rfc3339("2000-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").map(unix_micros),
            Some(0)
        );
        // The clock module's own rendering of 1764293081123 ms.
        let mut out = Vec::new();
        crate::clock::write_rfc3339_millis(&mut out, 1_764_293_081_123);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            parse_rfc3339(&s).map(unix_micros),
            Some(1_764_293_081_123_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-28T02:24:41.123456789+01:00").map(unix_micros),
            Some(1_795_829_081_123_456)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29t23:59:59.5-00:30"),
            parse_rfc3339("2024-03-01T00:29:59.500Z")
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-11-28T01:24:41",
            "2026-13-28T01:24:41Z",
            "2023-02-29T01:24:41Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T01:24:41.Z",
            "2026-11-28T01:24:41+0100",
            "2026-11-28T01:24:41Zjunk",
            "0000-01-01T00:00:00Z",
            "２026-11-28T01:24:41Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_need_an_object_with_event_id_and_time() {
        let ok = br#"{"event_id":"0192f5e0-8b7a-7000-8000-000000000001","timestamp":"2026-11-28T01:24:41.123Z","type":"click"}"#;
        let row = Row::parse(ok).unwrap();
        assert_eq!(
            row.event_id.0.to_string(),
            "0192f5e0-8b7a-7000-8000-000000000001"
        );
        assert_eq!(row.payload.0, &ok[..]);
        let ts_only = br#"{"event_id":"0192f5e0-8b7a-7000-8000-000000000001","ts":"2026-11-28T01:24:41.123Z"}"#;
        assert_eq!(Row::parse(ts_only).unwrap().ts, row.ts);
        for (bad, why) in [
            (&b"not json"[..], "not valid JSON"),
            (b"[1,2]", "not a JSON object"),
            (
                br#"{"timestamp":"2026-11-28T01:24:41Z"}"#,
                "no string field event_id",
            ),
            (
                br#"{"event_id":"nope","timestamp":"2026-11-28T01:24:41Z"}"#,
                "not a UUID",
            ),
            (
                br#"{"event_id":"0192f5e0-8b7a-7000-8000-000000000001"}"#,
                "no timestamp",
            ),
            (
                br#"{"event_id":"0192f5e0-8b7a-7000-8000-000000000001","timestamp":1700000000}"#,
                "not an RFC 3339 string",
            ),
            (
                br#"{"event_id":"0192f5e0-8b7a-7000-8000-000000000001","timestamp":"yesterday"}"#,
                "not an RFC 3339 time",
            ),
        ] {
            let err = Row::parse(bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
