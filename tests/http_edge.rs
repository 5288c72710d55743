//! End-to-end: HTTP/1.1 edge cases through the real binary: `Expect:
//! 100-continue`, request-smuggling shapes, bodies that contain requests,
//! large chunked uploads and close-delimited responses.

mod common;
use common::*;
use std::io::Write;
use std::time::Duration;
use trackgate::track::token::sign;

/// Sends `head`, expects exactly `100 Continue` before any body is sent,
/// then sends `body` and returns the final response.
fn with_continue(c: &mut Client, head: &[u8], body: &[u8]) -> Resp {
    c.send(head);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let interim = c
        .read_head_raw()
        .expect("an interim response before the body was sent");
    assert_eq!(interim, "HTTP/1.1 100 Continue", "{interim:?}");
    assert!(c.buffered().is_empty(), "more than the 100 before the body");
    c.send(body);
    c.read_response("POST").expect("the final response")
}

#[test]
fn expect_continue_through_the_proxy() {
    let origin = Origin::start(|req, s| {
        let body = format!("got {} bytes", req.body.len());
        let _ = write!(
            s,
            "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let r = with_continue(
        &mut c,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        b"hello world",
    );
    assert_eq!((r.status, r.text().as_str()), (201, "got 11 bytes"));
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.request_line(), "POST /upload HTTP/1.1");
    assert_eq!(seen.body, b"hello world");
    // Chunked, on the same keep-alive connection.
    let r = with_continue(
        &mut c,
        b"POST /upload2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (201, "got 5 bytes"));
    assert_eq!(origin.requests().pop().expect("seen").body, b"abcde");
}

#[test]
fn expect_continue_on_collect() {
    let p = Proc::start(&[("FORWARD_DESTINATION", "http://127.0.0.1:9")]);
    let t = public_key_token(p.addr, UA);
    let body = br#"{"type":"expectation","payload":{"n":1}}"#;
    let sig = sign(t["token"].as_str().expect("token"), body).expect("sign");
    let mut c = Client::connect(p.addr);
    let head = format!(
        "POST /collect HTTP/1.1\r\nHost: t\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: {sig}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let r = with_continue(&mut c, head.as_bytes(), body);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("x-gotrack-accepted"), Some("1"));
    let ev = p.wait_events(1);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "expectation");
    assert_eq!(ev[0]["payload"]["n"], 1);
    assert_eq!(ev[0]["pageview_id"], t["pageview_id"]);
    // The connection is still in step: the next request is answered.
    let r = c.request(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.text(), "ok\n");
}

/// RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an
/// HTTP/1.0 request (and §15.2: never send 1xx to an HTTP/1.0 client).
#[test]
fn no_100_continue_for_http10_clients() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let t = public_key_token(p.addr, UA);
    let body = br#"{"type":"x"}"#;
    let sig = sign(t["token"].as_str().expect("token"), body).expect("sign");
    for (name, head) in [
        (
            "proxy",
            "POST /upload HTTP/1.0\r\nHost: x\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n"
                .to_string(),
        ),
        (
            "collect",
            format!("POST /collect HTTP/1.0\r\nHost: x\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: {sig}\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n"),
        ),
    ] {
        let mut c = Client::connect(p.addr);
        c.send(head.as_bytes());
        // Give the server the head alone first (as a client waiting for 100
        // would), then the body.
        std::thread::sleep(Duration::from_millis(300));
        c.send(body);
        let (_, all) = c
            .wait_closed(Duration::from_secs(5))
            .unwrap_or_else(|b| panic!("{name}: HTTP/1.0 connection left open: {b:?}"));
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains(" 100 "), "{name}: {text}");
        assert!(text.starts_with("HTTP/1.1 2"), "{name}: {text}");
    }
}

