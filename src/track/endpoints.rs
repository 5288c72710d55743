//! The locally answered endpoints, one [`Tracker`] per core: which requests
//! trackgate answers itself (routing), and the answers: the pixel, collect
//! (and stealth collect), token hand-out, health and readiness.
//!
//! Every event is encoded here, on the core, into NDJSON bytes and handed to
//! this core's journal channel as one batch per request (all or nothing).
//! Under `ACK_MODE=durable` a collect answer awaits the journal's fsync.

use crate::clock;
use crate::http::head::{Method, RequestHead};
use crate::http::response::Response;
use crate::inject::snippet::PageToken;
use crate::metrics::core::CoreMetrics;
use crate::metrics::labels::{AuthFailure, DropReason, EventSource, Route, TokenKind};
use crate::metrics::sinks::SinkHealth;
use crate::server::Shared;
use crate::sink::ack::AckError;
use crate::sink::{Batch, SinkHandle, SubmitError};
use crate::track::client_ip::{canonical, client_ip, IpText};
use crate::track::collect::{encode_collect, CollectError};
use crate::track::event::{self, Auth, AuthKind, EventFields, RequestCtx, Source};
use crate::track::ids::Rng;
use crate::track::ipmode::{render_ip, IpHasher, IpMode};
use crate::track::json;
use crate::track::pixel;
use crate::track::ratelimit::RateLimiter;
use crate::track::script;
use crate::track::token::{AuthError, Kind, Signer};
use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use uuid::Uuid;

/// The header a signed request carries (GoTrack's name).
pub const SIGNATURE_HEADER: &str = "X-GoTrack-HMAC";

/// A request trackgate answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Pixel,
    Collect,
    Stealth,
    PublicKey,
    HmacJs,
    Health,
    Ready,
    Preflight,
    /// The tracker as a file (`/pixel*.js`, see [`crate::track::script`]).
    Script(script::Script),
    /// A tracking path with a method it does not take.
    NotAllowed(&'static str),
}

impl Local {
    pub fn route(self) -> Route {
        match self {
            Local::Pixel => Route::Pixel,
            Local::Collect => Route::Collect,
            Local::Stealth => Route::Stealth,
            Local::PublicKey => Route::PublicKey,
            Local::HmacJs => Route::HmacJs,
            Local::Health => Route::Health,
            Local::Ready => Route::Ready,
            Local::Preflight => Route::Preflight,
            Local::Script(_) => Route::Script,
            Local::NotAllowed(_) => Route::Rejected,
        }
    }
}

/// The tracking paths, with `TRACK_PREFIX` applied.
struct Paths {
    pixel: Vec<u8>,
    collect: Vec<u8>,
    public_key: Vec<u8>,
    hmac_js: Vec<u8>,
    healthz: Vec<u8>,
    readyz: Vec<u8>,
    scripts: script::Paths,
}

/// One core's tracking state.
pub struct Tracker {
    shared: Arc<Shared>,
    sinks: SinkHandle,
    metrics: Arc<CoreMetrics>,
    signer: Signer,
    hasher: RefCell<IpHasher>,
    rng: RefCell<Rng>,
    paths: Paths,
    /// `RATE_LIMIT_RPS` / `RATE_LIMIT_BURST` for this core.
    limiter: RateLimiter,
}

/// What every event and token of one request needs to know about its client.
struct Client<'h> {
    ip: IpAddr,
    ua: Option<&'h [u8]>,
    ip_text: Option<IpText>,
    ip_hash: Option<[u8; 32]>,
    received_ms: u64,
}

