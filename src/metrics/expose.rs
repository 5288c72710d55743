//! The exposition thread: a tiny blocking HTTP/1.1 server for `/metrics`.
//!
//! It lives on its own std thread, away from the cores' monoio runtimes, and
//! serves one connection at a time: a scrape is a few kilobytes rendered from
//! relaxed atomic loads. Every connection has a 5 s deadline for its request
//! head (not per read, so a client trickling bytes cannot hold the thread),
//! and a 5 s write timeout. `GET`/`HEAD /metrics` answer 200 with the text
//! exposition; other paths 404, other methods 405, unparsable requests 400.
//! Every response closes the connection.

use super::{MetricsError, Registry};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Content type of the text exposition format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Time a client has to send its whole request head.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Time a single write may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Longest wait, after answering, for the client to close.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Most bytes read and discarded after answering.
const MAX_DRAIN: usize = 64 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 32;
/// Pause after a failed accept (e.g. out of file descriptors) so the thread
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The running exposition thread. Stop it with [`MetricsServer::shutdown`];
/// dropping it stops it too.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// A second handle on the listening socket, used to wake `accept`.
    waker: TcpListener,
    thread: Option<JoinHandle<()>>,
}

/// Binds `addr` (the `METRICS_ADDR` setting) and starts the exposition
/// thread, `tg-metrics`, serving `registry`.
pub fn serve(registry: Arc<Registry>, addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
    start(registry, addr, READ_DEADLINE)
}

/// [`serve`] with a chosen request-head deadline (tests use a short one).
fn start(
    registry: Arc<Registry>,
    addr: SocketAddr,
    read_deadline: Duration,
) -> Result<MetricsServer, MetricsError> {
    let bind_err = |source| MetricsError::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let waker = listener.try_clone().map_err(bind_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tg-metrics".to_owned())
        .spawn(move || run(&listener, &registry, &thread_stop, read_deadline))
        .map_err(MetricsError::Spawn)?;
    crate::info!("metrics endpoint listening", addr = local_addr);
    Ok(MetricsServer {
        local_addr,
        stop,
        waker,
        thread: Some(thread),
    })
}

impl MetricsServer {
    /// The address actually bound (useful when the port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets a scrape in progress finish (at most its
    /// deadlines), and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        self.wake();
        if thread.join().is_err() {
            crate::error!("metrics thread ended abnormally");
        }
    }

    /// Unblocks the thread's `accept`: on Linux, shutting a listening socket
    /// down makes a blocked `accept` fail at once. Failing that, connect to it.
    fn wake(&self) {
        // SAFETY: `waker` owns this descriptor for as long as `self` lives;
        // shutdown(2) does not close it.
        let rc = unsafe { libc::shutdown(self.waker.as_raw_fd(), libc::SHUT_RDWR) };
        if rc == 0 {
            return;
        }
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let target = SocketAddr::new(ip, self.local_addr.port());
        if let Err(e) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            crate::warn!(
                "metrics: could not wake the exposition thread; it stops at its next connection",
                addr = target,
                error = e
            );
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Buffers reused from one scrape to the next.
#[derive(Default)]
struct Scratch {
    body: String,
    response: Vec<u8>,
}

fn run(listener: &TcpListener, registry: &Registry, stop: &AtomicBool, read_deadline: Duration) {
    let mut scratch = Scratch::default();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = handle(stream, registry, &mut scratch, read_deadline) {
                    crate::debug!("metrics: scrape connection failed", peer = peer, error = e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                crate::warn!("metrics: accept failed", error = e);
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// What to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// 200 with the exposition; `head` leaves the body out.
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(method: &str, target: &str) -> Reply {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Reply::NotFound;
    }
    match method {
        "GET" => Reply::Metrics { head: false },
        "HEAD" => Reply::Metrics { head: true },
        _ => Reply::MethodNotAllowed,
    }
}

/// Reads one request head (within `read_deadline`) and answers it.
fn handle(
    mut stream: TcpStream,
    registry: &Registry,
    scratch: &mut Scratch,
    read_deadline: Duration,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let deadline = Instant::now() + read_deadline;
    let mut buf = [0u8; MAX_HEAD];
    let mut filled = 0;
    let reply = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "request head not complete within {} ms",
                    read_deadline.as_millis()
                ),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()), // closed before asking anything
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                break route(req.method.unwrap_or(""), req.path.unwrap_or(""));
            }
            Ok(httparse::Status::Partial) if filled == buf.len() => break Reply::BadRequest,
            Ok(httparse::Status::Partial) => {}
            Err(_) => break Reply::BadRequest,
        }
    };
    respond(&mut stream, reply, registry, scratch)?;
    drain(&mut stream, deadline.min(Instant::now() + DRAIN_LIMIT));
    Ok(())
}

