//! Whether a response gets the tracking snippet, decided from the request and
//! response heads alone, before a body byte is read; plus the header
//! questions that go with it: which `Accept-Encoding` to send the origin,
//! whether the client takes an encoding, and whether a shared cache could hand
//! the page to someone else. Pure functions, no I/O, no allocation.
//!
//! Every answer errs toward leaving the page alone: a response we are unsure
//! about is not an injectable document ([`eligible`]), and a page we are
//! unsure about is treated as shared-cacheable ([`shared_cacheable`]), so no
//! per-client token ends up where another client could get it.
//!
//! Header syntax (RFC 9110 §5.6): field names are case-insensitive, repeated
//! fields are one comma-separated list, and commas or semicolons inside a
//! quoted string (with `\` escapes) separate nothing. Tokens, directive and
//! parameter names and coding names are compared ASCII case-insensitively.

use crate::http::head::{Method, RequestHead, ResponseHead};

/// The content coding of an injectable response body (what the codec must
/// undo and redo). `x-gzip` is reported as `Gzip`. `Deflate` is HTTP's
/// `deflate`, which is zlib-wrapped, though some servers send raw deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// The coding's name in `Content-Encoding` / `Accept-Encoding`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// Why a response is not injected: one variant per reason, checked in this
/// order (the first that applies is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The request method is not GET (HEAD included: no body to inject into).
    NotGet,
    /// The status is not 200.
    Status,
    /// The Content-Type is not `text/html` or `application/xhtml+xml`.
    NotHtml,
    /// A `Content-Range` is present (a partial body).
    ContentRange,
    /// `Content-Disposition` asks for a download.
    Attachment,
    /// `Cache-Control: no-transform`.
    NoTransform,
    /// Not a top-level document: `Sec-Fetch-Dest` other than `document`, or
    /// `HX-Request` (an htmx partial).
    NotDocument,
    /// More than one content coding.
    StackedEncoding,
    /// A content or transfer coding we do not decode (br, zstd, compress, …).
    UnsupportedEncoding,
}

impl Skip {
    /// Every variant, in check order (for registering metric series).
    pub const ALL: [Skip; 9] = [
        Skip::NotGet,
        Skip::Status,
        Skip::NotHtml,
        Skip::ContentRange,
        Skip::Attachment,
        Skip::NoTransform,
        Skip::NotDocument,
        Skip::StackedEncoding,
        Skip::UnsupportedEncoding,
    ];

    /// The `result` label of `inject_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::NotGet => "not_get",
            Skip::Status => "status",
            Skip::NotHtml => "not_html",
            Skip::ContentRange => "content_range",
            Skip::Attachment => "attachment",
            Skip::NoTransform => "no_transform",
            Skip::NotDocument => "not_document",
            Skip::StackedEncoding => "stacked_encoding",
            Skip::UnsupportedEncoding => "unsupported_encoding",
        }
    }
}

/// Whether `resp`, the answer to `req`, is an HTML document we may rewrite,
/// and if so in which content coding its body comes.
///
/// The rules, in order:
/// 1. the method is `GET`;
/// 2. the status is 200;
/// 3. the Content-Type is `text/html` or `application/xhtml+xml` (type and
///    subtype case-insensitive, parameters ignored). Several Content-Type
///    values (fields or a comma list) are read as browsers do (Fetch
///    "extract a MIME type"): the last one that parses as a MIME type and is
///    not `*/*` counts. None at all is not HTML (we do not sniff);
/// 4. no `Content-Range`;
/// 5. no `Content-Disposition` other than `inline`: `attachment`, an unknown
///    type (RFC 6266 §4.2 says to treat it as attachment) or a malformed one
///    all skip; an empty value is ignored;
/// 6. no `no-transform` directive in any Cache-Control field;
/// 7. no `Sec-Fetch-Dest` other than `document` (so iframe loads are
///    skipped too) and no `HX-Request`;
/// 8. no transfer coding other than `chunked` (its body would still be
///    encoded after de-chunking) → `UnsupportedEncoding`; at most one content
///    coding (an `identity` element is ignored) → else `StackedEncoding`;
///    and that coding is `gzip`, `x-gzip` or `deflate` → else
///    `UnsupportedEncoding`.
///
/// The body itself may still be skipped later (no `<html>`/`<body>`): see
/// `inject::html`.
pub fn eligible(req: &RequestHead, resp: &ResponseHead) -> Result<Encoding, Skip> {
    if req.method() != Method::Get {
        return Err(Skip::NotGet);
    }
    eligible_except_method(req, resp)
}

/// Every rule of [`eligible`] except the method: for a HEAD request, whether
/// the GET of the same page would be injected (issue 3: such a HEAD response
/// drops its `Content-Length`, which would not match the injected body).
pub fn eligible_except_method(req: &RequestHead, resp: &ResponseHead) -> Result<Encoding, Skip> {
    if resp.status() != 200 {
        return Err(Skip::Status);
    }
    if !is_html(resp) {
        return Err(Skip::NotHtml);
    }
    if resp.header(b"content-range").is_some() {
        return Err(Skip::ContentRange);
    }
    if resp.headers_named(b"content-disposition").any(is_download) {
        return Err(Skip::Attachment);
    }
    if directives(resp.headers_named(b"cache-control"))
        .any(|d| d.name.eq_ignore_ascii_case(b"no-transform"))
    {
        return Err(Skip::NoTransform);
    }
    if !is_document_request(req) {
        return Err(Skip::NotDocument);
    }
    content_encoding(resp)
}

