//! End-to-end: Prometheus metrics on `METRICS_ADDR`, counted from real
//! traffic, never served on the public port.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Scrapes until every `(series, value)` holds or 5 s pass (a request is
/// counted just after its response is written, so a scrape right after the
/// answer can be a moment early); returns the last scrape.
fn scrape_until(addr: SocketAddr, want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(addr);
        if want.iter().all(|(s, v)| metric(&text, s) == Some(*v)) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_real_traffic_on_their_own_port() {
    let origin = Origin::fixed(200, "text/plain", b"from-origin".to_vec());
    // Port 0: the bound port is read from the log, so no other process
    // can take a "free" port between choosing and binding it.
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let maddr = p.metrics_addr();
    assert_eq!(maddr.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    assert_ne!(maddr.port(), p.addr.port());

    // Every series exists from the first scrape.
    let first = scrape(maddr);
    assert_eq!(
        metric(
            &first,
            r#"trackgate_requests_total{route="pixel",status_class="2xx"}"#
        ),
        Some(0.0),
        "{first}"
    );
    assert_eq!(
        metric(&first, r#"trackgate_auth_failures_total{reason="missing"}"#),
        Some(0.0)
    );

    for i in 0..3 {
        assert_eq!(get(p.addr, &format!("/px.gif?e=m{i}")).status, 200);
    }
    for path in ["/a", "/b"] {
        let r = get(p.addr, path);
        assert_eq!((r.status, r.text().as_str()), (200, "from-origin"));
    }
    // /metrics on the public port is the origin's, not ours.
    let r = get(p.addr, "/metrics");
    assert_eq!(r.text(), "from-origin");
    assert!(!r.text().contains("trackgate_"));
    assert_eq!(
        origin
            .requests()
            .last()
            .map(|s| s.request_line().to_string()),
        Some("GET /metrics HTTP/1.1".to_string())
    );
    // An unsigned collect: 401, reason "missing".
    let r = http(
        p.addr,
        b"POST /collect HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(r.status, 401);
    assert_eq!(p.wait_events(3).len(), 3);
    // A malformed request: answered 400 and counted as "rejected".
    let r = http(p.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(r.status, 400);

    let want: &[(&str, f64)] = &[
        (
            r#"trackgate_requests_total{route="pixel",status_class="2xx"}"#,
            3.0,
        ),
        (
            r#"trackgate_requests_total{route="proxy",status_class="2xx"}"#,
            3.0,
        ),
        (
            r#"trackgate_requests_total{route="collect",status_class="4xx"}"#,
            1.0,
        ),
        (r#"trackgate_events_total{source="pixel"}"#, 3.0),
        (r#"trackgate_events_total{source="collect"}"#, 0.0),
        (r#"trackgate_auth_failures_total{reason="missing"}"#, 1.0),
        (
            r#"trackgate_auth_failures_total{reason="bad_signature"}"#,
            0.0,
        ),
        (
            r#"trackgate_upstream_requests_total{status_class="2xx"}"#,
            3.0,
        ),
        (
            r#"trackgate_upstream_requests_total{status_class="5xx"}"#,
            0.0,
        ),
        (r#"trackgate_sink_events_written_total{sink="log"}"#, 3.0),
        (
            r#"trackgate_events_dropped_total{reason="queue_full"}"#,
            0.0,
        ),
        (r#"trackgate_sink_up{sink="log"}"#, 1.0),
        (
            r#"trackgate_requests_total{route="rejected",status_class="4xx"}"#,
            1.0,
        ),
        // Every client connection above has been closed.
        ("trackgate_connections_open", 0.0),
    ];
    let text = scrape_until(maddr, want);
    for (series, value) in want {
        assert_eq!(metric(&text, series), Some(*value), "{series}\n{text}");
    }
    // One core, with the driver it got.
    let core: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("trackgate_core_info{"))
        .collect();
    assert_eq!(core.len(), 1, "{text}");
    assert!(
        core[0] == r#"trackgate_core_info{core="0",driver="io_uring"} 1"#
            || core[0] == r#"trackgate_core_info{core="0",driver="epoll"} 1"#,
        "{}",
        core[0]
    );
    let driver = if core[0].contains("io_uring") {
        "io_uring"
    } else {
        "epoll"
    };
    assert!(
        p.wait_log(&["core started", driver], Duration::from_secs(1))
            .is_some(),
        "the core's log line names another driver than core_info: {}",
        p.logs()
    );
    let build = format!(
        r#"trackgate_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&text, &build), Some(1.0), "{text}");

    // Other paths and methods on the metrics port.
    let r = http(
        maddr,
        b"GET /other HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 404);
}

#[test]
fn metrics_on_the_public_port_are_refused() {
    let port = free_port();
    let dir = TempDir::new("metrics-port");
    let log = dir.path().join("events.ndjson");
    let log = log.to_str().expect("utf-8 path");
    for (server, metrics) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!(":{port}"), format!("127.0.0.1:{port}")),
    ] {
        let (code, _, err) = run_bounded(
            &[],
            &[
                ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
                ("HMAC_SECRET", SECRET),
                ("LOG_PATH", log),
                ("SERVER_ADDR", &server),
                ("METRICS_ENABLED", "true"),
                ("METRICS_ADDR", &metrics),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(
            code,
            Some(2),
            "SERVER_ADDR={server} METRICS_ADDR={metrics}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("METRICS_ADDR"), "{err}");
    }
}
