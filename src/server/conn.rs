//! One client connection: read a request head (with the idle and header
//! deadlines), decide whether trackgate answers it (tracking endpoints,
//! health) or the origin does (`proxy`), and loop while keep-alive holds.
//!
//! A locally answered request always has its body fully read (bounded by
//! `MAX_BODY_BYTES`) or the connection is closed after the answer, so no byte
//! of one request is ever taken as the start of the next.

use super::cores::Core;
use crate::debug;
use crate::http::chunked::ChunkedDecoder;
use crate::http::desync::{ambiguity, DesyncMode};
use crate::http::head::{parse_request, Framing, Method, RequestHead};
use crate::http::response::Response;
use crate::metrics::labels::Route;
use crate::net::Conn;
use crate::proxy::forward::{self, Outcome};
use crate::track::client_ip::canonical;
use crate::track::endpoints::Local;
use monoio::buf::IoBufMut;
use monoio::io::CancelableAsyncReadRent;
use monoio::net::TcpStream;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Why no request head could be read.
enum HeadFailure {
    /// The client closed, went idle past the timeout, or we are draining.
    Gone,
    /// The head is invalid or too large: answer with this status and close.
    Invalid(u16, &'static str),
}

/// Serves one accepted connection until it closes.
pub async fn serve(core: Rc<Core>, stream: TcpStream, peer: SocketAddr) {
    core.open.set(core.open.get() + 1);
    core.metrics.connections_open.add(1);
    let peer_ip = canonical(peer.ip());
    let mut conn = Conn::new(stream, core.shared.cfg.idle_timeout);
    // Grown by the first response and kept (a pixel answer needs a few
    // hundred bytes); see `IDLE_READ` for the read side.
    let mut out = Vec::new();
    let mut upgraded = None;
    let mut first = true;
    // Whether we end the connection after answering (rather than the
    // client leaving): then the close lingers, see `linger_close`.
    let mut answered_last = false;
    loop {
        let head = match read_head(&core, &mut conn, first).await {
            Ok(h) => h,
            Err(HeadFailure::Gone) => break,
            Err(HeadFailure::Invalid(status, why)) => {
                let t0 = Instant::now();
                Response::text(status, why).closing().write(&mut out, false);
                let _ = conn.send(&mut out).await;
                core.metrics.request(Route::Rejected, status, t0.elapsed());
                answered_last = true;
                break;
            }
        };
        first = false;
        let t0 = Instant::now();
        if let Some(why) = ambiguity(&head) {
            core.metrics.desync_ambiguous.inc();
            if core.shared.cfg.desync_mode == DesyncMode::Strictest {
                debug!(
                    "ambiguous request refused (DESYNC_MODE=strictest)",
                    core = core.id,
                    reason = why
                );
                Response::text(400, "ambiguous request refused (DESYNC_MODE=strictest)\n")
                    .closing()
                    .write(&mut out, false);
                let _ = conn.send(&mut out).await;
                core.metrics.request(Route::Rejected, 400, t0.elapsed());
                answered_last = true;
                break;
            }
        }
        let keep = match core.tracker.route(&head) {
            Some(local) => {
                Box::pin(answer_locally(
                    &core, &mut conn, &mut out, &head, local, peer_ip, t0,
                ))
                .await
            }
            None => {
                // Boxed: the proxy's state (the origin exchange, injection)
                // is most of a connection task's size and is needed only
                // while a request is proxied, not while the connection idles.
                let f = Box::pin(forward::forward(&core, &mut conn, &head, peer_ip)).await;
                core.metrics.request(Route::Proxy, f.status, t0.elapsed());
                match f.outcome {
                    Outcome::KeepAlive => true,
                    Outcome::Close => false,
                    Outcome::Upgrade(origin) => {
                        upgraded = Some(origin);
                        false
                    }
                }
            }
        };
        if !keep || core.draining() {
            answered_last = upgraded.is_none();
            break;
        }
    }
    core.metrics.bytes_received.add(conn.bytes_in);
    core.metrics.bytes_sent.add(conn.bytes_out);
    if let Some(origin) = upgraded {
        Box::pin(forward::tunnel(
            conn,
            origin,
            core.shared.cfg.tunnel_idle_timeout,
        ))
        .await;
    } else if answered_last {
        linger_close(&mut conn).await;
    }
    core.metrics.connections_open.add(-1);
    core.open.set(core.open.get().saturating_sub(1));
}

/// Reads the next request head. On a new connection the whole head must
/// arrive within `HEADER_TIMEOUT_S`; between keep-alive requests, waiting
/// for the first byte is bounded by `IDLE_TIMEOUT_S` (and cancelled when
/// draining), then the head gets `HEADER_TIMEOUT_S` from its first byte.
async fn read_head(core: &Core, conn: &mut Conn, first: bool) -> Result<RequestHead, HeadFailure> {
    let cfg = &core.shared.cfg;
    let mut head_started: Option<Instant> = first.then(Instant::now);
    loop {
        if !conn.buf.is_empty() {
            head_started.get_or_insert_with(Instant::now);
            match parse_request(&conn.buf) {
                Ok(Some(head)) => {
                    conn.consume(head.head_len());
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err(HeadFailure::Invalid(e.status(), e.reason())),
            }
        }
        let n = match head_started {
            None => {
                if core.draining() {
                    return Err(HeadFailure::Gone);
                }
                let handle = core.idle_cancel.borrow().handle();
                match read_cancelable_within(conn, handle, cfg.idle_timeout).await {
                    Ok(Ok(n)) => n,
                    _ => return Err(HeadFailure::Gone),
                }
            }
            Some(t) => {
                // Nothing received yet (a new connection): closing quietly
                // is kinder than a 408 to a browser's preconnect.
                let nothing_yet = conn.buf.is_empty();
                let timed_out = || {
                    if nothing_yet {
                        HeadFailure::Gone
                    } else {
                        HeadFailure::Invalid(408, "request head took too long\n")
                    }
                };
                let left = cfg.header_timeout.saturating_sub(t.elapsed());
                if left.is_zero() {
                    return Err(timed_out());
                }
                let res = if nothing_yet {
                    if core.draining() {
                        return Err(HeadFailure::Gone);
                    }
                    let handle = core.idle_cancel.borrow().handle();
                    read_cancelable_within(conn, handle, left).await
                } else {
                    conn.read_more_within(left).await
                };
                match res {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return Err(HeadFailure::Gone),
                    Err(_) => return Err(timed_out()),
                }
            }
        };
        if n == 0 {
            return Err(HeadFailure::Gone);
        }
    }
}

/// Closes after our last response the way web servers do ("lingering
/// close"): stop sending, then read and discard what the client still sends
/// (at most 1 MiB, for at most a second). Closing with unread input makes
/// the kernel send a reset, which can destroy the response (a 413, a 400)
/// before the client has read it.
async fn linger_close(conn: &mut Conn) {
    use monoio::io::AsyncWriteRent;
    if conn.stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut discarded = 0usize;
    while discarded < 1024 * 1024 {
        conn.buf.clear();
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.read_more_within(left).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// The buffer a connection waiting for its next request holds: io_uring
/// reads into it while the connection sits idle, so with thousands of idle
/// keep-alive connections its size is most of their memory. Most request
/// heads fit (a longer one is read on in `READ_CHUNK`s).
const IDLE_READ: usize = 2048;

/// [`read_cancelable`] for at most `limit`, on the connection's timer.
async fn read_cancelable_within(
    conn: &mut Conn,
    handle: monoio::io::CancelHandle,
    limit: Duration,
) -> Result<std::io::Result<usize>, crate::net::Elapsed> {
    let mut timer = std::mem::take(&mut conn.timer);
    let res = timer.within(limit, read_cancelable(conn, handle)).await;
    conn.timer = timer;
    res
}

/// A read that the core can cancel when draining starts.
async fn read_cancelable(
    conn: &mut Conn,
    handle: monoio::io::CancelHandle,
) -> std::io::Result<usize> {
    if conn.buf.is_empty() && conn.buf.capacity() > 2 * IDLE_READ {
        // An idle connection does not keep a large buffer grown by an
        // earlier request (a body, a long head).
        conn.buf = Vec::with_capacity(IDLE_READ);
    } else if conn.buf.capacity() - conn.buf.len() < IDLE_READ / 2 {
        conn.buf.reserve(IDLE_READ);
    }
    let buf = std::mem::take(&mut conn.buf);
    let len = buf.len();
    let (res, slice) = conn
        .stream
        .cancelable_read(buf.slice_mut(len..), handle)
        .await;
    conn.buf = slice.into_inner();
    let n = res?;
    conn.bytes_in += n as u64;
    Ok(n)
}

/// The minimum body rate of one request body (`BODY_TIMEOUT_S`,
/// `MIN_BODY_RATE_BPS`; the rule of Apache's `mod_reqtimeout`): the body
/// may take `BODY_TIMEOUT_S` plus one second per `MIN_BODY_RATE_BPS` bytes
/// received so far. A client that falls behind is cut off at the read that
/// would wait past that, so one byte a second cannot hold a connection (and
/// its origin connection) for long.
pub struct BodyClock {
    start: Instant,
    /// `bytes_in` of the connection before the first body byte.
    base: u64,
    grace: Duration,
    rate: u64,
}

impl BodyClock {
    /// Starts the clock for the body that follows the head just consumed
    /// (body bytes already buffered count as received).
    pub fn start(cfg: &crate::config::Config, conn: &Conn) -> BodyClock {
        BodyClock {
            start: Instant::now(),
            base: conn.bytes_in.saturating_sub(conn.buf.len() as u64),
            grace: cfg.body_timeout,
            rate: cfg.min_body_rate,
        }
    }

    /// How long the next read of `conn` may wait: `idle`, or less when the
    /// body would fall behind its rate (zero once it has).
    pub fn read_timeout(&self, conn: &Conn, idle: Duration) -> Duration {
        self.allowed(conn.bytes_in.saturating_sub(self.base))
            .saturating_sub(self.start.elapsed())
            .min(idle)
    }

    /// Time from the body's start by which `received` bytes are on time.
    fn allowed(&self, received: u64) -> Duration {
        if self.rate == 0 {
            return Duration::MAX;
        }
        let earned = Duration::from_secs(received / self.rate)
            + Duration::from_nanos((received % self.rate) * 1_000_000_000 / self.rate);
        self.grace.saturating_add(earned)
    }
}

/// Why a local request's body could not be read.
pub enum BodyError {
    /// Over `MAX_BODY_BYTES`: 413, then close.
    TooLarge,
    /// Invalid chunked framing: 400, then close.
    Invalid,
    /// The client went away or stalled.
    Gone,
}

/// Reads a locally answered request's whole body, at most `limit` bytes.
/// Sends `100 Continue` first when the client asked for it.
pub async fn read_body(
    core: &Core,
    conn: &mut Conn,
    head: &RequestHead,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let timeout = core.shared.cfg.idle_timeout;
    let clock = BodyClock::start(&core.shared.cfg, conn);
    match head.framing() {
        Framing::None | Framing::UntilClose => Ok(Vec::new()),
        Framing::Length(n) => {
            if n > limit as u64 {
                return Err(BodyError::TooLarge);
            }
            let n = n as usize;
            if head.expect_continue() && head.version_minor() == 1 && conn.buf.len() < n {
                send_continue(conn).await?;
            }
            while conn.buf.len() < n {
                read_some(conn, clock.read_timeout(conn, timeout)).await?;
            }
            let body = conn.buf[..n].to_vec();
            conn.consume(n);
            Ok(body)
        }
        Framing::Chunked => {
            if head.expect_continue() && head.version_minor() == 1 && conn.buf.is_empty() {
                send_continue(conn).await?;
            }
            let mut dec = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                if !conn.buf.is_empty() {
                    let used = dec
                        .decode(&conn.buf, &mut body)
                        .map_err(|_| BodyError::Invalid)?;
                    conn.consume(used);
                    if body.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    if dec.is_done() {
                        return Ok(body);
                    }
                }
                read_some(conn, clock.read_timeout(conn, timeout)).await?;
            }
        }
    }
}

async fn send_continue(conn: &mut Conn) -> Result<(), BodyError> {
    let (res, _) = conn
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
        .await;
    res.map_err(|_| BodyError::Gone)
}

async fn read_some(conn: &mut Conn, timeout: Duration) -> Result<(), BodyError> {
    match conn.read_more_within(timeout).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        _ => Err(BodyError::Gone),
    }
}

/// Answers a tracking, token or health request. Returns whether the
/// connection stays open.
async fn answer_locally(
    core: &Core,
    conn: &mut Conn,
    out: &mut Vec<u8>,
    head: &RequestHead,
    local: Local,
    peer: IpAddr,
    t0: Instant,
) -> bool {
    let limit = core.shared.cfg.max_body_bytes;
    let resp = match read_body(core, conn, head, limit).await {
        Ok(body) => core.tracker.answer(local, head, body, peer).await,
        Err(BodyError::TooLarge) => {
            Response::json(413, br#"{"error":"body too large"}"#.to_vec()).closing()
        }
        Err(BodyError::Invalid) => {
            Response::json(400, br#"{"error":"invalid chunked body"}"#.to_vec()).closing()
        }
        Err(BodyError::Gone) => {
            debug!("client left before its body arrived", core = core.id);
            return false;
        }
    };
    let close = resp.close || !head.keep_alive() || core.draining();
    let mut resp = resp;
    resp.close = close;
    if !close && head.version_minor() == 0 {
        resp = resp.header("Connection", "keep-alive");
    }
    resp.write(out, head.method() == Method::Head);
    let ok = conn.send(out).await.is_ok();
    core.metrics
        .request(local.route(), resp.status, t0.elapsed());
    ok && !close
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(grace: u64, rate: u64) -> BodyClock {
        BodyClock {
            start: Instant::now(),
            base: 0,
            grace: Duration::from_secs(grace),
            rate,
        }
    }

    #[test]
    fn body_allowance_grows_with_bytes_received() {
        let c = clock(20, 500);
        assert_eq!(c.allowed(0), Duration::from_secs(20));
        assert_eq!(c.allowed(500), Duration::from_secs(21));
        assert_eq!(c.allowed(750), Duration::from_millis(21_500));
        // One byte a second earns 2 ms a byte: far behind after the grace.
        assert_eq!(c.allowed(20), Duration::from_millis(20_040));
        assert_eq!(clock(20, 0).allowed(0), Duration::MAX);
        assert_eq!(
            clock(20, 1).allowed(u64::MAX),
            Duration::MAX,
            "saturates, never overflows"
        );
    }
}
