//! HTTP/1.1 protocol: request and response heads (parsed with `httparse` on the
//! raw bytes, so header order and case survive) and message framing.
//!
//! Why not monoio-http's codec: it reads CL+TE as chunked, takes only the first
//! Content-Length, caps headers at 96, finds the head end only by CRLFCRLF,
//! loses header order and case, and its response decoder ignores HEAD, 1xx,
//! 204, 304 and close-delimited bodies. A proxy must agree exactly with the
//! origin on where a message ends, so the framing rules live here, small and
//! tested, and the rest of the crate never sees an ambiguous message.

pub mod chunked;
pub mod desync;
pub mod head;
pub mod response;

/// The value of one hex digit (chunk sizes, `%XX` escapes, token MACs).
#[inline]
pub fn hex_digit(b: u8) -> Option<u8> {
    match HEX[b as usize] {
        NOT_HEX => None,
        v => Some(v),
    }
}

const NOT_HEX: u8 = 0xff;

/// Hex digit values by byte, [`NOT_HEX`] for every other byte: one load
/// instead of three range tests per digit (the pixel decodes escapes on
/// every hit).
static HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    #[test]
    fn hex_digits() {
        for b in 0..=255u8 {
            let want = (b as char).to_digit(16).map(|d| d as u8);
            assert_eq!(super::hex_digit(b), want, "byte {b}");
        }
    }
}
