//! End-to-end: the real binary in front of origins written here. Every
//! request reaches the origin unchanged (but for hop-by-hop headers and the
//! forwarding headers), every response comes back byte for byte.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn body_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn response_bodies_come_back_byte_identical() {
    for size in [0usize, 1024, 10 * 1024 * 1024] {
        let body = body_of(size);
        let origin = Origin::fixed(200, "application/octet-stream", body.clone());
        let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
        let r = get(p.addr, "/file.bin");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), size);
        assert!(r.body == body, "body of {size} bytes differs");
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        assert_eq!(r.header("via"), Some("1.1 trackgate"));
    }
}

#[test]
fn request_bodies_reach_the_origin_byte_identical() {
    let origin = Origin::fixed(201, "text/plain", b"made".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    for size in [0usize, 1024, 10 * 1024 * 1024] {
        let body = body_of(size);
        let mut c = Client::connect(p.addr);
        let mut req = format!(
            "PUT /upload HTTP/1.1\r\nHost: site.example\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let r = c.request(&req);
        assert_eq!(r.status, 201);
        let seen = origin.requests().pop().expect("origin saw the request");
        assert_eq!(seen.request_line(), "PUT /upload HTTP/1.1");
        assert_eq!(seen.body.len(), size);
        assert!(seen.body == body);
        assert_eq!(seen.header("content-length"), Some(size.to_string()));
    }
}

#[test]
fn chunked_request_is_reframed_and_chunked_response_streams() {
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Origin: yes\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"POST /form HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nTrailer-X: dropped\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.header("x-origin"), Some("yes"));
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.body, b"abcdefg");
    assert_eq!(seen.header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(seen.header("content-length").is_none());
    assert!(!seen.head.contains("Trailer-X"));
}

#[test]
fn keep_alive_reuses_one_origin_connection() {
    let origin = Origin::fixed(200, "text/plain", b"pong".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    for i in 0..10 {
        let r = c.request(format!("GET /ping/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "pong");
    }
    assert_eq!(origin.requests().len(), 10);
    assert_eq!(
        origin
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Pipelined requests are answered in order.
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response("GET").expect("a").status, 200);
    assert_eq!(c.read_response("GET").expect("b").status, 200);
    let paths: Vec<String> = origin
        .requests()
        .iter()
        .map(|s| s.request_line().to_string())
        .collect();
    assert_eq!(&paths[10..], ["GET /a HTTP/1.1", "GET /b HTTP/1.1"]);
}

#[test]
fn forwarding_headers_and_hop_by_hop_rules() {
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &format!("{}/base", origin.url()))]);
    let r = http(
        p.addr,
        b"GET /page?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Drop-Me, X-Forwarded-For\r\nX-Drop-Me: 1\r\nX-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-internal").is_none(),
        "origin's nominated header leaked"
    );
    assert!(r.header("keep-alive").is_none());
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.request_line(), "GET /base/page?q=1 HTTP/1.1");
    assert_eq!(seen.header("host").as_deref(), Some("shop.example"));
    assert!(seen.header("x-drop-me").is_none());
    assert!(seen.header("te").is_none());
    assert!(seen.header("proxy-connection").is_none());
    assert!(seen.header("connection").is_none());
    // The client cannot nominate our own header away; its claim is kept and
    // the real peer appended.
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("198.51.100.7, 127.0.0.1")
    );
    // An untrusted client's X-Forwarded-Proto is replaced.
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("shop.example")
    );
    assert_eq!(seen.header("via").as_deref(), Some("1.1 trackgate"));
    assert_eq!(seen.header("accept").as_deref(), Some("*/*"));
}

