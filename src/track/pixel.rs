//! `GET /px.gif`: the 1×1 transparent GIF answered to every pixel request,
//! and turning the pixel's query string into one event.
//!
//! Also owns query-string decoding ([`query_pairs`], [`query_param`]),
//! which other endpoints reuse: `&`-separated pairs, `+` → space,
//! `%XX` → byte, a malformed `%` escape kept literally. Decoded bytes may be
//! invalid UTF-8; the JSON writer replaces such sequences with U+FFFD.
//!
//! Query parameters of the pixel:
//! - `e` → `type` (default `pageview`), `url` → `url`, `ref` → `referrer`;
//! - `sid` → `session_id`, unless the request has a session cookie, which
//!   wins; a differing `sid` is then kept as `payload.sid`;
//! - `pv` → `pageview_id` when it is a UUID and the request carries no
//!   token page view; otherwise it is kept as `payload.pv` (a claim);
//! - `uid` → `payload.uid`;
//! - `utm_*` → `payload.utm` (prefix stripped) and click ids
//!   (`gclid`, `fbclid`, …) → `payload.click_ids`, also taken from the query
//!   of the `url` parameter where the top-level parameters don't have them;
//! - every other parameter → `payload.props`, keys sorted; a repeated key
//!   becomes an array of its values in order of appearance (nothing lost).
//!
//! For the named parameters above the first occurrence wins (as Go's
//! `url.Values.Get` in GoTrack) and later ones are ignored. Empty values
//! of `e`, `sid`, `pv`, `url`, `ref` and `uid` count as absent.

use crate::http::hex_digit;
use crate::track::event::{
    self, is_click_id, url_query, utm_name, EventFields, ObjectBuilder, Pair, RequestCtx,
};
use crate::track::ids::Rng;
use crate::track::json;
use std::borrow::Cow;
use uuid::Uuid;

/// A transparent 1×1 GIF89a: two-colour global table, a graphic control
/// extension marking colour 0 transparent, one LZW-coded pixel.
pub const GIF: [u8; 43] = [
    b'G', b'I', b'F', b'8', b'9', b'a', // signature + version
    0x01, 0x00, 0x01, 0x00, // logical screen 1×1
    0x80, // global colour table present, 2 entries
    0x00, 0x00, // background colour index, pixel aspect ratio
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // colour table: black, white
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // GCE: transparent index 0
    0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image 1×1 at 0,0
    0x02, 0x02, 0x44, 0x01, 0x00, // LZW min size 2; clear, 0, end-of-information
    0x3b, // trailer
];

/// Decodes one query component: `+` → space, `%XX` → byte, a `%` not
/// followed by two hex digits kept as is. Borrows when nothing changes.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    match memchr::memchr2(b'%', b'+', s) {
        None => Cow::Borrowed(s),
        Some(first) => Cow::Owned(decode_from(s, first)),
    }
}

/// [`percent_decode`] of `s` whose first `%` or `+` is at `first`.
fn decode_from(s: &[u8], first: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    out.extend_from_slice(&s[..first]);
    let mut i = first;
    while let Some(&b) = s.get(i) {
        let mut byte = b;
        let mut step = 1;
        if b == b'+' {
            byte = b' ';
        } else if b == b'%' {
            let digit = |j: usize| s.get(j).copied().and_then(hex_digit);
            if let (Some(h), Some(l)) = (digit(i + 1), digit(i + 2)) {
                byte = h << 4 | l;
                step = 3;
            }
        }
        out.push(byte);
        i += step;
    }
    out
}

/// What a byte means to the query splitter.
const PLAIN: u8 = 0;
const AMP: u8 = 1;
const EQ: u8 = 2;
const ESCAPE: u8 = 3;

static QUERY_CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    t[b'&' as usize] = AMP;
    t[b'=' as usize] = EQ;
    t[b'%' as usize] = ESCAPE;
    t[b'+' as usize] = ESCAPE;
    t
};

