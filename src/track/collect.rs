//! POST bodies of `/collect` and the stealth endpoint: one JSON object or
//! an array of objects, each becoming one event line.
//!
//! The body is parsed in place by simd-json into a tape (a flat node list)
//! rather than a DOM: the tape keeps the input's key order and duplicate
//! keys visible, and walking it needs no recursion, so deep nesting costs
//! no stack. Before parsing, [`json::prescan`] rewrites lone surrogate and
//! `\u0000` escapes to `\ufffd` and rejects nesting deeper than
//! [`MAX_DEPTH`]. What simd-json itself rejects becomes a 400:
//! invalid UTF-8 anywhere in the body (it is not repaired), raw control
//! characters inside strings, and integers outside i64/u64 or floats
//! outside f64.
//!
//! Mapping of an event object (duplicate keys: the first occurrence wins,
//! at every level):
//! - `event_id`: kept when a UUID string (normalised to lower-case
//!   hyphenated), else a server UUIDv7; a rejected value is kept as
//!   `payload.claimed_event_id`;
//! - `type` (or GoTrack's `e`; `type` wins) → type, default `event`;
//! - `url`, `referrer`, `session_id` → fields when strings; a non-string
//!   value stays in the payload under its own key;
//! - `ts` → `payload.client_ts` (any JSON value);
//! - `pageview_id` → `payload.claimed_pageview_id`: the event's page view
//!   only ever comes from the token (`RequestCtx::pageview_id`);
//! - `payload` object → its keys merged into the payload after the
//!   top-level ones (top-level keys win); a non-object stays as
//!   `payload.payload`;
//! - every other key → payload as is, in input order;
//! - finally `payload.utm` / `payload.click_ids` from the query of the
//!   event's URL (its own `url`, else the `url_fallback`), unless present.

use crate::track::event::{self, EventFields, ObjectBuilder, Pair, RequestCtx};
use crate::track::ids::Rng;
use crate::track::json::{self, KeySet};
use crate::track::pixel::query_pairs;
use simd_json::{ErrorType, Node};
use std::fmt;
use uuid::Uuid;

/// Deepest `[`/`{` nesting accepted in a body (the event object or array
/// counts). Real events need a handful; the cap keeps event lines within
/// what downstream JSON parsers (serde_json: 128) and jsonb accept.
pub const MAX_DEPTH: usize = 32;

/// Why a body was refused. Messages are fixed texts (plus numbers), safe to
/// return to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectError {
    /// Not JSON, or not an object / array of objects: 400.
    InvalidJson(String),
    /// More events than allowed (the count found): 413.
    TooManyEvents(usize),
}

impl CollectError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            CollectError::InvalidJson(_) => 400,
            CollectError::TooManyEvents(_) => 413,
        }
    }
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::InvalidJson(msg) => f.write_str(msg),
            CollectError::TooManyEvents(n) => write!(f, "too many events: {n}"),
        }
    }
}

impl std::error::Error for CollectError {}

fn invalid(msg: &str) -> CollectError {
    CollectError::InvalidJson(msg.to_owned())
}

fn parse_error(e: &simd_json::Error) -> CollectError {
    let reason = match e.error() {
        ErrorType::InvalidUtf8 => "invalid UTF-8",
        ErrorType::InvalidNumber | ErrorType::InvalidExponent => "invalid or out-of-range number",
        ErrorType::InvalidEscape
        | ErrorType::InvalidUnicodeEscape
        | ErrorType::InvalidUnicodeCodepoint => "invalid string escape",
        ErrorType::Eof => "unexpected end of input",
        ErrorType::InputTooLarge => "input too large",
        _ => "syntax error",
    };
    CollectError::InvalidJson(format!("invalid JSON: {reason}"))
}

