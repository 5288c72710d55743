//! Whole-body decode and re-encode of compressed HTML (gzip, zlib, raw
//! deflate), bounded in memory, plus the per-core memory budget for every
//! response being rewritten at once.
//!
//! Why whole-body: libdeflate has no streaming API, so a compressed page is
//! buffered, decoded in one call per member, rewritten and encoded again as
//! one member. Why libdeflate-sys and not only libdeflater: libdeflater's
//! safe `gzip_decompress` stops after the first member of a multi-member
//! stream and does not say where that member ended. The `*_ex` calls report
//! the input bytes consumed, so [`Codec::decode`] loops over every member.
//!
//! Bounds, all enforced before memory is allocated:
//!
//! * the decoded size never exceeds [`Limits::output_cap`]: the smaller of
//!   `max_output` (`INJECT_MAX_BYTES`) and `input.len() * max_ratio`. The
//!   output `Vec` is the only allocation a decode makes (the decompressor is
//!   allocated once per [`Codec`]), and its capacity is grown with
//!   `reserve_exact` to at most that cap (plus one byte when the cap is 0,
//!   so the FFI always gets a real pointer). A gzip bomb therefore costs at
//!   most the cap, never what it claims or what it would expand to.
//! * libdeflate decodes into a fixed buffer and reports
//!   `INSUFFICIENT_SPACE` when it is too small, so the buffer starts at a
//!   guess and doubles up to the cap, re-decoding the member each time. The
//!   guess for gzip is the last member's ISIZE trailer (its decoded size mod
//!   2^32: exact for the usual single-member body), never more than the cap;
//!   for zlib and raw deflate it is 4× the input (at least 16 KiB). Work is at
//!   most about twice the final output.
//! * after the last gzip member (or the end of a zlib/raw stream) only zero
//!   bytes may follow: GNU gzip also accepts trailing zero padding (tape and
//!   block-padded files). Any other trailing byte is [`DecodeError::Corrupt`]
//!   (for gzip, a non-zero byte must start another valid member).
//! * which limit a refusal names: the binding one. If `input.len() *
//!   max_ratio` is below `max_output`, exceeding it is `RatioExceeded`,
//!   otherwise `TooLarge`. `max_ratio == 0` disables the ratio check.
//!
//! On any error `out` is left empty: nothing half-decoded can be sent.
//!
//! [`Budget`] is the per-core pool (`INJECT_CORE_BUDGET_MB`) a response
//! reserves from before buffering and decoding; a [`Reservation`] gives its
//! bytes back when dropped. It is `Rc`-based and deliberately `!Send`: each
//! core owns its own. A caller sizes its reservation with
//! [`Limits::output_cap`] (decoded) plus [`Codec::encode_bound`] (re-encoded)
//! plus the buffered input, and shrinks it once the real sizes are known.

use std::cell::Cell;
use std::fmt;
use std::ptr::NonNull;
use std::rc::Rc;

use libdeflate_sys as sys;
use libdeflater::{CompressionLvl, Compressor};

/// Default `INJECT_MAX_BYTES`: most decoded bytes per response.
pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Default decoded/compressed ratio beyond which a body is refused.
pub const DEFAULT_MAX_RATIO: u32 = 100;
/// Default `INJECT_GZIP_LEVEL`.
pub const DEFAULT_LEVEL: i32 = 6;
/// Smallest first guess for a stream with no size hint.
const MIN_GUESS: usize = 16 * 1024;

/// A content coding this module decodes and encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `Content-Encoding: gzip` (RFC 1952), one or more members.
    Gzip,
    /// `Content-Encoding: deflate` as specified: a zlib stream (RFC 1950).
    Zlib,
    /// `Content-Encoding: deflate` as some servers send it: raw DEFLATE
    /// (RFC 1951) without the zlib wrapper.
    RawDeflate,
}

/// Bounds of one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most decoded bytes (`INJECT_MAX_BYTES`).
    pub max_output: usize,
    /// Most decoded bytes per compressed input byte; 0 disables the check.
    pub max_ratio: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output: DEFAULT_MAX_BYTES,
            max_ratio: DEFAULT_MAX_RATIO,
        }
    }
}

impl Limits {
    /// The most bytes a decode of `input_len` compressed bytes may produce,
    /// and so the most the output buffer is ever grown to.
    pub fn output_cap(&self, input_len: usize) -> usize {
        self.cap_and_error(input_len).0
    }

    fn cap_and_error(&self, input_len: usize) -> (usize, DecodeError) {
        if self.max_ratio == 0 {
            return (self.max_output, DecodeError::TooLarge);
        }
        let by_ratio = input_len.saturating_mul(self.max_ratio as usize);
        if by_ratio < self.max_output {
            (by_ratio, DecodeError::RatioExceeded)
        } else {
            (self.max_output, DecodeError::TooLarge)
        }
    }
}

