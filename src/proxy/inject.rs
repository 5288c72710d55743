//! The injection path of a forwarded response: what `forward` runs instead
//! of the plain body copy once `inject::decide::eligible` said a response is
//! an injectable HTML document. It owns the per-core injection state
//! ([`InjectState`]: codec, memory budget, the tracker's CSP hash), the
//! response head edits of a rewritten page (and of the bodiless responses
//! that must match it: [`mirror`]), and the two body transforms:
//!
//! - identity: the response head is held, with the body bytes so far, until
//!   the document's `<head>` has been read (`</head>`, `<body`, or anything
//!   else that ends it) and an `<html>`/`<body>` tag was seen, or the body
//!   ended, or `INJECT_TAIL_BYTES` were read. Then the decision is made from
//!   everything that matters (CSP headers and `<meta>` policies, document
//!   markup, a snippet already present): a page left alone goes out with
//!   the origin's head and bytes; an injected one gets the rewrite's head
//!   and streams through `html::StreamInjector` (only a tail is held back),
//!   framed chunked for HTTP/1.1 clients and close-delimited for HTTP/1.0
//!   ones. A page is held only for its head, so time-to-first-byte stays
//!   near the origin's.
//! - gzip/deflate: the compressed body is buffered (bounded by
//!   `INJECT_MAX_BYTES` and the core's budget, which counts allocated
//!   capacity), decoded whole, injected and re-encoded (or sent as identity
//!   when the client does not take the coding), with an exact
//!   `Content-Length`. Past a bound or on a decode error, the original head
//!   and bytes go out unchanged.
//!
//! Every injected page emits one `page_served` server event; every response
//! on this path is counted once in `inject_total{result}` (`aborted` when
//! the origin or the client fails before the outcome is known).

use super::forward::{emit, end_chunked, fill, write_response_head, Edits, OutFraming, Side};
use crate::clock;
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{Framing, RequestHead, ResponseHead};
use crate::inject::codec::{Budget, Codec, CodecError, Coding, DecodeError, Limits, Reservation};
use crate::inject::csp::{self, Action, CspPlan, SkipReason};
use crate::inject::decide::{self, Encoding, Skip};
use crate::inject::html::{inject_whole, Placement, StreamInjector};
use crate::inject::snippet::{self, PageToken};
use crate::metrics::labels::InjectResult;
use crate::net::Conn;
use crate::server::cores::Core;
use crate::track::json;
use std::cell::RefCell;
use std::net::IpAddr;
use std::time::Duration;

/// One core's injection state. Nothing in it is shared between cores.
pub struct InjectState {
    /// Decoder and per-level compressor, reused for every page.
    pub codec: RefCell<Codec>,
    /// `INJECT_CORE_BUDGET_MB`: memory for all pages being rewritten at once.
    pub budget: Budget,
    /// `base64(sha256(TRACKER_JS))`, computed once.
    pub tracker_hash: String,
}

impl InjectState {
    pub fn new(cfg: &crate::config::Config) -> Result<InjectState, CodecError> {
        Ok(InjectState {
            codec: RefCell::new(Codec::new(cfg.inject_gzip_level)?),
            budget: Budget::new(cfg.inject_core_budget),
            tracker_hash: snippet::tracker_sha256_b64(),
        })
    }
}

/// The metric label of an eligibility skip.
pub fn skip_result(s: Skip) -> InjectResult {
    match s {
        Skip::NotGet => InjectResult::NotGet,
        Skip::Status => InjectResult::Status,
        Skip::NotHtml => InjectResult::NotHtml,
        Skip::ContentRange => InjectResult::ContentRange,
        Skip::Attachment => InjectResult::Attachment,
        Skip::NoTransform => InjectResult::NoTransform,
        Skip::NotDocument => InjectResult::NotDocument,
        Skip::StackedEncoding => InjectResult::StackedEncoding,
        Skip::UnsupportedEncoding => InjectResult::UnsupportedEncoding,
    }
}

fn csp_result(r: SkipReason) -> InjectResult {
    match r {
        SkipReason::MetaWithoutNonce => InjectResult::CspMetaNoNonce,
        SkipReason::MetaNonceConflict => InjectResult::CspMetaNonceConflict,
        SkipReason::HashWouldBlockStyles => InjectResult::CspHashWouldBlockStyles,
        SkipReason::BadTrackerHash => InjectResult::CspBadTrackerHash,
        SkipReason::ScriptNone => InjectResult::CspScriptNone,
    }
}

