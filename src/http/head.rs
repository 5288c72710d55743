//! Request and response heads: parsing, validation and the framing decision
//! (RFC 9110 / RFC 9112), on the raw bytes with `httparse`.
//!
//! The proxy is the front door, so the request side is strict: anything two
//! HTTP implementations could read differently is refused before a byte goes
//! upstream. `httparse` does the tokenising; this module adds what it leaves
//! open and owns every rule that decides where a message ends:
//!
//! * **Limits.** Request line (with any leading empty lines) plus header
//!   section: at most [`MAX_HEAD_BYTES`] bytes and [`MAX_HEADERS`] fields,
//!   else 431 (502 for a response).
//! * **Line ends.** CRLF only. RFC 9112 §2.2 lets a recipient accept a bare
//!   LF, but we refuse it (400 / 502), in the head and in chunk framing alike
//!   (see `chunked.rs`): one rule everywhere, the same as llhttp's strict mode,
//!   and nothing for a downstream parser to read differently should raw bytes
//!   ever be passed on. `httparse` accepts bare LF, so we scan for it. A bare
//!   CR, NUL, obs-fold (a line starting with SP/HTAB), whitespace between a
//!   field name and its colon and invalid name or value bytes are refused by
//!   `httparse` itself (tests below pin that down).
//! * **Request line.** Any token method (unknown ones are `Method::Other` and
//!   go to the origin); CONNECT is 405, we don't tunnel. Target: origin-form
//!   (`/…`), `*` for OPTIONS only, or absolute-form `http(s)://authority/…`,
//!   which is rewritten to origin-form and whose authority replaces Host
//!   (RFC 9112 §3.2.2); userinfo in it is refused (RFC 9110 §4.2.4). Target
//!   bytes must be visible ASCII without `#` (a fragment is never part of a
//!   request target). Versions: HTTP/1.0 and HTTP/1.1; another well-formed
//!   `HTTP/x.y` is 505, anything else 400.
//! * **Host.** HTTP/1.1: exactly one Host field; HTTP/1.0: at most one. Its
//!   value must be a valid `host[:port]` without userinfo (empty is refused).
//! * **Body framing.** Content-Length is `1*DIGIT` fitting a `u64`, and one
//!   field only. Transfer-Encoding with Content-Length, or in HTTP/1.0, is
//!   `BadFraming` (400, close); the codings (all fields, comma lists) must be
//!   exactly `chunked` once and last: `chunked` elsewhere, twice, or an empty
//!   element is 400, any other coding (gzip, identity, …) 501 — we implement
//!   none and could not forward one without re-framing it.
//!
//! Responses come from the origin we chose, so their rules follow RFC 9112
//! §6.3 for the framing (HEAD / 1xx / 204 / 304 / 2xx-to-CONNECT have no body,
//! Transfer-Encoding with `chunked` last is chunked, other Transfer-Encoding is
//! read until close, identical repeated Content-Length values count as one);
//! every error there is a 502 and the upstream connection is not reused.
//!
//! A parsed head owns one copy of its bytes and a `Vec` of index ranges into
//! it (two allocations per message), so header order and case survive and no
//! field is copied.

use std::fmt;
use std::mem::MaybeUninit;

/// Longest head (leading empty lines, start line and header section, with
/// the final CRLF) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// The request method. Methods are case-sensitive: `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
    /// Any other token; [`RequestHead::method_bytes`] has its name.
    Other,
}

impl Method {
    /// Maps a method token to its variant (case-sensitive, RFC 9110 §9.1).
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Idempotent per RFC 9110 §9.2.2 (safe to retry on a fresh connection).
    /// `Other` is treated as not idempotent.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (may be 0).
    Length(u64),
    /// Chunked transfer coding (see `chunked::ChunkedDecoder`).
    Chunked,
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
}

/// Why a head was refused. Every error means the message cannot be handled:
/// answer with [`status`](Self::status) and close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// No complete head within [`MAX_HEAD_BYTES`] (431).
    TooLarge,
    /// More than [`MAX_HEADERS`] header fields (431).
    TooManyHeaders,
    /// Malformed request line: method, target syntax, separators (400).
    BadRequestLine,
    /// A CR without LF, an LF without CR, or junk where a line must end (400).
    BadLineEnding,
    /// Invalid field name or value byte, obs-fold, whitespace before colon (400).
    BadHeader,
    /// A well-formed HTTP version other than 1.0 and 1.1 (505).
    UnsupportedVersion,
    /// Request target not allowed: fragment, non-ASCII, other scheme,
    /// userinfo, `*` without OPTIONS, not starting with `/` (400).
    BadTarget,
    /// CONNECT: we don't tunnel (405).
    MethodNotAllowed,
    /// HTTP/1.1 request without Host (400).
    MissingHost,
    /// More than one Host field (400).
    DuplicateHost,
    /// Host value (or absolute-form authority) is not a valid `host[:port]` (400).
    BadHost,
    /// Content-Length is not `1*DIGIT` fitting a u64 (400).
    BadContentLength,
    /// More than one Content-Length field (400).
    DuplicateContentLength,
    /// Transfer-Encoding together with Content-Length, or in HTTP/1.0 (400).
    BadFraming,
    /// Transfer-Encoding with `chunked` not last, twice, or an empty element (400).
    BadTransferEncoding,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferCoding,
    /// The origin's response head was unusable (502).
    Upstream(UpstreamError),
}

/// What was wrong with a response head. All are answered with 502 and the
/// upstream connection is not reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No complete head within [`MAX_HEAD_BYTES`].
    TooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// Malformed status line (version, code, reason bytes).
    BadStatusLine,
    /// Status code outside 100..=599.
    BadStatus,
    /// Bare CR or bare LF.
    BadLineEnding,
    /// Invalid field name or value byte, obs-fold, whitespace before colon.
    BadHeader,
    /// Malformed Content-Length, or several with differing values.
    BadContentLength,
    /// Transfer-Encoding with Content-Length, in HTTP/1.0, or `chunked` twice.
    BadFraming,
}

impl HeadError {
    /// The status code to answer the client with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::MethodNotAllowed => 405,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::Upstream(_) => 502,
            HeadError::BadRequestLine
            | HeadError::BadLineEnding
            | HeadError::BadHeader
            | HeadError::BadTarget
            | HeadError::MissingHost
            | HeadError::DuplicateHost
            | HeadError::BadHost
            | HeadError::BadContentLength
            | HeadError::DuplicateContentLength
            | HeadError::BadFraming
            | HeadError::BadTransferEncoding => 400,
        }
    }

    /// A short explanation, safe to send to the client (says nothing about
    /// the origin beyond "bad gateway").
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "request header section too large",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::BadRequestLine => "malformed request line",
            HeadError::BadLineEnding => "malformed line ending",
            HeadError::BadHeader => "malformed header field",
            HeadError::UnsupportedVersion => "HTTP version not supported",
            HeadError::BadTarget => "invalid request target",
            HeadError::MethodNotAllowed => "CONNECT not allowed",
            HeadError::MissingHost => "missing Host header",
            HeadError::DuplicateHost => "more than one Host header",
            HeadError::BadHost => "invalid Host header",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::DuplicateContentLength => "more than one Content-Length",
            HeadError::BadFraming => "conflicting message framing",
            HeadError::BadTransferEncoding => "invalid Transfer-Encoding",
            HeadError::UnsupportedTransferCoding => "transfer coding not implemented",
            HeadError::Upstream(_) => "bad gateway",
        }
    }
}

impl UpstreamError {
    fn detail(&self) -> &'static str {
        match self {
            UpstreamError::TooLarge => "response header section too large",
            UpstreamError::TooManyHeaders => "too many response header fields",
            UpstreamError::BadStatusLine => "malformed status line",
            UpstreamError::BadStatus => "status code out of range",
            UpstreamError::BadLineEnding => "malformed line ending",
            UpstreamError::BadHeader => "malformed header field",
            UpstreamError::BadContentLength => "invalid or conflicting Content-Length",
            UpstreamError::BadFraming => "conflicting message framing",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Upstream(e) => write!(f, "upstream response: {}", e.detail()),
            e => write!(f, "request: {} ({})", e.reason(), e.status()),
        }
    }
}

impl std::error::Error for HeadError {}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for UpstreamError {}

/// A byte range in a head's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // Heads are bounded by MAX_HEAD_BYTES (plus a rewritten target of at
        // most the same size), far below u32::MAX.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    name: Span,
    value: Span,
}

/// The owned head bytes and the index of its fields: what request and
/// response heads share.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    /// The head as received (`head_len` bytes), possibly followed by a
    /// rewritten request target.
    buf: Vec<u8>,
    fields: Vec<Field>,
    head_len: usize,
}

impl Fields {
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(move |f| (f.name.get(&self.buf), f.value.get(&self.buf)))
    }

    fn named<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn first(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The non-empty, OWS-trimmed elements of every `name` field's comma list.
    fn list<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.named(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }
}

