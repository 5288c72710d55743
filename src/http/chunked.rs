//! The chunked transfer coding (RFC 9112 §7.1): a streaming decoder that
//! turns a chunked body into plain body bytes, and the few helpers that write
//! one.
//!
//! The proxy never forwards chunk framing as it received it: it decodes the
//! body here and re-encodes it (or frames it with a length) on the way out, so
//! whatever a peer meant by an odd chunk line never reaches the other side.
//! That only holds if the decoder is strict about where the message ends, so
//! it is:
//!
//! * chunk-size is `1*HEXDIG`, no whitespace before or after it; more than 16
//!   significant hex digits (a size that does not fit in a `u64`) is an error,
//!   leading zeros are fine but count toward the line bound;
//! * chunk extensions are `;name` or `;name=value` (value a token or a
//!   quoted-string), no whitespace anywhere (llhttp's strict mode agrees);
//!   they are checked for shape and then dropped;
//! * the whole size line (size and extensions) is at most
//!   [`MAX_CHUNK_LINE`] bytes;
//! * every line ends in CRLF: a bare CR or a bare LF is an error. This matches
//!   `head.rs`, which rejects bare LF too: one rule for the whole message;
//! * chunk data is followed by exactly CRLF;
//! * trailer fields after the last chunk must be well-formed `name: value`
//!   lines (no obs-fold), at most [`MAX_TRAILER_BYTES`] together with the
//!   final CRLF; they are discarded, never forwarded.
//!
//! The decoder buffers nothing: it keeps a few counters of state, appends the
//! data bytes of each input piece to the caller's output and stops exactly
//! after the final CRLF, so the bytes of a pipelined next message stay with
//! the caller. Every error maps to 400 for a request body and 502 for a
//! response body; after an error the decoder keeps returning it.

use std::fmt;

/// Longest chunk-size line accepted (size digits plus extensions, without the
/// CRLF).
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Most bytes accepted for the trailer section, including its final CRLF.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Ends the data of every chunk.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk with no trailers: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What was wrong with a chunked body. Every variant means the message cannot
/// be delimited: answer 400 (request) or 502 (response) and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line that does not start with a hex digit, or a character
    /// after the digits that is neither `;` nor CR (whitespace included).
    BadSize,
    /// A chunk size that does not fit in 64 bits.
    SizeOverflow,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    LineTooLong,
    /// A malformed chunk extension.
    BadExtension,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BadLineEnding,
    /// Chunk data not followed by CRLF.
    MissingDataCrlf,
    /// A malformed trailer field line (bad name, bad value byte, obs-fold).
    BadTrailer,
    /// Trailer section longer than [`MAX_TRAILER_BYTES`].
    TrailersTooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size overflows 64 bits",
            ChunkError::LineTooLong => "chunk size line too long",
            ChunkError::BadExtension => "invalid chunk extension",
            ChunkError::BadLineEnding => "chunk framing line not ended by CRLF",
            ChunkError::MissingDataCrlf => "chunk data not followed by CRLF",
            ChunkError::BadTrailer => "invalid trailer field",
            ChunkError::TrailersTooLarge => "trailer section too large",
        })
    }
}

impl std::error::Error for ChunkError {}

/// Where in a chunk extension the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Just after `;`: a name must start.
    NameStart,
    Name,
    /// Just after `=`: a token or a quoted-string must start.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash inside a quoted-string.
    QuotedPair,
    /// After the closing quote.
    AfterQuoted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk-size line: a hex digit must come.
    SizeStart,
    /// Inside the hex digits.
    Size,
    /// Inside the extensions of the size line.
    Ext(Ext),
    /// CR seen at the end of the size line.
    SizeLf,
    /// Inside chunk data; `remaining` bytes to go.
    Data,
    /// After chunk data: CR must come.
    DataCr,
    /// After chunk data and CR: LF must come.
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    /// CR seen at the end of a trailer field line.
    TrailerLf,
    /// CR seen at the start of a line in the trailer section: the final LF.
    FinalLf,
    Done,
    Failed(ChunkError),
}

