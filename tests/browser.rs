//! The tracker in a real browser: runs `js/test/browser.mjs`, which drives
//! Debian's headless `chromium` with `playwright-core` through this build's
//! trackgate binary and checks the NDJSON it writes (pageview joined to
//! page_served, SPA navigation, custom and click events, engagement on
//! leave, detectors, a strict nonce CSP, expired-token refresh).
//!
//! Needs `/usr/bin/chromium` (or `TRACKGATE_CHROMIUM`), `node` and `npm`.
//! When one is missing the test fails if `CI` or `TRACKGATE_REQUIRE_BROWSER`
//! is set (`make test` sets the latter), else it says loudly that it skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("TRACKGATE_REQUIRE_BROWSER").is_some()
}

/// Fails (when required) or skips loudly; returns false when skipped.
fn need(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    let msg = format!(
        "browser test: {what} is missing; install it with ./.ci/install-deps (Debian: apt-get install -y chromium nodejs npm)"
    );
    if required() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED: {msg}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    false
}

fn runs(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` to completion within `limit`, returning (success, stdout+stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("trackgate-browser-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out_path = dir.join("out.txt");
    let out = std::fs::File::create(&out_path).expect("out file");
    let err = out.try_clone().expect("clone");
    let mut child = cmd
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (ok, text)
}

#[test]
fn tracker_in_headless_chromium() {
    let chromium =
        std::env::var("TRACKGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !need(
        Path::new(&chromium).exists(),
        &format!("chromium ({chromium})"),
    ) || !need(runs("node", "--version"), "node")
        || !need(runs("npm", "--version"), "npm")
    {
        return;
    }
    let js = js_dir();
    if !js.join("node_modules/playwright-core").exists() {
        let (ok, out) = run_bounded(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&js)
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
            Duration::from_secs(600),
        );
        assert!(ok, "npm ci in js/ failed:\n{out}");
    }
    let events_out = std::env::temp_dir().join(format!(
        "trackgate-browser-events-{}.ndjson",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&events_out);
    let (ok, out) = run_bounded(
        Command::new("node")
            .arg(js.join("test/browser.mjs"))
            .current_dir(&js)
            .env("TRACKGATE_BIN", env!("CARGO_BIN_EXE_trackgate"))
            .env("TRACKGATE_CHROMIUM", &chromium)
            .env("TRACKGATE_EVENTS_OUT", &events_out),
        Duration::from_secs(300),
    );
    println!("{out}");
    assert!(ok, "browser checks failed (within 300 s):\n{out}");
    assert!(out.contains("all browser checks passed"), "{out}");

    // Every event the browser caused is a valid event line.
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/event.schema.json")).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let text = std::fs::read_to_string(&events_out).expect("events copied by browser.mjs");
    let _ = std::fs::remove_file(&events_out);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    for e in &events {
        assert!(validator.is_valid(e), "{e}");
    }
    for t in ["page_served", "pageview", "engagement", "signup", "buy"] {
        assert!(events.iter().any(|e| e["type"] == t), "no {t} event");
    }
}
