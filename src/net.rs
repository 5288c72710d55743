//! Owned-buffer socket I/O shared by both sides of the proxy (the client
//! connection and the origin connection).
//!
//! monoio's io_uring calls take ownership of a buffer and hand it back, so a
//! [`Conn`] keeps its unread bytes in one `Vec` that travels through the
//! kernel and back; bytes past the current message stay there for the next
//! one (pipelining). Writes take a `Vec` (or a [`Gather`] of several
//! parts, sent with one `writev`) and return it for reuse; every write has
//! a deadline, so a peer that stops reading cannot hold a connection (and
//! the other side of the proxy) forever.
//!
//! Every deadline of a connection (idle, head, body, write) runs on the
//! connection's one [`Timer`], re-armed per operation. A fresh
//! `monoio::time::timeout` per read and write would build, register and
//! unregister a timer entry each time, and its 128-byte-aligned entry inside
//! every I/O future makes each boxed request future an aligned allocation.
//!
//! Also `IpText`, an address's text without allocating, which both the
//! proxy (`X-Forwarded-For`) and the tracker (events, token buckets) write.

use monoio::buf::{IoBufMut, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::Sleep;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

/// How much spare room a read asks for at least.
pub const READ_CHUNK: usize = 16 * 1024;

/// How much spare room a read of an origin connection asks for: a response
/// head and a typical asset body arrive in one read.
pub const ORIGIN_READ_CHUNK: usize = 64 * 1024;

/// A TCP stream with its buffer of received, not yet consumed bytes.
pub struct Conn {
    pub stream: TcpStream,
    /// Received bytes not consumed yet, starting at index 0.
    pub buf: Vec<u8>,
    /// Bytes read from and written to this connection (for metrics).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// How long one write may wait for the peer to read.
    pub write_timeout: Duration,
    /// The spare room a read asks for ([`READ_CHUNK`] unless set).
    pub read_chunk: usize,
    /// The deadline of whatever the connection waits for.
    pub timer: Timer,
}

/// A deadline passed before the operation completed.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

/// One reusable timer: a monoio `Sleep` allocated on first use and re-armed
/// for each operation. Moving a deadline later only updates the registered
/// entry (monoio's timer wheel, like tokio's, re-files it when it comes
/// due); an earlier one re-registers it.
#[derive(Default)]
pub struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Runs `fut` for at most `limit`. Like `monoio::time::timeout`, the
    /// operation is polled before the deadline, and dropped (its I/O
    /// cancelled) when the deadline passes first.
    pub async fn within<F: Future>(
        &mut self,
        limit: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let now = monoio::time::Instant::now();
        // A limit too far to represent (Duration::MAX: no deadline) is
        // capped at a year.
        let deadline = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        let sleep = match &mut self.0 {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self.0.insert(Box::pin(monoio::time::sleep_until(deadline))),
        };
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}

impl Conn {
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            write_timeout,
            read_chunk: READ_CHUNK,
            timer: Timer::default(),
        }
    }

    /// Whether the peer has sent anything (data, EOF or an error) that
    /// nobody asked for: an idle pooled connection must have nothing to
    /// read, or its next reader would take stray bytes as its response.
    pub fn has_unsolicited_input(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a non-blocking peek of at most one byte into a local.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            );
        }
        true // data (n > 0) or EOF (n == 0)
    }

    /// Reads more bytes after those already buffered. Returns how many
    /// arrived; 0 means the peer closed its side.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < self.read_chunk / 2 {
            self.buf.reserve(self.read_chunk);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice) = self.stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        let n = res?;
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// [`Conn::read_more`] for at most `limit`.
    pub async fn read_more_within(
        &mut self,
        limit: Duration,
    ) -> Result<io::Result<usize>, Elapsed> {
        // The timer is taken out for the read, which borrows the whole
        // connection; if this future is dropped midway the next deadline
        // starts a new timer.
        let mut timer = std::mem::take(&mut self.timer);
        let res = timer.within(limit, self.read_more()).await;
        self.timer = timer;
        res
    }

    /// Drops the first `n` buffered bytes (a message that was handled).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        if n == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }

    /// Writes all of `data`; returns the buffer for reuse.
    /// Fails with `TimedOut` when the peer does not take the bytes within
    /// `write_timeout` (the buffer is then lost: the caller closes).
    pub async fn write_all(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let len = data.len() as u64;
        match self
            .timer
            .within(self.write_timeout, self.stream.write_all(data))
            .await
        {
            Ok((res, data)) => {
                if res.is_ok() {
                    self.bytes_out += len;
                }
                (res.map(|_| ()), data)
            }
            Err(_) => (
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading",
                )),
                Vec::new(),
            ),
        }
    }

    /// Writes all of `g`'s parts, in one `writev` when the peer takes them
    /// at once; returns `g` for reuse. Fails like [`Conn::write_all`] (on a
    /// timeout `g` comes back empty).
    pub async fn write_gather(&mut self, g: Gather) -> (io::Result<()>, Gather) {
        let len = g.len() as u64;
        match self
            .timer
            .within(self.write_timeout, writev_all(&mut self.stream, g))
            .await
        {
            Ok((res, g)) => {
                if res.is_ok() {
                    self.bytes_out += len;
                }
                (res, g)
            }
            Err(_) => (
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading",
                )),
                Gather::default(),
            ),
        }
    }

    /// Writes all of `data` and clears it, keeping its allocation.
    pub async fn send(&mut self, data: &mut Vec<u8>) -> io::Result<()> {
        let (res, mut back) = self.write_all(std::mem::take(data)).await;
        back.clear();
        *data = back;
        res
    }
}