fn decode_result(e: DecodeError) -> InjectResult {
    match e {
        DecodeError::TooLarge => InjectResult::TooLarge,
        DecodeError::RatioExceeded => InjectResult::RatioExceeded,
        DecodeError::Corrupt => InjectResult::Corrupt,
    }
}

/// Reads a response body piece by piece, whatever the origin's framing
/// (chunked framing removed).
enum BodyReader {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl BodyReader {
    fn new(framing: Framing) -> BodyReader {
        match framing {
            Framing::None => BodyReader::Done,
            Framing::Length(n) => BodyReader::Length(n),
            Framing::Chunked => BodyReader::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => BodyReader::UntilClose,
        }
    }

    /// Appends the next piece of body to `data`; `Ok(false)` at the end.
    async fn next(
        &mut self,
        src: &mut Conn,
        timeout: Duration,
        data: &mut Vec<u8>,
    ) -> Result<bool, Side> {
        loop {
            match self {
                BodyReader::Done => return Ok(false),
                BodyReader::Length(0) => {
                    *self = BodyReader::Done;
                    return Ok(false);
                }
                BodyReader::Length(n) => {
                    if src.buf.is_empty() {
                        fill(src, timeout).await?;
                    }
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(src.buf.len());
                    data.extend_from_slice(&src.buf[..take]);
                    src.consume(take);
                    *n -= take as u64;
                    return Ok(true);
                }
                BodyReader::Chunked(dec) => {
                    if dec.is_done() {
                        *self = BodyReader::Done;
                        return Ok(false);
                    }
                    if !src.buf.is_empty() {
                        let before = data.len();
                        let used = dec.decode(&src.buf, data).map_err(|_| Side::Framing)?;
                        src.consume(used);
                        if data.len() > before {
                            return Ok(true);
                        }
                        if dec.is_done() {
                            continue;
                        }
                    }
                    fill(src, timeout).await?;
                }
                BodyReader::UntilClose => {
                    if !src.buf.is_empty() {
                        data.extend_from_slice(&src.buf);
                        src.buf.clear();
                        return Ok(true);
                    }
                    match src.read_more_within(timeout).await {
                        Ok(Ok(0)) => {
                            *self = BodyReader::Done;
                            return Ok(false);
                        }
                        Ok(Ok(_)) => {}
                        _ => return Err(Side::Source),
                    }
                }
            }
        }
    }
}

/// One response on the injection path.
pub(crate) struct Job<'a> {
    pub core: &'a Core,
    pub head: &'a RequestHead,
    pub resp: &'a ResponseHead,
    pub peer: IpAddr,
    /// The client connection stays open after this response (before any
    /// framing consideration of the injection path).
    pub keep_client: bool,
}

/// How the job ended: the copy result and whether the client connection
/// may be kept.
pub(crate) struct Done {
    pub result: Result<(), Side>,
    pub keep_client: bool,
    /// The origin failed before any byte went to the client (a compressed
    /// body being buffered): the client can still get an error response.
    pub nothing_sent: bool,
}

/// Serves the body of an eligible response in `enc`, injected if possible.
pub(crate) async fn serve(
    job: Job<'_>,
    client: &mut Conn,
    origin: &mut Conn,
    enc: Encoding,
) -> Done {
    let csp_headers: Vec<&[u8]> = job.resp.headers_named(b"content-security-policy").collect();
    match enc {
        Encoding::Identity => identity(&job, client, origin, &csp_headers).await,
        Encoding::Gzip | Encoding::Deflate => {
            compressed(&job, client, origin, enc, &csp_headers).await
        }
    }
}

/// Whether the client of `resp` may get a per-client token, and whether
/// `Cache-Control: private` goes with it.
fn per_client(resp: &ResponseHead) -> (bool, bool) {
    let shared = decide::shared_cacheable(resp, clock::unix_millis() / 1000);
    let add_private = !shared && !never_shared(resp);
    (!shared, add_private)
}

/// The head edits of a bodiless response that must match an injected page:
/// a HEAD to an injectable page, or a 304 revalidating one
/// ([`decide::revalidates_injectable`]). Built by [`mirror`].
pub(crate) struct Mirror {
    plan: CspPlan,
    add_private: bool,
    drop_content_encoding: bool,
}

