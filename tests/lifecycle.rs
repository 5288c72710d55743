//! End-to-end: the commands, configuration errors, TEST_MODE, signals
//! (graceful shutdown, SIGHUP reopen), log rotation and the demo.

mod common;
use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn help_and_version() {
    let (code, out, _) = run_once(&["--help"], &[]);
    assert_eq!(code, 0);
    for var in [
        "SERVER_ADDR",
        "FORWARD_DESTINATION",
        "HMAC_SECRET",
        "LOG_ROTATE_MB",
        "IP_MODE",
        "CORES",
    ] {
        assert!(out.contains(var), "--help lacks {var}");
    }
    assert!(out.contains("[:19890]"));
    let (code, out, _) = run_once(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("trackgate "));
}

#[test]
fn configuration_errors_exit_2_with_one_line() {
    for (env, var) in [
        (vec![("HMAC_SECRET", SECRET)], "FORWARD_DESTINATION"),
        (
            vec![("FORWARD_DESTINATION", "http://127.0.0.1:1")],
            "HMAC_SECRET",
        ),
        (
            vec![
                ("FORWARD_DESTINATION", "http://127.0.0.1:1"),
                ("HMAC_SECRET", "short"),
            ],
            "HMAC_SECRET",
        ),
        (
            vec![
                ("FORWARD_DESTINATION", "http://127.0.0.1:1"),
                ("HMAC_SECRET", SECRET),
                ("LOG_FSYNC", "weekly"),
            ],
            "LOG_FSYNC",
        ),
        (
            vec![
                ("FORWARD_DESTINATION", "https://127.0.0.1:1"),
                ("HMAC_SECRET", SECRET),
            ],
            "FORWARD_DESTINATION",
        ),
        (
            vec![
                ("FORWARD_DESTINATION", "http://127.0.0.1:1"),
                ("HMAC_SECRET", SECRET),
                ("ENABLE_HTTPS", "true"),
            ],
            "ENABLE_HTTPS",
        ),
    ] {
        let (code, _, err) = run_once(&[], &env);
        assert_eq!(code, 2, "{env:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(var), "{err}");
        assert!(!err.contains("short\""), "the secret was echoed: {err}");
    }
}

#[test]
fn test_mode_emits_five_sample_events() {
    let p = Proc::start(&[("TEST_MODE", "true")]);
    let ev = p.wait_events(5);
    assert_eq!(ev.len(), 5);
    assert!(ev.iter().all(|e| e["source"] == "test"));
    let types: Vec<&str> = ev
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "pageview",
            "click",
            "conversion",
            "pageview",
            "custom_event"
        ]
    );
    assert_eq!(ev[0]["payload"]["utm"]["source"], "google");
    assert_eq!(ev[3]["payload"]["click_ids"]["fbclid"], "IwAR0test");
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let origin = Origin::start(|_req, s| {
        std::thread::sleep(Duration::from_millis(800));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
        true
    });
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let addr = p.addr;
    // An event queued just before the signal must be in the file after exit.
    assert_eq!(get(addr, "/px.gif?e=last").status, 200);
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    let code = p.stop();
    assert_eq!(code, 0);
    let r = slow.join().expect("thread");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "done");
}

#[test]
fn shutdown_flushes_events_and_exits_zero() {
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("FLUSH_INTERVAL_MS", "60000"),
        ("BATCH_SIZE", "1000"),
    ]);
    for i in 0..20 {
        assert_eq!(get(p.addr, &format!("/px.gif?e=n{i}")).status, 200);
    }
    let path = p.log_path.clone();
    let keep = TempDir::new("keep");
    let copy = keep.path().join("events.ndjson");
    // Stop, then read the file before the temp dir goes.
    let mut p = p;
    p.signal(libc::SIGTERM);
    let mut child = p.child.take().expect("child");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(0));
    std::fs::copy(&path, &copy).expect("copy");
    assert_eq!(read_events(&copy).len(), 20);
}

