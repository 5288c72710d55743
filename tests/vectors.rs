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

// ---------------------------------------------------------------------------
// The llhttp conformance vectors (../shared/vectors, README there) through
// the running binary: the transducer invariants of issue 7.
// ---------------------------------------------------------------------------

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trackgate::http::chunked::ChunkedDecoder;
use trackgate::http::head::{parse_request, Framing};

/// The vectors of `kind` (`request` or `response`), or `None` (and a line
/// saying so) when `TRACKGATE_VECTORS` is not set.
fn llhttp_vectors(kind: &str) -> Option<Vec<serde_json::Value>> {
    let Some(dir) = std::env::var_os("TRACKGATE_VECTORS").filter(|d| !d.is_empty()) else {
        println!("llhttp vectors skipped: TRACKGATE_VECTORS is not set (make test sets it)");
        return None;
    };
    let path = std::path::Path::new(&dir).join("llhttp.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .filter(|v| v["meta"]["type"] == kind)
            .collect(),
    )
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn llhttp_error_code(v: &serde_json::Value) -> Option<u32> {
    let line = v["error_line"].as_str()?;
    let at = line.find("error code=")? + "error code=".len();
    line[at..].split(' ').next()?.parse().ok()
}

/// Adds `Host: example.com` after the request line of the first message in
/// `msg` when its head has none.
fn with_host(msg: &[u8]) -> Vec<u8> {
    let start = msg
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(msg.len());
    let head_end = find(&msg[start..], b"\r\n\r\n").map_or(msg.len(), |p| start + p + 2);
    let head = msg[start..head_end].to_ascii_lowercase();
    if find(&head, b"\r\nhost:").is_some() {
        return msg.to_vec();
    }
    let mut out;
    match find(&msg[start..], b"\r\n") {
        Some(p) => {
            let at = start + p + 2;
            out = msg[..at].to_vec();
            out.extend_from_slice(b"Host: example.com\r\n");
            out.extend_from_slice(&msg[at..]);
        }
        None => {
            out = msg.to_vec();
            out.extend_from_slice(b"\r\nHost: example.com\r\n");
        }
    }
    out
}

/// One request as the client sent it.
#[derive(Debug)]
struct Sent {
    method: String,
    body: Vec<u8>,
    /// The whole body was sent (the vector may end mid-body).
    complete: bool,
}

/// Why trackgate's parser refuses a vector.
enum Refused {
    /// The first head: nothing may reach the upstream.
    Head(String),
    /// A chunked body, after a valid head: the head may have been streamed
    /// upstream, the request must never complete there.
    Body(String),
}

/// Splits a request vector into the requests a client sends (Host added
/// to each, an unfinished head finished). `Err` when trackgate's parser
/// refuses the first head or a body's framing.
fn client_stream(raw: &[u8]) -> Result<(Vec<u8>, Vec<Sent>), Refused> {
    let mut rest = raw.to_vec();
    let mut out = Vec::new();
    let mut sent = Vec::new();
    loop {
        if rest.iter().all(|&b| b == b'\r' || b == b'\n') {
            return Ok((out, sent));
        }
        let mut bytes = with_host(&rest);
        let mut r = parse_request(&bytes);
        if r == Ok(None) {
            let tail: &[u8] = if bytes.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\r\n\r\n"
            };
            bytes.extend_from_slice(tail);
            r = parse_request(&bytes);
        }
        let head = match r {
            Ok(Some(h)) => h,
            other if sent.is_empty() => return Err(Refused::Head(format!("{other:?}"))),
            // A later request is refused: the client sends it anyway.
            _ => {
                out.extend_from_slice(&bytes);
                return Ok((out, sent));
            }
        };
        let method = String::from_utf8_lossy(head.method_bytes()).into_owned();
        let after = &bytes[head.head_len()..];
        let (used, body, complete) = match head.framing() {
            Framing::None | Framing::UntilClose => (0, Vec::new(), true),
            Framing::Length(n) => {
                let n = (n as usize).min(after.len());
                (n, after[..n].to_vec(), n as u64 == head_framing_len(&head))
            }
            Framing::Chunked => {
                let mut d = ChunkedDecoder::new();
                let mut body = Vec::new();
                let n = d
                    .decode(after, &mut body)
                    .map_err(|e| Refused::Body(e.to_string()))?;
                (n, body, d.is_done())
            }
        };
        out.extend_from_slice(&bytes[..head.head_len() + used]);
        let keep = head.keep_alive();
        sent.push(Sent {
            method,
            body,
            complete,
        });
        if !complete || !keep {
            return Ok((out, sent));
        }
        rest = bytes[head.head_len() + used..].to_vec();
    }
}

