//! HTML injection (the tracking script and pixel) arrives with the injection
//! issue. Until then every response streams through unchanged.
//!
//! The seam: `proxy::forward` writes the response head (`write_response_head`)
//! and then copies the body (`copy_length` / `copy_chunked` /
//! `copy_until_close`). Injection decides from the request and response heads
//! whether a response is an injectable HTML document, and if so replaces the
//! body copy with its own transform; nothing else in the proxy changes.

pub mod decide;
pub mod html;
