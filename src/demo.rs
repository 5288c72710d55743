//! The demo origin: a tiny, self-contained website that `trackgate demo`
//! starts on a loopback port and puts the proxy in front of, so a newcomer can
//! see trackgate work without running a website of their own.
//!
//! This module owns that website and nothing else: its HTTP/1.x server (plain
//! `std::net`, an accept thread plus one thread per connection, because a demo
//! sees a handful of connections and must not depend on the proxy's own
//! io_uring machinery it is there to demonstrate) and its pages. Orchestrating
//! the `demo` command (starting the proxy, printing where events go) is not
//! done here.
//!
//! # Protocol behaviour
//! * HTTP/1.1 keep-alive and HTTP/1.0 (keep-alive only on request), pipelining;
//!   `Connection: close` is honoured and every error response closes.
//! * Request heads are parsed with `httparse`; a head over 16 KiB or with more
//!   than 100 fields is answered 431 (414 if the request line alone is that
//!   long), a malformed one 400, an HTTP/1.1 request without exactly one
//!   `Host` 400.
//! * Request bodies: `Content-Length` (up to 64 KiB, else 413) and
//!   `Transfer-Encoding: chunked` (decoded, same 64 KiB bound, extensions and
//!   trailers ignored). Any other transfer coding is 501; a `Transfer-Encoding`
//!   whose last coding isn't `chunked`, one sent together with
//!   `Content-Length`, one on an HTTP/1.0 request, or conflicting
//!   `Content-Length`s are 400. `Expect: 100-continue` gets an interim 100
//!   (any other expectation 417).
//! * Reads time out after 30 s: silently between requests, with 408 inside one.
//! * Every final response carries `Date`, `Server: trackgate-demo-origin` and
//!   `Content-Length` (on 304 and HEAD: the length the GET would carry; no
//!   body is sent).
//! * After an error response the write side is shut and unread input drained
//!   briefly, so the client sees the response instead of a reset.
//! * At most 128 connections are served at once; beyond that a 503 is written
//!   and the connection closed.
//!
//! # Pages
//! `/`, `/article`, `/form` (GET and urlencoded POST), `/gzip` (gzip-encoded
//! when the client accepts it), `/api/products.json`, `/static/app.css` and
//! `/static/logo.svg` (cacheable, `ETag`, 304 on `If-None-Match`); anything
//! else is a 404 page. The pages carry no tracking code of their own: trackgate
//! injects its tracker into them on the way through, as it would into any site.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Value of the `Server` header on every response.
const SERVER_NAME: &str = "trackgate-demo-origin";
/// Largest accepted request head (request line, fields, final CRLF).
const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in one request head.
const MAX_HEADERS: usize = 100;
/// Largest accepted request body, whatever its framing.
const MAX_BODY: usize = 64 * 1024;
/// Longest chunk-size line (size plus extensions) in a chunked body.
const MAX_CHUNK_LINE: usize = 1024;
/// How long a read may wait: the idle timeout between requests, too.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After an error response: how long to wait for, and how much unread input
/// to discard, before closing (so the client isn't sent a reset).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Connections served at once; beyond this, new ones get a 503.
const MAX_CONNECTIONS: usize = 128;
/// How often the accept thread looks at the stop flag while idle.
const ACCEPT_POLL_MS: libc::c_int = 100;

/// The running demo origin: a listening socket served by an accept thread.
///
/// Dropping it has the same effect as [`DemoOrigin::shutdown`].
pub struct DemoOrigin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl DemoOrigin {
    /// Binds `bind` (e.g. `127.0.0.1:0` for an ephemeral port) and starts
    /// serving the demo site on a background thread.
    pub fn start(bind: SocketAddr) -> io::Result<DemoOrigin> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let accept = thread::Builder::new()
            .name("demo-origin-accept".into())
            .spawn(move || accept_loop(listener, &thread_stop))?;
        Ok(DemoOrigin {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes the listening socket and every open
    /// connection, and joins the accept and connection threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            // The accept thread never panics by design; if it somehow did,
            // there is nothing left to clean up.
            let _ = accept.join();
        }
    }
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl fmt::Debug for DemoOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoOrigin")
            .field("addr", &self.addr)
            .field("running", &self.accept.is_some())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Accepting and connection bookkeeping
// ---------------------------------------------------------------------------

/// Open connections (a clone of each socket, to shut it down on stop) and the
/// threads serving them.
#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // The registry stays consistent even if a holder panicked: every critical
    // section is a single insert, remove or take.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a connection from the registry when its thread ends, however it ends.
struct Deregister {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        lock(&self.registry).conns.remove(&self.id);
    }
}

fn accept_loop(listener: TcpListener, stop: &AtomicBool) {
    let registry = Arc::new(Mutex::new(Registry::default()));
    while !stop.load(Ordering::SeqCst) {
        if !wait_readable(&listener, ACCEPT_POLL_MS) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _peer)) => admit(stream, &registry),
            Err(e) if is_transient_accept_error(&e) => {}
            // Out of descriptors or memory: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(listener);
    let threads = {
        let mut reg = lock(&registry);
        for stream in reg.conns.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        std::mem::take(&mut reg.threads)
    };
    for handle in threads {
        let _ = handle.join();
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Waits up to `timeout_ms` for the listener to have a connection to accept.
fn wait_readable(listener: &TcpListener, timeout_ms: libc::c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid, initialised pollfd living across the call and
    // the count passed is 1; the descriptor is owned by `listener`, alive here.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        // EINTR or a transient resource shortage: look at the stop flag again
        // without spinning.
        thread::sleep(Duration::from_millis(10));
        return false;
    }
    n > 0
}

fn admit(stream: TcpStream, registry: &Arc<Mutex<Registry>>) {
    // Accepted sockets are blocking on Linux, but don't rely on inheritance.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let mut reg = lock(registry);
    // Finished threads have already deregistered; forget their handles.
    reg.threads.retain(|t| !t.is_finished());
    if reg.conns.len() >= MAX_CONNECTIONS {
        drop(reg);
        reject_busy(stream);
        return;
    }
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let id = reg.next_id;
    reg.next_id = reg.next_id.wrapping_add(1);
    reg.conns.insert(id, clone);
    let thread_registry = Arc::clone(registry);
    let spawned = thread::Builder::new()
        .name("demo-origin-conn".into())
        .spawn(move || {
            // Built inside the thread: a failed spawn drops the closure while
            // we hold the lock, and the guard's removal would deadlock on it.
            let _guard = Deregister {
                registry: thread_registry,
                id,
            };
            serve_connection(stream);
        });
    match spawned {
        Ok(handle) => reg.threads.push(handle),
        Err(_) => {
            reg.conns.remove(&id);
        }
    }
}

fn reject_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let resp = plain_error(503);
    let bytes = encode_response(&resp, false, 1, false, &http_date_now());
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------

