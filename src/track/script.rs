//! The tracker served as a file, for pages not behind the proxy (and for
//! GoTrack's script tags): `/pixel.<contenthash>.js` (immutable, cached for a
//! year) and GoTrack's names `/pixel.js`, `/pixel.umd.js`, `/pixel.esm.js`
//! (cached for five minutes, with an `ETag` so a revalidation is a 304).
//!
//! The bytes are the same bundle the proxy injects
//! ([`crate::inject::snippet::TRACKER_JS`], embedded at compile time); the
//! ESM name appends `export default` so `import GoTrackPixel from` works.
//! Everything here is computed once per process and is read-only after.

use crate::http::head::RequestHead;
use crate::http::response::Response;
use crate::inject::snippet::TRACKER_JS;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::OnceLock;

/// Which of the served names a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `/pixel.<contenthash>.js`: immutable.
    Hashed,
    /// `/pixel.js` and `/pixel.umd.js`: the classic script.
    Classic,
    /// `/pixel.esm.js`: the classic script plus a default export.
    Esm,
}

/// Long cache for the content-addressed name: its bytes never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Short cache for the stable names: a new build reaches browsers within
/// minutes; revalidation costs a 304.
const SHORT: &str = "public, max-age=300";
const CONTENT_TYPE: &str = "text/javascript; charset=utf-8";
const ESM_SUFFIX: &str = "export default globalThis.GoTrackPixel;\n";

struct Built {
    hash: String,
    esm: Vec<u8>,
    etag: String,
    esm_etag: String,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let hash = hex16(TRACKER_JS.as_bytes());
        let esm = [TRACKER_JS.as_bytes(), ESM_SUFFIX.as_bytes()].concat();
        Built {
            etag: format!("\"{hash}\""),
            esm_etag: format!("\"{}\"", hex16(&esm)),
            hash,
            esm,
        }
    })
}

/// The first 16 hex digits of SHA-256.
fn hex16(b: &[u8]) -> String {
    Sha256::digest(b)[..8]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The bundle's content hash as it appears in `/pixel.<hash>.js`.
pub fn content_hash() -> &'static str {
    &built().hash
}

/// The served paths, with `TRACK_PREFIX` applied.
#[derive(Debug, Clone)]
pub struct Paths {
    hashed: Vec<u8>,
    plain: Vec<u8>,
    umd: Vec<u8>,
    esm: Vec<u8>,
}

impl Paths {
    pub fn new(prefix: &str) -> Paths {
        let p = |s: &str| format!("{prefix}{s}").into_bytes();
        Paths {
            hashed: p(&format!("/pixel.{}.js", content_hash())),
            plain: p("/pixel.js"),
            umd: p("/pixel.umd.js"),
            esm: p("/pixel.esm.js"),
        }
    }

    /// The script a request path names, if any.
    pub fn route(&self, path: &[u8]) -> Option<Script> {
        if path == self.hashed.as_slice() {
            Some(Script::Hashed)
        } else if path == self.plain.as_slice() || path == self.umd.as_slice() {
            Some(Script::Classic)
        } else if path == self.esm.as_slice() {
            Some(Script::Esm)
        } else {
            None
        }
    }
}

/// Whether an `If-None-Match` header value lists `etag` (or `*`); weak
/// comparison, as RFC 9110 asks for this header.
fn none_match(value: &[u8], etag: &str) -> bool {
    let want = etag.as_bytes();
    value.split(|b| *b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == want
    })
}

/// The answer to a GET or HEAD for `which`.
pub fn answer(which: Script, head: &RequestHead) -> Response {
    let b = built();
    let (body, etag, cache): (Cow<'static, [u8]>, &'static str, &'static str) = match which {
        Script::Hashed => (Cow::Borrowed(TRACKER_JS.as_bytes()), &b.etag, IMMUTABLE),
        Script::Classic => (Cow::Borrowed(TRACKER_JS.as_bytes()), &b.etag, SHORT),
        Script::Esm => (Cow::Borrowed(b.esm.as_slice()), &b.esm_etag, SHORT),
    };
    let fresh = head
        .headers_named(b"if-none-match")
        .any(|v| none_match(v, etag));
    let resp = if fresh {
        Response::new(304, CONTENT_TYPE, &b""[..])
    } else {
        Response::new(200, CONTENT_TYPE, body)
    };
    resp.header("Cache-Control", cache)
        .header("ETag", etag)
        .header("X-Content-Type-Options", "nosniff")
        // A public file: lets pages load it with `crossorigin` and SRI.
        .header("Access-Control-Allow-Origin", "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request;

    fn req(path: &str, extra: &str) -> RequestHead {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse_request(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn routes_every_name_under_the_prefix() {
        let p = Paths::new("/_t");
        let hashed = format!("/_t/pixel.{}.js", content_hash());
        assert_eq!(p.route(hashed.as_bytes()), Some(Script::Hashed));
        assert_eq!(p.route(b"/_t/pixel.js"), Some(Script::Classic));
        assert_eq!(p.route(b"/_t/pixel.umd.js"), Some(Script::Classic));
        assert_eq!(p.route(b"/_t/pixel.esm.js"), Some(Script::Esm));
        assert_eq!(p.route(b"/pixel.js"), None);
        assert_eq!(p.route(b"/_t/pixel.0000000000000000.js"), None);
        assert_eq!(content_hash().len(), 16);
    }

    #[test]
    fn hashed_name_is_immutable_and_plain_names_revalidate() {
        let r = answer(Script::Hashed, &req("/x", ""));
        assert_eq!(r.status, 200);
        assert_eq!(&*r.body, TRACKER_JS.as_bytes());
        let h = |r: &Response, n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(h(&r, "Cache-Control").unwrap(), IMMUTABLE);
        let etag = h(&r, "ETag").unwrap();
        assert_eq!(etag, format!("\"{}\"", content_hash()));

        let r = answer(Script::Classic, &req("/x", ""));
        assert_eq!(h(&r, "Cache-Control").unwrap(), SHORT);
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"zz\", {etag}"),
            "*".into(),
        ] {
            let r = answer(
                Script::Classic,
                &req("/x", &format!("If-None-Match: {inm}\r\n")),
            );
            assert_eq!(r.status, 304, "{inm}");
            assert_eq!(h(&r, "ETag").unwrap(), etag);
            let mut out = Vec::new();
            r.write(&mut out, false);
            assert!(out.ends_with(b"\r\n\r\n"), "no body on a 304");
        }
        let r = answer(Script::Classic, &req("/x", "If-None-Match: \"other\"\r\n"));
        assert_eq!(r.status, 200);
    }

    #[test]
    fn esm_adds_a_default_export_with_its_own_etag() {
        let r = answer(Script::Esm, &req("/x", ""));
        assert!(r.body.starts_with(TRACKER_JS.as_bytes()));
        assert!(r.body.ends_with(ESM_SUFFIX.as_bytes()));
        let etag = r
            .headers
            .iter()
            .find(|(k, _)| *k == "ETag")
            .map(|(_, v)| v.to_string())
            .unwrap();
        assert_ne!(etag, format!("\"{}\"", content_hash()));
    }
}
