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

/// The sink and journal series of the issue, from a real pipeline: the log
/// sink healthy, the PostgreSQL sink down (nothing listens on its port).
/// `/readyz` says which sink is down, why, and how far behind it is.
#[test]
fn sink_and_journal_series_and_readyz_with_one_sink_down() {
    let dir = TempDir::new("metrics-sinks");
    let data = dir.path().join("data").display().to_string();
    let log = dir.path().join("events.ndjson").display().to_string();
    let dead = dir.path().join("pg.dead").display().to_string();
    let dsn = format!(
        "host=127.0.0.1 port={} user=trackgate dbname=none connect_timeout=2",
        free_port()
    );
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("OUTPUTS", "log,postgres"),
        ("SHUTDOWN_TIMEOUT_S", "1"),
        ("PG_DSN", &dsn),
        ("PG_DEAD_LETTER", &dead),
        ("DATA_DIR", &data),
        ("LOG_PATH", &log),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let maddr = p.metrics_addr();
    let tok = common::sinks::token(p.addr);
    let ids: Vec<String> = (0..5).map(common::sinks::event_id).collect();
    let sent = common::sinks::send(p.addr, &common::sinks::collect_req(&tok, &ids, 10));
    assert_eq!(sent.map(|r| r.0), Some(202), "{}", p.logs());

    let pg = |name: &str| format!(r#"trackgate_{name}{{sink="postgres"}}"#);
    let lg = |name: &str| format!(r#"trackgate_{name}{{sink="log"}}"#);
    let want = [
        (pg("sink_checkpoint_lag_events"), 5.0),
        (lg("sink_checkpoint_lag_events"), 0.0),
        (lg("sink_events_acknowledged_total"), 5.0),
        (pg("sink_events_acknowledged_total"), 0.0),
        (pg("sink_up"), 0.0),
        (lg("sink_up"), 1.0),
    ];
    let wanted: Vec<(&str, f64)> = want.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = scrape(maddr);
        let ok = wanted.iter().all(|(s, v)| metric(&text, s) == Some(*v));
        if ok || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for (series, value) in &wanted {
        assert_eq!(metric(&text, series), Some(*value), "{series}\n{text}");
    }
    let at_least = |series: &str, min: f64| {
        let v = metric(&text, series);
        assert!(
            v.is_some_and(|v| v >= min),
            "{series} = {v:?}, want >= {min}\n{text}"
        );
    };
    at_least(&pg("sink_checkpoint_lag_bytes"), 5.0 * 40.0);
    at_least(
        r#"trackgate_sink_failures_total{sink="postgres",kind="connect"}"#,
        1.0,
    );
    at_least(&lg("sink_flush_duration_seconds_count"), 1.0);
    at_least("trackgate_journal_fsync_duration_seconds_count", 1.0);
    at_least("trackgate_journal_ack_wait_seconds_count", 1.0);
    at_least("trackgate_journal_segments", 1.0);
    at_least("trackgate_journal_bytes", 5.0 * 40.0);
    for zero in [
        pg("sink_events_replayed_total"),
        pg("sink_events_dead_lettered_total"),
        pg("sink_events_duplicate_total"),
        lg("sink_events_dead_lettered_total"),
    ] {
        assert_eq!(metric(&text, &zero), Some(0.0), "{zero}\n{text}");
    }

    let r = get(p.addr, "/readyz");
    assert_eq!(
        r.status,
        200,
        "a sink outage alone keeps serving: {}",
        r.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["sinks"]["log"]["state"], "healthy", "{v}");
    assert_eq!(v["sinks"]["postgres"]["state"], "down", "{v}");
    assert_eq!(v["sinks"]["postgres"]["behind_events"], 5, "{v}");
    assert!(
        v["sinks"]["postgres"]["behind_bytes"].as_u64() >= Some(200),
        "{v}"
    );
    let reason = v["sinks"]["postgres"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("PG_DSN"), "{v}");
    assert!(v["journal"]["bytes"].as_u64() >= Some(200), "{v}");
    assert_eq!(get(p.addr, "/readyz?strict=1").status, 503);
    assert_eq!(p.stop(), 0);
}