#[test]
fn redirects_go_back_to_the_client() {
    let origin = Origin::start(|_req, s| {
        let _ =
            s.write_all(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let r = get(p.addr, "/old");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
    assert_eq!(origin.requests().len(), 1);
}

#[test]
fn origin_down_is_502_and_slow_origin_is_504() {
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let p = Proc::start(&[("FORWARD_DESTINATION", &format!("http://{dead_addr}"))]);
    let r = get(p.addr, "/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("Bad Gateway"));
    drop(p);

    let slow = Origin::start(|_req, _s| {
        std::thread::sleep(Duration::from_secs(3));
        false
    });
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &slow.url()),
        ("UPSTREAM_TIMEOUT_S", "1"),
    ]);
    let t0 = Instant::now();
    let r = get(p.addr, "/slow");
    assert_eq!(r.status, 504);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "504 came only after the origin gave up"
    );
}

#[test]
fn stale_pooled_connection_is_retried_for_idempotent_requests() {
    // The origin answers, then closes every connection without saying so.
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    for _ in 0..3 {
        let r = c.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn upgrade_tunnels_only_after_101() {
    // An echo "websocket" origin.
    let origin = Origin::start(|req, s| {
        if req.header("upgrade").as_deref() == Some("websocket") {
            let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return false;
                        }
                    }
                }
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_response("GET").expect("101");
    assert_eq!(r.status, 101);
    c.send(b"frame-bytes");
    let mut got = [0u8; 11];
    c.stream.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"frame-bytes");
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.header("upgrade").as_deref(), Some("websocket"));
}

#[test]
fn http10_client_gets_close_delimited_body() {
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read_response("GET").expect("resp");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "abc");
    assert!(r.header("transfer-encoding").is_none());
}