/// A parsed, validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    f: Fields,
    method: Method,
    method_span: Span,
    target: Span,
    /// Position of the first `?` of the target in the buffer.
    query_mark: Option<u32>,
    version_minor: u8,
    host: Option<Span>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

impl RequestHead {
    pub fn method(&self) -> Method {
        self.method
    }

    pub fn method_bytes(&self) -> &[u8] {
        self.method_span.get(&self.f.buf)
    }

    /// Origin-form target (`/path?query`, an absolute-form target rewritten to
    /// it, `/` when its path was empty) or `*` (OPTIONS only).
    pub fn target(&self) -> &[u8] {
        self.target.get(&self.f.buf)
    }

    /// The target up to its first `?`.
    pub fn path(&self) -> &[u8] {
        match self.query_mark {
            Some(q) => Span::new(self.target.start as usize, q as usize).get(&self.f.buf),
            None => self.target(),
        }
    }

    /// What follows the first `?` of the target (possibly empty), if any.
    pub fn query(&self) -> Option<&[u8]> {
        self.query_mark
            .map(|q| Span::new(q as usize + 1, self.target.end as usize).get(&self.f.buf))
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn version_minor(&self) -> u8 {
        self.version_minor
    }

    /// All header fields in their original order and case, values trimmed of
    /// surrounding whitespace. (Host is listed as received even when an
    /// absolute-form target overrides it: use [`host`](Self::host).)
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.f.iter()
    }

    /// The value of the first field with this name (case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.f.first(name)
    }

    /// The values of every field with this name (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.f.named(name)
    }

    /// The authority of an absolute-form target if there was one, else the
    /// Host field; validated as `host[:port]`. `None` only for HTTP/1.0
    /// without Host.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|s| s.get(&self.f.buf))
    }

    /// `None`, `Length` or `Chunked` (never `UntilClose` for a request).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// HTTP/1.1: unless Connection has `close`; HTTP/1.0: only with
    /// `keep-alive` (and no `close`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// `Expect: 100-continue` (case-insensitive) is present.
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// HTTP/1.1 with an `upgrade` Connection option and an Upgrade field
    /// (an Upgrade in HTTP/1.0 is ignored, RFC 9110 §7.8).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// Every element of every Connection field, trimmed, empty ones skipped,
    /// case as received (compare with `eq_ignore_ascii_case`).
    pub fn connection_tokens(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.f.list(b"connection")
    }

    /// Bytes the head took in the input (leading empty lines and final CRLF
    /// included): the body, or the next message, starts there.
    pub fn head_len(&self) -> usize {
        self.f.head_len
    }
}

/// A parsed, validated response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    f: Fields,
    status: u16,
    reason: Span,
    version_minor: u8,
    framing: Framing,
    keep_alive: bool,
    extra_codings: bool,
}

impl ResponseHead {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as received (may be empty, may hold obs-text).
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.f.buf)
    }

    pub fn version_minor(&self) -> u8 {
        self.version_minor
    }

    /// All header fields in their original order and case, values trimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.f.iter()
    }

    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.f.first(name)
    }

    pub fn headers_named<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.f.named(name)
    }

    /// How the body is delimited, given the request method passed to
    /// [`parse_response`]. After a 1xx (other than 101) the final response
    /// head follows.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether the upstream connection may be reused after this response:
    /// per version and Connection like requests, and never when the body runs
    /// until close.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Transfer-Encoding names a coding other than `chunked` (e.g.
    /// `gzip, chunked`): after decoding the chunked framing the body is still
    /// encoded, so that coding must be passed on (or the body refused).
    pub fn has_other_transfer_coding(&self) -> bool {
        self.extra_codings
    }

    pub fn connection_tokens(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.f.list(b"connection")
    }

    pub fn head_len(&self) -> usize {
        self.f.head_len
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more and call again with the whole buffer.
/// `Err(HeadError::TooLarge)` once `buf` holds [`MAX_HEAD_BYTES`] or more
/// without a complete head. Bytes after [`RequestHead::head_len`] are the
/// body or the next request and are not looked at.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    // The default config: every leniency (spaces before colons, obs-fold,
    // multiple spaces in the start line, invalid lines skipped) is off.
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        window,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => {
            if has_bare_lf(&window[..n]) {
                return Err(HeadError::BadLineEnding);
            }
            build_request(window, n, &req).map(Some)
        }
        Ok(httparse::Status::Partial) => partial(buf, window, HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            version_error(window)?;
            partial(buf, window, HeadError::TooLarge)
        }
        Err(e) => Err(match e {
            httparse::Error::HeaderName | httparse::Error::HeaderValue => HeadError::BadHeader,
            httparse::Error::NewLine => HeadError::BadLineEnding,
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            _ => HeadError::BadRequestLine,
        }),
    }
}

/// Parses a response head from the start of `buf`. `request_method` is the
/// method of the request it answers (HEAD and CONNECT change the framing).
/// Returns like [`parse_request`]; every error is `HeadError::Upstream`.
pub fn parse_response(
    buf: &[u8],
    request_method: Method,
) -> Result<Option<ResponseHead>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let up = HeadError::Upstream;
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        window,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => {
            if has_bare_lf(&window[..n]) {
                return Err(up(UpstreamError::BadLineEnding));
            }
            build_response(window, n, &res, request_method)
                .map(Some)
                .map_err(up)
        }
        Ok(httparse::Status::Partial) => partial(buf, window, up(UpstreamError::TooLarge)),
        Err(e) => Err(up(match e {
            httparse::Error::HeaderName | httparse::Error::HeaderValue => UpstreamError::BadHeader,
            httparse::Error::NewLine => UpstreamError::BadLineEnding,
            httparse::Error::TooManyHeaders => UpstreamError::TooManyHeaders,
            _ => UpstreamError::BadStatusLine,
        })),
    }
}

/// The answer for an incomplete head: wait, unless it is already too long
/// or what we have has a bare LF.
fn partial<T>(buf: &[u8], window: &[u8], too_large: HeadError) -> Result<Option<T>, HeadError> {
    if has_bare_lf(window) {
        return Err(match too_large {
            HeadError::Upstream(_) => HeadError::Upstream(UpstreamError::BadLineEnding),
            _ => HeadError::BadLineEnding,
        });
    }
    if buf.len() >= MAX_HEAD_BYTES {
        return Err(too_large);
    }
    Ok(None)
}

/// `httparse` refused the version of a request line: 505 for a complete,
/// well-formed `HTTP/x.y`, 400 for anything else, and `Ok(())` (wait) while
/// the line is incomplete and may still become a well-formed version.
fn version_error(window: &[u8]) -> Result<(), HeadError> {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = window.get(start..).unwrap_or_default();
    let end = line.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &line[..end.unwrap_or(line.len())];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.nth(2).ok_or(HeadError::BadRequestLine)?;
    const SHAPE: &[u8] = b"HTTP/d.d";
    let fits = |i: usize, b: u8| match SHAPE.get(i) {
        Some(b'd') => b.is_ascii_digit(),
        Some(&s) => s == b,
        None => false,
    };
    let prefix_ok = version.iter().enumerate().all(|(i, &b)| fits(i, b));
    match (end.is_some(), prefix_ok) {
        (true, true) if version.len() == SHAPE.len() => Err(HeadError::UnsupportedVersion),
        (false, true) => Ok(()),
        _ => Err(HeadError::BadRequestLine),
    }
}

/// An LF not preceded by CR.
fn has_bare_lf(bytes: &[u8]) -> bool {
    // Jumps from LF to LF (SIMD) instead of looking at every byte: this
    // runs over every request head.
    memchr::memchr_iter(b'\n', bytes).any(|i| i == 0 || bytes[i - 1] != b'\r')
}

/// The position of `part` (a slice of `base`) within `base`.
fn span_in(base: &[u8], part: &[u8]) -> Option<Span> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= base.len()).then(|| Span::new(start, end))
}

/// Indexes the fields `httparse` found in `head` and copies it, leaving
/// `extra` bytes of room for a rewritten target.
fn index_fields(head: &[u8], headers: &[httparse::Header<'_>], extra: usize) -> Option<Fields> {
    let mut fields = Vec::with_capacity(headers.len());
    for h in headers {
        fields.push(Field {
            name: span_in(head, h.name.as_bytes())?,
            value: span_in(head, h.value)?,
        });
    }
    let mut buf = Vec::with_capacity(head.len() + extra);
    buf.extend_from_slice(head);
    Some(Fields {
        buf,
        fields,
        head_len: head.len(),
    })
}

/// Header fields that decide framing and connection handling.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    Upgrade,
    Other,
}

fn known(name: &[u8]) -> Known {
    let is = |k: &[u8]| name.eq_ignore_ascii_case(k);
    match name.len() {
        4 if is(b"host") => Known::Host,
        14 if is(b"content-length") => Known::ContentLength,
        17 if is(b"transfer-encoding") => Known::TransferEncoding,
        10 if is(b"connection") => Known::Connection,
        6 if is(b"expect") => Known::Expect,
        7 if is(b"upgrade") => Known::Upgrade,
        _ => Known::Other,
    }
}