/// Why serving a request stopped early.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// Answer with this status, then close.
    Respond(u16),
    /// Close without answering (peer gone, idle timeout, write failure).
    Quit,
}

/// A parsed request head. Field names are lowercased; values kept as bytes.
struct Head {
    method: String,
    target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    fields: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn value(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Comma-separated list elements across all fields named `name`,
    /// trimmed, lowercased, empty elements skipped.
    fn list(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|item| String::from_utf8_lossy(trim_ows(item)).to_ascii_lowercase())
            .filter(|item| !item.is_empty())
            .collect()
    }
}

enum Parsed {
    Complete(Head, usize),
    Partial,
    Invalid(u16),
}

fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if len > MAX_HEAD {
                return Parsed::Invalid(oversized_head_status(buf));
            }
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
            else {
                return Parsed::Invalid(400);
            };
            let fields = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect();
            Parsed::Complete(
                Head {
                    method: method.to_string(),
                    target: target.to_string(),
                    version,
                    fields,
                },
                len,
            )
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                Parsed::Invalid(oversized_head_status(buf))
            } else {
                Parsed::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Invalid(431),
        Err(_) => Parsed::Invalid(400),
    }
}

/// 414 when the request line alone exceeds the head limit, else 431.
fn oversized_head_status(buf: &[u8]) -> u16 {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    if window.contains(&b'\n') {
        431
    } else {
        414
    }
}

/// How the request body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn body_framing(head: &Head) -> Result<Framing, Stop> {
    let codings = head.list("transfer-encoding");
    let has_te = head.value("transfer-encoding").is_some();
    let mut length: Option<u64> = None;
    for value in head.values("content-length") {
        for item in value.split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(item)).ok_or(Stop::Respond(400))?;
            if length.is_some_and(|l| l != n) {
                return Err(Stop::Respond(400));
            }
            length = Some(n);
        }
    }
    if has_te {
        if head.version == 0 || length.is_some() {
            return Err(Stop::Respond(400));
        }
        return match codings.last().map(String::as_str) {
            Some("chunked") if codings.len() == 1 => Ok(Framing::Chunked),
            Some("chunked") => Err(Stop::Respond(501)),
            _ => Err(Stop::Respond(400)),
        };
    }
    Ok(length.map_or(Framing::None, Framing::Length))
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')),
    )
}

/// Parses a chunk-size line (without its CRLF): hex size, optional
/// whitespace, optional `;extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let size = trim_ows(size);
    if size.is_empty() || size.len() > 15 {
        return None;
    }
    size.iter().try_fold(0u64, |acc, &b| {
        Some(acc * 16 + u64::from(crate::http::hex_digit(b)?))
    })
}

fn wants_keep_alive(head: &Head) -> bool {
    let tokens = head.list("connection");
    if tokens.iter().any(|t| t == "close") {
        false
    } else if head.version >= 1 {
        true
    } else {
        tokens.iter().any(|t| t == "keep-alive")
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

struct Conn {
    stream: TcpStream,
    /// Received bytes not yet consumed.
    buf: Vec<u8>,
    /// Whether the request being answered is HEAD (its answer has no body).
    head_request: bool,
}

fn serve_connection(stream: TcpStream) {
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(4096),
        head_request: false,
    };
    loop {
        match conn.serve_one() {
            Ok(true) => continue,
            Ok(false) => {
                conn.linger();
                return;
            }
            Err(Stop::Respond(status)) => {
                let resp = plain_error(status);
                let bytes = encode_response(&resp, false, 1, conn.head_request, &http_date_now());
                if conn.stream.write_all(&bytes).is_ok() {
                    conn.linger();
                }
                return;
            }
            Err(Stop::Quit) => return,
        }
    }
}

impl Conn {
    /// Reads, answers one request. `Ok(keep_alive)`.
    fn serve_one(&mut self) -> Result<bool, Stop> {
        self.head_request = false;
        let head = self.read_head()?;
        self.head_request = head.method == "HEAD";
        let hosts = head.values("host").count();
        if hosts > 1 || (head.version >= 1 && hosts == 0) {
            return Err(Stop::Respond(400));
        }
        let keep_alive = wants_keep_alive(&head);
        let body = match body_framing(&head)? {
            Framing::None => Vec::new(),
            Framing::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_BODY)
                    .ok_or(Stop::Respond(413))?;
                self.expect_continue(&head)?;
                self.need(n)?;
                self.buf.drain(..n).collect()
            }
            Framing::Chunked => {
                self.expect_continue(&head)?;
                self.read_chunked()?
            }
        };
        let (path, query) = split_target(&head.target).ok_or(Stop::Respond(400))?;
        let resp = route(&Request {
            method: &head.method,
            path,
            query,
            head: &head,
            body: &body,
        });
        let bytes = encode_response(
            &resp,
            keep_alive,
            head.version,
            self.head_request,
            &http_date_now(),
        );
        self.stream.write_all(&bytes).map_err(|_| Stop::Quit)?;
        Ok(keep_alive)
    }

    fn read_head(&mut self) -> Result<Head, Stop> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Parsed::Complete(head, len) => {
                        self.buf.drain(..len);
                        return Ok(head);
                    }
                    Parsed::Invalid(status) => return Err(Stop::Respond(status)),
                    Parsed::Partial => {}
                }
            }
            match self.fill() {
                Ok(()) => {}
                // Idle timeout or the peer closed between requests: just close.
                Err(Stop::Respond(_)) if self.buf.is_empty() => return Err(Stop::Quit),
                Err(stop) => return Err(stop),
            }
        }
    }

    /// Reads more input. EOF or a broken socket is `Quit`; a timeout inside a
    /// message is 408.
    fn fill(&mut self) -> Result<(), Stop> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Stop::Quit),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(Stop::Respond(408)),
                Err(_) => return Err(Stop::Quit),
            }
        }
    }

    /// Ensures at least `n` unconsumed bytes are buffered.
    fn need(&mut self, n: usize) -> Result<(), Stop> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(())
    }

    /// Takes one CRLF-terminated line (returned without the CRLF). A line
    /// longer than `limit`, or ending in a bare LF, is `Respond(too_long)` or
    /// 400.
    fn read_line(&mut self, limit: usize, too_long: u16) -> Result<Vec<u8>, Stop> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                if end == 0 || self.buf[end - 1] != b'\r' {
                    return Err(Stop::Respond(400));
                }
                if end - 1 > limit {
                    return Err(Stop::Respond(too_long));
                }
                let line = self.buf[..end - 1].to_vec();
                self.buf.drain(..=end);
                return Ok(line);
            }
            if self.buf.len() > limit + 2 {
                return Err(Stop::Respond(too_long));
            }
            searched = self.buf.len();
            self.fill()?;
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, Stop> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(MAX_CHUNK_LINE, 400)?;
            let size = parse_chunk_size(&line).ok_or(Stop::Respond(400))?;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= MAX_BODY - body.len())
                .ok_or(Stop::Respond(413))?;
            self.need(size + 2)?;
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Stop::Respond(400));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
        // Trailer fields: read and ignored, bounded like a head.
        let mut trailer_bytes = 0;
        loop {
            let line = self.read_line(MAX_HEAD, 431)?;
            if line.is_empty() {
                return Ok(body);
            }
            trailer_bytes += line.len() + 2;
            if trailer_bytes > MAX_HEAD {
                return Err(Stop::Respond(431));
            }
        }
    }

    /// Honours `Expect` before a body is read: 100 Continue for
    /// `100-continue`, 417 for anything else.
    fn expect_continue(&mut self, head: &Head) -> Result<(), Stop> {
        let Some(expect) = head.value("expect") else {
            return Ok(());
        };
        if !trim_ows(expect).eq_ignore_ascii_case(b"100-continue") {
            return Err(Stop::Respond(417));
        }
        if head.version >= 1 {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| Stop::Quit)?;
        }
        Ok(())
    }

    /// Closes gracefully: shuts the write side, then discards (bounded)
    /// whatever the client still sends, so it reads our answer rather than a
    /// connection reset.
    fn linger(&mut self) {
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        if self.stream.set_read_timeout(Some(LINGER_TIMEOUT)).is_err() {
            return;
        }
        let mut scratch = [0u8; 8192];
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    }
}

