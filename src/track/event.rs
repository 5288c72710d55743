//! The event model: one event is one NDJSON line, encoded once on the core
//! that received the request and then carried as bytes to the sinks.
//!
//! Every line has the same 13 fields in the same order, absent ones as
//! `null` (see `docs/event.schema.json`):
//!
//! `{"event_id","timestamp","type","source","ip","ip_hash","ua","url",
//! "referrer","session_id","pageview_id","auth","payload"}` + `\n`
//!
//! A fixed order and a fixed field set keep sinks trivial (a file sink
//! appends, a PostgreSQL sink maps fields to columns) and make lines
//! comparable byte for byte in tests. This module owns the line layout
//! ([`encode`], or [`write_head`] + payload + [`write_tail`] to write the
//! payload straight into the line) and the payload helpers shared by the
//! pixel and collect endpoints ([`ObjectBuilder`], [`write_marketing`]).
//! All client-supplied text goes through [`json::write_str`].

use crate::clock;
use crate::track::json::{self, KeySet};
use std::borrow::Cow;
use uuid::Uuid;

/// Which endpoint produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Pixel,
    Collect,
    Stealth,
    Test,
    Server,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Pixel => "pixel",
            Source::Collect => "collect",
            Source::Stealth => "stealth",
            Source::Test => "test",
            Source::Server => "server",
        }
    }
}

/// The kind of a tg1 token (its one-letter code in the event line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `p`
    P,
    /// `f`
    F,
}

impl AuthKind {
    /// `b'p'` → `P`, `b'f'` → `F`, anything else → `None`.
    pub fn from_byte(b: u8) -> Option<AuthKind> {
        match b {
            b'p' => Some(AuthKind::P),
            b'f' => Some(AuthKind::F),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::P => "p",
            AuthKind::F => "f",
        }
    }
}

/// A verified tg1 token, as plain data. Written as
/// `{"scheme":"tg1","kind":"p","pageview_id":"…","age_s":N,"ip_changed":false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    pub kind: AuthKind,
    pub pageview_id: Uuid,
    /// Token age in seconds at receive time.
    pub age_s: u64,
    /// The client IP differs from the one the token was issued to.
    pub ip_changed: bool,
}

/// What every event of one request shares.
#[derive(Debug, Clone, Copy)]
pub struct RequestCtx<'a> {
    /// Server receive time (ms since the Unix epoch); the `timestamp` field.
    pub received_ms: u64,
    pub source: Source,
    pub ip: Option<&'a str>,
    pub ip_hash: Option<&'a [u8]>,
    /// The User-Agent header as received.
    pub ua: Option<&'a [u8]>,
    pub auth: Option<&'a Auth>,
    /// Trusted page view id (from the token); wins over an event's own.
    pub pageview_id: Option<Uuid>,
    /// Session id from the cookie; used when the event has none of its own.
    pub session_id: Option<&'a [u8]>,
}

/// The per-event fields (everything but the payload).
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub event_id: Uuid,
    /// The `type` field.
    pub kind: &'a [u8],
    pub url: Option<&'a [u8]>,
    pub referrer: Option<&'a [u8]>,
    /// Wins over `RequestCtx::session_id`.
    pub session_id: Option<&'a [u8]>,
    /// Used only when `RequestCtx::pageview_id` is `None` (the pixel's `pv`).
    pub pageview_id: Option<Uuid>,
}

fn write_uuid(out: &mut Vec<u8>, id: &Uuid) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
    out.push(b'"');
}

