//! The bytes injected into a page: the config block (JSON), the tracker as
//! one inline `<script>` whose text is a build-time constant (so its CSP
//! hash is stable), and a `<noscript>` pixel. This module owns the snippet's
//! text and nothing else: what goes in it (token, pageview id, nonce) is
//! decided by the caller.

use crate::track::json;
use uuid::Uuid;

/// The tracker's text: the minified bundle built from `js/` (TypeScript,
/// esbuild) and committed as `js/dist/tracker.min.js`, embedded at compile
/// time so building trackgate needs no Node. It reads the config block this
/// module writes; `tests/js_bundle.rs` fails when the committed file is not
/// what a fresh build of `js/` produces.
pub const TRACKER_JS: &str = include_str!("../../js/dist/tracker.min.js");

/// What a per-client page carries: a freshly minted kind `p` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub pageview_id: Uuid,
    pub token: String,
    pub expires_at: u64,
}

/// `'sha256-…'` source value (without quotes and prefix) of [`TRACKER_JS`].
pub fn tracker_sha256_b64() -> String {
    crate::inject::csp::sha256_b64(TRACKER_JS.as_bytes())
}

/// Appends the snippet to `out`. `prefix` is `TRACK_PREFIX`; `page` is
/// `None` for a shared-cacheable page (no token, no pageview id); `nonce`
/// goes on both script tags.
pub fn write(out: &mut Vec<u8>, prefix: &str, page: Option<&PageToken>, nonce: Option<&str>) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let pv = page.map(|p| p.pageview_id.hyphenated().encode_lower(&mut buf).to_owned());

    out.extend_from_slice(b"<script");
    write_nonce(out, nonce);
    out.extend_from_slice(b" type=\"application/json\" id=\"trackgate-config\">");
    let mut cfg = Vec::with_capacity(256);
    cfg.extend_from_slice(b"{\"endpoint\":");
    json::write_str(&mut cfg, format!("{prefix}/collect").as_bytes());
    cfg.extend_from_slice(b",\"pixel\":");
    json::write_str(&mut cfg, format!("{prefix}/px.gif").as_bytes());
    if let (Some(p), Some(pv)) = (page, pv.as_deref()) {
        cfg.extend_from_slice(b",\"pageview_id\":");
        json::write_str(&mut cfg, pv.as_bytes());
        cfg.extend_from_slice(b",\"token\":");
        json::write_str(&mut cfg, p.token.as_bytes());
        cfg.extend_from_slice(b",\"expires_at\":");
        json::write_u64(&mut cfg, p.expires_at);
    }
    cfg.push(b'}');
    // `<` only ever occurs inside JSON strings here, where `\u003c` means
    // the same: the block can never close the script element early.
    for &b in &cfg {
        if b == b'<' {
            out.extend_from_slice(b"\\u003c");
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b"</script><script");
    write_nonce(out, nonce);
    out.push(b'>');
    out.extend_from_slice(TRACKER_JS.as_bytes());
    out.extend_from_slice(b"</script><noscript><img src=\"");
    write_attr(out, prefix.as_bytes());
    out.extend_from_slice(b"/px.gif?e=pageview");
    if let Some(pv) = pv.as_deref() {
        out.extend_from_slice(b"&amp;pv=");
        out.extend_from_slice(pv.as_bytes());
    }
    out.extend_from_slice(b"\" width=\"1\" height=\"1\" alt=\"\"></noscript>");
}

fn write_nonce(out: &mut Vec<u8>, nonce: Option<&str>) {
    if let Some(n) = nonce {
        out.extend_from_slice(b" nonce=\"");
        write_attr(out, n.as_bytes());
        out.push(b'"');
    }
}

/// A double-quoted attribute value.
fn write_attr(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"&quot;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> PageToken {
        PageToken {
            pageview_id: Uuid::parse_str("0190f0c2-5f4e-7a00-8000-000000000001").unwrap(),
            token: "tg1.p.x<y.1.k".into(),
            expires_at: 1_700_000_000,
        }
    }

    fn config_of(s: &str) -> serde_json::Value {
        let start = s.find("id=\"trackgate-config\">").unwrap() + 22;
        let end = start + s[start..].find("</script>").unwrap();
        serde_json::from_str(&s[start..end]).unwrap()
    }

    #[test]
    fn per_client_snippet_carries_token_and_pageview() {
        let mut out = Vec::new();
        write(&mut out, "/_t", Some(&page()), None);
        let s = String::from_utf8(out).unwrap();
        let cfg = config_of(&s);
        assert_eq!(cfg["endpoint"], "/_t/collect");
        assert_eq!(cfg["pixel"], "/_t/px.gif");
        assert_eq!(cfg["pageview_id"], "0190f0c2-5f4e-7a00-8000-000000000001");
        assert_eq!(cfg["token"], "tg1.p.x<y.1.k");
        assert_eq!(cfg["expires_at"], 1_700_000_000u64);
        assert!(s.contains("x\\u003cy"), "{s}");
        assert_eq!(s.matches("<script").count(), 2);
        assert!(s.contains(&format!("<script>{TRACKER_JS}</script>")));
        assert!(s.ends_with(
            "<noscript><img src=\"/_t/px.gif?e=pageview&amp;pv=0190f0c2-5f4e-7a00-8000-000000000001\" width=\"1\" height=\"1\" alt=\"\"></noscript>"
        ));
    }

    #[test]
    fn shared_snippet_has_no_token_and_nonce_goes_on_both_scripts() {
        let mut out = Vec::new();
        write(&mut out, "", None, Some("abc\"def"));
        let s = String::from_utf8(out).unwrap();
        let cfg = config_of(&s);
        assert!(cfg.get("token").is_none() && cfg.get("pageview_id").is_none());
        assert_eq!(s.matches("nonce=\"abc&quot;def\"").count(), 2);
        assert!(s.contains("src=\"/px.gif?e=pageview\""));
    }

    #[test]
    fn tracker_is_inline_safe_and_hash_is_stable() {
        assert!(!TRACKER_JS.contains("</"));
        assert!(!TRACKER_JS.contains("<!--"));
        // The real tracker, not the old placeholder: it reads this module's
        // config block and exposes GoTrack's API.
        assert!(TRACKER_JS.contains("trackgate-config"));
        assert!(TRACKER_JS.contains("GoTrackPixel"));
        assert_eq!(tracker_sha256_b64(), tracker_sha256_b64());
        assert_eq!(tracker_sha256_b64().len(), 44);
    }
}
