//! The committed tracker bundle (`js/dist/tracker.min.js`, embedded into
//! the binary) must be exactly what a fresh `npm ci && npm run build` of
//! `js/` produces: the bundle can never drift from its source (GoTrack's
//! did). The build runs in a temporary copy, so the checkout is untouched.
//!
//! Without npm the test fails if `CI` or `TRACKGATE_REQUIRE_BROWSER` is set,
//! else it says loudly that it skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn committed_bundle_is_a_fresh_build_byte_for_byte() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    let committed = std::fs::read(js.join("dist/tracker.min.js")).expect("js/dist/tracker.min.js");
    assert_eq!(
        committed,
        trackgate::inject::snippet::TRACKER_JS.as_bytes(),
        "the binary embeds js/dist/tracker.min.js"
    );
    let has_npm = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_npm {
        let msg = "bundle reproducibility: npm is missing (apt-get install -y nodejs npm)";
        if std::env::var_os("CI").is_some()
            || std::env::var_os("TRACKGATE_REQUIRE_BROWSER").is_some()
        {
            panic!("{msg}");
        }
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
        return;
    }
    let tmp: PathBuf =
        std::env::temp_dir().join(format!("trackgate-js-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temp dir");
    for f in ["package.json", "package-lock.json", "tsconfig.json"] {
        std::fs::copy(js.join(f), tmp.join(f)).expect(f);
    }
    copy_dir(&js.join("src"), &tmp.join("src"));
    let run = |args: &[&str]| {
        let out = Command::new("npm")
            .args(args)
            .current_dir(&tmp)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .output()
            .expect("npm");
        assert!(
            out.status.success(),
            "npm {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["ci", "--no-audit", "--no-fund"]);
    run(&["run", "build"]);
    let fresh = std::fs::read(tmp.join("dist/tracker.min.js")).expect("fresh bundle");
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        fresh == committed,
        "js/dist/tracker.min.js is not what `npm ci && npm run build` in js/ produces \
         ({} bytes committed, {} fresh): run `cd js && npm run build` and commit the result",
        committed.len(),
        fresh.len()
    );
}
