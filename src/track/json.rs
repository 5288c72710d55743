//! JSON output with sanitisation: every byte of client data that reaches an
//! event line goes through this module.
//!
//! It owns three things:
//! - writing strings ([`write_str`]) so that any input bytes become a valid
//!   JSON string that PostgreSQL `jsonb` accepts: invalid UTF-8 → U+FFFD
//!   (lossy, one per maximal invalid sequence), U+0000 → U+FFFD (jsonb
//!   rejects `\u0000`), control characters escaped, U+2028/U+2029 escaped
//!   (so a line stays one line for JavaScript-ish consumers);
//! - re-serialising parsed input compactly ([`write_value`] for a simd-json
//!   DOM, [`write_tape_value`] for a simd-json tape), with duplicate object
//!   keys dropped (the first occurrence wins) and numbers as parsed;
//! - preparing a request body for simd-json ([`prescan`]): simd-json turns
//!   a lone high surrogate escape into U+0000 and rejects a lone low one, so
//!   offending `\uXXXX` escapes (and `\u0000`) are rewritten in place to
//!   `\ufffd` (same 6 bytes) before parsing; the same pass bounds nesting.
//!
//! `<`, `>` and `&` are NOT escaped here: event lines go to files, Kafka and
//! PostgreSQL, never into HTML. Code that embeds JSON into a `<script>`
//! (the HTML injection) must escape `<` itself (`\u003c`), which also
//! neutralises `</script>` and `<!--`. `/` is not escaped either.
//!
//! Everything appends to a caller-provided `Vec<u8>`; runs of bytes that
//! need no escaping are copied with one `extend_from_slice`.

use simd_json::{BorrowedValue, Node, StaticNode};
use std::collections::HashSet;
use std::io::Write as _;

/// UTF-8 encoding of U+FFFD REPLACEMENT CHARACTER.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Depth beyond which [`write_value`] writes `null` instead of recursing.
/// Bodies parsed by this crate are limited far below this by [`prescan`].
pub const MAX_WRITE_DEPTH: usize = 128;