impl Mirror {
    /// The edits, as the GET's rewritten 200 gets them (`Content-Length`
    /// dropped: the injected body's length differs).
    pub(crate) fn edits(&self) -> Edits<'_> {
        let mut e = rewrite_edits(&self.plan, self.add_private);
        e.drop_content_encoding = self.drop_content_encoding;
        e
    }
}

/// The head edits the injected GET of this page would get, for a bodiless
/// response to `head`: the CSP rewrite (from the headers: a `<meta>`
/// policy is in a body we do not have), `Cache-Control: private` when the
/// page carries per-client data, the rewrite's `ETag`/`Vary`/digest edits,
/// and for a compressed page whose client does not take the coding, no
/// `Content-Encoding`. `None` when the headers alone say the GET would be
/// left alone (a CSP skip). `enc`: the page's coding, when known (a HEAD).
pub(crate) fn mirror(
    st: &InjectState,
    head: &RequestHead,
    resp: &ResponseHead,
    enc: Option<Encoding>,
) -> Option<Mirror> {
    let csp_headers: Vec<&[u8]> = resp.headers_named(b"content-security-policy").collect();
    let plan = csp::plan(&csp_headers, &[], &st.tracker_hash);
    if matches!(plan.action, Action::Skip(_)) {
        return None;
    }
    let (_, add_private) = per_client(resp);
    let drop_content_encoding =
        enc.is_some_and(|e| e != Encoding::Identity && !decide::client_accepts(head, e));
    Some(Mirror {
        plan,
        add_private,
        drop_content_encoding,
    })
}

/// What an earlier trackgate (a chain of two) leaves in a page it injected.
const MARKER: &[u8] = b"id=\"trackgate-config\"";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Looks for [`MARKER`] in a body arriving in pieces, across piece
/// boundaries, keeping only the last `MARKER.len() - 1` bytes.
#[derive(Default)]
struct MarkerScan {
    carry: Vec<u8>,
    found: bool,
}

impl MarkerScan {
    fn feed(&mut self, data: &[u8]) {
        if self.found {
            return;
        }
        let k = MARKER.len() - 1;
        self.carry.extend_from_slice(&data[..data.len().min(k)]);
        if contains(&self.carry, MARKER) || contains(data, MARKER) {
            self.found = true;
            return;
        }
        if data.len() >= k {
            self.carry.clear();
            self.carry.extend_from_slice(&data[data.len() - k..]);
        } else {
            let drop = self.carry.len().saturating_sub(k);
            self.carry.drain(..drop);
        }
    }
}

/// The response already keeps every shared cache away: an unqualified
/// `private` or a `no-store` directive. (`no-cache` does not: a shared
/// cache may store the page and serve it after revalidation.)
fn never_shared(resp: &ResponseHead) -> bool {
    resp.headers_named(b"cache-control").any(|v| {
        v.split(|&b| b == b',').any(|d| {
            let d = d.trim_ascii();
            d.eq_ignore_ascii_case(b"private") || d.eq_ignore_ascii_case(b"no-store")
        })
    })
}

/// The head of a response whose body goes out unchanged (a bound was hit
/// before anything was sent), framed as the origin framed it.
fn original_head(job: &Job<'_>, out: &mut Vec<u8>) -> (OutFraming, bool) {
    let client_11 = job.head.version_minor() == 1;
    let framing = match job.resp.framing() {
        Framing::None => OutFraming::AsIs,
        Framing::Length(n) => OutFraming::Length(n),
        Framing::Chunked | Framing::UntilClose if client_11 => OutFraming::Chunked,
        Framing::Chunked | Framing::UntilClose => OutFraming::Close,
    };
    let keep = job.keep_client && framing != OutFraming::Close;
    let keep_10 = keep && !client_11;
    write_response_head(out, job.resp, Some(framing), !keep, keep_10, &Edits::NONE);
    (framing, keep)
}