/// Parses `body` (modified in place) and appends one event line per event
/// object to `out`; returns the number of events. `url_fallback` is the URL
/// used for events without a string `url` (the stealth POST's Referer or
/// request URL; `None` for `/collect`). Every error is detected before
/// anything is written, so on `Err` `out` is unchanged.
pub fn encode_collect(
    out: &mut Vec<u8>,
    body: &mut [u8],
    max_events: usize,
    url_fallback: Option<&[u8]>,
    ctx: &RequestCtx,
    rng: &mut Rng,
) -> Result<usize, CollectError> {
    json::prescan(body, MAX_DEPTH).map_err(|_| invalid("invalid JSON: nested too deeply"))?;
    let tape = simd_json::to_tape(body).map_err(|e| parse_error(&e))?;
    let nodes = tape.0.as_slice();
    let (count, first) = match nodes.first() {
        Some(Node::Object { .. }) => (1, 0),
        Some(&Node::Array { len, .. }) => (len, 1),
        _ => return Err(invalid("expected a JSON object or an array of objects")),
    };
    if count > max_events {
        return Err(CollectError::TooManyEvents(count));
    }
    let mut i = first;
    for _ in 0..count {
        if !matches!(nodes.get(i), Some(Node::Object { .. })) {
            return Err(invalid("expected a JSON object or an array of objects"));
        }
        i += json::node_span(nodes, i);
    }
    let mut entries = Vec::new();
    let mut i = first;
    for _ in 0..count {
        encode_one(out, nodes, i, &mut entries, url_fallback, ctx, rng);
        i += json::node_span(nodes, i);
    }
    Ok(count)
}

/// The string at `nodes[i]`, if it is one.
fn str_at<'t>(nodes: &[Node<'t>], i: usize) -> Option<&'t str> {
    match nodes.get(i) {
        Some(Node::String(s)) => Some(s),
        _ => None,
    }
}

/// `(key, value index)` of each distinct key of the object at `nodes[obj]`,
/// first occurrence winning, appended to `entries`.
fn object_entries<'t>(nodes: &[Node<'t>], obj: usize, entries: &mut Vec<(&'t str, usize)>) {
    let Some(&Node::Object { len, .. }) = nodes.get(obj) else {
        return;
    };
    let mut seen = KeySet::new();
    let mut j = obj + 1;
    for _ in 0..len {
        let Some(key) = str_at(nodes, j) else {
            return;
        };
        let value = j + 1;
        j = value + json::node_span(nodes, value);
        if seen.insert(key.as_bytes()) {
            entries.push((key, value));
        }
    }
}

