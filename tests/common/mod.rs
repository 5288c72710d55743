//! Test harness: starts the real `trackgate` binary, origins written in the
//! test, a raw HTTP/1.1 client, and readers for the NDJSON the binary writes.
#![allow(dead_code)]

pub mod sinks;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) trackgate-tests";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory (removed when dropped).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("trackgate-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running trackgate process.
pub struct Proc {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub log_path: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// Runs the binary to completion with `env` and `args` (config errors, help).
pub fn run_once(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trackgate"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run trackgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Proc {
    /// Starts `trackgate [args]` with a private event file, one core, a
    /// random port and fast flushing, plus `env`; waits until it listens.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let dir = TempDir::new("proc");
        let log_path = dir.path().join("events.ndjson");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trackgate"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SERVER_ADDR", "127.0.0.1:0")
            .env("CORES", "1")
            .env("LOG_PATH", &log_path)
            .env("LOG_FORMAT", "json")
            .env("FLUSH_INTERVAL_MS", "10")
            .env("HMAC_SECRET", SECRET)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn trackgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let err = child.stderr.take().expect("stderr");
            let lines = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if line.contains("\"msg\":\"listening\"") {
                        let _ = tx.send(line.clone());
                    }
                    lines.lock().expect("lock").push(line);
                }
            });
        }
        // Keep stdout drained (LOG_PATH=stdout tests read the file copy).
        if let Some(out) = child.stdout.take() {
            let p = dir.path().join("stdout.txt");
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(p).expect("stdout file");
                let mut r = out;
                let _ = std::io::copy(&mut r, &mut f);
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "trackgate did not start: {:?}",
                    stderr.lock().expect("lock")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr: SocketAddr = v["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("socket addr");
        Proc {
            child: Some(child),
            addr,
            dir,
            log_path,
            stderr,
        }
    }

    pub fn start(env: &[(&str, &str)]) -> Proc {
        Proc::start_with(&[], env)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Every event line currently in the event file, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.log_path)
    }

    /// Waits until at least `n` events are in the file.
    pub fn wait_events(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = self.events();
            if ev.len() >= n || Instant::now() > deadline {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("trackgate did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection with a read buffer.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write");
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// Whether the server closed the connection (EOF with nothing buffered).
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }

    /// Reads one response (to a request with method `method`).
    pub fn read_response(&mut self, method: &str) -> Option<Resp> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let status_line = lines.next()?;
                let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                let mut r = Resp {
                    status,
                    headers,
                    body: Vec::new(),
                };
                if (100..200).contains(&status) && status != 101 {
                    continue; // interim
                }
                if method == "HEAD" || status == 204 || status == 304 || status == 101 {
                    return Some(r);
                }
                if r.header("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
                {
                    r.body = self.read_chunked()?;
                } else if let Some(cl) = r.header("content-length") {
                    let n: usize = cl.parse().ok()?;
                    while self.buf.len() < n {
                        if self.fill() == 0 {
                            return None;
                        }
                    }
                    r.body = self.buf.drain(..n).collect();
                } else {
                    while self.fill() > 0 {}
                    r.body = std::mem::take(&mut self.buf);
                }
                return Some(r);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.fill() == 0 {
                    return None;
                }
            };
            let size_txt = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_txt.split(';').next()?.trim(), 16).ok()?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        let empty = i == 0;
                        self.buf.drain(..i + 2);
                        if empty {
                            return Some(body);
                        }
                    } else if self.fill() == 0 {
                        return None;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill() == 0 {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    pub fn request(&mut self, raw: &[u8]) -> Resp {
        self.send(raw);
        let method = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.split(' ').next())
            .unwrap_or("GET")
            .to_string();
        self.read_response(&method).expect("a response")
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request in a single connection; returns the response.
pub fn http(addr: SocketAddr, raw: &[u8]) -> Resp {
    Client::connect(addr).request(raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nUser-Agent: {UA}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// A request seen by a test origin.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }
}

type Handler = dyn Fn(&Seen, &mut TcpStream) -> bool + Send + Sync;

/// An origin written in the test: records requests; `handler` writes the
/// response to the stream and returns whether to keep the connection.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    pub fn start(
        handler: impl Fn(&Seen, &mut TcpStream) -> bool + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s2, c2) = (Arc::clone(&seen), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                c2.fetch_add(1, Ordering::Relaxed);
                let seen = Arc::clone(&s2);
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    loop {
                        let Some(req) = read_request(&mut stream, &mut buf) else {
                            return;
                        };
                        seen.lock().expect("lock").push(req.clone());
                        if !handler(&req, &mut stream) {
                            let _ = stream.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            seen,
            connections,
        }
    }

    /// An origin answering every request with `status` and `body`.
    pub fn fixed(status: u16, content_type: &'static str, body: Vec<u8>) -> Origin {
        Origin::start(move |_req, s| {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).is_ok() && s.write_all(&body).is_ok()
        })
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one request (Content-Length or chunked body) from a test origin's
/// connection.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let mut tmp = [0u8; 65536];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    let mut headers: HashMap<String, String> = HashMap::new();
    for l in lower.split("\r\n").skip(1) {
        if let Some((n, v)) = l.split_once(':') {
            headers.insert(n.trim().to_string(), v.trim().to_string());
        }
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        loop {
            let i = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                let n = stream.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..i]).ok()?.trim(), 16).ok()?;
            buf.drain(..i + 2);
            while buf.len() < size + 2 {
                let n = stream.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(cl) = headers.get("content-length") {
        let n: usize = cl.parse().ok()?;
        while buf.len() < n {
            let r = stream.read(&mut tmp).ok()?;
            if r == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..r]);
        }
        body = buf.drain(..n).collect();
    }
    Some(Seen { head, body })
}