/// Splits an origin-form (or absolute-form) request target into path and
/// query. `None` for anything else (`*`, authority-form).
fn split_target(target: &str) -> Option<(&str, &str)> {
    let lower = target.get(..8).map(str::to_ascii_lowercase);
    let rest = match lower.as_deref() {
        Some(p) if p.starts_with("http://") => Some(&target[7..]),
        Some("https://") => Some(&target[8..]),
        _ => None,
    };
    let origin_form = match rest {
        Some(after_scheme) => match after_scheme.find(['/', '?']) {
            Some(i) => &after_scheme[i..],
            None => "/",
        },
        None => target,
    };
    if let Some(query) = origin_form.strip_prefix('?') {
        return Some(("/", query));
    }
    if !origin_form.starts_with('/') {
        return None;
    }
    Some(origin_form.split_once('?').unwrap_or((origin_form, "")))
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// The representation. Its length is always the `Content-Length`.
    body: Vec<u8>,
    /// 304: announce the representation's length but send no body.
    omit_body: bool,
}

impl Response {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
            omit_body: false,
        }
    }

    fn html(status: u16, body: String) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Plain-text answer for protocol-level errors (no page, no tracking snippet).
fn plain_error(status: u16) -> Response {
    Response::new(
        status,
        "text/plain; charset=utf-8",
        format!("{status} {}\n", reason(status)),
    )
}

/// Serialises `resp`. `version` is the request's minor version: an HTTP/1.0
/// client that asked for keep-alive is told it was granted.
fn encode_response(
    resp: &Response,
    keep_alive: bool,
    version: u8,
    head_request: bool,
    date: &str,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nDate: {date}\r\nServer: {SERVER_NAME}\r\n",
        resp.status,
        reason(resp.status)
    );
    for (name, value) in &resp.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    } else if version == 0 {
        out.push_str("Connection: keep-alive\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_request && !resp.omit_body {
        bytes.extend_from_slice(&resp.body);
    }
    bytes
}

fn http_date_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    http_date(secs)
}

/// Formats seconds since the Unix epoch as an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian (year, month 1..=12, day 1..=31) of a day count since 1970-01-01,
/// computed in 400-year eras that begin on March 1st (so the leap day ends a
/// year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 719_468 days separate 0000-03-01 from 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// Routing and pages
// ---------------------------------------------------------------------------

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    head: &'a Head,
    body: &'a [u8],
}

fn route(req: &Request<'_>) -> Response {
    let read_only = matches!(req.method, "GET" | "HEAD");
    match req.path {
        "/form" if req.method == "POST" => form_submit(req),
        "/form" if !read_only => method_not_allowed("GET, HEAD, POST"),
        "/" | "/article" | "/gzip" | "/api/products.json" | "/static/app.css"
        | "/static/logo.svg"
            if !read_only =>
        {
            method_not_allowed("GET, HEAD")
        }
        "/" => Response::html(200, landing_page()),
        "/article" => Response::html(200, article_page()),
        "/form" => Response::html(200, form_page(requested_plan(req.query), None, "")),
        "/gzip" => gzip_page(req.head),
        "/api/products.json" => Response::new(200, "application/json", products_json())
            .with("Cache-Control", "no-cache"),
        "/static/app.css" => static_asset(req.head, "text/css; charset=utf-8", APP_CSS),
        "/static/logo.svg" => static_asset(req.head, "image/svg+xml", LOGO_SVG),
        _ => Response::html(404, not_found_page(req.path)),
    }
}

fn method_not_allowed(allow: &str) -> Response {
    plain_error(405).with("Allow", allow)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Home,
    Article,
    Form,
    Products,
    None,
}