/// Each request is ambiguous or malformed: it gets an error status, the
/// connection is closed (so the bytes after it are never read as a
/// request), and the origin sees nothing.
#[test]
fn smuggling_shapes_are_refused_and_close_the_connection() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let next = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: &[(&str, String, u16)] = &[
        (
            "CL list",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "duplicate CL",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "differing CL",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{next}"),
            400,
        ),
        (
            "CL then TE",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{next}"),
            400,
        ),
        (
            "TE gzip, chunked",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{next}"),
            501,
        ),
        (
            "TE chunked, chunked",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{next}"),
            400,
        ),
        (
            "TE with space before colon",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "obs-fold",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\nContent-Length: 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "bare LF",
            format!("POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello{next}"),
            400,
        ),
        (
            "bare LF in one field",
            format!("POST /a HTTP/1.1\r\nHost: x\nContent-Length: 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "missing Host",
            format!("POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "two Host fields",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "CL with sign",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello{next}"),
            400,
        ),
        (
            "TE in HTTP/1.0",
            format!("POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{next}"),
            400,
        ),
    ];
    for (name, raw, want) in cases {
        let mut c = Client::connect(p.addr);
        c.send(raw.as_bytes());
        let r = c
            .read_response("POST")
            .unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(r.status, *want, "{name}: {}", r.text());
        let closed = c.wait_closed(Duration::from_secs(5));
        match closed {
            Ok((_, rest)) => assert!(
                rest.is_empty(),
                "{name}: a second response: {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(rest) => panic!(
                "{name}: connection left open (then sent {:?})",
                String::from_utf8_lossy(&rest)
            ),
        }
        assert!(
            origin.requests().is_empty(),
            "{name}: the origin saw {:?}",
            origin.requests()
        );
    }
}

/// A pixel request with a body: the body is read and discarded as a body,
/// even when it looks like a whole request; the next real request on the
/// connection is answered normally.
#[test]
fn a_request_inside_a_pixel_body_is_not_a_request() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let inner = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for framing in ["length", "chunked"] {
        let mut c = Client::connect(p.addr);
        let outer = match framing {
            "length" => format!(
                "GET /px.gif?e=outer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}",
                inner.len()
            ),
            _ => format!(
                "GET /px.gif?e=outer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
                inner.len()
            ),
        };
        c.send(outer.as_bytes());
        let r = c.read_response("GET").expect("pixel response");
        assert_eq!(r.status, 200, "{framing}");
        assert_eq!(r.header("content-type"), Some("image/gif"));
        let r = c.request(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "origin"),
            "{framing}: the answer to /next was not the origin's"
        );
        let (_, rest) = c
            .wait_closed(Duration::from_secs(5))
            .unwrap_or_else(|b| panic!("{framing}: open after Connection: close ({b:?})"));
        assert!(
            rest.is_empty(),
            "{framing}: a third response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    let lines: Vec<String> = origin
        .requests()
        .iter()
        .map(|s| s.request_line().to_string())
        .collect();
    assert_eq!(lines, ["GET /next HTTP/1.1", "GET /next HTTP/1.1"]);
    let ev = p.wait_events(2);
    let types: Vec<&str> = ev.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["outer", "outer"]);
}

