//! Fuzz targets, run as proptest campaigns (cargo-fuzz needs a nightly
//! toolchain, which this project does not assume): request-head handling,
//! chunked decoding, the tg1 verifier and the HTML injector. Each target
//! mutates a seed corpus (hand-written seeds, plus the llhttp request
//! vectors when `TRACKGATE_VECTORS` is set) with byte flips, inserts,
//! deletes and splices of HTTP tokens, and checks invariants, not just
//! "no panic".
//!
//! `TRACKGATE_FUZZ_CASES` sets the cases per target (default 300: the smoke
//! run in `make test`); `make fuzz` runs a long campaign in release mode.
//! A failure prints the minimal input proptest shrank it to; add it to the
//! seeds below once fixed.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::net::IpAddr;
use trackgate::http::chunked::{write_chunk, ChunkedDecoder, LAST_CHUNK};
use trackgate::http::desync::ambiguity;
use trackgate::http::head::{parse_request, Framing};
use trackgate::inject::html::{inject_whole, StreamInjector};
use trackgate::track::token::{sign, Kind, Signer};

fn cases() -> u32 {
    std::env::var("TRACKGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Pieces that matter to HTTP parsers, spliced in by the mutator.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\0",
    b"0",
    b"00",
    b"ffffffffffffffff",
    b"fffffffffffffffff",
    b"-1",
    b"+1",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked",
    b"Host: ",
    b"Host: a\r\n",
    b"Connection: close",
    b"Expect: 100-continue",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"GET ",
    b"POST ",
    b"http://",
    b"*",
    b"#",
    b"%00",
    b"\xff",
    b"\x7f",
    b"\"",
    b"=",
    b"</body>",
    b"<body>",
    b"</html>",
    b"<!--",
    b"-->",
    b"<script>",
    b"</script>",
    b"<![CDATA[",
    b"]]>",
    b"<textarea>",
    b"<plaintext>",
    b".",
];

/// A seed, then up to 8 mutations of it.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let ops = prop::collection::vec(
        (
            0u8..5,
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<prop::sample::Index>(),
        ),
        0..8,
    );
    (prop::sample::select(seeds), ops).prop_map(|(mut v, ops)| {
        for (op, at, byte, tok) in ops {
            let i = if v.is_empty() {
                0
            } else {
                at.index(v.len() + 1)
            };
            match op {
                0 if i < v.len() => v[i] = byte,
                1 => v.insert(i, byte),
                2 if i < v.len() => {
                    v.remove(i);
                }
                3 => {
                    let t = TOKENS[tok.index(TOKENS.len())];
                    v.splice(i..i, t.iter().copied());
                }
                _ => {
                    // Duplicate a slice (repeated fields, repeated chunks).
                    let end = (i + 1 + usize::from(byte)).min(v.len());
                    if i < end {
                        let dup = v[i..end].to_vec();
                        v.splice(end..end, dup);
                    }
                }
            }
        }
        v
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn request_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /collect HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: v\r\n\r\n",
        b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n",
        b"GET /px.gif?e=x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    if let Some(dir) = std::env::var_os("TRACKGATE_VECTORS").filter(|d| !d.is_empty()) {
        let text = std::fs::read_to_string(std::path::Path::new(&dir).join("llhttp.jsonl"))
            .expect("llhttp.jsonl");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            if v["meta"]["type"] == "request" {
                seeds.push(unhex(v["raw_hex"].as_str().unwrap_or_default()));
            }
        }
    }
    seeds
}

/// Request heads: never a panic; an accepted head has a sane length,
/// parses the same from exactly its own bytes and from any longer buffer,
/// is never accepted from a shorter prefix, holds no NUL or bare CR/LF, and
/// the desync check runs on it.
#[test]
fn fuzz_request_heads() {
    runner()
        .run(&mutated(request_seeds()), |input| {
            let Ok(Some(h)) = parse_request(&input) else {
                return Ok(());
            };
            let n = h.head_len();
            prop_assert!(n <= input.len());
            let own = &input[..n];
            prop_assert_eq!(parse_request(own), Ok(Some(h.clone())));
            for cut in 0..n {
                let r = parse_request(&input[..cut]);
                prop_assert!(
                    !matches!(r, Ok(Some(_))),
                    "accepted a prefix of {} bytes",
                    cut
                );
            }
            prop_assert!(!own.contains(&0), "NUL in an accepted head");
            for (i, &b) in own.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && own[i - 1] == b'\r', "bare LF accepted");
                }
                if b == b'\r' {
                    prop_assert!(own.get(i + 1) == Some(&b'\n'), "bare CR accepted");
                }
            }
            prop_assert!(h.headers().all(|(n, _)| !n.is_empty()));
            prop_assert!(
                !matches!(h.framing(), Framing::UntilClose),
                "a request framed until close"
            );
            let _ = ambiguity(&h);
            Ok(())
        })
        .unwrap();
}