async fn writev_all(stream: &mut TcpStream, mut g: Gather) -> (io::Result<()>, Gather) {
    let total = g.len();
    let mut done = 0;
    while done < total {
        g.aim(done);
        let (res, back) = stream.writev(g).await;
        g = back;
        match res {
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    )),
                    g,
                )
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), g),
        }
    }
    (Ok(()), g)
}

/// Up to three parts written with one `writev`: `head` whole, then
/// `body[from..to]`, then `tail`. A proxied response goes out as its head
/// and the body bytes read with it (without moving them to the front of
/// the buffer), or as a chunk header, the chunk's data and its CRLF.
/// The parts stay owned while the kernel reads them.
#[derive(Default)]
pub struct Gather {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    pub from: usize,
    pub to: usize,
    pub tail: &'static [u8],
    /// The iovecs of the write in flight (on the heap: their address must
    /// not change while the kernel holds it).
    iov: Vec<libc::iovec>,
}

impl Gather {
    /// Bytes in all parts.
    pub fn len(&self) -> usize {
        self.head.len() + self.body_part().len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn body_part(&self) -> &[u8] {
        self.body.get(self.from..self.to).unwrap_or(&[])
    }

    /// Empties `head` and `tail` and takes `body` out (for its owner).
    pub fn take_body(&mut self) -> Vec<u8> {
        self.head.clear();
        self.tail = b"";
        self.from = 0;
        self.to = 0;
        std::mem::take(&mut self.body)
    }

    /// Points the iovecs at the bytes past the first `skip`.
    fn aim(&mut self, mut skip: usize) {
        let body = self.body.get(self.from..self.to).unwrap_or(&[]);
        self.iov.clear();
        for part in [&self.head[..], body, self.tail] {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            self.iov.push(libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            });
        }
    }
}

