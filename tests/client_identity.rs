//! End-to-end: what an event records about its client: the IP (proxy trust,
//! `IP_MODE`, IPv4 and IPv6 listeners) and the session cookie.

mod common;
use common::*;
use std::net::{IpAddr, SocketAddr};

const NO_ORIGIN: (&str, &str) = ("FORWARD_DESTINATION", "http://127.0.0.1:9");

/// One pixel hit with extra request headers; returns the response and the
/// event it wrote (the process must have written `before` events already).
fn hit(p: &Proc, extra: &str, before: usize) -> (Resp, serde_json::Value) {
    hit_at(p, p.addr, extra, before)
}

fn hit_at(p: &Proc, addr: SocketAddr, extra: &str, before: usize) -> (Resp, serde_json::Value) {
    let r = http(
        addr,
        format!(
            "GET /px.gif?e=id{before} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {UA}\r\n{extra}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let ev = p.wait_events(before + 1);
    assert_eq!(ev.len(), before + 1, "{ev:?}");
    (r, ev[before].clone())
}

fn is_hex32(v: &serde_json::Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[test]
fn forwarded_for_is_used_only_with_trust_proxy() {
    let xff = "X-Forwarded-For: 203.0.113.5\r\n";
    let p = Proc::start(&[NO_ORIGIN, ("TRUST_PROXY", "true")]);
    let (_, e) = hit(&p, xff, 0);
    assert_eq!(e["ip"], "203.0.113.5");
    assert!(is_hex32(&e["ip_hash"]), "{e}");
    // Right to left, skipping trusted (private) hops.
    let (_, e) = hit(
        &p,
        "X-Forwarded-For: 198.51.100.1, 203.0.113.5, 10.0.0.7\r\n",
        1,
    );
    assert_eq!(e["ip"], "203.0.113.5");
    drop(p);

    let p = Proc::start(&[NO_ORIGIN, ("TRUST_PROXY", "false")]);
    let (_, e) = hit(&p, xff, 0);
    assert_eq!(e["ip"], "127.0.0.1");
    drop(p);

    // Trust only another network: loopback is not a trusted proxy.
    let p = Proc::start(&[
        NO_ORIGIN,
        ("TRUST_PROXY", "true"),
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
    ]);
    let (_, e) = hit(&p, xff, 0);
    assert_eq!(e["ip"], "127.0.0.1");
}

#[test]
fn ip_modes() {
    let xff = "X-Forwarded-For: 203.0.113.5\r\n";
    let trust = ("TRUST_PROXY", "true");

    let p = Proc::start(&[NO_ORIGIN, trust, ("IP_MODE", "truncate")]);
    let (_, e) = hit(&p, xff, 0);
    assert_eq!(e["ip"], "203.0.113.0");
    assert!(is_hex32(&e["ip_hash"]), "{e}");
    let (_, e) = hit(&p, "X-Forwarded-For: [2001:db8:abcd:12::1]:443\r\n", 1);
    assert_eq!(e["ip"], "2001:db8:abcd::", "IPv6 is truncated to its /48");
    drop(p);

    let p = Proc::start(&[NO_ORIGIN, trust, ("IP_MODE", "hash")]);
    let (_, a) = hit(&p, xff, 0);
    let (_, b) = hit(&p, xff, 1);
    let (_, other) = hit(&p, "X-Forwarded-For: 203.0.113.6\r\n", 2);
    assert!(a["ip"].is_null(), "{a}");
    assert!(is_hex32(&a["ip_hash"]), "{a}");
    assert_eq!(a["ip_hash"], b["ip_hash"], "same IP, same day, same hash");
    assert!(is_hex32(&other["ip_hash"]));
    assert_ne!(a["ip_hash"], other["ip_hash"]);
    drop(p);

    let p = Proc::start(&[NO_ORIGIN, trust, ("IP_MODE", "none")]);
    let (_, e) = hit(&p, xff, 0);
    assert!(e["ip"].is_null(), "{e}");
    assert!(e["ip_hash"].is_null(), "{e}");
    drop(p);

    // The hash in full mode is the one in hash mode (same key, same day).
    let p = Proc::start(&[NO_ORIGIN, trust, ("IP_MODE", "full")]);
    let (_, e) = hit(&p, xff, 0);
    assert_eq!(e["ip"], "203.0.113.5");
    assert_eq!(e["ip_hash"], a["ip_hash"]);
}

fn cookie_of(r: &Resp) -> Option<&str> {
    r.header("set-cookie")
}

#[test]
fn session_cookie_modes_and_attributes() {
    // off: never issued, and the event has no session.
    let p = Proc::start(&[NO_ORIGIN, ("COOKIE_MODE", "off")]);
    let (r, e) = hit(&p, "", 0);
    assert!(cookie_of(&r).is_none(), "{:?}", r.headers);
    assert!(e["session_id"].is_null(), "{e}");
    // ...but a cookie the client has is still read.
    let (r, e) = hit(&p, "Cookie: _tg_sid=kept-1\r\n", 1);
    assert!(cookie_of(&r).is_none());
    assert_eq!(e["session_id"], "kept-1");
    drop(p);

    // on: a client with the cookie gets no new one; its value is the session.
    let p = Proc::start(&[NO_ORIGIN]);
    let (r, e) = hit(&p, "Cookie: other=1; _tg_sid=abc-123_x.y\r\n", 0);
    assert!(cookie_of(&r).is_none(), "{:?}", r.headers);
    assert_eq!(e["session_id"], "abc-123_x.y");
    let (r, _) = hit(&p, "", 1);
    let c = cookie_of(&r).expect("a new session cookie");
    assert!(!c.contains("Domain="), "{c}");
    assert!(!c.contains("Secure"), "{c}");
    // X-Forwarded-Proto from an untrusted peer does not make it Secure.
    let (r, _) = hit(&p, "X-Forwarded-Proto: https\r\n", 2);
    let c = cookie_of(&r).expect("cookie");
    assert!(!c.contains("Secure"), "{c}");
    drop(p);

    let p = Proc::start(&[
        NO_ORIGIN,
        ("COOKIE_DOMAIN", "example.com"),
        ("COOKIE_NAME", "sid2"),
        ("TRUST_PROXY", "true"),
    ]);
    let (r, e) = hit(&p, "X-Forwarded-Proto: https\r\n", 0);
    let c = cookie_of(&r).expect("cookie");
    assert!(c.starts_with("sid2="), "{c}");
    let attrs: Vec<&str> = c.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Domain=example.com"), "{c}");
    assert!(attrs.contains(&"Secure"), "{c}");
    assert!(attrs.contains(&"HttpOnly"), "{c}");
    assert_eq!(
        e["session_id"].as_str(),
        attrs[0].strip_prefix("sid2="),
        "the event's session is the cookie issued"
    );
    // Plain http through the trusted proxy: no Secure.
    let (r, _) = hit(&p, "X-Forwarded-Proto: http\r\n", 1);
    assert!(!cookie_of(&r).expect("cookie").contains("Secure"));
    // The configured name is read back.
    let (r, e) = hit(&p, "Cookie: _tg_sid=wrong; sid2=right\r\n", 2);
    assert!(cookie_of(&r).is_none());
    assert_eq!(e["session_id"], "right");
}

fn ipv6_loopback_works() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn dual_stack_listener_records_canonical_addresses() {
    if !ipv6_loopback_works() {
        eprintln!("SKIPPED: IPv6 loopback (::1) is not available on this machine");
        return;
    }
    for server in ["[::]:0", ":0"] {
        let p = Proc::start(&[NO_ORIGIN, ("SERVER_ADDR", server)]);
        let port = p.addr.port();
        let v4 = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
        let v6 = SocketAddr::new("::1".parse().expect("ip"), port);
        let (_, e) = hit_at(&p, v4, "", 0);
        assert_eq!(
            e["ip"], "127.0.0.1",
            "{server}: IPv4-mapped not canonicalised"
        );
        let (_, e) = hit_at(&p, v6, "", 1);
        assert_eq!(e["ip"], "::1", "{server}");
        // Tokens are handed out over IPv6 too (their IP bucket is the /48).
        let r = http(
            v6,
            b"GET /hmac/public-key HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{server}");
    }
    let p = Proc::start(&[
        NO_ORIGIN,
        ("SERVER_ADDR", "[::1]:0"),
        ("IP_MODE", "truncate"),
    ]);
    let (_, e) = hit(&p, "", 0);
    assert_eq!(e["ip"], "::", "::1 truncated to its /48");
}