fn write_opt_str(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(s) => json::write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends everything of the line up to and including `"payload":`. The
/// caller then writes exactly one JSON object and calls [`write_tail`].
pub fn write_head(out: &mut Vec<u8>, ctx: &RequestCtx, ev: &EventFields) {
    out.extend_from_slice(b"{\"event_id\":");
    write_uuid(out, &ev.event_id);
    out.extend_from_slice(b",\"timestamp\":\"");
    clock::write_rfc3339_millis(out, ctx.received_ms);
    out.extend_from_slice(b"\",\"type\":");
    json::write_str(out, ev.kind);
    out.extend_from_slice(b",\"source\":\"");
    out.extend_from_slice(ctx.source.as_str().as_bytes());
    out.extend_from_slice(b"\",\"ip\":");
    write_opt_str(out, ctx.ip.map(str::as_bytes));
    out.extend_from_slice(b",\"ip_hash\":");
    write_opt_str(out, ctx.ip_hash);
    out.extend_from_slice(b",\"ua\":");
    write_opt_str(out, ctx.ua);
    out.extend_from_slice(b",\"url\":");
    write_opt_str(out, ev.url);
    out.extend_from_slice(b",\"referrer\":");
    write_opt_str(out, ev.referrer);
    out.extend_from_slice(b",\"session_id\":");
    write_opt_str(out, ev.session_id.or(ctx.session_id));
    out.extend_from_slice(b",\"pageview_id\":");
    match ctx.pageview_id.or(ev.pageview_id) {
        Some(id) => write_uuid(out, &id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"auth\":");
    match ctx.auth {
        Some(a) => {
            out.extend_from_slice(b"{\"scheme\":\"tg1\",\"kind\":\"");
            out.extend_from_slice(a.kind.as_str().as_bytes());
            out.extend_from_slice(b"\",\"pageview_id\":");
            write_uuid(out, &a.pageview_id);
            out.extend_from_slice(b",\"age_s\":");
            json::write_u64(out, a.age_s);
            out.extend_from_slice(b",\"ip_changed\":");
            out.extend_from_slice(if a.ip_changed { b"true}" } else { b"false}" });
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"payload\":");
}

/// Closes a line begun with [`write_head`] (after its payload object).
#[inline]
pub fn write_tail(out: &mut Vec<u8>) {
    out.extend_from_slice(b"}\n");
}

/// Appends one complete event line. `payload_json` must be one complete JSON
/// object produced by this crate (it is copied verbatim); empty means `{}`.
pub fn encode(out: &mut Vec<u8>, ctx: &RequestCtx, ev: &EventFields, payload_json: &[u8]) {
    write_head(out, ctx, ev);
    if payload_json.is_empty() {
        out.extend_from_slice(b"{}");
    } else {
        out.extend_from_slice(payload_json);
    }
    write_tail(out);
}

/// Writes a JSON object key by key, never writing the same key twice.
#[derive(Debug)]
pub struct ObjectBuilder<'k> {
    first: bool,
    keys: KeySet<'k>,
}

impl<'k> ObjectBuilder<'k> {
    /// Appends `{`.
    pub fn begin(out: &mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectBuilder {
            first: true,
            keys: KeySet::new(),
        }
    }

    /// Writes `key:` (with a separating comma) and returns true when `key`
    /// is new; the caller must then write exactly one value. Returns false
    /// and writes nothing for a key already written.
    pub fn key(&mut self, out: &mut Vec<u8>, key: &'k [u8]) -> bool {
        if !self.keys.insert(key) {
            return false;
        }
        json::write_key(out, &mut self.first, key);
        true
    }

    /// Whether `key` has been written.
    pub fn has(&self, key: &[u8]) -> bool {
        self.keys.contains(key)
    }

    /// `key: "value"` when `key` is new.
    pub fn string(&mut self, out: &mut Vec<u8>, key: &'k [u8], value: &[u8]) -> bool {
        let new = self.key(out, key);
        if new {
            json::write_str(out, value);
        }
        new
    }

    /// Appends `}`.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.push(b'}');
    }
}

/// Advertising click identifiers collected into `payload.click_ids`.
pub const CLICK_IDS: [&[u8]; 9] = [
    b"gclid",
    b"gbraid",
    b"wbraid",
    b"fbclid",
    b"msclkid",
    b"ttclid",
    b"li_fat_id",
    b"twclid",
    b"dclid",
];

/// Whether `name` is one of [`CLICK_IDS`] (exact, case-sensitive).
pub fn is_click_id(name: &[u8]) -> bool {
    CLICK_IDS.contains(&name)
}

/// `utm_source` → `source`: the name after the `utm_` prefix (exact,
/// lower-case prefix), or `None` when there is no prefix or nothing after it.
pub fn utm_name(name: &[u8]) -> Option<&[u8]> {
    match name.strip_prefix(b"utm_") {
        Some(rest) if !rest.is_empty() => Some(rest),
        _ => None,
    }
}

/// A decoded query parameter (name, value).
pub type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The query string of a URL: after the first `?`, before any `#`.
pub fn url_query(url: &[u8]) -> Option<&[u8]> {
    let end = url.iter().position(|&b| b == b'#').unwrap_or(url.len());
    let url = &url[..end];
    let start = url.iter().position(|&b| b == b'?')? + 1;
    Some(&url[start..])
}

/// Writes the `entries` (name, value) into a new object under `key`, first
/// occurrence of a name winning; writes nothing if there are none or the
/// payload already has `key`.
fn write_string_map<'k, 'p>(
    out: &mut Vec<u8>,
    payload: &mut ObjectBuilder<'k>,
    key: &'k [u8],
    entries: impl Iterator<Item = (&'p [u8], &'p [u8])> + Clone,
) {
    if payload.has(key) || entries.clone().next().is_none() {
        return;
    }
    if payload.key(out, key) {
        let mut obj = ObjectBuilder::begin(out);
        for (name, value) in entries {
            obj.string(out, name, value);
        }
        obj.finish(out);
    }
}

/// Adds `payload.utm` (from `utm_*` parameters, prefix stripped) and
/// `payload.click_ids` (from [`CLICK_IDS`]) as objects of strings. Pairs in
/// `explicit` (the request's own parameters) come first and win; `from_url`
/// (the parameters of the page URL) only fill names not yet present. An
/// object is left out when nothing matches or the payload already has it
/// (e.g. the client sent its own `utm`).
pub fn write_marketing<'k>(
    out: &mut Vec<u8>,
    payload: &mut ObjectBuilder<'k>,
    explicit: &[Pair<'_>],
    from_url: &[Pair<'_>],
) {
    let all = explicit.iter().chain(from_url.iter());
    let utm = all
        .clone()
        .filter_map(|(k, v)| Some((utm_name(k)?, v.as_ref())));
    write_string_map(out, payload, b"utm", utm);
    let clicks = all
        .filter(|(k, _)| is_click_id(k))
        .map(|(k, v)| (k.as_ref(), v.as_ref()));
    write_string_map(out, payload, b"click_ids", clicks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::collect::encode_collect;
    use crate::track::ids::Rng;
    use crate::track::pixel::build_pixel_event;

    const PV: &str = "0192f5e0-8b7a-7c3d-9e1f-0a1b2c3d4e5f";

    fn ctx<'a>(auth: Option<&'a Auth>) -> RequestCtx<'a> {
        RequestCtx {
            received_ms: 1_795_829_081_123,
            source: Source::Collect,
            ip: Some("203.0.113.7"),
            ip_hash: Some(b"9f86d081884c7d65"),
            ua: Some(b"Mozilla/5.0 (X11; Linux x86_64)"),
            auth,
            pageview_id: None,
            session_id: None,
        }
    }

    fn fields(kind: &[u8]) -> EventFields<'_> {
        EventFields {
            event_id: Uuid::parse_str("0192f5e0-8b7a-7000-8000-000000000001").unwrap(),
            kind,
            url: None,
            referrer: None,
            session_id: None,
            pageview_id: None,
        }
    }

    const KEYS: [&str; 13] = [
        "event_id",
        "timestamp",
        "type",
        "source",
        "ip",
        "ip_hash",
        "ua",
        "url",
        "referrer",
        "session_id",
        "pageview_id",
        "auth",
        "payload",
    ];

    #[test]
    fn exact_line() {
        let auth = Auth {
            kind: AuthKind::P,
            pageview_id: Uuid::parse_str(PV).unwrap(),
            age_s: 12,
            ip_changed: true,
        };
        let mut c = ctx(Some(&auth));
        c.pageview_id = Some(auth.pageview_id);
        c.session_id = Some(b"cookie-sid");
        let mut ev = fields(b"click");
        ev.url = Some(b"https://shop.example/p?q=1");
        ev.pageview_id = Some(Uuid::nil()); // ctx wins
        let mut out = b"previous\n".to_vec();
        encode(&mut out, &c, &ev, br#"{"x":1}"#);
        let expected = concat!(
            "previous\n",
            r#"{"event_id":"0192f5e0-8b7a-7000-8000-000000000001","timestamp":"2026-11-28T01:24:41.123Z","#,
            r#""type":"click","source":"collect","ip":"203.0.113.7","ip_hash":"9f86d081884c7d65","#,
            r#""ua":"Mozilla/5.0 (X11; Linux x86_64)","url":"https://shop.example/p?q=1","referrer":null,"#,
            r#""session_id":"cookie-sid","pageview_id":"0192f5e0-8b7a-7c3d-9e1f-0a1b2c3d4e5f","#,
            r#""auth":{"scheme":"tg1","kind":"p","pageview_id":"0192f5e0-8b7a-7c3d-9e1f-0a1b2c3d4e5f","age_s":12,"ip_changed":true},"#,
            r#""payload":{"x":1}}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn nulls_and_fallbacks() {
        let mut c = ctx(None);
        c.ip = None;
        c.ip_hash = None;
        c.ua = None;
        c.session_id = Some(b"cookie");
        let mut ev = fields(b"");
        ev.session_id = Some(b"own");
        ev.pageview_id = Some(Uuid::parse_str(PV).unwrap());
        let mut out = Vec::new();
        encode(&mut out, &c, &ev, b"");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ip"], serde_json::Value::Null);
        assert_eq!(v["ua"], serde_json::Value::Null);
        assert_eq!(v["auth"], serde_json::Value::Null);
        assert_eq!(v["session_id"], "own");
        assert_eq!(v["pageview_id"], PV);
        assert_eq!(v["payload"], serde_json::json!({}));
        assert!(out.ends_with(b"}\n"));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn object_builder_dedups() {
        let mut out = Vec::new();
        let mut o = ObjectBuilder::begin(&mut out);
        assert!(o.string(&mut out, b"a", b"1"));
        assert!(!o.string(&mut out, b"a", b"2"));
        assert!(o.key(&mut out, b"b"));
        out.extend_from_slice(b"true");
        assert!(o.has(b"b"));
        o.finish(&mut out);
        assert_eq!(out, br#"{"a":"1","b":true}"#);
    }

    #[test]
    fn marketing_precedence() {
        let p = |k: &'static str, v: &'static str| -> Pair<'static> {
            (Cow::Borrowed(k.as_bytes()), Cow::Borrowed(v.as_bytes()))
        };
        let explicit = [p("utm_source", "news"), p("gclid", "G1"), p("utm_", "x")];
        let from_url = [
            p("utm_source", "url"),
            p("utm_medium", "email"),
            p("fbclid", "F"),
            p("gclid", "G2"),
        ];
        let mut out = Vec::new();
        let mut o = ObjectBuilder::begin(&mut out);
        write_marketing(&mut out, &mut o, &explicit, &from_url);
        o.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"utm":{"source":"news","medium":"email"},"click_ids":{"gclid":"G1","fbclid":"F"}}"#
        );
        // Supplied already / nothing to add.
        let mut out = Vec::new();
        let mut o = ObjectBuilder::begin(&mut out);
        assert!(o.key(&mut out, b"utm"));
        out.extend_from_slice(b"5");
        write_marketing(&mut out, &mut o, &explicit, &[]);
        write_marketing(&mut out, &mut o, &[], &[]);
        o.finish(&mut out);
        assert_eq!(out, br#"{"utm":5,"click_ids":{"gclid":"G1"}}"#);
    }

    #[test]
    fn url_query_parts() {
        assert_eq!(url_query(b"https://a/b?x=1#frag"), Some(&b"x=1"[..]));
        assert_eq!(url_query(b"/p?"), Some(&b""[..]));
        assert_eq!(url_query(b"/p#a?b"), None);
        assert_eq!(url_query(b"/p"), None);
    }

    /// Encodes a varied set of events through the real endpoints and checks
    /// every line against docs/event.schema.json and the field order.
    #[test]
    fn every_line_matches_schema_and_order() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/event.schema.json")).unwrap();
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let mut rng = Rng::from_seed(11);
        let auth_f = Auth {
            kind: AuthKind::F,
            pageview_id: Uuid::parse_str(PV).unwrap(),
            age_s: 0,
            ip_changed: false,
        };
        let mut out = Vec::new();

        // Pixel with utm / click ids, url-embedded ones, props, weird bytes.
        let mut c = ctx(None);
        c.source = Source::Pixel;
        c.ip = None;
        build_pixel_event(
            &mut out,
            b"e=pageview&uid=u1&sid=s1&url=https%3A%2F%2Fshop.example%2F%3Futm_medium%3Dcpc%26gclid%3DX&ref=https://r.example/&utm_source=news&fbclid=F&color=red&color=blue&x=%FF%00%E2%80%A8&pv=not-a-uuid",
            &c,
            &mut rng,
        );
        build_pixel_event(&mut out, b"", &c, &mut rng);
        let pv_query = format!("pv={PV}&e=scroll");
        c.session_id = Some(b"cookie-sid");
        build_pixel_event(&mut out, pv_query.as_bytes(), &c, &mut rng);

        // Collect array with auth, weird strings, nested payloads.
        let mut c = ctx(Some(&auth_f));
        c.pageview_id = Some(auth_f.pageview_id);
        let mut body = br#"[
            {"type":"click","url":"https://shop.example/x?utm_campaign=w&ttclid=T","payload":{"a":[1,2.5,{"b":null}]}},
            {"e":"custom","event_id":"0192f5e0-8b7a-7000-8000-0000000000ff","ts":1700000000000,"pageview_id":"x"},
            {"type":"s\u0000\ud800\u2028<script>","session_id":"sess","referrer":"r","n":-1,"f":1e-9},
            {"event_id":42,"session_id":7,"payload":"notobj","utm":{"source":1}},
            {}
        ]"#
        .to_vec();
        let n = encode_collect(&mut out, &mut body, 10, None, &c, &mut rng).unwrap();
        assert_eq!(n, 5);

        // Stealth / test / server sources, ip present, auth absent.
        for source in [Source::Stealth, Source::Test, Source::Server] {
            let mut c = ctx(None);
            c.source = source;
            let mut body = br#"{"type":"t","ok":true}"#.to_vec();
            encode_collect(
                &mut out,
                &mut body,
                1,
                Some(b"https://site.example/?utm_term=k"),
                &c,
                &mut rng,
            )
            .unwrap();
        }

        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.strip_suffix('\n').unwrap().split('\n').collect();
        assert_eq!(lines.len(), 3 + 5 + 3);
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line}\n{errors:?}");
            // Key order, checked on the raw text since serde_json sorts keys.
            let mut pos = 0;
            for key in KEYS {
                let needle = format!("\"{key}\":");
                let at = line[pos..]
                    .find(&needle)
                    .unwrap_or_else(|| panic!("{key} in {line}"));
                pos += at + needle.len();
            }
            assert!(line.starts_with("{\"event_id\":"));
            assert_eq!(v.as_object().unwrap().len(), 13);
        }
        // The schema rejects what it should.
        let mut bad: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        bad["source"] = "other".into();
        assert!(!validator.is_valid(&bad));
        let mut bad: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        bad["extra"] = 1.into();
        assert!(!validator.is_valid(&bad));
        let mut bad: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        bad["payload"] = serde_json::Value::Null;
        assert!(!validator.is_valid(&bad));
        let mut bad: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        bad["timestamp"] = "2026-11-28T01:24:41Z".into();
        assert!(!validator.is_valid(&bad));
    }
}
