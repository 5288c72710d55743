//! Content-Security-Policy handling for the injected snippet: decide how our
//! inline tracker `<script>` is allowed by every enforced policy of a page
//! (as is, with the page's nonce, or with our hash appended to the header),
//! or that the page must be left alone. Pure and synchronous: the caller
//! hands in the `Content-Security-Policy` header values and any
//! `<meta http-equiv>` policies ([`find_meta_csps`]) and applies the
//! [`CspPlan`].
//!
//! Why it exists: a strict policy blocks an inline script that carries
//! neither a nonce nor a listed hash; GoTrack injected anyway and strict
//! sites blocked it. The rules below follow CSP Level 3 (parse a serialized
//! CSP / CSP list; "Does a source list allow all inline behavior"; "Does
//! element match source list"; the `script-src-elem` fallback list).
//!
//! Parsing (CSP3 §2.2): every header value is split on `,` into policies,
//! each policy on `;` into directives; a directive token is trimmed of ASCII
//! whitespace, skipped when empty or not ASCII, named by its first word
//! (case-insensitive), and ignored when a directive of that name came
//! earlier in the same policy. Source expressions are split on ASCII
//! whitespace; keywords are case-insensitive; nonce and hash values must
//! match the `base64-value` grammar or they are not nonces/hashes (so a nonce
//! we hand back is only `[A-Za-z0-9+/_-]` with up to two `=`: safe in an
//! HTML attribute). A policy with no directives is ignored. A meta policy is
//! one serialized policy to HTML and Firefox, but Chrome and Safari split it
//! on commas (whatwg/html#5102): both readings must allow our script.
//!
//! Decisions, per policy, on the directive governing a `<script>` element
//! (`script-src-elem`, else `script-src`, else `default-src`):
//!
//! * absent, or it allows all inline script (`'unsafe-inline'` with no nonce,
//!   no hash and no `'strict-dynamic'` in it; any of those makes browsers
//!   ignore `'unsafe-inline'`), or it already lists our hash: nothing to do.
//! * otherwise it needs our script allowed, by a nonce it lists or by our
//!   `'sha256-…'` appended to it. A script element has one nonce attribute,
//!   so one nonce is chosen: the nonce of the meta policies when any needs
//!   one (every such meta policy must list it), else the nonce listed by the
//!   most header policies that need one (ties: the first seen). Every header
//!   policy the chosen nonce does not satisfy gets the hash appended to its
//!   governing directive: adding one hash-source for our exact script text
//!   allows nothing else and removes nothing, and no `'unsafe-inline'` was in
//!   force there (it was absent or already overridden).
//! * a governing directive of a header policy that allows no script at all
//!   (`'none'` alone, or no sources) is never given our hash: browsers would
//!   then ignore `'none'` and run our script on a site that said "no
//!   scripts". Verdict: skip ([`SkipReason::ScriptNone`]).
//! * a meta policy cannot be edited safely (it is in the page's bytes, and
//!   other scripts may read it): if it needs a nonce and lists none, or two
//!   meta policies share none, the verdict is [`Action::Skip`].
//! * one case where appending would break the page: the governing directive
//!   is `default-src`, it holds `'unsafe-inline'` overridden for scripts
//!   only by `'strict-dynamic'`, and inline styles fall back to it (no
//!   `style-src`, and no `style-src-elem` or no `style-src-attr`). A hash
//!   there would switch inline styles off. Verdict: skip.
//!
//! Report-only policies are never passed in and never touched. Our other
//! script element, `<script type="application/json" id="trackgate-config">`,
//! needs nothing: HTML's "prepare the script element" returns ("No script is
//! executed, and el's type is left as null") for a type that is not a
//! JavaScript MIME type, `module` or `importmap` *before* the step that asks
//! CSP "Should element's inline behavior be blocked". A data block never
//! reaches the CSP check. A nonce on it is harmless, so the caller may put
//! the chosen nonce on both tags. (The caller must also keep `<script` and
//! `<style` out of the tracker tag's attributes, or CSP3 "Is element
//! nonceable" refuses the nonce.)
//!
//! Same-origin requests (reported, never changed): `connect-src` (else
//! `default-src`) governs the tracker's `fetch`/`sendBeacon`, `img-src`
//! (else `default-src`) the pixel. We do not know the site's host, so a list
//! allows them only with `'self'`, `*`, or a scheme source that matches an
//! https page (`https:`, `http:`, `wss:`, `ws:`; CSP3 lets `http:`/`ws:`
//! match their secure variants). trackgate runs behind TLS termination, so
//! pages are assumed to be https. A host source that happens to name the
//! site is reported as blocking: a false alarm at worst, never a missed one
//! for `'none'` or an empty list.

use sha2::{Digest, Sha256};

/// Which same-origin requests of the tracker some policy blocks. Reported in
/// the `page_served` event; the policy is left as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocked {
    /// `connect-src` (else `default-src`) blocks `fetch`/`sendBeacon` to our
    /// endpoints.
    pub connect: bool,
    /// `img-src` (else `default-src`) blocks the pixel.
    pub img: bool,
}

/// Why a page is left without the snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A meta policy blocks inline script and lists no nonce (we cannot edit
    /// it).
    MetaWithoutNonce,
    /// Two meta policies need a nonce and have none in common.
    MetaNonceConflict,
    /// Appending our hash to `default-src` would switch off the page's inline
    /// styles (see the module doc).
    HashWouldBlockStyles,
    /// A policy needs our hash but the hash handed in is not the standard
    /// base64 of a SHA-256 digest (a build bug).
    BadTrackerHash,
    /// The governing directive of a header policy is `'none'` (or an empty
    /// list): the site allows no script element at all. A hash appended
    /// there would make browsers ignore `'none'` and run our script, against
    /// the policy's plain meaning; the page is left alone.
    ScriptNone,
}

impl SkipReason {
    /// A short label for the `inject_total{result}` metric and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MetaWithoutNonce => "csp_meta_no_nonce",
            SkipReason::MetaNonceConflict => "csp_meta_nonce_conflict",
            SkipReason::HashWouldBlockStyles => "csp_hash_would_block_styles",
            SkipReason::BadTrackerHash => "csp_bad_tracker_hash",
            SkipReason::ScriptNone => "csp_script_none",
        }
    }
}

/// What to do with the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Inject our tags as they are; leave the headers.
    AsIs,
    /// Put this nonce on our script tags; leave the headers.
    UseNonce(String),
    /// Inject as is and replace the CSP headers with
    /// [`CspPlan::new_headers`].
    AddHash,
    /// Put this nonce on our script tags and replace the CSP headers with
    /// [`CspPlan::new_headers`] (some header policy does not list it).
    UseNonceAndAddHash(String),
    /// Do not inject.
    Skip(SkipReason),
}

impl Action {
    /// The nonce to put on our script tags, if any.
    pub fn nonce(&self) -> Option<&str> {
        match self {
            Action::UseNonce(n) | Action::UseNonceAndAddHash(n) => Some(n),
            _ => None,
        }
    }
}

/// The verdict of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CspPlan {
    /// What to do.
    pub action: Action,
    /// With [`Action::AddHash`] and [`Action::UseNonceAndAddHash`] only: the
    /// new values of the `Content-Security-Policy` headers, one per header
    /// passed in and in the same order, to replace them all. Every byte is
    /// the original except ` 'sha256-…'` inserted after the last source of
    /// the governing directive of each policy that needs it.
    pub new_headers: Option<Vec<Vec<u8>>>,
    /// Same-origin requests some policy blocks (always computed).
    pub blocked: Blocked,
}