/// Reads what the client still sends until it closes (or `until`), so that
/// closing with unread bytes does not reset the connection and destroy the
/// response before the client has read it.
fn drain(stream: &mut TcpStream, until: Instant) {
    let mut sink = [0u8; 1024];
    let mut total = 0usize;
    while total < MAX_DRAIN {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    reply: Reply,
    registry: &Registry,
    scratch: &mut Scratch,
) -> io::Result<()> {
    let Scratch { body, response } = scratch;
    body.clear();
    let (status, content_type, send_body) = match reply {
        Reply::Metrics { head } => {
            registry.render(body);
            ("200 OK", CONTENT_TYPE, !head)
        }
        Reply::NotFound => {
            body.push_str("not found: metrics are served on /metrics\n");
            ("404 Not Found", "text/plain; charset=utf-8", true)
        }
        Reply::MethodNotAllowed => {
            body.push_str("method not allowed: use GET or HEAD\n");
            ("405 Method Not Allowed", "text/plain; charset=utf-8", true)
        }
        Reply::BadRequest => {
            body.push_str("bad request\n");
            ("400 Bad Request", "text/plain; charset=utf-8", true)
        }
    };
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if reply == Reply::MethodNotAllowed {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    response.clear();
    response.extend_from_slice(head.as_bytes());
    if send_body {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(response)?;
    stream.flush()?;
    // Half-close so the client reads the whole response, then EOF.
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::core::CoreMetrics;
    use crate::metrics::labels::Route;

    fn server() -> (MetricsServer, Arc<CoreMetrics>) {
        let core = Arc::new(CoreMetrics::default());
        let mut r = Registry::new("9.9.9");
        r.add_core(0, core.clone());
        let s = serve(Arc::new(r), "127.0.0.1:0".parse().unwrap()).unwrap();
        (s, core)
    }

    /// Sends `request` raw and returns (status line, headers, body).
    fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(request).unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_owned(), headers.to_owned(), body.to_owned())
    }

    fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
        headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn scrape_returns_the_exposition() {
        let (s, core) = server();
        core.request(Route::Collect, 204, Duration::from_millis(1));
        let (status, headers, body) = exchange(
            s.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(header(&headers, "content-type"), Some(CONTENT_TYPE));
        assert_eq!(header(&headers, "connection"), Some("close"));
        assert_eq!(
            header(&headers, "content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(
            body.contains("trackgate_requests_total{route=\"collect\",status_class=\"2xx\"} 1\n")
        );
        assert!(body.contains("trackgate_build_info{version=\"9.9.9\"} 1\n"));

        // HEAD: same length announced, no body.
        let (status, headers, body) =
            exchange(s.local_addr(), b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            header(&headers, "content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap()
                > 0
        );
        assert!(body.is_empty());
        s.shutdown();
    }

    #[test]
    fn other_paths_methods_and_garbage() {
        let (s, _) = server();
        let (status, _, _) = exchange(s.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _, _) = exchange(s.local_addr(), b"GET /metricsx HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, headers, _) = exchange(
            s.local_addr(),
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
        let (status, _, _) = exchange(s.local_addr(), b"\x01\x02 nonsense\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        // A head that never ends within the size limit.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        let (status, _, _) = exchange(s.local_addr(), &huge);
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        // Still serving after all that.
        let (status, _, _) = exchange(s.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        s.shutdown();
    }

    #[test]
    fn a_silent_client_does_not_block_the_next_scrape() {
        let core = Arc::new(CoreMetrics::default());
        let mut r = Registry::new("1");
        r.add_core(0, core);
        let s = start(
            Arc::new(r),
            "127.0.0.1:0".parse().unwrap(),
            Duration::from_millis(200),
        )
        .unwrap();
        // Connects, sends half a request line, then stays silent and open.
        let mut silent = TcpStream::connect(s.local_addr()).unwrap();
        silent.write_all(b"GET /met").unwrap();
        // Served once the silent client's deadline has passed.
        let (status, _, _) = exchange(s.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        // The silent client was dropped without an answer.
        let mut rest = Vec::new();
        silent
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(silent.read_to_end(&mut rest).unwrap_or(0), 0);
        s.shutdown();
    }

    #[test]
    fn bind_failure_names_the_setting() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = serve(Arc::new(Registry::new("x")), addr).unwrap_err();
        assert!(matches!(e, MetricsError::Bind { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("METRICS_ADDR") && msg.contains(&addr.to_string()),
            "{msg}"
        );
    }

    #[test]
    fn shutdown_stops_the_listener() {
        let (s, _) = server();
        let addr = s.local_addr();
        s.shutdown();
        // The socket is closed once the thread has been joined.
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn routing() {
        assert_eq!(route("GET", "/metrics"), Reply::Metrics { head: false });
        assert_eq!(route("HEAD", "/metrics?a"), Reply::Metrics { head: true });
        assert_eq!(route("PUT", "/metrics"), Reply::MethodNotAllowed);
        assert_eq!(route("GET", "/metrics/"), Reply::NotFound);
        assert_eq!(route("GET", "*"), Reply::NotFound);
    }
}