#[test]
fn rotation_keeps_every_line_whole() {
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("LOG_ROTATE_MB", "1"),
        ("LOG_BACKUPS", "3"),
    ]);
    let mut c = Client::connect(p.addr);
    let pad = "x".repeat(400);
    let n = 4000;
    for i in 0..n {
        let r = c.request(
            format!("GET /px.gif?e=r{i}&pad={pad} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut total;
    loop {
        total = 0;
        for name in [
            "events.ndjson",
            "events.ndjson.1",
            "events.ndjson.2",
            "events.ndjson.3",
        ] {
            total += read_events(&p.dir.path().join(name)).len();
        }
        if total >= n || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(p.dir.path().join("events.ndjson.1").exists());
    assert!(!p.dir.path().join("events.ndjson.4").exists());
    assert_eq!(total, n, "every event in exactly one file");
    for name in ["events.ndjson.1", "events.ndjson.2"] {
        let len = std::fs::metadata(p.dir.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len <= 1024 * 1024, "{name} is {len} bytes");
    }
}

#[test]
fn sighup_reopens_the_event_file() {
    let p = Proc::start(&[("FORWARD_DESTINATION", "http://127.0.0.1:9")]);
    get(p.addr, "/px.gif?e=before");
    assert_eq!(p.wait_events(1).len(), 1);
    let moved = p.dir.path().join("events.ndjson.moved");
    std::fs::rename(&p.log_path, &moved).expect("rename");
    p.signal(libc::SIGHUP);
    // The sink reopens the path at once, creating a fresh file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.log_path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.log_path.exists(), "SIGHUP did not reopen the event file");
    get(p.addr, "/px.gif?e=after");
    let ev = p.wait_events(1);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "after");
    assert_eq!(read_events(&moved)[0]["type"], "before");
}

#[test]
fn healthcheck_command() {
    let p = Proc::start(&[("FORWARD_DESTINATION", "http://127.0.0.1:9")]);
    let addr = p.addr.to_string();
    let (code, _, err) = run_once(&["healthcheck", "--addr", &addr], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run_once(
        &[
            "-healthcheck",
            "-health-host",
            "127.0.0.1",
            "-health-port",
            &p.addr.port().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0);
    drop(p);
    let (code, _, _) = run_once(&["healthcheck", "--addr", &addr], &[]);
    assert_eq!(code, 1);
}

#[test]
fn demo_serves_the_site_and_records_events() {
    let p = Proc::start_with(&["demo"], &[("HMAC_SECRET", "")]);
    let r = get(p.addr, "/");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    // The demo site carries no tracker: the one on the page is injected.
    assert_eq!(r.text().matches("id=\"trackgate-config\"").count(), 1);
    let r = http(
        p.addr,
        b"GET /gzip HTTP/1.1\r\nHost: d\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(get(p.addr, "/api/products.json").status, 200);
    assert_eq!(
        get(p.addr, "/px.gif?e=pageview&url=http%3A%2F%2Flocalhost%2F").status,
        200
    );
    // The pixel's event, and a page_served event for each injected page.
    let ev = p.wait_events(3);
    assert_eq!(ev.iter().filter(|e| e["source"] == "pixel").count(), 1);
    assert_eq!(
        ev.iter().filter(|e| e["type"] == "page_served").count(),
        ev.len() - 1,
        "{ev:?}"
    );
    // The generated secret is mentioned, never printed.
    assert!(p.logs().contains("HMAC_SECRET"));
}

#[test]
fn a_second_process_binds_the_same_port_and_takes_over() {
    let origin = Origin::fixed(200, "text/plain", b"hi".to_vec());
    let url = origin.url();
    // The old process picks the port itself and holds it from then on: a
    // port probed and released first could be taken meanwhile by another
    // test's SO_REUSEPORT listener, which the two would then share.
    let old = Proc::start(&[("FORWARD_DESTINATION", &url)]);
    let addr = old.addr.to_string();
    let new = Proc::start(&[("FORWARD_DESTINATION", &url), ("SERVER_ADDR", &addr)]);
    assert_eq!(old.addr, new.addr);
    for _ in 0..20 {
        assert_eq!(get(new.addr, "/").status, 200);
    }
    assert_eq!(old.stop(), 0);
    for _ in 0..20 {
        assert_eq!(get(new.addr, "/").status, 200);
    }
}

#[test]
fn epoll_fallback_when_io_uring_is_unavailable() {
    // monoio's switch to force its legacy (epoll) driver stands in for a
    // seccomp profile that blocks io_uring.
    let origin = Origin::fixed(200, "text/plain", b"hi".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("MONOIO_FORCE_LEGACY_DRIVER", "1"),
    ]);
    // The core logs its driver right after reporting to the main thread,
    // so the line may follow "listening".
    assert!(
        p.wait_log(
            &["core started", "\"driver\":\"epoll\""],
            Duration::from_secs(5)
        )
        .is_some(),
        "{}",
        p.logs()
    );
    assert_eq!(get(p.addr, "/").text(), "hi");
    assert_eq!(get(p.addr, "/px.gif").status, 200);
    assert_eq!(p.wait_events(1).len(), 1);
}

#[test]
fn destination_by_host_name() {
    let origin = Origin::fixed(200, "text/plain", b"named".to_vec());
    let p = Proc::start(&[(
        "FORWARD_DESTINATION",
        &format!("http://localhost:{}", origin.addr.port()),
    )]);
    assert_eq!(get(p.addr, "/").text(), "named");
    let (code, _, err) = run_once(
        &[],
        &[
            ("FORWARD_DESTINATION", "http://no-such-host.invalid:80"),
            ("HMAC_SECRET", SECRET),
            ("SERVER_ADDR", "127.0.0.1:0"),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("FORWARD_DESTINATION"), "{err}");
}