/// What one pass over the fields learned.
#[derive(Default)]
struct Scan {
    host_count: usize,
    host: Option<Span>,
    cl_count: usize,
    /// First Content-Length value; `Err` if any value was malformed or two
    /// differed.
    cl: Option<Result<u64, ()>>,
    te: bool,
    te_empty_element: bool,
    te_chunked: usize,
    te_last_chunked: bool,
    te_other: bool,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_field: bool,
    expect_continue: bool,
}

fn scan(f: &Fields) -> Scan {
    let mut s = Scan::default();
    for field in &f.fields {
        let name = field.name.get(&f.buf);
        let value = field.value.get(&f.buf);
        match known(name) {
            Known::Host => {
                s.host_count += 1;
                if s.host.is_none() {
                    s.host = Some(field.value);
                }
            }
            Known::ContentLength => {
                s.cl_count += 1;
                let v = parse_content_length(value);
                s.cl = Some(match (s.cl, v) {
                    (None, v) => v.ok_or(()),
                    (Some(Ok(a)), Some(b)) if a == b => Ok(a),
                    _ => Err(()),
                });
            }
            Known::TransferEncoding => {
                s.te = true;
                for element in value.split(|&b| b == b',').map(trim_ows) {
                    if element.is_empty() {
                        s.te_empty_element = true;
                    } else if element.eq_ignore_ascii_case(b"chunked") {
                        s.te_chunked += 1;
                        s.te_last_chunked = true;
                    } else {
                        s.te_other = true;
                        s.te_last_chunked = false;
                    }
                }
            }
            Known::Connection => {
                for t in value.split(|&b| b == b',').map(trim_ows) {
                    if t.eq_ignore_ascii_case(b"close") {
                        s.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        s.keep_alive = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        s.upgrade_token = true;
                    }
                }
            }
            Known::Expect => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    s.expect_continue = true;
                }
            }
            Known::Upgrade => s.upgrade_field = true,
            Known::Other => {}
        }
    }
    s
}

/// `1*DIGIT` fitting a u64.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn build_request(
    window: &[u8],
    n: usize,
    req: &httparse::Request<'_, '_>,
) -> Result<RequestHead, HeadError> {
    let head = &window[..n];
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::BadRequestLine);
    };
    let method_span = span_in(head, method.as_bytes()).ok_or(HeadError::BadRequestLine)?;
    let target_span = span_in(head, path.as_bytes()).ok_or(HeadError::BadRequestLine)?;
    let method = Method::from_bytes(method.as_bytes());
    if method == Method::Connect {
        return Err(HeadError::MethodNotAllowed);
    }

    let target = parse_target(path.as_bytes(), method)?;
    // A target with an empty path ("http://h?q") is rewritten as "/" + rest
    // and stored after the head bytes.
    let extra = if target.prefix.is_empty() {
        0
    } else {
        target.prefix.len() + target.rest.len()
    };
    let mut f = index_fields(head, req.headers, extra).ok_or(HeadError::BadHeader)?;
    let base = target_span.start as usize;
    let target_span = if !target.prefix.is_empty() {
        let start = f.buf.len();
        f.buf.extend_from_slice(target.prefix);
        f.buf.extend_from_slice(target.rest);
        Span::new(start, f.buf.len())
    } else {
        Span::new(
            base + target.rest_offset,
            base + target.rest_offset + target.rest.len(),
        )
    };
    let query_mark = target_span
        .get(&f.buf)
        .iter()
        .position(|&b| b == b'?')
        .map(|q| target_span.start + q as u32);

    let s = scan(&f);

    // Host.
    if s.host_count > 1 {
        return Err(HeadError::DuplicateHost);
    }
    if version == 1 && s.host_count == 0 {
        return Err(HeadError::MissingHost);
    }
    if let Some(h) = s.host {
        if !valid_authority(h.get(&f.buf)) {
            return Err(HeadError::BadHost);
        }
    }
    let host = match target.authority {
        Some((start, end)) => Some(Span::new(base + start, base + end)),
        None => s.host,
    };

    // Body framing.
    if s.cl_count > 1 {
        let all_valid = f
            .named(b"content-length")
            .all(|v| parse_content_length(v).is_some());
        return Err(if all_valid {
            HeadError::DuplicateContentLength
        } else {
            HeadError::BadContentLength
        });
    }
    if s.cl == Some(Err(())) {
        return Err(HeadError::BadContentLength);
    }
    let framing = if s.te {
        if s.cl_count > 0 || version == 0 {
            return Err(HeadError::BadFraming);
        }
        if s.te_empty_element || s.te_chunked > 1 || (s.te_chunked == 1 && !s.te_last_chunked) {
            return Err(HeadError::BadTransferEncoding);
        }
        if s.te_other {
            return Err(HeadError::UnsupportedTransferCoding);
        }
        Framing::Chunked
    } else {
        match s.cl {
            Some(Ok(len)) => Framing::Length(len),
            _ => Framing::None,
        }
    };

    let keep_alive = !s.close && (version == 1 || s.keep_alive);
    Ok(RequestHead {
        method,
        method_span,
        target: target_span,
        query_mark,
        version_minor: version,
        host,
        framing,
        keep_alive,
        expect_continue: s.expect_continue,
        upgrade: version == 1 && s.upgrade_token && s.upgrade_field,
        f,
    })
}

/// A checked request target: the origin-form part of it is `rest`, found at
/// `rest_offset` in the raw target.
struct Target<'a> {
    rest: &'a [u8],
    rest_offset: usize,
    /// Put before `rest` when its path is empty: `/`, or `*` for an OPTIONS
    /// to `http://host` (RFC 9112 §3.2.4); empty when `rest` is the target.
    prefix: &'static [u8],
    /// Authority of an absolute-form target, as offsets in the raw target.
    authority: Option<(usize, usize)>,
}