// ---------------------------------------------------------------------------
// Helpers added for the limits, metrics, config and HTTP edge-case tests.
// ---------------------------------------------------------------------------

/// A TCP port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Like [`run_once`], but kills the process when it has not exited within
/// `within` (then the code is `None`): for configurations that must refuse
/// to start, so a regression hangs no test.
pub fn run_bounded(
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackgate"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run trackgate");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + within;
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

impl Proc {
    /// Waits up to `within` for the process to exit by itself (after a
    /// signal the test sent); returns its exit code, `None` on timeout.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `within` for a stderr line containing every one of
    /// `needles`; returns it.
    pub fn wait_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .stderr
                .lock()
                .expect("lock")
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned();
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads from `stream` until the peer closes it (EOF or reset), for at most
/// `within`. `Ok((when, bytes))`: closed after `when`, having sent `bytes`
/// first; `Err(bytes)`: still open at the deadline.
pub fn wait_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<(Duration, Vec<u8>), Vec<u8>> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let left = within.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Err(got);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut tmp) {
            Ok(0) => return Ok((t0.elapsed(), got)),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(got)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset is the server closing too.
            Err(_) => return Ok((t0.elapsed(), got)),
        }
    }
}

impl Client {
    /// Reads one response head (status line and fields, without the blank
    /// line) and nothing after it; interim responses are returned too.
    pub fn read_head_raw(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Some(head);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// Bytes received but not consumed by a read so far.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Waits up to `within` for the server to close this connection; `Ok`
    /// with the time it took and any bytes it sent first (including bytes
    /// already buffered), `Err` with those bytes when still open.
    pub fn wait_closed(&mut self, within: Duration) -> Result<(Duration, Vec<u8>), Vec<u8>> {
        let mut before = std::mem::take(&mut self.buf);
        match wait_closed(&mut self.stream, within) {
            Ok((t, b)) => {
                before.extend_from_slice(&b);
                Ok((t, before))
            }
            Err(b) => {
                before.extend_from_slice(&b);
                Err(before)
            }
        }
    }
}

/// Scrapes `http://addr/metrics` with a plain TCP GET; returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let r = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "scrape: {}", r.text());
    r.text()
}

/// The value of one series (`name{labels}` exactly as exposed) in a text
/// exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Fetches a kind `f` token from `/hmac/public-key` for `ua`.
pub fn public_key_token(addr: SocketAddr, ua: &str) -> serde_json::Value {
    let r = http(
        addr,
        format!("GET /hmac/public-key HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("token json")
}

impl Proc {
    /// The address the metrics endpoint bound (start with
    /// `METRICS_ADDR=127.0.0.1:0`, so no other process can take the port
    /// between choosing and binding it), from its start-up log line.
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self
            .wait_log(
                &["\"msg\":\"metrics endpoint listening\""],
                Duration::from_secs(5),
            )
            .unwrap_or_else(|| panic!("no metrics endpoint: {}", self.logs()));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        v["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("socket addr")
    }
}
