//! End-to-end: configuration the unit tests cannot see: settings that only
//! matter once the process runs (cores, sinks, the health check command,
//! events on stdout).

mod common;
use common::*;
use std::time::Duration;

/// The CPUs in this process's affinity mask.
fn cpus_in_mask() -> usize {
    // SAFETY: sched_getaffinity fills the zeroed set we pass; CPU_COUNT
    // only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

/// Environment for a `serve` that is expected to refuse to start: its event
/// file in `dir` (never the working directory).
fn refused_env(dir: &TempDir) -> Vec<(&'static str, String)> {
    vec![
        ("FORWARD_DESTINATION", "http://127.0.0.1:9".into()),
        ("HMAC_SECRET", SECRET.into()),
        ("SERVER_ADDR", "127.0.0.1:0".into()),
        (
            "LOG_PATH",
            dir.path().join("events.ndjson").display().to_string(),
        ),
    ]
}

fn run_refused(dir: &TempDir, extra: &[(&'static str, String)]) -> (Option<i32>, String) {
    let mut env = refused_env(dir);
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, _, err) = run_bounded(&[], &env, Duration::from_secs(10));
    (code, err)
}

#[test]
fn worker_concurrency_is_accepted_with_a_warning() {
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("WORKER_CONCURRENCY", "4"),
    ]);
    assert_eq!(get(p.addr, "/healthz").status, 200);
    let line = p
        .wait_log(
            &["\"level\":\"warn\"", "WORKER_CONCURRENCY"],
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| panic!("no warning: {}", p.logs()));
    assert!(line.contains("CORES"), "{line}");
    // It is ignored: CORES=1 from the harness still holds.
    let listening = p
        .wait_log(&["\"msg\":\"listening\""], Duration::from_secs(1))
        .expect("listening");
    assert!(listening.contains("\"cores\":1"), "{listening}");
}

#[test]
fn more_cores_than_cpus_is_refused() {
    let dir = TempDir::new("cores");
    let n = cpus_in_mask().max(63) + 1;
    let (code, err) = run_refused(&dir, &[("CORES", n.to_string())]);
    eprintln!("CORES={n} on {} CPUs: exit {code:?}: {err}", cpus_in_mask());
    assert!(code.is_some(), "CORES={n} started and ran: {err}");
    assert_ne!(code, Some(0), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains(&format!("CORES=\"{n}\"")))
        .unwrap_or_else(|| panic!("no line names CORES={n}: {err}"));
    assert!(
        line.contains(&format!("at most {}", cpus_in_mask())),
        "{line}"
    );
}

/// README: "A bad value stops start-up with exit code 2 and one line naming
/// the variable", CORES beyond the affinity mask included.
#[test]
fn more_cores_than_cpus_is_a_configuration_error() {
    let dir = TempDir::new("cores2");
    let n = cpus_in_mask().max(63) + 1;
    let (code, err) = run_refused(&dir, &[("CORES", n.to_string())]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("CORES"), "{err}");
}

#[test]
fn outputs_not_in_this_build_are_refused() {
    for (outputs, sink) in [
        ("kafka", "kafka"),
        ("log,postgres", "postgres"),
        ("postgresql", "postgres"),
    ] {
        let dir = TempDir::new("outputs");
        let (code, err) = run_refused(&dir, &[("OUTPUTS", outputs.to_string())]);
        assert_eq!(code, Some(2), "OUTPUTS={outputs}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("OUTPUTS"))
            .unwrap_or_else(|| panic!("OUTPUTS={outputs}: no line names OUTPUTS: {err}"));
        assert!(line.contains(sink), "OUTPUTS={outputs}: {line}");
        assert!(!err.contains("\"listening\""), "{err}");
    }
    // An unknown output is a plain configuration error.
    let dir = TempDir::new("outputs");
    let (code, err) = run_refused(&dir, &[("OUTPUTS", "s3".to_string())]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("OUTPUTS"), "{err}");
}

#[test]
fn healthcheck_uses_track_prefix() {
    // The origin answers 404 everywhere, so only trackgate's own /_t/healthz
    // is healthy.
    let origin = Origin::fixed(404, "text/plain", b"not here".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("TRACK_PREFIX", "/_t"),
    ]);
    let addr = p.addr.to_string();
    let (code, _, err) = run_once(
        &["healthcheck", "--addr", &addr],
        &[("TRACK_PREFIX", "/_t")],
    );
    assert_eq!(code, 0, "{err}");
    // GoTrack's flags with the prefix too.
    let port = p.addr.port().to_string();
    let (code, _, err) = run_once(
        &[
            "-healthcheck",
            "-health-host",
            "127.0.0.1",
            "-health-port",
            &port,
        ],
        &[("TRACK_PREFIX", "/_t")],
    );
    assert_eq!(code, 0, "{err}");
    // Without the prefix it asks the origin's /healthz: unhealthy.
    let (code, _, err) = run_once(&["healthcheck", "--addr", &addr], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(origin
        .requests()
        .iter()
        .any(|s| s.request_line() == "GET /healthz HTTP/1.1"));
}

#[test]
fn log_path_stdout_is_pure_ndjson() {
    let mut p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("LOG_PATH", "stdout"),
        ("LOG_LEVEL", "debug"),
    ]);
    for i in 0..3 {
        assert_eq!(get(p.addr, &format!("/px.gif?e=out{i}")).status, 200);
        if i == 1 {
            // SIGHUP (logrotate) with stdout as the target: nothing to
            // reopen, nothing lost.
            p.signal(libc::SIGHUP);
            assert!(p.wait_log(&["SIGHUP"], Duration::from_secs(5)).is_some());
        }
    }
    let stdout = p.dir.path().join("stdout.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read_events(&stdout).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Shut down (the "stopped" log lines must not reach stdout either).
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    // The copying thread drains the pipe after the exit.
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&stdout).expect("stdout.txt");
    assert!(text.ends_with('\n'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "stdout holds more than the events:\n{text}");
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON {l:?}: {e}"));
        assert_eq!(v["type"], format!("out{i}"), "{l}");
        assert_eq!(v["source"], "pixel");
    }
    assert!(!p.log_path.exists(), "an events file was written too");
    assert!(p.logs().contains("\"msg\":\"stopped\""), "{}", p.logs());
}
