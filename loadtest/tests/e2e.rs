//! End to end: the loadtest binary against the real trackgate binary and
//! the loadtest's own origin, about a second per run: a closed-loop `mix`
//! (every scenario's requests, every answer checked) and an open-loop
//! pixel run whose request count the schedule fixes. Both must see zero
//! errors. The trackgate binary is the workspace's (`cargo test
//! --workspace` builds it); the test says how to build it when missing.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "loadtest-e2e-secret-0123456789";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn trackgate_bin() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    let bin = loadtest.with_file_name("trackgate");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin trackgate` (or `cargo test --workspace`) first",
        bin.display()
    );
    bin
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn loadtest(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().expect("output");
    serde_json::from_str(last).expect("the last line is JSON")
}

#[test]
fn loadtest_against_trackgate_has_no_errors() {
    let dir = std::env::temp_dir().join(format!("loadtest-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (origin_port, tg_port) = (free_port(), free_port());
    let _origin = Kill(
        Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(["origin", "--addr", &format!("127.0.0.1:{origin_port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("start the origin"),
    );
    let mut tg = Command::new(trackgate_bin())
        .env_clear()
        .env("SERVER_ADDR", format!("127.0.0.1:{tg_port}"))
        .env(
            "FORWARD_DESTINATION",
            format!("http://127.0.0.1:{origin_port}"),
        )
        .env("HMAC_SECRET", SECRET)
        .env("CORES", "1")
        .env("LOG_PATH", dir.join("events.ndjson"))
        .env("DATA_DIR", dir.join("data"))
        .current_dir(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trackgate");
    let stderr = tg.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let tg = Kill(tg);
    wait_listening(origin_port);
    wait_listening(tg_port);
    let url = format!("http://127.0.0.1:{tg_port}");

    let mix = loadtest(&[
        "--url",
        &url,
        "--scenario",
        "mix",
        "--hmac-secret",
        SECRET,
        "--duration",
        "1",
        "--warmup",
        "200ms",
        "--connections",
        "4",
        "--json",
    ]);
    assert_eq!(mix["scenario"], "mix");
    assert_eq!(mix["mode"], "closed");
    assert_eq!(mix["errors"], 0, "{mix}");
    assert!(mix["requests"].as_u64().unwrap_or(0) >= 100, "{mix}");

    // Open loop: 300/s for 1 s is exactly 300 scheduled requests.
    let open = loadtest(&[
        "--url",
        &url,
        "--scenario",
        "pixel",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--connections",
        "4",
        "--rate",
        "300",
        "--json",
    ]);
    assert_eq!(open["mode"], "open");
    assert_eq!(open["rate"], 300);
    assert_eq!(open["requests"], 300, "{open}");
    assert_eq!(open["errors"], 0, "{open}");
    for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(open[k].as_u64().unwrap_or(0) > 0, "{k}: {open}");
    }

    // The events went through trackgate's pipeline.
    let _ = Command::new("kill")
        .args(["-TERM", &tg.0.id().to_string()])
        .status();
    let lines = log.join().unwrap_or_default();
    drop(tg);
    let events = std::fs::read_to_string(dir.join("events.ndjson")).unwrap_or_default();
    assert!(
        events.lines().count() as u64 >= 300,
        "{} events logged; trackgate said: {lines:?}",
        events.lines().count()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_against_nothing_fails_loudly() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "300ms",
            "--warmup",
            "0",
            "--connections",
            "1",
            "--json",
        ])
        .output()
        .expect("run loadtest");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERRORS"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON last line");
    assert!(v["errors"].as_u64().unwrap_or(0) > 0, "{v}");
}