/// Per-byte action for [`write_valid`]: 0 = copy; `b'u'` = `\u00XX`;
/// `b'0'` = NUL → U+FFFD; `b'E'` = possible start of U+2028/U+2029;
/// anything else = two-byte escape `\` + that byte.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 1;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0] = b'0';
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[0xe2] = b'E';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the body (no quotes) of a JSON string from valid UTF-8.
#[inline]
fn write_valid(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let action = ESCAPE[usize::from(s[i])];
        if action == 0 {
            i += 1;
            continue;
        }
        if action == b'E' {
            // U+2028 is E2 80 A8, U+2029 is E2 80 A9.
            if s.get(i + 1) == Some(&0x80) && matches!(s.get(i + 2), Some(0xa8 | 0xa9)) {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(if s[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
            } else {
                i += 1;
            }
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        match action {
            b'0' => out.extend_from_slice(REPLACEMENT),
            b'u' => {
                let b = s[i];
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            }
            c => out.extend_from_slice(&[b'\\', c]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
}

/// Appends `s` as a JSON string literal (with quotes), sanitised as
/// described in the module documentation. Never fails, for any bytes.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    // The common case, printable ASCII with no `"` or `\\`, is copied as
    // is: one pass the compiler vectorises, no UTF-8 validation.
    let plain = s.iter().fold(true, |ok, &b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    for chunk in s.utf8_chunks() {
        write_valid(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
    out.push(b'"');
}

/// Appends `key` as a JSON string followed by `:`, preceded by `,` unless
/// `*first` (which it then clears). For building objects by hand.
#[inline]
pub fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &[u8]) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_str(out, key);
    out.push(b':');
}

/// Appends the decimal form of `n`.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut p = buf.len();
    loop {
        p -= 1;
        buf[p] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[p..]);
}

/// Appends the decimal form of `n`.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends `x` as a JSON number that parses back to the same `f64` and
/// stays a float: plain notation (`0.5`, `12.0`) for 1e-6 ≤ |x| < 1e21,
/// exponent notation (`1e21`, `1.5e-7`) outside it, like JavaScript.
/// NaN and infinities (impossible from parsed JSON) become `null`.
pub fn write_f64(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let a = x.abs();
    let start = out.len();
    // Writing into a Vec cannot fail.
    if a == 0.0 || (1e-6..1e21).contains(&a) {
        let _ = write!(out, "{x}");
        if !out[start..].contains(&b'.') {
            out.extend_from_slice(b".0");
        }
    } else {
        let _ = write!(out, "{x:e}");
    }
}

/// Appends a scalar as parsed: integers exactly, floats via [`write_f64`].
pub fn write_static(out: &mut Vec<u8>, s: &StaticNode) {
    #[allow(unreachable_patterns)] // 128-bit variants exist only with a feature
    match *s {
        StaticNode::I64(n) => write_i64(out, n),
        StaticNode::U64(n) => write_u64(out, n),
        StaticNode::F64(x) => write_f64(out, x),
        StaticNode::Bool(true) => out.extend_from_slice(b"true"),
        StaticNode::Bool(false) => out.extend_from_slice(b"false"),
        StaticNode::Null => out.extend_from_slice(b"null"),
        _ => out.extend_from_slice(b"null"),
    }
}

/// A set of object keys already written, to keep keys unique. Holds up to
/// 16 keys inline (no allocation for ordinary objects) and spills into a
/// hash set beyond that so that hostile inputs with thousands of keys stay
/// linear.
#[derive(Debug, Default)]
pub struct KeySet<'k> {
    inline: [&'k [u8]; 16],
    len: usize,
    spill: Option<HashSet<&'k [u8]>>,
}

impl<'k> KeySet<'k> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key`; returns false if it was already present.
    pub fn insert(&mut self, key: &'k [u8]) -> bool {
        if let Some(set) = &mut self.spill {
            return set.insert(key);
        }
        let inline = &self.inline[..self.len];
        if inline.contains(&key) {
            return false;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = key;
            self.len += 1;
        } else {
            let mut set: HashSet<&'k [u8]> = inline.iter().copied().collect();
            set.insert(key);
            self.spill = Some(set);
        }
        true
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.spill {
            Some(set) => set.contains(key),
            None => self.inline[..self.len].contains(&key),
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.spill = None;
    }
}

/// Re-serialises a simd-json DOM value compactly with sanitised strings
/// (keys too). Duplicate keys (simd-json keeps them) are dropped, the first
/// in iteration order winning. Object key order is the map's iteration
/// order, which for simd-json objects of more than a few dozen keys is not
/// the input order: use [`write_tape_value`] when order matters. Nesting
/// beyond [`MAX_WRITE_DEPTH`] is written as `null`.
pub fn write_value(out: &mut Vec<u8>, v: &BorrowedValue) {
    write_value_at(out, v, 0);
}

fn write_value_at(out: &mut Vec<u8>, v: &BorrowedValue, depth: usize) {
    match v {
        BorrowedValue::Static(s) => write_static(out, s),
        BorrowedValue::String(s) => write_str(out, s.as_bytes()),
        _ if depth >= MAX_WRITE_DEPTH => out.extend_from_slice(b"null"),
        BorrowedValue::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_at(out, item, depth + 1);
            }
            out.push(b']');
        }
        BorrowedValue::Object(o) => {
            out.push(b'{');
            let mut keys = KeySet::new();
            let mut first = true;
            for (k, item) in o.iter() {
                if keys.insert(k.as_bytes()) {
                    write_key(out, &mut first, k.as_bytes());
                    write_value_at(out, item, depth + 1);
                }
            }
            out.push(b'}');
        }
    }
}

/// Number of tape nodes the value starting at `nodes[i]` occupies (0 past
/// the end).
#[inline]
pub fn node_span(nodes: &[Node], i: usize) -> usize {
    match nodes.get(i) {
        Some(Node::Array { count, .. } | Node::Object { count, .. }) => 1 + count,
        Some(_) => 1,
        None => 0,
    }
}

/// One open container while writing a tape.
struct Frame<'t> {
    is_obj: bool,
    remaining: usize,
    first: bool,
    /// Where this object's keys start in the shared `seen` stack.
    seen_start: usize,
    /// This object's keys once it has more than 16 (then `seen` holds none).
    big: Option<HashSet<&'t str>>,
}

impl<'t> Frame<'t> {
    fn key_is_new(&mut self, seen: &mut Vec<&'t str>, key: &'t str) -> bool {
        if let Some(set) = &mut self.big {
            return set.insert(key);
        }
        if seen[self.seen_start..].contains(&key) {
            return false;
        }
        if seen.len() - self.seen_start >= 16 {
            let mut set: HashSet<&'t str> = seen.drain(self.seen_start..).collect();
            set.insert(key);
            self.big = Some(set);
        } else {
            seen.push(key);
        }
        true
    }
}

/// Re-serialises the value that starts at `nodes[0]` of a simd-json tape and
/// returns how many nodes it occupied. Keeps input order, sanitises strings,
/// drops duplicate keys at every level (first wins). Iterative: nesting
/// depth costs heap, not stack. An empty slice writes `null`.
pub fn write_tape_value<'t>(out: &mut Vec<u8>, nodes: &[Node<'t>]) -> usize {
    match nodes.first() {
        None => {
            out.extend_from_slice(b"null");
            return 0;
        }
        Some(Node::String(s)) => {
            write_str(out, s.as_bytes());
            return 1;
        }
        Some(Node::Static(s)) => {
            write_static(out, s);
            return 1;
        }
        Some(_) => {}
    }
    let mut frames: Vec<Frame<'t>> = Vec::new();
    let mut seen: Vec<&'t str> = Vec::new();
    let mut i = 0usize;
    'value: loop {
        match nodes.get(i) {
            // Only on a malformed tape; keeps the output valid JSON.
            None => out.extend_from_slice(b"null"),
            Some(Node::String(s)) => {
                write_str(out, s.as_bytes());
                i += 1;
            }
            Some(Node::Static(s)) => {
                write_static(out, s);
                i += 1;
            }
            Some(&Node::Array { len, .. }) | Some(&Node::Object { len, .. }) => {
                let is_obj = matches!(nodes.get(i), Some(Node::Object { .. }));
                out.push(if is_obj { b'{' } else { b'[' });
                frames.push(Frame {
                    is_obj,
                    remaining: len,
                    first: true,
                    seen_start: seen.len(),
                    big: None,
                });
                i += 1;
            }
        }
        // Find the next value to write, closing finished containers.
        loop {
            let Some(f) = frames.last_mut() else {
                return i;
            };
            if f.remaining == 0 {
                out.push(if f.is_obj { b'}' } else { b']' });
                seen.truncate(f.seen_start);
                frames.pop();
                continue;
            }
            f.remaining -= 1;
            if !f.is_obj {
                if !f.first {
                    out.push(b',');
                }
                f.first = false;
                continue 'value;
            }
            let Some(&Node::String(key)) = nodes.get(i) else {
                f.remaining = 0; // malformed tape: close the object
                continue;
            };
            i += 1;
            if !f.key_is_new(&mut seen, key) {
                i += node_span(nodes, i);
                continue;
            }
            write_key(out, &mut f.first, key.as_bytes());
            continue 'value;
        }
    }
}

/// Input nested deeper than allowed (see [`prescan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON nested too deeply")
    }
}

impl std::error::Error for TooDeep {}

#[inline]
fn hex_digit(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'f' => Some(u32::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(b - b'A' + 10)),
        _ => None,
    }
}

/// The code unit of the 4 hex digits at `buf[at..at + 4]`, if they are hex.
#[inline]
fn hex4(buf: &[u8], at: usize) -> Option<u32> {
    let h = buf.get(at..at + 4)?;
    let mut v = 0;
    for &b in h {
        v = (v << 4) | hex_digit(b)?;
    }
    Some(v)
}

const HIGH_SURROGATES: std::ops::Range<u32> = 0xd800..0xdc00;
const LOW_SURROGATES: std::ops::Range<u32> = 0xdc00..0xe000;

/// Prepares a JSON text for simd-json, in place and without changing its
/// length: inside strings, `\u0000`, a high surrogate escape not followed by
/// a low surrogate escape, and a low surrogate escape not preceded by a high
/// one are each rewritten to `\ufffd`. (An escaped backslash followed by
/// `u`, as in `\\u0000`, is not an escape and is left alone.) Outside
/// strings, fails when `[`/`{` nest deeper than `max_depth`.
///
/// It only tracks string boundaries, not full syntax: invalid JSON passes
/// through for the parser to reject.
pub fn prescan(buf: &mut [u8], max_depth: usize) -> Result<(), TooDeep> {
    let n = buf.len();
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < n {
        match buf[i] {
            b'"' => {
                i += 1;
                loop {
                    while i < n && buf[i] != b'"' && buf[i] != b'\\' {
                        i += 1;
                    }
                    if i >= n {
                        return Ok(());
                    }
                    if buf[i] == b'"' {
                        i += 1;
                        break;
                    }
                    // A backslash: an escape of two bytes, or six for \uXXXX.
                    if buf.get(i + 1) != Some(&b'u') {
                        i += 2;
                        continue;
                    }
                    let Some(cp) = hex4(buf, i + 2) else {
                        i += 2; // bad \u escape: the parser rejects it
                        continue;
                    };
                    let bad = if HIGH_SURROGATES.contains(&cp) {
                        let paired = buf.get(i + 6) == Some(&b'\\')
                            && buf.get(i + 7) == Some(&b'u')
                            && matches!(hex4(buf, i + 8), Some(lo) if LOW_SURROGATES.contains(&lo));
                        if paired {
                            i += 12;
                            continue;
                        }
                        true
                    } else {
                        cp == 0 || LOW_SURROGATES.contains(&cp)
                    };
                    if bad {
                        if let Some(h) = buf.get_mut(i + 2..i + 6) {
                            h.copy_from_slice(b"fffd");
                        }
                    }
                    i += 6;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(TooDeep);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(input: &[u8]) -> String {
        let mut v = Vec::new();
        write_str(&mut v, input);
        String::from_utf8(v).expect("output is UTF-8")
    }

    fn tape_json(input: &str) -> String {
        let mut b = input.as_bytes().to_vec();
        prescan(&mut b, 64).unwrap();
        let tape = simd_json::to_tape(&mut b).unwrap();
        let mut out = Vec::new();
        let used = write_tape_value(&mut out, &tape.0);
        assert_eq!(used, tape.0.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_and_escapes() {
        assert_eq!(s(b""), r#""""#);
        assert_eq!(s(b"hello"), r#""hello""#);
        assert_eq!(s(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(s(b"\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(s(b"\x01\x1f\x7f"), "\"\\u0001\\u001f\x7f\"");
        assert_eq!(s(b"</script>&"), r#""</script>&""#);
        assert_eq!(s(b"a/b"), r#""a/b""#);
    }

    #[test]
    fn nul_becomes_replacement() {
        assert_eq!(s(b"a\0b"), "\"a\u{FFFD}b\"");
    }

    #[test]
    fn non_ascii_kept_and_line_separators_escaped() {
        assert_eq!(s("héllo ✓ 😀".as_bytes()), "\"héllo ✓ 😀\"");
        assert_eq!(s("a\u{2028}b\u{2029}c".as_bytes()), r#""a\u2028b\u2029c""#);
        // Other E2 sequences are untouched.
        assert_eq!(s("\u{2027}\u{202a}€".as_bytes()), "\"\u{2027}\u{202a}€\"");
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        assert_eq!(s(b"a\xffb"), "\"a\u{FFFD}b\"");
        // Truncated 3-byte sequence at the end: one replacement.
        assert_eq!(s(b"x\xe2\x82"), "\"x\u{FFFD}\"");
        // Encoded surrogate (CESU) and overlong forms.
        assert_eq!(s(b"\xed\xa0\x80"), "\"\u{FFFD}\u{FFFD}\u{FFFD}\"");
        assert_eq!(s(b"\xc0\xaf"), "\"\u{FFFD}\u{FFFD}\"");
        // A lone E2 before a quote must not swallow the quote.
        assert_eq!(s(b"\xe2\""), "\"\u{FFFD}\\\"\"");
    }

    #[test]
    fn numbers() {
        let f = |x: f64| {
            let mut v = Vec::new();
            write_f64(&mut v, x);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f(0.5), "0.5");
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(-0.0), "-0.0");
        assert_eq!(f(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f(1e21), "1e21");
        assert_eq!(f(1.5e-7), "1.5e-7");
        assert_eq!(f(123456789012345680000.0), "123456789012345680000.0");
        assert_eq!(f(f64::NAN), "null");
        let mut v = Vec::new();
        write_i64(&mut v, i64::MIN);
        v.push(b' ');
        write_u64(&mut v, u64::MAX);
        v.push(b' ');
        write_u64(&mut v, 0);
        assert_eq!(v, b"-9223372036854775808 18446744073709551615 0");
    }

    #[test]
    fn tape_round_trip_keeps_order_and_numbers() {
        let src = r#"{"z":1,"a":[true,false,null,-5,18446744073709551615,1.5,1e300,{}],"m":{"x":"y"},"e":[]}"#;
        assert_eq!(
            tape_json(src),
            r#"{"z":1,"a":[true,false,null,-5,18446744073709551615,1.5,1e300,{}],"m":{"x":"y"},"e":[]}"#
        );
        assert_eq!(tape_json("  \"x\"  "), r#""x""#);
        assert_eq!(tape_json("[[[]],[1]]"), "[[[]],[1]]");
    }

    #[test]
    fn tape_duplicate_keys_first_wins_at_every_level() {
        assert_eq!(
            tape_json(r#"{"a":1,"b":{"c":1,"c":[2,3]},"a":{"deep":[1]},"d":2}"#),
            r#"{"a":1,"b":{"c":1},"d":2}"#
        );
        // Same key name at different levels is not a duplicate.
        assert_eq!(
            tape_json(r#"{"a":{"a":{"a":1}}}"#),
            r#"{"a":{"a":{"a":1}}}"#
        );
    }

    #[test]
    fn tape_many_keys_dedup_spills_to_hash() {
        let mut src = String::from("{");
        for i in 0..100 {
            src.push_str(&format!("\"k{}\":{i},", i % 40));
        }
        src.push_str("\"end\":{\"k1\":true}}");
        let out: serde_json::Value = serde_json::from_str(&tape_json(&src)).unwrap();
        let obj = out.as_object().unwrap();
        assert_eq!(obj.len(), 41);
        assert_eq!(obj["k1"], 1);
        assert_eq!(obj["k39"], 39);
        assert_eq!(obj["end"]["k1"], true);
    }

    #[test]
    fn simd_json_surrogate_behaviour_without_prescan() {
        // Documents what the parser does on its own, and why prescan exists.
        let parse = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            simd_json::to_tape(&mut b).map(|t| format!("{:?}", t.0))
        };
        // A lone high surrogate silently becomes U+0000.
        assert_eq!(parse(r#""\ud800""#).unwrap(), r#"[String("\0")]"#);
        // A lone low surrogate, or a high one followed by a non-low escape, is rejected.
        assert!(parse(r#""\udc00""#).is_err());
        assert!(parse(r#""\ud800\u0041""#).is_err());
        // Raw control characters and invalid UTF-8 are rejected.
        assert!(parse("\"a\u{1}b\"").is_err());
        let mut bad = b"\"a\xffb\"".to_vec();
        assert!(simd_json::to_tape(&mut bad).is_err());
    }

    #[test]
    fn prescan_rewrites_bad_escapes() {
        let fix = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            prescan(&mut b, 64).unwrap();
            String::from_utf8(b).unwrap()
        };
        assert_eq!(fix(r#"["\ud800"]"#), r#"["\ufffd"]"#);
        assert_eq!(fix(r#"["\udc00x"]"#), r#"["\ufffdx"]"#);
        assert_eq!(fix(r#"["\ud800\u0041"]"#), r#"["\ufffd\u0041"]"#);
        assert_eq!(
            fix(r#"["\ud800\ud800\udc00"]"#),
            r#"["\ufffd\ud800\udc00"]"#
        );
        assert_eq!(fix(r#"["\uDBFF\uDFFF"]"#), r#"["\uDBFF\uDFFF"]"#);
        assert_eq!(fix(r#"["\u0000","\u0001"]"#), r#"["\ufffd","\u0001"]"#);
        // `\\u0000` is an escaped backslash then text, not an escape.
        assert_eq!(
            fix(r#"["\\u0000","\\\u0000"]"#),
            r#"["\\u0000","\\\ufffd"]"#
        );
        // Escaped quote does not end the string.
        assert_eq!(fix(r#"["\"\ud800"]"#), r#"["\"\ufffd"]"#);
        // Outside strings nothing is touched.
        assert_eq!(fix(r#"{"k":\u0000}"#), r#"{"k":\u0000}"#);
        // Truncated input does not panic.
        for t in [
            r#""\"#,
            r#""\u"#,
            r#""\ud8"#,
            r#""\ud800\"#,
            r#""\ud800\udc"#,
        ] {
            let _ = fix(t);
        }
    }

    #[test]
    fn prescan_then_parse_gives_replacement() {
        assert_eq!(tape_json(r#""a\ud800b""#), "\"a\u{FFFD}b\"");
        assert_eq!(tape_json(r#""a\udc00b""#), "\"a\u{FFFD}b\"");
        assert_eq!(tape_json(r#""\u0000""#), "\"\u{FFFD}\"");
        assert_eq!(tape_json(r#""\ud83d\ude00""#), "\"😀\"");
        assert_eq!(tape_json(r#"{"\u0000k":1}"#), "{\"\u{FFFD}k\":1}");
    }

    #[test]
    fn prescan_depth() {
        let ok = "[".repeat(5) + &"]".repeat(5);
        assert_eq!(prescan(&mut ok.clone().into_bytes(), 5), Ok(()));
        assert_eq!(prescan(&mut ok.into_bytes(), 4), Err(TooDeep));
        // Brackets inside strings do not count.
        let mut s = br#"["[[[[[[[[[[{{{{"]"#.to_vec();
        assert_eq!(prescan(&mut s, 1), Ok(()));
        let mut deep = "[".repeat(10_000).into_bytes();
        assert_eq!(prescan(&mut deep, 32), Err(TooDeep));
    }

    #[test]
    fn borrowed_value_writer() {
        let mut b = br#"{"a":"x\u0000","b":[1,-2,2.5,{"c":null}],"a":2}"#.to_vec();
        prescan(&mut b, 64).unwrap();
        let v = simd_json::to_borrowed_value(&mut b).unwrap();
        let mut out = Vec::new();
        write_value(&mut out, &v);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"a": "x\u{FFFD}", "b": [1, -2, 2.5, {"c": null}]})
        );
    }

    #[test]
    fn key_set() {
        let mut k = KeySet::new();
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        for key in &keys {
            assert!(k.insert(key.as_bytes()));
        }
        for key in &keys {
            assert!(!k.insert(key.as_bytes()));
            assert!(k.contains(key.as_bytes()));
        }
        assert!(!k.contains(b"zz"));
        k.clear();
        assert!(k.insert(b"k1"));
    }

    proptest! {
        #[test]
        fn printable_ascii_is_written_as_serde_json_writes_it(s in "[ -~]{0,80}") {
            let mut out = Vec::new();
            write_str(&mut out, s.as_bytes());
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn any_bytes_give_a_valid_jsonb_safe_string(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut v = Vec::new();
            write_str(&mut v, &bytes);
            let parsed: serde_json::Value = serde_json::from_slice(&v).unwrap();
            let text = parsed.as_str().unwrap();
            prop_assert!(!text.contains('\0'));
            prop_assert_eq!(text, String::from_utf8_lossy(&bytes).replace('\0', "\u{FFFD}"));
            // The line stays one line.
            prop_assert!(!v.contains(&b'\n') && !v.contains(&b'\r'));
        }

        #[test]
        fn any_string_round_trips(text in any::<String>()) {
            let mut v = Vec::new();
            write_str(&mut v, text.as_bytes());
            let parsed: String = serde_json::from_slice(&v).unwrap();
            prop_assert_eq!(parsed, text.replace('\0', "\u{FFFD}"));
        }

        #[test]
        fn floats_round_trip(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            let mut v = Vec::new();
            write_f64(&mut v, x);
            let back: f64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
            prop_assert_eq!(back, x);
            let parsed: serde_json::Value = serde_json::from_slice(&v).unwrap();
            prop_assert!(parsed.is_f64());
        }

        #[test]
        fn prescan_never_panics_and_keeps_length(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\\'), Just(b'u'), Just(b'"'), Just(b'd'), Just(b'8'), Just(b'0'), Just(b'['), any::<u8>()], 0..48)) {
            let mut b = bytes.clone();
            let _ = prescan(&mut b, 8);
            prop_assert_eq!(b.len(), bytes.len());
        }
    }
}