/// The decoded `(name, value)` pairs of a query string (without the `?`).
/// Empty segments (`a=1&&b=2`) are skipped; a segment without `=` has an
/// empty value.
///
/// One pass over the query finds the separators and which components need
/// decoding, so a component without `%` or `+` is borrowed without being
/// scanned again (the pixel's query is parsed on every hit).
pub fn query_pairs(q: &[u8]) -> QueryPairs<'_> {
    QueryPairs { q, pos: 0 }
}

/// The iterator of [`query_pairs`].
pub struct QueryPairs<'a> {
    q: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for QueryPairs<'a> {
    type Item = (Cow<'a, [u8]>, Cow<'a, [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let seg = self.q.get(self.pos..).filter(|r| !r.is_empty())?;
            // Offsets within `seg`: the end of the segment, its first `=`,
            // the first `%` or `+` of the name and of the value.
            let mut end = seg.len();
            let mut eq = None;
            let mut key_escape = None;
            let mut value_escape = None;
            for (i, &b) in seg.iter().enumerate() {
                match QUERY_CLASS[b as usize] {
                    PLAIN => {}
                    AMP => {
                        end = i;
                        break;
                    }
                    EQ => {
                        eq.get_or_insert(i);
                    }
                    _ => match eq {
                        None => {
                            key_escape.get_or_insert(i);
                        }
                        Some(e) => {
                            value_escape.get_or_insert(i - e - 1);
                        }
                    },
                }
            }
            self.pos += end + 1;
            if end == 0 {
                continue;
            }
            let seg = &seg[..end];
            let (key, value) = match eq {
                Some(e) => (&seg[..e], &seg[e + 1..]),
                None => (seg, &seg[end..]),
            };
            let decode = |s: &'a [u8], first: Option<usize>| match first {
                None => Cow::Borrowed(s),
                Some(f) => Cow::Owned(decode_from(s, f)),
            };
            return Some((decode(key, key_escape), decode(value, value_escape)));
        }
    }
}

/// [`query_pairs`] collected, allocated once (one slot per `&`-separated
/// segment) instead of growing pair by pair.
fn collect_pairs(q: &[u8]) -> Vec<Pair<'_>> {
    let mut v = Vec::with_capacity(memchr::memchr_iter(b'&', q).count() + 1);
    v.extend(query_pairs(q));
    v
}

/// The decoded value of the first parameter called `name` (compared after
/// decoding), if any.
pub fn query_param<'a>(q: &'a [u8], name: &[u8]) -> Option<Cow<'a, [u8]>> {
    query_pairs(q)
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v)
}

/// Indices of the named pixel parameters (first occurrence of each).
#[derive(Default)]
struct Named {
    e: Option<usize>,
    uid: Option<usize>,
    sid: Option<usize>,
    url: Option<usize>,
    referrer: Option<usize>,
    pv: Option<usize>,
}