/// Why a body was not decoded. In every case the original bytes go out
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// It decodes to more than `max_output` bytes.
    TooLarge,
    /// It decodes to more than `max_ratio` × its compressed size (and that
    /// bound is below `max_output`).
    RatioExceeded,
    /// Not a valid stream of the coding: bad header, checksum, size trailer,
    /// truncated, or non-zero bytes after the end.
    Corrupt,
}

impl DecodeError {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::TooLarge => "too_large",
            DecodeError::RatioExceeded => "ratio_exceeded",
            DecodeError::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::TooLarge => "decoded body exceeds the size limit",
            DecodeError::RatioExceeded => "decoded body exceeds the compression ratio limit",
            DecodeError::Corrupt => "compressed body is corrupt",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Why a body could not be encoded. With an output sized by libdeflate's own
/// bound this does not happen; it is reported rather than assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// libdeflate reported that the output did not fit.
    NoSpace,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("compressed output did not fit its bound")
    }
}

impl std::error::Error for EncodeError {}

/// Why a [`Codec`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The level is outside libdeflate's 1..=12.
    Level(i32),
    /// libdeflate could not allocate its decompressor.
    OutOfMemory,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Level(l) => write!(f, "compression level {l} is not in 1..=12"),
            CodecError::OutOfMemory => f.write_str("could not allocate a decompressor"),
        }
    }
}

impl std::error::Error for CodecError {}

/// libdeflate's decompressor, owned: freed exactly once, on drop.
struct RawDecompressor(NonNull<sys::libdeflate_decompressor>);

impl Drop for RawDecompressor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from libdeflate_alloc_decompressor, is
        // non-null, is owned by this value alone and is freed only here.
        unsafe { sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// What one libdeflate call reported.
enum Outcome {
    Done { consumed: usize, written: usize },
    NoSpace,
    Bad,
}

/// One core's decompressor and compressor, reused across responses. Build it
/// on the core's own thread (it is `!Send`, like the rest of a core's state).
pub struct Codec {
    decompressor: RawDecompressor,
    compressor: Compressor,
    level: i32,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec").field("level", &self.level).finish()
    }
}

impl Codec {
    /// A codec that encodes at `level` (`INJECT_GZIP_LEVEL`, 1..=12).
    pub fn new(level: i32) -> Result<Codec, CodecError> {
        if !(1..=12).contains(&level) {
            return Err(CodecError::Level(level));
        }
        let lvl = CompressionLvl::new(level).map_err(|_| CodecError::Level(level))?;
        // SAFETY: plain allocation call without arguments; a null result is
        // handled below.
        let raw = unsafe { sys::libdeflate_alloc_decompressor() };
        let decompressor = RawDecompressor(NonNull::new(raw).ok_or(CodecError::OutOfMemory)?);
        Ok(Codec {
            decompressor,
            compressor: Compressor::new(lvl),
            level,
        })
    }

    /// The compression level this codec encodes at.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Decodes all of `input` as `coding` into `out` (cleared first; its
    /// capacity is reused), within `limits`. On error `out` is empty.
    pub fn decode(
        &mut self,
        coding: Coding,
        input: &[u8],
        limits: &Limits,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        out.clear();
        let result = if input.is_empty() {
            Err(DecodeError::Corrupt)
        } else {
            let (cap, over) = limits.cap_and_error(input.len());
            match coding {
                Coding::Gzip => self.decode_gzip(input, cap, over, out),
                Coding::Zlib | Coding::RawDeflate => {
                    let guess = input.len().saturating_mul(4).max(MIN_GUESS);
                    self.decode_member(coding, input, guess, cap, over, out)
                        .and_then(|consumed| only_zeros_after(input, consumed))
                }
            }
        };
        if result.is_err() {
            out.clear();
        }
        result
    }

    /// Decodes an HTTP `deflate` body: as zlib (what the RFC says), and if
    /// that is not valid, as raw deflate (what some servers send). Returns
    /// the coding it was, so the caller re-encodes the same way. A zlib
    /// stream refused for its size is not retried as raw.
    pub fn decode_deflate_any(
        &mut self,
        input: &[u8],
        limits: &Limits,
        out: &mut Vec<u8>,
    ) -> Result<Coding, DecodeError> {
        match self.decode(Coding::Zlib, input, limits, out) {
            Ok(()) => Ok(Coding::Zlib),
            Err(DecodeError::Corrupt) => self
                .decode(Coding::RawDeflate, input, limits, out)
                .map(|()| Coding::RawDeflate),
            Err(e) => Err(e),
        }
    }

