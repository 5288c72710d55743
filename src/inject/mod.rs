//! HTML injection of the tracking script and pixel (the injection issue).
//! The building blocks are here and tested: `decide` (which responses are
//! injectable), `html` (where the snippet goes, streaming), `codec` (bounded
//! gzip/zlib/deflate decode and re-encode) and `csp` (what every enforced
//! policy needs). They are not wired into the proxy yet: every response
//! still streams through unchanged.
//!
//! The seam: `proxy::forward` writes the response head (`write_response_head`)
//! and then copies the body (`copy_length` / `copy_chunked` /
//! `copy_until_close`). Injection decides from the request and response heads
//! whether a response is an injectable HTML document, and if so replaces the
//! body copy with its own transform; nothing else in the proxy changes.

pub mod codec;
pub mod csp;
pub mod decide;
pub mod html;