/// Appends the event line of one pixel request (`ctx.source` should be
/// [`Source::Pixel`](crate::track::event::Source::Pixel)) and returns its
/// event id (a UUIDv7 at `ctx.received_ms`).
pub fn build_pixel_event(out: &mut Vec<u8>, query: &[u8], ctx: &RequestCtx, rng: &mut Rng) -> Uuid {
    let pairs = collect_pairs(query);
    let mut named = Named::default();
    let mut props: Vec<usize> = Vec::with_capacity(pairs.len());
    for (i, (k, v)) in pairs.iter().enumerate() {
        let slot = match k.as_ref() {
            b"e" => &mut named.e,
            b"uid" => &mut named.uid,
            b"sid" => &mut named.sid,
            b"url" => &mut named.url,
            b"ref" => &mut named.referrer,
            b"pv" => &mut named.pv,
            b"" => continue,
            k if utm_name(k).is_some() || is_click_id(k) => continue,
            _ => {
                props.push(i);
                continue;
            }
        };
        if slot.is_none() && !v.is_empty() {
            *slot = Some(i);
        }
    }
    let value = |slot: Option<usize>| slot.and_then(|i| pairs.get(i)).map(|(_, v)| v.as_ref());

    let url = value(named.url);
    let url_pairs: Vec<Pair> = match url.and_then(url_query) {
        Some(q) => collect_pairs(q),
        None => Vec::new(),
    };

    // Session: the cookie's wins; a differing query sid is kept as a claim.
    let sid = value(named.sid);
    let (session_id, sid_claim) = match (ctx.session_id, sid) {
        (Some(cookie), Some(q)) if cookie != q => (None, Some(q)),
        (Some(_), _) => (None, None),
        (None, q) => (q, None),
    };

    // Page view: a UUID `pv` is the event's unless a token supplied one.
    let pv = value(named.pv);
    let pv_uuid = pv.and_then(|p| Uuid::try_parse_ascii(p).ok());
    let (pageview_id, pv_claim) = match (ctx.pageview_id, pv_uuid) {
        (None, Some(id)) => (Some(id), None),
        (Some(token), Some(id)) if token == id => (None, None),
        _ => (None, pv),
    };

    let event_id = rng.uuid_v7(ctx.received_ms);
    let fields = EventFields {
        event_id,
        kind: value(named.e).unwrap_or(b"pageview"),
        url,
        referrer: value(named.referrer),
        session_id,
        pageview_id,
    };
    event::write_head(out, ctx, &fields);
    let mut payload = ObjectBuilder::begin(out);
    if let Some(uid) = value(named.uid) {
        payload.string(out, b"uid", uid);
    }
    if let Some(sid) = sid_claim {
        payload.string(out, b"sid", sid);
    }
    if let Some(pv) = pv_claim {
        payload.string(out, b"pv", pv);
    }
    event::write_marketing(out, &mut payload, &pairs, &url_pairs);
    if !props.is_empty() && payload.key(out, b"props") {
        write_props(out, &pairs, &mut props);
    }
    payload.finish(out);
    event::write_tail(out);
    event_id
}