/// Sends the original head, then `buffered` (body bytes already read, in
/// order), then the rest of the body as it comes.
async fn pass_through(
    job: &Job<'_>,
    client: &mut Conn,
    origin: &mut Conn,
    reader: &mut BodyReader,
    buffered: Vec<Vec<u8>>,
) -> Done {
    let mut out = Vec::with_capacity(1024);
    let (framing, keep) = original_head(job, &mut out);
    let chunked = framing == OutFraming::Chunked;
    let result = async {
        client.send(&mut out).await.map_err(|_| Side::Sink)?;
        let mut scratch = Vec::with_capacity(16);
        let mut data = Vec::new();
        for part in buffered {
            data = emit(client, part, chunked, &mut scratch).await?;
        }
        let timeout = job.core.shared.cfg.upstream_timeout;
        while reader.next(origin, timeout, &mut data).await? {
            data = emit(client, data, chunked, &mut scratch).await?;
        }
        if chunked {
            end_chunked(client).await?;
        }
        Ok(())
    }
    .await;
    Done {
        result,
        keep_client: keep,
        nothing_sent: false,
    }
}

/// Builds the snippet (minting the token when per-client).
fn build_snippet(job: &Job<'_>, mint: bool, nonce: Option<&str>) -> (Vec<u8>, Option<PageToken>) {
    let page = mint.then(|| job.core.tracker.mint_page(job.head, job.peer));
    let mut s = Vec::with_capacity(2048);
    snippet::write(
        &mut s,
        &job.core.shared.cfg.track_prefix,
        page.as_ref(),
        nonce,
    );
    (s, page)
}

/// Counts an injected page and emits its `page_served` event.
fn injected(
    job: &Job<'_>,
    page: Option<&PageToken>,
    placement: Placement,
    enc: &str,
    plan: &CspPlan,
) {
    job.core.metrics.inject(InjectResult::Injected);
    let mut p = Vec::with_capacity(512);
    p.extend_from_slice(b"{\"path\":");
    json::write_str(&mut p, job.head.path());
    p.extend_from_slice(b",\"status\":");
    json::write_u64(&mut p, u64::from(job.resp.status()));
    p.extend_from_slice(b",\"placement\":");
    json::write_str(&mut p, placement.as_str().as_bytes());
    p.extend_from_slice(b",\"encoding\":");
    json::write_str(&mut p, enc.as_bytes());
    p.extend_from_slice(b",\"request_headers\":[");
    for (i, (name, _)) in job.head.headers().enumerate() {
        if i > 0 {
            p.push(b',');
        }
        json::write_str(&mut p, name);
    }
    p.extend_from_slice(b"],\"csp\":{\"action\":");
    let action: &[u8] = match plan.action {
        Action::AsIs => b"as_is",
        Action::UseNonce(_) => b"nonce",
        Action::AddHash => b"hash",
        Action::UseNonceAndAddHash(_) => b"nonce_and_hash",
        Action::Skip(_) => b"skip",
    };
    json::write_str(&mut p, action);
    p.extend_from_slice(b",\"blocked_connect\":");
    p.extend_from_slice(if plan.blocked.connect {
        b"true"
    } else {
        b"false"
    });
    p.extend_from_slice(b",\"blocked_img\":");
    p.extend_from_slice(if plan.blocked.img { b"true" } else { b"false" });
    p.extend_from_slice(b"}}");
    job.core
        .tracker
        .page_served(job.head, job.peer, page.map(|t| t.pageview_id), &p);
}

/// The head edits of a rewritten page.
fn rewrite_edits<'p>(plan: &'p CspPlan, add_private: bool) -> Edits<'p> {
    Edits {
        drop_content_length: true,
        rewritten: true,
        drop_content_encoding: false,
        csp: plan.new_headers.as_deref(),
        add_private,
    }
}

