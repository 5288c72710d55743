//! HTML injection of the tracking script and pixel (the injection issue).
//! The building blocks are here and tested: `decide` (which responses are
//! injectable), `html` (where the snippet goes, streaming), `codec` (bounded
//! gzip/zlib/deflate decode and re-encode) and `csp` (what every enforced
//! policy needs), and `snippet` (the injected bytes). `proxy::inject` wires
//! them into the forwarding path: `proxy::forward` decides from the request
//! and response heads whether a response is an injectable HTML document, and
//! if so hands the body to `proxy::inject` instead of the plain copy.

pub mod codec;
pub mod csp;
pub mod decide;
pub mod html;
pub mod snippet;