/// Wraps page content in the shared layout: head, nav bar, footer and the
/// tracking snippet just before `</body>`. `title` must already be HTML-safe.
fn layout(title: &str, active: Nav, main: &str) -> String {
    let links = [
        (Nav::Home, "/", "Home"),
        (Nav::Article, "/article", "Article"),
        (Nav::Form, "/form", "Sign up"),
        (Nav::Products, "/gzip", "Products"),
        (Nav::None, "/api/products.json", "API"),
    ];
    let mut nav = String::new();
    for (item, href, label) in links {
        let current = if item == active && item != Nav::None {
            r#" aria-current="page""#
        } else {
            ""
        };
        nav.push_str(&format!(r#"<a href="{href}"{current}>{label}</a>"#));
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Demo Shop</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="/static/logo.svg" type="image/svg+xml">
</head>
<body>
<header class="site-header">
<a class="brand" href="/"><img src="/static/logo.svg" alt="" width="28" height="28"> Demo Shop</a>
<nav class="site-nav">{nav}</nav>
</header>
<main>
{main}
</main>
<footer class="site-footer">
<p>Served by the trackgate demo origin. Everything you click here passes through trackgate on its way to this site.</p>
</footer>
</body>
</html>
"#
    )
}

fn landing_page() -> String {
    layout(
        "Welcome",
        Nav::Home,
        r#"<section class="hero">
<h1>Welcome to the trackgate demo</h1>
<p>This little shop is the <strong>demo origin</strong>: a built-in website that <code>trackgate demo</code> started so you can try trackgate without a site of your own.</p>
<p>You are looking at it <em>through</em> trackgate. Every request your browser makes goes to trackgate, which forwards it to this site and hands back the answer unchanged, collecting tracking events along the way.</p>
</section>
<h2>Things to try</h2>
<ul class="cards">
<li><a href="/article">Read an article</a><span>Its links carry campaign parameters (<code>utm_*</code>, <code>gclid</code>, <code>fbclid</code>), the kind marketing links add.</span></li>
<li><a href="/form">Sign up</a><span>A form that posts back to the site, then shows a thank-you page.</span></li>
<li><a href="/gzip">Browse products</a><span>A longer page, served gzip-compressed when your browser accepts it.</span></li>
<li><a href="/api/products.json">Product API</a><span>A small JSON endpoint, as a single-page app would call.</span></li>
</ul>
<section class="note">
<h2>Where do the events go?</h2>
<p>These pages carry no tracking code of their own: trackgate injects its tracker into each HTML page on the way through. The tracker sends a signed pageview to trackgate, which answers it itself (it never reaches this site) and records it, with a <code>page_served</code> event for every page it injected, in the <strong>events file</strong> whose path <code>trackgate demo</code> printed when it started.</p>
<p>Open that file in another terminal, for example with <code>tail -f</code>, and click around: a new event appears for every page you view.</p>
</section>"#,
    )
}

fn article_page() -> String {
    layout(
        "Why first-party analytics",
        Nav::Article,
        r#"<article class="post">
<h1>Why first-party analytics</h1>
<p class="byline">By the Demo Shop team · 4 minute read</p>
<p>Most analytics scripts are loaded from someone else's domain. Browsers and blockers increasingly treat those requests as third-party tracking, so a growing share of visits simply never gets counted.</p>
<p>A first-party collector runs on your own domain, in front of your own site. The pixel request goes to the same host as the page, the events land in your own storage, and you decide what is kept and for how long.</p>
<h2>Campaign links</h2>
<p>Marketing links carry parameters that say where a visitor came from. Follow one of these and watch the event trackgate records:</p>
<ul class="campaigns">
<li><a href="/article?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=launch">This article, as opened from the launch newsletter</a> (<code>utm_source</code>, <code>utm_medium</code>, <code>utm_campaign</code>)</li>
<li><a href="/gzip?gclid=EAIaIQobChMIdemo0123456789">The product list, as reached from a search ad</a> (<code>gclid</code>)</li>
<li><a href="/form?fbclid=IwAR0demo9876543210">The sign-up form, as shared on social media</a> (<code>fbclid</code>)</li>
</ul>
<h2>What gets recorded</h2>
<p>For each pageview: the page address, the referring page, and the campaign parameters above. Nothing is sent to anybody else.</p>
<p><a class="button" href="/form">Try the sign-up form next</a></p>
</article>"#,
    )
}

/// Plans offered by the sign-up form: (form value, label).
const PLANS: [(&str, &str); 3] = [("free", "Free"), ("pro", "Pro"), ("team", "Team")];

/// The `plan` query parameter, if it names a known plan (preselects it).
fn requested_plan(query: &str) -> Option<&'static str> {
    let wanted = form_decode(query.as_bytes())
        .into_iter()
        .find(|(k, _)| k == "plan")?
        .1;
    PLANS.iter().map(|(v, _)| *v).find(|v| *v == wanted)
}

/// The sign-up form. `error` (HTML-safe) and `name` (raw, escaped here)
/// re-render a rejected submission.
fn form_page(plan: Option<&str>, error: Option<&str>, name: &str) -> String {
    let selected = plan.unwrap_or("pro");
    let mut options = String::new();
    for (value, label) in PLANS {
        let sel = if value == selected { " selected" } else { "" };
        options.push_str(&format!(r#"<option value="{value}"{sel}>{label}</option>"#));
    }
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{e}</p>"#))
        .unwrap_or_default();
    layout(
        "Sign up",
        Nav::Form,
        &format!(
            r#"<h1>Create your account</h1>
<p>Pick a plan and tell us who you are. The form posts back to this site; the thank-you page that follows is another pageview.</p>
{error}<form class="signup" method="post" action="/form">
<label>Name <input name="name" value="{name}" required maxlength="100" autocomplete="name"></label>
<label>Email <input type="email" name="email" required autocomplete="email"></label>
<label>Plan <select name="plan">{options}</select></label>
<button type="submit">Sign up</button>
</form>"#,
            name = html_escape(name)
        ),
    )
}

fn form_submit(req: &Request<'_>) -> Response {
    let media_type = req
        .head
        .value("content-type")
        .and_then(|v| v.split(|&b| b == b';').next())
        .map(trim_ows)
        .unwrap_or_default();
    if !media_type.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
        return plain_error(415);
    }
    let fields = form_decode(req.body);
    let name = form_field(&fields, "name");
    let plan = form_field(&fields, "plan");
    let known_plan = PLANS.iter().find(|(v, _)| *v == plan);
    if name.is_empty() {
        return Response::html(
            422,
            form_page(
                known_plan.map(|(v, _)| *v),
                Some("Please tell us your name."),
                name,
            ),
        );
    }
    let plan_label = known_plan.map_or(plan, |(_, label)| *label);
    Response::html(
        200,
        layout(
            "Thank you",
            Nav::Form,
            &format!(
                r#"<section class="thanks">
<h1>Thanks, {name}!</h1>
<p>You signed up for the <strong>{plan}</strong> plan.</p>
<p>The form submission went through trackgate like any other request, and this thank-you page is one more pageview in the events file.</p>
<p><a class="button" href="/gzip">Browse the products</a></p>
</section>"#,
                name = html_escape(name),
                plan = html_escape(plan_label)
            ),
        ),
    )
    .with("Cache-Control", "no-store")
}

/// The first value of field `name`, trimmed; empty if absent.
fn form_field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.trim())
}

struct Product {
    id: u32,
    name: String,
    description: String,
    price_cents: u32,
    in_stock: bool,
}

fn catalog() -> Vec<Product> {
    const STYLES: [&str; 6] = ["Classic", "Organic", "Trail", "Urban", "Vintage", "Compact"];
    const ITEMS: [&str; 6] = [
        "Backpack",
        "Water Bottle",
        "Notebook",
        "Desk Lamp",
        "Coffee Grinder",
        "Rain Jacket",
    ];
    let mut products = Vec::with_capacity(STYLES.len() * ITEMS.len());
    for (i, style) in STYLES.iter().enumerate() {
        for (j, item) in ITEMS.iter().enumerate() {
            let n = (i * ITEMS.len() + j) as u32;
            products.push(Product {
                id: n + 1,
                name: format!("{style} {item}"),
                description: format!(
                    "A {} take on the everyday {}: sturdy, light and made to last. \
                     Ships within {} working days, free returns for 30 days.",
                    style.to_ascii_lowercase(),
                    item.to_ascii_lowercase(),
                    n % 4 + 1
                ),
                price_cents: (900 + n * 1370 % 12_000) / 100 * 100 + 90,
                in_stock: n % 5 != 3,
            });
        }
    }
    products
}

