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