    /// The most bytes [`Codec::encode`] can produce for `input_len` bytes.
    pub fn encode_bound(&mut self, coding: Coding, input_len: usize) -> usize {
        match coding {
            Coding::Gzip => self.compressor.gzip_compress_bound(input_len),
            Coding::Zlib => self.compressor.zlib_compress_bound(input_len),
            Coding::RawDeflate => self.compressor.deflate_compress_bound(input_len),
        }
    }

    /// Encodes `input` as one gzip member, one zlib stream or one raw
    /// deflate stream into `out` (cleared first). On error `out` is empty.
    pub fn encode(
        &mut self,
        coding: Coding,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        out.clear();
        let bound = self.encode_bound(coding, input.len());
        out.reserve_exact(bound);
        out.resize(bound, 0);
        let written = match coding {
            Coding::Gzip => self.compressor.gzip_compress(input, out),
            Coding::Zlib => self.compressor.zlib_compress(input, out),
            Coding::RawDeflate => self.compressor.deflate_compress(input, out),
        };
        match written {
            Ok(n) if n <= bound => {
                out.truncate(n);
                Ok(())
            }
            _ => {
                out.clear();
                Err(EncodeError::NoSpace)
            }
        }
    }

    /// Every member of a gzip stream, appended to `out`.
    fn decode_gzip(
        &mut self,
        input: &[u8],
        cap: usize,
        over: DecodeError,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        // ISIZE of the last member: the decoded size of a single-member
        // body (mod 2^32). Only a first guess, clamped to the cap later.
        let last_isize = input
            .len()
            .checked_sub(4)
            .and_then(|at| input.get(at..))
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0) as usize;
        let mut pos = 0;
        let mut members = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            if members > 0 && rest.iter().all(|&b| b == 0) {
                return Ok(());
            }
            let guess = if last_isize > 0 {
                last_isize
            } else {
                rest.len().saturating_mul(4).max(MIN_GUESS)
            };
            let consumed = self.decode_member(Coding::Gzip, rest, guess, cap, over, out)?;
            if consumed == 0 {
                // Cannot happen (a member is at least 18 bytes), but a zero
                // here would loop forever.
                return Err(DecodeError::Corrupt);
            }
            pos += consumed;
            members += 1;
        }
    }

    /// Decodes the one stream (gzip member, zlib or raw) at the start of
    /// `input`, appending it to `out` without letting `out` exceed `cap`
    /// bytes. Returns the input bytes it consumed.
    fn decode_member(
        &mut self,
        coding: Coding,
        input: &[u8],
        guess: usize,
        cap: usize,
        over: DecodeError,
        out: &mut Vec<u8>,
    ) -> Result<usize, DecodeError> {
        let start = out.len();
        let room = cap.saturating_sub(start);
        let mut avail = guess.clamp(1, room.max(1)).min(room);
        if out.capacity() == 0 {
            // A real allocation, so the FFI never sees a dangling pointer
            // (only reachable with a cap of 0).
            out.reserve_exact(1);
        }
        loop {
            let want = start + avail;
            if out.len() < want {
                out.reserve_exact(want - out.len());
                out.resize(want, 0);
            }
            let Some(dst) = out.get_mut(start..want) else {
                return Err(DecodeError::Corrupt);
            };
            match self.call(coding, input, dst) {
                Outcome::Done { consumed, written } => {
                    if consumed > input.len() || written > avail {
                        return Err(DecodeError::Corrupt);
                    }
                    out.truncate(start + written);
                    return Ok(consumed);
                }
                Outcome::NoSpace => {
                    if avail >= room {
                        return Err(over);
                    }
                    avail = avail.saturating_mul(2).max(MIN_GUESS).min(room);
                }
                Outcome::Bad => return Err(DecodeError::Corrupt),
            }
        }
    }

    /// One libdeflate `*_decompress_ex` call.
    fn call(&mut self, coding: Coding, input: &[u8], dst: &mut [u8]) -> Outcome {
        let d = self.decompressor.0.as_ptr();
        let mut consumed: usize = 0;
        let mut written: usize = 0;
        let in_ptr = input.as_ptr().cast::<std::ffi::c_void>();
        let out_ptr = dst.as_mut_ptr().cast::<std::ffi::c_void>();
        let result = match coding {
            // SAFETY (all three arms): `d` is the live decompressor this
            // Codec owns, used by one call at a time (`&mut self`).
            // `in_ptr`/`input.len()` is a readable slice and
            // `out_ptr`/`dst.len()` a writable one for the whole call; they
            // cannot overlap (`&` and `&mut` borrows). `dst` points into a
            // real allocation even when empty (the caller guarantees
            // capacity ≥ 1). libdeflate reads at most `in_nbytes` bytes,
            // writes at most `out_nbytes_avail`, and writes the two counts
            // through the pointers to these locals.
            Coding::Gzip => unsafe {
                sys::libdeflate_gzip_decompress_ex(
                    d,
                    in_ptr,
                    input.len(),
                    out_ptr,
                    dst.len(),
                    &mut consumed,
                    &mut written,
                )
            },
            // SAFETY: as above.
            Coding::Zlib => unsafe {
                sys::libdeflate_zlib_decompress_ex(
                    d,
                    in_ptr,
                    input.len(),
                    out_ptr,
                    dst.len(),
                    &mut consumed,
                    &mut written,
                )
            },
            // SAFETY: as above.
            Coding::RawDeflate => unsafe {
                sys::libdeflate_deflate_decompress_ex(
                    d,
                    in_ptr,
                    input.len(),
                    out_ptr,
                    dst.len(),
                    &mut consumed,
                    &mut written,
                )
            },
        };
        match result {
            sys::libdeflate_result_LIBDEFLATE_SUCCESS => Outcome::Done { consumed, written },
            sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Outcome::NoSpace,
            _ => Outcome::Bad,
        }
    }
}

