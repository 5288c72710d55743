//! Forwarding one request to the origin and its response back.
//!
//! The request head is rebuilt (hop-by-hop headers removed, `X-Forwarded-*`
//! and `Via` added, framing normalised to exactly one of Content-Length or
//! chunked); the body is streamed, never buffered whole. The response is
//! streamed back with backpressure (each piece is written to the client
//! before the next is read), re-framed for the client, and the origin
//! connection goes back to the pool only after a complete response.
//! Redirects go back to the client, never followed. Upgrades (WebSocket)
//! become a byte tunnel once the origin answers 101, not before.

use crate::debug;
use crate::http::chunked::{write_chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use crate::http::desync::ambiguity;
use crate::http::head::{parse_response, Framing, Method, RequestHead, ResponseHead};
use crate::http::response::{push_u64, Response};
use crate::inject::decide;
use crate::metrics::labels::{StatusClass, UpstreamError};
use crate::net::{Conn, Gather};
use crate::proxy::hop::Nominated;
use crate::proxy::inject;
use crate::server::conn::BodyClock;
use crate::server::cores::Core;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What happens to the client connection after a forwarded request.
pub enum Outcome {
    KeepAlive,
    Close,
    /// The origin switched protocols: tunnel bytes between the two.
    Upgrade(Conn),
}

/// The result of forwarding: the status the client got and what's next.
pub struct Forwarded {
    pub status: u16,
    pub outcome: Outcome,
}

fn fail(status: u16) -> Response {
    let body: &'static str = match status {
        504 => "504 Gateway Timeout: the origin did not answer in time\n",
        _ => "502 Bad Gateway: the origin could not be reached or answered badly\n",
    };
    Response::text(status, body).closing()
}

/// Why a response head could not be read from the origin.
enum ReadErr {
    /// The origin closed (or reset) before sending any byte of a response.
    ClosedEarly,
    Timeout,
    Invalid,
    Io,
}

