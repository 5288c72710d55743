//! End-to-end: the limits that protect the proxy from its clients and its
//! sinks: the request-head deadline, the idle keep-alive deadline, draining
//! on SIGTERM, and a sink queue that is full.

mod common;
use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request head that never completes gets 408 (or at least a closed
/// connection) once `HEADER_TIMEOUT_S` has passed, and reaches no origin.
#[test]
fn partial_head_is_cut_off_after_the_header_timeout() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("HEADER_TIMEOUT_S", "1"),
        ("IDLE_TIMEOUT_S", "30"),
    ]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET /page HTTP/1.1\r\nHost: x\r\nUser-Agent: half");
    let (took, bytes) = c.wait_closed(Duration::from_secs(5)).unwrap_or_else(|b| {
        panic!(
            "still open after 5 s (sent {:?})",
            String::from_utf8_lossy(&b)
        )
    });
    eprintln!("partial head: closed after {took:?}");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(text.contains("Connection: close"), "{text}");
    }
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

/// A client trickling its head one byte every 300 ms is still cut off at
/// `HEADER_TIMEOUT_S` for the whole head (the deadline is not per read).
#[test]
fn trickling_head_is_cut_off_at_the_header_deadline() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("HEADER_TIMEOUT_S", "1"),
        ("IDLE_TIMEOUT_S", "30"),
    ]);
    // 60+ bytes at one byte per 300 ms would take over 18 s to complete.
    let head = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut c = Client::connect(p.addr);
    let mut writer = c.stream.try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop2, sent2) = (Arc::clone(&stop), Arc::clone(&sent));
    let t0 = Instant::now();
    let trickle = std::thread::spawn(move || {
        for b in head.iter() {
            if stop2.load(Ordering::Relaxed) || writer.write_all(&[*b]).is_err() {
                return;
            }
            sent2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let res = c.wait_closed(Duration::from_secs(6));
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "trickling head: cut off after {took:?}, {sent} of {} bytes sent",
        head.len()
    );
    let (_, bytes) = res.unwrap_or_else(|b| {
        panic!(
            "still open after {took:?} with {sent} bytes sent; got {:?}",
            String::from_utf8_lossy(&b)
        )
    });
    assert!(took < Duration::from_secs(3), "cut off only after {took:?}");
    assert!(sent < head.len(), "the whole head went through");
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    }
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

/// `IDLE_TIMEOUT_S` closes a keep-alive connection between requests, and
/// `HEADER_TIMEOUT_S` a new connection that never sends a byte.
#[test]
fn idle_keep_alive_connections_are_closed() {
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("IDLE_TIMEOUT_S", "1"),
        ("HEADER_TIMEOUT_S", "1"),
    ]);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r
        .header("connection")
        .is_none_or(|v| !v.eq_ignore_ascii_case("close")));
    let (took, bytes) = c
        .wait_closed(Duration::from_secs(5))
        .expect("idle keep-alive connection still open after 5 s");
    eprintln!("idle keep-alive connection closed after {took:?}");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));

    let mut silent = Client::connect(p.addr);
    let (took, bytes) = silent
        .wait_closed(Duration::from_secs(5))
        .expect("silent connection still open after 5 s");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    assert!(bytes.is_empty());
}

/// SIGTERM closes idle keep-alive connections at once and the process exits
/// 0 well before `SHUTDOWN_TIMEOUT_S`.
#[test]
fn sigterm_closes_idle_connections_and_exits_promptly() {
    let mut p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("SHUTDOWN_TIMEOUT_S", "10"),
        ("IDLE_TIMEOUT_S", "60"),
    ]);
    let mut idle = Client::connect(p.addr);
    assert_eq!(
        idle.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    // A connection accepted but silent (first read pending).
    let mut silent = Client::connect(p.addr);
    assert_eq!(
        silent
            .request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let (took, bytes) = idle
        .wait_closed(Duration::from_secs(5))
        .expect("idle connection still open 5 s after SIGTERM");
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert!(silent.wait_closed(Duration::from_secs(5)).is_ok());
    let code = p.wait_exit(Duration::from_secs(8));
    let took = t0.elapsed();
    eprintln!("exit {code:?} {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{}", p.logs());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} with SHUTDOWN_TIMEOUT_S=10 and nothing in flight"
    );
}