/// Accepts the end of a zlib/raw stream when only zero padding follows.
fn only_zeros_after(input: &[u8], consumed: usize) -> Result<(), DecodeError> {
    match input.get(consumed..) {
        Some(rest) if rest.iter().all(|&b| b == 0) => Ok(()),
        _ => Err(DecodeError::Corrupt),
    }
}

/// The per-core memory pool for responses being rewritten
/// (`INJECT_CORE_BUDGET_MB`). Clones share the pool. Single-threaded by
/// design (`Rc`): each core owns one.
#[derive(Clone)]
pub struct Budget {
    inner: Rc<BudgetInner>,
}

struct BudgetInner {
    total: usize,
    used: Cell<usize>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("total", &self.inner.total)
            .field("used", &self.inner.used.get())
            .finish()
    }
}

impl Budget {
    /// A pool of `bytes`.
    pub fn new(bytes: usize) -> Budget {
        Budget {
            inner: Rc::new(BudgetInner {
                total: bytes,
                used: Cell::new(0),
            }),
        }
    }

    /// The pool's size.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// Bytes currently reserved.
    pub fn in_use(&self) -> usize {
        self.inner.used.get()
    }

    /// Bytes still free.
    pub fn available(&self) -> usize {
        self.inner.total.saturating_sub(self.inner.used.get())
    }

    /// Reserves `n` bytes, or `None` when fewer than `n` are free (then
    /// the response passes through unchanged).
    pub fn try_reserve(&self, n: usize) -> Option<Reservation> {
        if n > self.available() {
            return None;
        }
        self.inner.used.set(self.inner.used.get() + n);
        Some(Reservation {
            inner: Rc::clone(&self.inner),
            bytes: n,
        })
    }
}