fn parse_target(t: &[u8], method: Method) -> Result<Target<'_>, HeadError> {
    // httparse already refused CTLs, SP and DEL; non-ASCII and fragments are ours.
    if memchr::memchr(b'#', t).is_some() || !t.is_ascii() {
        return Err(HeadError::BadTarget);
    }
    let origin = |rest_offset: usize| Target {
        rest: &t[rest_offset..],
        rest_offset,
        prefix: b"",
        authority: None,
    };
    if t == b"*" {
        return if method == Method::Options {
            Ok(origin(0))
        } else {
            Err(HeadError::BadTarget)
        };
    }
    if t.first() == Some(&b'/') {
        return Ok(origin(0));
    }
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    let scheme_len = if t.len() >= 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return Err(HeadError::BadTarget);
    };
    let after = &t[scheme_len..];
    let auth_len = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    let authority = &after[..auth_len];
    if authority.contains(&b'@') {
        return Err(HeadError::BadTarget);
    }
    if !valid_authority(authority) {
        return Err(HeadError::BadHost);
    }
    let rest_offset = scheme_len + auth_len;
    let rest = &t[rest_offset..];
    Ok(Target {
        rest,
        rest_offset,
        prefix: match rest.first() {
            Some(b'/') => b"",
            None if method == Method::Options => b"*",
            _ => b"/",
        },
        authority: Some((scheme_len, scheme_len + auth_len)),
    })
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): an IP-literal in brackets or a
/// non-empty reg-name / IPv4 address, then an optional port of at most five
/// digits. No userinfo, no whitespace, no path.
fn valid_authority(a: &[u8]) -> bool {
    let (host_ok, port) = if let Some(inner) = a.strip_prefix(b"[") {
        let Some(close) = inner.iter().position(|&b| b == b']') else {
            return false;
        };
        let ip = &inner[..close];
        let ok = !ip.is_empty()
            && ip
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, &inner[close + 1..])
    } else {
        let end = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        (valid_reg_name(&a[..end]), &a[end..])
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, non-empty here.
fn valid_reg_name(h: &[u8]) -> bool {
    if h.is_empty() {
        return false;
    }
    let mut i = 0;
    while let Some(&b) = h.get(i) {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => i += 1,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => i += 1,
            b'%' => {
                let hex = |j: usize| h.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            _ => return false,
        }
    }
    true
}

fn build_response(
    window: &[u8],
    n: usize,
    res: &httparse::Response<'_, '_>,
    request_method: Method,
) -> Result<ResponseHead, UpstreamError> {
    let head = &window[..n];
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(UpstreamError::BadStatusLine);
    };
    if !(100..=599).contains(&status) {
        return Err(UpstreamError::BadStatus);
    }
    let f = index_fields(head, res.headers, 0).ok_or(UpstreamError::BadHeader)?;

    // The reason phrase, taken from the bytes (httparse blanks it when it
    // holds obs-text): "HTTP/1.x DDD" [SP reason] CRLF.
    let line_start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let after_code = line_start + 12;
    let line_end = head
        .get(after_code..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\r'))
        .map_or(after_code, |p| after_code + p);
    let reason = if head.get(after_code) == Some(&b' ') {
        Span::new(after_code + 1, line_end)
    } else {
        Span::default()
    };

    let s = scan(&f);
    let bodiless = request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (request_method == Method::Connect && (200..300).contains(&status));
    let framing = if bodiless {
        Framing::None
    } else if s.te {
        if s.cl_count > 0 || version == 0 || s.te_chunked > 1 {
            return Err(UpstreamError::BadFraming);
        }
        if s.te_last_chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match s.cl {
            Some(Ok(len)) => Framing::Length(len),
            Some(Err(())) => return Err(UpstreamError::BadContentLength),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = !s.close && (version == 1 || s.keep_alive) && framing != Framing::UntilClose;
    Ok(ResponseHead {
        status,
        reason,
        version_minor: version,
        framing,
        keep_alive,
        extra_codings: s.te_other,
        f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(m: &[u8]) -> RequestHead {
        match parse_request(m) {
            Ok(Some(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(m)),
        }
    }

    fn req_err(m: &[u8]) -> HeadError {
        match parse_request(m) {
            Err(e) => e,
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                String::from_utf8_lossy(m)
            ),
        }
    }

    fn res(m: &[u8], method: Method) -> ResponseHead {
        match parse_response(m, method) {
            Ok(Some(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(m)),
        }
    }

    fn res_err(m: &[u8]) -> UpstreamError {
        match parse_response(m, Method::Get) {
            Err(HeadError::Upstream(e)) => e,
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                String::from_utf8_lossy(m)
            ),
        }
    }

    /// A GET with Host, then the given header lines (each ending in CRLF).
    fn get_with(lines: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: example.com\r\n{lines}\r\n").into_bytes()
    }

    // ---- basics -------------------------------------------------------

    #[test]
    fn simple_get() {
        let m = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\n\r\nrest";
        let h = req(m);
        assert_eq!(h.method(), Method::Get);
        assert_eq!(h.method_bytes(), b"GET");
        assert_eq!(h.target(), b"/a/b?x=1&y=2");
        assert_eq!(h.path(), b"/a/b");
        assert_eq!(h.query(), Some(&b"x=1&y=2"[..]));
        assert_eq!(h.version_minor(), 1);
        assert_eq!(h.host(), Some(&b"example.com:8080"[..]));
        assert_eq!(h.framing(), Framing::None);
        assert!(h.keep_alive());
        assert!(!h.expect_continue());
        assert!(!h.is_upgrade());
        assert_eq!(h.head_len(), m.len() - 4);
    }

    #[test]
    fn headers_keep_order_case_and_are_trimmed() {
        let h = req(b"GET / HTTP/1.1\r\nHost: a\r\nX-One:  1 \r\nx-one:\t2\t\r\nEmpty:\r\nX-Sp:   \r\nX-Mid: a  b\r\n\r\n");
        let all: Vec<_> = h.headers().collect();
        assert_eq!(
            all,
            vec![
                (&b"Host"[..], &b"a"[..]),
                (b"X-One", b"1"),
                (b"x-one", b"2"),
                (b"Empty", b""),
                (b"X-Sp", b""),
                (b"X-Mid", b"a  b"),
            ]
        );
        assert_eq!(h.header(b"X-ONE"), Some(&b"1"[..]));
        assert_eq!(h.header(b"missing"), None);
        let named: Vec<_> = h.headers_named(b"x-one").collect();
        assert_eq!(named, vec![&b"1"[..], b"2"]);
    }

    #[test]
    fn query_splits_at_first_question_mark() {
        let h = req(b"GET /p?a?b HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((h.path(), h.query()), (&b"/p"[..], Some(&b"a?b"[..])));
        let h = req(b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((h.path(), h.query()), (&b"/p"[..], Some(&b""[..])));
        let h = req(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((h.path(), h.query()), (&b"/p"[..], None));
    }

    #[test]
    fn methods() {
        for (m, want, idem) in [
            ("GET", Method::Get, true),
            ("HEAD", Method::Head, true),
            ("POST", Method::Post, false),
            ("PUT", Method::Put, true),
            ("DELETE", Method::Delete, true),
            ("OPTIONS", Method::Options, true),
            ("PATCH", Method::Patch, false),
            ("TRACE", Method::Trace, true),
            ("PURGE", Method::Other, false),
            ("get", Method::Other, false),
        ] {
            let h = req(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            assert_eq!(h.method(), want, "{m}");
            assert_eq!(h.method_bytes(), m.as_bytes());
            assert_eq!(h.method().is_idempotent(), idem, "{m}");
        }
        assert!(!Method::Connect.is_idempotent());
        assert_eq!(
            req_err(b"GET@ / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::BadRequestLine
        );
        assert_eq!(
            req_err(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::BadRequestLine
        );
    }

    #[test]
    fn incomplete_heads_wait() {
        for m in [
            &b""[..],
            b"G",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r",
            b"\r\n",
        ] {
            assert_eq!(parse_request(m), Ok(None), "{m:?}");
        }
        for m in [
            &b""[..],
            b"H",
            b"HTTP/1.1 20",
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r",
            b"\r\n",
        ] {
            assert_eq!(parse_response(m, Method::Get), Ok(None), "{m:?}");
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let m = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = req(m);
        assert_eq!(h.head_len(), m.len());
        assert_eq!(h.target(), b"/");
        // They count toward the limit.
        let mut m = b"\r\n".repeat(MAX_HEAD_BYTES / 2);
        m.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(req_err(&m), HeadError::TooLarge);
    }

    // ---- limits -------------------------------------------------------

    #[test]
    fn size_limit() {
        // A head of exactly MAX_HEAD_BYTES is accepted…
        let mut m = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        m.resize(MAX_HEAD_BYTES - 4, b'v');
        m.extend_from_slice(b"\r\n\r\n");
        assert_eq!(m.len(), MAX_HEAD_BYTES);
        assert_eq!(req(&m).head_len(), MAX_HEAD_BYTES);
        // …one more byte is not, even before the head is complete.
        let mut m = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        m.resize(MAX_HEAD_BYTES - 3, b'v');
        m.extend_from_slice(b"\r\n\r\n");
        assert_eq!(req_err(&m), HeadError::TooLarge);
        assert_eq!(req_err(&m[..MAX_HEAD_BYTES]), HeadError::TooLarge);
        assert_eq!(parse_request(&m[..MAX_HEAD_BYTES - 1]), Ok(None));
        assert_eq!(HeadError::TooLarge.status(), 431);
        // A long request line counts too.
        let mut m = b"GET /".to_vec();
        m.resize(MAX_HEAD_BYTES + 10, b'a');
        assert_eq!(req_err(&m), HeadError::TooLarge);
        // Response side.
        let mut m = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        m.resize(MAX_HEAD_BYTES + 10, b'v');
        assert_eq!(res_err(&m), UpstreamError::TooLarge);
    }

    #[test]
    fn header_count_limit() {
        let lines = |n: usize| (1..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        // Host + 99 others = 100 fields: fine.
        let h = req(&get_with(&lines(MAX_HEADERS)));
        assert_eq!(h.headers().count(), MAX_HEADERS);
        let e = req_err(&get_with(&lines(MAX_HEADERS + 1)));
        assert_eq!((e, e.status()), (HeadError::TooManyHeaders, 431));
        // Refused as soon as field 101 is seen, before the head is complete.
        let m = get_with(&lines(MAX_HEADERS + 1));
        assert_eq!(req_err(&m[..m.len() - 2]), HeadError::TooManyHeaders);

        let body: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let m = format!("HTTP/1.1 200 OK\r\n{body}\r\n");
        assert_eq!(res_err(m.as_bytes()), UpstreamError::TooManyHeaders);
    }

    // ---- versions -----------------------------------------------------

    #[test]
    fn versions() {
        assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n").version_minor(), 0);
        for m in [
            &b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/5.6\r\n",
        ] {
            let e = req_err(m);
            assert_eq!(
                (e, e.status()),
                (HeadError::UnsupportedVersion, 505),
                "{m:?}"
            );
        }
        for m in [
            &b"GET / HTTP/2\r\n\r\n"[..],
            b"GET / HTTP/1.10\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / ICE/1.0\r\n\r\n",
            b"GET / RTSP/1.0\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET /foo bar HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1x\r\n\r\n",
        ] {
            assert_eq!(req_err(m).status(), 400, "{m:?}");
        }
        // An unfinished version that may still be well-formed waits.
        assert_eq!(parse_request(b"GET / HTTP/5"), Ok(None));
        assert_eq!(parse_request(b"GET / HTTP/5.6"), Ok(None));
        assert_eq!(req_err(b"GET / HTTP/5x"), HeadError::BadRequestLine);
    }

    // ---- what httparse refuses, pinned ---------------------------------

    #[test]
    fn httparse_refuses_bare_cr() {
        for m in [
            &b"GET / HTTP/1.1\rHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\rc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            b"GET / HTTP/1.1\r\nX\r: b\r\n\r\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
            b"GET /a\rb HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(req_err(m).status(), 400, "{m:?}");
        }
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n"),
            UpstreamError::BadStatusLine
        );
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n"),
            UpstreamError::BadHeader
        );
    }

    #[test]
    fn bare_lf_is_refused() {
        // httparse alone accepts all of these; we don't.
        for m in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX:\n\r\n",
        ] {
            let mut hs = [httparse::EMPTY_HEADER; 8];
            assert!(
                httparse::Request::new(&mut hs).parse(m).is_ok(),
                "httparse got stricter: {m:?}"
            );
            assert_eq!(req_err(m), HeadError::BadLineEnding, "{m:?}");
        }
        // Detected early, before the head is complete.
        assert_eq!(
            req_err(b"GET / HTTP/1.1\nHost: a"),
            HeadError::BadLineEnding
        );
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
            UpstreamError::BadLineEnding
        );
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\r\nA: b\n"),
            UpstreamError::BadLineEnding
        );
    }

    #[test]
    fn httparse_refuses_nul() {
        for m in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX\0: b\r\n\r\n",
            b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GE\0T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\0GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(req_err(m).status(), 400, "{m:?}");
        }
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"),
            UpstreamError::BadHeader
        );
    }

    #[test]
    fn httparse_refuses_obs_fold() {
        for m in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        ] {
            assert_eq!(req_err(m), HeadError::BadHeader, "{m:?}");
        }
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\r\nX: b\r\n c\r\n\r\n"),
            UpstreamError::BadHeader
        );
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\r\n X: b\r\n\r\n"),
            UpstreamError::BadHeader
        );
    }

    #[test]
    fn httparse_refuses_whitespace_before_colon() {
        for m in [
            &b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n",
        ] {
            assert_eq!(req_err(m), HeadError::BadHeader, "{m:?}");
        }
        assert_eq!(
            res_err(b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
            UpstreamError::BadHeader
        );
    }

    #[test]
    fn httparse_refuses_bad_name_and_value_bytes() {
        for name in [
            "Fo@", "a(b", "a b", "a\"b", "[x]", "a/b", "a\x7fb", "\u{e4}", "a\x01b",
        ] {
            let m = get_with(&format!("{name}: v\r\n"));
            assert_eq!(req_err(&m), HeadError::BadHeader, "{name:?}");
        }
        assert_eq!(req_err(&get_with(": v\r\n")), HeadError::BadHeader);
        assert_eq!(req_err(&get_with("NoColon\r\n")), HeadError::BadHeader);
        for value in [&b"a\x01b"[..], b"a\x0cb", b"a\x7fb", b"a\x1bb", b"\x0c"] {
            let mut m = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
            m.extend_from_slice(value);
            m.extend_from_slice(b"\r\n\r\n");
            assert_eq!(req_err(&m), HeadError::BadHeader, "{value:?}");
        }
        // A long value goes through httparse's SIMD path: DEL must still be refused.
        let mut m = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        m.extend_from_slice(&[b'a'; 40]);
        m.push(0x7f);
        m.extend_from_slice(&[b'a'; 40]);
        m.extend_from_slice(b"\r\n\r\n");
        assert_eq!(req_err(&m), HeadError::BadHeader);
        // obs-text and HTAB inside values are fine.
        let h = req(b"GET / HTTP/1.1\r\nHost: a\r\nX: D\xfcsseldorf\tok\r\nY: \xff\r\n\r\n");
        assert_eq!(h.header(b"x"), Some(&b"D\xfcsseldorf\tok"[..]));
        assert_eq!(h.header(b"y"), Some(&b"\xff"[..]));
    }

    // ---- targets --------------------------------------------------------

    #[test]
    fn absolute_form_is_rewritten() {
        for (target, want, host) in [
            ("http://example.com/a?b", "/a?b", "example.com"),
            ("HTTPS://Example.com:8443/x", "/x", "Example.com:8443"),
            ("http://example.com", "/", "example.com"),
            ("http://example.com?q=1", "/?q=1", "example.com"),
            (
                "http://example.com:1234?hail=all",
                "/?hail=all",
                "example.com:1234",
            ),
            ("http://[::1]:8080/p", "/p", "[::1]:8080"),
            ("http://10.0.0.1/", "/", "10.0.0.1"),
        ] {
            let m = format!("GET {target} HTTP/1.1\r\nHost: other.test\r\n\r\nBODY");
            let h = req(m.as_bytes());
            assert_eq!(h.target(), want.as_bytes(), "{target}");
            assert_eq!(h.host(), Some(host.as_bytes()), "{target}");
            assert_eq!(h.head_len(), m.len() - 4);
            // The Host field is still listed as received.
            assert_eq!(h.header(b"host"), Some(&b"other.test"[..]));
        }
        // OPTIONS to a bare authority asks about the server: "*" (RFC 9112 §3.2.4).
        let h = req(b"OPTIONS http://example.com HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.target(), b"*");
        let h = req(b"OPTIONS http://example.com?x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.target(), b"/?x");
        let h = req(b"GET http://example.com?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((h.path(), h.query()), (&b"/"[..], Some(&b"q=1"[..])));
    }

    #[test]
    fn bad_targets() {
        for (target, want) in [
            ("ftp://example.com/", HeadError::BadTarget),
            ("example.com/a", HeadError::BadTarget),
            ("a", HeadError::BadTarget),
            ("http:/example.com/", HeadError::BadTarget),
            ("http://user:pw@example.com/", HeadError::BadTarget),
            (
                "http://a%12:b!&*$@hypnotoad.org:1234/toto",
                HeadError::BadTarget,
            ),
            ("http:///path", HeadError::BadHost),
            ("http://exa mple/", HeadError::BadRequestLine),
            ("http://[::1/", HeadError::BadHost),
            ("http://host:80a/", HeadError::BadHost),
            ("/p#frag", HeadError::BadTarget),
            ("/p?q#frag", HeadError::BadTarget),
            ("*", HeadError::BadTarget),
        ] {
            let m = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(req_err(m.as_bytes()), want, "{target}");
        }
        // Non-ASCII and fragments in the target: httparse allows both.
        let mut hs = [httparse::EMPTY_HEADER; 4];
        let lenient = httparse::Request::new(&mut hs).parse(b"GET /\xce\xb4#f HTTP/1.1\r\n\r\n");
        assert!(lenient.is_ok(), "httparse got stricter");
        assert_eq!(
            req_err(b"GET /\xce\xb4 HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::BadTarget
        );
        // Visible ASCII that RFC 3986 does not allow is passed on as browsers send it.
        let h = req(b"GET /with_\"q\"?a=|{}^` HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.target(), b"/with_\"q\"?a=|{}^`");
    }

    #[test]
    fn asterisk_only_with_options() {
        let h = req(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (h.target(), h.path(), h.query()),
            (&b"*"[..], &b"*"[..], None)
        );
        assert_eq!(
            req_err(b"M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::BadTarget
        );
        assert_eq!(
            req_err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::BadTarget
        );
    }

    #[test]
    fn connect_is_405() {
        for m in [
            &b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"[..],
            b"CONNECT home_0.netscape.com:443 HTTP/1.0\r\n\r\n",
            b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let e = req_err(m);
            assert_eq!((e, e.status()), (HeadError::MethodNotAllowed, 405));
        }
    }

    // ---- Host -----------------------------------------------------------

    #[test]
    fn host_rules() {
        assert_eq!(req_err(b"GET / HTTP/1.1\r\n\r\n"), HeadError::MissingHost);
        assert_eq!(
            req_err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            HeadError::DuplicateHost
        );
        assert_eq!(
            req_err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::DuplicateHost
        );
        assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n").host(), None);
        assert_eq!(
            req(b"GET / HTTP/1.0\r\nHOST: a.b\r\n\r\n").host(),
            Some(&b"a.b"[..])
        );
        // Absolute-form still needs Host in HTTP/1.1 (RFC 9112 §3.2) but not in 1.0.
        assert_eq!(
            req_err(b"GET http://a/ HTTP/1.1\r\n\r\n"),
            HeadError::MissingHost
        );
        assert_eq!(
            req(b"GET http://a/ HTTP/1.0\r\n\r\n").host(),
            Some(&b"a"[..])
        );

        for good in [
            "example.com",
            "example.com:80",
            "example.com:",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "0.0.0.0=5000",
            "xn--bcher-kva.example",
            "a%2Db",
            "under_score",
        ] {
            let m = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            assert_eq!(req(m.as_bytes()).host(), Some(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "a b", "a/b", "user@a", "a:b:c", "[::1", "[]", "[::1]x", "a:123456", "a:8a", "a%2",
            "a%zz", "a\"b", "a\\b", "a?b", "a#b", "\u{e4}",
        ] {
            let m = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(req_err(m.as_bytes()), HeadError::BadHost, "{bad:?}");
        }
    }

    // ---- Content-Length / Transfer-Encoding -----------------------------

    #[test]
    fn content_length() {
        for (v, n) in [
            ("0", 0),
            ("003", 3),
            ("42", 42),
            ("18446744073709551615", u64::MAX),
        ] {
            let h = req(&get_with(&format!("Content-Length: {v}\r\n")));
            assert_eq!(h.framing(), Framing::Length(n), "{v}");
        }
        let h = req(&get_with("Content-Length: \t 42 \t\r\n"));
        assert_eq!(h.framing(), Framing::Length(42));
        for v in [
            "",
            "+1",
            "-1",
            "1 2",
            "4 2",
            "1,1",
            "1, 1",
            "0x10",
            "1.0",
            "1e3",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let e = req_err(&get_with(&format!("Content-Length: {v}\r\n")));
            assert_eq!((e, e.status()), (HeadError::BadContentLength, 400), "{v:?}");
        }
        // Repeated, even with the same value: refused.
        assert_eq!(
            req_err(&get_with("Content-Length: 1\r\nContent-Length: 1\r\n")),
            HeadError::DuplicateContentLength
        );
        assert_eq!(
            req_err(&get_with("Content-Length: 1\r\ncontent-length: 2\r\n")),
            HeadError::DuplicateContentLength
        );
        assert_eq!(
            req_err(&get_with("Content-Length: 1\r\nContent-Length: x\r\n")),
            HeadError::BadContentLength
        );
        // Look-alike names are ordinary fields.
        let h = req(&get_with("Content-Length-X: 5\r\nX-Content-Length: 6\r\n"));
        assert_eq!(h.framing(), Framing::None);
    }

    #[test]
    fn transfer_encoding() {
        for v in ["chunked", "CHUNKED", "Chunked", " chunked "] {
            let h = req(&get_with(&format!("Transfer-Encoding: {v}\r\n")));
            assert_eq!(h.framing(), Framing::Chunked, "{v:?}");
        }
        let e = req_err(&get_with(
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ));
        assert_eq!((e, e.status()), (HeadError::BadFraming, 400));
        assert_eq!(
            req_err(&get_with(
                "Content-Length: 5\r\nTransfer-Encoding: identity\r\n"
            )),
            HeadError::BadFraming
        );
        assert_eq!(
            req_err(&get_with("Content-Length: 10\r\nTransfer-Encoding:\r\n")),
            HeadError::BadFraming
        );
        assert_eq!(
            req_err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::BadFraming
        );
        for (lines, want) in [
            (
                "Transfer-Encoding: chunked, gzip\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked, chunked\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: deflate\r\n",
                HeadError::BadTransferEncoding,
            ),
            ("Transfer-Encoding:\r\n", HeadError::BadTransferEncoding),
            (
                "Transfer-Encoding: ,chunked\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked,\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "Transfer-Encoding: gzip, , chunked\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: gzip\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: identity\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: pigeons\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: chunkedchunked\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: chunked;q=1\r\n",
                HeadError::UnsupportedTransferCoding,
            ),
        ] {
            assert_eq!(req_err(&get_with(lines)), want, "{lines:?}");
        }
        assert_eq!(HeadError::UnsupportedTransferCoding.status(), 501);
    }

    #[test]
    fn get_with_a_framed_body_is_allowed() {
        assert_eq!(
            req(&get_with("Content-Length: 3\r\n")).framing(),
            Framing::Length(3)
        );
        assert_eq!(
            req(&get_with("Transfer-Encoding: chunked\r\n")).framing(),
            Framing::Chunked
        );
    }

    // ---- connection management -------------------------------------------

    #[test]
    fn keep_alive_rules() {
        for (version, conn, want) in [
            ("1.1", None, true),
            ("1.1", Some("close"), false),
            ("1.1", Some("Close"), false),
            ("1.1", Some("keep-alive"), true),
            ("1.1", Some("keep-alive, close"), false),
            ("1.1", Some("upgrade, CLOSE"), false),
            ("1.1", Some("closed"), true),
            ("1.0", None, false),
            ("1.0", Some("keep-alive"), true),
            ("1.0", Some("Keep-Alive"), true),
            ("1.0", Some("keep-alive, close"), false),
            ("1.0", Some("foo"), false),
        ] {
            let line = conn
                .map(|c| format!("Connection: {c}\r\n"))
                .unwrap_or_default();
            let m = format!("GET / HTTP/{version}\r\nHost: a\r\n{line}\r\n");
            assert_eq!(req(m.as_bytes()).keep_alive(), want, "{version} {conn:?}");
        }
        // Tokens from several Connection fields count.
        let h = req(&get_with("Connection: keep-alive\r\nConnection: close\r\n"));
        assert!(!h.keep_alive());
    }

    #[test]
    fn connection_tokens_are_listed() {
        let h = req(&get_with(
            "Connection: close, ,X-Foo\t\r\nConnection: Upgrade,\r\n",
        ));
        let tokens: Vec<_> = h.connection_tokens().collect();
        assert_eq!(tokens, vec![&b"close"[..], b"X-Foo", b"Upgrade"]);
        assert_eq!(req(&get_with("")).connection_tokens().count(), 0);
    }

    #[test]
    fn expect_continue() {
        assert!(req(&get_with("Expect: 100-continue\r\n")).expect_continue());
        assert!(req(&get_with("Expect: 100-Continue\r\n")).expect_continue());
        assert!(!req(&get_with("Expect: 200-ok\r\n")).expect_continue());
        assert!(!req(&get_with("")).expect_continue());
    }

    #[test]
    fn upgrade() {
        assert!(req(&get_with("Connection: Upgrade\r\nUpgrade: websocket\r\n")).is_upgrade());
        assert!(req(&get_with(
            "Connection: keep-alive, upgrade\r\nUpgrade: h2c\r\n"
        ))
        .is_upgrade());
        assert!(!req(&get_with("Connection: upgrade\r\n")).is_upgrade());
        assert!(!req(&get_with("Upgrade: websocket\r\n")).is_upgrade());
        assert!(
            !req(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                .is_upgrade()
        );
    }

    // ---- errors -----------------------------------------------------------

    #[test]
    fn error_codes_and_text() {
        assert_eq!(HeadError::BadHost.status(), 400);
        assert_eq!(HeadError::MethodNotAllowed.status(), 405);
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        let up = HeadError::Upstream(UpstreamError::BadFraming);
        assert_eq!(up.status(), 502);
        assert_eq!(up.reason(), "bad gateway");
        assert_eq!(
            up.to_string(),
            "upstream response: conflicting message framing"
        );
        assert_eq!(
            HeadError::MissingHost.to_string(),
            "request: missing Host header (400)"
        );
    }

    // ---- responses ----------------------------------------------------------

    #[test]
    fn simple_response() {
        let m = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        let h = res(m, Method::Get);
        assert_eq!(
            (h.status(), h.reason(), h.version_minor()),
            (200, &b"OK"[..], 1)
        );
        assert_eq!(h.framing(), Framing::Length(5));
        assert!(h.keep_alive());
        assert_eq!(h.head_len(), m.len() - 5);
        assert_eq!(h.header(b"content-type"), Some(&b"text/plain"[..]));
        assert_eq!(h.headers().count(), 2);
        assert_eq!(
            h.headers_named(b"CONTENT-LENGTH").collect::<Vec<_>>(),
            vec![&b"5"[..]]
        );
    }

    #[test]
    fn reason_phrases() {
        let h = res(
            b"HTTP/1.1 500 Ori\xebntatieprobleem\r\nContent-Length: 0\r\n\r\n",
            Method::Get,
        );
        assert_eq!(h.reason(), b"Ori\xebntatieprobleem");
        assert_eq!(
            res(b"HTTP/1.1 301\r\nContent-Length: 0\r\n\r\n", Method::Get).reason(),
            b""
        );
        assert_eq!(
            res(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", Method::Get).reason(),
            b""
        );
        assert_eq!(
            res(
                b"\r\nHTTP/1.1 200 A B\r\nContent-Length: 0\r\n\r\n",
                Method::Get
            )
            .reason(),
            b"A B"
        );
    }

    #[test]
    fn response_framing() {
        let cases: &[(&[u8], Method, Framing)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", Method::Head, Framing::None),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Head, Framing::None),
            (b"HTTP/1.1 100 Continue\r\n\r\n", Method::Post, Framing::None),
            (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", Method::Get, Framing::None),
            (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", Method::Get, Framing::None),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", Method::Get, Framing::None),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Method::Get, Framing::None),
            (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Get, Framing::None),
            (b"HTTP/1.1 200 OK\r\n\r\n", Method::Connect, Framing::None),
            (b"HTTP/1.1 407 Auth\r\nContent-Length: 2\r\n\r\n", Method::Connect, Framing::Length(2)),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Get, Framing::Chunked),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::Get, Framing::Chunked),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Method::Get, Framing::UntilClose),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", Method::Get, Framing::UntilClose),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunkedchunked\r\n\r\n", Method::Get, Framing::UntilClose),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", Method::Get, Framing::UntilClose),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Method::Get, Framing::Length(5)),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Post, Framing::Length(0)),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", Method::Get, Framing::UntilClose),
            (b"HTTP/1.0 200 OK\r\n\r\n", Method::Get, Framing::UntilClose),
        ];
        for (m, method, want) in cases {
            assert_eq!(
                res(m, *method).framing(),
                *want,
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        let h = res(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::Get,
        );
        assert!(h.has_other_transfer_coding());
        let h = res(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Get,
        );
        assert!(!h.has_other_transfer_coding());
    }

    #[test]
    fn response_framing_errors() {
        for m in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        ] {
            assert_eq!(res_err(m), UpstreamError::BadFraming, "{m:?}");
        }
        for m in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
        ] {
            assert_eq!(res_err(m), UpstreamError::BadContentLength, "{m:?}");
        }
    }

    #[test]
    fn response_status_line_errors() {
        for m in [
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            b"HTTP/0.9 200 OK\r\n\r\n",
            b"HTTP/1.01 200 OK\r\n\r\n",
            b"HTTP/1.1\t200 OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 2 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"RTSP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 O\x01K\r\n\r\n",
        ] {
            assert_eq!(res_err(m), UpstreamError::BadStatusLine, "{m:?}");
        }
        assert_eq!(
            res_err(b"HTTP/1.1 600 Nope\r\n\r\n"),
            UpstreamError::BadStatus
        );
        assert_eq!(
            res_err(b"HTTP/1.1 099 Nope\r\n\r\n"),
            UpstreamError::BadStatus
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 600 Nope\r\n\r\n", Method::Get)
                .unwrap_err()
                .status(),
            502
        );
    }

    #[test]
    fn response_keep_alive() {
        for (m, want) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..], true),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            // Until-close bodies never leave a reusable connection.
            (b"HTTP/1.1 200 OK\r\n\r\n", false),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true,
            ),
        ] {
            assert_eq!(
                res(m, Method::Get).keep_alive(),
                want,
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        let h = res(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nContent-Length: 0\r\n\r\n",
            Method::Get,
        );
        assert_eq!(
            h.connection_tokens().collect::<Vec<_>>(),
            vec![&b"close"[..], b"X-Hop"]
        );
    }

    // ---- properties -----------------------------------------------------------

    fn valid_request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "PURGE",
        ]);
        let target = "/[a-zA-Z0-9._~/-]{0,30}(\\?[a-z0-9=&%]{0,20})?";
        let host = "[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?";
        let field = ("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,40}");
        let body_header = prop_oneof![
            Just(String::new()),
            (0u64..100_000).prop_map(|n| format!("Content-Length: {n}\r\n")),
            Just("Transfer-Encoding: chunked\r\n".to_string()),
        ];
        (
            method,
            target,
            any::<bool>(),
            host,
            proptest::collection::vec(field, 0..12),
            body_header,
            "(\r\n){0,2}",
        )
            .prop_map(
                |(method, target, v11, host, fields, body_header, leading)| {
                    let mut m = format!("{leading}{method} {target} HTTP/1.{}\r\n", u8::from(v11));
                    let host_at = fields.len() / 2;
                    for (i, (n, v)) in fields.iter().enumerate() {
                        if i == host_at {
                            m.push_str(&format!("Host: {host}\r\n"));
                        }
                        m.push_str(&format!("{n}: {v}\r\n"));
                    }
                    if fields.is_empty() {
                        m.push_str(&format!("Host: {host}\r\n"));
                    }
                    if v11 || !body_header.starts_with("Transfer") {
                        m.push_str(&body_header);
                    }
                    m.push_str("\r\n");
                    m.into_bytes()
                },
            )
    }

    proptest! {
        #[test]
        fn has_bare_lf_agrees_with_a_byte_by_byte_scan(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..40)
        ) {
            let mut prev = 0u8;
            let mut naive = false;
            for &b in &bytes {
                if b == b'\n' && prev != b'\r' {
                    naive = true;
                }
                prev = b;
            }
            prop_assert_eq!(has_bare_lf(&bytes), naive);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&bytes);
            let _ = parse_response(&bytes, Method::Get);
            let _ = parse_response(&bytes, Method::Head);
        }

        #[test]
        fn http_like_bytes_never_panic(
            s in "(\r\n)?(GET|HTTP/1.1|CONNECT|OPTIONS) ?[ -~\t\r\n\u{80}]{0,200}",
        ) {
            let _ = parse_request(s.as_bytes());
            let _ = parse_response(s.as_bytes(), Method::Get);
        }

        #[test]
        fn mutated_valid_heads_never_panic(
            m in valid_request(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut m = m;
            let i = at.index(m.len());
            m[i] = byte;
            let _ = parse_request(&m);
        }

        #[test]
        fn every_split_waits_then_agrees(m in valid_request(), body in "[a-z\r\n]{0,10}") {
            let mut full = m.clone();
            full.extend_from_slice(body.as_bytes());
            let whole = parse_request(&full);
            let head = whole.clone().unwrap().unwrap();
            prop_assert_eq!(head.head_len(), m.len());
            for i in 0..=full.len() {
                let got = parse_request(&full[..i]);
                if i < m.len() {
                    prop_assert_eq!(got, Ok(None), "split at {}", i);
                } else {
                    prop_assert_eq!(&got, &whole, "split at {}", i);
                }
            }
        }
    }

    // ---- llhttp vectors ----------------------------------------------------------

    mod vectors {
        use super::super::*;
        use crate::http::chunked::ChunkedDecoder;

        /// llhttp refuses these request vectors in strict mode; we accept the
        /// head and (for the body ones) the chunked decoder refuses the body.
        enum Allowed {
            /// The head is fine; the body must fail in `ChunkedDecoder`.
            BodyError,
            /// The head is fine; the body is incomplete (llhttp complained at
            /// end of input): the decoder must still be waiting.
            IncompleteBody,
            /// We accept the message on purpose.
            Accepted,
        }

        const ALLOWED_ERRORS: &[(&str, Allowed, &str)] = &[
            (
                "HTTP protocol and ANNOUNCE method",
                Allowed::Accepted,
                "any token method is forwarded as Method::Other; the origin answers 405/501",
            ),
            (
                "Invalid method",
                Allowed::Accepted,
                "MKCOLA is a valid token method, forwarded as Method::Other",
            ),
            (
                "No semicolon before chunk extensions",
                Allowed::BodyError,
                "space after chunk size: ChunkError::BadSize",
            ),
            (
                "No extension after semicolon",
                Allowed::BodyError,
                "empty chunk extension name: ChunkError::BadExtension",
            ),
            (
                "Unbalanced chunk extensions quoting",
                Allowed::BodyError,
                "unterminated quoted-string reaches CR: ChunkError::BadExtension",
            ),
            (
                "Validate chunk parameters",
                Allowed::BodyError,
                "space after chunk size: ChunkError::BadSize",
            ),
            (
                "Chunk header not terminated by CRLF",
                Allowed::BodyError,
                "bare CR after chunk size: ChunkError::BadLineEnding",
            ),
            (
                "Chunk data not terminated by CRLF",
                Allowed::BodyError,
                "data not followed by CRLF: ChunkError::MissingDataCrlf",
            ),
            (
                "Space after chunk header",
                Allowed::BodyError,
                "space after chunk size: ChunkError::BadSize",
            ),
            (
                "Missing last-chunk",
                Allowed::IncompleteBody,
                "stream ends after a chunk; the connection loop treats EOF mid-body as an error",
            ),
        ];

        /// llhttp accepts these request vectors; we refuse them on purpose.
        const REFUSED_VALID: &[(&str, &str)] = &[
            ("No HTTP version", "HTTP/0.9 request line: 400"),
            ("M-SEARCH request", "`*` target only with OPTIONS: 400"),
            ("SOURCE request with ICE", "ICE/1.0 is not HTTP: 400"),
            ("OPTIONS request with RTSP", "RTSP/1.0 is not HTTP: 400"),
            ("ANNOUNCE request with RTSP", "RTSP/1.0 is not HTTP: 400"),
            (
                "Fragment in URI",
                "a fragment is never part of a request target: 400",
            ),
            (
                "`host:port` and basic auth",
                "userinfo in absolute-form (RFC 9110 §4.2.4): 400",
            ),
            (
                "POST with `chunked` as last transfer-encoding",
                "deflate transfer coding not implemented: 501",
            ),
            (
                "POST with `chunked` as last transfer-encoding (multiple headers)",
                "deflate transfer coding not implemented: 501",
            ),
        ];

        fn unhex(s: &str) -> Vec<u8> {
            let digit = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("bad hex"),
            };
            s.as_bytes()
                .chunks(2)
                .map(|p| digit(p[0]) << 4 | digit(p[1]))
                .collect()
        }

        fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
            hay.windows(needle.len()).position(|w| w == needle)
        }

        /// Adds `Host: example.com` after the request line when the head has
        /// no Host field. Returns the bytes and how many were inserted.
        fn with_host(msg: &[u8]) -> (Vec<u8>, usize) {
            let start = msg
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(msg.len());
            let head_end = find(&msg[start..], b"\r\n\r\n").map_or(msg.len(), |p| start + p + 2);
            let head = msg[start..head_end].to_ascii_lowercase();
            if find(&head, b"\r\nhost:").is_some() {
                return (msg.to_vec(), 0);
            }
            const HOST: &[u8] = b"Host: example.com\r\n";
            match find(&msg[start..], b"\r\n") {
                Some(p) => {
                    let at = start + p + 2;
                    let mut out = msg[..at].to_vec();
                    out.extend_from_slice(HOST);
                    out.extend_from_slice(&msg[at..]);
                    (out, HOST.len())
                }
                None => {
                    let mut out = msg.to_vec();
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(HOST);
                    (out, HOST.len() + 2)
                }
            }
        }

        /// Parses the first request of `msg`, finishing a head that the vector
        /// leaves open (llhttp tests are streams). Returns the result and the
        /// bytes parsed (Host added, maybe completed).
        fn parse_first(msg: &[u8]) -> (Result<Option<RequestHead>, HeadError>, Vec<u8>) {
            let (mut bytes, _) = with_host(msg);
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
            (r, bytes)
        }

        /// Body bytes after a head: Ok(Some(consumed)) if the body completes,
        /// Ok(None) if the stream ends first, Err for a chunked error.
        fn body(head: &RequestHead, rest: &[u8]) -> Result<Option<usize>, String> {
            match head.framing() {
                Framing::None => Ok(Some(0)),
                Framing::Length(n) => Ok(usize::try_from(n).ok().filter(|&n| n <= rest.len())),
                Framing::Chunked => {
                    let mut d = ChunkedDecoder::new();
                    let mut out = Vec::new();
                    let n = d.decode(rest, &mut out).map_err(|e| e.to_string())?;
                    Ok(d.is_done().then_some(n))
                }
                Framing::UntilClose => Err("request framed until close".into()),
            }
        }

        fn error_code(line: &str) -> Option<u32> {
            let at = line.find("error code=")? + "error code=".len();
            line[at..].split(' ').next()?.parse().ok()
        }

        #[test]
        fn llhttp_request_vectors() {
            let Some(dir) = std::env::var_os("TRACKGATE_VECTORS") else {
                println!("llhttp vectors skipped: TRACKGATE_VECTORS is not set");
                return;
            };
            let path = std::path::Path::new(&dir).join("llhttp.jsonl");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));

            let (mut ok_vectors, mut ok_valid, mut ok_error, mut skipped) = (0, 0, 0, 0);
            let mut allowed_used = Vec::new();
            let mut failures = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if v["meta"]["type"] != "request" {
                    continue;
                }
                let title = v["title"].as_str().unwrap_or_default().to_string();
                let title = title.as_str();
                let raw = unhex(v["raw_hex"].as_str().unwrap());
                let expect_error = v["expect_error"].as_bool().unwrap_or(false);
                let (result, bytes) = parse_first(&raw);

                if expect_error {
                    let code = error_code(v["error_line"].as_str().unwrap_or_default());
                    if matches!(code, Some(5 | 22 | 23)) {
                        skipped += 1;
                        continue;
                    }
                    let allowed = ALLOWED_ERRORS.iter().find(|(t, _, _)| *t == title);
                    match (&result, allowed) {
                        (Err(e), None) => {
                            ok_error += 1;
                            if std::env::var_os("TRACKGATE_VECTORS_VERBOSE").is_some() {
                                println!("  refused: {title}: {e:?}");
                            }
                        }
                        (Err(e), Some(_)) => {
                            failures.push(format!("{title}: allow-listed but refused ({e})"))
                        }
                        (Ok(Some(h)), Some((_, kind, _))) => {
                            let got = body(h, &bytes[h.head_len()..]);
                            let fine = match kind {
                                Allowed::BodyError => got.is_err(),
                                Allowed::IncompleteBody => got == Ok(None),
                                Allowed::Accepted => true,
                            };
                            if fine {
                                allowed_used.push(title.to_string());
                            } else {
                                failures.push(format!("{title}: allow-listed, body gave {got:?}"));
                            }
                        }
                        (other, _) => {
                            failures.push(format!("{title}: expected an error, got {other:?}"))
                        }
                    }
                    continue;
                }

                let refused = REFUSED_VALID.iter().any(|(t, _)| *t == title);
                match (&result, refused) {
                    (Err(_), true) => allowed_used.push(title.to_string()),
                    (Ok(Some(_)), true) => {
                        failures.push(format!("{title}: listed as refused but accepted"))
                    }
                    (Ok(Some(h)), false) => {
                        // Follow pipelined requests to the end of the stream.
                        let mut count = 1;
                        let (mut head, mut bytes) = (h.clone(), bytes.clone());
                        loop {
                            match body(&head, &bytes[head.head_len()..]) {
                                Ok(Some(n)) => {
                                    let rest = bytes[head.head_len() + n..].to_vec();
                                    if rest.iter().all(|&b| b == b'\r' || b == b'\n') {
                                        break;
                                    }
                                    match parse_first(&rest) {
                                        (Ok(Some(h2)), b2) => {
                                            count += 1;
                                            head = h2;
                                            bytes = b2;
                                        }
                                        (other, _) => {
                                            failures.push(format!(
                                                "{title}: request {} gave {other:?}",
                                                count + 1
                                            ));
                                            break;
                                        }
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    failures.push(format!("{title}: body error {e}"));
                                    break;
                                }
                            }
                        }
                        ok_valid += count;
                        ok_vectors += 1;
                    }
                    (other, _) => {
                        failures.push(format!("{title}: expected to parse, got {other:?}"))
                    }
                }
            }
            println!(
                "llhttp request vectors: {ok_vectors} valid vectors parsed ({ok_valid} requests with \
                 pipelining), {ok_error} invalid refused, \
                 {} allow-listed, {skipped} skipped (error codes 5/22/23)",
                allowed_used.len()
            );
            for t in &allowed_used {
                println!("  allow-listed: {t}");
            }
            let listed = ALLOWED_ERRORS.len() + REFUSED_VALID.len();
            assert!(
                failures.is_empty(),
                "{} failures:\n{}",
                failures.len(),
                failures.join("\n")
            );
            assert_eq!(
                allowed_used.len(),
                listed,
                "an allow-list entry matched no vector"
            );
        }

        /// Response vectors: not required by the proxy contract, but a cheap
        /// cross-check of `parse_response` and the response framing.
        #[test]
        fn llhttp_response_vectors() {
            let Some(dir) = std::env::var_os("TRACKGATE_VECTORS") else {
                println!("llhttp response vectors skipped: TRACKGATE_VECTORS is not set");
                return;
            };
            // llhttp accepts these; we refuse them on purpose.
            const REFUSED_VALID: &[(&str, &str)] = &[
                ("RTSP response", "not HTTP"),
                ("ICE response", "not HTTP"),
                ("HTTP version 0.9", "only HTTP/1.0 and 1.1"),
            ];
            // llhttp refuses these for their chunked body, which our decoder refuses.
            const BODY_ERRORS: &[&str] = &[
                "Trailing space on chunked body",
                "No semicolon before chunk extensions",
                "No extension after semicolon",
                "Unbalanced chunk extensions quoting",
            ];
            let text = std::fs::read_to_string(std::path::Path::new(&dir).join("llhttp.jsonl"))
                .expect("reading llhttp.jsonl");
            let (mut parsed, mut refused) = (0, 0);
            let mut failures = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if v["meta"]["type"] != "response" {
                    continue;
                }
                let title = v["title"].as_str().unwrap_or_default().to_string();
                let expect_error = v["expect_error"].as_bool().unwrap_or(false);
                if expect_error
                    && matches!(
                        error_code(v["error_line"].as_str().unwrap_or_default()),
                        Some(5 | 22)
                    )
                {
                    continue;
                }
                let mut bytes = unhex(v["raw_hex"].as_str().unwrap());
                let mut r = parse_response(&bytes, Method::Get);
                if r == Ok(None) {
                    let tail: &[u8] = if bytes.ends_with(b"\r\n") {
                        b"\r\n"
                    } else {
                        b"\r\n\r\n"
                    };
                    bytes.extend_from_slice(tail);
                    r = parse_response(&bytes, Method::Get);
                }
                let refused_ok = REFUSED_VALID.iter().any(|(t, _)| *t == title);
                let body_error = BODY_ERRORS.contains(&title.as_str());
                match r {
                    Err(_) if expect_error || refused_ok => refused += 1,
                    Ok(Some(h)) if body_error => {
                        let mut d = ChunkedDecoder::new();
                        let res = d.decode(&bytes[h.head_len()..], &mut Vec::new());
                        if h.framing() == Framing::Chunked && res.is_err() {
                            refused += 1;
                        } else {
                            failures.push(format!("{title}: body accepted ({res:?})"));
                        }
                    }
                    Ok(Some(_)) if !expect_error && !refused_ok => parsed += 1,
                    other => {
                        failures.push(format!("{title}: {other:?} (expect_error={expect_error})"))
                    }
                }
            }
            println!("llhttp response vectors: {parsed} parsed, {refused} refused as expected");
            assert!(failures.is_empty(), "{}", failures.join("\n"));
        }
    }
}