/// `base64(SHA-256(text))`, standard alphabet with padding: the value of the
/// `'sha256-…'` source that allows an inline script with exactly this text
/// (what browsers compute over the UTF-8 of the script's text).
pub fn sha256_b64(text: &[u8]) -> String {
    let digest = Sha256::digest(text);
    base64_std(&digest)
}

/// Plans how our inline tracker script is allowed by every enforced policy.
///
/// `headers`: the value of every `Content-Security-Policy` response header,
/// in order (not the report-only ones). `metas`: the `content` of every
/// `<meta http-equiv="Content-Security-Policy">` in the head
/// ([`find_meta_csps`]). `tracker_sha256_b64`: [`sha256_b64`] of the
/// tracker's text.
pub fn plan(headers: &[&[u8]], metas: &[&str], tracker_sha256_b64: &str) -> CspPlan {
    let hash = tracker_sha256_b64.as_bytes();
    let hash_ok = is_sha256_b64(hash);

    let mut policies: Vec<Policy<'_>> = Vec::new();
    for (i, value) in headers.iter().enumerate() {
        parse_header(value, i, &mut policies);
    }
    for meta in metas {
        parse_meta(meta.as_bytes(), &mut policies);
    }

    let mut blocked = Blocked::default();
    for p in &policies {
        if let Some(d) = p.get("connect-src").or_else(|| p.get("default-src")) {
            blocked.connect |= !allows_same_origin(&d.sources);
        }
        if let Some(d) = p.get("img-src").or_else(|| p.get("default-src")) {
            blocked.img |= !allows_same_origin(&d.sources);
        }
    }
    let skip = |reason| CspPlan {
        action: Action::Skip(reason),
        new_headers: None,
        blocked,
    };

    // Policies that do not allow our script as things stand, with their
    // governing directive's nonces.
    let mut header_needs: Vec<(&Policy<'_>, &Directive<'_>, Vec<&[u8]>)> = Vec::new();
    let mut meta_needs: Vec<Vec<&[u8]>> = Vec::new();
    for p in &policies {
        let Some(d) = p.governing() else { continue };
        if allows_all_inline(&d.sources) || (hash_ok && lists_hash(&d.sources, hash)) {
            continue;
        }
        let nonces = nonces(&d.sources);
        if p.header.is_some() {
            header_needs.push((p, d, nonces));
        } else {
            meta_needs.push(nonces);
        }
    }

    // The candidate nonces: those every needy meta policy lists, else those
    // of the needy header policies.
    let mut candidates: Vec<&[u8]> = Vec::new();
    if let Some((first, others)) = meta_needs.split_first() {
        if meta_needs.iter().any(|n| n.is_empty()) {
            return skip(SkipReason::MetaWithoutNonce);
        }
        for n in first {
            if others.iter().all(|o| o.contains(n)) && !candidates.contains(n) {
                candidates.push(n);
            }
        }
        if candidates.is_empty() {
            return skip(SkipReason::MetaNonceConflict);
        }
    } else {
        for (_, _, ns) in &header_needs {
            for n in ns {
                if !candidates.contains(n) {
                    candidates.push(n);
                }
            }
        }
    }
    let mut nonce: Option<&[u8]> = None;
    let mut best = 0usize;
    for n in &candidates {
        let score = header_needs
            .iter()
            .filter(|(_, _, ns)| ns.contains(n))
            .count();
        if nonce.is_none() || score > best {
            nonce = Some(n);
            best = score;
        }
    }
    let nonce = nonce.map(|n| String::from_utf8_lossy(n).into_owned());

    // Header policies the nonce does not satisfy get the hash.
    let mut inserts: Vec<(usize, usize)> = Vec::new(); // (header, offset)
    for (p, d, ns) in &header_needs {
        if nonce.as_deref().is_some_and(|n| ns.contains(&n.as_bytes())) {
            continue;
        }
        if allows_no_script(&d.sources) {
            return skip(SkipReason::ScriptNone);
        }
        if !hash_ok {
            return skip(SkipReason::BadTrackerHash);
        }
        if hash_would_block_styles(p, d) {
            return skip(SkipReason::HashWouldBlockStyles);
        }
        if let Some(h) = p.header {
            inserts.push((h, d.end));
        }
    }

    let new_headers = if inserts.is_empty() {
        None
    } else {
        inserts.sort_unstable();
        let mut source = Vec::with_capacity(hash.len() + 10);
        source.extend_from_slice(b" 'sha256-");
        source.extend_from_slice(hash);
        source.push(b'\'');
        let rewritten = headers
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let mut out = Vec::with_capacity(value.len() + source.len());
                let mut copied = 0;
                for &(_, at) in inserts.iter().filter(|(h, _)| *h == i) {
                    let at = at.min(value.len());
                    out.extend_from_slice(value.get(copied..at).unwrap_or(&[]));
                    out.extend_from_slice(&source);
                    copied = at;
                }
                out.extend_from_slice(value.get(copied..).unwrap_or(&[]));
                out
            })
            .collect();
        Some(rewritten)
    };

    let action = match (nonce, new_headers.is_some()) {
        (None, false) => Action::AsIs,
        (None, true) => Action::AddHash,
        (Some(n), false) => Action::UseNonce(n),
        (Some(n), true) => Action::UseNonceAndAddHash(n),
    };
    CspPlan {
        action,
        new_headers,
        blocked,
    }
}

/// The first `<meta http-equiv="Content-Security-Policy" content="…">`
/// policy of the document's head ([`find_meta_csps`] has them all, and all
/// apply).
pub fn find_meta_csp(html: &[u8]) -> Option<String> {
    find_meta_csps(html).into_iter().next()
}

/// The `content` of every `<meta http-equiv="Content-Security-Policy">` in
/// the document's head, in order, with character references decoded.
///
/// Browsers enforce such a meta only as a child of `head`, so the scan
/// follows the HTML parser's head: it skips comments, doctype and the
/// contents of `script`, `style`, `title`, `textarea`, `noscript`,
/// `template` and the like, and stops at `</head>`, `<body`, any element
/// that cannot be in a head, or non-whitespace text (each of which ends the
/// head). Tag and attribute names and the `http-equiv` value are matched
/// case-insensitively; values may be double-, single- or unquoted.
pub fn find_meta_csps(html: &[u8]) -> Vec<String> {
    scan_head(html).metas
}

/// What [`scan_head`] found in the first bytes of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadScan {
    /// The `<meta http-equiv="Content-Security-Policy">` policies, as
    /// [`find_meta_csps`] gives them.
    pub metas: Vec<String>,
    /// The head ended within the bytes given (`</head>`, `<body`, an element
    /// that cannot be in a head, or text): more bytes cannot add a meta
    /// policy. False when the bytes end inside the head (or inside a
    /// comment, tag or raw text of it).
    pub complete: bool,
}