/// Bytes held from a [`Budget`]; given back on drop.
pub struct Reservation {
    inner: Rc<BudgetInner>,
    bytes: usize,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back everything above `n` (no-op when already at most `n`).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            let freed = self.bytes - n;
            self.inner
                .used
                .set(self.inner.used.get().saturating_sub(freed));
            self.bytes = n;
        }
    }

    /// Holds `extra` more bytes if the pool has them; false otherwise (and
    /// nothing changes).
    pub fn try_grow(&mut self, extra: usize) -> bool {
        let free = self.inner.total.saturating_sub(self.inner.used.get());
        if extra > free {
            return false;
        }
        self.inner.used.set(self.inner.used.get() + extra);
        self.bytes += extra;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner
            .used
            .set(self.inner.used.get().saturating_sub(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec() -> Codec {
        match Codec::new(DEFAULT_LEVEL) {
            Ok(c) => c,
            Err(e) => panic!("codec: {e}"),
        }
    }

    /// Deterministic, HTML-like, moderately compressible text of `len` bytes.
    fn page(len: usize) -> Vec<u8> {
        let words = [
            "tracking", "pixel", "session", "origin", "proxy", "gateway", "header", "content",
            "policy", "script", "element", "document", "browser", "request", "response", "cache",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut out = b"<!doctype html><html><head><title>t</title></head><body>\n".to_vec();
        while out.len() < len {
            let n = next();
            out.extend_from_slice(
                format!(
                    "<div class=\"item-{}\"><a href=\"/p/{}\">{} {}</a><span>{}</span></div>\n",
                    n % 7,
                    n % 100_000,
                    words[(n >> 8) as usize % words.len()],
                    words[(n >> 16) as usize % words.len()],
                    n % 9973
                )
                .as_bytes(),
            );
        }
        out.truncate(len.saturating_sub(15));
        out.extend_from_slice(b"</body></html>\n");
        out
    }

    fn enc(c: &mut Codec, coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(c.encode(coding, data, &mut out), Ok(()));
        out
    }

    fn dec(
        c: &mut Codec,
        coding: Coding,
        data: &[u8],
        limits: &Limits,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        c.decode(coding, data, limits, &mut out).map(|()| out)
    }

    /// A gzip body with a given ISIZE trailer, for bomb tests.
    fn zeros_gzip(c: &mut Codec, n: usize) -> Vec<u8> {
        enc(c, Coding::Gzip, &vec![0u8; n])
    }

    #[test]
    fn gzip_single_member() {
        let mut c = codec();
        let html = page(20_000);
        let gz = enc(&mut c, Coding::Gzip, &html);
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(dec(&mut c, Coding::Gzip, &gz, &Limits::default()), Ok(html));
    }

    #[test]
    fn gzip_multi_member_decodes_every_member() {
        let mut c = codec();
        let a = page(9_000);
        let b = b"<p>second member</p></body></html>".to_vec();
        let third = page(3_000);
        let mut body = enc(&mut c, Coding::Gzip, &a);
        body.extend(enc(&mut c, Coding::Gzip, &b));
        body.extend(enc(&mut c, Coding::Gzip, &third));
        let mut want = a.clone();
        want.extend(&b);
        want.extend(&third);
        assert_eq!(
            dec(&mut c, Coding::Gzip, &body, &Limits::default()),
            Ok(want)
        );
        // libdeflater's safe API would have stopped after the first member.
        let mut d = libdeflater::Decompressor::new();
        let mut buf = vec![0u8; 64 * 1024];
        assert_eq!(d.gzip_decompress(&body, &mut buf).ok(), Some(a.len()));
    }

    #[test]
    fn gzip_empty_member_and_empty_body() {
        let mut c = codec();
        let empty = enc(&mut c, Coding::Gzip, b"");
        assert_eq!(
            dec(&mut c, Coding::Gzip, &empty, &Limits::default()),
            Ok(Vec::new())
        );
        let mut two = empty.clone();
        two.extend(enc(&mut c, Coding::Gzip, b"x"));
        assert_eq!(
            dec(&mut c, Coding::Gzip, &two, &Limits::default()),
            Ok(b"x".to_vec())
        );
        assert_eq!(
            dec(&mut c, Coding::Gzip, b"", &Limits::default()),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn zlib_and_raw() {
        let mut c = codec();
        let html = page(30_000);
        let z = enc(&mut c, Coding::Zlib, &html);
        assert_eq!(z[0] & 0x0f, 8, "zlib CM=8");
        let r = enc(&mut c, Coding::RawDeflate, &html);
        assert_eq!(
            dec(&mut c, Coding::Zlib, &z, &Limits::default()),
            Ok(html.clone())
        );
        assert_eq!(
            dec(&mut c, Coding::RawDeflate, &r, &Limits::default()),
            Ok(html.clone())
        );
        // Each is not the other.
        assert_eq!(
            dec(&mut c, Coding::Zlib, &r, &Limits::default()),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(
            dec(&mut c, Coding::Gzip, &z, &Limits::default()),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn deflate_any_detects_both() {
        let mut c = codec();
        let html = page(12_000);
        let z = enc(&mut c, Coding::Zlib, &html);
        let r = enc(&mut c, Coding::RawDeflate, &html);
        let mut out = Vec::new();
        assert_eq!(
            c.decode_deflate_any(&z, &Limits::default(), &mut out),
            Ok(Coding::Zlib)
        );
        assert_eq!(out, html);
        assert_eq!(
            c.decode_deflate_any(&r, &Limits::default(), &mut out),
            Ok(Coding::RawDeflate)
        );
        assert_eq!(out, html);
        assert_eq!(
            c.decode_deflate_any(b"not deflate at all \xff\xff", &Limits::default(), &mut out),
            Err(DecodeError::Corrupt)
        );
        assert!(out.is_empty());
        // A zlib body refused for size is not retried as raw.
        let big = enc(&mut c, Coding::Zlib, &vec![b'a'; 100_000]);
        let tight = Limits {
            max_output: 50_000,
            max_ratio: 0,
        };
        assert_eq!(
            c.decode_deflate_any(&big, &tight, &mut out),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn corrupt_inputs() {
        let mut c = codec();
        let html = page(10_000);
        let l = Limits::default();
        for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
            let good = enc(&mut c, coding, &html);
            // A flipped byte in the middle of the compressed data: gzip
            // (CRC-32) and zlib (Adler-32) notice; raw deflate has no check
            // value, so it may decode to different bytes, never to the page.
            let mut bad = good.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            let r = dec(&mut c, coding, &bad, &l);
            if coding == Coding::RawDeflate {
                assert!(
                    r.as_ref() != Ok(&html),
                    "raw flipped decoded to the original"
                );
            } else {
                assert_eq!(
                    r.map(|v| v.len()),
                    Err(DecodeError::Corrupt),
                    "{coding:?} flipped"
                );
            }
            // Truncated, at several points.
            for cut in [1, 4, 8, good.len() / 2, good.len() - 1] {
                let r = dec(&mut c, coding, &good[..good.len() - cut], &l);
                assert_eq!(
                    r.map(|v| v.len()),
                    Err(DecodeError::Corrupt),
                    "{coding:?} cut {cut}"
                );
            }
            assert_eq!(dec(&mut c, coding, b"\x00", &l), Err(DecodeError::Corrupt));
        }
        // Gzip checksum and size trailers are checked.
        let mut gz = enc(&mut c, Coding::Gzip, &html);
        let n = gz.len();
        gz[n - 8] ^= 1; // CRC32
        assert_eq!(
            dec(&mut c, Coding::Gzip, &gz, &l),
            Err(DecodeError::Corrupt)
        );
        gz[n - 8] ^= 1;
        gz[n - 1] ^= 1; // ISIZE
        assert_eq!(
            dec(&mut c, Coding::Gzip, &gz, &l),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut c = codec();
        let html = page(5_000);
        let l = Limits::default();
        for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
            let good = enc(&mut c, coding, &html);
            let mut garbage = good.clone();
            garbage.extend_from_slice(b"<html>junk");
            assert_eq!(
                dec(&mut c, coding, &garbage, &l),
                Err(DecodeError::Corrupt),
                "{coding:?}"
            );
            let mut one = good.clone();
            one.push(0x01);
            assert_eq!(
                dec(&mut c, coding, &one, &l),
                Err(DecodeError::Corrupt),
                "{coding:?}"
            );
            // Zero padding is accepted, like GNU gzip does.
            let mut padded = good.clone();
            padded.extend_from_slice(&[0u8; 512]);
            assert_eq!(
                dec(&mut c, coding, &padded, &l),
                Ok(html.clone()),
                "{coding:?}"
            );
        }
        // A gzip magic after the last member must be a whole valid member.
        let mut gz = enc(&mut c, Coding::Gzip, &html);
        gz.extend_from_slice(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0]);
        assert_eq!(
            dec(&mut c, Coding::Gzip, &gz, &l),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn size_limit_is_exact() {
        let mut c = codec();
        let html = page(40_000);
        for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
            let body = enc(&mut c, coding, &html);
            let exact = Limits {
                max_output: html.len(),
                max_ratio: 0,
            };
            assert_eq!(
                dec(&mut c, coding, &body, &exact),
                Ok(html.clone()),
                "{coding:?}"
            );
            let under = Limits {
                max_output: html.len() - 1,
                max_ratio: 0,
            };
            let mut out = Vec::new();
            assert_eq!(
                c.decode(coding, &body, &under, &mut out),
                Err(DecodeError::TooLarge)
            );
            assert!(out.is_empty());
            assert!(
                out.capacity() <= html.len(),
                "{coding:?}: capacity {}",
                out.capacity()
            );
        }
    }

    #[test]
    fn size_limit_counts_all_members() {
        let mut c = codec();
        let a = page(30_000);
        let mut body = enc(&mut c, Coding::Gzip, &a);
        body.extend(enc(&mut c, Coding::Gzip, &a));
        let one = Limits {
            max_output: 45_000,
            max_ratio: 0,
        };
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &body, &one, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert!(out.capacity() <= 45_000, "capacity {}", out.capacity());
        let both = Limits {
            max_output: 60_000,
            max_ratio: 0,
        };
        assert_eq!(c.decode(Coding::Gzip, &body, &both, &mut out), Ok(()));
        assert_eq!(out.len(), 60_000);
    }

    #[test]
    fn ratio_limit() {
        let mut c = codec();
        let data = vec![b'a'; 200_000];
        let gz = enc(&mut c, Coding::Gzip, &data);
        let ratio = data.len() / gz.len();
        assert!(ratio > 10, "test data must compress well (ratio {ratio})");
        let strict = Limits {
            max_output: DEFAULT_MAX_BYTES,
            max_ratio: 10,
        };
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &gz, &strict, &mut out),
            Err(DecodeError::RatioExceeded)
        );
        assert!(out.capacity() <= gz.len() * 10);
        let loose = Limits {
            max_output: DEFAULT_MAX_BYTES,
            max_ratio: ratio as u32 + 1,
        };
        assert_eq!(c.decode(Coding::Gzip, &gz, &loose, &mut out), Ok(()));
        assert_eq!(out, data);
        // When the size limit is the lower one, it is the one named.
        let small = Limits {
            max_output: 1000,
            max_ratio: 10,
        };
        assert_eq!(
            c.decode(Coding::Gzip, &gz, &small, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(small.output_cap(gz.len()), 1000);
        assert_eq!(strict.output_cap(gz.len()), gz.len() * 10);
    }

    #[test]
    fn gzip_bomb_allocates_at_most_the_cap() {
        let mut c = codec();
        let limits = Limits::default();
        // 64 MiB of zeros → about 64 KiB of gzip.
        let bomb = zeros_gzip(&mut c, 64 << 20);
        assert!(bomb.len() < 128 * 1024, "bomb is {} bytes", bomb.len());
        let slack = 1;
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &bomb, &limits, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert!(out.is_empty());
        assert!(
            out.capacity() <= limits.max_output + slack,
            "capacity {} > {}",
            out.capacity(),
            limits.max_output
        );

        // The same bomb with a forged ISIZE claiming 1000 bytes: the buffer
        // grows by doubling and still stops at the cap.
        let mut forged = bomb.clone();
        let n = forged.len();
        forged[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &forged, &limits, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert!(
            out.capacity() <= limits.max_output + slack,
            "capacity {}",
            out.capacity()
        );

        // A 1 GiB bomb: 16 members of 64 MiB each (~1 MiB compressed).
        let mut giga = Vec::with_capacity(bomb.len() * 16);
        for _ in 0..16 {
            giga.extend_from_slice(&bomb);
        }
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &giga, &limits, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert!(
            out.capacity() <= limits.max_output + slack,
            "capacity {}",
            out.capacity()
        );

        // Many small members adding up past the cap: 8 × 1 MiB of zeros,
        // about 8 KiB compressed. With the ratio check on, its cap (~800 KiB)
        // is the binding one; with it off, the size limit is.
        let mib = zeros_gzip(&mut c, 1 << 20);
        let mut many = Vec::new();
        for _ in 0..8 {
            many.extend_from_slice(&mib);
        }
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &many, &limits, &mut out),
            Err(DecodeError::RatioExceeded)
        );
        assert!(
            out.capacity() <= limits.output_cap(many.len()) + slack,
            "capacity {}",
            out.capacity()
        );
        let no_ratio = Limits {
            max_ratio: 0,
            ..limits
        };
        let mut out = Vec::new();
        assert_eq!(
            c.decode(Coding::Gzip, &many, &no_ratio, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert!(
            out.capacity() <= limits.max_output + slack,
            "capacity {}",
            out.capacity()
        );

        // The same bomb as zlib and raw deflate.
        for coding in [Coding::Zlib, Coding::RawDeflate] {
            let b = enc(&mut c, coding, &vec![0u8; 64 << 20]);
            let mut out = Vec::new();
            assert_eq!(
                c.decode(coding, &b, &limits, &mut out),
                Err(DecodeError::TooLarge)
            );
            assert!(
                out.capacity() <= limits.max_output + slack,
                "{coding:?}: {}",
                out.capacity()
            );
        }
    }

    #[test]
    fn output_buffer_is_reused_and_cleared() {
        let mut c = codec();
        let a = page(8_000);
        let gz = enc(&mut c, Coding::Gzip, &a);
        let mut out = b"stale".to_vec();
        assert_eq!(
            c.decode(Coding::Gzip, &gz, &Limits::default(), &mut out),
            Ok(())
        );
        assert_eq!(out, a);
        assert_eq!(
            c.decode(Coding::Gzip, b"garbage!", &Limits::default(), &mut out),
            Err(DecodeError::Corrupt)
        );
        assert!(out.is_empty());
        let mut e = b"stale".to_vec();
        assert_eq!(c.encode(Coding::Gzip, b"x", &mut e), Ok(()));
        assert_eq!(
            dec(&mut c, Coding::Gzip, &e, &Limits::default()),
            Ok(b"x".to_vec())
        );
    }

    #[test]
    fn round_trip_every_coding_and_level() {
        let html = page(25_000);
        for level in [1, 6, 12] {
            let mut c = match Codec::new(level) {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(c.level(), level);
            for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
                let body = enc(&mut c, coding, &html);
                assert!(
                    body.len() < html.len() / 2,
                    "{coding:?} L{level}: {}",
                    body.len()
                );
                assert!(body.len() <= c.encode_bound(coding, html.len()));
                assert_eq!(
                    dec(&mut c, coding, &body, &Limits::default()),
                    Ok(html.clone())
                );
            }
        }
    }

    #[test]
    fn bad_levels() {
        assert_eq!(Codec::new(0).err(), Some(CodecError::Level(0)));
        assert_eq!(Codec::new(13).err(), Some(CodecError::Level(13)));
        assert_eq!(Codec::new(-1).err(), Some(CodecError::Level(-1)));
    }

    #[test]
    fn zero_cap_never_panics() {
        let mut c = codec();
        let empty = enc(&mut c, Coding::Gzip, b"");
        let zero = Limits {
            max_output: 0,
            max_ratio: 0,
        };
        let mut out = Vec::new();
        assert_eq!(c.decode(Coding::Gzip, &empty, &zero, &mut out), Ok(()));
        assert!(out.is_empty());
        let one = enc(&mut c, Coding::Gzip, b"x");
        assert_eq!(
            c.decode(Coding::Gzip, &one, &zero, &mut out),
            Err(DecodeError::TooLarge)
        );
        assert!(out.capacity() <= 1);
    }

    #[test]
    fn budget_accounting() {
        let b = Budget::new(100);
        assert_eq!((b.total(), b.in_use(), b.available()), (100, 0, 100));
        let r1 = b.try_reserve(60);
        assert!(r1.is_some());
        assert_eq!(b.in_use(), 60);
        assert!(b.try_reserve(41).is_none(), "only 40 left");
        assert_eq!(b.in_use(), 60, "a refused reservation holds nothing");
        let mut r2 = match b.try_reserve(40) {
            Some(r) => r,
            None => panic!("40 should fit"),
        };
        assert_eq!((b.in_use(), b.available()), (100, 0));
        assert!(b.try_reserve(1).is_none());
        assert!(b.try_reserve(0).is_some(), "zero always fits");
        drop(r1);
        assert_eq!(b.in_use(), 40);
        r2.shrink_to(10);
        assert_eq!((r2.bytes(), b.in_use()), (10, 10));
        r2.shrink_to(50); // never grows
        assert_eq!(r2.bytes(), 10);
        assert!(r2.try_grow(90));
        assert_eq!((r2.bytes(), b.in_use()), (100, 100));
        assert!(!r2.try_grow(1));
        assert_eq!(r2.bytes(), 100);
        // A clone shares the pool.
        let b2 = b.clone();
        assert_eq!(b2.in_use(), 100);
        drop(r2);
        assert_eq!((b.in_use(), b2.in_use()), (0, 0));
        assert!(b2.try_reserve(usize::MAX).is_none());
    }

    #[test]
    fn measure_50k_page_level_6() {
        // Printed, not asserted: run `cargo test --release --lib inject::codec
        // -- --nocapture measure` for the figure.
        let mut c = codec();
        let html = page(50 * 1024);
        let gz = enc(&mut c, Coding::Gzip, &html);
        let iters = 200u32;
        let mut out = Vec::new();
        let mut re = Vec::new();
        let t0 = std::time::Instant::now();
        for _ in 0..iters {
            assert_eq!(
                c.decode(Coding::Gzip, &gz, &Limits::default(), &mut out),
                Ok(())
            );
        }
        let t_dec = t0.elapsed() / iters;
        let t1 = std::time::Instant::now();
        for _ in 0..iters {
            assert_eq!(c.encode(Coding::Gzip, &out, &mut re), Ok(()));
        }
        let t_enc = t1.elapsed() / iters;
        assert_eq!(out, html);
        println!(
            "codec: {} B HTML, gzip L6 {} B: decode {:?}, encode {:?}, total {:?} per page (mean of {iters})",
            html.len(),
            gz.len(),
            t_dec,
            t_enc,
            t_dec + t_enc
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            max_output in 0usize..5000,
            max_ratio in 0u32..50,
        ) {
            let mut c = codec();
            let limits = Limits { max_output, max_ratio };
            let cap = limits.output_cap(data.len());
            for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
                let mut out = Vec::new();
                let r = c.decode(coding, &data, &limits, &mut out);
                prop_assert!(out.capacity() <= cap.max(1));
                if r.is_err() {
                    prop_assert!(out.is_empty());
                } else {
                    prop_assert!(out.len() <= cap);
                }
            }
            let mut out = Vec::new();
            let _ = c.decode_deflate_any(&data, &limits, &mut out);
            prop_assert!(out.capacity() <= cap.max(1));
        }

        #[test]
        fn round_trip_arbitrary(
            data in proptest::collection::vec(any::<u8>(), 0..4000),
            members in 1usize..4,
        ) {
            let mut c = codec();
            for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
                let body = enc(&mut c, coding, &data);
                prop_assert_eq!(dec(&mut c, coding, &body, &Limits { max_output: 1 << 20, max_ratio: 0 }), Ok(data.clone()));
            }
            let mut multi = Vec::new();
            let mut want = Vec::new();
            for i in 0..members {
                let part = &data[data.len() * i / members..data.len() * (i + 1) / members];
                multi.extend(enc(&mut c, Coding::Gzip, part));
                want.extend_from_slice(part);
            }
            prop_assert_eq!(dec(&mut c, Coding::Gzip, &multi, &Limits { max_output: 1 << 20, max_ratio: 0 }), Ok(want));
        }
    }
}