// SAFETY: the iovecs point into `head` and `body` (heap buffers that do not
// move when the `Gather` does, and are not changed while a write owns it)
// or at `tail` ('static); `iov` itself is a heap buffer left alone during
// the write.
unsafe impl IoVecBuf for Gather {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

/// A fixed-size text buffer for formatting an address (and a prefix) without
/// allocating. 64 bytes hold any `IpAddr` display plus `/128`.
pub(crate) struct IpText {
    buf: [u8; 64],
    len: usize,
}

impl IpText {
    pub(crate) fn new() -> IpText {
        IpText {
            buf: [0; 64],
            len: 0,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The text as `&str` (only ever written from `&str`s).
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The display form of `ip` (dotted quad for IPv4 without going through
    /// `fmt`, which the pixel path would pay on every hit; IPv6 via `fmt`).
    pub(crate) fn of(ip: std::net::IpAddr) -> IpText {
        let mut t = IpText::new();
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if o >= 100 {
                        t.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.push(b'0' + o / 10 % 10);
                    }
                    t.push(b'0' + o % 10);
                }
            }
            // 64 bytes hold any IPv6 display: writing cannot fail.
            std::net::IpAddr::V6(v6) => {
                let _ = std::fmt::Write::write_fmt(&mut t, format_args!("{v6}"));
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }
}

impl Clone for IpText {
    fn clone(&self) -> IpText {
        IpText {
            buf: self.buf,
            len: self.len,
        }
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(std::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aimed(g: &mut Gather, skip: usize) -> Vec<u8> {
        g.aim(skip);
        let mut out = Vec::new();
        for v in &g.iov {
            // SAFETY: `aim` just pointed these at live parts of `g`.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
        }
        out
    }

    /// Runs `f` on a runtime like a core's (io_uring or epoll, timers on).
    fn on_timer_runtime<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn one_timer_serves_successive_deadlines() {
        let hour = Duration::from_secs(3600);
        let short = Duration::from_millis(20);
        let guard = Duration::from_secs(10);
        on_timer_runtime(async {
            let mut t = Timer::default();
            assert_eq!(t.within(hour, async { 7 }).await, Ok(7));
            // A deadline earlier than the one registered fires (an hour-long
            // entry left as it was would let the guard fire instead).
            let r = monoio::time::timeout(guard, t.within(short, std::future::pending::<()>()));
            assert!(matches!(r.await, Ok(Err(Elapsed))));
            // Armed again after firing.
            assert_eq!(t.within(hour, async { 8 }).await, Ok(8));
            // No deadline at all (Duration::MAX) is capped, not a panic.
            assert_eq!(t.within(Duration::MAX, async { 9 }).await, Ok(9));
        });
    }

    #[test]
    fn a_deadline_passed_while_idle_does_not_cut_the_next_operation() {
        on_timer_runtime(async {
            let mut t = Timer::default();
            // Registered for 10 ms, done at once; the entry comes due while
            // nothing waits on the timer.
            assert_eq!(
                t.within(Duration::from_millis(10), async { 1 }).await,
                Ok(1)
            );
            monoio::time::sleep(Duration::from_millis(60)).await;
            // The next operation gets its own hour, not the stale 10 ms: the
            // guard, not the timer, ends this wait.
            let r = monoio::time::timeout(
                Duration::from_millis(100),
                t.within(Duration::from_secs(3600), std::future::pending::<()>()),
            );
            assert!(r.await.is_err(), "the stale deadline cut the operation");
        });
    }

    #[test]
    fn gather_aims_past_what_was_written() {
        let mut g = Gather {
            head: b"HEAD|".to_vec(),
            body: b"xxBODYyy".to_vec(),
            from: 2,
            to: 6,
            tail: b"|T",
            ..Gather::default()
        };
        assert_eq!(g.len(), 11);
        assert_eq!(aimed(&mut g, 0), b"HEAD|BODY|T");
        assert_eq!(g.iov.len(), 3);
        assert_eq!(aimed(&mut g, 2), b"AD|BODY|T");
        assert_eq!(aimed(&mut g, 5), b"BODY|T");
        assert_eq!(g.iov.len(), 2);
        assert_eq!(aimed(&mut g, 7), b"DY|T");
        assert_eq!(aimed(&mut g, 10), b"T");
        assert_eq!(aimed(&mut g, 11), b"");
        assert!(g.iov.is_empty());
        let body = g.take_body();
        assert_eq!(body, b"xxBODYyy");
        assert!(g.is_empty());
    }
}