/// Encodes the event object at `nodes[obj]` (known to be an object).
fn encode_one<'t>(
    out: &mut Vec<u8>,
    nodes: &[Node<'t>],
    obj: usize,
    entries: &mut Vec<(&'t str, usize)>,
    url_fallback: Option<&[u8]>,
    ctx: &RequestCtx,
    rng: &mut Rng,
) {
    entries.clear();
    object_entries(nodes, obj, entries);
    let find = |name: &str| entries.iter().find(|(k, _)| *k == name).map(|&(_, v)| v);
    let find_str = |name: &str| find(name).and_then(|v| str_at(nodes, v));

    let client_id = find_str("event_id").and_then(|s| Uuid::try_parse(s).ok());
    let type_str = find_str("type");
    let e_str = if type_str.is_none() {
        find_str("e")
    } else {
        None
    };
    let url_str = find_str("url");
    let referrer = find_str("referrer");
    let session_id = find_str("session_id");
    let merged = find("payload").filter(|&v| matches!(nodes.get(v), Some(Node::Object { .. })));

    let url = url_str.map(str::as_bytes).or(url_fallback);
    let fields = EventFields {
        event_id: client_id.unwrap_or_else(|| rng.uuid_v7(ctx.received_ms)),
        kind: type_str.or(e_str).unwrap_or("event").as_bytes(),
        url,
        referrer: referrer.map(str::as_bytes),
        session_id: session_id.map(str::as_bytes),
        pageview_id: None,
    };
    event::write_head(out, ctx, &fields);

    let mut payload = ObjectBuilder::begin(out);
    let is_str = |v: usize| str_at(nodes, v).is_some();
    for &(key, v) in entries.iter() {
        let out_key: &'t str = match key {
            "event_id" if client_id.is_some() => continue,
            "event_id" => "claimed_event_id",
            "type" if type_str.is_some() => continue,
            "e" if e_str.is_some() => continue,
            "url" | "referrer" | "session_id" if is_str(v) => continue,
            "payload" if merged.is_some() => continue,
            "ts" => "client_ts",
            "pageview_id" => "claimed_pageview_id",
            _ => key,
        };
        if payload.key(out, out_key.as_bytes()) {
            json::write_tape_value(out, nodes.get(v..).unwrap_or(&[]));
        }
    }
    if let Some(p) = merged {
        let start = entries.len();
        object_entries(nodes, p, entries);
        for &(key, v) in &entries[start..] {
            if payload.key(out, key.as_bytes()) {
                json::write_tape_value(out, nodes.get(v..).unwrap_or(&[]));
            }
        }
    }
    if let Some(q) = url.and_then(event::url_query) {
        if !(payload.has(b"utm") && payload.has(b"click_ids")) {
            let pairs: Vec<Pair> = query_pairs(q).collect();
            event::write_marketing(out, &mut payload, &[], &pairs);
        }
    }
    payload.finish(out);
    event::write_tail(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::event::Source;
    use serde_json::{json, Value};

    const PV: &str = "0192f5e0-8b7a-7c3d-9e1f-0a1b2c3d4e5f";

    fn ctx() -> RequestCtx<'static> {
        RequestCtx {
            received_ms: 1_795_829_081_123,
            source: Source::Collect,
            ip: Some("192.0.2.1"),
            ip_hash: Some(b"abc"),
            ua: None,
            auth: None,
            pageview_id: None,
            session_id: None,
        }
    }

    fn run_with(
        body: &[u8],
        max: usize,
        fallback: Option<&[u8]>,
        c: &RequestCtx,
    ) -> Result<Vec<Value>, CollectError> {
        let mut out = b"keep\n".to_vec();
        let mut b = body.to_vec();
        let res = encode_collect(&mut out, &mut b, max, fallback, c, &mut Rng::from_seed(2));
        assert!(out.starts_with(b"keep\n"));
        match res {
            Ok(n) => {
                let text = std::str::from_utf8(&out[5..]).unwrap();
                let lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(lines.len(), n);
                assert!(n == 0 || text.ends_with('\n'));
                Ok(lines)
            }
            Err(e) => {
                assert_eq!(out, b"keep\n", "out untouched on error");
                Err(e)
            }
        }
    }

    fn run(body: &str) -> Result<Vec<Value>, CollectError> {
        run_with(body.as_bytes(), 100, None, &ctx())
    }

    fn one(body: &str) -> Value {
        let mut v = run(body).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    fn is_invalid(r: Result<Vec<Value>, CollectError>) -> String {
        match r {
            Err(e @ CollectError::InvalidJson(_)) => {
                assert_eq!(e.status(), 400);
                e.to_string()
            }
            other => panic!("expected InvalidJson, got {other:?}"),
        }
    }

    #[test]
    fn single_object() {
        let v = one(
            r#"{"type":"click","url":"https://a.example/","referrer":"https://r/","session_id":"s","x":1}"#,
        );
        assert_eq!(v["type"], "click");
        assert_eq!(v["source"], "collect");
        assert_eq!(v["url"], "https://a.example/");
        assert_eq!(v["referrer"], "https://r/");
        assert_eq!(v["session_id"], "s");
        assert_eq!(v["ip"], "192.0.2.1");
        assert_eq!(v["payload"], json!({"x": 1}));
        let id = Uuid::parse_str(v["event_id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn array_and_empty_array() {
        let v = run(r#"[{"type":"a"},{"type":"b"},{}]"#).unwrap();
        let types: Vec<&str> = v.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["a", "b", "event"]);
        assert_ne!(v[0]["event_id"], v[1]["event_id"]);
        assert_eq!(run("[]").unwrap().len(), 0);
        assert_eq!(run(" [ ] ").unwrap().len(), 0);
    }

    #[test]
    fn too_many_events() {
        let r = run_with(br#"[{},{},{}]"#, 2, None, &ctx());
        assert_eq!(r.unwrap_err(), CollectError::TooManyEvents(3));
        assert_eq!(CollectError::TooManyEvents(3).status(), 413);
        // Checked before element types.
        let r = run_with(br#"[1,2,3]"#, 2, None, &ctx());
        assert_eq!(r.unwrap_err(), CollectError::TooManyEvents(3));
        let r = run_with(br#"{}"#, 0, None, &ctx());
        assert_eq!(r.unwrap_err(), CollectError::TooManyEvents(1));
        assert_eq!(run_with(br#"[{},{}]"#, 2, None, &ctx()).unwrap().len(), 2);
    }

    #[test]
    fn invalid_bodies() {
        for body in [
            "", "   ", "{", "{\"a\":}", "[{},]", "{} {}", "nul", "{'a':1}", "[1,2", "\"str\"",
            "42", "null", "true",
        ] {
            is_invalid(run(body));
        }
        let msg = is_invalid(run(r#"[{},1]"#));
        assert_eq!(msg, "expected a JSON object or an array of objects");
        is_invalid(run(r#"[{},[]]"#));
        is_invalid(run(r#"[null]"#));
        assert_eq!(is_invalid(run(r#"{"a":1"#)), "invalid JSON: syntax error");
        assert_eq!(is_invalid(run("")), "invalid JSON: unexpected end of input");
        assert_eq!(
            is_invalid(run(r#"{"n":123456789012345678901234567890}"#)),
            "invalid JSON: invalid or out-of-range number"
        );
        assert_eq!(
            is_invalid(run(r#"{"a":"\x"}"#)),
            "invalid JSON: invalid string escape"
        );
        // Raw control character inside a string.
        is_invalid(run("{\"a\":\"x\u{1}y\"}"));
        is_invalid(run("{\"a\":\"x\u{0}y\"}"));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let msg = is_invalid(run_with(b"{\"a\":\"x\xffy\"}", 10, None, &ctx()));
        assert_eq!(msg, "invalid JSON: invalid UTF-8");
        // The message never echoes input.
        let msg = is_invalid(run(r#"{"<script>":"#));
        assert!(!msg.contains('<'));
    }

    #[test]
    fn event_id_valid_and_invalid() {
        let id = "0192F5E0-8B7A-7000-8000-0000000000AB";
        let v = one(&format!(r#"{{"event_id":"{id}"}}"#));
        assert_eq!(v["event_id"], id.to_lowercase());
        assert_eq!(v["payload"], json!({}));
        let v = one(r#"{"event_id":"nope"}"#);
        assert_ne!(v["event_id"], "nope");
        assert_eq!(
            Uuid::parse_str(v["event_id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(v["payload"], json!({"claimed_event_id": "nope"}));
        let v = one(r#"{"event_id":5}"#);
        assert_eq!(v["payload"], json!({"claimed_event_id": 5}));
    }

    #[test]
    fn e_versus_type() {
        assert_eq!(one(r#"{"e":"gt"}"#)["type"], "gt");
        let v = one(r#"{"e":"gt","type":"tg"}"#);
        assert_eq!(v["type"], "tg");
        assert_eq!(v["payload"], json!({"e": "gt"}));
        let v = one(r#"{"type":7,"e":"gt"}"#);
        assert_eq!(v["type"], "gt");
        assert_eq!(v["payload"], json!({"type": 7}));
        let v = one(r#"{"type":null}"#);
        assert_eq!(v["type"], "event");
        assert_eq!(v["payload"], json!({"type": null}));
    }

    #[test]
    fn non_string_fields_stay_in_payload() {
        let v = one(r#"{"url":1,"referrer":{"a":1},"session_id":false}"#);
        assert_eq!(v["url"], Value::Null);
        assert_eq!(v["referrer"], Value::Null);
        assert_eq!(v["session_id"], Value::Null);
        assert_eq!(
            v["payload"],
            json!({"url":1,"referrer":{"a":1},"session_id":false})
        );
    }

    #[test]
    fn ts_and_payload_merge_without_duplicates() {
        let body = r#"{"type":"t","ts":1700000000123,"a":1,"a":2,"client_ts":"x",
            "payload":{"a":3,"b":4,"b":5,"client_ts":0,"nested":{"k":1,"k":2}}}"#;
        let mut out = Vec::new();
        let mut b = body.as_bytes().to_vec();
        encode_collect(&mut out, &mut b, 1, None, &ctx(), &mut Rng::from_seed(1)).unwrap();
        let line = String::from_utf8(out).unwrap();
        let payload = &line[line.find("\"payload\":").unwrap()..];
        assert_eq!(
            payload,
            "\"payload\":{\"client_ts\":1700000000123,\"a\":1,\"b\":4,\"nested\":{\"k\":1}}}\n"
        );
        let v = one(r#"{"payload":"str","x":1}"#);
        assert_eq!(v["payload"], json!({"payload": "str", "x": 1}));
        let v = one(r#"{"payload":{}}"#);
        assert_eq!(v["payload"], json!({}));
    }

    #[test]
    fn pageview_id_from_ctx_never_body() {
        let v = one(&format!(r#"{{"pageview_id":"{PV}"}}"#));
        assert_eq!(v["pageview_id"], Value::Null);
        assert_eq!(v["payload"], json!({"claimed_pageview_id": PV}));
        let mut c = ctx();
        let token_pv = Uuid::parse_str("0192f5e0-8b7a-7000-8000-000000000000").unwrap();
        c.pageview_id = Some(token_pv);
        let v = run_with(
            format!(r#"{{"pageview_id":"{PV}"}}"#).as_bytes(),
            1,
            None,
            &c,
        )
        .unwrap();
        assert_eq!(v[0]["pageview_id"], token_pv.to_string());
        assert_eq!(v[0]["payload"]["claimed_pageview_id"], PV);
    }

    #[test]
    fn session_from_ctx_when_absent() {
        let mut c = ctx();
        c.session_id = Some(b"cookie");
        let v = run_with(br#"[{},{"session_id":"own"}]"#, 2, None, &c).unwrap();
        assert_eq!(v[0]["session_id"], "cookie");
        assert_eq!(v[1]["session_id"], "own");
    }

    #[test]
    fn strings_with_nul_and_lone_surrogates() {
        let v =
            one(r#"{"type":"a\u0000b","s":"x\ud800y","t":"\udfff","p":"\ud83d\ude00","\u0000":1}"#);
        assert_eq!(v["type"], "a\u{FFFD}b");
        assert_eq!(v["payload"]["s"], "x\u{FFFD}y");
        assert_eq!(v["payload"]["t"], "\u{FFFD}");
        assert_eq!(v["payload"]["p"], "😀");
        assert_eq!(v["payload"]["\u{FFFD}"], 1);
        // Escaped backslash before "u0000" stays text.
        let v = one(r#"{"s":"\\u0000"}"#);
        assert_eq!(v["payload"]["s"], "\\u0000");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let msg = is_invalid(run(&deep));
        assert_eq!(msg, "invalid JSON: nested too deeply");
        let deep_obj = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        is_invalid(run(&deep_obj));
        // Up to the limit is fine, and survives the round trip.
        let ok = format!(
            "[{{\"a\":{}1{}}}]",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        let v = run(&ok).unwrap();
        let mut x = &v[0]["payload"]["a"];
        for _ in 0..MAX_DEPTH - 2 {
            x = &x[0];
        }
        assert_eq!(x, 1);
        let over = format!(
            "[{{\"a\":{}1{}}}]",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        is_invalid(run(&over));
    }

    #[test]
    fn utm_and_click_ids_from_url() {
        let v = one(r#"{"url":"https://s.example/p?utm_source=g&utm_campaign=w%20x&gclid=C#f"}"#);
        assert_eq!(
            v["payload"],
            json!({"utm": {"source": "g", "campaign": "w x"}, "click_ids": {"gclid": "C"}})
        );
        // Supplied by the body: kept, not overwritten.
        let v = one(r#"{"url":"https://s.example/?utm_source=g&gclid=C","utm":{"source":"mine"}}"#);
        assert_eq!(
            v["payload"],
            json!({"utm": {"source": "mine"}, "click_ids": {"gclid": "C"}})
        );
        let v = one(r#"{"url":"https://s.example/?utm_source=g","payload":{"utm":1}}"#);
        assert_eq!(v["payload"], json!({"utm": 1}));
        // No query, nothing added.
        assert_eq!(one(r#"{"url":"https://s.example/"}"#)["payload"], json!({}));
    }

    #[test]
    fn url_fallback() {
        let fb: &[u8] = b"https://site.example/landing?utm_medium=social&msclkid=M";
        let v = run_with(
            br#"[{},{"url":"https://own.example/"}]"#,
            2,
            Some(fb),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            v[0]["url"],
            "https://site.example/landing?utm_medium=social&msclkid=M"
        );
        assert_eq!(
            v[0]["payload"],
            json!({"utm": {"medium": "social"}, "click_ids": {"msclkid": "M"}})
        );
        assert_eq!(v[1]["url"], "https://own.example/");
        assert_eq!(v[1]["payload"], json!({}));
    }

    /// The browser tracker's event shape (js/src/index.ts): every signal and
    /// every detector's details under `payload.client` survive, in order
    /// (GoTrack's server dropped them), and the client's event id is kept.
    #[test]
    fn tracker_signals_are_kept_whole() {
        let body = r#"[{"event_id":"5f0c4a2e-9b7d-4c1e-8f3a-2b6d9e0a1c47","type":"pageview",
            "url":"https://shop.example/p?utm_source=news","referrer":"https://r.example/","ts":1767225601234,
            "payload":{"title":"P","client":{"device":{"screen":{"w":1920,"h":1080},"languages":["en-US","en"],
            "ua_ch":{"brands":[{"brand":"Chromium","version":"131"}],"mobile":false,"platform":"Linux"}},
            "score":100,"verdict":"bot","reasons":["webdriver","headless_ua"],
            "detectors":[{"id":"webdriver","score":50,"details":{"webdriver":true}},
                         {"id":"headless_ua","score":50,"details":{"ua":true}},
                         {"id":"software_webgl","score":0,"details":{"vendor":"Google Inc.","renderer":"ANGLE (Intel)"}}]}}}]"#;
        let v = one(body);
        assert_eq!(v["event_id"], "5f0c4a2e-9b7d-4c1e-8f3a-2b6d9e0a1c47");
        assert_eq!(v["type"], "pageview");
        assert_eq!(v["payload"]["client_ts"], 1767225601234u64);
        assert_eq!(v["payload"]["title"], "P");
        let client = &v["payload"]["client"];
        assert_eq!(client["score"], 100);
        assert_eq!(client["verdict"], "bot");
        assert_eq!(client["reasons"], json!(["webdriver", "headless_ua"]));
        assert_eq!(client["detectors"].as_array().unwrap().len(), 3);
        assert_eq!(
            client["detectors"][2],
            json!({"id":"software_webgl","score":0,"details":{"vendor":"Google Inc.","renderer":"ANGLE (Intel)"}})
        );
        assert_eq!(client["device"]["ua_ch"]["brands"][0]["brand"], "Chromium");
        assert_eq!(v["payload"]["utm"], json!({"source": "news"}));
    }

    #[test]
    fn numbers_and_key_order_preserved() {
        let body = r#"{"z":-1,"big":18446744073709551615,"f":0.1,"g":1e300,"a":[1.0,true,null]}"#;
        let mut out = Vec::new();
        let mut b = body.as_bytes().to_vec();
        encode_collect(&mut out, &mut b, 1, None, &ctx(), &mut Rng::from_seed(1)).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with(
            r#""payload":{"z":-1,"big":18446744073709551615,"f":0.1,"g":1e300,"a":[1.0,true,null]}}
"#
        ));
    }

    #[test]
    fn many_keys_body() {
        let mut body = String::from("{");
        for i in 0..5000 {
            body.push_str(&format!("\"k{}\":{i},", i % 2500));
        }
        body.push_str("\"payload\":{\"k1\":\"dup\",\"new\":1}}");
        let v = one(&body);
        let p = v["payload"].as_object().unwrap();
        assert_eq!(p.len(), 2501);
        assert_eq!(p["k1"], 1);
        assert_eq!(p["new"], 1);
    }
}