fn chunked_seeds() -> Vec<Vec<u8>> {
    [
        &b"0\r\n\r\n"[..],
        b"3\r\nabc\r\n0\r\n\r\n",
        b"3;name=value;x=\"q;\\\"s\"\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
        b"1\r\nx\r\n0\r\nTrailer: v\r\nOther: w\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"000003\r\nabc\r\n0\r\n\r\n",
        b"A\r\n0123456789\r\n0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

/// Chunked decoding: never a panic; feeding the input whole or byte by
/// byte gives the same bytes, the same end and the same error; a finished
/// body re-encoded by our writer decodes back to itself.
#[test]
fn fuzz_chunked_decoder() {
    runner()
        .run(&mutated(chunked_seeds()), |input| {
            let mut whole = ChunkedDecoder::new();
            let mut out_whole = Vec::new();
            let res_whole = whole.decode(&input, &mut out_whole);

            let mut bytewise = ChunkedDecoder::new();
            let mut out_bytes = Vec::new();
            let mut used = 0;
            let mut res_bytes = Ok(0);
            for b in &input {
                if bytewise.is_done() {
                    break;
                }
                match bytewise.decode(std::slice::from_ref(b), &mut out_bytes) {
                    Ok(n) => used += n,
                    Err(e) => {
                        res_bytes = Err(e);
                        break;
                    }
                }
            }
            match (&res_whole, &res_bytes) {
                (Ok(n), Ok(_)) => {
                    prop_assert_eq!(*n, used);
                    prop_assert!(*n <= input.len());
                    prop_assert_eq!(&out_whole, &out_bytes);
                    prop_assert_eq!(whole.is_done(), bytewise.is_done());
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "whole {:?} vs byte by byte {:?}", a, b),
            }
            if whole.is_done() {
                let mut again = Vec::new();
                write_chunk(&mut again, &out_whole);
                again.extend_from_slice(LAST_CHUNK);
                let mut d = ChunkedDecoder::new();
                let mut out = Vec::new();
                prop_assert_eq!(d.decode(&again, &mut out), Ok(again.len()));
                prop_assert!(d.is_done());
                prop_assert_eq!(out, out_whole);
            }
            Ok(())
        })
        .unwrap();
}

/// The tg1 verifier: never a panic on a mutated token, and whatever it
/// accepts carries the fields the key was derived from (kind, pageview,
/// issue time): a mutation can never produce a different valid token.
#[test]
fn fuzz_tg1_verifier() {
    let signer = Signer::new(b"fuzz-secret-0123456789", None, 1800);
    let ip: IpAddr = "192.0.2.7".parse().expect("ip");
    let pv = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let iat = 1_700_000_000;
    let body = br#"{"type":"pageview"}"#;
    let mut seeds = Vec::new();
    for kind in [Kind::Page, Kind::Fetched] {
        let t = signer.mint(kind, pv, iat, ip, b"ua");
        let presented = sign(&t, body).expect("sign");
        let v = signer
            .verify(presented.as_bytes(), body, b"ua", ip, iat + 5)
            .expect("the original verifies");
        assert_eq!(v.kind, kind);
        seeds.push(presented.into_bytes());
    }
    runner()
        .run(&(mutated(seeds), any::<bool>()), |(input, same_body)| {
            let b: &[u8] = if same_body { body } else { b"{}" };
            if let Ok(v) = signer.verify(&input, b, b"ua", ip, iat + 5) {
                prop_assert!(same_body, "accepted for another body");
                prop_assert_eq!(v.pageview_id, pv);
                prop_assert_eq!(v.iat, iat);
            }
            Ok(())
        })
        .unwrap();
}

fn html_seeds() -> Vec<Vec<u8>> {
    [
        &b"<!doctype html><html><head><title>t</title></head><body><p>x</p></body></html>"[..],
        b"<html><body><script>var s='</body>';</script><!-- </body> --></body></html>",
        b"<body><textarea></body></textarea><![CDATA[</body>]]></body>",
        b"<HTML><BODY>upper</BODY></HTML>\n\n",
        b"no markup at all",
        b"<html><body>one</body></html><html><body>two</body></html>",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

/// The HTML injector: never a panic; the snippet goes in at most once and
/// taking it out gives the document back; streaming in any pieces gives
/// the same output as streaming it whole, and with the whole document in
/// the tail the same as `inject_whole`.
#[test]
fn fuzz_html_injector() {
    const SNIP: &[u8] = b"\x01SNIPPET\x01";
    let strategy = (
        mutated(html_seeds()),
        prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        0usize..200,
    );
    runner()
        .run(&strategy, |(doc, cuts, tail)| {
            if doc.windows(SNIP.len()).any(|w| w == SNIP) {
                return Ok(());
            }
            let stream = |cuts: &[usize], tail: usize| {
                let mut inj = StreamInjector::new(tail);
                let mut out = Vec::new();
                let mut at = 0;
                for &c in cuts {
                    inj.push(&doc[at..c], &mut out);
                    at = c;
                }
                inj.push(&doc[at..], &mut out);
                let p = inj.finish(SNIP, &mut out);
                (out, p)
            };
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(doc.len() + 1)).collect();
            points.sort_unstable();
            let (one, p1) = stream(&[], tail);
            let (many, p2) = stream(&points, tail);
            prop_assert_eq!(p1, p2);
            prop_assert_eq!(&one, &many);
            let found: Vec<usize> = (0..one.len().saturating_sub(SNIP.len() - 1))
                .filter(|&i| one[i..].starts_with(SNIP))
                .collect();
            prop_assert_eq!(found.len(), usize::from(p1.injected()));
            if let Some(&i) = found.first() {
                let mut back = one[..i].to_vec();
                back.extend_from_slice(&one[i + SNIP.len()..]);
                prop_assert_eq!(&back, &doc);
            } else {
                prop_assert_eq!(&one, &doc);
            }
            let mut w = Vec::new();
            let pw = inject_whole(&doc, SNIP, &mut w);
            let (s, ps) = stream(&points, doc.len());
            prop_assert_eq!(pw, ps);
            prop_assert_eq!(w, s);
            Ok(())
        })
        .unwrap();
}