async fn identity(
    job: &Job<'_>,
    client: &mut Conn,
    origin: &mut Conn,
    csp_headers: &[&[u8]],
) -> Done {
    let st = &job.core.inject;
    let cfg = &job.core.shared.cfg;
    let tail = cfg.inject_tail_bytes;
    let mut reader = BodyReader::new(job.resp.framing());
    let mut inj = StreamInjector::new(tail);
    let mut marker = MarkerScan::default();
    // Hold the head: read until the document's head is known (and the
    // document markup seen), the body ends, or `tail` bytes are in. Only
    // the first `tail` bytes count for the decision, so it does not depend
    // on how the origin's body was split. `held` keeps the bytes as they
    // came (for a page left alone), `ready` what the injector lets go (for
    // an injected one).
    let mut held: Vec<u8> = Vec::new();
    let mut ready: Vec<u8> = Vec::new();
    let mut fed = 0;
    let (scan, ended) = loop {
        let more = match reader.next(origin, cfg.upstream_timeout, &mut held).await {
            Ok(more) => more,
            Err(side) => {
                job.core.metrics.inject(InjectResult::Aborted);
                // Nothing was sent yet: the caller answers 502.
                return Done {
                    result: Err(side),
                    keep_client: false,
                    nothing_sent: true,
                };
            }
        };
        let cut = held.len().min(tail);
        inj.push(held.get(fed..cut).unwrap_or(&[]), &mut ready);
        fed = cut;
        let scan = csp::scan_head(held.get(..cut).unwrap_or(&[]));
        if !more || held.len() >= tail || (scan.complete && inj.document_seen()) {
            break (scan, !more);
        }
    };
    let document_seen = inj.document_seen();
    inj.push(held.get(fed..).unwrap_or(&[]), &mut ready);
    marker.feed(&held);
    let m: Vec<&str> = scan.metas.iter().map(String::as_str).collect();
    let plan = csp::plan(csp_headers, &m, &st.tracker_hash);
    let left_alone = if let Action::Skip(r) = plan.action {
        Some(csp_result(r))
    } else if !scan.complete && !ended {
        // A `<meta>` policy may still come: inject correctly or not at all.
        Some(InjectResult::HeadTooLong)
    } else if !document_seen || (ended && !inj.would_inject()) {
        Some(InjectResult::NoDocumentMarkup)
    } else if marker.found {
        Some(InjectResult::AlreadyInjected)
    } else {
        None
    };
    if let Some(r) = left_alone {
        job.core.metrics.inject(r);
        return pass_through(job, client, origin, &mut reader, vec![held]).await;
    }
    drop(held);

    let (mint, add_private) = per_client(job.resp);
    let client_11 = job.head.version_minor() == 1;
    let framing = if client_11 {
        OutFraming::Chunked
    } else {
        OutFraming::Close
    };
    let keep = job.keep_client && client_11;
    let mut out = Vec::with_capacity(1024);
    write_response_head(
        &mut out,
        job.resp,
        Some(framing),
        !keep,
        false,
        &rewrite_edits(&plan, add_private),
    );
    let chunked = client_11;
    let mut counted = false;
    let result = async {
        client.send(&mut out).await.map_err(|_| Side::Sink)?;
        let mut scratch = Vec::with_capacity(16);
        let mut piece = emit(client, ready, chunked, &mut scratch).await?;
        let mut data = Vec::with_capacity(crate::net::READ_CHUNK);
        while reader.next(origin, cfg.upstream_timeout, &mut data).await? {
            piece.clear();
            inj.push(&data, &mut piece);
            marker.feed(&data);
            data.clear();
            piece = emit(client, piece, chunked, &mut scratch).await?;
        }
        piece.clear();
        // The head went out already; the body may still turn out to carry
        // another trackgate's snippet, or to end where no snippet can go:
        // it then goes out unchanged (the head edits are safe for it).
        counted = true;
        if marker.found {
            inj.finish(b"", &mut piece);
            job.core.metrics.inject(InjectResult::AlreadyInjected);
        } else if !inj.would_inject() {
            inj.finish(b"", &mut piece);
            job.core.metrics.inject(InjectResult::NoDocumentMarkup);
        } else {
            let (snip, page) = build_snippet(job, mint, plan.action.nonce());
            let placement = inj.finish(&snip, &mut piece);
            injected(job, page.as_ref(), placement, "identity", &plan);
        }
        emit(client, piece, chunked, &mut scratch).await?;
        if chunked {
            end_chunked(client).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() && !counted {
        job.core.metrics.inject(InjectResult::Aborted);
    }
    Done {
        result,
        keep_client: keep,
        nothing_sent: false,
    }
}

async fn compressed(
    job: &Job<'_>,
    client: &mut Conn,
    origin: &mut Conn,
    enc: Encoding,
    csp_headers: &[&[u8]],
) -> Done {
    let st = &job.core.inject;
    let cfg = &job.core.shared.cfg;
    let max = cfg.inject_max_bytes;
    let mut reader = BodyReader::new(job.resp.framing());
    let mut body: Vec<u8> = Vec::new();

    // A compressed body larger than the decoded bound cannot fit in it.
    if let Framing::Length(n) = job.resp.framing() {
        if n > max as u64 {
            job.core.metrics.inject(InjectResult::TooLarge);
            return pass_through(job, client, origin, &mut reader, vec![]).await;
        }
    }
    let Some(mut res) = st.budget.try_reserve(0) else {
        job.core.metrics.inject(InjectResult::Budget);
        return pass_through(job, client, origin, &mut reader, vec![]).await;
    };
    // A known length: one allocation of exactly that size.
    if let Framing::Length(n) = job.resp.framing() {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if grow_exact(&mut body, n, &mut res).is_err() {
            job.core.metrics.inject(InjectResult::Budget);
            drop(res);
            drop(body);
            return pass_through(job, client, origin, &mut reader, vec![]).await;
        }
    }
    let mut piece = Vec::new();
    loop {
        piece.clear();
        match reader.next(origin, cfg.upstream_timeout, &mut piece).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(side) => {
                job.core.metrics.inject(InjectResult::Aborted);
                // Nothing was sent yet: the caller answers 502.
                return Done {
                    result: Err(side),
                    keep_client: false,
                    nothing_sent: true,
                };
            }
        }
        if let Err(r) = append_bounded(&mut body, &piece, &mut res, max) {
            job.core.metrics.inject(r);
            drop(res);
            return pass_through(job, client, origin, &mut reader, vec![body, piece]).await;
        }
    }
    drop(piece);

    match rewrite(job, enc, &body, body.capacity(), csp_headers, &mut res) {
        Ok(Rewritten {
            out,
            identity_out,
            plan,
            add_private,
        }) => {
            drop(body);
            let keep = job.keep_client;
            let mut head = Vec::with_capacity(1024);
            let mut edits = rewrite_edits(&plan, add_private);
            edits.drop_content_encoding = identity_out;
            write_response_head(
                &mut head,
                job.resp,
                Some(OutFraming::Length(out.len() as u64)),
                !keep,
                keep && job.head.version_minor() == 0,
                &edits,
            );
            let result = async {
                client.send(&mut head).await.map_err(|_| Side::Sink)?;
                let (r, _) = client.write_all(out).await;
                r.map_err(|_| Side::Sink)
            }
            .await;
            Done {
                result,
                keep_client: keep,
                nothing_sent: false,
            }
        }
        Err(r) => {
            job.core.metrics.inject(r);
            drop(res);
            pass_through(job, client, origin, &mut reader, vec![body]).await
        }
    }
}

/// Appends `piece` to a compressed body being buffered, within `max`
/// bytes and the reservation `res` (grown from the core's budget), which
/// always covers `body`'s allocated capacity, not just its length: the
/// buffer grows by doubling (capped at `max`) with the budget reserved
/// before each allocation. On an error `body` is unchanged.
fn append_bounded(
    body: &mut Vec<u8>,
    piece: &[u8],
    res: &mut Reservation,
    max: usize,
) -> Result<(), InjectResult> {
    let need = body.len().saturating_add(piece.len());
    if need > max {
        return Err(InjectResult::TooLarge);
    }
    if need > body.capacity() {
        let target = need.max(body.capacity().saturating_mul(2)).min(max);
        grow_exact(body, target, res)?;
    }
    body.extend_from_slice(piece);
    Ok(())
}

/// Grows `body`'s capacity to `target` bytes (no-op when it has them),
/// reserving them from the budget first; the allocator's actual capacity
/// is reconciled after.
fn grow_exact(
    body: &mut Vec<u8>,
    target: usize,
    res: &mut Reservation,
) -> Result<(), InjectResult> {
    if target <= body.capacity() {
        return Ok(());
    }
    if !res.try_grow(target.saturating_sub(res.bytes())) {
        return Err(InjectResult::Budget);
    }
    body.reserve_exact(target - body.len());
    if !res.try_grow(body.capacity().saturating_sub(res.bytes())) {
        return Err(InjectResult::Budget);
    }
    Ok(())
}

struct Rewritten {
    out: Vec<u8>,
    /// The body goes out as identity (the client does not take the coding).
    identity_out: bool,
    plan: CspPlan,
    add_private: bool,
}

/// Decodes, injects and re-encodes a whole compressed body; on any failure
/// the reason, and the caller sends the original bytes.
fn rewrite(
    job: &Job<'_>,
    enc: Encoding,
    body: &[u8],
    body_capacity: usize,
    csp_headers: &[&[u8]],
    res: &mut Reservation,
) -> Result<Rewritten, InjectResult> {
    let st = &job.core.inject;
    let cfg = &job.core.shared.cfg;
    let limits = Limits {
        max_output: cfg.inject_max_bytes,
        ..Limits::default()
    };
    let mut codec = st.codec.borrow_mut();
    // The decode may grow its output up to `cap`: hold that first, then
    // only what the decoded page and its injected and re-encoded copies
    // really need.
    let cap = limits.output_cap(body.len());
    if !res.try_grow(cap) {
        return Err(InjectResult::Budget);
    }
    let mut doc = Vec::new();
    let coding = match enc {
        Encoding::Gzip => codec
            .decode(Coding::Gzip, body, &limits, &mut doc)
            .map(|()| Coding::Gzip),
        _ => codec.decode_deflate_any(body, &limits, &mut doc),
    }
    .map_err(decode_result)?;
    if contains(&doc, MARKER) {
        return Err(InjectResult::AlreadyInjected);
    }
    let snippet_room = 4096;
    let page_len = doc.len() + snippet_room;
    res.shrink_to(body_capacity + doc.capacity());
    if !res.try_grow(page_len.saturating_add(codec.encode_bound(coding, page_len))) {
        return Err(InjectResult::Budget);
    }
    let metas = csp::find_meta_csps(&doc);
    let m: Vec<&str> = metas.iter().map(String::as_str).collect();
    let plan = csp::plan(csp_headers, &m, &st.tracker_hash);
    if let Action::Skip(r) = plan.action {
        return Err(csp_result(r));
    }
    let (mint, add_private) = per_client(job.resp);
    let mut injected_doc = Vec::with_capacity(doc.len() + snippet_room);
    // The token is minted only once the page is known to be a document.
    let probe = inject_whole(&doc, b"", &mut injected_doc);
    if !probe.injected() {
        return Err(InjectResult::NoDocumentMarkup);
    }
    injected_doc.clear();
    let (snip, page) = build_snippet(job, mint, plan.action.nonce());
    let placement = inject_whole(&doc, &snip, &mut injected_doc);
    drop(doc);
    let identity_out = !decide::client_accepts(job.head, enc);
    let out = if identity_out {
        injected_doc
    } else {
        let mut out = Vec::new();
        codec
            .encode(coding, &injected_doc, &mut out)
            .map_err(|_| InjectResult::EncodeError)?;
        out
    };
    let enc_label = if identity_out {
        "identity"
    } else {
        enc.as_str()
    };
    injected(job, page.as_ref(), placement, enc_label, &plan);
    Ok(Rewritten {
        out,
        identity_out,
        plan,
        add_private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffering_reserves_what_is_allocated() {
        // Pieces of uneven sizes, as reads deliver them.
        let budget = Budget::new(1 << 20);
        let mut res = budget.try_reserve(0).expect("reserve");
        let mut body = Vec::new();
        let mut total = 0;
        for i in 0..200usize {
            let piece = vec![b'x'; 700 + (i * 37) % 3000];
            total += piece.len();
            match append_bounded(&mut body, &piece, &mut res, 1 << 20) {
                Ok(()) => {
                    assert_eq!(body.len(), total);
                    assert!(
                        res.bytes() >= body.capacity(),
                        "reserved {} < allocated {}",
                        res.bytes(),
                        body.capacity()
                    );
                    assert_eq!(budget.in_use(), res.bytes());
                }
                Err(r) => {
                    // Refused only when the allocation would not fit.
                    assert_eq!(r, InjectResult::Budget);
                    assert!(body.len() + piece.len() > budget.total() / 2);
                    break;
                }
            }
        }
        // Past `max`, refused without growing.
        let mut small = Vec::new();
        let mut r2 = Budget::new(1 << 20).try_reserve(0).expect("reserve");
        assert_eq!(
            append_bounded(&mut small, &[0; 11], &mut r2, 10),
            Err(InjectResult::TooLarge)
        );
        assert!(small.is_empty());
    }

    #[test]
    fn marker_is_found_across_every_split() {
        let doc = b"<html><body><script type=\"application/json\" id=\"trackgate-config\">{}</script></body></html>";
        for a in 0..doc.len() {
            for b in a..doc.len() {
                let mut m = MarkerScan::default();
                m.feed(&doc[..a]);
                m.feed(&doc[a..b]);
                m.feed(&doc[b..]);
                assert!(m.found, "{a} {b}");
            }
        }
        let mut m = MarkerScan::default();
        for c in b"<html><body>id=\"trackgate-conf</body></html>".chunks(3) {
            m.feed(c);
        }
        assert!(!m.found);
    }
}