/// Is `req` a request for a document: no `HX-Request`, and `Sec-Fetch-Dest`
/// absent or `document`.
fn is_document_request(req: &RequestHead) -> bool {
    req.header(b"hx-request").is_none()
        && req
            .headers_named(b"sec-fetch-dest")
            .all(|v| trim(v).eq_ignore_ascii_case(b"document"))
}

fn content_encoding(resp: &ResponseHead) -> Result<Encoding, Skip> {
    if resp.has_other_transfer_coding() {
        return Err(Skip::UnsupportedEncoding);
    }
    let mut codings = list(resp.headers_named(b"content-encoding"))
        .filter(|c| !c.eq_ignore_ascii_case(b"identity"));
    let Some(first) = codings.next() else {
        return Ok(Encoding::Identity);
    };
    if codings.next().is_some() {
        return Err(Skip::StackedEncoding);
    }
    if first.eq_ignore_ascii_case(b"gzip") || first.eq_ignore_ascii_case(b"x-gzip") {
        Ok(Encoding::Gzip)
    } else if first.eq_ignore_ascii_case(b"deflate") {
        Ok(Encoding::Deflate)
    } else {
        Err(Skip::UnsupportedEncoding)
    }
}

/// A browser would render the response as HTML or XHTML (see [`eligible`]).
fn is_html(resp: &ResponseHead) -> bool {
    let mut essence = None;
    for value in list(resp.headers_named(b"content-type")) {
        if let Some((t, s)) = media_type(value) {
            if !(t == b"*" && s == b"*") {
                essence = Some((t, s));
            }
        }
    }
    essence.is_some_and(|(t, s)| is_html_type(t, s))
}

fn is_html_type(t: &[u8], s: &[u8]) -> bool {
    (t.eq_ignore_ascii_case(b"text") && s.eq_ignore_ascii_case(b"html"))
        || (t.eq_ignore_ascii_case(b"application") && s.eq_ignore_ascii_case(b"xhtml+xml"))
}

/// `type/subtype` of a media type (parameters ignored), both tokens.
fn media_type(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let essence = trim(v.split(|&b| b == b';').next().unwrap_or_default());
    let slash = essence.iter().position(|&b| b == b'/')?;
    let (t, s) = (&essence[..slash], &essence[slash + 1..]);
    (is_token(t) && is_token(s)).then_some((t, s))
}

/// A Content-Disposition value that means "download": any disposition type
/// other than `inline`, or a value that does not start with a type token.
fn is_download(v: &[u8]) -> bool {
    let kind = trim(params(v).next().unwrap_or_default());
    if kind.is_empty() && trim(v).is_empty() {
        return false;
    }
    !(is_token(kind) && kind.eq_ignore_ascii_case(b"inline"))
}

/// For a request that may get an injectable HTML page, the `Accept-Encoding`
/// to send the origin in place of the client's: what we can decode (gzip,
/// deflate, identity) and the client accepts ([`client_accepts`]), so the
/// origin never answers such a request in br or zstd. Values:
/// `"gzip, deflate"`, `"gzip"`, `"deflate"`, `"identity"`, and the first
/// three with `", identity;q=0"` appended when the client refuses identity.
///
/// "May get an injectable page": a GET (or a HEAD, whose headers must
/// mirror the GET's) without `HX-Request`, whose
/// `Sec-Fetch-Dest` is absent or `document`, and which either has
/// `Sec-Fetch-Dest: document` or an `Accept` naming `text/html` or
/// `application/xhtml+xml` with a non-zero q (`*/*` does not count).
///
/// `None`: leave the client's header as it is (also when absent), because
/// the request cannot get an injectable page, or because the client accepts
/// none of the codings we decode (its page then passes through untouched).
pub fn narrow_accept_encoding(req: &RequestHead) -> Option<&'static str> {
    if !matches!(req.method(), Method::Get | Method::Head) || !may_get_document(req) {
        return None;
    }
    let gzip = client_accepts(req, Encoding::Gzip);
    let deflate = client_accepts(req, Encoding::Deflate);
    let identity = client_accepts(req, Encoding::Identity);
    Some(match (gzip, deflate, identity) {
        (true, true, true) => "gzip, deflate",
        (true, false, true) => "gzip",
        (false, true, true) => "deflate",
        (false, false, true) => "identity",
        (true, true, false) => "gzip, deflate, identity;q=0",
        (true, false, false) => "gzip, identity;q=0",
        (false, true, false) => "deflate, identity;q=0",
        (false, false, false) => return None,
    })
}

/// A request that may get an injectable page (method aside): no
/// `HX-Request`, `Sec-Fetch-Dest` absent or `document`, and either
/// `Sec-Fetch-Dest: document` or an `Accept` naming `text/html` or
/// `application/xhtml+xml` with a non-zero q (`*/*` does not count).
fn may_get_document(req: &RequestHead) -> bool {
    if !is_document_request(req) {
        return false;
    }
    let dest_document = req.header(b"sec-fetch-dest").is_some();
    dest_document
        || list(req.headers_named(b"accept")).any(|range| {
            let mut parts = params(range);
            let Some((t, s)) = parts.next().and_then(media_type) else {
                return false;
            };
            is_html_type(t, s) && weight(parts).is_some_and(|q| q > 0)
        })
}