/// xorshift64*: deterministic "random" sizes and bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn big_chunked_upload_arrives_byte_identical() {
    let origin = Origin::start(|req, s| {
        let body = format!("{}", req.body.len());
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let size = 5 * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    let mut raw = b"PUT /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut off = 0;
    let mut chunks = 0;
    while off < size {
        // 7 bytes up to 32 KiB, some with a chunk extension.
        let n = (7 + (rng.next() % 32_768) as usize).min(size - off);
        if chunks % 5 == 0 {
            raw.extend_from_slice(format!("{n:X};ext=v{chunks}\r\n").as_bytes());
        } else {
            raw.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        }
        raw.extend_from_slice(&data[off..off + n]);
        raw.extend_from_slice(b"\r\n");
        off += n;
        chunks += 1;
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut c = Client::connect(p.addr);
    // Written in odd-sized pieces so chunk boundaries and reads never align.
    let mut at = 0;
    while at < raw.len() {
        let n = (1 + (rng.next() % 100_000) as usize).min(raw.len() - at);
        c.send(&raw[at..at + n]);
        at += n;
    }
    let r = c.read_response("PUT").expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), size.to_string());
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.body.len(), size, "{chunks} chunks");
    assert!(seen.body == data, "the body differs");
    // Still usable afterwards.
    assert_eq!(
        c.request(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
}

#[test]
fn close_delimited_response_reaches_an_http11_client_chunked() {
    let mut rng = Rng(42);
    let body: Vec<u8> = (0..300_000).map(|_| rng.next() as u8).collect();
    let expected = body.clone();
    let origin = Origin::start(move |_req, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n");
        for part in body.chunks(7_777) {
            if s.write_all(part).is_err() {
                break;
            }
        }
        false // close: that ends the body
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    for i in 0..2 {
        let r = c.request(format!("GET /stream{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "{:?}",
            r.headers
        );
        assert!(r.header("content-length").is_none());
        assert!(r
            .header("connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close")));
        assert_eq!(r.body.len(), expected.len(), "request {i}");
        assert!(r.body == expected, "request {i}: the body differs");
    }
    // Each response needed its own origin connection.
    assert_eq!(
        origin
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// `DESYNC_MODE=strictest`: every ambiguous request (see
/// `src/http/desync.rs`) is answered 400 and the connection closed, for
/// proxied and tracking paths alike; the origin sees nothing. Plain
/// requests pass.
#[test]
fn desync_strictest_refuses_ambiguous_requests() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("DESYNC_MODE", "strictest"),
    ]);
    let next = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (name, raw) in [
        ("body on GET", format!("GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello{next}")),
        ("CL leading zero", format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 05\r\n\r\nhello{next}")),
        ("TE Chunked", format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n{next}")),
        ("host mismatch", format!("GET http://other.example/ HTTP/1.1\r\nHost: x\r\n\r\n{next}")),
        ("underscore", format!("GET /a HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n{next}")),
        ("h2c", format!("GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n{next}")),
        ("pixel with underscore", format!("GET /px.gif HTTP/1.1\r\nHost: x\r\nX_Y: 1\r\n\r\n{next}")),
    ] {
        let mut c = Client::connect(p.addr);
        c.send(raw.as_bytes());
        let r = c.read_response("GET").unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(r.status, 400, "{name}");
        assert!(c.wait_closed(Duration::from_secs(5)).is_ok(), "{name}: left open");
    }
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
    assert_eq!(get(p.addr, "/plain").status, 200);
    assert_eq!(get(p.addr, "/px.gif").status, 200);
}

/// `DESYNC_MODE=defensive` (the default): an ambiguous request is forwarded
/// normalised, with `Connection: close` to the origin, and that origin
/// connection is not reused (the next request opens a new one); a plain
/// request reuses its connection. Counted in `desync_ambiguous_total`.
#[test]
fn desync_defensive_forwards_and_closes_the_origin_connection() {
    use std::sync::atomic::Ordering;
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let maddr = p.metrics_addr();
    let mut c = Client::connect(p.addr);
    assert_eq!(c.request(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    assert_eq!(c.request(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    assert_eq!(
        origin.connections.load(Ordering::SeqCst),
        1,
        "plain requests reuse"
    );
    let r = c.request(b"GET /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 200);
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.request_line(), "GET /body HTTP/1.1");
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.header("connection").as_deref(), Some("close"));
    assert_eq!(seen.header("content-length").as_deref(), Some("5"));
    assert_eq!(c.request(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    assert_eq!(
        origin.connections.load(Ordering::SeqCst),
        2,
        "the connection that carried the ambiguous request was reused"
    );
    // A leading-zero Content-Length is forwarded as a plain number.
    let r = c.request(b"POST /z HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc");
    assert_eq!(r.status, 200);
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.header("content-length").as_deref(), Some("3"));
    let m = scrape(maddr);
    assert_eq!(
        metric(&m, "trackgate_desync_ambiguous_total"),
        Some(2.0),
        "{m}"
    );
}
