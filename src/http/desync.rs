//! `DESYNC_MODE`: what to do with a request that is valid HTTP/1.1 (the head
//! parser accepted it) but that servers behind us are known to read
//! differently, in the spirit of AWS's HTTP desync mitigation.
//!
//! Every request is forwarded re-framed (one Content-Length or chunked,
//! re-encoded chunks, no trailers, origin-form target, one Host), so none of
//! these can smuggle a second request through trackgate itself; what stays
//! is that the origin, or something between it and us, may still treat the
//! request's remaining oddity differently. A request is **ambiguous** when
//! it has one of these (checked in this order; the first one found is the
//! reason reported):
//!
//! 1. `body-on-get-head`: a GET or HEAD with a body (Content-Length above 0,
//!    or chunked). Servers that ignore bodies on these methods read the body
//!    as the next request (the "CL.0" desync).
//! 2. `cl-leading-zero`: a Content-Length of more than one digit that starts
//!    with `0` (some parsers read it as octal or refuse it).
//! 3. `te-not-plain-chunked`: a Transfer-Encoding whose field value is not
//!    exactly `chunked` (case or spacing variants such as `Chunked`, or
//!    `chunked` spread over several fields): parsers disagree on which of
//!    these enable chunked framing.
//! 4. `host-mismatch`: an absolute-form target whose authority differs from
//!    the Host field (RFC 9112 §3.2.2 says the target wins; a server that
//!    routes by Host sees another site).
//! 5. `underscore-in-name`: a field name with `_` (`X_Forwarded_For` and
//!    `X-Forwarded-For` are one CGI variable: nginx drops such fields).
//! 6. `h2c-upgrade`: an `Upgrade` naming `h2c` (an origin that switches to
//!    cleartext HTTP/2 gets a tunnel that bypasses the proxy's rules).
//!
//! `DESYNC_MODE=strictest` answers every ambiguous request 400 and closes
//! the client connection (nothing reaches the origin, tracking endpoints
//! included); `defensive` (the default) forwards it normalised as usual,
//! with `Connection: close` to the origin (an upgrade request keeps its
//! `Connection: upgrade`: if the origin switches protocols the connection
//! becomes a tunnel, which is never pooled either), and never reuses that
//! origin connection afterwards. Both count it in `desync_ambiguous_total`.

use super::head::{Framing, Method, RequestHead};

/// The `DESYNC_MODE` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesyncMode {
    Strictest,
    Defensive,
}

impl DesyncMode {
    pub fn parse(v: &str) -> Option<DesyncMode> {
        match v.to_ascii_lowercase().as_str() {
            "strictest" => Some(DesyncMode::Strictest),
            "defensive" => Some(DesyncMode::Defensive),
            _ => None,
        }
    }
}

/// Why `head` is ambiguous (the first rule above that matches), or `None`.
/// One pass over the fields (this runs on every request, twice when it is
/// forwarded).
pub fn ambiguity(head: &RequestHead) -> Option<&'static str> {
    let has_body = match head.framing() {
        Framing::Length(n) => n > 0,
        Framing::Chunked => true,
        Framing::None | Framing::UntilClose => false,
    };
    if matches!(head.method(), Method::Get | Method::Head) && has_body {
        return Some("body-on-get-head");
    }
    let mut cl_leading_zero = false;
    let mut te_fields = 0usize;
    let mut te_first_plain = false;
    let mut host_field: Option<&[u8]> = None;
    let mut underscore = false;
    let mut h2c = false;
    for (name, value) in head.headers() {
        underscore |= name.contains(&b'_');
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                cl_leading_zero |= value.len() > 1 && value[0] == b'0';
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if te_fields == 0 {
                    te_first_plain = value == b"chunked";
                }
                te_fields += 1;
            }
            4 if name.eq_ignore_ascii_case(b"host") => {
                host_field = host_field.or(Some(value));
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                h2c |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
            }
            _ => {}
        }
    }
    if cl_leading_zero {
        return Some("cl-leading-zero");
    }
    if te_fields > 1 || (te_fields == 1 && !te_first_plain) {
        return Some("te-not-plain-chunked");
    }
    if let (Some(target_host), Some(field)) = (head.host(), host_field) {
        if !target_host.eq_ignore_ascii_case(field) {
            return Some("host-mismatch");
        }
    }
    if underscore {
        return Some("underscore-in-name");
    }
    if h2c {
        return Some("h2c-upgrade");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request;

    fn why(raw: &str) -> Option<&'static str> {
        let head = parse_request(raw.as_bytes())
            .expect("valid")
            .expect("complete");
        ambiguity(&head)
    }

    #[test]
    fn each_rule() {
        assert_eq!(why("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(
            why("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            None
        );
        assert_eq!(
            why("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            why("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            why("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(
            why("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Some("body-on-get-head")
        );
        assert_eq!(
            why("HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some("body-on-get-head")
        );
        assert_eq!(
            why("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\n\r\n"),
            Some("cl-leading-zero")
        );
        assert_eq!(
            why("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Some("te-not-plain-chunked")
        );
        assert_eq!(
            why("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some("host-mismatch")
        );
        assert_eq!(why("GET http://a/ HTTP/1.1\r\nHost: A\r\n\r\n"), None);
        assert_eq!(
            why("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n"),
            Some("underscore-in-name")
        );
        assert_eq!(
            why("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"),
            Some("h2c-upgrade")
        );
        assert_eq!(
            why("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
            None
        );
        // The first rule in the list wins, whatever the order of the fields.
        assert_eq!(
            why("POST / HTTP/1.1\r\nX_A: 1\r\nHost: a\r\nContent-Length: 05\r\n\r\n"),
            Some("cl-leading-zero")
        );
        assert_eq!(
            why("GET http://b/ HTTP/1.1\r\nUpgrade: h2c\r\nX_A: 1\r\nHost: a\r\n\r\n"),
            Some("host-mismatch")
        );
        assert_eq!(DesyncMode::parse("Strictest"), Some(DesyncMode::Strictest));
        assert_eq!(DesyncMode::parse("monitor"), None);
    }
}