/// Forwards `head` (its body still unread in `client`) to the origin.
pub async fn forward(
    core: &Core,
    client: &mut Conn,
    head: &RequestHead,
    peer: IpAddr,
) -> Forwarded {
    let Some(up) = core.shared.upstream.as_deref() else {
        return reply(
            client,
            Response::text(
                502,
                "502 Bad Gateway: no origin configured (FORWARD_DESTINATION)\n",
            )
            .closing(),
            head,
        )
        .await;
    };
    // Max-Forwards (RFC 9110 §7.6.2) on OPTIONS and TRACE: at 0 we are the
    // final recipient; otherwise the origin gets the value less one.
    let max_forwards = match max_forwards(head) {
        Ok(m) => m,
        Err(()) => {
            let r = Response::text(400, "invalid Max-Forwards (one field, 1*DIGIT)\n").closing();
            return reply(client, r, head).await;
        }
    };
    if max_forwards == Some(0) {
        // OPTIONS: an empty 200 about this hop. TRACE: we never echo a
        // request back (cross-site tracing), so 405.
        let r = if head.method() == Method::Trace {
            Response::text(405, "TRACE is not answered by this proxy\n")
        } else {
            Response::new(200, "text/plain", Vec::new())
        };
        return reply(client, r.closing(), head).await;
    }
    let cfg = &core.shared.cfg;
    // The request head, then the response head, are built in a buffer this
    // core reused from an earlier request.
    let mut req = core.pool.gather();
    build_request_head(&mut req.head, core, head, peer, max_forwards);
    // DESYNC_MODE=defensive (strictest never gets here): an ambiguous
    // request tells the origin to close, and its connection is not reused.
    let ambiguous = ambiguity(head).is_some();
    if ambiguous && !head.is_upgrade() {
        // Before the blank line that ends the head.
        req.head.truncate(req.head.len() - 2);
        req.head.extend_from_slice(b"Connection: close\r\n\r\n");
    }
    let framing = head.framing();
    let retryable = head.method().is_idempotent() && matches!(framing, Framing::None);

    let mut attempt = 0;
    let (mut origin, resp, started) = loop {
        attempt += 1;
        let pooled = if attempt == 1 { core.pool.take() } else { None };
        let (mut origin, reused) = match pooled {
            Some(c) => (c, true),
            None => match core.pool.connect(up).await {
                Ok(c) => (c, false),
                Err(kind) => {
                    core.metrics.upstream_error(kind);
                    let status = if kind == UpstreamError::Timeout {
                        504
                    } else {
                        502
                    };
                    return reply(client, fail(status), head).await;
                }
            },
        };
        let (res, back) = origin.write_gather(req).await;
        req = back;
        if res.is_err() {
            // The origin has no complete head and nothing of the body was
            // read from the client yet: any method may go again, once.
            if reused && attempt == 1 && !req.head.is_empty() {
                continue;
            }
            core.metrics.upstream_error(UpstreamError::Io);
            return reply(client, fail(502), head).await;
        }
        // We answer `Expect: 100-continue` ourselves (the header is not
        // forwarded): the head is already at the origin, and the body
        // follows as the client sends it. HTTP/1.0 clients get no 1xx.
        if head.expect_continue() && head.version_minor() == 1 && !matches!(framing, Framing::None)
        {
            let (res, _) = client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                .await;
            if res.is_err() {
                return Forwarded {
                    status: 499,
                    outcome: Outcome::Close,
                };
            }
        }
        let sent = match framing {
            Framing::None | Framing::UntilClose => Ok(()),
            Framing::Length(n) => {
                let clock = BodyClock::start(cfg, client);
                let mut g = Gather::default();
                copy_length(
                    client,
                    &mut origin,
                    n,
                    cfg.idle_timeout,
                    Some(&clock),
                    &mut g,
                    0,
                )
                .await
            }
            Framing::Chunked => {
                let clock = BodyClock::start(cfg, client);
                let mut g = Gather::default();
                copy_chunked(
                    client,
                    &mut origin,
                    cfg.idle_timeout,
                    true,
                    Some(&clock),
                    &mut g,
                )
                .await
            }
        };
        match sent {
            Ok(()) => {}
            Err(Side::Source) => {
                // The client stopped sending its body: nothing to answer.
                return Forwarded {
                    status: 499,
                    outcome: Outcome::Close,
                };
            }
            Err(Side::Sink) => {
                // The origin stopped reading the body: it may have answered
                // early (a 413, a redirect); relay that rather than a 502.
                let wait = cfg.upstream_timeout.min(Duration::from_secs(2));
                if let Ok(early) = read_response_head(&mut origin, head.method(), wait).await {
                    if !(100..200).contains(&early.status()) {
                        break (origin, early, Instant::now());
                    }
                }
                core.metrics.upstream_error(UpstreamError::Io);
                return reply(client, fail(502), head).await;
            }
            Err(Side::Framing) => {
                let r = Response::text(400, "invalid chunked request body\n").closing();
                return reply(client, r, head).await;
            }
        }
        let started = Instant::now();
        match read_response_head(&mut origin, head.method(), cfg.upstream_timeout).await {
            Ok(resp) => break (origin, resp, started),
            Err(ReadErr::ClosedEarly) if reused && retryable && attempt == 1 => {
                debug!(
                    "pooled origin connection was closed; retrying once",
                    core = core.id
                );
                continue;
            }
            Err(e) => return upstream_failed(core, client, head, e).await,
        }
    };
    let mut resp = resp;
    // Interim responses: 103 Early Hints and others go to HTTP/1.1 clients
    // (never to 1.0 ones); a 100 was already sent by us; 101 only when the
    // client asked to upgrade. An origin gets at most MAX_INTERIM of them.
    const MAX_INTERIM: usize = 16;
    let mut interim = 0;
    loop {
        let status = resp.status();
        if !(100..200).contains(&status) || status == 101 {
            break;
        }
        interim += 1;
        if interim > MAX_INTERIM {
            core.metrics.upstream_error(UpstreamError::BadResponse);
            return reply(client, fail(502), head).await;
        }
        if status != 100 && head.version_minor() == 1 && !relay_head(client, &resp).await {
            return Forwarded {
                status,
                outcome: Outcome::Close,
            };
        }
        origin.consume(resp.head_len());
        resp = match read_response_head(&mut origin, head.method(), cfg.upstream_timeout).await {
            Ok(r) => r,
            Err(e) => return upstream_failed(core, client, head, e).await,
        };
    }
    if resp.has_other_transfer_coding() {
        // A transfer coding besides chunked (`gzip, chunked`): passing it
        // on is hop-by-hop work we don't do, and dropping it would hand
        // the client bytes it cannot read.
        core.metrics.upstream_error(UpstreamError::BadResponse);
        return reply(client, fail(502), head).await;
    }
    // The head's bytes are still at the front of the origin's buffer (the
    // plain copy sends the body from behind them, without moving it).
    let head_len = resp.head_len();
    let status = resp.status();
    core.metrics.upstream_duration.observe(started.elapsed());
    core.metrics.upstream_requests[StatusClass::of(status).index()].inc();

    if status == 101 {
        if !head.is_upgrade() {
            core.metrics.upstream_error(UpstreamError::BadResponse);
            return reply(client, fail(502), head).await;
        }
        origin.consume(head_len);
        if !relay_head(client, &resp).await {
            return Forwarded {
                status,
                outcome: Outcome::Close,
            };
        }
        return Forwarded {
            status,
            outcome: Outcome::Upgrade(origin),
        };
    }

    // HTML injection: an eligible page takes the injection path. A bodiless
    // response that stands for an injected page (a HEAD to one, or a 304
    // revalidating one) gets the head edits the injected GET would get, so
    // a cache updating its stored page from it stays right; it loses its
    // Content-Length (the GET's body differs).
    let mut mirror = None;
    let mut inject_enc = None;
    if cfg.inject {
        match decide::eligible(head, &resp) {
            Ok(enc) => inject_enc = Some(enc),
            Err(skip) => {
                core.metrics.inject(inject::skip_result(skip));
                let page_enc = if head.method() == Method::Head {
                    decide::eligible_except_method(head, &resp).ok()
                } else {
                    None
                };
                if page_enc.is_some() || decide::revalidates_injectable(head, &resp) {
                    mirror = inject::mirror(&core.inject, head, &resp, page_enc);
                }
            }
        }
    }
    let edits = mirror.as_ref().map_or(Edits::NONE, inject::Mirror::edits);
    let origin_framing = resp.framing();
    let (copied, mut keep_client) = match inject_enc {
        Some(enc) => {
            let job = inject::Job {
                core,
                head,
                resp: &resp,
                peer,
                keep_client: head.keep_alive() && !core.draining(),
            };
            origin.consume(head_len);
            let done = inject::serve(job, client, &mut origin, enc).await;
            if done.nothing_sent {
                core.metrics.upstream_error(UpstreamError::Closed);
                return reply(client, fail(502), head).await;
            }
            (done.result, done.keep_client)
        }
        None => {
            let mut g = req;
            g.head.clear();
            let done = plain_copy(
                core,
                client,
                &mut origin,
                head,
                &resp,
                &edits,
                head_len,
                &mut g,
            )
            .await;
            core.pool.recycle(g);
            done
        }
    };
    let origin_ok = match copied {
        Ok(()) => true,
        Err(Side::Sink) => {
            // The client went away mid-response.
            return Forwarded {
                status,
                outcome: Outcome::Close,
            };
        }
        Err(Side::Source) | Err(Side::Framing) => {
            // The origin closed mid-body or framed it badly: the client
            // cannot tell the body is short unless we close.
            core.metrics.upstream_error(UpstreamError::Closed);
            keep_client = false;
            false
        }
    };
    if origin_ok
        && !ambiguous
        && resp.keep_alive()
        && !matches!(origin_framing, Framing::UntilClose)
    {
        core.pool.put(origin);
    }
    Forwarded {
        status,
        outcome: if keep_client {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        },
    }
}