fn price(cents: u32) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn products_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let mut list = String::new();
        for p in catalog() {
            let stock = if p.in_stock {
                r#"<span class="stock in">In stock</span>"#
            } else {
                r#"<span class="stock out">Back soon</span>"#
            };
            list.push_str(&format!(
                r#"<li class="product" id="p{id}">
<h3>{name}</h3>
<p>{description}</p>
<p class="meta"><span class="price">€{price}</span> {stock} <a class="buy" href="/form?plan=pro">Buy</a></p>
</li>
"#,
                id = p.id,
                name = html_escape(&p.name),
                description = html_escape(&p.description),
                price = price(p.price_cents),
            ));
        }
        layout(
            "Products",
            Nav::Products,
            &format!(
                r#"<h1>All products</h1>
<p>This page is long on purpose: the demo origin sends it gzip-compressed when your browser says it accepts gzip, and trackgate passes it along.</p>
<ul class="products">
{list}</ul>"#
            ),
        )
    })
}

/// The products page gzip-compressed (level 6), once; `None` if compression
/// failed, in which case the page is served uncompressed.
fn products_gzip() -> Option<&'static [u8]> {
    static GZ: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    GZ.get_or_init(|| {
        let html = products_html().as_bytes();
        let level = libdeflater::CompressionLvl::new(6).ok()?;
        let mut compressor = libdeflater::Compressor::new(level);
        let mut out = vec![0u8; compressor.gzip_compress_bound(html.len())];
        let n = compressor.gzip_compress(html, &mut out).ok()?;
        out.truncate(n);
        Some(out)
    })
    .as_deref()
}

fn gzip_page(head: &Head) -> Response {
    let gz = products_gzip().filter(|_| accepts_gzip(head.values("accept-encoding")));
    let resp = match gz {
        Some(gz) => {
            Response::new(200, "text/html; charset=utf-8", gz).with("Content-Encoding", "gzip")
        }
        None => Response::html(200, products_html().to_string()),
    };
    resp.with("Vary", "Accept-Encoding")
}

/// Whether `Accept-Encoding` lets us send gzip: gzip (or x-gzip, or `*` when
/// gzip isn't listed) must have q > 0, and identity must not be preferred.
/// Without the field, identity is sent.
fn accepts_gzip<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut gzip: Option<u16> = None;
    let mut identity: Option<u16> = None;
    let mut star: Option<u16> = None;
    for value in values {
        for element in value.split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let coding = trim_ows(parts.next().unwrap_or_default()).to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                let param = trim_ows(param);
                let Some(eq) = param.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if trim_ows(&param[..eq]).eq_ignore_ascii_case(b"q") {
                    q = parse_qvalue(trim_ows(&param[eq + 1..]));
                }
            }
            // An unparsable weight makes the element meaningless: skip it.
            let Some(q) = q else { continue };
            let slot = match coding.as_slice() {
                b"gzip" | b"x-gzip" => &mut gzip,
                b"identity" => &mut identity,
                b"*" => &mut star,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    let gzip = gzip.or(star).unwrap_or(0);
    // Identity is acceptable unless excluded, but least preferred when unlisted.
    let identity = identity.or(star).unwrap_or(1);
    gzip > 0 && gzip >= identity
}

/// A qvalue (`0`, `0.5`, `1.000`, ...) in thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for k in 0..3 {
        thousandths = thousandths * 10 + frac.get(k).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn products_json() -> String {
    let items: Vec<String> = catalog()
        .iter()
        .take(5)
        .map(|p| {
            format!(
                r#"{{"id":{},"name":"{}","price":{},"currency":"EUR","in_stock":{},"url":"/gzip#p{}"}}"#,
                p.id,
                json_escape(&p.name),
                price(p.price_cents),
                p.in_stock,
                p.id
            )
        })
        .collect();
    format!("{{\"products\":[{}]}}\n", items.join(","))
}

fn static_asset(head: &Head, content_type: &str, content: &'static str) -> Response {
    let etag = format!("\"{:016x}\"", fnv1a(content.as_bytes()));
    let not_modified = head
        .values("if-none-match")
        .any(|v| etag_list_matches(v, &etag));
    let mut resp = if not_modified {
        Response {
            status: 304,
            headers: Vec::new(),
            body: content.as_bytes().to_vec(),
            omit_body: true,
        }
    } else {
        Response::new(200, content_type, content)
    };
    resp.headers
        .push(("Cache-Control", "public, max-age=3600".into()));
    resp.headers.push(("ETag", etag));
    resp
}