/// Whether `resp` is a 304 that revalidates a page this proxy would have
/// injected, so that it must carry the same head edits as the injected 200
/// (a cache updates its stored, injected copy from the 304's fields: a
/// strong `ETag`, a missing `Vary` or `private`, or the origin's unhashed
/// CSP would be wrong for those bytes).
///
/// A 304 usually has no `Content-Type` or `Content-Encoding`, so the
/// request decides: a GET or HEAD that may get an injectable page (see
/// [`narrow_accept_encoding`]), and a 304 whose own fields do not rule the
/// page out (a non-HTML `Content-Type`, `Content-Range`, a download
/// `Content-Disposition`, `no-transform`). Errs toward the edits: on a
/// page that was not injected they only weaken a validator and narrow who
/// may cache it.
pub fn revalidates_injectable(req: &RequestHead, resp: &ResponseHead) -> bool {
    resp.status() == 304
        && matches!(req.method(), Method::Get | Method::Head)
        && may_get_document(req)
        && (resp.header(b"content-type").is_none() || is_html(resp))
        && resp.header(b"content-range").is_none()
        && !resp.headers_named(b"content-disposition").any(is_download)
        && !directives(resp.headers_named(b"cache-control"))
            .any(|d| d.name.eq_ignore_ascii_case(b"no-transform"))
}

/// Whether the client accepts a body in `enc`, per its `Accept-Encoding`
/// (all fields, RFC 9110 §12.5.3):
///
/// * an entry naming the coding (`x-gzip` counts as `gzip`) decides: q > 0
///   accepts; if several entries name it, any `q=0` refuses;
/// * otherwise a `*` entry decides the same way;
/// * otherwise `identity` is accepted and the others are not.
///
/// Without an `Accept-Encoding` field only identity is accepted. (RFC 9110
/// says any coding is then acceptable; clients that send no field are mostly
/// tools that cannot decode, and origins answer them with identity.) An
/// empty field is "identity only" per the RFC too. An entry whose `q` is
/// malformed is ignored.
pub fn client_accepts(req: &RequestHead, enc: Encoding) -> bool {
    let mut fields = req.headers_named(b"accept-encoding").peekable();
    if fields.peek().is_none() {
        return enc == Encoding::Identity;
    }
    let (mut named, mut star): (Option<bool>, Option<bool>) = (None, None);
    for entry in list(fields) {
        let mut parts = params(entry);
        let coding = trim(parts.next().unwrap_or_default());
        let Some(q) = weight(parts) else { continue };
        let accepted = q > 0;
        let slot = if coding == b"*" {
            &mut star
        } else if names_coding(coding, enc) {
            &mut named
        } else {
            continue;
        };
        *slot = Some(slot.unwrap_or(true) && accepted);
    }
    named.or(star).unwrap_or(enc == Encoding::Identity)
}

fn names_coding(coding: &[u8], enc: Encoding) -> bool {
    match enc {
        Encoding::Identity => coding.eq_ignore_ascii_case(b"identity"),
        Encoding::Gzip => {
            coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip")
        }
        Encoding::Deflate => coding.eq_ignore_ascii_case(b"deflate"),
    }
}

/// Whether a shared cache may store `resp` and hand it to other clients, in
/// which case the injected config must carry no per-client token or
/// pageview id. What is implemented (issue 3's list, read conservatively):
///
/// True when at least one of
/// * Cache-Control `public`;
/// * Cache-Control `s-maxage` (any value: even `0` is stored and served
///   after revalidation);
/// * Cache-Control `max-age` with a value > 0 (delta-seconds, quoted or not;
///   too large to represent counts as large; malformed is ignored);
/// * an `Expires` (the first field) that parses as an IMF-fixdate later than
///   the response's `Date` (if that parses) or else `now_unix`; an Expires
///   that does not parse (`0`, obsolete formats) is in the past;
/// * a `Last-Modified` field (caches may give it heuristic freshness);
///
/// and none of
/// * Cache-Control `private` or `no-cache` without a field list (the forms
///   with a list, `private="Set-Cookie"`, only restrict those fields, so the
///   rest stays reusable and they do not count);
/// * Cache-Control `no-store`;
/// * a `Set-Cookie` field;
/// * `Vary: *` (never reusable; added to the issue's list).
///
/// Cache-Control directives from every field count, names case-insensitive.
/// Not covered: validators alone (`ETag` with `max-age=0`/`no-cache` lets a
/// cache serve its stored copy after a 304) and caches that ignore the
/// headers; see the report accompanying this module.
pub fn shared_cacheable(resp: &ResponseHead, now_unix: u64) -> bool {
    let (mut storable, mut barred) = (false, false);
    for d in directives(resp.headers_named(b"cache-control")) {
        let is = |n: &[u8]| d.name.eq_ignore_ascii_case(n);
        if is(b"public") || is(b"s-maxage") {
            storable = true;
        } else if is(b"max-age") {
            storable |= d
                .value
                .is_some_and(|v| delta_seconds_positive(v) == Some(true));
        } else if is(b"no-store") || ((is(b"private") || is(b"no-cache")) && d.value.is_none()) {
            barred = true;
        }
    }
    if let Some(expires) = resp.header(b"expires") {
        let reference = resp
            .header(b"date")
            .and_then(parse_imf_fixdate)
            .unwrap_or(now_unix);
        storable |= parse_imf_fixdate(expires).is_some_and(|t| t > reference);
    }
    storable |= resp.header(b"last-modified").is_some();
    barred |= resp.header(b"set-cookie").is_some();
    barred |= list(resp.headers_named(b"vary")).any(|v| v == b"*");
    storable && !barred
}

/// `Some(true)` for delta-seconds > 0, `Some(false)` for 0, `None` if not
/// `1*DIGIT`. Never overflows: only the digits matter.
fn delta_seconds_positive(v: &[u8]) -> Option<bool> {
    let v = trim(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().any(|&b| b != b'0'))
}