/// Sends the response head and copies the body unchanged (re-framed for
/// the client); the head goes out with the first piece of the body when
/// that piece is already here. The origin's buffer starts with the
/// response head (`head_len` bytes). Returns the copy's result and whether
/// the client connection stays open. `g` is empty; its buffers are reused.
#[allow(clippy::too_many_arguments)]
async fn plain_copy(
    core: &Core,
    client: &mut Conn,
    origin: &mut Conn,
    head: &RequestHead,
    resp: &ResponseHead,
    edits: &Edits<'_>,
    head_len: usize,
    g: &mut Gather,
) -> (Result<(), Side>, bool) {
    let cfg = &core.shared.cfg;
    // Framing toward the client. HTTP/1.0 clients cannot take chunked.
    let client_11 = head.version_minor() == 1;
    let origin_framing = resp.framing();
    let (out_framing, close_delimited) = match origin_framing {
        Framing::None => (OutFraming::AsIs, false),
        Framing::Length(n) => (OutFraming::Length(n), false),
        Framing::Chunked | Framing::UntilClose if client_11 => (OutFraming::Chunked, false),
        Framing::Chunked | Framing::UntilClose => (OutFraming::Close, true),
    };
    let keep_client = head.keep_alive() && !close_delimited && !core.draining();
    let keep_alive_10 = keep_client && head.version_minor() == 0;
    write_response_head(
        &mut g.head,
        resp,
        Some(out_framing),
        !keep_client,
        keep_alive_10,
        edits,
    );
    let reframe = out_framing == OutFraming::Chunked;
    let timeout = cfg.upstream_timeout;
    let copied = match origin_framing {
        Framing::None => {
            origin.consume(head_len);
            flush(client, g).await
        }
        Framing::Length(n) => copy_length(origin, client, n, timeout, None, g, head_len).await,
        Framing::Chunked => {
            origin.consume(head_len);
            copy_chunked(origin, client, timeout, reframe, None, g).await
        }
        Framing::UntilClose => {
            origin.consume(head_len);
            copy_until_close(origin, client, timeout, reframe, g).await
        }
    };
    (copied, keep_client)
}

