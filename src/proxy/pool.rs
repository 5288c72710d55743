//! One core's keep-alive connections to the origin. Last in, first out (the
//! warmest connection is reused first); connections idle longer than
//! `UPSTREAM_IDLE_TIMEOUT_S` are closed when the pool is next used; at most
//! `UPSTREAM_POOL_SIZE` kept. Before reuse, a non-blocking peek makes sure
//! the origin has neither closed the connection nor sent stray bytes.
//! A connection goes back only after a complete response with no bytes
//! after it and no `Connection: close` from the origin (the caller checks).
//! The pool also keeps the core's spare write buffers ([`Gather`]s), so a
//! forwarded request's heads are built in memory reused from earlier ones.

use crate::config::Config;
use crate::metrics::core::CoreMetrics;
use crate::metrics::labels::UpstreamError;
use crate::net::{Conn, Gather};
use crate::proxy::upstream::Upstream;
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Per-core upstream pool (no locks: only its core touches it).
pub struct Pool {
    /// Oldest first (returned at the back, taken from the back).
    idle: RefCell<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    upstream_timeout: Duration,
    metrics: Arc<CoreMetrics>,
    /// The address list this core last read, with its generation.
    addrs: RefCell<(u64, Arc<Vec<SocketAddr>>)>,
    next: Cell<usize>,
    spare: RefCell<Vec<Gather>>,
}

/// Most spare write buffers a core keeps.
const MAX_SPARE: usize = 64;
/// A head buffer that grew past this is not kept (a huge head once should
/// not pin its memory).
const MAX_SPARE_HEAD: usize = 16 * 1024;

impl Pool {
    pub fn new(cfg: &Config, metrics: Arc<CoreMetrics>) -> Pool {
        Pool {
            idle: RefCell::new(VecDeque::new()),
            max_idle: cfg.upstream_pool_size,
            idle_timeout: cfg.upstream_idle_timeout,
            connect_timeout: cfg.upstream_connect_timeout,
            upstream_timeout: cfg.upstream_timeout,
            metrics,
            addrs: RefCell::new((0, Arc::new(Vec::new()))),
            next: Cell::new(0),
            spare: RefCell::new(Vec::new()),
        }
    }

    /// The most recently returned connection that has not idled too long
    /// and has nothing unsolicited to read (the origin closed it, or sent
    /// stray bytes after its last response: either way it is dropped).
    pub fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        let mut got = None;
        while let Some(i) = idle.pop_back() {
            if !i.conn.has_unsolicited_input() {
                got = Some(i.conn);
                break;
            }
        }
        self.metrics.upstream_pool_idle.set(idle.len() as i64);
        got
    }

    /// Returns a connection after a complete exchange.
    pub fn put(&self, mut conn: Conn) {
        if self.max_idle == 0 || !conn.buf.is_empty() {
            return;
        }
        conn.bytes_in = 0;
        conn.bytes_out = 0;
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        self.metrics.upstream_pool_idle.set(idle.len() as i64);
    }

    /// An empty write buffer, reused when one is spare.
    pub fn gather(&self) -> Gather {
        match self.spare.borrow_mut().pop() {
            Some(g) => g,
            None => {
                let mut g = Gather::default();
                g.head.reserve(1024);
                g
            }
        }
    }

    /// Keeps `g` for a later request (emptied; its body, if any, dropped).
    pub fn recycle(&self, mut g: Gather) {
        drop(g.take_body());
        let mut spare = self.spare.borrow_mut();
        if spare.len() < MAX_SPARE && g.head.capacity() <= MAX_SPARE_HEAD {
            spare.push(g);
        }
    }

    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
        self.metrics.upstream_pool_idle.set(0);
    }

    /// Opens a new connection to the origin, trying its addresses in turn.
    pub async fn connect(&self, up: &Upstream) -> Result<Conn, UpstreamError> {
        let gen = up.generation();
        if self.addrs.borrow().0 != gen {
            *self.addrs.borrow_mut() = (gen, up.addrs());
        }
        let addrs = Arc::clone(&self.addrs.borrow().1);
        if addrs.is_empty() {
            return Err(UpstreamError::Dns);
        }
        let start = self.next.get();
        self.next.set(start.wrapping_add(1));
        let mut last = UpstreamError::Connect;
        for i in 0..addrs.len() {
            let addr = addrs[(start + i) % addrs.len()];
            self.metrics.upstream_connects.inc();
            // Boxed: monoio's timer entry is 128-byte aligned, and inline it
            // would make every proxied request's (boxed) future an aligned
            // allocation; a connect is rare, a request is not.
            let connect = monoio::time::timeout(self.connect_timeout, TcpStream::connect(addr));
            match Box::pin(connect).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let mut conn = Conn::new(stream, self.upstream_timeout);
                    conn.read_chunk = crate::net::ORIGIN_READ_CHUNK;
                    return Ok(conn);
                }
                Ok(Err(_)) => last = UpstreamError::Connect,
                Err(_) => last = UpstreamError::Timeout,
            }
        }
        up.refresh_soon();
        Err(last)
    }
}