const DAY_NAMES: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Parses an IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37
/// GMT`, into Unix seconds; surrounding whitespace is allowed. The day name
/// must be one of the seven but is not checked against the date; a second of
/// 60 is accepted (leap second). Dates before 1970 give 0. The obsolete
/// RFC 850 and asctime forms are not accepted.
pub fn parse_imf_fixdate(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.len() != 29 {
        return None;
    }
    let num = |a: usize, b: usize| -> Option<u32> {
        let s = v.get(a..b)?;
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let at = |a: usize, b: usize, lit: &[u8]| v.get(a..b) == Some(lit);
    if !DAY_NAMES.iter().any(|d| at(0, 3, d))
        || !at(3, 5, b", ")
        || !at(7, 8, b" ")
        || !at(11, 12, b" ")
        || !at(16, 17, b" ")
        || !at(19, 20, b":")
        || !at(22, 23, b":")
        || !at(25, 29, b" GMT")
    {
        return None;
    }
    let day = num(5, 7)?;
    let month = MONTHS.iter().position(|m| at(8, 11, m))? as u32 + 1;
    let year = num(12, 16)?;
    let (hour, min, sec) = (num(17, 19)?, num(20, 22)?, num(23, 25)?);
    if day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + min * 60 + sec);
    Some(u64::try_from(secs).unwrap_or(0))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (negative before),
/// counting in 400-year eras of years that start on 1 March.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---- header syntax ---------------------------------------------------------

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| is_tchar(b))
}

/// Splits `v` at every `sep` outside a quoted string.
struct Split<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted {
                match b {
                    b'\\' => escaped = true,
                    b'"' => quoted = false,
                    _ => {}
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == self.sep {
                self.rest = rest.get(i + 1..);
                return rest.get(..i);
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// The non-empty, trimmed elements of every field's comma list.
fn list<'a>(fields: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    fields
        .flat_map(|v| Split {
            rest: Some(v),
            sep: b',',
        })
        .map(trim)
        .filter(|e| !e.is_empty())
}

/// The `;`-separated parts of one list element (the first is the value).
fn params(element: &[u8]) -> Split<'_> {
    Split {
        rest: Some(element),
        sep: b';',
    }
}

/// The weight of a list element from its parameters after the value, in
/// thousandths: 1000 when there is no `q`, `None` when `q` is malformed.
fn weight<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<u16> {
    for p in params {
        let p = trim(p);
        let Some(eq) = p.iter().position(|&b| b == b'=') else {
            continue;
        };
        if trim(&p[..eq]).eq_ignore_ascii_case(b"q") {
            return qvalue(trim(&p[eq + 1..]));
        }
    }
    Some(1000)
}

/// RFC 9110 §12.4.2 `qvalue`: `0[.ddd]` or `1[.000]`, in thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// One Cache-Control directive: its name and, if it has one, its value
/// (quotes removed, escapes kept).
struct Directive<'a> {
    name: &'a [u8],
    value: Option<&'a [u8]>,
}