/// Scans the head of a document that may still be arriving: the meta
/// policies so far and whether the head is over (see [`find_meta_csps`] for
/// what ends it). A prefix of a document never reports `complete` unless the
/// whole document does, with the same metas.
pub fn scan_head(html: &[u8]) -> HeadScan {
    let mut found = Vec::new();
    let done = |found, complete| HeadScan {
        metas: found,
        complete,
    };
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if html.len() < BOM.len() && BOM.starts_with(html) {
        return done(found, false); // maybe a BOM cut short
    }
    let mut i = if html.starts_with(BOM) { 3 } else { 0 };
    while let Some(&b) = html.get(i) {
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b != b'<' {
            return done(found, true); // text: the head is over
        }
        let rest = html.get(i..).unwrap_or(&[]);
        if rest.len() < 4 && b"<!--".starts_with(rest) {
            // `<`, `<!`, `<!-` at the end: what follows decides.
            return done(found, false);
        }
        if rest.starts_with(b"<!--") {
            // `<!-->` and `<!--->` are complete (empty) comments too.
            match find(html, i + 2, b"-->") {
                Some(j) => i = j + 3,
                None => return done(found, false),
            }
            continue;
        }
        if rest.starts_with(b"<!") || rest.starts_with(b"<?") {
            match html
                .get(i + 1..)
                .and_then(|r| r.iter().position(|&c| c == b'>'))
            {
                Some(j) => i = i + 1 + j + 1,
                None => return done(found, false),
            }
            continue;
        }
        if rest.starts_with(b"</") {
            if !html.get(i + 2).is_some_and(|c| c.is_ascii_alphabetic()) {
                // `</` plus a non-letter: a bogus comment up to `>`.
                match html
                    .get(i + 2..)
                    .and_then(|r| r.iter().position(|&c| c == b'>'))
                {
                    Some(j) => i = i + 2 + j + 1,
                    None => return done(found, false),
                }
                continue;
            }
            let Some(tag) = parse_tag(html, i + 2) else {
                return done(found, false);
            };
            if matches!(tag.name.as_slice(), b"head" | b"body" | b"html" | b"br") {
                return done(found, true);
            }
            i = tag.after;
            continue;
        }
        if !html.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic()) {
            return done(found, true); // a lone `<` is text
        }
        let Some(tag) = parse_tag(html, i + 1) else {
            return done(found, false);
        };
        let name = tag.name.as_slice();
        if name == b"meta" {
            if let (Some(equiv), Some(content)) = (&tag.http_equiv, &tag.content) {
                if decode_refs(equiv).eq_ignore_ascii_case("content-security-policy") {
                    found.push(decode_refs(content));
                }
            }
        } else if RAW_IN_HEAD.contains(&name) {
            match skip_raw(html, tag.after, name) {
                Some(j) => {
                    i = j;
                    continue;
                }
                None => return done(found, false),
            }
        } else if !HEAD_ELEMENTS.contains(&name) {
            return done(found, true); // `body` or anything else that starts the body
        }
        i = tag.after;
    }
    done(found, false)
}

/// Elements that may appear before or in a head without ending it.
const HEAD_ELEMENTS: &[&[u8]] = &[
    b"html",
    b"head",
    b"base",
    b"basefont",
    b"bgsound",
    b"link",
    b"meta",
    b"title",
    b"noscript",
    b"noframes",
    b"style",
    b"script",
    b"template",
];

/// Head elements whose contents are not markup for our purpose (raw text,
/// escapable raw text, or inert).
const RAW_IN_HEAD: &[&[u8]] = &[
    b"script",
    b"style",
    b"title",
    b"noscript",
    b"noframes",
    b"template",
    b"textarea",
    b"xmp",
    b"iframe",
    b"noembed",
];

/// One start or end tag: its lowercased name, the two attributes we need,
/// and the index just past its `>`.
struct Tag {
    name: Vec<u8>,
    http_equiv: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    after: usize,
}

/// Reads a tag whose name starts at `start` (just after `<` or `</`), the
/// way the HTML tokenizer splits names and attribute values. `None` when the
/// input ends inside the tag.
fn parse_tag(html: &[u8], start: usize) -> Option<Tag> {
    let at = |j: usize| html.get(j).copied();
    let mut j = start;
    while let Some(c) = at(j) {
        if c.is_ascii_whitespace() || c == b'/' || c == b'>' {
            break;
        }
        j += 1;
    }
    let name = html.get(start..j)?.to_ascii_lowercase();
    let mut tag = Tag {
        name,
        http_equiv: None,
        content: None,
        after: 0,
    };
    loop {
        while at(j).is_some_and(|c| c.is_ascii_whitespace() || c == b'/') {
            j += 1;
        }
        let c = at(j)?;
        if c == b'>' {
            tag.after = j + 1;
            return Some(tag);
        }
        // Attribute name: the first character may be `=`.
        let name_start = j;
        j += 1;
        while let Some(c) = at(j) {
            if c.is_ascii_whitespace() || c == b'/' || c == b'>' || c == b'=' {
                break;
            }
            j += 1;
        }
        let attr = html.get(name_start..j)?.to_ascii_lowercase();
        while at(j).is_some_and(|c| c.is_ascii_whitespace()) {
            j += 1;
        }
        let mut value: &[u8] = &[];
        if at(j) == Some(b'=') {
            j += 1;
            while at(j).is_some_and(|c| c.is_ascii_whitespace()) {
                j += 1;
            }
            match at(j)? {
                q @ (b'"' | b'\'') => {
                    let len = html.get(j + 1..)?.iter().position(|&c| c == q)?;
                    value = html.get(j + 1..j + 1 + len)?;
                    j += len + 2;
                }
                b'>' => {}
                _ => {
                    let from = j;
                    while let Some(c) = at(j) {
                        if c.is_ascii_whitespace() || c == b'>' {
                            break;
                        }
                        j += 1;
                    }
                    value = html.get(from..j)?;
                }
            }
        }
        // The first of duplicate attributes wins, as in the tokenizer.
        match attr.as_slice() {
            b"http-equiv" if tag.http_equiv.is_none() => tag.http_equiv = Some(value.to_vec()),
            b"content" if tag.content.is_none() => tag.content = Some(value.to_vec()),
            _ => {}
        }
    }
}

/// The index of the `<` of the end tag `</name` (followed by whitespace,
/// `/` or `>`) at or after `from`.
fn skip_raw(html: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut k = from;
    loop {
        let j = find(html, k, b"</")?;
        let after = j + 2 + name.len();
        let matches_name = html
            .get(j + 2..after)
            .is_some_and(|n| n.eq_ignore_ascii_case(name));
        let boundary = html
            .get(after)
            .is_some_and(|&c| c.is_ascii_whitespace() || c == b'/' || c == b'>');
        if matches_name && boundary {
            return Some(j);
        }
        k = j + 2;
    }
}

/// First index at or after `from` where `needle` starts.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let tail = hay.get(from..)?;
    tail.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// An attribute value with character references decoded (numeric ones, and