/// `If-None-Match` uses weak comparison: `W/` is ignored; `*` matches.
fn etag_list_matches(value: &[u8], etag: &str) -> bool {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag.as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn not_found_page(path: &str) -> String {
    layout(
        "Page not found",
        Nav::None,
        &format!(
            r#"<section class="not-found">
<h1>Page not found</h1>
<p>There is no page at <code>{}</code> on the demo site.</p>
<p><a class="button" href="/">Back to the start</a></p>
</section>"#,
            html_escape(path)
        ),
    )
}

const APP_CSS: &str = r#":root {
  --ink: #1d2433;
  --muted: #5b6475;
  --accent: #2f6fed;
  --paper: #f7f8fb;
  --card: #ffffff;
  --line: #e2e6ee;
}
* { box-sizing: border-box; }
body {
  margin: 0;
  font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink);
  background: var(--paper);
}
a { color: var(--accent); }
code { background: #eef1f7; padding: 0 .3em; border-radius: 4px; font-size: .9em; }
.site-header {
  display: flex; align-items: center; justify-content: space-between; flex-wrap: wrap;
  gap: 1rem; padding: .75rem 1.5rem; background: var(--card); border-bottom: 1px solid var(--line);
}
.brand { display: flex; align-items: center; gap: .5rem; font-weight: 700; color: var(--ink); text-decoration: none; }
.site-nav { display: flex; gap: 1rem; }
.site-nav a { text-decoration: none; color: var(--muted); padding: .25rem 0; }
.site-nav a[aria-current="page"] { color: var(--ink); border-bottom: 2px solid var(--accent); }
main { max-width: 52rem; margin: 0 auto; padding: 2rem 1.5rem; }
.hero { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 1.5rem 2rem; }
.hero h1 { margin-top: 0; }
.cards { list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr)); gap: 1rem; }
.cards li { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem; }
.cards a { display: block; font-weight: 600; margin-bottom: .25rem; }
.cards span { color: var(--muted); font-size: .95em; }
.note { border-left: 4px solid var(--accent); background: #eaf1ff; padding: .5rem 1.25rem; border-radius: 0 10px 10px 0; }
.byline { color: var(--muted); }
.button { display: inline-block; background: var(--accent); color: #fff; padding: .5rem 1rem; border-radius: 8px; text-decoration: none; }
.signup { display: grid; gap: .9rem; max-width: 24rem; }
.signup label { display: grid; gap: .25rem; font-weight: 600; }
.signup input, .signup select { font: inherit; padding: .45rem .6rem; border: 1px solid var(--line); border-radius: 6px; }
.signup button { font: inherit; background: var(--accent); color: #fff; border: 0; border-radius: 8px; padding: .55rem 1rem; cursor: pointer; }
.error { color: #a4262c; background: #fde7e9; padding: .5rem .75rem; border-radius: 6px; }
.products { list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: 1rem; }
.product { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem; }
.product h3 { margin: 0 0 .25rem; }
.meta { display: flex; align-items: center; gap: .75rem; }
.price { font-weight: 700; }
.stock { font-size: .8em; padding: .1rem .5rem; border-radius: 999px; }
.stock.in { background: #e3f6e8; color: #1e6b34; }
.stock.out { background: #fff1d6; color: #8a5a00; }
.buy { margin-left: auto; }
.site-footer { text-align: center; color: var(--muted); font-size: .9em; padding: 2rem 1rem; }
"#;

const LOGO_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64" role="img" aria-label="Demo Shop">
  <rect x="4" y="4" width="56" height="56" rx="14" fill="#2f6fed"/>
  <path d="M18 26h28l-3 22H21z" fill="#ffffff"/>
  <path d="M25 26v-4a7 7 0 0 1 14 0v4" fill="none" stroke="#ffffff" stroke-width="4" stroke-linecap="round"/>
  <circle cx="32" cy="37" r="4" fill="#2f6fed"/>
</svg>
"##;

// ---------------------------------------------------------------------------
// Small text helpers
// ---------------------------------------------------------------------------

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Escapes text for HTML element content and quoted attribute values.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` (also used for query
/// strings): `&`-separated pairs, `+` as space, `%XX` escapes; invalid
/// escapes are kept literally and invalid UTF-8 replaced.
fn form_decode(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (percent_decode(&pair[..i]), percent_decode(&pair[i + 1..])),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> String {
    String::from_utf8_lossy(&crate::track::pixel::percent_decode(input)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// A response as read off the wire by the test client.
    #[derive(Debug)]
    struct Wire {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Wire {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8(self.body.clone()).expect("UTF-8 body")
        }
    }

    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        fn connect(origin: &DemoOrigin) -> Client {
            let stream = TcpStream::connect(origin.addr()).expect("connect");
            // A safety net so a broken server fails the test instead of hanging it.
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            Client {
                stream,
                buf: Vec::new(),
            }
        }

        fn send(&mut self, raw: &[u8]) {
            self.stream.write_all(raw).expect("write request");
        }

        fn read_more(&mut self) -> usize {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).expect("read");
            self.buf.extend_from_slice(&chunk[..n]);
            n
        }

        /// Reads one response; `head_request` means no body follows.
        fn response(&mut self, head_request: bool) -> Wire {
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(len) = resp.parse(&self.buf).expect("valid head")
                {
                    let status = resp.code.expect("status");
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8(h.value.to_vec()).expect("ascii");
                            (h.name.to_string(), value)
                        })
                        .collect();
                    let no_body = head_request || status == 304 || (100..200).contains(&status);
                    let body_len = if no_body {
                        0
                    } else {
                        headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .expect("Content-Length on every response")
                            .1
                            .parse::<usize>()
                            .expect("numeric Content-Length")
                    };
                    while self.buf.len() < len + body_len {
                        assert!(self.read_more() > 0, "EOF inside the body");
                    }
                    let body = self.buf[len..len + body_len].to_vec();
                    self.buf.drain(..len + body_len);
                    return Wire {
                        status,
                        headers,
                        body,
                    };
                }
                assert!(self.read_more() > 0, "EOF before a complete response head");
            }
        }

        /// True when the server closed the connection with nothing more sent.
        fn at_eof(&mut self) -> bool {
            self.buf.is_empty() && self.read_more() == 0
        }
    }

    fn origin() -> DemoOrigin {
        DemoOrigin::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).expect("start")
    }

    fn get(origin: &DemoOrigin, path: &str, extra: &str) -> Wire {
        let mut c = Client::connect(origin);
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: demo\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        );
        c.response(false)
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 1 << 20];
        let n = libdeflater::Decompressor::new()
            .gzip_decompress(data, &mut out)
            .expect("valid gzip");
        out.truncate(n);
        out
    }

    const HTML: &str = "text/html; charset=utf-8";

    #[test]
    fn every_page_answers_200_with_its_content_type() {
        let origin = origin();
        let pages = [
            ("/", HTML),
            ("/article", HTML),
            ("/form", HTML),
            ("/gzip", HTML),
            ("/api/products.json", "application/json"),
            ("/static/app.css", "text/css; charset=utf-8"),
            ("/static/logo.svg", "image/svg+xml"),
        ];
        for (path, content_type) in pages {
            let resp = get(&origin, path, "");
            assert_eq!(resp.status, 200, "{path}");
            assert_eq!(resp.header("content-type"), Some(content_type), "{path}");
            assert_eq!(resp.header("server"), Some(SERVER_NAME), "{path}");
            assert!(
                resp.header("date").is_some_and(|d| d.ends_with(" GMT")),
                "{path}"
            );
            assert_eq!(resp.header("connection"), Some("close"), "{path}");
            assert!(!resp.body.is_empty(), "{path}");
        }
        origin.shutdown();
    }

    #[test]
    fn html_pages_link_together_and_carry_no_tracker_of_their_own() {
        let origin = origin();
        for path in ["/", "/article", "/form", "/gzip", "/nope"] {
            let html = get(&origin, path, "").text();
            assert!(html.starts_with("<!DOCTYPE html>"), "{path}");
            assert!(html.contains(r#"<link rel="stylesheet" href="/static/app.css">"#));
            for href in ["/", "/article", "/form", "/gzip", "/api/products.json"] {
                assert!(
                    html.contains(&format!(r#"href="{href}""#)),
                    "{path} -> {href}"
                );
            }
            assert!(html.trim_end().ends_with("</html>"), "{path}");
            assert!(
                !html.contains("<script"),
                "{path}: the demo carries no tracker of its own"
            );
        }
        let landing = get(&origin, "/", "").text();
        assert!(landing.contains("events file"));
        origin.shutdown();
    }

    #[test]
    fn article_links_carry_campaign_parameters() {
        let origin = origin();
        let html = get(&origin, "/article", "").text();
        assert!(html.contains(
            r#"href="/article?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=launch""#
        ));
        assert!(html.contains("?gclid="));
        assert!(html.contains("?fbclid="));
        // The campaign link itself serves the same article.
        let campaign = get(
            &origin,
            "/article?utm_source=newsletter&utm_medium=email&utm_campaign=launch",
            "",
        );
        assert_eq!(campaign.status, 200);
        assert_eq!(campaign.text(), html);
        origin.shutdown();
    }

    #[test]
    fn gzip_page_is_compressed_only_when_accepted() {
        let origin = origin();
        let plain = get(&origin, "/gzip", "");
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
        assert!(plain.body.len() > 4096, "several KB: {}", plain.body.len());

        for accept in ["gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "*"] {
            let gz = get(&origin, "/gzip", &format!("Accept-Encoding: {accept}\r\n"));
            assert_eq!(gz.header("content-encoding"), Some("gzip"), "{accept}");
            assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
            assert!(gz.body.len() < plain.body.len());
            assert_eq!(gunzip(&gz.body), plain.body, "{accept}");
        }
        for accept in ["gzip;q=0", "identity", "br", "", "gzip;q=0.5, identity;q=1"] {
            let id = get(&origin, "/gzip", &format!("Accept-Encoding: {accept}\r\n"));
            assert_eq!(id.header("content-encoding"), None, "{accept:?}");
            assert_eq!(id.header("vary"), Some("Accept-Encoding"));
            assert_eq!(id.body, plain.body, "{accept:?}");
        }
        origin.shutdown();
    }

    #[test]
    fn accept_encoding_weights() {
        let accepts = |v: &str| accepts_gzip([v.as_bytes()].into_iter());
        assert!(accepts("gzip"));
        assert!(accepts("GZIP"));
        assert!(accepts("x-gzip"));
        assert!(accepts("deflate, gzip;q=0.001"));
        assert!(accepts("gzip ; q = 0.5"));
        assert!(accepts("*;q=0.1"));
        assert!(accepts("identity;q=0.5, gzip"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0.000"));
        assert!(!accepts("gzip;Q=0"));
        assert!(!accepts("*;q=0"));
        assert!(!accepts("*, gzip;q=0"));
        assert!(!accepts("gzip;q=0.5, identity"));
        assert!(!accepts("gzip;q=2"));
        assert!(!accepts("gzip;q=1.5"));
        assert!(!accepts("gzip;q=0.1234"));
        assert!(!accepts("deflate, br"));
        assert!(!accepts(""));
        assert!(!accepts_gzip(std::iter::empty()));
        // Across several fields.
        assert!(accepts_gzip([&b"br"[..], &b"gzip"[..]].into_iter()));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"1."), Some(1000));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b".5"), None);
    }

    #[test]
    fn static_assets_are_cacheable_and_revalidate_with_304() {
        let origin = origin();
        for path in ["/static/app.css", "/static/logo.svg"] {
            let first = get(&origin, path, "");
            assert_eq!(first.header("cache-control"), Some("public, max-age=3600"));
            let etag = first.header("etag").expect("ETag").to_string();
            assert!(etag.starts_with('"') && etag.ends_with('"'));

            // 304 on a match, on one connection followed by a second request:
            // if the 304 carried a body, the second response would be garbled.
            let mut c = Client::connect(&origin);
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: demo\r\nIf-None-Match: {etag}\r\n\r\n\
                 GET {path} HTTP/1.1\r\nHost: demo\r\nIf-None-Match: \"other\"\r\nConnection: close\r\n\r\n"
            );
            c.send(req.as_bytes());
            let not_modified = c.response(false);
            assert_eq!(not_modified.status, 304);
            assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
            assert_eq!(
                not_modified.header("content-length"),
                Some(first.body.len().to_string().as_str())
            );
            let full = c.response(false);
            assert_eq!(full.status, 200);
            assert_eq!(full.body, first.body);
            assert!(c.at_eof());

            for inm in [
                format!("W/{etag}"),
                format!("\"x\", {etag}"),
                "*".to_string(),
            ] {
                let resp = get(&origin, path, &format!("If-None-Match: {inm}\r\n"));
                assert_eq!(resp.status, 304, "{inm}");
            }
        }
        origin.shutdown();
    }

    #[test]
    fn keep_alive_serves_two_requests_on_one_connection() {
        let origin = origin();
        let mut c = Client::connect(&origin);
        c.send(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n");
        let first = c.response(false);
        assert_eq!(first.status, 200);
        assert_eq!(first.header("connection"), None);
        c.send(b"GET /api/products.json HTTP/1.1\r\nHost: demo\r\n\r\n");
        let second = c.response(false);
        assert_eq!(second.status, 200);
        assert_eq!(second.header("content-type"), Some("application/json"));
        // Pipelined: two requests in one write.
        c.send(
            b"GET /article HTTP/1.1\r\nHost: demo\r\n\r\nGET /form HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
        );
        assert!(c
            .response(false)
            .text()
            .contains("Why first-party analytics"));
        let last = c.response(false);
        assert!(last.text().contains("Create your account"));
        assert_eq!(last.header("connection"), Some("close"));
        assert!(c.at_eof(), "Connection: close honoured");
        origin.shutdown();
    }

    #[test]
    fn http_1_0_closes_unless_keep_alive_is_asked_for() {
        let origin = origin();
        let mut c = Client::connect(&origin);
        c.send(b"GET / HTTP/1.0\r\n\r\n");
        let resp = c.response(false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(c.at_eof());

        let mut c = Client::connect(&origin);
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let resp = c.response(false);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        c.send(b"GET /static/logo.svg HTTP/1.0\r\n\r\n");
        assert_eq!(
            c.response(false).header("content-type"),
            Some("image/svg+xml")
        );
        assert!(c.at_eof());
        origin.shutdown();
    }

    fn post_form(origin: &DemoOrigin, content_type: &str, body: &str) -> Wire {
        let mut c = Client::connect(origin);
        c.send(
            format!(
                "POST /form HTTP/1.1\r\nHost: demo\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        c.response(false)
    }

    #[test]
    fn form_post_echoes_the_escaped_name_and_plan() {
        let origin = origin();
        let form = get(&origin, "/form", "").text();
        assert!(form.contains(r#"<form class="signup" method="post" action="/form">"#));
        for field in [
            r#"name="name""#,
            r#"name="email""#,
            r#"<select name="plan">"#,
        ] {
            assert!(form.contains(field), "{field}");
        }

        let resp = post_form(
            &origin,
            "application/x-www-form-urlencoded",
            "name=%3Cscript%3Ealert(1)%3C%2Fscript%3E+%26+co&email=a%40b.example&plan=team",
        );
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some(HTML));
        let html = resp.text();
        assert!(html.contains("Thanks, &lt;script&gt;alert(1)&lt;/script&gt; &amp; co!"));
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("<strong>Team</strong>"));

        // An unknown plan is echoed escaped too.
        let odd = post_form(
            &origin,
            "application/x-www-form-urlencoded; charset=UTF-8",
            "name=Ann&plan=%22%3E%3Cb%3E",
        );
        assert!(odd.text().contains("<strong>&quot;&gt;&lt;b&gt;</strong>"));

        let missing = post_form(&origin, "application/x-www-form-urlencoded", "plan=pro");
        assert_eq!(missing.status, 422);
        assert!(missing.text().contains("Please tell us your name."));

        let json = post_form(&origin, "application/json", r#"{"name":"x"}"#);
        assert_eq!(json.status, 415);
        origin.shutdown();
    }

    #[test]
    fn chunked_and_expect_continue_bodies_are_read() {
        let origin = origin();
        let mut c = Client::connect(&origin);
        c.send(
            b"POST /form HTTP/1.1\r\nHost: demo\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nname=\r\n7\r\nChunky&\r\n9\r\nplan=free\r\n0\r\nX-Trailer: y\r\n\r\n",
        );
        let resp = c.response(false);
        assert_eq!(resp.status, 200);
        assert!(resp.text().contains("Thanks, Chunky!"));
        assert!(resp.text().contains("<strong>Free</strong>"));

        let body = "name=Eve&plan=pro";
        c.send(
            format!(
                "POST /form HTTP/1.1\r\nHost: demo\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(c.response(false).status, 100);
        c.send(body.as_bytes());
        let resp = c.response(false);
        assert_eq!(resp.status, 200);
        assert!(resp.text().contains("Thanks, Eve!"));
        origin.shutdown();
    }

    #[test]
    fn unknown_paths_get_a_404_page() {
        let origin = origin();
        let resp = get(&origin, "/no/such/<page>", "");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("content-type"), Some(HTML));
        let html = resp.text();
        assert!(html.contains("Page not found"));
        assert!(html.contains("/no/such/&lt;page&gt;"));
        assert_eq!(get(&origin, "/px.gif?e=pageview", "").status, 404);
        origin.shutdown();
    }

    #[test]
    fn head_has_the_get_length_and_no_body() {
        let origin = origin();
        for (path, extra) in [
            ("/", ""),
            ("/gzip", "Accept-Encoding: gzip\r\n"),
            ("/static/app.css", ""),
            ("/missing", ""),
        ] {
            let full = get(&origin, path, extra);
            let mut c = Client::connect(&origin);
            // A body after the HEAD answer would garble the GET that follows.
            c.send(
                format!(
                    "HEAD {path} HTTP/1.1\r\nHost: demo\r\n{extra}\r\n\
                     GET /api/products.json HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            let head = c.response(true);
            assert_eq!(head.status, full.status, "{path}");
            assert_eq!(
                head.header("content-length"),
                Some(full.body.len().to_string().as_str()),
                "{path}"
            );
            assert_eq!(head.header("content-type"), full.header("content-type"));
            let next = c.response(false);
            assert_eq!(
                next.header("content-type"),
                Some("application/json"),
                "{path}"
            );
            assert!(c.at_eof());
        }
        origin.shutdown();
    }

    #[test]
    fn oversized_head_gets_431_and_oversized_body_413() {
        let origin = origin();
        let mut c = Client::connect(&origin);
        let big = "a".repeat(20 * 1024);
        c.send(format!("GET / HTTP/1.1\r\nHost: demo\r\nX-Big: {big}\r\n\r\n").as_bytes());
        let resp = c.response(false);
        assert_eq!(resp.status, 431);
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(c.at_eof());

        let mut c = Client::connect(&origin);
        c.send(format!("GET /{big} HTTP/1.1\r\nHost: demo\r\n\r\n").as_bytes());
        assert_eq!(c.response(false).status, 414);

        let mut c = Client::connect(&origin);
        c.send(b"POST /form HTTP/1.1\r\nHost: demo\r\nContent-Length: 65537\r\n\r\n");
        let resp = c.response(false);
        assert_eq!(resp.status, 413);
        assert!(c.at_eof());

        let mut c = Client::connect(&origin);
        c.send(b"POST /form HTTP/1.1\r\nHost: demo\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n");
        assert_eq!(c.response(false).status, 413);
        origin.shutdown();
    }

    #[test]
    fn malformed_and_ambiguous_requests_are_rejected() {
        let origin = origin();
        let cases: [(&[u8], u16); 8] = [
            (b"NOT HTTP AT ALL\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (
                b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                b"POST /form HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                b"POST /form HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
        ];
        for (raw, status) in cases {
            let mut c = Client::connect(&origin);
            c.send(raw);
            let resp = c.response(false);
            assert_eq!(resp.status, status, "{}", String::from_utf8_lossy(raw));
            assert_eq!(resp.header("connection"), Some("close"));
            assert!(c.at_eof());
        }
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        let mut c = Client::connect(&origin);
        c.send(many.as_bytes());
        assert_eq!(c.response(false).status, 431, "too many fields");

        let resp = get(&origin, "/static/app.css", "");
        assert_eq!(resp.status, 200, "server still healthy");
        origin.shutdown();
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let origin = origin();
        let mut c = Client::connect(&origin);
        c.send(b"DELETE /form HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let resp = c.response(false);
        assert_eq!(resp.status, 405);
        assert_eq!(resp.header("allow"), Some("GET, HEAD, POST"));
        // 405 is an ordinary answer: the connection stays usable.
        assert_eq!(c.response(false).status, 200);
        origin.shutdown();
    }

    #[test]
    fn products_json_parses() {
        let origin = origin();
        let resp = get(&origin, "/api/products.json", "");
        let value: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON");
        let products = value["products"].as_array().expect("products array");
        assert!(products.len() >= 3);
        for p in products {
            assert!(p["id"].is_u64());
            assert!(p["name"].is_string());
            assert!(p["price"].is_f64());
            assert!(p["in_stock"].is_boolean());
        }
        origin.shutdown();
    }

    #[test]
    fn absolute_form_targets_are_routed_by_path() {
        assert_eq!(split_target("/a?b=c"), Some(("/a", "b=c")));
        assert_eq!(split_target("/"), Some(("/", "")));
        assert_eq!(
            split_target("http://demo:8080/gzip?x=1"),
            Some(("/gzip", "x=1"))
        );
        assert_eq!(split_target("HTTPS://demo"), Some(("/", "")));
        assert_eq!(split_target("http://demo?q"), Some(("/", "q")));
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("demo:443"), None);
    }

    #[test]
    fn shutdown_closes_connections_and_the_listener() {
        let origin = origin();
        let addr = origin.addr();
        let mut idle = Client::connect(&origin);
        idle.send(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n");
        assert_eq!(idle.response(false).status, 200);
        origin.shutdown();
        // shutdown() joined the connection thread after shutting its socket.
        assert!(idle.at_eof());
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(4_133_980_799), "Fri, 31 Dec 2100 23:59:59 GMT");
        assert_eq!(http_date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
    }

    #[test]
    fn text_helpers() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            form_decode(b"a=1+2&b=%41%zz&c&=v&&d=%E2%82%AC"),
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "A%zz".into()),
                ("c".into(), String::new()),
                (String::new(), "v".into()),
                ("d".into(), "€".into()),
            ]
        );
        assert_eq!(percent_decode(b"%"), "%");
        assert_eq!(percent_decode(b"%4"), "%4");
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"A ;name=value"), Some(10));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"1234567890abcdef"), None);
        assert_eq!(parse_decimal(b"0042"), Some(42));
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
        assert_eq!(trim_ows(b" \tx y\t "), b"x y");
        assert_eq!(trim_ows(b"  "), b"");
    }
}