impl Tracker {
    pub fn new(
        shared: Arc<Shared>,
        sinks: SinkHandle,
        metrics: Arc<CoreMetrics>,
    ) -> Result<Tracker, String> {
        let cfg = &shared.cfg;
        let p = |s: &str| format!("{}{}", cfg.track_prefix, s).into_bytes();
        let paths = Paths {
            pixel: p("/px.gif"),
            collect: p("/collect"),
            public_key: p("/hmac/public-key"),
            hmac_js: p("/hmac.js"),
            healthz: p("/healthz"),
            readyz: p("/readyz"),
            scripts: script::Paths::new(&cfg.track_prefix),
        };
        let signer = Signer::new(
            &cfg.hmac_secret,
            cfg.hmac_secret_previous.as_deref(),
            cfg.token_ttl_s,
        );
        let hasher = RefCell::new(IpHasher::new(&cfg.ip_hash_secret));
        let rng = Rng::from_os().map_err(|e| format!("cannot seed the id generator: {e}"))?;
        let limiter = RateLimiter::new(cfg.rate_limit_rps, cfg.rate_limit_burst);
        Ok(Tracker {
            shared,
            sinks,
            metrics,
            signer,
            hasher,
            rng: RefCell::new(rng),
            paths,
            limiter,
        })
    }

    /// Decides whether trackgate answers this request itself.
    pub fn route(&self, head: &RequestHead) -> Option<Local> {
        let path = head.path();
        let m = head.method();
        let p = &self.paths;
        let get = matches!(m, Method::Get | Method::Head);
        let (local, allow) = if path == p.pixel.as_slice() {
            (get.then_some(Local::Pixel), "GET, HEAD")
        } else if path == p.collect.as_slice() {
            (
                (m == Method::Post).then_some(Local::Collect),
                "POST, OPTIONS",
            )
        } else if path == p.public_key.as_slice() {
            (get.then_some(Local::PublicKey), "GET, HEAD, OPTIONS")
        } else if path == p.hmac_js.as_slice() {
            (get.then_some(Local::HmacJs), "GET, HEAD, OPTIONS")
        } else if path == p.healthz.as_slice() {
            (get.then_some(Local::Health), "GET, HEAD")
        } else if path == p.readyz.as_slice() {
            (get.then_some(Local::Ready), "GET, HEAD")
        } else if let Some(s) = p.scripts.route(path) {
            (get.then_some(Local::Script(s)), "GET, HEAD")
        } else {
            // Stealth mode: a signed POST to any other path is collected,
            // never proxied.
            if m == Method::Post && is_signed(head) {
                return Some(Local::Stealth);
            }
            return None;
        };
        Some(match local {
            Some(l) => l,
            None if m == Method::Options => Local::Preflight,
            None => Local::NotAllowed(allow),
        })
    }