/// Every directive of every Cache-Control field.
fn directives<'a>(fields: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = Directive<'a>> {
    list(fields).map(|d| match d.iter().position(|&b| b == b'=') {
        Some(eq) => {
            let v = trim(&d[eq + 1..]);
            let v = match v {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            };
            Directive {
                name: trim(&d[..eq]),
                value: Some(v),
            }
        }
        None => Directive {
            name: d,
            value: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::write_http_date;
    use crate::http::head::{parse_request, parse_response};

    /// A request with `method` and the header lines in `headers`
    /// (`"Name: value"`, joined by `\n`).
    fn req_m(method: &str, headers: &str) -> RequestHead {
        let mut raw = format!("{method} / HTTP/1.1\r\nHost: example.com\r\n");
        for line in headers.lines().filter(|l| !l.is_empty()) {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        parse_request(raw.as_bytes()).unwrap().unwrap()
    }

    fn req(headers: &str) -> RequestHead {
        req_m("GET", headers)
    }

    fn resp(status: u16, headers: &str) -> ResponseHead {
        let mut raw = format!("HTTP/1.1 {status} X\r\n");
        for line in headers.lines().filter(|l| !l.is_empty()) {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        parse_response(raw.as_bytes(), Method::Get)
            .unwrap()
            .unwrap()
    }

    fn html(extra: &str) -> ResponseHead {
        resp(
            200,
            &format!("Content-Type: text/html; charset=utf-8\nContent-Length: 10\n{extra}"),
        )
    }

    fn doc_req() -> RequestHead {
        req("Accept: text/html\nSec-Fetch-Dest: document")
    }

    #[test]
    fn html_get_200_is_eligible() {
        assert_eq!(eligible(&doc_req(), &html("")), Ok(Encoding::Identity));
        assert_eq!(eligible(&req(""), &html("")), Ok(Encoding::Identity));
    }

    #[test]
    fn only_get() {
        for m in [
            "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "PURGE",
        ] {
            assert_eq!(eligible(&req_m(m, ""), &html("")), Err(Skip::NotGet), "{m}");
        }
        // HEAD of an injectable page is told apart for its Content-Length.
        let head = req_m("HEAD", "Accept: text/html");
        assert_eq!(
            eligible_except_method(&head, &html("")),
            Ok(Encoding::Identity)
        );
        assert_eq!(
            eligible_except_method(&head, &html("Content-Encoding: gzip")),
            Ok(Encoding::Gzip)
        );
        assert_eq!(
            eligible_except_method(&head, &resp(404, "")),
            Err(Skip::Status)
        );
        // The first reason wins: HEAD of a 404 is NotGet.
        assert_eq!(
            eligible(&req_m("HEAD", ""), &resp(404, "")),
            Err(Skip::NotGet)
        );
    }

    #[test]
    fn a_304_revalidating_an_injectable_page() {
        let not_modified = |extra: &str| resp(304, &format!("ETag: \"a\"\n{extra}"));
        let yes = [
            (doc_req(), not_modified("")),
            (req("Accept: text/html"), not_modified("")),
            (req("Sec-Fetch-Dest: document"), not_modified("")),
            (req_m("HEAD", "Accept: text/html"), not_modified("")),
            (
                req("Accept: text/html"),
                not_modified("Content-Type: text/html"),
            ),
        ];
        for (q, r) in &yes {
            assert!(revalidates_injectable(q, r));
        }
        let no = [
            (req(""), not_modified("")),
            (req("Accept: */*"), not_modified("")),
            (req("Accept: text/html;q=0"), not_modified("")),
            (
                req("Accept: text/html\nSec-Fetch-Dest: image"),
                not_modified(""),
            ),
            (req("Accept: text/html\nHX-Request: true"), not_modified("")),
            (req_m("POST", "Accept: text/html"), not_modified("")),
            (
                req("Accept: text/html"),
                not_modified("Content-Type: image/png"),
            ),
            (
                req("Accept: text/html"),
                not_modified("Cache-Control: no-transform"),
            ),
            (
                req("Accept: text/html"),
                not_modified("Content-Disposition: attachment"),
            ),
            (req("Accept: text/html"), html("")),
            (req("Accept: text/html"), resp(204, "")),
        ];
        for (q, r) in &no {
            assert!(!revalidates_injectable(q, r));
        }
    }

    #[test]
    fn only_200() {
        for s in [201, 203, 204, 206, 301, 302, 304, 404, 500, 503] {
            let r = resp(s, "Content-Type: text/html\nContent-Length: 0");
            assert_eq!(eligible(&req(""), &r), Err(Skip::Status), "{s}");
        }
    }

    #[test]
    fn content_type() {
        let ok = [
            "Content-Type: text/html",
            "Content-Type: TEXT/HTML",
            "Content-Type: Text/Html;Charset=UTF-8",
            "Content-Type: text/html ; charset=\"a;b,c\"",
            "Content-Type: text/html;",
            "Content-Type: application/xhtml+xml",
            "Content-Type: Application/XHTML+XML; charset=utf-8",
            // Several values: the last valid non-*/* one counts (Fetch).
            "Content-Type: text/plain\nContent-Type: text/html",
            "Content-Type: text/plain, text/html",
            "Content-Type: text/html, */*",
            "Content-Type: text/html, nonsense",
        ];
        for h in ok {
            let r = resp(200, &format!("{h}\nContent-Length: 1"));
            assert_eq!(eligible(&req(""), &r), Ok(Encoding::Identity), "{h}");
        }
        let not = [
            "",
            "Content-Type: text/plain",
            "Content-Type: text/htmlx",
            "Content-Type: text/xhtml",
            "Content-Type: application/xml",
            "Content-Type: image/svg+xml",
            "Content-Type: application/json",
            "Content-Type: text/ html",
            "Content-Type: text /html",
            "Content-Type: text/html garbage",
            "Content-Type: html",
            "Content-Type: /html",
            "Content-Type: text/",
            "Content-Type: */*",
            "Content-Type: text/html, text/plain",
            "Content-Type: text/html\nContent-Type: application/octet-stream",
            "Content-Type:",
        ];
        for h in not {
            let r = resp(200, &format!("{h}\nContent-Length: 1"));
            assert_eq!(eligible(&req(""), &r), Err(Skip::NotHtml), "{h}");
        }
    }

    #[test]
    fn content_range() {
        let r = html("Content-Range: bytes 0-9/100");
        assert_eq!(eligible(&req(""), &r), Err(Skip::ContentRange));
    }

    #[test]
    fn content_disposition() {
        for h in [
            "attachment",
            "ATTACHMENT; filename=\"a.html\"",
            "attachment;filename*=UTF-8''a.html",
            "form-data; name=x",
            "something-else",
            "filename=a.html",
            "\"inline\"",
            "; filename=a.html",
        ] {
            let r = html(&format!("Content-Disposition: {h}"));
            assert_eq!(eligible(&req(""), &r), Err(Skip::Attachment), "{h}");
        }
        for h in ["inline", "INLINE; filename=\"a.html\"", " inline ;x=y", ""] {
            let r = html(&format!("Content-Disposition: {h}"));
            assert_eq!(eligible(&req(""), &r), Ok(Encoding::Identity), "{h}");
        }
        // One download field among several is enough.
        let r = html("Content-Disposition: inline\nContent-Disposition: attachment");
        assert_eq!(eligible(&req(""), &r), Err(Skip::Attachment));
    }

    #[test]
    fn no_transform() {
        for h in [
            "Cache-Control: no-transform",
            "Cache-Control: public, No-Transform",
            "Cache-Control: max-age=60\nCache-Control: NO-TRANSFORM",
            "Cache-Control: private=\"a, b\", no-transform",
            "Cache-Control: no-transform=1",
        ] {
            assert_eq!(eligible(&req(""), &html(h)), Err(Skip::NoTransform), "{h}");
        }
        for h in [
            "Cache-Control: max-age=60",
            "Cache-Control: private=\"no-transform\"",
            "Cache-Control: x-no-transform, no-transformx",
            "Pragma: no-transform",
        ] {
            assert_eq!(eligible(&req(""), &html(h)), Ok(Encoding::Identity), "{h}");
        }
    }

    #[test]
    fn not_document() {
        for h in [
            "Sec-Fetch-Dest: iframe",
            "Sec-Fetch-Dest: empty",
            "Sec-Fetch-Dest: script",
            "Sec-Fetch-Dest:",
            "Sec-Fetch-Dest: document\nSec-Fetch-Dest: empty",
            "HX-Request: true",
            "hx-request: false",
            "Sec-Fetch-Dest: document\nHX-Request: true",
        ] {
            assert_eq!(eligible(&req(h), &html("")), Err(Skip::NotDocument), "{h}");
        }
        for h in ["Sec-Fetch-Dest: document", "sec-fetch-dest: Document", ""] {
            assert_eq!(eligible(&req(h), &html("")), Ok(Encoding::Identity), "{h}");
        }
    }

    #[test]
    fn encodings() {
        let cases: &[(&str, Result<Encoding, Skip>)] = &[
            ("Content-Encoding: gzip", Ok(Encoding::Gzip)),
            ("Content-Encoding: GZIP", Ok(Encoding::Gzip)),
            ("Content-Encoding: x-gzip", Ok(Encoding::Gzip)),
            ("Content-Encoding: deflate", Ok(Encoding::Deflate)),
            ("Content-Encoding: identity", Ok(Encoding::Identity)),
            ("Content-Encoding:", Ok(Encoding::Identity)),
            ("Content-Encoding: identity, gzip", Ok(Encoding::Gzip)),
            ("Content-Encoding: gzip, gzip", Err(Skip::StackedEncoding)),
            (
                "Content-Encoding: gzip\nContent-Encoding: gzip",
                Err(Skip::StackedEncoding),
            ),
            (
                "Content-Encoding: deflate, gzip",
                Err(Skip::StackedEncoding),
            ),
            ("Content-Encoding: br, gzip", Err(Skip::StackedEncoding)),
            ("Content-Encoding: br", Err(Skip::UnsupportedEncoding)),
            ("Content-Encoding: zstd", Err(Skip::UnsupportedEncoding)),
            ("Content-Encoding: compress", Err(Skip::UnsupportedEncoding)),
            (
                "Content-Encoding: x-compress",
                Err(Skip::UnsupportedEncoding),
            ),
            ("Content-Encoding: dcb", Err(Skip::UnsupportedEncoding)),
        ];
        for (h, want) in cases {
            assert_eq!(eligible(&req(""), &html(h)), *want, "{h}");
        }
        // A transfer coding left on the body after de-chunking.
        let r = resp(
            200,
            "Content-Type: text/html\nTransfer-Encoding: gzip, chunked",
        );
        assert_eq!(eligible(&req(""), &r), Err(Skip::UnsupportedEncoding));
        let r = resp(200, "Content-Type: text/html\nTransfer-Encoding: chunked");
        assert_eq!(eligible(&req(""), &r), Ok(Encoding::Identity));
    }

    #[test]
    fn skip_labels() {
        let names: Vec<&str> = Skip::ALL.iter().map(Skip::as_str).collect();
        assert_eq!(
            names,
            [
                "not_get",
                "status",
                "not_html",
                "content_range",
                "attachment",
                "no_transform",
                "not_document",
                "stacked_encoding",
                "unsupported_encoding"
            ]
        );
        assert_eq!(Encoding::Gzip.as_str(), "gzip");
        assert_eq!(Encoding::Deflate.as_str(), "deflate");
        assert_eq!(Encoding::Identity.as_str(), "identity");
    }

    #[test]
    fn accept_encoding_q_values() {
        use Encoding::*;
        // (header lines, gzip, deflate, identity)
        let cases: &[(&str, bool, bool, bool)] = &[
            ("", false, false, true),
            ("Accept-Encoding:", false, false, true),
            ("Accept-Encoding: gzip, deflate, br, zstd", true, true, true),
            ("Accept-Encoding: gzip", true, false, true),
            ("Accept-Encoding: GZIP", true, false, true),
            ("Accept-Encoding: x-gzip", true, false, true),
            ("Accept-Encoding: deflate", false, true, true),
            ("Accept-Encoding: br", false, false, true),
            ("Accept-Encoding: *", true, true, true),
            ("Accept-Encoding: *;q=0", false, false, false),
            ("Accept-Encoding: *;q=0, identity", false, false, true),
            ("Accept-Encoding: *;q=0, gzip;q=0.5", true, false, false),
            ("Accept-Encoding: *, gzip;q=0", false, true, true),
            ("Accept-Encoding: identity;q=0", false, false, false),
            ("Accept-Encoding: gzip, identity;q=0", true, false, false),
            ("Accept-Encoding: gzip;q=0", false, false, true),
            ("Accept-Encoding: gzip;q=0.0", false, false, true),
            ("Accept-Encoding: gzip;q=0.000", false, false, true),
            ("Accept-Encoding: gzip;q=0.001", true, false, true),
            ("Accept-Encoding: gzip;q=1", true, false, true),
            ("Accept-Encoding: gzip;q=1.000", true, false, true),
            ("Accept-Encoding: gzip ; Q=0.5", true, false, true),
            ("Accept-Encoding: gzip;q=0, x-gzip", false, false, true),
            ("Accept-Encoding: gzip, gzip;q=0", false, false, true),
            // Malformed weights: the entry is ignored.
            ("Accept-Encoding: gzip;q=2", false, false, true),
            ("Accept-Encoding: gzip;q=0.0001", false, false, true),
            ("Accept-Encoding: gzip;q=abc", false, false, true),
            ("Accept-Encoding: gzip;q=1.5, deflate", false, true, true),
            // Several fields form one list.
            (
                "Accept-Encoding: gzip\nAccept-Encoding: deflate",
                true,
                true,
                true,
            ),
            (
                "Accept-Encoding: gzip\nAccept-Encoding: identity;q=0",
                true,
                false,
                false,
            ),
            ("Accept-Encoding: ,, gzip ,", true, false, true),
        ];
        for &(h, g, d, i) in cases {
            let r = req(h);
            assert_eq!(client_accepts(&r, Gzip), g, "gzip: {h}");
            assert_eq!(client_accepts(&r, Deflate), d, "deflate: {h}");
            assert_eq!(client_accepts(&r, Identity), i, "identity: {h}");
        }
    }

    #[test]
    fn narrowing_for_html_requests() {
        let nav = "Accept: text/html,application/xhtml+xml,*/*;q=0.8\nSec-Fetch-Dest: document";
        let cases: &[(&str, Option<&str>)] = &[
            (
                "Accept-Encoding: gzip, deflate, br, zstd",
                Some("gzip, deflate"),
            ),
            ("Accept-Encoding: gzip, br", Some("gzip")),
            ("Accept-Encoding: deflate;q=0.5, br", Some("deflate")),
            ("Accept-Encoding: br, zstd", Some("identity")),
            ("", Some("identity")),
            ("Accept-Encoding:", Some("identity")),
            ("Accept-Encoding: *", Some("gzip, deflate")),
            ("Accept-Encoding: x-gzip", Some("gzip")),
            ("Accept-Encoding: gzip;q=0, deflate", Some("deflate")),
            (
                "Accept-Encoding: *;q=0, gzip, deflate",
                Some("gzip, deflate, identity;q=0"),
            ),
            (
                "Accept-Encoding: gzip, identity;q=0",
                Some("gzip, identity;q=0"),
            ),
            (
                "Accept-Encoding: deflate, identity;q=0",
                Some("deflate, identity;q=0"),
            ),
            ("Accept-Encoding: br, identity;q=0", None),
        ];
        for &(h, want) in cases {
            let r = req(&format!("{nav}\n{h}"));
            assert_eq!(narrow_accept_encoding(&r), want, "{h}");
        }
    }

    #[test]
    fn narrowing_only_for_requests_that_may_get_html() {
        let ae = "Accept-Encoding: gzip, br";
        let some = [
            "Accept: text/html",
            "Accept: TEXT/HTML;q=0.9",
            "Accept: image/webp, text/html;level=1",
            "Accept: application/xhtml+xml",
            "Sec-Fetch-Dest: document",
            "Sec-Fetch-Dest: document\nAccept: */*",
            "Accept: text/html;q=0\nAccept: text/html",
        ];
        for h in some {
            assert_eq!(
                narrow_accept_encoding(&req(&format!("{h}\n{ae}"))),
                Some("gzip"),
                "{h}"
            );
        }
        let none = [
            "",
            "Accept: */*",
            "Accept: image/avif,image/webp,*/*",
            "Accept: text/*",
            "Accept: text/html;q=0",
            "Accept: text/html;q=0.000",
            "Accept: text/htmlx",
            "Accept: text/html\nSec-Fetch-Dest: image",
            "Accept: text/html\nSec-Fetch-Dest: iframe",
            "Accept: text/html\nHX-Request: true",
            "Sec-Fetch-Dest: empty",
        ];
        for h in none {
            assert_eq!(
                narrow_accept_encoding(&req(&format!("{h}\n{ae}"))),
                None,
                "{h}"
            );
        }
        for m in ["POST", "OPTIONS"] {
            let r = req_m(m, &format!("Accept: text/html\n{ae}"));
            assert_eq!(narrow_accept_encoding(&r), None, "{m}");
        }
        // A HEAD is asked as its GET is (its head mirrors the GET's).
        let r = req_m("HEAD", &format!("Accept: text/html\n{ae}"));
        assert_eq!(
            narrow_accept_encoding(&r),
            narrow_accept_encoding(&req(&format!("Accept: text/html\n{ae}")))
        );
    }

    const NOW: u64 = 1_750_000_000; // 2025-06-15

    fn date(unix: u64) -> String {
        let mut v = Vec::new();
        write_http_date(&mut v, unix);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn shared_cacheable_positive_signals() {
        let later = date(NOW + 3600);
        let earlier = date(NOW - 3600);
        let yes = [
            "Cache-Control: public".to_string(),
            "Cache-Control: PUBLIC".to_string(),
            "Cache-Control: s-maxage=600".to_string(),
            "Cache-Control: s-maxage=0".to_string(),
            "Cache-Control: max-age=60".to_string(),
            "Cache-Control: Max-Age=\"60\"".to_string(),
            "Cache-Control: max-age=99999999999999999999999".to_string(),
            "Cache-Control: max-age=0, public".to_string(),
            "Cache-Control: no-transform\nCache-Control: max-age=5".to_string(),
            format!("Expires: {later}"),
            format!("Expires: {later}\nDate: {earlier}"),
            "Last-Modified: Tue, 15 Nov 1994 12:45:26 GMT".to_string(),
            "Last-Modified: garbage".to_string(),
            "Cache-Control: public, no-cache=\"Set-Cookie\"".to_string(),
            "Cache-Control: public, private=\"X-Token\"".to_string(),
            "Cache-Control: public\nVary: Accept-Encoding, Cookie".to_string(),
        ];
        for h in &yes {
            assert!(shared_cacheable(&html(h), NOW), "{h}");
        }
        let no = [
            String::new(),
            "Cache-Control: max-age=0".to_string(),
            "Cache-Control: max-age=abc".to_string(),
            "Cache-Control: max-age=-5".to_string(),
            "Cache-Control: max-age".to_string(),
            "Cache-Control: must-revalidate, proxy-revalidate".to_string(),
            "ETag: \"abc\"".to_string(),
            format!("Expires: {earlier}"),
            format!("Expires: {}", date(NOW)),
            "Expires: 0".to_string(),
            "Expires: -1".to_string(),
            "Expires: Sunday, 06-Nov-94 08:49:37 GMT".to_string(),
            // Future for us, but not after the origin's Date.
            format!("Expires: {later}\nDate: {}", date(NOW + 7200)),
        ];
        for h in &no {
            assert!(!shared_cacheable(&html(h), NOW), "{h}");
        }
    }

    #[test]
    fn shared_cacheable_barred() {
        let later = date(NOW + 3600);
        for bar in [
            "Cache-Control: private",
            "Cache-Control: PRIVATE",
            "Cache-Control: no-store",
            "Cache-Control: no-cache",
            "Cache-Control: No-Cache",
            "Cache-Control: no-store=\"x\"",
            "Set-Cookie: a=b",
            "Vary: *",
            "Vary: Accept, *",
        ] {
            for pos in [
                "Cache-Control: public".to_string(),
                "Cache-Control: s-maxage=60".to_string(),
                format!("Expires: {later}"),
                "Last-Modified: Tue, 15 Nov 1994 12:45:26 GMT".to_string(),
            ] {
                let r = html(&format!("{pos}\n{bar}"));
                assert!(!shared_cacheable(&r, NOW), "{pos} + {bar}");
                // In a separate Cache-Control field too.
                let r = html(&format!("{bar}\n{pos}"));
                assert!(!shared_cacheable(&r, NOW), "{bar} + {pos}");
            }
        }
        // In the same field as the positive directive.
        let r = html("Cache-Control: public, max-age=60, private");
        assert!(!shared_cacheable(&r, NOW));
    }

    #[test]
    fn imf_fixdate() {
        assert_eq!(
            parse_imf_fixdate(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_imf_fixdate(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_imf_fixdate(b" Fri, 31 Dec 9999 23:59:59 GMT "),
            Some(253_402_300_799)
        );
        assert_eq!(
            parse_imf_fixdate(b"Thu, 29 Feb 2024 12:00:00 GMT"),
            Some(1_709_208_000)
        );
        assert_eq!(
            parse_imf_fixdate(b"Sat, 31 Dec 2016 23:59:60 GMT"),
            Some(1_483_228_800)
        );
        // Before 1970: in the past.
        assert_eq!(parse_imf_fixdate(b"Wed, 31 Dec 1969 23:59:59 GMT"), Some(0));
        assert_eq!(parse_imf_fixdate(b"Sat, 01 Jan 0000 00:00:00 GMT"), Some(0));
        for bad in [
            &b""[..],
            b"0",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37 gmt",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 nov 1994 08:49:37 GMT",
            b"Xyz, 06 Nov 1994 08:49:37 GMT",
            b"Sun,  06 Nov 1994 08:49:37 GMT",
            b"Sun, 00 Nov 1994 08:49:37 GMT",
            b"Sun, 31 Nov 1994 08:49:37 GMT",
            b"Wed, 29 Feb 2023 08:49:37 GMT",
            b"Sun, 29 Feb 2100 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 06 Nov 1994 08:49:61 GMT",
            b"Sun, 06 Nov 19a4 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08-49-37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMTX",
        ] {
            assert_eq!(
                parse_imf_fixdate(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_imf_fixdate(b"Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
    }

    #[test]
    fn imf_fixdate_roundtrips_with_the_writer() {
        // clock.rs formats dates with its own civil-date arithmetic.
        let mut t = 0u64;
        while t < 253_402_300_799 {
            let s = date(t);
            assert_eq!(parse_imf_fixdate(s.as_bytes()), Some(t), "{s}");
            t += 7_919_993; // about 92 days, prime, so times of day vary
        }
        for t in [86_399, 86_400, 951_782_399, 951_868_800, 4_107_542_400] {
            assert_eq!(parse_imf_fixdate(date(t).as_bytes()), Some(t));
        }
    }

    #[test]
    fn list_syntax() {
        let parts: Vec<&[u8]> =
            list([&b"a, \"b,c\" ,, d=\"x\\\",y\", e"[..]].into_iter()).collect();
        assert_eq!(parts, [&b"a"[..], b"\"b,c\"", b"d=\"x\\\",y\"", b"e"]);
        // An unterminated quote runs to the end.
        let parts: Vec<&[u8]> = list([&b"a, \"b, c"[..]].into_iter()).collect();
        assert_eq!(parts, [&b"a"[..], b"\"b, c"]);
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0."), Some(0));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"0.05"), Some(50));
        assert_eq!(qvalue(b"1."), Some(1000));
        assert_eq!(qvalue(b"1.0"), Some(1000));
        for bad in [
            &b""[..],
            b".5",
            b"1.001",
            b"2",
            b"00",
            b"0.1234",
            b"0.a",
            b"-0",
        ] {
            assert_eq!(qvalue(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