fn head_framing_len(head: &trackgate::http::head::RequestHead) -> u64 {
    match head.framing() {
        Framing::Length(n) => n,
        _ => 0,
    }
}

/// A request as the recording upstream received it.
#[derive(Debug, Clone)]
struct Got {
    head: String,
    body: Vec<u8>,
    complete: bool,
    /// Broken framing rules: each is a failure.
    problems: Vec<String>,
    /// The upstream is done with it (the body ended or the connection did).
    finished: bool,
}

/// An upstream written for these tests: strict about what it receives,
/// it records every request and answers each `200`, `Content-Length: 0`.
struct Recorder {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = Arc::clone(&got);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let g = Arc::clone(&g2);
                std::thread::spawn(move || record_connection(s, g));
            }
        });
        Recorder { addr, got }
    }
    /// What arrived for the last vector, once every request the upstream
    /// has begun is finished (its body ended or the proxy closed) and
    /// nothing new arrived for 150 ms; at most 5 s.
    fn take(&self) -> Vec<Got> {
        let t0 = std::time::Instant::now();
        let mut last = (usize::MAX, std::time::Instant::now());
        loop {
            {
                let g = self.got.lock().expect("lock");
                let settled = g.iter().all(|x| x.finished);
                if g.len() != last.0 {
                    last = (g.len(), std::time::Instant::now());
                } else if settled && last.1.elapsed() > Duration::from_millis(150)
                    || t0.elapsed() > Duration::from_secs(5)
                {
                    drop(g);
                    return std::mem::take(&mut *self.got.lock().expect("lock"));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 16384];
    match s.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// Checks one forwarded head against the re-framing rules; returns the
/// problems and the body framing (`Some(len)`, or `None` for chunked).
fn check_head(head: &[u8]) -> (Vec<String>, Option<usize>) {
    let mut p = Vec::new();
    let lines: Vec<&[u8]> = head[..head.len() - 4].split(|&b| b == b'\n').collect();
    for l in &lines[..lines.len() - 1] {
        if !l.ends_with(b"\r") {
            p.push("a line not ending in CRLF".to_string());
        }
    }
    let text = String::from_utf8_lossy(head).into_owned();
    if head.contains(&0) {
        p.push("NUL".into());
    }
    let (mut hosts, mut cls, mut tes, mut len, mut chunked) = (0, 0, 0, 0usize, false);
    let mut upgrade = false;
    for l in text.trim_end_matches("\r\n\r\n").split("\r\n").skip(1) {
        if l.contains('\r') || l.contains('\n') {
            p.push(format!("bare CR or LF in {l:?}"));
        }
        if l.starts_with(' ') || l.starts_with('\t') {
            p.push(format!("obs-fold: {l:?}"));
            continue;
        }
        let Some((n, v)) = l.split_once(':') else {
            p.push(format!("no colon: {l:?}"));
            continue;
        };
        if n != n.trim() || n.is_empty() {
            p.push(format!("whitespace around a field name: {l:?}"));
        }
        let v = v.trim();
        match n.to_ascii_lowercase().as_str() {
            "host" => hosts += 1,
            "content-length" => {
                cls += 1;
                match v.parse() {
                    Ok(n) => len = n,
                    Err(_) => p.push(format!("Content-Length {v:?}")),
                }
            }
            "transfer-encoding" => {
                tes += 1;
                chunked = v == "chunked";
                if !chunked {
                    p.push(format!("Transfer-Encoding {v:?}"));
                }
            }
            "upgrade" => upgrade = true,
            "keep-alive" | "te" | "trailer" | "proxy-connection" => {
                p.push(format!("hop-by-hop header forwarded: {l:?}"))
            }
            _ => {}
        }
    }
    for l in text.split("\r\n").skip(1) {
        if let Some((n, v)) = l.split_once(':') {
            // trackgate's own connection header: `upgrade` for an upgrade
            // request, `close` for one DESYNC_MODE=defensive forwards.
            if n.eq_ignore_ascii_case("connection")
                && !(upgrade && v.trim().eq_ignore_ascii_case("upgrade"))
                && !v.trim().eq_ignore_ascii_case("close")
            {
                p.push(format!("hop-by-hop header forwarded: {l:?}"));
            }
        }
    }
    if hosts != 1 {
        p.push(format!("{hosts} Host fields"));
    }
    if cls + tes > 1 {
        p.push(format!(
            "{cls} Content-Length and {tes} Transfer-Encoding fields"
        ));
    }
    (p, if chunked { None } else { Some(len) })
}

fn record_connection(mut s: TcpStream, got: Arc<Mutex<Vec<Got>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut s, &mut buf) {
                if !buf.is_empty() {
                    got.lock().expect("lock").push(Got {
                        head: String::from_utf8_lossy(&buf).into_owned(),
                        body: Vec::new(),
                        complete: false,
                        problems: Vec::new(),
                        finished: true,
                    });
                }
                return;
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let (mut problems, framing) = check_head(&head);
        let at = {
            let mut g = got.lock().expect("lock");
            g.push(Got {
                head: String::from_utf8_lossy(&head).into_owned(),
                body: Vec::new(),
                complete: false,
                problems: Vec::new(),
                finished: false,
            });
            g.len() - 1
        };
        let mut body = Vec::new();
        let mut complete = true;
        match framing {
            Some(n) => {
                while buf.len() < n {
                    if !read_more(&mut s, &mut buf) {
                        complete = false;
                        break;
                    }
                }
                body = buf.drain(..n.min(buf.len())).collect();
            }
            None => {
                // Strict chunked: lowercase hex size, no extensions, CRLF.
                'chunks: loop {
                    let i = loop {
                        if let Some(i) = find(&buf, b"\r\n") {
                            break i;
                        }
                        if !read_more(&mut s, &mut buf) {
                            complete = false;
                            break 'chunks;
                        }
                    };
                    let line = String::from_utf8_lossy(&buf[..i]).into_owned();
                    let Ok(size) = usize::from_str_radix(&line, 16) else {
                        problems.push(format!("chunk size line {line:?}"));
                        complete = false;
                        break;
                    };
                    buf.drain(..i + 2);
                    while buf.len() < size + 2 {
                        if !read_more(&mut s, &mut buf) {
                            complete = false;
                            break 'chunks;
                        }
                    }
                    body.extend_from_slice(&buf[..size]);
                    if &buf[size..size + 2] != b"\r\n" {
                        problems.push("chunk data not followed by CRLF".into());
                    }
                    buf.drain(..size + 2);
                    if size == 0 {
                        break;
                    }
                }
            }
        }
        let done = complete;
        got.lock().expect("lock")[at] = Got {
            head: String::from_utf8_lossy(&head).into_owned(),
            body,
            complete,
            problems,
            finished: true,
        };
        if !done
            || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .is_err()
        {
            return;
        }
    }
}

/// Each request vector through the binary. Must-reject (llhttp refuses it,
/// or trackgate's parser does on purpose): an error status, the connection
/// closed, and no complete request upstream (a request whose head was valid
/// and whose chunked body turns out broken may have had its head streamed;
/// it never completes there). Valid: the upstream receives exactly the
/// client's requests, each re-framed unambiguously, with the same bodies.
#[test]
fn llhttp_request_vectors_through_the_binary() {
    let Some(vectors) = llhttp_vectors("request") else {
        return;
    };
    let up = Recorder::start();
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &format!("http://{}", up.addr)),
        ("IDLE_TIMEOUT_S", "2"),
    ]);
    let (mut valid, mut rejected, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for v in &vectors {
        let title = v["title"].as_str().unwrap_or_default().to_string();
        let expect_error = v["expect_error"].as_bool().unwrap_or(false);
        if expect_error && matches!(llhttp_error_code(v), Some(5 | 22 | 23)) {
            skipped += 1;
            continue;
        }
        let raw = unhex(v["raw_hex"].as_str().expect("raw_hex"));
        let split = client_stream(&raw);
        let mut c = Client::connect(p.addr);
        match split {
            Ok((bytes, sent)) => {
                let _ = c.stream.write_all(&bytes);
                let answers = sent.iter().filter(|s| s.complete).count();
                let mut statuses = Vec::new();
                for s in sent.iter().filter(|s| s.complete) {
                    match c.read_response(&s.method) {
                        Some(r) => statuses.push(r.status),
                        None => break,
                    }
                }
                let _ = c.stream.shutdown(Shutdown::Write);
                let closed = c.wait_closed(Duration::from_secs(5));
                let got = up.take();
                // llhttp refuses these methods; any token method is valid
                // HTTP and goes to the origin (see head.rs's vector test).
                const ACCEPTED: [&str; 2] = ["HTTP protocol and ANNOUNCE method", "Invalid method"];
                let bad_body = expect_error && !ACCEPTED.contains(&title.as_str());
                if bad_body {
                    // Head accepted, body broken (llhttp agrees it is an error).
                    let ok = statuses.iter().all(|&s| s >= 400)
                        && closed.is_ok()
                        && got.iter().all(|g| !g.complete);
                    if ok {
                        rejected += 1;
                    } else {
                        failures.push(format!(
                            "{title}: must-reject with a valid head: statuses {statuses:?}, closed {}, upstream {got:?}",
                            closed.is_ok()
                        ));
                    }
                    continue;
                }
                let mut why = Vec::new();
                if statuses.len() != answers || statuses.iter().any(|&s| s != 200) {
                    why.push(format!("client got {statuses:?} for {answers} requests"));
                }
                if got.len() != sent.len() {
                    why.push(format!(
                        "upstream saw {} requests, client sent {}",
                        got.len(),
                        sent.len()
                    ));
                }
                for (i, (s, g)) in sent.iter().zip(&got).enumerate() {
                    if !g.head.starts_with(&format!("{} ", s.method)) {
                        why.push(format!("request {i}: upstream head {:?}", g.head));
                    }
                    if g.body != s.body {
                        why.push(format!("request {i}: body {:?} != {:?}", g.body, s.body));
                    }
                    if g.complete != s.complete {
                        why.push(format!(
                            "request {i}: complete {} != {}",
                            g.complete, s.complete
                        ));
                    }
                    for pr in &g.problems {
                        why.push(format!("request {i}: {pr}"));
                    }
                }
                if why.is_empty() {
                    valid += 1;
                } else {
                    failures.push(format!("{title}: {}", why.join("; ")));
                }
            }
            Err(e) => {
                let head_refused = matches!(e, Refused::Head(_));
                let mut raw = with_host(&raw);
                if find(&raw, b"\r\n\r\n").is_none() {
                    raw.extend_from_slice(b"\r\n\r\n");
                }
                let _ = c.stream.write_all(&raw);
                let r = c.read_response("GET");
                let closed = c.wait_closed(Duration::from_secs(5));
                let got = up.take();
                let status = r.as_ref().map(|r| r.status);
                let upstream_ok = if head_refused {
                    got.is_empty()
                } else {
                    got.iter().all(|g| !g.complete)
                };
                if status.is_some_and(|s| s >= 400) && closed.is_ok() && upstream_ok {
                    rejected += 1;
                } else {
                    failures.push(format!(
                        "{title}: refused by the parser ({}) but: status {status:?}, closed {}, upstream saw {got:?}",
                        match &e {
                            Refused::Head(w) => format!("head: {w}"),
                            Refused::Body(w) => format!("body: {w}"),
                        },
                        closed.is_ok()
                    ));
                }
            }
        }
    }
    println!(
        "llhttp request vectors through the binary: {valid} forwarded as sent, {rejected} refused, {skipped} skipped (error codes 5/22/23)"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(valid > 50 && rejected > 50, "too few vectors ran");
}

/// Whether `raw` holds a whole response to a GET (interim ones first), by
/// trackgate's parser: a vector that stops mid-body must be cut off.
fn response_is_complete(raw: &[u8]) -> bool {
    use trackgate::http::head::{parse_response, Method};
    let mut rest = raw;
    loop {
        let Ok(Some(h)) = parse_response(rest, Method::Get) else {
            return true; // refused: judged as a bad vector
        };
        let body = &rest[h.head_len()..];
        if (100..200).contains(&h.status()) {
            rest = body;
            continue;
        }
        return match h.framing() {
            Framing::Length(n) => body.len() as u64 >= n,
            Framing::Chunked => {
                let mut d = ChunkedDecoder::new();
                d.decode(body, &mut Vec::new()).is_ok() && d.is_done()
            }
            Framing::None | Framing::UntilClose => true,
        };
    }
}

/// Each response vector served by a scripted upstream to a GET. A valid one
/// reaches the client with its status; an invalid one is a 502 (or, when
/// its head was fine and its body is not, a response the proxy cuts off by
/// closing), and the upstream connection is never used again.
#[test]
fn llhttp_response_vectors_through_the_binary() {
    let Some(vectors) = llhttp_vectors("response") else {
        return;
    };
    let current: Arc<Mutex<(Vec<u8>, bool)>> = Arc::new(Mutex::new((Vec::new(), false)));
    let reused = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    {
        let (current, reused, conns) = (
            Arc::clone(&current),
            Arc::clone(&reused),
            Arc::clone(&conns),
        );
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let (current, reused) = (Arc::clone(&current), Arc::clone(&reused));
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut served_bad = false;
                    loop {
                        while find(&buf, b"\r\n\r\n").is_none() {
                            if !read_more(&mut s, &mut buf) {
                                return;
                            }
                        }
                        if served_bad {
                            reused.store(true, Ordering::SeqCst);
                        }
                        let end = find(&buf, b"\r\n\r\n").expect("end") + 4;
                        buf.drain(..end);
                        let (bytes, bad) = current.lock().expect("lock").clone();
                        if s.write_all(&bytes).is_err() {
                            return;
                        }
                        if !bad {
                            // The end of a close-delimited body.
                            let _ = s.shutdown(Shutdown::Both);
                            return;
                        }
                        served_bad = true;
                    }
                });
            }
        });
    }
    let p = Proc::start(&[("FORWARD_DESTINATION", &format!("http://{addr}"))]);
    let (mut ok, mut refused) = (0, 0);
    let mut failures = Vec::new();
    for v in &vectors {
        let title = v["title"].as_str().unwrap_or_default().to_string();
        let expect_error = v["expect_error"].as_bool().unwrap_or(false);
        if expect_error && matches!(llhttp_error_code(v), Some(5 | 22)) {
            continue;
        }
        let mut raw = unhex(v["raw_hex"].as_str().expect("raw_hex"));
        // llhttp's vectors are streams that may stop before the blank line
        // or the last chunk's CRLF: finish them as its test runner does.
        match find(&raw, b"\r\n\r\n") {
            None if raw.ends_with(b"\r\n") => raw.extend_from_slice(b"\r\n"),
            None => raw.extend_from_slice(b"\r\n\r\n"),
            Some(end) => {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                if head.contains("transfer-encoding: chunked") && raw.ends_with(b"\r\n0\r\n") {
                    raw.extend_from_slice(b"\r\n");
                }
            }
        }
        // Refused on purpose: not HTTP/1.x, or a transfer coding other than
        // a final `chunked` (llhttp reads those until close; we answer 502,
        // see head.rs and forward.rs).
        let start = raw
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(0);
        let not_http1 = !raw[start..].starts_with(b"HTTP/1.");
        let lower = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let other_coding = lower.contains("transfer-encoding: chunked, deflate")
            || lower.contains("transfer-encoding: identity")
            || lower.contains("transfer-encoding: chunkedchunked");
        let bad = expect_error || not_http1 || other_coding;
        let complete = response_is_complete(&raw);
        *current.lock().expect("lock") = (raw.clone(), bad);
        reused.store(false, Ordering::SeqCst);
        let mut c = Client::connect(p.addr);
        c.send(b"GET /v HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
        let r = c.read_response("GET");
        // The final status: the last status line the vector holds.
        let status_line_code: Option<u16> = lower
            .match_indices("http/1.")
            .filter_map(|(i, _)| lower.get(i + 9..i + 12)?.parse().ok())
            .find(|c| !(100..200).contains(c));
        if bad || !complete {
            // A second request: it must not go to the connection that
            // served the broken response.
            *current.lock().expect("lock") = (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                false,
            );
            let second = get(p.addr, "/after");
            let cut = r.as_ref().is_none_or(|r| r.status == 502);
            if cut && second.status == 200 && !reused.load(Ordering::SeqCst) {
                refused += 1;
            } else {
                failures.push(format!(
                    "{title}: got {:?}, next request {} (upstream connection reused: {})",
                    r.map(|r| r.status),
                    second.status,
                    reused.load(Ordering::SeqCst)
                ));
            }
        } else {
            match (r, status_line_code) {
                (Some(r), Some(code)) if r.status == code => ok += 1,
                (r, _) => failures.push(format!("{title}: got {:?}", r.map(|r| r.status))),
            }
        }
    }
    println!("llhttp response vectors through the binary: {ok} relayed, {refused} refused with 502 or cut off (upstream connections opened: {})", conns.load(Ordering::SeqCst));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