    /// Answers a local request whose body has been read. Only a durable
    /// collect awaits (the journal's fsync); everything else is immediate.
    pub async fn answer(
        &self,
        local: Local,
        head: &RequestHead,
        body: Vec<u8>,
        peer: IpAddr,
    ) -> Response {
        // Rate limit (RATE_LIMIT_RPS): the tracking endpoints only, keyed by
        // the client's network as tokens see it.
        if matches!(
            local,
            Local::Pixel | Local::Collect | Local::Stealth | Local::PublicKey | Local::HmacJs
        ) {
            let ip = client_ip(
                peer,
                head.headers_named(b"x-forwarded-for"),
                &self.shared.cfg.trusted_proxies,
            );
            // Loopback is never limited: a load balancer on this host whose
            // X-Forwarded-For is not trusted would put every visitor in one
            // bucket.
            let limited = !canonical(ip).is_loopback();
            let checked = if limited {
                self.limiter.check(ip, std::time::Instant::now())
            } else {
                Ok(())
            };
            if let Err(wait) = checked {
                self.metrics.rate_limited.inc();
                let resp = Response::json(429, br#"{"error":"rate limited"}"#.to_vec())
                    .header("Retry-After", wait.as_secs().to_string())
                    .header("Cache-Control", "no-store");
                return match local {
                    Local::Pixel => resp,
                    _ => self.cors(head, resp),
                };
            }
        }
        let resp = match local {
            Local::Pixel => self.pixel(head, peer),
            Local::Collect => self.collect(head, body, peer, Source::Collect).await,
            Local::Stealth => self.collect(head, body, peer, Source::Stealth).await,
            Local::PublicKey => self.token(head, peer, false),
            Local::HmacJs => self.token(head, peer, true),
            Local::Health => Response::text(200, "ok\n").header("Cache-Control", "no-store"),
            Local::Ready => self.ready(head),
            Local::Preflight => self.preflight(head),
            Local::Script(s) => script::answer(s, head),
            Local::NotAllowed(allow) => {
                Response::text(405, "method not allowed\n").header("Allow", allow)
            }
        };
        match local {
            Local::Collect
            | Local::Stealth
            | Local::PublicKey
            | Local::HmacJs
            | Local::Preflight => self.cors(head, resp),
            _ => resp,
        }
    }

    fn client<'h>(&self, head: &'h RequestHead, peer: IpAddr) -> Client<'h> {
        let cfg = &self.shared.cfg;
        let ip = client_ip(
            peer,
            head.headers_named(b"x-forwarded-for"),
            &cfg.trusted_proxies,
        );
        let received_ms = clock::unix_millis();
        let ip_hash = match cfg.ip_mode {
            IpMode::None => None,
            _ => Some(self.hasher.borrow_mut().hash(ip, received_ms / 1000)),
        };
        Client {
            ip,
            ua: head.header(b"user-agent"),
            ip_text: render_ip(cfg.ip_mode, ip),
            ip_hash,
            received_ms,
        }
    }

    fn ctx<'a>(&self, c: &'a Client, source: Source, auth: Option<&'a Auth>) -> RequestCtx<'a> {
        RequestCtx {
            received_ms: c.received_ms,
            source,
            ip: c.ip_text.as_ref().map(IpText::as_str),
            ip_hash: c.ip_hash.as_ref().map(|h| &h[..]),
            ua: c.ua,
            auth,
            pageview_id: auth.map(|a| a.pageview_id),
            session_id: None,
        }
    }

    /// Queues one request's events; counts them or their drop.
    fn submit(&self, bytes: Vec<u8>, events: u32, source: EventSource) -> Result<(), SubmitError> {
        let res = self.sinks.submit(Batch {
            bytes: bytes::Bytes::from(bytes),
            events,
        });
        match &res {
            Ok(()) => self.metrics.event(source, u64::from(events)),
            Err(e) => self.count_drop(*e, events),
        }
        res
    }

    fn count_drop(&self, e: SubmitError, events: u32) {
        let reason = match e {
            SubmitError::Full => DropReason::QueueFull,
            SubmitError::JournalFull => DropReason::JournalFull,
            SubmitError::Failed => DropReason::JournalFailed,
            SubmitError::Closed => DropReason::ShuttingDown,
        };
        self.metrics.dropped(reason, u64::from(events));
    }

    /// Queues a collect request's events and, under `ACK_MODE=durable`,
    /// awaits the fsync that covers them. `Err` is the answer to send.
    async fn submit_collect(
        &self,
        bytes: Vec<u8>,
        events: u32,
        source: EventSource,
    ) -> Result<(), Response> {
        let refused = |e: SubmitError| {
            let (status, body, retry): (u16, &[u8], &str) = match e {
                SubmitError::Full => (429, br#"{"error":"event queue full, retry later"}"#, "1"),
                SubmitError::JournalFull => {
                    (503, br#"{"error":"event journal full, retry later"}"#, "5")
                }
                SubmitError::Failed => (
                    503,
                    br#"{"error":"event journal failed, retry later"}"#,
                    "30",
                ),
                SubmitError::Closed => (503, br#"{"error":"shutting down, retry later"}"#, "1"),
            };
            Response::json(status, body.to_vec()).header("Retry-After", retry)
        };
        let wait = match self.sinks.submit_collect(Batch {
            bytes: bytes::Bytes::from(bytes),
            events,
        }) {
            Ok(w) => w,
            Err(e) => {
                self.count_drop(e, events);
                return Err(refused(e));
            }
        };
        if let Some(wait) = wait {
            // Boxed: monoio's timer entry is 128-byte aligned, and inline it
            // would make every local answer's (boxed) future an aligned
            // allocation, the pixel's included.
            let outcome = Box::pin(monoio::time::timeout(self.shared.cfg.idle_timeout, wait)).await;
            let e = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(AckError::Full)) => Some(SubmitError::JournalFull),
                Ok(Err(AckError::Failed)) => Some(SubmitError::Failed),
                Ok(Err(AckError::Closed)) => Some(SubmitError::Closed),
                Err(_) => {
                    // Not confirmed in time: the events may still land (a
                    // retry then duplicates them, with the same event ids).
                    return Err(Response::json(
                        503,
                        br#"{"error":"events not confirmed durable in time, retry later"}"#
                            .to_vec(),
                    )
                    .header("Retry-After", "1"));
                }
            };
            if let Some(e) = e {
                self.count_drop(e, events);
                return Err(refused(e));
            }
        }
        self.metrics.event(source, u64::from(events));
        Ok(())
    }

    fn pixel(&self, head: &RequestHead, peer: IpAddr) -> Response {
        let cfg = &self.shared.cfg;
        let mut resp = Response::new(200, "image/gif", &pixel::GIF[..])
            .header(
                "Cache-Control",
                "no-store, no-cache, must-revalidate, max-age=0",
            )
            .header("Pragma", "no-cache")
            .header("Expires", "0");
        if head.method() == Method::Head {
            return resp;
        }
        let client = self.client(head, peer);
        let mut session = cookie_value(head, cfg.cookie_name.as_bytes()).map(Cow::Borrowed);
        if session.is_none() && cfg.cookie_mode {
            let sid = self
                .rng
                .borrow_mut()
                .uuid_v7(client.received_ms)
                .to_string();
            let mut cookie = format!(
                "{}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=1800",
                cfg.cookie_name, sid
            );
            if let Some(d) = &cfg.cookie_domain {
                cookie.push_str("; Domain=");
                cookie.push_str(d);
            }
            if self.client_is_https(head, peer) {
                cookie.push_str("; Secure");
            }
            resp = resp.header("Set-Cookie", cookie);
            session = Some(Cow::Owned(sid.into_bytes()));
        }
        let mut ctx = self.ctx(&client, Source::Pixel, None);
        ctx.session_id = session.as_deref();
        // Written straight into this turn's gathered events (no buffer of
        // its own). The GIF is answered even when the queue is full:
        // browsers do not retry images. The drop is counted.
        let res = self.sinks.gather(1, |out| {
            pixel::build_pixel_event(
                out,
                head.query().unwrap_or(b""),
                &ctx,
                &mut self.rng.borrow_mut(),
            );
        });
        match res {
            Ok(()) => self.metrics.event(EventSource::Pixel, 1),
            Err(e) => self.count_drop(e, 1),
        }
        resp
    }

    /// Sends the events gathered in this turn of the event loop (the
    /// core's flusher task calls it); a failure is counted as a drop.
    pub fn flush_events(&self) {
        if let Err(e) = self.sinks.flush() {
            let lost = self.sinks.take_unsent();
            self.count_drop(e, lost);
        }
    }

    /// The core's flusher task: sends each turn's gathered events until
    /// [`Tracker::close_events`].
    pub async fn flush_each_turn(&self) {
        loop {
            self.sinks.gathered().await;
            self.flush_events();
            if self.sinks.is_closing() {
                break;
            }
        }
    }

    /// The core is ending: sends what is gathered and stops the flusher
    /// task (later events, if any, are sent one request at a time).
    pub fn close_events(&self) {
        self.flush_events();
        self.sinks.close_gathering();
    }

    /// The client reached us over HTTPS: only a trusted proxy can say so.
    fn client_is_https(&self, head: &RequestHead, peer: IpAddr) -> bool {
        self.shared.cfg.trusted_proxies.is_trusted(peer)
            && head
                .header(b"x-forwarded-proto")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"https"))
    }

    async fn collect(
        &self,
        head: &RequestHead,
        mut body: Vec<u8>,
        peer: IpAddr,
        source: Source,
    ) -> Response {
        let cfg = &self.shared.cfg;
        let client = self.client(head, peer);
        let presented = head
            .header(b"x-gotrack-hmac")
            .map(Cow::Borrowed)
            .or_else(|| pixel::query_param(head.query().unwrap_or(b""), b"_tg"));
        let Some(presented) = presented else {
            self.metrics.auth_failure(AuthFailure::Missing);
            return unauthorized(AuthError::Missing);
        };
        let verified = match self.signer.verify(
            &presented,
            &body,
            client.ua.unwrap_or(b""),
            client.ip,
            client.received_ms / 1000,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.auth_failure(auth_label(&e));
                return unauthorized(e);
            }
        };
        let auth = Auth {
            kind: match verified.kind {
                Kind::Page => AuthKind::P,
                Kind::Fetched => AuthKind::F,
            },
            pageview_id: verified.pageview_id,
            age_s: verified.age_s,
            ip_changed: verified.ip_changed,
        };
        let ctx = self.ctx(&client, source, Some(&auth));
        // A stealth POST without `url` takes the Referer, else its own URL.
        let own_url;
        let fallback: Option<&[u8]> = match source {
            Source::Stealth => match head.header(b"referer") {
                Some(r) => Some(r),
                None => {
                    own_url = [b"http://", head.host().unwrap_or(b""), head.target()].concat();
                    Some(&own_url)
                }
            },
            _ => None,
        };
        let mut out = Vec::with_capacity(body.len() + 512);
        let n = match encode_collect(
            &mut out,
            &mut body,
            cfg.max_batch_events,
            fallback,
            &ctx,
            &mut self.rng.borrow_mut(),
        ) {
            Ok(n) => n,
            Err(CollectError::TooManyEvents(n)) => {
                let mut b = br#"{"error":"too many events","events":"#.to_vec();
                crate::http::response::push_u64(&mut b, n as u64);
                b.extend_from_slice(br#","max":"#);
                crate::http::response::push_u64(&mut b, cfg.max_batch_events as u64);
                b.push(b'}');
                return Response::json(413, b);
            }
            Err(CollectError::InvalidJson(msg)) => {
                let mut b = br#"{"error":"invalid JSON","detail":"#.to_vec();
                json::write_str(&mut b, msg.as_bytes());
                b.push(b'}');
                return Response::json(400, b);
            }
        };
        let label = match source {
            Source::Stealth => EventSource::Stealth,
            _ => EventSource::Collect,
        };
        if n > 0 {
            if let Err(resp) = self.submit_collect(out, n as u32, label).await {
                return resp;
            }
        }
        let mut b = br#"{"accepted":"#.to_vec();
        crate::http::response::push_u64(&mut b, n as u64);
        b.extend_from_slice(br#","status":"ok"}"#);
        Response::json(202, b)
            .header("X-Gotrack-Accepted", n.to_string())
            .header("Cache-Control", "no-store")
    }

    /// `/hmac/public-key` (JSON) and `/hmac.js` (a script): a kind `f`
    /// token, for a new pageview or the one named by `?pv=`.
    fn token(&self, head: &RequestHead, peer: IpAddr, script: bool) -> Response {
        let client = self.client(head, peer);
        let pv = pixel::query_param(head.query().unwrap_or(b""), b"pv")
            .and_then(|v| {
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| Uuid::try_parse(s).ok())
            })
            .unwrap_or_else(|| self.rng.borrow_mut().uuid_v7(client.received_ms));
        let (token, expires) = self.mint(Kind::Fetched, pv, &client);
        let mut b = Vec::with_capacity(256);
        if script {
            b.extend_from_slice(b"window.trackgateToken=");
        }
        b.extend_from_slice(
            br#"{"algorithm":"HMAC-SHA256","header":"X-GoTrack-HMAC","scheme":"tg1","token":"#,
        );
        json::write_str(&mut b, token.as_bytes());
        b.extend_from_slice(br#","expires_at":"#);
        crate::http::response::push_u64(&mut b, expires);
        b.extend_from_slice(br#","pageview_id":""#);
        b.extend_from_slice(
            pv.hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        b.extend_from_slice(b"\"}");
        let resp = if script {
            b.extend_from_slice(b";\n");
            Response::new(200, "application/javascript; charset=utf-8", b)
        } else {
            Response::json(200, b)
        };
        resp.header("Cache-Control", "no-store")
    }

    /// A kind `p` token for a page served to this client (HTML injection):
    /// a new pageview id, the token and its expiry. Counted as issued.
    pub fn mint_page(&self, head: &RequestHead, peer: IpAddr) -> PageToken {
        let client = self.client(head, peer);
        let pageview_id = self.rng.borrow_mut().uuid_v7(client.received_ms);
        let (token, expires_at) = self.mint(Kind::Page, pageview_id, &client);
        PageToken {
            pageview_id,
            token,
            expires_at,
        }
    }

    /// Mints a token of `kind` for this client, now; counts it. Returns the
    /// token and its expiry (unix seconds).
    fn mint(&self, kind: Kind, pv: Uuid, client: &Client) -> (String, u64) {
        let iat = client.received_ms / 1000;
        let token = self
            .signer
            .mint(kind, pv, iat, client.ip, client.ua.unwrap_or(b""));
        self.metrics.token_issued(match kind {
            Kind::Page => TokenKind::Page,
            Kind::Fetched => TokenKind::Fetched,
        });
        (token, iat + self.signer.ttl_s())
    }

    /// Queues the `page_served` server event of an injected page.
    /// `payload` is one JSON object.
    pub fn page_served(
        &self,
        head: &RequestHead,
        peer: IpAddr,
        pageview_id: Option<Uuid>,
        payload: &[u8],
    ) {
        let client = self.client(head, peer);
        let mut ctx = self.ctx(&client, Source::Server, None);
        ctx.pageview_id = pageview_id;
        let ev = EventFields {
            event_id: self.rng.borrow_mut().uuid_v7(client.received_ms),
            kind: b"page_served",
            url: None,
            referrer: head.header(b"referer"),
            session_id: None,
            pageview_id: None,
        };
        // A full queue is counted as a drop; the page is served regardless.
        match self
            .sinks
            .gather(1, |out| event::encode(out, &ctx, &ev, payload))
        {
            Ok(()) => self.metrics.event(EventSource::Server, 1),
            Err(e) => self.count_drop(e, 1),
        }
    }

    /// `/readyz`: 200 while trackgate can proxy and accept events, with each
    /// sink's state (healthy, behind by N events while it reads the journal
    /// to catch up, or down and why) and the journal's; 503 while draining
    /// or while events are refused (journal full or failed, queue full);
    /// with `strict=1`, 503 when any sink is not healthy (GoTrack's
    /// meaning). A sink outage alone does not take the website out of a
    /// load balancer: the journal holds the events.
    fn ready(&self, head: &RequestHead) -> Response {
        let strict = pixel::query_param(head.query().unwrap_or(b""), b"strict")
            .is_some_and(|v| v.as_ref() == b"1" || v.as_ref() == b"true");
        let draining = self.shared.draining();
        let mut all_healthy = true;
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(br#"{"status":"#);
        let mut sinks = Vec::with_capacity(128);
        for (i, (kind, stats)) in self.shared.sink_stats.iter().enumerate() {
            let h = stats.health();
            let behind = stats.lag_events.get().max(0) as u64;
            let replaying = stats.replaying.load(std::sync::atomic::Ordering::Relaxed);
            let state: &str = match h {
                SinkHealth::Healthy if replaying && behind > 0 => "behind",
                other => other.as_str(),
            };
            all_healthy &= state == "healthy";
            if i > 0 {
                sinks.push(b',');
            }
            json::write_str(&mut sinks, kind.as_str().as_bytes());
            sinks.extend_from_slice(br#":{"state":"#);
            json::write_str(&mut sinks, state.as_bytes());
            let reason = stats.reason();
            if !reason.is_empty() && h == SinkHealth::Down {
                sinks.extend_from_slice(br#","reason":"#);
                json::write_str(&mut sinks, reason.as_bytes());
            }
            sinks.extend_from_slice(br#","behind_events":"#);
            crate::http::response::push_u64(&mut sinks, behind);
            sinks.extend_from_slice(br#","behind_bytes":"#);
            crate::http::response::push_u64(&mut sinks, stats.lag_bytes.get().max(0) as u64);
            sinks.extend_from_slice(br#","queue_depth":"#);
            crate::http::response::push_u64(&mut sinks, stats.queue_depth.get().max(0) as u64);
            sinks.push(b'}');
        }
        let journal = self.sinks.journal();
        let refusing = self.sinks.is_full();
        let status = if draining || refusing || (strict && !all_healthy) {
            503
        } else {
            200
        };
        let word: &[u8] = if draining {
            b"\"draining\""
        } else if refusing {
            b"\"refusing_events\""
        } else if all_healthy {
            b"\"ready\""
        } else {
            b"\"degraded\""
        };
        b.extend_from_slice(word);
        b.extend_from_slice(br#","journal":{"state":"#);
        let jstate: &[u8] = if journal.is_failed() {
            b"\"failed\""
        } else if journal.is_waiting() {
            b"\"waiting_for_lock\""
        } else if journal.is_full() {
            b"\"full\""
        } else {
            b"\"ok\""
        };
        b.extend_from_slice(jstate);
        if journal.is_failed() {
            b.extend_from_slice(br#","reason":"#);
            json::write_str(&mut b, journal.reason().as_bytes());
        }
        b.extend_from_slice(br#","bytes":"#);
        crate::http::response::push_u64(&mut b, journal.bytes.get().max(0) as u64);
        b.extend_from_slice(br#"},"sinks":{"#);
        b.extend_from_slice(&sinks);
        b.extend_from_slice(b"}}");
        Response::json(status, b).header("Cache-Control", "no-store")
    }

    fn preflight(&self, head: &RequestHead) -> Response {
        let allowed = head
            .header(b"origin")
            .is_some_and(|o| self.origin_allowed(o));
        let resp =
            Response::new(204, "text/plain", &b""[..]).header("Allow", "GET, HEAD, POST, OPTIONS");
        if !allowed {
            return resp;
        }
        resp.header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            .header(
                "Access-Control-Allow-Headers",
                "Content-Type, X-GoTrack-HMAC",
            )
            .header("Access-Control-Max-Age", "600")
    }

    fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.shared
            .cfg
            .cors_origins
            .iter()
            .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// Adds CORS headers for an allowed `Origin` (tracking endpoints only;
    /// proxied responses are never touched). A listed origin is reflected
    /// with credentials allowed; `*` allows any origin without credentials
    /// (tg1 tokens, not cookies, authenticate cross-origin calls).
    fn cors(&self, head: &RequestHead, resp: Response) -> Response {
        let Some(origin) = head.header(b"origin") else {
            return resp;
        };
        let cors = &self.shared.cfg.cors_origins;
        let listed = cors
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin));
        let resp = if listed {
            let Ok(origin) = std::str::from_utf8(origin) else {
                return resp;
            };
            resp.header("Access-Control-Allow-Origin", origin.to_string())
                .header("Access-Control-Allow-Credentials", "true")
                .header("Vary", "Origin")
        } else if cors.iter().any(|o| o == "*") {
            resp.header("Access-Control-Allow-Origin", "*")
        } else {
            return resp;
        };
        resp.header("Access-Control-Expose-Headers", "X-Gotrack-Accepted")
    }

    /// TEST_MODE: five sample events through the same encoder and queue as
    /// real collect requests. Returns how many were queued.
    pub fn emit_test_events(&self) -> usize {
        let mut body = br#"[
 {"type":"pageview","url":"https://shop.example/landing?utm_source=google&utm_medium=cpc&utm_campaign=winter_sale","referrer":"https://www.google.com/","payload":{"title":"Winter sale"}},
 {"type":"click","url":"https://shop.example/product/42","payload":{"element":"add-to-cart","device":"mobile","viewport":"390x844"}},
 {"type":"conversion","url":"https://shop.example/checkout/done","payload":{"order_id":"T-1001","value":59.9,"currency":"EUR"}},
 {"type":"pageview","url":"https://shop.example/?fbclid=IwAR0test","referrer":"https://l.facebook.com/"},
 {"type":"custom_event","url":"https://shop.example/blog","payload":{"props":{"name":"newsletter_signup"}}}
]"#
        .to_vec();
        let client = Client {
            ip: IpAddr::from([127, 0, 0, 1]),
            ua: Some(b"trackgate-test-mode"),
            ip_text: render_ip(self.shared.cfg.ip_mode, IpAddr::from([127, 0, 0, 1])),
            ip_hash: None,
            received_ms: clock::unix_millis(),
        };
        let ctx = self.ctx(&client, Source::Test, None);
        let mut out = Vec::with_capacity(2048);
        match encode_collect(
            &mut out,
            &mut body,
            100,
            None,
            &ctx,
            &mut self.rng.borrow_mut(),
        ) {
            Ok(n) => match self.submit(out, n as u32, EventSource::Test) {
                Ok(()) => n,
                Err(_) => 0,
            },
            Err(_) => 0,
        }
    }
}

fn is_signed(head: &RequestHead) -> bool {
    head.header(b"x-gotrack-hmac").is_some()
        || head
            .query()
            .and_then(|q| pixel::query_param(q, b"_tg"))
            .is_some_and(|v| v.starts_with(b"tg1."))
}

fn auth_label(e: &AuthError) -> AuthFailure {
    match e {
        AuthError::Missing => AuthFailure::Missing,
        AuthError::Malformed => AuthFailure::Malformed,
        AuthError::Expired => AuthFailure::Expired,
        AuthError::NotYetValid => AuthFailure::NotYetValid,
        AuthError::BadSignature => AuthFailure::BadSignature,
    }
}

fn unauthorized(e: AuthError) -> Response {
    let mut b = br#"{"error":"unauthorized","reason":"#.to_vec();
    json::write_str(&mut b, e.reason().as_bytes());
    b.push(b'}');
    Response::json(401, b).header("WWW-Authenticate", "tg1")
}

/// The value of cookie `name` from the request's Cookie headers, when it is
/// a plausible session id (token characters, at most 128 bytes).
fn cookie_value<'a>(head: &'a RequestHead, name: &[u8]) -> Option<&'a [u8]> {
    for h in head.headers_named(b"cookie") {
        for part in h.split(|b| *b == b';') {
            let part = part.trim_ascii();
            if let Some(v) = part.strip_prefix(name).and_then(|r| r.strip_prefix(b"=")) {
                let ok = !v.is_empty()
                    && v.len() <= 128
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                return ok.then_some(v);
            }
        }
    }
    None
}