/// Streaming decoder for one chunked body. Feed it the bytes that follow the
/// head, in pieces of any size, until [`is_done`](Self::is_done).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk whose size line is being read.
    size: u64,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Bytes of the current size line so far.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            remaining: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Consumes framing and data from `input` and appends the decoded body
    /// bytes to `out` (at most `input.len()` bytes are appended per call).
    ///
    /// Returns the number of bytes consumed. That is `input.len()` unless the
    /// body ended inside `input`: then it is the position just after the final
    /// CRLF, and the rest belongs to the next message. Once done, further
    /// calls consume nothing and return `Ok(0)`. After an error every call
    /// returns the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Done => return Ok(i),
                State::Failed(e) => return Err(e),
                State::Data => {
                    let rest = input.get(i..).unwrap_or_default();
                    if rest.is_empty() {
                        return Ok(i);
                    }
                    let take = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    i += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let Some(&b) = input.get(i) else {
                        return Ok(i);
                    };
                    i += 1;
                    if let Err(e) = self.step(b) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// True once the final CRLF of the trailer section has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances the state machine by one framing byte (never a data byte).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            // The CR that ends the line does not count toward the bound.
            State::SizeStart | State::Size | State::Ext(_) if b != b'\r' => {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_LINE {
                    return Err(ChunkError::LineTooLong);
                }
            }
            State::TrailerLineStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::FinalLf => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILER_BYTES {
                    return Err(ChunkError::TrailersTooLarge);
                }
            }
            _ => {}
        }

        self.state = match self.state {
            State::SizeStart => match super::hex_digit(b) {
                Some(v) => {
                    self.size = u64::from(v);
                    State::Size
                }
                None => return Err(ChunkError::BadSize),
            },
            State::Size => match super::hex_digit(b) {
                Some(v) => {
                    if self.size > u64::MAX >> 4 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    self.size = (self.size << 4) | u64::from(v);
                    State::Size
                }
                None => match b {
                    b';' => State::Ext(Ext::NameStart),
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => return Err(ChunkError::BadSize),
                },
            },
            State::Ext(ext) => State::Ext(match (ext, b) {
                (Ext::NameStart, b) if is_tchar(b) => Ext::Name,
                (Ext::Name, b) if is_tchar(b) => Ext::Name,
                (Ext::Name, b'=') => Ext::ValueStart,
                (Ext::ValueStart, b) if is_tchar(b) => Ext::Token,
                (Ext::ValueStart, b'"') => Ext::Quoted,
                (Ext::Token, b) if is_tchar(b) => Ext::Token,
                (Ext::Quoted, b'"') => Ext::AfterQuoted,
                (Ext::Quoted, b'\\') => Ext::QuotedPair,
                (Ext::Quoted, b) if is_qdtext(b) => Ext::Quoted,
                (Ext::QuotedPair, b) if is_field_vchar_or_ws(b) => Ext::Quoted,
                (Ext::Name | Ext::Token | Ext::AfterQuoted, b';') => Ext::NameStart,
                (Ext::Name | Ext::Token | Ext::AfterQuoted, b'\r') => {
                    self.state = State::SizeLf;
                    return Ok(());
                }
                (_, b'\n') => return Err(ChunkError::BadLineEnding),
                _ => return Err(ChunkError::BadExtension),
            }),
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.line_len = 0;
                if self.size == 0 {
                    State::TrailerLineStart
                } else {
                    self.remaining = self.size;
                    State::Data
                }
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::MissingDataCrlf),
            },
            State::DataLf => match b {
                b'\n' => {
                    self.size = 0;
                    State::SizeStart
                }
                _ => return Err(ChunkError::MissingDataCrlf),
            },
            State::TrailerLineStart => match b {
                b'\r' => State::FinalLf,
                b'\n' => return Err(ChunkError::BadLineEnding),
                b if is_tchar(b) => State::TrailerName,
                // Includes SP / HTAB: obs-fold or whitespace before a name.
                _ => return Err(ChunkError::BadTrailer),
            },
            State::TrailerName => match b {
                b':' => State::TrailerValue,
                b if is_tchar(b) => State::TrailerName,
                _ => return Err(ChunkError::BadTrailer),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(ChunkError::BadLineEnding),
                b if is_field_vchar_or_ws(b) => State::TrailerValue,
                _ => return Err(ChunkError::BadTrailer),
            },
            State::TrailerLf | State::FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                if self.state == State::FinalLf {
                    State::Done
                } else {
                    State::TrailerLineStart
                }
            }
            // `decode` never steps in these states; keep them as they are.
            State::Data | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }
}

