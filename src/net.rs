//! Owned-buffer socket I/O shared by both sides of the proxy (the client
//! connection and the origin connection).
//!
//! monoio's io_uring calls take ownership of a buffer and hand it back, so a
//! [`Conn`] keeps its unread bytes in one `Vec` that travels through the
//! kernel and back; bytes past the current message stay there for the next
//! one (pipelining). Writes take a `Vec` and return it for reuse; every
//! write has a deadline, so a peer that stops reading cannot hold a
//! connection (and the other side of the proxy) forever.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How much spare room a read asks for at least.
pub const READ_CHUNK: usize = 16 * 1024;

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
}

impl Conn {
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            write_timeout,
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
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice) = self.stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        let n = res?;
        self.bytes_in += n as u64;
        Ok(n)
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
        match monoio::time::timeout(self.write_timeout, self.stream.write_all(data)).await {
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

    /// Writes all of `data` and clears it, keeping its allocation.
    pub async fn send(&mut self, data: &mut Vec<u8>) -> io::Result<()> {
        let (res, mut back) = self.write_all(std::mem::take(data)).await;
        back.clear();
        *data = back;
        res
    }
}