/// `&amp; &lt; &gt; &quot; &apos;`), as a string (invalid UTF-8 replaced).
fn decode_refs(raw: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'&' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = raw.get(i + 1..).unwrap_or(&[]);
        if let Some((ch, used)) = char_ref(rest) {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            i += 1 + used;
        } else {
            out.push(b'&');
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The character a reference after `&` stands for, and the bytes it used.
fn char_ref(rest: &[u8]) -> Option<(char, usize)> {
    if rest.first() == Some(&b'#') {
        let hex = matches!(rest.get(1), Some(b'x' | b'X'));
        let start = if hex { 2 } else { 1 };
        let mut j = start;
        let mut code: u32 = 0;
        while let Some(&c) = rest.get(j) {
            let digit = if hex {
                (c as char).to_digit(16)
            } else {
                (c as char).to_digit(10)
            };
            let Some(d) = digit else { break };
            code = code
                .saturating_mul(if hex { 16 } else { 10 })
                .saturating_add(d);
            j += 1;
        }
        if j == start {
            return None;
        }
        if rest.get(j) == Some(&b';') {
            j += 1;
        }
        let ch = if code == 0 {
            '\u{FFFD}'
        } else {
            char::from_u32(code).unwrap_or('\u{FFFD}')
        };
        return Some((ch, j));
    }
    const NAMED: &[(&[u8], char)] = &[
        (b"amp;", '&'),
        (b"lt;", '<'),
        (b"gt;", '>'),
        (b"quot;", '"'),
        (b"apos;", '\''),
    ];
    NAMED
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .map(|(name, ch)| (*ch, name.len()))
}

/// One directive: its name as written, its source expressions, and the
/// offset in the header value just after its last non-whitespace byte
/// (where an appended source goes).
struct Directive<'a> {
    name: &'a [u8],
    sources: Vec<&'a [u8]>,
    end: usize,
}

/// One policy: the header it came from (`None`: a meta policy) and its
/// directives, first occurrence of each name only.
struct Policy<'a> {
    header: Option<usize>,
    directives: Vec<Directive<'a>>,
}

impl<'a> Policy<'a> {
    fn get(&self, name: &str) -> Option<&Directive<'a>> {
        self.directives
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name.as_bytes()))
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The directive a `<script>` element is checked against.
    fn governing(&self) -> Option<&Directive<'a>> {
        self.get("script-src-elem")
            .or_else(|| self.get("script-src"))
            .or_else(|| self.get("default-src"))
    }
}

/// Splits a header value on commas into policies (empty ones dropped).
fn parse_header<'a>(value: &'a [u8], header: usize, into: &mut Vec<Policy<'a>>) {
    let mut start = 0;
    for part in value.split(|&b| b == b',') {
        let p = parse_policy(part, start, Some(header));
        if !p.directives.is_empty() {
            into.push(p);
        }
        start += part.len() + 1;
    }
}

/// A meta policy, read both ways browsers read it: as one policy (HTML and
/// Firefox) and, when it holds commas, as a comma-separated list (Chrome and
/// Safari; whatwg/html#5102). Requiring our script to pass under both is
/// right whichever way the visitor's browser parses it.
fn parse_meta<'a>(content: &'a [u8], into: &mut Vec<Policy<'a>>) {
    let whole = parse_policy(content, 0, None);
    if !whole.directives.is_empty() {
        into.push(whole);
    }
    if content.contains(&b',') {
        for part in content.split(|&b| b == b',') {
            let p = parse_policy(part, 0, None);
            if !p.directives.is_empty() {
                into.push(p);
            }
        }
    }
}

/// Parses one serialized policy that starts at offset `base` of its header.
fn parse_policy(text: &[u8], base: usize, header: Option<usize>) -> Policy<'_> {
    let mut policy = Policy {
        header,
        directives: Vec::new(),
    };
    let mut start = 0;
    for raw in text.split(|&b| b == b';') {
        let token_start = start;
        start += raw.len() + 1;
        let Some(first) = raw.iter().position(|c| !c.is_ascii_whitespace()) else {
            continue;
        };
        let last = raw
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .unwrap_or(first);
        let token = raw.get(first..=last).unwrap_or(&[]);
        if token.is_empty() || !token.is_ascii() {
            continue;
        }
        let mut words = token
            .split(|c| c.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let Some(name) = words.next() else { continue };
        if policy
            .directives
            .iter()
            .any(|d| d.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        policy.directives.push(Directive {
            name,
            sources: words.collect(),
            end: base + token_start + last + 1,
        });
    }
    policy
}

/// CSP3 "Does a source list allow all inline behavior" for type `script`.
fn allows_all_inline(list: &[&[u8]]) -> bool {
    let mut unsafe_inline = false;
    for e in list {
        if nonce_value(e).is_some() || hash_value(e).is_some() {
            return false;
        }
        if e.eq_ignore_ascii_case(b"'strict-dynamic'") {
            return false;
        }
        if e.eq_ignore_ascii_case(b"'unsafe-inline'") {
            unsafe_inline = true;
        }
    }
    unsafe_inline
}

/// A source list that allows no script element: empty, or `'none'` alone
/// (CSP3 "match a source list": `'none'` counts only when it is the list's
/// only expression).
fn allows_no_script(list: &[&[u8]]) -> bool {
    match list {
        [] => true,
        [only] => only.eq_ignore_ascii_case(b"'none'"),
        _ => false,
    }
}

/// The same question for inline styles (`'strict-dynamic'` does not apply).
fn allows_all_inline_styles(list: &[&[u8]]) -> bool {
    let mut unsafe_inline = false;
    for e in list {
        if nonce_value(e).is_some() || hash_value(e).is_some() {
            return false;
        }
        if e.eq_ignore_ascii_case(b"'unsafe-inline'") {
            unsafe_inline = true;
        }
    }
    unsafe_inline
}

/// Appending a hash to `d` would switch off inline styles that now fall back
/// to it and are allowed.
fn hash_would_block_styles(p: &Policy<'_>, d: &Directive<'_>) -> bool {
    let style_falls_back =
        !p.has("style-src") && (!p.has("style-src-elem") || !p.has("style-src-attr"));
    d.name.eq_ignore_ascii_case(b"default-src")
        && style_falls_back
        && allows_all_inline_styles(&d.sources)
}

/// The nonces a source list holds (grammar-valid ones only).
fn nonces<'a>(list: &[&'a [u8]]) -> Vec<&'a [u8]> {
    list.iter().filter_map(|e| nonce_value(e)).collect()
}

/// The value of a `'nonce-…'` expression.
fn nonce_value(e: &[u8]) -> Option<&[u8]> {
    let inner = quoted(e)?;
    let prefix = inner.get(..6)?;
    if !prefix.eq_ignore_ascii_case(b"nonce-") {
        return None;
    }
    let value = inner.get(6..)?;
    is_base64_value(value).then_some(value)
}

/// The algorithm and value of a `'sha256-…'`/`'sha384-…'`/`'sha512-…'`.
fn hash_value(e: &[u8]) -> Option<(&[u8], &[u8])> {
    let inner = quoted(e)?;
    let dash = inner.iter().position(|&c| c == b'-')?;
    let alg = inner.get(..dash)?;
    let value = inner.get(dash + 1..)?;
    let known = [&b"sha256"[..], b"sha384", b"sha512"]
        .iter()
        .any(|a| alg.eq_ignore_ascii_case(a));
    (known && is_base64_value(value)).then_some((alg, value))
}

/// Whether the list already allows our script by its SHA-256 (base64url
/// spellings count, as in browsers).
fn lists_hash(list: &[&[u8]], ours: &[u8]) -> bool {
    list.iter().any(|e| {
        hash_value(e).is_some_and(|(alg, value)| {
            alg.eq_ignore_ascii_case(b"sha256")
                && value.len() == ours.len()
                && value.iter().zip(ours).all(|(&v, &o)| {
                    let v = match v {
                        b'-' => b'+',
                        b'_' => b'/',
                        x => x,
                    };
                    v == o
                })
        })
    })
}