/// Appends the size line of a chunk of `len` bytes: lowercase hex, then CRLF.
///
/// `len == 0` writes `0\r\n`, which is the last-chunk line: callers must not
/// use it for an empty piece of data (see [`write_chunk`], which skips those).
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut n = len;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends `data` as one complete chunk (size line, data, CRLF). Writes
/// nothing for empty data, which as a chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_chunk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_END);
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// `qdtext` of RFC 9110 §5.6.4.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// HTAB / SP / VCHAR / obs-text: what a field value (or a quoted-pair) may hold.
fn is_field_vchar_or_ws(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `input` in one call; returns (body, consumed, done).
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        Ok((out, n, d.is_done()))
    }

    /// Decodes `input` byte by byte; returns (body, consumed, done).
    fn decode_bytewise(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for b in input.chunks(1) {
            consumed += d.decode(b, &mut out)?;
        }
        Ok((out, consumed, d.is_done()))
    }

    fn err_of(input: &[u8]) -> ChunkError {
        match decode_all(input) {
            Err(e) => {
                assert_eq!(decode_bytewise(input).err(), Some(e), "bytewise differs");
                e
            }
            Ok(r) => panic!(
                "expected an error for {:?}, got {r:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn simple_body() {
        let m = b"5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(decode_all(m).unwrap(), (b"hello".to_vec(), m.len(), true));
        assert_eq!(
            decode_bytewise(m).unwrap(),
            (b"hello".to_vec(), m.len(), true)
        );
    }

    #[test]
    fn empty_body() {
        assert_eq!(decode_all(LAST_CHUNK).unwrap(), (vec![], 5, true));
    }

    #[test]
    fn multi_chunk_upper_and_lower_hex_and_leading_zeros() {
        let m =
            b"5\r\nhello\r\n006\r\n world\r\nA\r\n0123456789\r\nb\r\nabcdefghijk\r\n000\r\n\r\n";
        let (body, n, done) = decode_all(m).unwrap();
        assert_eq!(body, b"hello world0123456789abcdefghijk");
        assert_eq!((n, done), (m.len(), true));
    }

    #[test]
    fn extensions_are_skipped() {
        let m = b"5;a;b=c;d=\"x y;\\\"z\\\\\";e=f\r\nhello\r\n0;last=1\r\n\r\n";
        assert_eq!(decode_all(m).unwrap(), (b"hello".to_vec(), m.len(), true));
    }

    #[test]
    fn trailers_are_dropped() {
        let m = b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum:\t1 2 \r\nEmpty:\r\n\r\n";
        assert_eq!(decode_all(m).unwrap(), (b"abc".to_vec(), m.len(), true));
    }

    #[test]
    fn stops_at_end_of_message() {
        let m = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (body, n, done) = decode_all(m).unwrap();
        assert_eq!((body.as_slice(), n, done), (&b"abc"[..], 13, true));
        // Once done, nothing more is consumed.
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(&m[..13], &mut out), Ok(13));
        assert_eq!(d.decode(&m[13..], &mut out), Ok(0));
        assert_eq!(out, b"abc");
    }

    #[test]
    fn incomplete_is_not_done() {
        for m in [
            &b""[..],
            b"5",
            b"5\r",
            b"5\r\nhel",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n0\r\n",
        ] {
            let (_, n, done) = decode_all(m).unwrap();
            assert_eq!((n, done), (m.len(), false), "{m:?}");
        }
        let (_, _, done) = decode_all(b"0\r\nA: b\r\n").unwrap();
        assert!(!done);
    }

    #[test]
    fn junk_in_size() {
        assert_eq!(err_of(b"g\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"5x\r\nhello\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"-5\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"+5\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"0x5\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b";a\r\n"), ChunkError::BadSize);
    }

    #[test]
    fn whitespace_around_size_is_rejected() {
        assert_eq!(err_of(b" 5\r\nhello\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"5 \r\nhello\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"5\t\r\nhello\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"5 ;a\r\nhello\r\n"), ChunkError::BadSize);
        assert_eq!(err_of(b"5; a\r\nhello\r\n"), ChunkError::BadExtension);
        assert_eq!(err_of(b"5;a =b\r\nhello\r\n"), ChunkError::BadExtension);
        assert_eq!(err_of(b"5;a= b\r\nhello\r\n"), ChunkError::BadExtension);
    }

    #[test]
    fn overflow() {
        assert_eq!(err_of(b"ffffffffffffffffff\r\n"), ChunkError::SizeOverflow);
        assert_eq!(err_of(b"10000000000000000\r\n"), ChunkError::SizeOverflow);
        // 16 significant digits fit, whatever the leading zeros.
        let (_, n, done) = decode_all(b"0000ffffffffffffffff\r\nab").unwrap();
        assert_eq!((n, done), (24, false));
    }

    #[test]
    fn too_long_line() {
        let mut m = vec![b'0'; MAX_CHUNK_LINE];
        m.push(b'5');
        m.extend_from_slice(b"\r\nhello\r\n");
        assert_eq!(err_of(&m), ChunkError::LineTooLong);

        let mut m = b"5;a=".to_vec();
        m.resize(MAX_CHUNK_LINE + 1, b'x');
        assert_eq!(err_of(&m), ChunkError::LineTooLong);

        // Exactly at the bound is fine.
        let mut m = b"5;a=".to_vec();
        m.resize(MAX_CHUNK_LINE, b'x');
        m.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode_all(&m).unwrap(), (b"hello".to_vec(), m.len(), true));
    }

    #[test]
    fn bad_extensions() {
        for m in [
            &b"2;\r\naa\r\n"[..],
            b"2;;a\r\naa\r\n",
            b"2;a=\r\naa\r\n",
            b"2;a=\"x\r\naa\r\n",
            b"2;a=\"x\"y\r\naa\r\n",
            b"2;a=b\"c\"\r\naa\r\n",
            b"2;a@b\r\naa\r\n",
            b"2;a=\"\x01\"\r\naa\r\n",
            b"2 erfrferferf\r\naa\r\n",
        ] {
            let e = err_of(m);
            assert!(
                matches!(e, ChunkError::BadExtension | ChunkError::BadSize),
                "{m:?}: {e:?}"
            );
        }
        assert_eq!(err_of(b"2;a=\"x\rx\"\r\naa\r\n"), ChunkError::BadExtension);
    }

    #[test]
    fn missing_crlf_after_data() {
        assert_eq!(err_of(b"5\r\nhelloX\r\n"), ChunkError::MissingDataCrlf);
        assert_eq!(err_of(b"5\r\nhello\rX"), ChunkError::MissingDataCrlf);
        assert_eq!(
            err_of(b"5\r\nhello\n0\r\n\r\n"),
            ChunkError::MissingDataCrlf
        );
        assert_eq!(err_of(b"5\r\nhello0\r\n\r\n"), ChunkError::MissingDataCrlf);
        // A chunk longer than its size says.
        assert_eq!(
            err_of(b"3\r\nhello\r\n0\r\n\r\n"),
            ChunkError::MissingDataCrlf
        );
    }

    #[test]
    fn bare_cr_and_bare_lf() {
        assert_eq!(err_of(b"5\rhello"), ChunkError::BadLineEnding);
        assert_eq!(err_of(b"5\r\rhello"), ChunkError::BadLineEnding);
        assert_eq!(err_of(b"5\nhello\r\n"), ChunkError::BadLineEnding);
        assert_eq!(err_of(b"5;a\nhello\r\n"), ChunkError::BadLineEnding);
        assert_eq!(err_of(b"0\r\n\n"), ChunkError::BadLineEnding);
        assert_eq!(err_of(b"0\r\n\rX"), ChunkError::BadLineEnding);
        assert_eq!(
            err_of(b"0\r\nA: b\rC: d\r\n\r\n"),
            ChunkError::BadLineEnding
        );
        assert_eq!(
            err_of(b"0\r\nA: b\nC: d\r\n\r\n"),
            ChunkError::BadLineEnding
        );
    }

    #[test]
    fn bad_trailers() {
        for m in [
            &b"0\r\n : folded\r\n\r\n"[..],
            b"0\r\nA: b\r\n continued\r\n\r\n",
            b"0\r\nA : b\r\n\r\n",
            b"0\r\n: b\r\n\r\n",
            b"0\r\nA\r\n\r\n",
            b"0\r\nA(: b\r\n\r\n",
            b"0\r\nA: b\x00c\r\n\r\n",
            b"0\r\nA: b\x7fc\r\n\r\n",
        ] {
            assert_eq!(err_of(m), ChunkError::BadTrailer, "{m:?}");
        }
    }

    #[test]
    fn oversized_trailers() {
        let mut m = b"0\r\n".to_vec();
        while m.len() < MAX_TRAILER_BYTES + 100 {
            m.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        m.extend_from_slice(b"\r\n");
        assert_eq!(err_of(&m), ChunkError::TrailersTooLarge);

        // Exactly MAX_TRAILER_BYTES including the final CRLF is accepted.
        let mut m = b"0\r\nX: ".to_vec();
        m.resize(3 + MAX_TRAILER_BYTES - 4, b'a');
        m.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode_all(&m).unwrap(), (vec![], m.len(), true));
    }

    #[test]
    fn error_is_sticky() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"z", &mut out), Err(ChunkError::BadSize));
        assert_eq!(d.decode(b"0\r\n\r\n", &mut out), Err(ChunkError::BadSize));
        assert!(!d.is_done());
    }

    #[test]
    fn header_writer() {
        for (len, want) in [
            (0usize, &b"0\r\n"[..]),
            (1, b"1\r\n"),
            (15, b"f\r\n"),
            (16, b"10\r\n"),
            (4096, b"1000\r\n"),
            (0xdead_beef, b"deadbeef\r\n"),
        ] {
            let mut out = b"x".to_vec();
            write_chunk_header(&mut out, len);
            assert_eq!(&out[1..], want);
        }
        let mut out = Vec::new();
        write_chunk_header(&mut out, usize::MAX);
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        assert_eq!(d.decode(&out, &mut body), Ok(out.len()));
        assert!(body.is_empty());

        let mut out = Vec::new();
        write_chunk(&mut out, b"");
        assert!(out.is_empty());
        write_chunk(&mut out, b"hi");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(out, b"2\r\nhi\r\n0\r\n\r\n");
    }

    #[test]
    fn display_is_nonempty() {
        assert_eq!(
            ChunkError::SizeOverflow.to_string(),
            "chunk size overflows 64 bits"
        );
    }

    /// Encodes `body` as chunks of the given sizes (cycled), with an optional
    /// extension on each size line and optional trailers.
    fn encode(body: &[u8], sizes: &[usize], ext: bool, trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].clamp(1, rest.len());
            k += 1;
            let mut header = Vec::new();
            write_chunk_header(&mut header, n);
            if ext && k % 2 == 0 {
                header.truncate(header.len() - 2);
                header.extend_from_slice(b";k=\"v;1\"\r\n");
            }
            out.extend_from_slice(&header);
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(CHUNK_END);
            rest = &rest[n..];
        }
        if trailers {
            out.extend_from_slice(b"0;end\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\n");
        } else {
            out.extend_from_slice(LAST_CHUNK);
        }
        out
    }

    proptest! {
        #[test]
        fn roundtrip_split_anywhere(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            ext in any::<bool>(),
            trailers in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let message = encode(&body, &sizes, ext, trailers);
            let next = b"POST /next HTTP/1.1\r\nHost: a\r\n\r\n";
            let mut stream = message.clone();
            stream.extend_from_slice(next);

            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            points.dedup();

            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut consumed = 0;
            for w in points.windows(2) {
                let piece = &stream[w[0]..w[1]];
                let n = d.decode(piece, &mut out).unwrap();
                prop_assert!(n <= piece.len());
                if n < piece.len() {
                    prop_assert!(d.is_done());
                }
                consumed += n;
            }
            prop_assert!(d.is_done());
            prop_assert_eq!(consumed, message.len());
            prop_assert_eq!(out, body);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
        ) {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            for p in &pieces {
                match d.decode(p, &mut out) {
                    Ok(n) => prop_assert!(n <= p.len()),
                    Err(_) => break,
                }
            }
            let total: usize = pieces.iter().map(Vec::len).sum();
            prop_assert!(out.len() <= total);
        }

        #[test]
        fn chunky_bytes_never_panic(
            s in "[0-9a-fA-F;=\"\\\\ \r\nxX:-]{0,200}",
        ) {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let _ = d.decode(s.as_bytes(), &mut out);
            prop_assert!(out.len() <= s.len());
        }
    }
}