/// Sends what `g.head` holds (bytes that must reach the peer before the
/// copy waits for more input), if anything.
async fn flush(dst: &mut Conn, g: &mut Gather) -> Result<(), Side> {
    if g.head.is_empty() {
        return Ok(());
    }
    let (r, mut back) = dst.write_gather(std::mem::take(g)).await;
    back.head.clear();
    *g = back;
    r.map_err(|_| Side::Sink)
}

/// Sends an origin head with no body of its own (an interim 1xx or a 101)
/// to the client as it is. Returns whether the write succeeded.
async fn relay_head(client: &mut Conn, resp: &ResponseHead) -> bool {
    let mut out = Vec::with_capacity(512);
    write_response_head(&mut out, resp, None, false, false, &Edits::NONE);
    client.write_all(out).await.0.is_ok()
}

/// Ends a chunked body with the last chunk.
pub(super) async fn end_chunked(dst: &mut Conn) -> Result<(), Side> {
    let (r, _) = dst.write_all(LAST_CHUNK.to_vec()).await;
    r.map_err(|_| Side::Sink)
}

/// Answers the client when the origin failed to produce a response head.
async fn upstream_failed(
    core: &Core,
    client: &mut Conn,
    head: &RequestHead,
    e: ReadErr,
) -> Forwarded {
    let (kind, status) = match e {
        ReadErr::Timeout => (UpstreamError::Timeout, 504),
        ReadErr::Invalid => (UpstreamError::BadResponse, 502),
        ReadErr::ClosedEarly => (UpstreamError::Closed, 502),
        ReadErr::Io => (UpstreamError::Io, 502),
    };
    core.metrics.upstream_error(kind);
    reply(client, fail(status), head).await
}

/// Writes a locally made response (an error) to the client.
async fn reply(client: &mut Conn, resp: Response, head: &RequestHead) -> Forwarded {
    let mut out = Vec::with_capacity(256);
    resp.write(&mut out, head.method() == Method::Head);
    let _ = client.send(&mut out).await;
    Forwarded {
        status: resp.status,
        outcome: Outcome::Close,
    }
}