/// The part between the single quotes of `'…'`.
fn quoted(e: &[u8]) -> Option<&[u8]> {
    if e.len() >= 2 && e.first() == Some(&b'\'') && e.last() == Some(&b'\'') {
        e.get(1..e.len() - 1)
    } else {
        None
    }
}

/// CSP's `base64-value`: 1*( ALPHA / DIGIT / "+" / "/" / "-" / "_" )*2( "=" ).
fn is_base64_value(v: &[u8]) -> bool {
    let body_len = v.len() - v.iter().rev().take_while(|&&c| c == b'=').count();
    let pad = v.len() - body_len;
    body_len > 0
        && pad <= 2
        && v.iter()
            .take(body_len)
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_'))
}

/// Standard padded base64 of a 32-byte digest: 43 alphabet characters and
/// `=` (what browsers compare a hash-source against).
fn is_sha256_b64(h: &[u8]) -> bool {
    h.len() == 44
        && h.last() == Some(&b'=')
        && h.iter()
            .take(43)
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// Whether a source list lets a same-origin https request through (see the
/// module doc for what counts).
fn allows_same_origin(list: &[&[u8]]) -> bool {
    list.iter().any(|e| {
        if e.eq_ignore_ascii_case(b"'self'") || *e == b"*" {
            return true;
        }
        match e.split_last() {
            Some((b':', scheme)) => [&b"https"[..], b"http", b"wss", b"ws"]
                .iter()
                .any(|s| scheme.eq_ignore_ascii_case(s)),
            _ => false,
        }
    })
}

/// Standard base64 with padding.
fn base64_std(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| ALPHABET[(v & 63) as usize] as char;
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TRACKER: &[u8] = b"(function(){/* tracker */})();";

    fn h() -> String {
        sha256_b64(TRACKER)
    }

    fn run(headers: &[&str], metas: &[&str]) -> CspPlan {
        let hs: Vec<&[u8]> = headers.iter().map(|s| s.as_bytes()).collect();
        plan(&hs, metas, &h())
    }

    fn new_headers(p: &CspPlan) -> Vec<String> {
        p.new_headers
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn src() -> String {
        format!("'sha256-{}'", h())
    }

    /// Whether a browser applying `plan` would run our tracker under every
    /// policy: re-parses the (possibly rewritten) headers and the metas and
    /// runs CSP3's element check with the chosen nonce and our hash.
    fn browser_runs_tracker(headers: &[Vec<u8>], metas: &[&str], nonce: Option<&str>) -> bool {
        let ours = h();
        let mut policies = Vec::new();
        for (i, v) in headers.iter().enumerate() {
            parse_header(v, i, &mut policies);
        }
        for m in metas {
            parse_meta(m.as_bytes(), &mut policies);
        }
        policies.iter().all(|p| match p.governing() {
            None => true,
            Some(d) => {
                allows_all_inline(&d.sources)
                    || nonce.is_some_and(|n| nonces(&d.sources).contains(&n.as_bytes()))
                    || lists_hash(&d.sources, ours.as_bytes())
            }
        })
    }

    fn applied(p: &CspPlan, headers: &[&str]) -> Vec<Vec<u8>> {
        p.new_headers
            .clone()
            .unwrap_or_else(|| headers.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    #[test]
    fn sha256_b64_known_answers() {
        // printf '' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            sha256_b64(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        // printf 'abc' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            sha256_b64(b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(b"fo"), "Zm8=");
        assert_eq!(base64_std(b"foo"), "Zm9v");
        assert!(is_sha256_b64(h().as_bytes()));
    }

    /// Pieces of a document's start, for the prefix property of
    /// [`scan_head`].
    const HEAD_PIECES: &[&str] = &[
        "\u{feff}",
        "<!doctype html>",
        "<html lang=en>",
        "<head>",
        "<meta charset=utf-8>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'nonce-a'\">",
        "<meta http-equiv='content-security-policy' content='img-src *'>",
        "<!-- <body> -->",
        "<!-->",
        "<title>a <body> b</title>",
        "<script>if (a </b) x('</head>')</script>",
        "<style>p{}</style>",
        "<link rel=stylesheet href=/a.css>",
        "<?x?>",
        "</p>",
        "  \n",
        "</head>",
        "<body>",
        "<div>",
        "text",
        "<",
        "</",
        "<!",
    ];

    proptest! {
        #[test]
        fn a_complete_head_scan_of_a_prefix_is_final(
            picks in proptest::collection::vec(0..HEAD_PIECES.len(), 0..12)
        ) {
            let doc: String = picks.iter().map(|&i| HEAD_PIECES[i]).collect();
            let doc = doc.as_bytes();
            let whole = scan_head(doc);
            prop_assert_eq!(&whole.metas, &find_meta_csps(doc));
            for end in 0..=doc.len() {
                let part = scan_head(&doc[..end]);
                if part.complete {
                    prop_assert_eq!(&part, &whole, "prefix {}", end);
                }
            }
        }
    }

    #[test]
    fn head_scan_completes_where_the_head_ends() {
        let doc = b"<!doctype html><html><head><meta http-equiv=Content-Security-Policy content=\"script-src 'none'\"><title>x</title></head><body>";
        let at = |n: usize| scan_head(&doc[..n]);
        let end_head = doc.len() - "</head><body>".len();
        for n in 0..end_head + 2 {
            assert!(!at(n).complete, "{n}");
        }
        assert!(!at(end_head + "</head".len()).complete);
        assert!(at(end_head + "</head>".len()).complete);
        assert_eq!(at(doc.len()).metas, vec!["script-src 'none'".to_string()]);
        assert!(scan_head(b"<div>x").complete);
        assert!(scan_head(b"plain").complete);
        assert!(!scan_head(b"\xEF\xBB").complete);
        assert!(!scan_head(b"<head><script>a</scr").complete);
    }

    #[test]
    fn none_or_empty_governing_directive_skips() {
        for headers in [
            &["script-src 'none'"][..],
            &["script-src 'NONE'"],
            &["script-src"],
            &["default-src 'none'; img-src 'self'"],
            &["script-src-elem 'none'; script-src 'unsafe-inline'"],
            &["script-src 'unsafe-inline'", "script-src 'none'"],
        ] {
            let p = run(headers, &[]);
            assert_eq!(
                p.action,
                Action::Skip(SkipReason::ScriptNone),
                "{headers:?}"
            );
            assert_eq!(p.new_headers, None);
        }
        // 'none' beside other sources is ignored by browsers: not this case.
        let p = run(&["script-src 'none' 'self'"], &[]);
        assert_eq!(p.action, Action::AddHash);
        // 'none' that does not govern script elements changes nothing.
        let p = run(&["script-src 'none'; script-src-elem 'self'"], &[]);
        assert_eq!(p.action, Action::AddHash);
        // A nonce-less meta 'none' keeps its own reason.
        let p = run(&[], &["script-src 'none'"]);
        assert_eq!(p.action, Action::Skip(SkipReason::MetaWithoutNonce));
    }

    #[test]
    fn no_csp_is_as_is() {
        let p = run(&[], &[]);
        assert_eq!(p.action, Action::AsIs);
        assert_eq!(p.new_headers, None);
        assert_eq!(p.blocked, Blocked::default());
        // Report-only headers are the caller's to leave out: nothing in,
        // nothing to do.
        assert_eq!(plan(&[], &[], &h()).action, Action::AsIs);
    }

    #[test]
    fn policies_without_script_directives_are_as_is() {
        let p = run(
            &["img-src 'self'; frame-ancestors 'none'", "  ;  ; ", ""],
            &[],
        );
        assert_eq!(p.action, Action::AsIs);
    }

    #[test]
    fn unsafe_inline_is_as_is() {
        let p = run(
            &["script-src 'self' 'unsafe-inline'; object-src 'none'"],
            &[],
        );
        assert_eq!(p.action, Action::AsIs);
        let p = run(&["default-src 'self' 'UNSAFE-INLINE'"], &[]);
        assert_eq!(p.action, Action::AsIs, "keywords are case-insensitive");
    }

    #[test]
    fn unsafe_inline_with_nonce_means_nonce() {
        let p = run(&["script-src 'unsafe-inline' 'nonce-abc123' 'self'"], &[]);
        assert_eq!(p.action, Action::UseNonce("abc123".into()));
        assert_eq!(p.new_headers, None);
    }

    #[test]
    fn unsafe_inline_with_hash_gets_our_hash() {
        let hs =
            ["script-src 'unsafe-inline' 'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='"];
        let p = run(&hs, &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "script-src 'unsafe-inline' 'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' {}",
                src()
            )]
        );
    }

    #[test]
    fn nonce_only() {
        let p = run(
            &["script-src 'nonce-r4nd0m+/=='; object-src 'none'; base-uri 'none'"],
            &[],
        );
        assert_eq!(p.action, Action::UseNonce("r4nd0m+/==".into()));
        assert_eq!(p.action.nonce(), Some("r4nd0m+/=="));
        // The nonce prefix is case-insensitive, the value is not changed.
        let p = run(&["script-src 'NONCE-AbC'"], &[]);
        assert_eq!(p.action, Action::UseNonce("AbC".into()));
    }

    #[test]
    fn malformed_nonce_is_not_a_nonce() {
        // `"` is outside base64-value: not a nonce, so no nonce to use
        // (and it is never echoed into our HTML); the hash goes in.
        let p = run(&["script-src 'nonce-a\"b' 'self'"], &[]);
        assert_eq!(p.action, Action::AddHash);
        let p = run(&["script-src 'nonce-' 'self'"], &[]);
        assert_eq!(p.action, Action::AddHash);
        let p = run(&["script-src 'nonce-abc===' 'self'"], &[]);
        assert_eq!(p.action, Action::AddHash, "at most two '='");
    }

    #[test]
    fn hash_only_gets_our_hash_in_place() {
        let header =
            "default-src 'self'; script-src 'self' 'sha256-abc=' https://cdn.example;  img-src *";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "default-src 'self'; script-src 'self' 'sha256-abc=' https://cdn.example {};  img-src *",
                src()
            )]
        );
        assert!(browser_runs_tracker(&applied(&p, &[header]), &[], None));
    }

    #[test]
    fn self_only_gets_our_hash() {
        let header = "script-src 'self'";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!("script-src 'self' {}", src())]
        );
        // A directive with no sources, and 'none': see
        // `none_or_empty_governing_directive_skips`.
    }

    #[test]
    fn already_listed_hash_is_as_is() {
        let header = format!("script-src 'self' {}", src());
        assert_eq!(run(&[&header], &[]).action, Action::AsIs);
        // base64url spelling of the same digest counts, like in browsers.
        let url = h().replace('+', "-").replace('/', "_");
        let header = format!("script-src 'SHA256-{url}'");
        assert_eq!(run(&[&header], &[]).action, Action::AsIs);
    }

    #[test]
    fn strict_dynamic_with_nonce() {
        let p = run(
            &["script-src 'strict-dynamic' 'nonce-n1' 'unsafe-inline' https:; object-src 'none'"],
            &[],
        );
        assert_eq!(p.action, Action::UseNonce("n1".into()));
    }

    #[test]
    fn strict_dynamic_overrides_unsafe_inline() {
        let header = "script-src 'strict-dynamic' 'unsafe-inline'";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "script-src 'strict-dynamic' 'unsafe-inline' {}",
                src()
            )]
        );
    }

    #[test]
    fn script_src_elem_governs() {
        // script-src-elem allows inline: script-src does not matter.
        let p = run(
            &["script-src 'self'; script-src-elem 'self' 'unsafe-inline'"],
            &[],
        );
        assert_eq!(p.action, Action::AsIs);
        // script-src-elem strict: the hash goes there, script-src untouched.
        let header = "script-src 'unsafe-inline'; script-src-elem 'self'";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "script-src 'unsafe-inline'; script-src-elem 'self' {}",
                src()
            )]
        );
        // script-src-elem with a nonce.
        let p = run(&["default-src 'none'; script-src-elem 'nonce-e1'"], &[]);
        assert_eq!(p.action, Action::UseNonce("e1".into()));
    }

    #[test]
    fn only_default_src() {
        let header = "default-src 'self' https://static.example";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "default-src 'self' https://static.example {}",
                src()
            )]
        );
        assert!(!p.blocked.connect && !p.blocked.img);
        // default-src with unsafe-inline: as is.
        assert_eq!(
            run(&["default-src * 'unsafe-inline'"], &[]).action,
            Action::AsIs
        );
    }

    #[test]
    fn hash_in_default_src_would_break_inline_styles() {
        // 'strict-dynamic' overrides 'unsafe-inline' for scripts only; inline
        // styles fall back to default-src and are allowed. A hash would stop
        // them: skip.
        let p = run(
            &["default-src 'self' 'unsafe-inline' 'strict-dynamic'"],
            &[],
        );
        assert_eq!(p.action, Action::Skip(SkipReason::HashWouldBlockStyles));
        assert_eq!(p.new_headers, None);
        // With style-src of its own, styles do not depend on default-src.
        let header =
            "default-src 'self' 'unsafe-inline' 'strict-dynamic'; style-src 'self' 'unsafe-inline'";
        assert_eq!(run(&[header], &[]).action, Action::AddHash);
        // style-src-elem alone still leaves style attributes on default-src.
        let header = "default-src 'unsafe-inline' 'strict-dynamic'; style-src-elem 'self'";
        assert_eq!(
            run(&[header], &[]).action,
            Action::Skip(SkipReason::HashWouldBlockStyles)
        );
    }

    #[test]
    fn two_headers_all_apply() {
        let hs = [
            "script-src 'unsafe-inline'",
            "script-src 'self'; img-src 'self'",
        ];
        let p = run(&hs, &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![
                "script-src 'unsafe-inline'".to_string(),
                format!("script-src 'self' {}; img-src 'self'", src()),
            ]
        );
        assert!(browser_runs_tracker(&applied(&p, &hs), &[], None));
    }

    #[test]
    fn comma_joined_policies() {
        let header = "script-src 'nonce-a1', default-src 'self' ,script-src 'unsafe-inline'";
        let p = run(&[header], &[]);
        // Policy 1 takes the nonce; policy 2 needs the hash; policy 3 is fine.
        assert_eq!(p.action, Action::UseNonceAndAddHash("a1".into()));
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "script-src 'nonce-a1', default-src 'self' {} ,script-src 'unsafe-inline'",
                src()
            )]
        );
        assert!(browser_runs_tracker(
            &applied(&p, &[header]),
            &[],
            Some("a1")
        ));
    }

    #[test]
    fn different_nonces_pick_one_and_hash_the_rest() {
        let hs = [
            "script-src 'nonce-x'",
            "script-src 'nonce-y' 'nonce-x'",
            "script-src 'nonce-y'",
            "script-src 'nonce-y'",
        ];
        let p = run(&hs, &[]);
        assert_eq!(
            p.action,
            Action::UseNonceAndAddHash("y".into()),
            "y is in the most"
        );
        assert_eq!(
            new_headers(&p)[0],
            format!("script-src 'nonce-x' {}", src())
        );
        assert_eq!(
            &new_headers(&p)[1..],
            &hs[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]
        );
        assert!(browser_runs_tracker(&applied(&p, &hs), &[], Some("y")));
    }

    #[test]
    fn duplicate_directives_first_wins() {
        // The second script-src is ignored by browsers: it allows nothing.
        let header = "script-src 'self'; script-src 'unsafe-inline'";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "script-src 'self' {}; script-src 'unsafe-inline'",
                src()
            )]
        );
        // Names are case-insensitive, duplicates too.
        let p = run(&["SCRIPT-SRC 'unsafe-inline'; script-src 'nonce-zz'"], &[]);
        assert_eq!(p.action, Action::AsIs);
    }

    #[test]
    fn non_ascii_directive_is_ignored_like_browsers() {
        // A non-ASCII script-src token is dropped by the parser, so
        // default-src governs, and that is where the hash goes.
        let header = "script-src 'unsafe-inline' caf\u{e9}.example; default-src 'self'";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AddHash);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "script-src 'unsafe-inline' caf\u{e9}.example; default-src 'self' {}",
                src()
            )]
        );
    }

    #[test]
    fn rewrite_keeps_every_other_byte() {
        let header = "\t default-src   'self'\t;script-src\t'self'  ;  ;report-uri /r  ";
        let p = run(&[header], &[]);
        assert_eq!(
            new_headers(&p),
            vec![format!(
                "\t default-src   'self'\t;script-src\t'self' {}  ;  ;report-uri /r  ",
                src()
            )]
        );
        // Raw non-UTF-8 bytes elsewhere survive as bytes.
        let raw: &[u8] = b"script-src 'self'; img-src \xff\xfe";
        let p = plan(&[raw], &[], &h());
        let mut want = format!("script-src 'self' {}", src()).into_bytes();
        want.extend_from_slice(b"; img-src \xff\xfe");
        assert_eq!(p.new_headers, Some(vec![want]));
    }

    #[test]
    fn meta_with_nonce() {
        let p = run(&[], &["script-src 'nonce-m3ta' 'strict-dynamic'"]);
        assert_eq!(p.action, Action::UseNonce("m3ta".into()));
        // The meta nonce is used even when a header has another one; the
        // header gets the hash.
        let hs = ["script-src 'nonce-hdr'"];
        let p = run(&hs, &["script-src 'nonce-m3ta'"]);
        assert_eq!(p.action, Action::UseNonceAndAddHash("m3ta".into()));
        assert_eq!(
            new_headers(&p),
            vec![format!("script-src 'nonce-hdr' {}", src())]
        );
        assert!(browser_runs_tracker(
            &applied(&p, &hs),
            &["script-src 'nonce-m3ta'"],
            Some("m3ta")
        ));
        // A meta nonce that the header shares wins without any rewrite.
        let p = run(
            &["script-src 'nonce-a' 'nonce-b'"],
            &["script-src 'nonce-b'"],
        );
        assert_eq!(p.action, Action::UseNonce("b".into()));
    }

    #[test]
    fn meta_without_nonce_skips() {
        let p = run(&[], &["default-src 'self'"]);
        assert_eq!(p.action, Action::Skip(SkipReason::MetaWithoutNonce));
        assert_eq!(p.action.nonce(), None);
        assert_eq!(p.new_headers, None);
        // A meta that allows inline, or already lists our hash, is fine.
        assert_eq!(
            run(&[], &["script-src 'unsafe-inline'"]).action,
            Action::AsIs
        );
        assert_eq!(
            run(&[], &[&format!("script-src {}", src())]).action,
            Action::AsIs
        );
        assert_eq!(run(&[], &["img-src 'none'"]).action, Action::AsIs);
        // Two metas with different nonces cannot both be met.
        let p = run(&[], &["script-src 'nonce-a'", "script-src 'nonce-b'"]);
        assert_eq!(p.action, Action::Skip(SkipReason::MetaNonceConflict));
        // Commas in a meta: HTML reads one policy (whose `'nonce-a',` is no
        // nonce, so 'unsafe-inline' stands), Chrome and Safari read two (the
        // first needs nonce a). The plan satisfies both readings.
        let p = run(&[], &["script-src 'nonce-a', script-src 'unsafe-inline'"]);
        assert_eq!(p.action, Action::UseNonce("a".into()));
        // Read as one policy, `'unsafe-inline',` is not the keyword: that
        // reading blocks inline script, so the page is left alone.
        let p = run(&[], &["script-src 'unsafe-inline', img-src 'none'"]);
        assert_eq!(p.action, Action::Skip(SkipReason::MetaWithoutNonce));
        assert!(p.blocked.img);
        let p = run(&[], &["script-src 'unsafe-inline' , img-src 'none'"]);
        assert_eq!(p.action, Action::AsIs);
    }

    #[test]
    fn blocked_requests_are_reported_not_changed() {
        let header = "script-src 'unsafe-inline'; connect-src 'none'";
        let p = run(&[header], &[]);
        assert_eq!(p.action, Action::AsIs);
        assert_eq!(
            p.blocked,
            Blocked {
                connect: true,
                img: false
            }
        );
        assert_eq!(p.new_headers, None);

        let p = run(&["default-src 'none'; script-src 'unsafe-inline'"], &[]);
        assert_eq!(
            p.blocked,
            Blocked {
                connect: true,
                img: true
            }
        );
        let p = run(&["default-src 'none'; connect-src 'self'; img-src *"], &[]);
        assert_eq!(
            p.blocked,
            Blocked {
                connect: false,
                img: false
            }
        );
        let p = run(&["default-src https://cdn.example"], &[]);
        assert_eq!(
            p.blocked,
            Blocked {
                connect: true,
                img: true
            },
            "a host we cannot vouch for"
        );
        let p = run(&["img-src data: https:; connect-src http:"], &[]);
        assert_eq!(
            p.blocked,
            Blocked {
                connect: false,
                img: false
            }
        );
        let p = run(&["img-src data:; connect-src"], &[]);
        assert_eq!(
            p.blocked,
            Blocked {
                connect: true,
                img: true
            }
        );
        // Any policy blocking is enough; metas count too; skipped pages too.
        let p = run(
            &["connect-src 'self'", "connect-src 'none'"],
            &["img-src 'none'; default-src 'self'"],
        );
        assert_eq!(
            p.blocked,
            Blocked {
                connect: true,
                img: true
            }
        );
        assert_eq!(p.action, Action::Skip(SkipReason::MetaWithoutNonce));
    }

    #[test]
    fn bad_tracker_hash_only_matters_when_needed() {
        let hs: [&[u8]; 1] = [b"script-src 'self'"];
        let p = plan(&hs, &[], "not-a-hash");
        assert_eq!(p.action, Action::Skip(SkipReason::BadTrackerHash));
        let hs: [&[u8]; 1] = [b"script-src 'nonce-q'"];
        assert_eq!(
            plan(&hs, &[], "not-a-hash").action,
            Action::UseNonce("q".into())
        );
        assert_eq!(plan(&[], &[], "").action, Action::AsIs);
    }

    #[test]
    fn find_meta_in_head() {
        let html = br#"<!DOCTYPE html>
<html lang="en"><head>
  <meta charset="utf-8">
  <!-- <meta http-equiv="Content-Security-Policy" content="commented out"> -->
  <script>var s = '<meta http-equiv="Content-Security-Policy" content="in a script">';</script>
  <META HTTP-EQUIV="content-security-policy" CONTENT="script-src 'nonce-abc' 'strict-dynamic'">
  <meta http-equiv='Content-Security-Policy' content='img-src "self"'>
  <meta http-equiv=Content-Security-Policy content=default-src>
  <title>&lt;meta http-equiv="Content-Security-Policy" content="in a title"&gt;</title>
</head><body><meta http-equiv="Content-Security-Policy" content="in the body"></body></html>"#;
        assert_eq!(
            find_meta_csps(html),
            vec![
                "script-src 'nonce-abc' 'strict-dynamic'".to_string(),
                "img-src \"self\"".to_string(),
                "default-src".to_string(),
            ]
        );
        assert_eq!(
            find_meta_csp(html).as_deref(),
            Some("script-src 'nonce-abc' 'strict-dynamic'")
        );
    }

    #[test]
    fn find_meta_decodes_references_and_ignores_others() {
        let html = b"<head><meta name=viewport content=x><meta http-equiv=\"refresh\" content=\"5\">\
<meta content=\"script-src &#39;nonce-q&#x27; &apos;self&apos; &amp;\" http-equiv=\"Content-Security-Policy\">";
        assert_eq!(
            find_meta_csps(html),
            vec!["script-src 'nonce-q' 'self' &".to_string()]
        );
        // A meta without content is nothing; duplicate attributes: first wins.
        let html = b"<meta http-equiv=\"Content-Security-Policy\"><meta http-equiv=\"x\" http-equiv=\"Content-Security-Policy\" content=\"a\">";
        assert!(find_meta_csps(html).is_empty());
    }

    #[test]
    fn find_meta_stops_where_the_head_ends() {
        for html in [
            &b"<html><head></head><meta http-equiv=Content-Security-Policy content=a>"[..],
            b"<html><body><meta http-equiv=Content-Security-Policy content=a>",
            b"<div></div><meta http-equiv=Content-Security-Policy content=a>",
            b"Hello <meta http-equiv=Content-Security-Policy content=a>",
            b"<head><template><meta http-equiv=Content-Security-Policy content=a></template>",
            b"<head><noscript><meta http-equiv=Content-Security-Policy content=a></noscript>",
        ] {
            assert!(
                find_meta_csps(html).is_empty(),
                "{}",
                String::from_utf8_lossy(html)
            );
        }
        // Implied head before <head>, a BOM, whitespace and comments are fine.
        let html =
            b"\xEF\xBB\xBF \n<!-- c --><meta http-equiv=Content-Security-Policy content=a><head>";
        assert_eq!(find_meta_csps(html), vec!["a".to_string()]);
        // Unterminated constructs end the scan without panicking.
        for html in [
            &b"<head><meta http-equiv=\"Content-Security-Policy"[..],
            b"<!--",
            b"<script>",
            b"<",
            b"</",
            b"<!",
        ] {
            assert!(find_meta_csps(html).is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn garbage_never_panics(
            headers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
            meta in ".{0,80}",
            hash in ".{0,50}",
            html in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let hs: Vec<&[u8]> = headers.iter().map(|v| v.as_slice()).collect();
            let p = plan(&hs, &[meta.as_str()], &hash);
            if let Some(n) = &p.new_headers {
                prop_assert_eq!(n.len(), hs.len());
            }
            let _ = plan(&hs, &[], &h());
            let _ = find_meta_csps(&html);
        }

        /// Policy-shaped input: the plan never weakens (the only change is
        /// our hash inserted), and applying it lets the tracker run under
        /// every policy unless the verdict is skip.
        #[test]
        fn plans_are_sound(
            policies in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        proptest::sample::select(vec![
                            "script-src", "SCRIPT-SRC", "script-src-elem", "default-src",
                            "connect-src", "img-src", "style-src", "style-src-attr", "object-src",
                        ]),
                        proptest::collection::vec(
                            proptest::sample::select(vec![
                                "'self'", "'none'", "'unsafe-inline'", "'Unsafe-Inline'",
                                "'strict-dynamic'", "'nonce-a'", "'nonce-b'", "'NONCE-b'",
                                "'sha256-AAAA'", "https:", "*", "data:", "cdn.example", "'nonce-'",
                            ]),
                            0..4,
                        ),
                    ),
                    0..5,
                ),
                1..5,
            ),
            seps in proptest::collection::vec(proptest::sample::select(vec![";", " ; ", ";;", "\t;"]), 8),
            split in 0usize..5,
            meta_idx in proptest::option::of(0usize..5),
        ) {
            let texts: Vec<String> = policies
                .iter()
                .map(|dirs| {
                    dirs.iter()
                        .enumerate()
                        .map(|(i, (name, srcs))| {
                            let mut d = name.to_string();
                            for s in srcs {
                                d.push(' ');
                                d.push_str(s);
                            }
                            d + seps[i % seps.len()]
                        })
                        .collect::<String>()
                })
                .collect();
            // Some policies become metas; the rest are split over headers,
            // comma-joined.
            let meta_at = meta_idx.filter(|&m| m < texts.len());
            let metas: Vec<&str> = meta_at.iter().map(|&m| texts[m].as_str()).collect();
            let header_texts: Vec<&String> =
                texts.iter().enumerate().filter(|(i, _)| Some(*i) != meta_at).map(|(_, t)| t).collect();
            let cut = split.min(header_texts.len());
            let mut headers: Vec<String> = Vec::new();
            if cut > 0 {
                headers.push(header_texts[..cut].iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
            }
            if cut < header_texts.len() {
                headers.push(header_texts[cut..].iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
            }
            let hs: Vec<&[u8]> = headers.iter().map(|s| s.as_bytes()).collect();
            let p = plan(&hs, &metas, &h());

            let inserted = format!(" {}", src());
            if let Some(new) = &p.new_headers {
                prop_assert_eq!(new.len(), headers.len());
                for (old, new) in headers.iter().zip(new) {
                    let new = String::from_utf8_lossy(new).into_owned();
                    prop_assert_eq!(new.replace(&inserted, ""), old.clone());
                    prop_assert_eq!(
                        new.matches("unsafe-inline").count(),
                        old.matches("unsafe-inline").count()
                    );
                }
                prop_assert!(matches!(p.action, Action::AddHash | Action::UseNonceAndAddHash(_)));
            } else {
                prop_assert!(!matches!(p.action, Action::AddHash | Action::UseNonceAndAddHash(_)));
            }
            if !matches!(p.action, Action::Skip(_)) {
                let hs_after = applied(&p, &headers.iter().map(|s| s.as_str()).collect::<Vec<_>>());
                prop_assert!(browser_runs_tracker(&hs_after, &metas, p.action.nonce()), "{:?} {:?} {:?}", headers, metas, p);
            }
        }
    }
}
