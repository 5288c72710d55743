//! The injection path of a forwarded response: what `forward` runs instead
//! of the plain body copy once `inject::decide::eligible` said a response is
//! an injectable HTML document. It owns the per-core injection state
//! ([`InjectState`]: codec, memory budget, the tracker's CSP hash), the
//! response head edits of a rewritten page, and the two body transforms:
//!
//! - identity: streamed through `html::StreamInjector` (only a tail is held
//!   back), framed chunked for HTTP/1.1 clients and close-delimited for
//!   HTTP/1.0 ones. The head goes out before the body is read, so CSP is
//!   planned from the headers; a `<meta>` policy is looked for in the first
//!   `INJECT_TAIL_BYTES` of the body and, if it would need what the headers
//!   sent cannot give (no nonce, or a header change), the page is left
//!   without the snippet (its bytes are unchanged; only the head edits of a
//!   rewrite remain, which are all safe for an unchanged body).
//! - gzip/deflate: the compressed body is buffered (bounded by
//!   `INJECT_MAX_BYTES` and the core's budget), decoded whole, injected and
//!   re-encoded (or sent as identity when the client does not take the
//!   coding), with an exact `Content-Length`. Past a bound or on a decode
//!   error, the original head and bytes go out unchanged.
//!
//! Every injected page emits one `page_served` server event; every outcome
//! is counted in `inject_total{result}`.

use super::forward::{emit, end_chunked, fill, write_response_head, Edits, OutFraming, Side};
use crate::clock;
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{Framing, RequestHead, ResponseHead};
use crate::inject::codec::{Budget, Codec, CodecError, Coding, DecodeError, Limits};
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
                    match monoio::time::timeout(timeout, src.read_more()).await {
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

/// Whether this client may get a per-client token, and the head edits that
/// go with it.
fn per_client(job: &Job<'_>) -> (bool, bool) {
    let shared = decide::shared_cacheable(job.resp, clock::unix_millis() / 1000);
    let add_private = !shared && !never_shared(job.resp);
    (!shared, add_private)
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

/// Sends the original head, then `buffered` (body bytes already read),
/// then the rest of the body as it comes.
async fn pass_through(
    job: &Job<'_>,
    client: &mut Conn,
    origin: &mut Conn,
    reader: &mut BodyReader,
    buffered: Vec<u8>,
) -> Done {
    let mut out = Vec::with_capacity(1024);
    let (framing, keep) = original_head(job, &mut out);
    let chunked = framing == OutFraming::Chunked;
    let result = async {
        client.send(&mut out).await.map_err(|_| Side::Sink)?;
        let mut scratch = Vec::with_capacity(16);
        let mut data = emit(client, buffered, chunked, &mut scratch).await?;
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
    let mut reader = BodyReader::new(job.resp.framing());
    let first = csp::plan(csp_headers, &[], &st.tracker_hash);
    if let Action::Skip(r) = first.action {
        job.core.metrics.inject(csp_result(r));
        return pass_through(job, client, origin, &mut reader, Vec::new()).await;
    }
    let (mint, add_private) = per_client(job);
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
        &rewrite_edits(&first, add_private),
    );
    let chunked = client_11;
    let tail = cfg.inject_tail_bytes;
    let result = async {
        client.send(&mut out).await.map_err(|_| Side::Sink)?;
        let mut inj = StreamInjector::new(tail);
        // The first bytes, kept to look for `<meta>` policies at the end.
        let mut prefix: Vec<u8> = Vec::new();
        let mut data = Vec::with_capacity(crate::net::READ_CHUNK);
        let mut piece = Vec::with_capacity(crate::net::READ_CHUNK);
        let mut scratch = Vec::with_capacity(16);
        while reader.next(origin, cfg.upstream_timeout, &mut data).await? {
            if prefix.len() < tail {
                let n = (tail - prefix.len()).min(data.len());
                prefix.extend_from_slice(&data[..n]);
            }
            piece.clear();
            inj.push(&data, &mut piece);
            data.clear();
            piece = emit(client, std::mem::take(&mut piece), chunked, &mut scratch).await?;
        }
        let metas = csp::find_meta_csps(&prefix);
        let plan = if metas.is_empty() {
            first.clone()
        } else {
            let m: Vec<&str> = metas.iter().map(String::as_str).collect();
            csp::plan(csp_headers, &m, &st.tracker_hash)
        };
        let skip = match &plan.action {
            Action::Skip(r) => Some(csp_result(*r)),
            // The head is gone: a plan that needs other headers than the
            // ones sent cannot be followed.
            _ if plan.new_headers != first.new_headers => Some(InjectResult::CspMetaNonceConflict),
            _ => None,
        };
        piece.clear();
        match skip {
            Some(r) => {
                inj.finish(b"", &mut piece);
                job.core.metrics.inject(r);
            }
            // A fragment: no token is minted for it.
            None if !inj.clone().finish(b"", &mut Vec::new()).injected() => {
                inj.finish(b"", &mut piece);
                job.core.metrics.inject(InjectResult::NoDocumentMarkup);
            }
            None => {
                let (snip, page) = build_snippet(job, mint, plan.action.nonce());
                let placement = inj.finish(&snip, &mut piece);
                injected(job, page.as_ref(), placement, "identity", &plan);
            }
        }
        emit(client, piece, chunked, &mut scratch).await?;
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
            return pass_through(job, client, origin, &mut reader, body).await;
        }
    }
    let Some(mut res) = st.budget.try_reserve(0) else {
        job.core.metrics.inject(InjectResult::Budget);
        return pass_through(job, client, origin, &mut reader, body).await;
    };
    loop {
        let before = body.len();
        match reader.next(origin, cfg.upstream_timeout, &mut body).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(side) => {
                // Nothing was sent yet: the caller answers 502.
                return Done {
                    result: Err(side),
                    keep_client: false,
                    nothing_sent: true,
                };
            }
        }
        let grew = body.len() - before;
        let over = if body.len() > max {
            Some(InjectResult::TooLarge)
        } else if !res.try_grow(grew) {
            Some(InjectResult::Budget)
        } else {
            None
        };
        if let Some(r) = over {
            job.core.metrics.inject(r);
            drop(res);
            return pass_through(job, client, origin, &mut reader, body).await;
        }
    }

    match rewrite(job, enc, &body, csp_headers, &mut res) {
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
            pass_through(job, client, origin, &mut reader, body).await
        }
    }
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
    csp_headers: &[&[u8]],
    res: &mut crate::inject::codec::Reservation,
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
    let snippet_room = 4096;
    let page_len = doc.len() + snippet_room;
    res.shrink_to(body.len() + doc.capacity());
    if !res.try_grow(page_len.saturating_add(codec.encode_bound(coding, page_len))) {
        return Err(InjectResult::Budget);
    }
    let metas = csp::find_meta_csps(&doc);
    let m: Vec<&str> = metas.iter().map(String::as_str).collect();
    let plan = csp::plan(csp_headers, &m, &st.tracker_hash);
    if let Action::Skip(r) = plan.action {
        return Err(csp_result(r));
    }
    let (mint, add_private) = per_client(job);
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