#[test]
fn head_and_304_have_no_body_but_keep_content_length() {
    let origin = Origin::start(|req, s| {
        if req.request_line().starts_with("HEAD") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
        } else {
            let _ = s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n");
        }
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"));
    let r = c.request(b"GET /big HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n");
    assert_eq!(r.status, 304);
    // The connection is still usable: nothing was left unread.
    let r = c.request(b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let origin = Origin::fixed(200, "text/plain", b"x".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(c.is_closed());
    assert!(
        origin.requests().is_empty(),
        "the origin saw {:?}",
        origin.requests()
    );
}

#[test]
fn oversized_head_is_431() {
    let origin = Origin::fixed(200, "text/plain", b"x".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let big = "a".repeat(20 * 1024);
    let r = http(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(http(p.addr, many.as_bytes()).status, 431);
    assert!(origin.requests().is_empty());
}

#[test]
fn stray_bytes_after_a_response_never_reach_the_next_request() {
    // The origin answers HEAD with a Content-Length, then (wrongly) sends a
    // "body" that looks like a response: it must not be served to the next
    // request that reuses the connection.
    let origin = Origin::start(|req, s| {
        if req.request_line().starts_with("HEAD") {
            let evil =
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nSet-Cookie: session=attacker\r\n\r\nevil";
            let _ = s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", evil.len()).as_bytes(),
            );
            std::thread::sleep(Duration::from_millis(50));
            let _ = s.write_all(evil);
            return true;
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\naccount");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let r = http(
        p.addr,
        b"HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let r = get(p.addr, "/account");
    assert_eq!(r.text(), "account");
    assert!(r.header("set-cookie").is_none());
}

#[test]
fn a_pooled_connection_the_origin_closed_does_not_fail_a_post() {
    // The origin closes idle connections after 100 ms (Node's default is 5 s).
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        s.set_read_timeout(Some(Duration::from_millis(100))).is_ok()
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    assert_eq!(get(p.addr, "/warm").status, 200);
    std::thread::sleep(Duration::from_millis(400));
    let r = http(
        p.addr,
        b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn an_early_answer_during_an_upload_is_relayed() {
    // The origin refuses a large upload right after reading the head (a
    // raw listener: the test Origin reads whole bodies before answering).
    let raw = TcpListener::bind("127.0.0.1:0").expect("bind");
    let raw_addr = raw.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = raw.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &format!("http://{raw_addr}"))]);
    let size = 32 * 1024 * 1024;
    let mut c = Client::connect(p.addr);
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
    );
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..32 {
        if c.stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let r = c.read_response("POST").expect("a response");
    assert_eq!(r.status, 413);
}

#[test]
fn other_transfer_codings_from_the_origin_are_a_502() {
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    assert_eq!(get(p.addr, "/").status, 502);
}

#[test]
fn untrusted_forwarding_claims_are_dropped() {
    let origin = Origin::fixed(200, "text/plain", b"ok".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    http(p.addr, b"GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=1.2.3.4;proto=https\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-Port: 443\r\nConnection: close\r\n\r\n");
    let seen = origin.requests().pop().expect("seen");
    assert!(seen.header("forwarded").is_none());
    assert!(seen.header("x-real-ip").is_none());
    assert!(seen.header("x-forwarded-port").is_none());
    // From a trusted proxy they pass.
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("TRUST_PROXY", "true"),
    ]);
    http(p.addr, b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n");
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("1.2.3.4"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[test]
fn http10_keep_alive_is_acknowledged() {
    let origin = Origin::fixed(200, "text/plain", b"ok".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    for _ in 0..3 {
        let r = c.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let r = c.request(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // Without it, the connection closes after the answer.
    let r = c.request(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(c.is_closed());
}

#[test]
fn endless_interim_responses_are_cut_off() {
    let origin = Origin::start(|_req, s| {
        for _ in 0..100 {
            if s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
                .is_err()
            {
                return false;
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        false
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let r = get(p.addr, "/");
    assert_eq!(r.status, 502);
}

// ---------------------------------------------------------------------------
// Issue 7's checklist, one test per item not covered above.
// ---------------------------------------------------------------------------

/// RFC 9110 §7.6.2: OPTIONS and TRACE with `Max-Forwards: 0` are answered
/// here (OPTIONS 200, TRACE 405: we never echo a request), a larger value
/// reaches the origin less one, other methods pass it unchanged.
#[test]
fn max_forwards_on_options_and_trace() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let r = http(
        p.addr,
        b"OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = http(
        p.addr,
        b"TRACE /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    let r = http(
        p.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: x1\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
    let r = http(
        p.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 5\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "origin");
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.request_line(), "OPTIONS * HTTP/1.1");
    assert_eq!(seen.header("max-forwards").as_deref(), Some("4"));
    http(
        p.addr,
        b"GET /g HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
    );
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.header("max-forwards").as_deref(), Some("0"));
}

/// Asterisk-form only for OPTIONS; absolute-form is rewritten to
/// origin-form and its authority becomes Host (RFC 9112 §3.2.2).
#[test]
fn absolute_and_asterisk_form_targets() {
    let origin = Origin::fixed(200, "text/plain", b"ok".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let r = http(p.addr, b"GET http://other.example/p?q=1 HTTP/1.1\r\nHost: ignored.example\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = origin.requests().pop().expect("seen");
    assert_eq!(seen.request_line(), "GET /p?q=1 HTTP/1.1");
    assert_eq!(seen.header("host").as_deref(), Some("other.example"));
    let r = http(p.addr, b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = http(
        p.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests().len(), 2, "{:?}", origin.requests());
    assert_eq!(origin.requests()[1].request_line(), "OPTIONS * HTTP/1.1");
}

/// 103 Early Hints reach an HTTP/1.1 client before the final response.
#[test]
fn early_hints_are_forwarded() {
    let origin = Origin::start(|_req, s| {
        let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let first = c.read_head_raw().expect("103");
    assert!(first.starts_with("HTTP/1.1 103"), "{first}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("link: </a.css>; rel=preload"),
        "{first}"
    );
    let second = c.read_head_raw().expect("200");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// 204 (and a 304, see above) carry no body whatever their Content-Length
/// says: the answer comes at once and the connections stay usable.
#[test]
fn a_204_has_no_body() {
    let origin = Origin::start(|req, s| {
        if req.request_line().contains("/nc") {
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        } else {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let t0 = Instant::now();
    assert_eq!(
        c.request(b"GET /nc HTTP/1.1\r\nHost: a\r\n\r\n").status,
        204
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the proxy waited for a 204 body"
    );
    let r = c.request(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// An upgrade request the origin answers with 200 stays HTTP: the next
/// bytes on the connection are a request, not tunnel data.
#[test]
fn an_upgrade_answered_200_stays_http() {
    let origin = Origin::fixed(200, "text/plain", b"plain".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let r = c.request(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let r = c.request(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    let lines: Vec<String> = origin
        .requests()
        .iter()
        .map(|s| s.request_line().to_string())
        .collect();
    assert_eq!(lines, ["GET /ws HTTP/1.1", "GET /second HTTP/1.1"]);
}

/// An origin that closes mid-body (length or chunked): the client's
/// connection is closed (it cannot tell the body is short otherwise) and
/// that origin connection is never used again. An invalid Content-Length
/// from the origin is a 502.
#[test]
fn origin_closing_mid_body_or_framing_badly() {
    let origin = Origin::start(|req, s| {
        let line = req.request_line().to_string();
        let out: &[u8] = if line.contains("/short") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"
        } else if line.contains("/midchunk") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nonly"
        } else if line.contains("/badcl") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx"
        } else if line.contains("/twocl") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        let _ = s.write_all(out);
        // Keep-alive only for the good answer; the broken ones close, which
        // ends the short bodies.
        !line.contains("/short") && !line.contains("/midchunk")
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    for path in ["/short", "/midchunk"] {
        let mut c = Client::connect(p.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let r = c.read_response("GET");
        // Either a 502 or a response whose body never completes.
        assert!(
            r.as_ref().is_none_or(|r| r.status == 502),
            "{path}: a complete response: {:?}",
            r.map(|r| (r.status, r.text()))
        );
        assert!(
            c.wait_closed(Duration::from_secs(5)).is_ok(),
            "{path}: client connection left open"
        );
    }
    for path in ["/badcl", "/twocl"] {
        let before = origin.connections.load(std::sync::atomic::Ordering::SeqCst);
        let mut c = Client::connect(p.addr);
        let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(r.status, 502, "{path}");
        // The next request needs a new origin connection: the one that
        // framed badly was not pooled.
        let r = get(p.addr, "/good");
        assert_eq!(r.status, 200);
        let after = origin.connections.load(std::sync::atomic::Ordering::SeqCst);
        assert!(after > before, "{path}: the origin connection was reused");
    }
}

/// Pipelined requests are answered in order; `Connection: close` on one of
/// them ends the connection after its answer and what follows is never
/// read (the origin never sees it).
#[test]
fn pipelined_requests_in_order_and_connection_close_honoured() {
    let origin = Origin::start(|req, s| {
        let body = req
            .request_line()
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string();
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /5 HTTP/1.1\r\nHost: a\r\n\r\n");
    let got: Vec<String> = (0..4)
        .map(|_| c.read_response("GET").expect("response").text())
        .collect();
    assert_eq!(got, ["/1", "/2", "ok\n", "/4"]);
    assert!(c.wait_closed(Duration::from_secs(5)).is_ok());
    let lines: Vec<String> = origin
        .requests()
        .iter()
        .map(|s| s.request_line().to_string())
        .collect();
    assert_eq!(
        lines,
        ["GET /1 HTTP/1.1", "POST /2 HTTP/1.1", "GET /4 HTTP/1.1"]
    );
}

/// Request trailers never reach the origin; the body does.
#[test]
fn request_trailers_are_dropped() {
    let origin = Origin::fixed(200, "text/plain", b"ok".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 123\r\n\r\n");
    assert_eq!(r.status, 200);
    let r = c.request(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = origin.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].body, b"abc");
    assert!(seen[0].header("trailer").is_none());
    assert!(!seen.iter().any(|s| s.head.contains("X-Sum")), "{seen:?}");
    assert_eq!(seen[1].request_line(), "GET /after HTTP/1.1");
}

/// Chunk-size overflow and junk in a forwarded body: 400, connection closed,
/// and the origin never receives a complete request.
#[test]
fn bad_chunk_sizes_are_refused() {
    let origin = Origin::fixed(200, "text/plain", b"ok".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    for body in [
        "fffffffffffffffff1\r\nx\r\n0\r\n\r\n",
        "10000000000000000\r\nx\r\n0\r\n\r\n",
        "3x\r\nabc\r\n0\r\n\r\n",
        " 3\r\nabc\r\n0\r\n\r\n",
        "-1\r\nabc\r\n0\r\n\r\n",
        "3\r\nabcX0\r\n\r\n",
    ] {
        let mut c = Client::connect(p.addr);
        c.send(format!("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let r = c.read_response("POST").expect("a response");
        assert_eq!(r.status, 400, "{body:?}");
        assert!(c.wait_closed(Duration::from_secs(5)).is_ok(), "{body:?}");
        assert!(
            origin.requests().is_empty(),
            "{body:?}: {:?}",
            origin.requests()
        );
    }
}

/// Every split of a message across two TCP segments gives the same result:
/// a valid pipeline reaches the origin identically, a smuggling attempt is
/// refused identically.
#[test]
fn every_split_across_segments_gives_the_same_result() {
    let origin = Origin::fixed(200, "text/plain", b"ok".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let good: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let bad: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    for (msg, want) in [(good, vec![200u16, 200]), (bad, vec![400])] {
        for at in 1..msg.len() {
            let before = origin.requests().len();
            let mut c = Client::connect(p.addr);
            c.stream.set_nodelay(true).expect("nodelay");
            c.send(&msg[..at]);
            std::thread::sleep(Duration::from_millis(3));
            let _ = c.stream.write_all(&msg[at..]);
            let mut statuses = Vec::new();
            while let Some(r) = c.read_response("POST") {
                statuses.push(r.status);
            }
            assert_eq!(statuses, want, "split at {at}");
            let seen = origin.requests();
            if want[0] == 200 {
                assert_eq!(seen.len(), before + 2, "split at {at}");
                assert_eq!(seen[before].body, b"abc", "split at {at}");
            } else {
                assert_eq!(seen.len(), before, "split at {at}: {seen:?}");
            }
        }
    }
}

/// The response head reaches the client before the origin sends any of the
/// body (a long poll or an event stream is not held back behind its first
/// bytes), with a Content-Length body and with a chunked one: the origin
/// sends the body only once the client has the head.
#[test]
fn the_head_goes_out_before_a_delayed_body() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let origin = Origin::start(move |req, s| {
        let chunked = req.request_line().contains("/chunked");
        let head: &[u8] = if chunked {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        };
        if s.write_all(head).is_err() {
            return false;
        }
        // No body (and a closed connection) unless the client got the head.
        let go = rx
            .lock()
            .expect("lock")
            .recv_timeout(Duration::from_secs(10));
        if go.is_err() {
            return false;
        }
        let body: &[u8] = if chunked {
            b"5\r\nhello\r\n0\r\n\r\n"
        } else {
            b"hello"
        };
        s.write_all(body).is_ok()
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let mut c = Client::connect(p.addr);
    for (path, want) in [
        ("/len", &b"hello"[..]),
        ("/chunked", &b"5\r\nhello\r\n0\r\n\r\n"[..]),
    ] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let head = c.read_head_raw().expect("the head, before any body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(c.buffered().is_empty());
        tx.send(()).expect("the origin waits");
        let mut body = vec![0u8; want.len()];
        c.stream.read_exact(&mut body).expect("the body");
        assert_eq!(body, want, "{path}");
    }
}