/// While draining (a slow request keeps the process alive), asks
/// `/readyz` on a second connection that had sent part of its head before
/// SIGTERM (so it is not idle and is not closed) and finishes it once the
/// listener is gone, which proves draining has started. Returns that answer
/// and whether the server closed the connection after it; checks the slow
/// request completes and the process exits 0.
fn readyz_while_draining() -> (Resp, bool) {
    let release = Arc::new(AtomicBool::new(false));
    let r2 = Arc::clone(&release);
    let origin = Origin::start(move |_req, s| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r2.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
        true
    });
    let mut p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("SHUTDOWN_TIMEOUT_S", "10"),
        ("HEADER_TIMEOUT_S", "10"),
    ]);
    let addr = p.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    // Wait until the slow request is at the origin.
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.requests().is_empty() {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut probe = Client::connect(addr);
    assert_eq!(
        probe
            .request(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    probe.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n");
    // Let the server read the partial head before the signal.
    std::thread::sleep(Duration::from_millis(200));
    p.signal(libc::SIGTERM);
    // The listener closes once the core has seen the draining flag.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect(addr) {
            Err(_) => break,
            Ok(s) => drop(s),
        }
        if Instant::now() > deadline {
            release.store(true, Ordering::Relaxed);
            panic!("still accepting 5 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    probe.send(b"\r\n");
    let r = probe.read_response("GET");
    let closed = probe.wait_closed(Duration::from_secs(5)).is_ok();
    release.store(true, Ordering::Relaxed);
    let r = r.expect("a readyz answer while draining");
    let slow = slow.join().expect("slow");
    assert_eq!((slow.status, slow.text().as_str()), (200, "done"));
    assert_eq!(p.wait_exit(Duration::from_secs(8)), Some(0), "{}", p.logs());
    (r, closed)
}

#[test]
fn readyz_is_503_while_draining() {
    let (r, closed) = readyz_while_draining();
    assert_eq!(r.status, 503, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["status"], "draining");
    assert_eq!(v["sinks"]["log"]["state"], "healthy");
    assert!(closed, "the connection stayed open while draining");
}

/// A server that closes a connection after a response says so in it
/// (RFC 9112 §9.6); proxied responses do while draining, local ones not.
#[test]
fn local_answers_while_draining_say_connection_close() {
    let (r, closed) = readyz_while_draining();
    assert!(closed);
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
}

/// A log sink that cannot write (`/dev/full`) stops taking batches; with
/// `QUEUE_CAPACITY=1` the queue then holds one batch and every further
/// event is dropped and counted, while the pixel still answers 200 and
/// collect answers 429 with Retry-After.
#[test]
fn a_down_sink_loses_nothing_the_journal_holds_the_events() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: /dev/full is not available on this machine");
        return;
    }
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("LOG_PATH", "/dev/full"),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let maddr = p.metrics_addr();
    assert_eq!(get(p.addr, "/px.gif?e=first").status, 200);
    // The first write fails: the sink is down (and says so in /readyz).
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let r = get(p.addr, "/readyz");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        if v["sinks"]["log"]["state"] == "down" {
            break (r.status, v);
        }
        assert!(Instant::now() < deadline, "sink never went down: {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ready.0, 200, "a sink outage alone keeps /readyz 200");
    assert_eq!(ready.1["status"], "degraded");
    assert!(
        ready.1["sinks"]["log"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/dev/full")),
        "{}",
        ready.1
    );
    assert_eq!(get(p.addr, "/readyz?strict=1").status, 503);

    // The journal takes every event while the sink is down: nothing is
    // dropped.
    for i in 0..5 {
        let r = get(p.addr, &format!("/px.gif?e=n{i}"));
        assert_eq!(r.status, 200, "pixel {i}");
        assert_eq!(r.header("content-type"), Some("image/gif"));
        assert_eq!(r.body.len(), 43);
    }
    // A signed collect is journaled and acknowledged.
    let t = public_key_token(p.addr, UA);
    let body = br#"{"type":"pageview"}"#;
    let sig =
        trackgate::track::token::sign(t["token"].as_str().expect("token"), body).expect("sign");
    let mut req = format!(
        "POST /collect HTTP/1.1\r\nHost: t\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let r = http(p.addr, &req);
    assert_eq!(r.status, 202, "{}", r.text());

    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = scrape(maddr);
        if metric(&m, r#"trackgate_sink_checkpoint_lag_events{sink="log"}"#) == Some(7.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "lag never reached 7: {m}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        metric(&m, r#"trackgate_events_total{source="pixel"}"#),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"trackgate_events_dropped_total{reason="queue_full"}"#),
        Some(0.0)
    );
    assert_eq!(metric(&m, "trackgate_journal_events_total"), Some(7.0));
    assert_eq!(
        metric(
            &m,
            r#"trackgate_requests_total{route="pixel",status_class="2xx"}"#
        ),
        Some(6.0)
    );
    assert_eq!(metric(&m, r#"trackgate_sink_up{sink="log"}"#), Some(0.0));
    assert!(
        metric(
            &m,
            r#"trackgate_sink_failures_total{sink="log",kind="write"}"#
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"trackgate_sink_events_written_total{sink="log"}"#),
        Some(0.0)
    );
}

/// Sends `head`, then its body one byte a second; returns how long after the
/// head the server closed the connection (`None`: still open after 10 s).
fn trickle_body(addr: std::net::SocketAddr, head: &[u8]) -> Option<Duration> {
    let mut c = Client::connect(addr);
    c.send(head);
    let mut writer = c.stream.try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let t0 = Instant::now();
    let trickle = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) && writer.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let res = c.wait_closed(Duration::from_secs(10));
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    res.ok().map(|_| took)
}

/// The minimum body rate: a client sending its body one byte a second is
/// cut off once `BODY_TIMEOUT_S` has passed (plus the 2 ms a byte earns at
/// `MIN_BODY_RATE_BPS=500`), on a forwarded request and on collect alike,
/// although each byte arrives well within `IDLE_TIMEOUT_S`. The origin
/// never receives a complete request.
#[test]
fn one_byte_a_second_body_is_cut_off() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("BODY_TIMEOUT_S", "2"),
        ("MIN_BODY_RATE_BPS", "500"),
        ("IDLE_TIMEOUT_S", "30"),
    ]);
    for (what, head) in [
        (
            "forwarded",
            &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"[..],
        ),
        (
            "forwarded chunked",
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n",
        ),
        (
            "collect",
            b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        ),
    ] {
        let took = trickle_body(p.addr, head);
        eprintln!("one byte a second, {what}: cut off after {took:?}");
        let took = took.unwrap_or_else(|| panic!("{what}: still open after 10 s"));
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
            "{what}: cut off after {took:?}"
        );
    }
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

/// `MAX_CONNECTIONS` per core: past it a new connection gets a clean 503
/// with `Retry-After` and is closed, counted in `connections_refused_total`;
/// once a connection closes, new ones are served again.
#[test]
fn max_connections_refuses_cleanly() {
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("MAX_CONNECTIONS", "2"),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let maddr = p.metrics_addr();
    let mut a = Client::connect(p.addr);
    assert_eq!(
        a.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    let mut b = Client::connect(p.addr);
    assert_eq!(
        b.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    let mut c = Client::connect(p.addr);
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response("GET").expect("a 503");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(c.wait_closed(Duration::from_secs(3)).is_ok());
    let m = scrape(maddr);
    assert_eq!(
        metric(&m, "trackgate_connections_refused_total"),
        Some(1.0),
        "{m}"
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut d = Client::connect(p.addr);
    assert_eq!(
        d.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    assert_eq!(
        b.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect(")") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Out of file descriptors: `accept` fails with EMFILE; the core backs off
/// (no spinning: under 0.3 s of CPU in 2 s), stays up, and serves the
/// waiting connections once descriptors are free again. The limit is
/// lowered on the running process with `prlimit --pid`.
#[test]
fn accept_backs_off_when_file_descriptors_run_out() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let p = Proc::start(&[("FORWARD_DESTINATION", "http://127.0.0.1:9")]);
    let pid = p.child.as_ref().expect("child").id();
    let limit = fds_of(pid) + 2;
    let set = |n: usize| {
        let st = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .status()
            .expect("prlimit");
        assert!(st.success(), "prlimit --pid {pid} --nofile={n}:");
    };
    // The soft limit before: restored afterwards (the hard one is untouched).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files");
    set(limit);
    // Two connections take the last descriptors; the rest wait in the backlog.
    let mut held: Vec<Client> = (0..2).map(|_| Client::connect(p.addr)).collect();
    for c in &mut held {
        assert_eq!(
            c.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .status,
            200
        );
    }
    let mut waiting: Vec<Client> = (0..5).map(|_| Client::connect(p.addr)).collect();
    for c in &mut waiting {
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    }
    assert!(
        p.wait_log(&["accept failed, backing off"], Duration::from_secs(5))
            .is_some(),
        "no back-off logged: {}",
        p.logs()
    );
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - t0;
    let hz = 100; // USER_HZ on Linux
    eprintln!("EMFILE: {used} ticks of CPU in 2 s while accept fails");
    assert!(used * 10 < 3 * hz, "spinning: {used} ticks in 2 s");
    // Descriptors come back: every waiting connection is answered.
    drop(held);
    set(soft);
    for c in &mut waiting {
        let r = c.read_response("GET").expect("answered after the back-off");
        assert_eq!(r.status, 200);
    }
    assert!(p.child.as_ref().is_some());
}

/// `RATE_LIMIT_RPS` / `RATE_LIMIT_BURST`: per client network (/24), the
/// tracking endpoints answer 429 with `Retry-After` once the burst is spent,
/// counted in `rate_limited_total`; another network, a loopback client and
/// proxied requests are not limited; the bucket refills.
#[test]
fn tracking_endpoints_are_rate_limited_per_network() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("RATE_LIMIT_RPS", "1"),
        ("RATE_LIMIT_BURST", "3"),
        ("TRUST_PROXY", "true"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let maddr = p.metrics_addr();
    let from = |net: &str, path: &str| {
        http(
            p.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: {UA}\r\nX-Forwarded-For: {net}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    let mut statuses = Vec::new();
    for path in [
        "/px.gif",
        "/hmac/public-key",
        "/hmac.js",
        "/px.gif",
        "/hmac.js",
    ] {
        statuses.push(from("198.51.100.7", path).status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let r = from("198.51.100.99", "/px.gif");
    assert_eq!(r.status, 429, "same /24");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Collect too (before its signature is even looked at).
    let r = http(p.addr, b"POST /collect HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert_eq!(r.status, 429);
    assert_eq!(from("198.51.101.7", "/px.gif").status, 200, "another /24");
    for _ in 0..10 {
        assert_eq!(from("198.51.100.7", "/page").status, 200, "proxied");
        assert_eq!(get(p.addr, "/px.gif").status, 200, "loopback client");
    }
    let m = scrape(maddr);
    assert_eq!(metric(&m, "trackgate_rate_limited_total"), Some(4.0), "{m}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(from("198.51.100.7", "/px.gif").status, 200, "refilled");
}