/// The request head sent to the origin.
/// The `Max-Forwards` of an OPTIONS or TRACE request (`None` for other
/// methods or without the field); `Err` for a repeated field or a value
/// that is not `1*DIGIT`. Values past `u32::MAX` count as `u32::MAX`.
fn max_forwards(head: &RequestHead) -> Result<Option<u64>, ()> {
    if !matches!(head.method(), Method::Options | Method::Trace) {
        return Ok(None);
    }
    let mut values = head.headers_named(b"max-forwards");
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() || v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    let n = v
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(u64::MAX)
        .min(u64::from(u32::MAX));
    Ok(Some(n))
}

fn build_request_head(
    out: &mut Vec<u8>,
    core: &Core,
    head: &RequestHead,
    peer: IpAddr,
    max_forwards: Option<u64>,
) {
    let cfg = &core.shared.cfg;
    let dest = core.shared.upstream.as_deref().map(|u| &u.dest);
    out.extend_from_slice(head.method_bytes());
    out.push(b' ');
    let target = head.target();
    if let Some(d) = dest {
        if target != b"*" {
            out.extend_from_slice(d.base_path.as_bytes());
        }
    }
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let client_host = head.host().unwrap_or(b"");
    match dest {
        Some(d) if !cfg.preserve_host || client_host.is_empty() => {
            out.extend_from_slice(d.authority.as_bytes())
        }
        _ => out.extend_from_slice(client_host),
    }
    out.extend_from_slice(b"\r\n");
    let trusted_peer = cfg.trusted_proxies.is_trusted(peer);
    let mut xff: Vec<u8> = Vec::new();
    let mut via: Vec<u8> = Vec::new();
    let mut proto: Option<&[u8]> = None;
    let mut fwd_host: Option<&[u8]> = None;
    // HTML injection: a request that may get an injectable page asks the
    // origin only for codings we can decode.
    let accept_encoding = if cfg.inject {
        decide::narrow_accept_encoding(head)
    } else {
        None
    };
    if let Some(ae) = accept_encoding {
        out.extend_from_slice(b"Accept-Encoding: ");
        out.extend_from_slice(ae.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let nominated = Nominated::of(head.connection_tokens());
    for (name, value) in head.headers() {
        if accept_encoding.is_some() && name.eq_ignore_ascii_case(b"accept-encoding") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"expect")
            || (max_forwards.is_some() && name.eq_ignore_ascii_case(b"max-forwards"))
            || nominated.drops(name)
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            xff.extend_from_slice(value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"via") {
            via.extend_from_slice(value);
            via.extend_from_slice(b", ");
            continue;
        }
        // Only a trusted proxy may tell the origin who the client is and
        // which scheme and host it used; anyone else's claims are dropped
        // (X-Forwarded-For is kept and appended to: the origin reads it
        // from the right).
        if !trusted_peer && is_forwarding_claim(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            if trusted_peer && proto.is_none() {
                proto = Some(value);
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-host") {
            if trusted_peer && fwd_host.is_none() {
                fwd_host = Some(value);
            }
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if !xff.is_empty() {
        out.extend_from_slice(&xff);
        out.extend_from_slice(b", ");
    }
    push_ip(out, peer);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(proto.unwrap_or(b"http"));
    if let Some(h) = fwd_host.or(head.host()) {
        out.extend_from_slice(b"\r\nX-Forwarded-Host: ");
        out.extend_from_slice(h);
    }
    out.extend_from_slice(b"\r\nVia: ");
    out.extend_from_slice(&via);
    out.extend_from_slice(if head.version_minor() == 0 {
        b"1.0 trackgate"
    } else {
        b"1.1 trackgate"
    });
    out.extend_from_slice(b"\r\n");
    if let Some(n) = max_forwards {
        out.extend_from_slice(b"Max-Forwards: ");
        push_u64(out, n.saturating_sub(1));
        out.extend_from_slice(b"\r\n");
    }
    match head.framing() {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    if head.is_upgrade() {
        if let Some(u) = head.header(b"upgrade") {
            out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
            out.extend_from_slice(u);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `ip` in its usual text form (without `fmt` for IPv4).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.extend_from_slice(crate::net::IpText::of(ip).as_bytes());
}

/// Headers by which a proxy in front tells the origin about the client.
fn is_forwarding_claim(name: &[u8]) -> bool {
    const CLAIMS: [&[u8]; 5] = [
        b"forwarded",
        b"x-real-ip",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-ssl",
    ];
    CLAIMS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// How the response body is framed toward the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutFraming {
    /// No body (HEAD, 1xx, 204, 304): the origin's Content-Length, if any,
    /// is forwarded as it is.
    AsIs,
    Length(u64),
    Chunked,
    /// Close-delimited (an HTTP/1.0 client and a body of unknown length).
    Close,
}

/// Changes to the origin's response head (HTML injection).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Edits<'a> {
    /// Drop `Content-Length` even when the head is forwarded as it is (a
    /// HEAD response to an injectable page).
    pub drop_content_length: bool,
    /// The body was rewritten: weaken `ETag`, drop the digests and
    /// `Accept-Ranges`, make sure `Vary` names `Accept-Encoding`.
    pub rewritten: bool,
    /// The body goes out decoded.
    pub drop_content_encoding: bool,
    /// New values for the `Content-Security-Policy` headers, in order.
    pub csp: Option<&'a [Vec<u8>]>,
    /// Add a `Cache-Control: private` field (beside any the origin sent:
    /// the fields combine into one directive list).
    pub add_private: bool,
}

impl Edits<'_> {
    pub(crate) const NONE: Edits<'static> = Edits {
        drop_content_length: false,
        rewritten: false,
        drop_content_encoding: false,
        csp: None,
        add_private: false,
    };
}

/// Headers that describe the exact bytes of a body: wrong after a rewrite.
const REWRITE_DROPS: [&[u8]; 4] = [
    b"content-md5",
    b"digest",
    b"content-digest",
    b"accept-ranges",
];

/// A `Vary` value that already covers `Accept-Encoding` (or `*`).
fn varies_on_encoding(v: &[u8]) -> bool {
    v.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t.eq_ignore_ascii_case(b"accept-encoding") || t == b"*"
    })
}

/// Writes the response head for the client. `close` adds `Connection:
/// close`; `keep_alive_10` adds `Connection: keep-alive` (an HTTP/1.0
/// client keeps the connection only when told so).
pub(crate) fn write_response_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    framing: Option<OutFraming>,
    close: bool,
    keep_alive_10: bool,
    edits: &Edits<'_>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status()));
    out.push(b' ');
    out.extend_from_slice(resp.reason());
    out.extend_from_slice(b"\r\n");
    let upgrade = resp.status() == 101;
    let mut vary_ok = false;
    let mut csp_index = 0;
    let nominated = Nominated::of(resp.connection_tokens());
    for (name, value) in resp.headers() {
        if upgrade
            && (name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"connection"))
        {
            continue;
        }
        if nominated.drops(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length")
            && (framing != Some(OutFraming::AsIs) || edits.drop_content_length)
        {
            continue;
        }
        if edits.drop_content_encoding && name.eq_ignore_ascii_case(b"content-encoding") {
            continue;
        }
        if edits.rewritten {
            if REWRITE_DROPS.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                continue;
            }
            if name.eq_ignore_ascii_case(b"etag") {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                if !value.starts_with(b"W/") {
                    out.extend_from_slice(b"W/");
                }
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
                continue;
            }
            if name.eq_ignore_ascii_case(b"vary") && varies_on_encoding(value) {
                vary_ok = true;
            }
        }
        if let Some(new) = edits.csp {
            if name.eq_ignore_ascii_case(b"content-security-policy") {
                if let Some(v) = new.get(csp_index) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                    csp_index += 1;
                    continue;
                }
            }
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if upgrade {
        if let Some(u) = resp.header(b"upgrade") {
            out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
            out.extend_from_slice(u);
            out.extend_from_slice(b"\r\n");
        }
    }
    if edits.rewritten && !vary_ok {
        out.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    if edits.add_private {
        out.extend_from_slice(b"Cache-Control: private\r\n");
    }
    out.extend_from_slice(b"Via: 1.1 trackgate\r\n");
    match framing {
        Some(OutFraming::Length(n)) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Some(OutFraming::Chunked) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if close || framing == Some(OutFraming::Close) {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if keep_alive_10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

async fn read_response_head(
    origin: &mut Conn,
    method: Method,
    timeout: Duration,
) -> Result<ResponseHead, ReadErr> {
    let deadline = Instant::now() + timeout;
    let mut left = timeout;
    loop {
        if !origin.buf.is_empty() {
            match parse_response(&origin.buf, method) {
                // The head's bytes stay in the buffer (see `forward`).
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(_) => return Err(ReadErr::Invalid),
            }
        }
        let res = origin.read_more_within(left).await;
        left = deadline.saturating_duration_since(Instant::now());
        match res {
            Err(_) => return Err(ReadErr::Timeout),
            Ok(Ok(0)) if origin.buf.is_empty() => return Err(ReadErr::ClosedEarly),
            Ok(Ok(0)) => return Err(ReadErr::Invalid),
            Ok(Ok(_)) => {}
            Ok(Err(e))
                if origin.buf.is_empty()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(ReadErr::ClosedEarly)
            }
            Ok(Err(_)) => return Err(ReadErr::Io),
        }
    }
}

/// Which side of a copy failed.
pub(crate) enum Side {
    /// Reading failed or ended early.
    Source,
    /// Writing failed.
    Sink,
    /// The source's chunked framing is invalid.
    Framing,
}

pub(crate) async fn fill(src: &mut Conn, timeout: Duration) -> Result<(), Side> {
    match src.read_more_within(timeout).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        _ => Err(Side::Source),
    }
}

/// Writes `data` to `dst`, as one chunk when `chunked` (header, data and
/// CRLF in one write).
pub(crate) async fn emit(
    dst: &mut Conn,
    data: Vec<u8>,
    chunked: bool,
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>, Side> {
    if chunked && data.is_empty() {
        return Ok(data);
    }
    let mut g = Gather::default();
    g.head = std::mem::take(scratch);
    g.head.clear();
    g.to = data.len();
    g.body = data;
    if chunked {
        write_chunk_header(&mut g.head, g.to);
        g.tail = CHUNK_END;
    }
    let (r, mut back) = dst.write_gather(g).await;
    r.map_err(|_| Side::Sink)?;
    let mut data = back.take_body();
    *scratch = std::mem::take(&mut back.head);
    data.clear();
    Ok(data)
}

/// Copies exactly `n` body bytes from `src` (its buffer first, from `skip`:
/// the bytes before are already handled) to `dst`, each piece written from
/// the buffer it was read into. Whatever `g.head` holds goes out first,
/// with the first piece when that is already buffered.
/// `clock`: a client's request body, held to the minimum body rate.
async fn copy_length(
    src: &mut Conn,
    dst: &mut Conn,
    mut n: u64,
    timeout: Duration,
    clock: Option<&BodyClock>,
    g: &mut Gather,
    mut skip: usize,
) -> Result<(), Side> {
    while n > 0 {
        if src.buf.len() <= skip {
            src.buf.clear();
            skip = 0;
            flush(dst, g).await?;
            fill(src, clock.map_or(timeout, |c| c.read_timeout(src, timeout))).await?;
        }
        let take = ((src.buf.len() - skip) as u64).min(n) as usize;
        n -= take as u64;
        g.body = std::mem::take(&mut src.buf);
        g.from = skip;
        g.to = skip + take;
        let (r, mut back) = dst.write_gather(std::mem::take(g)).await;
        // Whatever the write's result, these bytes are used up (never read
        // again as the start of the next message).
        src.buf = back.take_body();
        *g = back;
        src.consume(skip + take);
        skip = 0;
        r.map_err(|_| Side::Sink)?;
    }
    src.consume(skip);
    flush(dst, g).await
}

/// Decodes a chunked body from `src` and writes it to `dst`, re-chunked when
/// `chunked_out` (trailers are dropped), raw otherwise. Whatever `g.head`
/// holds goes out first, with the first data.
async fn copy_chunked(
    src: &mut Conn,
    dst: &mut Conn,
    timeout: Duration,
    chunked_out: bool,
    clock: Option<&BodyClock>,
    g: &mut Gather,
) -> Result<(), Side> {
    let mut dec = ChunkedDecoder::new();
    let mut data = Vec::with_capacity(crate::net::READ_CHUNK);
    loop {
        if !src.buf.is_empty() {
            let used = dec.decode(&src.buf, &mut data).map_err(|_| Side::Framing)?;
            src.consume(used);
            let done = dec.is_done();
            if !data.is_empty() {
                if chunked_out {
                    write_chunk_header(&mut g.head, data.len());
                    g.tail = if done { DATA_THEN_LAST } else { CHUNK_END };
                }
                g.to = data.len();
                g.body = data;
                let (r, mut back) = dst.write_gather(std::mem::take(g)).await;
                data = back.take_body();
                data.clear();
                *g = back;
                r.map_err(|_| Side::Sink)?;
                if done {
                    return Ok(());
                }
            } else if done {
                if chunked_out {
                    g.head.extend_from_slice(LAST_CHUNK);
                }
                return flush(dst, g).await;
            }
        }
        flush(dst, g).await?;
        fill(src, clock.map_or(timeout, |c| c.read_timeout(src, timeout))).await?;
    }
}

/// The end of a chunk's data followed by the last chunk.
const DATA_THEN_LAST: &[u8] = b"\r\n0\r\n\r\n";

/// Copies a close-delimited body until the origin closes. Whatever
/// `g.head` holds goes out first, with the first data.
async fn copy_until_close(
    src: &mut Conn,
    dst: &mut Conn,
    timeout: Duration,
    chunked_out: bool,
    g: &mut Gather,
) -> Result<(), Side> {
    loop {
        if !src.buf.is_empty() {
            if chunked_out {
                write_chunk_header(&mut g.head, src.buf.len());
                g.tail = CHUNK_END;
            }
            g.to = src.buf.len();
            g.body = std::mem::take(&mut src.buf);
            let (r, mut back) = dst.write_gather(std::mem::take(g)).await;
            src.buf = back.take_body();
            src.buf.clear();
            *g = back;
            r.map_err(|_| Side::Sink)?;
        }
        flush(dst, g).await?;
        match src.read_more_within(timeout).await {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {}
            _ => return Err(Side::Source),
        }
    }
    if chunked_out {
        end_chunked(dst).await?;
    }
    Ok(())
}

/// Tunnels bytes both ways after a 101 until either side closes, or no
/// byte has moved in one direction for `idle`.
pub async fn tunnel(mut client: Conn, mut origin: Conn, idle: Duration) {
    // Bytes that arrived early on either side go first.
    if !client.buf.is_empty() {
        let data = std::mem::take(&mut client.buf);
        if origin.write_all(data).await.0.is_err() {
            return;
        }
    }
    if !origin.buf.is_empty() {
        let data = std::mem::take(&mut origin.buf);
        if client.write_all(data).await.0.is_err() {
            return;
        }
    }
    let (cr, cw) = client.stream.into_split();
    let (or, ow) = origin.stream.into_split();
    monoio::join!(pipe(cr, ow, idle), pipe(or, cw, idle));
}

async fn pipe<R: AsyncReadRent, W: AsyncWriteRent>(mut r: R, mut w: W, idle: Duration) {
    let mut buf = Vec::with_capacity(crate::net::READ_CHUNK);
    loop {
        let (res, b) = match monoio::time::timeout(idle, r.read(buf)).await {
            Ok(x) => x,
            Err(_) => break,
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (res, mut b) = match monoio::time::timeout(idle, w.write_all(buf)).await {
            Ok(x) => x,
            Err(_) => break,
        };
        if res.is_err() {
            break;
        }
        b.clear();
        buf = b;
    }
    let _ = w.shutdown().await;
}
