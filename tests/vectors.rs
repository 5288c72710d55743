//! The published tg1 vectors come from an independent implementation: the
//! stdlib-only Python generator reproduces `docs/tg1-vectors.json` byte for
//! byte (the Rust side is checked against the same file by the unit test
//! `track::token::tests::published_vectors`), and the running binary
//! accepts a request signed the way the vectors describe.

mod common;
use common::*;

#[test]
fn python_generator_reproduces_the_committed_vectors() {
    let dir = TempDir::new("vectors");
    let out = dir.path().join("v.json");
    let root = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new("python3")
        .arg(format!("{root}/docs/tg1-vectors.py"))
        .arg(&out)
        .status()
        .expect("python3 is needed to check the vectors");
    assert!(status.success());
    let fresh = std::fs::read(&out).expect("generated");
    let committed = std::fs::read(format!("{root}/docs/tg1-vectors.json")).expect("committed");
    assert!(
        fresh == committed,
        "docs/tg1-vectors.json differs from what docs/tg1-vectors.py generates"
    );
}

/// The server's tokens and signature checks agree with the Python
/// implementation: Python recomputes the key of a token the binary minted,
/// and a body signed by Python is accepted.
#[test]
fn running_binary_agrees_with_the_python_implementation() {
    let p = Proc::start(&[("FORWARD_DESTINATION", "http://127.0.0.1:9")]);
    let r = get(p.addr, "/hmac/public-key");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let token = v["token"].as_str().expect("token").to_string();
    let body = r#"{"type":"pageview","url":"https://example.com/é"}"#;
    let script = r#"
import base64, hashlib, hmac, sys
secret, token, ua, body = sys.argv[1:5]
f = token.split(".")
ipb = hashlib.sha256(b"127.0.0.0/24").hexdigest()[:8]
uah = hashlib.sha256(ua.encode()).hexdigest()[:16]
msg = f"tg1.{f[1]}.{f[2]}.{f[3]}.{ipb}.{uah}".encode()
key = base64.urlsafe_b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).rstrip(b"=").decode()
assert f[4] == ipb, ("ipb", f[4], ipb)
assert f[5] == key, ("key", f[5], key)
print(".".join(f[:5]) + "." + hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, SECRET, &token, UA, body])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let mut raw = format!(
        "POST /collect HTTP/1.1\r\nHost: t\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body.as_bytes());
    let r = http(p.addr, &raw);
    assert_eq!(r.status, 202, "{}", r.text());
}