/// `{"key":"value","rep":["a","b"]}` from the pairs at `idx` (sorted here).
fn write_props(out: &mut Vec<u8>, pairs: &[Pair], idx: &mut [usize]) {
    let key = |i: usize| pairs.get(i).map_or(&b""[..], |(k, _)| k.as_ref());
    let val = |i: usize| pairs.get(i).map_or(&b""[..], |(_, v)| v.as_ref());
    // Stable: equal keys keep their order of appearance.
    idx.sort_by(|&a, &b| key(a).cmp(key(b)));
    out.push(b'{');
    let mut first = true;
    let mut rest = &idx[..];
    while let Some(&head) = rest.first() {
        let run = rest.iter().take_while(|&&i| key(i) == key(head)).count();
        json::write_key(out, &mut first, key(head));
        if run == 1 {
            json::write_str(out, val(head));
        } else {
            out.push(b'[');
            for (n, &i) in rest[..run].iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                json::write_str(out, val(i));
            }
            out.push(b']');
        }
        rest = &rest[run..];
    }
    out.push(b'}');
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
            source: Source::Pixel,
            ip: Some("198.51.100.1"),
            ip_hash: None,
            ua: Some(b"UA"),
            auth: None,
            pageview_id: None,
            session_id: None,
        }
    }

    fn run(query: &str, c: &RequestCtx) -> Value {
        let mut out = Vec::new();
        let mut rng = Rng::from_seed(5);
        let id = build_pixel_event(&mut out, query.as_bytes(), c, &mut rng);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event_id"], id.to_string());
        assert_eq!(id.get_version_num(), 7);
        v
    }

    #[test]
    fn gif_bytes() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
        assert_eq!(GIF[42], 0x3b);
        assert_eq!(u16::from_le_bytes([GIF[6], GIF[7]]), 1);
        assert_eq!(u16::from_le_bytes([GIF[8], GIF[9]]), 1);
        // Graphic control extension with the transparency flag.
        assert_eq!(&GIF[19..22], &[0x21, 0xf9, 0x04]);
        assert_eq!(GIF[22] & 1, 1);
        assert_eq!(GIF[27], 0x2c);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode(b"plain").as_ref(), b"plain");
        assert!(matches!(percent_decode(b"plain"), Cow::Borrowed(_)));
        assert_eq!(percent_decode(b"a+b%20c%2B").as_ref(), b"a b c+");
        assert_eq!(percent_decode(b"%zz%4").as_ref(), b"%zz%4");
        assert_eq!(percent_decode(b"%").as_ref(), b"%");
        assert_eq!(
            percent_decode(b"%e2%9C%93%FF").as_ref(),
            b"\xe2\x9c\x93\xff"
        );
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = query_pairs(b"a=1&&b&c=x=y&%3D=%26&=v")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"".to_vec()),
                (b"c".to_vec(), b"x=y".to_vec()),
                (b"=".to_vec(), b"&".to_vec()),
                (b"".to_vec(), b"v".to_vec()),
            ]
        );
        assert_eq!(query_param(b"x=1&e=a&e=b", b"e").unwrap().as_ref(), b"a");
        assert_eq!(query_param(b"%65=enc", b"e").unwrap().as_ref(), b"enc");
        assert!(query_param(b"x=1", b"e").is_none());
        assert_eq!(query_pairs(b"").count(), 0);
    }

    /// The definition the one-pass splitter must agree with: split on `&`,
    /// drop empty segments, split each at its first `=`, decode both parts
    /// byte by byte.
    fn reference_pairs(q: &[u8]) -> Vec<(Vec<u8>, Vec<u8>, bool, bool)> {
        fn decode(s: &[u8]) -> Vec<u8> {
            let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
            let mut out = Vec::new();
            let mut i = 0;
            while i < s.len() {
                match s[i] {
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    b'%' => match (hex(s.get(i + 1)), hex(s.get(i + 2))) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 3;
                        }
                        _ => {
                            out.push(b'%');
                            i += 1;
                        }
                    },
                    b => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            out
        }
        let plain = |s: &[u8]| !s.iter().any(|&b| b == b'%' || b == b'+');
        q.split(|&b| b == b'&')
            .filter(|seg| !seg.is_empty())
            .map(|seg| {
                let (k, v) = match seg.iter().position(|&b| b == b'=') {
                    Some(e) => (&seg[..e], &seg[e + 1..]),
                    None => (seg, &seg[seg.len()..]),
                };
                (decode(k), decode(v), plain(k), plain(v))
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn query_pairs_match_the_definition(
            q in proptest::collection::vec(
                proptest::sample::select(b"ab=&%+2Fz0\xff".to_vec()), 0..60)
        ) {
            let got: Vec<_> = query_pairs(&q)
                .map(|(k, v)| {
                    let (kb, vb) = (matches!(k, Cow::Borrowed(_)), matches!(v, Cow::Borrowed(_)));
                    (k.into_owned(), v.into_owned(), kb, vb)
                })
                .collect();
            proptest::prop_assert_eq!(got, reference_pairs(&q));
        }
    }

    #[test]
    fn defaults() {
        let v = run("", &ctx());
        assert_eq!(v["type"], "pageview");
        assert_eq!(v["source"], "pixel");
        assert_eq!(v["timestamp"], "2026-11-28T01:24:41.123Z");
        assert_eq!(v["url"], Value::Null);
        assert_eq!(v["session_id"], Value::Null);
        assert_eq!(v["pageview_id"], Value::Null);
        assert_eq!(v["payload"], json!({}));
    }

    #[test]
    fn full_query() {
        let q = "e=signup&uid=u%201&sid=s1&url=https%3A%2F%2Fshop.example%2Fp%3Futm_source%3Durl%26utm_medium%3Dcpc%26gclid%3DG%23frag\
                 &ref=https%3A%2F%2Fsearch.example%2F&utm_source=news&fbclid=F&color=red&size=L&color=blue&e=ignored&utm_=odd";
        let v = run(q, &ctx());
        assert_eq!(v["type"], "signup");
        assert_eq!(
            v["url"],
            "https://shop.example/p?utm_source=url&utm_medium=cpc&gclid=G#frag"
        );
        assert_eq!(v["referrer"], "https://search.example/");
        assert_eq!(v["session_id"], "s1");
        assert_eq!(
            v["payload"],
            json!({
                "uid": "u 1",
                "utm": {"source": "news", "medium": "cpc"},
                "click_ids": {"fbclid": "F", "gclid": "G"},
                "props": {"color": ["red", "blue"], "size": "L", "utm_": "odd"}
            })
        );
    }

    #[test]
    fn payload_key_order_is_fixed() {
        let mut out = Vec::new();
        let mut c = ctx();
        c.session_id = Some(b"cookie");
        build_pixel_event(
            &mut out,
            b"z=1&gclid=g&utm_term=t&pv=bad&sid=other&uid=u&a=2",
            &c,
            &mut Rng::from_seed(1),
        );
        let line = String::from_utf8(out).unwrap();
        let payload = &line[line.find("\"payload\":").unwrap()..];
        assert_eq!(
            payload,
            "\"payload\":{\"uid\":\"u\",\"sid\":\"other\",\"pv\":\"bad\",\"utm\":{\"term\":\"t\"},\
             \"click_ids\":{\"gclid\":\"g\"},\"props\":{\"a\":\"2\",\"z\":\"1\"}}}\n"
        );
    }

    #[test]
    fn session_cookie_wins() {
        let mut c = ctx();
        c.session_id = Some(b"cookie");
        let v = run("sid=cookie", &c);
        assert_eq!(v["session_id"], "cookie");
        assert_eq!(v["payload"], json!({}));
        let v = run("sid=query", &c);
        assert_eq!(v["session_id"], "cookie");
        assert_eq!(v["payload"]["sid"], "query");
    }

    #[test]
    fn pageview_from_pv() {
        let v = run(&format!("pv={PV}"), &ctx());
        assert_eq!(v["pageview_id"], PV);
        assert_eq!(v["payload"], json!({}));
        // Upper case / simple forms are normalised.
        let v = run(
            &format!("pv={}", PV.to_uppercase().replace('-', "")),
            &ctx(),
        );
        assert_eq!(v["pageview_id"], PV);
        let v = run("pv=nope", &ctx());
        assert_eq!(v["pageview_id"], Value::Null);
        assert_eq!(v["payload"]["pv"], "nope");
        // A token's page view wins; a different pv is kept as a claim.
        let mut c = ctx();
        c.pageview_id = Some(Uuid::parse_str(PV).unwrap());
        let other = "0192f5e0-8b7a-7000-8000-000000000000";
        let v = run(&format!("pv={other}"), &c);
        assert_eq!(v["pageview_id"], PV);
        assert_eq!(v["payload"]["pv"], other);
        let v = run(&format!("pv={PV}"), &c);
        assert_eq!(v["payload"], json!({}));
    }

    #[test]
    fn hostile_bytes() {
        let v = run("e=%00%FF%E2%80%A8&x=%22%5C%0A&%FF=1&url=%ZZ", &ctx());
        assert_eq!(v["type"], "\u{FFFD}\u{FFFD}\u{2028}");
        assert_eq!(v["payload"]["props"]["x"], "\"\\\n");
        assert_eq!(v["payload"]["props"]["\u{FFFD}"], "1");
        assert_eq!(v["url"], "%ZZ");
    }

    #[test]
    fn empty_values_are_absent() {
        let v = run("e=&sid=&pv=&url=&uid=", &ctx());
        assert_eq!(v["type"], "pageview");
        assert_eq!(v["session_id"], Value::Null);
        assert_eq!(v["url"], Value::Null);
        assert_eq!(v["payload"], json!({}));
    }

    #[test]
    fn many_repeated_props_stay_linearithmic() {
        let mut q = String::new();
        for i in 0..3000 {
            q.push_str(&format!("k{}=v{i}&", i % 7));
        }
        let v = run(&q, &ctx());
        let props = v["payload"]["props"].as_object().unwrap();
        assert_eq!(props.len(), 7);
        assert_eq!(props["k0"].as_array().unwrap().len(), 429);
        assert_eq!(props["k0"][1], "v7");
    }
}
