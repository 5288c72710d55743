//! Where the tracking snippet goes in an HTML document, found while the
//! document streams through: [`StreamInjector`] for identity bodies (bytes go
//! out as they arrive, at most `tail_bytes` are held back) and
//! [`inject_whole`] for bodies that were decoded whole (gzip, deflate).
//!
//! This module owns the placement rule and nothing else (no headers, no
//! encodings, no snippet contents). The rule:
//!
//! 1. The snippet goes in exactly once, immediately before the `<` of the
//!    **last** `</body>` end tag ([`Placement::BeforeBody`]); if the document
//!    has no `</body>`, before the last `</html>` ([`Placement::BeforeHtml`]);
//!    otherwise at the end of the document ([`Placement::End`]).
//! 2. Nothing is inserted ([`Placement::Skipped`], bytes unchanged) when the
//!    document has no `<html>` or `<body>` start tag (a fragment), or when the
//!    snippet would go at the end while the document ends inside a comment,
//!    a tag, or raw text (a `<script>` left open, say): appended there it would
//!    be commented out, become part of an attribute, or change the page's own
//!    script. Injecting correctly or not at all.
//! 3. Streaming: if the last `</body>` (or, without one, the last `</html>`)
//!    starts more than `tail_bytes` before the end of the document, it has
//!    already gone to the client, and the snippet goes at the end
//!    ([`Placement::End`], subject to rule 2). The outcome depends only on the
//!    document and `tail_bytes`, never on how the body was split into chunks;
//!    with `tail_bytes` at least the document length it equals [`inject_whole`].
//!
//! **What counts as a tag.** A `</body>` only counts where a browser's HTML
//! tokenizer (WHATWG HTML §13.2.5) would produce a `body` end tag token, so the
//! scanner here is a reduced version of that tokenizer, fed one chunk at a
//! time, whose state survives across chunks:
//!
//! * tag names are ASCII case-insensitive; an end tag is `</body` followed by
//!   whitespace, `/` or `>`, and ends at the next `>` outside a quoted
//!   attribute value (`</BODY >`, `</body\r\n>` and `</body foo>` all count);
//!   `</bodyx>` and a `</body` cut off by the end of the document do not;
//! * comments follow the tokenizer exactly: `<!--` … `-->`, also closed by
//!   `--!>`, and `<!-->` / `<!--->` are complete (empty) comments; a comment
//!   left open runs to the end of the document. `<!DOCTYPE …>`, `<?…>`,
//!   `<![CDATA[…]>` and other `<!…>` are bogus comments ending at the first
//!   `>`;
//! * attribute values in quotes may hold `>` and `</body>`
//!   (`<div title="a></body>">` has no end tag in it);
//! * the text of `script`, `style`, `textarea`, `title`, `xmp`, `iframe`,
//!   `noembed`, `noframes` and `noscript` is raw text that only the element's
//!   own end tag closes: a `</body>` in a JavaScript string is not a tag.
//!   (`noscript` is raw text in a browser with scripting enabled, the only
//!   kind that runs our snippet.) Script text includes the tokenizer's
//!   "escaped" states: in `<script><!-- … <script> … </script> … --></script>`
//!   the inner `</script>` does not end the script. After `<plaintext>`
//!   everything is text.
//!
//! Not modelled (tree construction, not tokenization): foreign content (in
//! `<svg>`/`<math>` a `<style>` is not raw text and `<![CDATA[` runs to
//! `]]>`), `<template>` contents, and character references (irrelevant to
//! finding tags). The byte stream is treated as ASCII-compatible; a UTF-16
//! document shows no tags and is skipped. A leading UTF-8 BOM is just text.
//!
//! **Document check.** A start tag named `html` or `body` outside comments
//! and raw text marks a document (issue 3: skip fragments); it may appear
//! anywhere before the end.
//!
//! **Streaming and memory.** [`StreamInjector`] runs the scanner over each
//! chunk and then emits everything except the bytes from the current
//! candidate (the last `</body>`, or without one the last `</html>`) on, plus
//! the bytes of an end tag still being read whose name may turn out to be
//! `body` or `html` (so a tag split across chunks is never emitted before we
//! know what it is). Whatever would leave more than `tail_bytes` held is let
//! go, so the held buffer never exceeds `tail_bytes` and, on a typical page,
//! holds only the few bytes from `</body>` on: the first bytes reach the
//! client as soon as they reach us. The held buffer is the only allocation;
//! it is reused after [`StreamInjector::finish`].

/// The default held tail (`INJECT_TAIL_BYTES`).
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;

/// Where the snippet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Immediately before the last `</body>`.
    BeforeBody,
    /// Immediately before the last `</html>` (the document has no `</body>`).
    BeforeHtml,
    /// At the end of the document.
    End,
    /// Not inserted: the body is not a document (no `<html>`/`<body>` start
    /// tag), or it ends inside a comment, tag or raw text where an appended
    /// snippet would not be markup. The bytes went out unchanged.
    Skipped,
}

impl Placement {
    /// A stable name, usable as a metric label or log field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Placement::BeforeBody => "before_body",
            Placement::BeforeHtml => "before_html",
            Placement::End => "end",
            Placement::Skipped => "skipped",
        }
    }

    /// Whether the snippet was inserted.
    pub fn injected(&self) -> bool {
        !matches!(self, Placement::Skipped)
    }
}

/// Elements whose content the tokenizer reads as raw text (RAWTEXT, RCDATA
/// or script data): only `</name` followed by whitespace, `/` or `>` ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raw {
    Script,
    Style,
    Textarea,
    Title,
    Xmp,
    Iframe,
    Noembed,
    Noframes,
    Noscript,
}

impl Raw {
    fn from_name(name: &[u8]) -> Option<Raw> {
        Some(match name {
            b"script" => Raw::Script,
            b"style" => Raw::Style,
            b"textarea" => Raw::Textarea,
            b"title" => Raw::Title,
            b"xmp" => Raw::Xmp,
            b"iframe" => Raw::Iframe,
            b"noembed" => Raw::Noembed,
            b"noframes" => Raw::Noframes,
            b"noscript" => Raw::Noscript,
            _ => return None,
        })
    }

    fn name(self) -> &'static [u8] {
        match self {
            Raw::Script => b"script",
            Raw::Style => b"style",
            Raw::Textarea => b"textarea",
            Raw::Title => b"title",
            Raw::Xmp => b"xmp",
            Raw::Iframe => b"iframe",
            Raw::Noembed => b"noembed",
            Raw::Noframes => b"noframes",
            Raw::Noscript => b"noscript",
        }
    }
}

const SCRIPT: &[u8] = b"script";

/// Tokenizer states (names after WHATWG HTML §13.2.5). The self-closing
/// start tag state behaves like "before attribute name" for everything we
/// observe (`>` ends the tag, quotes start nothing), so it is folded into it;
/// the comment less-than-sign states end where the plain comment states do,
/// so they are folded too. `(n)` counts the bytes of an element name matched
/// so far; a mismatch returns to the enclosing text state, which is
/// equivalent to the tokenizer's temporary buffer for our purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    TagOpen,
    EndTagOpen,
    TagName,
    BeforeAttrName,
    AttrName,
    AfterAttrName,
    BeforeAttrValue,
    AttrValueDouble,
    AttrValueSingle,
    AttrValueUnquoted,
    AfterAttrValueQuoted,
    MarkupOpen,
    MarkupDash,
    BogusComment,
    CommentStart,
    CommentStartDash,
    Comment,
    CommentEndDash,
    CommentEnd,
    CommentEndBang,
    /// Text of a raw-text element (`Scanner::raw`); for `script`, script data.
    RawText,
    RawLessThan,
    RawEndName(u8),
    ScriptEscapeStart,
    ScriptEscapeStartDash,
    ScriptEscaped,
    ScriptEscapedDash,
    ScriptEscapedDashDash,
    ScriptEscapedLessThan,
    ScriptEscapedEndName(u8),
    ScriptDoubleEscapeStart(u8),
    ScriptDoubleEscaped,
    ScriptDoubleEscapedDash,
    ScriptDoubleEscapedDashDash,
    ScriptDoubleEscapedLessThan,
    ScriptDoubleEscapeEnd(u8),
    Plaintext,
}

/// Longest tag name we need to recognise (`plaintext`).
const NAME_CAP: usize = 9;

#[inline]
fn is_ws(b: u8) -> bool {
    // The tokenizer's whitespace; CR counts because input preprocessing
    // turns it into LF.
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// The streaming tokenizer: what it has seen, never the bytes themselves.
#[derive(Debug, Clone)]
struct Scanner {
    state: State,
    /// Bytes consumed so far.
    pos: u64,
    /// Position of the `<` of the tag being read.
    tag_start: u64,
    tag_end: bool,
    /// The tag name so far, lower-cased; `name_len > NAME_CAP` means longer
    /// than any name we look for.
    name: [u8; NAME_CAP],
    name_len: u8,
    raw: Raw,
    /// An `html` or `body` start tag was seen.
    doc_seen: bool,
    /// Position of the `<` of the last `</body>` / `</html>` end tag.
    last_body: Option<u64>,
    last_html: Option<u64>,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            state: State::Data,
            pos: 0,
            tag_start: 0,
            tag_end: false,
            name: [0; NAME_CAP],
            name_len: 0,
            raw: Raw::Script,
            doc_seen: false,
            last_body: None,
            last_html: None,
        }
    }

    /// The tag name read so far; a name longer than any we look for reads
    /// as a byte no name contains.
    fn name(&self) -> &[u8] {
        self.name
            .get(..usize::from(self.name_len))
            .unwrap_or(b"\xff")
    }

    fn push_name(&mut self, b: u8) {
        let len = usize::from(self.name_len);
        match self.name.get_mut(len) {
            Some(slot) => {
                *slot = b.to_ascii_lowercase();
                self.name_len += 1;
            }
            None => self.name_len = (NAME_CAP + 1) as u8,
        }
    }

    fn start_tag(&mut self, end: bool, first: u8) {
        self.tag_end = end;
        self.name_len = 0;
        self.push_name(first);
        self.state = State::TagName;
    }

    /// The position of an end tag still being read that may turn out to be
    /// `</body>` or `</html>`: those bytes must not be emitted yet.
    fn pending(&self) -> Option<u64> {
        let could_be = |name: &[u8], exact: bool| {
            [b"body".as_slice(), b"html".as_slice()].iter().any(|t| {
                if exact {
                    *t == name
                } else {
                    t.starts_with(name)
                }
            })
        };
        match self.state {
            State::TagOpen | State::EndTagOpen => Some(self.tag_start),
            State::TagName if self.tag_end && could_be(self.name(), false) => Some(self.tag_start),
            State::BeforeAttrName
            | State::AttrName
            | State::AfterAttrName
            | State::BeforeAttrValue
            | State::AttrValueDouble
            | State::AttrValueSingle
            | State::AttrValueUnquoted
            | State::AfterAttrValueQuoted
                if self.tag_end && could_be(self.name(), true) =>
            {
                Some(self.tag_start)
            }
            _ => None,
        }
    }

    /// A tag's closing `>` was read.
    fn emit_tag(&mut self) {
        self.state = State::Data;
        if self.tag_end {
            match self.name() {
                b"body" => self.last_body = Some(self.tag_start),
                b"html" => self.last_html = Some(self.tag_start),
                _ => {}
            }
            return;
        }
        match self.name() {
            b"html" | b"body" => self.doc_seen = true,
            b"plaintext" => self.state = State::Plaintext,
            name => {
                if let Some(raw) = Raw::from_name(name) {
                    self.raw = raw;
                    self.state = State::RawText;
                }
            }
        }
    }

    /// After `</` and `n` bytes of an element name in raw text: the next
    /// byte `b`. Returns the new state, or `None` when the bytes were text
    /// (the caller reconsumes `b` in `fallback`).
    fn end_name(&mut self, name: &'static [u8], n: u8, b: u8, at: u64) -> Option<State> {
        let n_us = usize::from(n);
        if n_us == name.len() {
            if is_ws(b) || b == b'/' || b == b'>' {
                // An appropriate end tag: read it like any other tag.
                self.tag_end = true;
                self.name_len = 0;
                for &c in name {
                    self.push_name(c);
                }
                // `<` `/` and the name precede this byte.
                self.tag_start = at.saturating_sub(2 + name.len() as u64);
                if b == b'>' {
                    self.emit_tag();
                    return Some(self.state);
                }
                return Some(State::BeforeAttrName);
            }
            return None;
        }
        match name.get(n_us) {
            Some(&c) if b.to_ascii_lowercase() == c => Some(match self.state {
                State::RawEndName(_) => State::RawEndName(n + 1),
                State::ScriptEscapedEndName(_) => State::ScriptEscapedEndName(n + 1),
                s => s,
            }),
            _ => None,
        }
    }

    /// Consumes `chunk`.
    fn feed(&mut self, chunk: &[u8]) {
        let base = self.pos;
        let mut i = 0;
        while i < chunk.len() {
            // Fast paths: states that skip runs of bytes that change
            // nothing, with memchr (SIMD: most of a page is such runs).
            let rest = chunk.get(i..).unwrap_or(&[]);
            let skip = match self.state {
                State::Data | State::RawText => Some(memchr::memchr(b'<', rest)),
                State::Comment => Some(memchr::memchr(b'-', rest)),
                State::BogusComment => Some(memchr::memchr(b'>', rest)),
                State::ScriptEscaped | State::ScriptDoubleEscaped => {
                    Some(memchr::memchr2(b'-', b'<', rest))
                }
                State::Plaintext => Some(None),
                _ => None,
            };
            match skip {
                Some(Some(k)) => i += k,
                Some(None) => break,
                None => {}
            }
            let Some(&b) = chunk.get(i) else { break };
            if self.step(b, base + i as u64) {
                i += 1;
            }
        }
        self.pos = base + chunk.len() as u64;
    }

    /// One byte `b` at position `at` in the current state. Returns whether it
    /// was consumed; `false` means it must be processed again in the new
    /// state (the tokenizer's "reconsume"), which always leaves a state that
    /// consumes it, so this cannot loop.
    fn step(&mut self, b: u8, at: u64) -> bool {
        use State::*;
        let next = match self.state {
            Data => {
                if b == b'<' {
                    self.tag_start = at;
                    TagOpen
                } else {
                    Data
                }
            }
            TagOpen => match b {
                b'!' => MarkupOpen,
                b'/' => EndTagOpen,
                b'?' => BogusComment,
                c if c.is_ascii_alphabetic() => {
                    self.start_tag(false, c);
                    TagName
                }
                _ => {
                    self.state = Data;
                    return false;
                }
            },
            EndTagOpen => match b {
                c if c.is_ascii_alphabetic() => {
                    self.start_tag(true, c);
                    TagName
                }
                b'>' => Data,
                _ => {
                    self.state = BogusComment;
                    return false;
                }
            },
            TagName => match b {
                c if is_ws(c) || c == b'/' => BeforeAttrName,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                c => {
                    self.push_name(c);
                    TagName
                }
            },
            BeforeAttrName => match b {
                c if is_ws(c) || c == b'/' => BeforeAttrName,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                _ => AttrName,
            },
            AttrName => match b {
                c if is_ws(c) => AfterAttrName,
                b'/' => BeforeAttrName,
                b'=' => BeforeAttrValue,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                _ => AttrName,
            },
            AfterAttrName => match b {
                c if is_ws(c) => AfterAttrName,
                b'/' => BeforeAttrName,
                b'=' => BeforeAttrValue,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                _ => AttrName,
            },
            BeforeAttrValue => match b {
                c if is_ws(c) => BeforeAttrValue,
                b'"' => AttrValueDouble,
                b'\'' => AttrValueSingle,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                _ => AttrValueUnquoted,
            },
            AttrValueDouble => {
                if b == b'"' {
                    AfterAttrValueQuoted
                } else {
                    AttrValueDouble
                }
            }
            AttrValueSingle => {
                if b == b'\'' {
                    AfterAttrValueQuoted
                } else {
                    AttrValueSingle
                }
            }
            AttrValueUnquoted => match b {
                c if is_ws(c) => BeforeAttrName,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                _ => AttrValueUnquoted,
            },
            AfterAttrValueQuoted => match b {
                c if is_ws(c) || c == b'/' => BeforeAttrName,
                b'>' => {
                    self.emit_tag();
                    return true;
                }
                _ => {
                    self.state = BeforeAttrName;
                    return false;
                }
            },
            MarkupOpen => {
                if b == b'-' {
                    MarkupDash
                } else {
                    self.state = BogusComment;
                    return false;
                }
            }
            MarkupDash => {
                if b == b'-' {
                    CommentStart
                } else {
                    self.state = BogusComment;
                    return false;
                }
            }
            BogusComment => {
                if b == b'>' {
                    Data
                } else {
                    BogusComment
                }
            }
            CommentStart => match b {
                b'-' => CommentStartDash,
                b'>' => Data,
                _ => {
                    self.state = Comment;
                    return false;
                }
            },
            CommentStartDash => match b {
                b'-' => CommentEnd,
                b'>' => Data,
                _ => {
                    self.state = Comment;
                    return false;
                }
            },
            Comment => {
                if b == b'-' {
                    CommentEndDash
                } else {
                    Comment
                }
            }
            CommentEndDash => {
                if b == b'-' {
                    CommentEnd
                } else {
                    self.state = Comment;
                    return false;
                }
            }
            CommentEnd => match b {
                b'>' => Data,
                b'!' => CommentEndBang,
                b'-' => CommentEnd,
                _ => {
                    self.state = Comment;
                    return false;
                }
            },
            CommentEndBang => match b {
                b'-' => CommentEndDash,
                b'>' => Data,
                _ => {
                    self.state = Comment;
                    return false;
                }
            },
            RawText => {
                if b == b'<' {
                    RawLessThan
                } else {
                    RawText
                }
            }
            RawLessThan => match b {
                b'/' => RawEndName(0),
                b'!' if self.raw == Raw::Script => ScriptEscapeStart,
                _ => {
                    self.state = RawText;
                    return false;
                }
            },
            RawEndName(n) => match self.end_name(self.raw.name(), n, b, at) {
                Some(s) => s,
                None => {
                    self.state = RawText;
                    return false;
                }
            },
            ScriptEscapeStart => {
                if b == b'-' {
                    ScriptEscapeStartDash
                } else {
                    self.state = RawText;
                    return false;
                }
            }
            ScriptEscapeStartDash => {
                if b == b'-' {
                    ScriptEscapedDashDash
                } else {
                    self.state = RawText;
                    return false;
                }
            }
            ScriptEscaped => match b {
                b'-' => ScriptEscapedDash,
                b'<' => ScriptEscapedLessThan,
                _ => ScriptEscaped,
            },
            ScriptEscapedDash => match b {
                b'-' => ScriptEscapedDashDash,
                b'<' => ScriptEscapedLessThan,
                _ => ScriptEscaped,
            },
            ScriptEscapedDashDash => match b {
                b'-' => ScriptEscapedDashDash,
                b'<' => ScriptEscapedLessThan,
                b'>' => RawText,
                _ => ScriptEscaped,
            },
            ScriptEscapedLessThan => match b {
                b'/' => ScriptEscapedEndName(0),
                c if c.is_ascii_alphabetic() => {
                    self.state = ScriptDoubleEscapeStart(0);
                    return false;
                }
                _ => {
                    self.state = ScriptEscaped;
                    return false;
                }
            },
            ScriptEscapedEndName(n) => match self.end_name(SCRIPT, n, b, at) {
                Some(s) => s,
                None => {
                    self.state = ScriptEscaped;
                    return false;
                }
            },
            ScriptDoubleEscapeStart(n) => {
                let n_us = usize::from(n);
                if is_ws(b) || b == b'/' || b == b'>' {
                    if n_us == SCRIPT.len() {
                        ScriptDoubleEscaped
                    } else {
                        ScriptEscaped
                    }
                } else if SCRIPT.get(n_us) == Some(&b.to_ascii_lowercase()) {
                    ScriptDoubleEscapeStart(n + 1)
                } else {
                    self.state = ScriptEscaped;
                    return false;
                }
            }
            ScriptDoubleEscaped => match b {
                b'-' => ScriptDoubleEscapedDash,
                b'<' => ScriptDoubleEscapedLessThan,
                _ => ScriptDoubleEscaped,
            },
            ScriptDoubleEscapedDash => match b {
                b'-' => ScriptDoubleEscapedDashDash,
                b'<' => ScriptDoubleEscapedLessThan,
                _ => ScriptDoubleEscaped,
            },
            ScriptDoubleEscapedDashDash => match b {
                b'-' => ScriptDoubleEscapedDashDash,
                b'<' => ScriptDoubleEscapedLessThan,
                b'>' => RawText,
                _ => ScriptDoubleEscaped,
            },
            ScriptDoubleEscapedLessThan => {
                if b == b'/' {
                    ScriptDoubleEscapeEnd(0)
                } else {
                    self.state = ScriptDoubleEscaped;
                    return false;
                }
            }
            ScriptDoubleEscapeEnd(n) => {
                let n_us = usize::from(n);
                if is_ws(b) || b == b'/' || b == b'>' {
                    if n_us == SCRIPT.len() {
                        ScriptEscaped
                    } else {
                        ScriptDoubleEscaped
                    }
                } else if SCRIPT.get(n_us) == Some(&b.to_ascii_lowercase()) {
                    ScriptDoubleEscapeEnd(n + 1)
                } else {
                    self.state = ScriptDoubleEscaped;
                    return false;
                }
            }
            Plaintext => Plaintext,
        };
        self.state = next;
        true
    }

    /// Where the snippet goes, given that bytes before `emitted` are gone:
    /// the placement and, unless it is `End`/`Skipped`, the position.
    fn place(&self, emitted: u64) -> (Placement, Option<u64>) {
        if !self.doc_seen {
            return (Placement::Skipped, None);
        }
        let live = match (self.last_body, self.last_html) {
            (Some(b), _) => (b >= emitted).then_some((Placement::BeforeBody, b)),
            (None, Some(h)) => (h >= emitted).then_some((Placement::BeforeHtml, h)),
            (None, None) => None,
        };
        match live {
            Some((p, at)) => (p, Some(at)),
            None if self.state == State::Data => (Placement::End, None),
            None => (Placement::Skipped, None),
        }
    }
}

/// Inserts `snippet` into a whole document (a decoded compressed body):
/// appends the result to `out` and says where it went. With
/// [`Placement::Skipped`] `out` receives `doc` unchanged.
pub fn inject_whole(doc: &[u8], snippet: &[u8], out: &mut Vec<u8>) -> Placement {
    let mut scan = Scanner::new();
    scan.feed(doc);
    let (placement, at) = scan.place(0);
    let cut = match (placement, at) {
        (_, Some(p)) => usize::try_from(p).unwrap_or(doc.len()).min(doc.len()),
        (Placement::End, None) => doc.len(),
        _ => {
            out.extend_from_slice(doc);
            return placement;
        }
    };
    let (head, tail) = doc.split_at(cut);
    out.reserve(doc.len() + snippet.len());
    out.extend_from_slice(head);
    out.extend_from_slice(snippet);
    out.extend_from_slice(tail);
    placement
}

/// Streams an identity HTML body through, holding back at most `tail_bytes`,
/// and inserts the snippet in [`finish`](Self::finish). See the module
/// documentation for the rule. After `finish` it is ready for a new document
/// (the held buffer's capacity is kept).
#[derive(Debug, Clone)]
pub struct StreamInjector {
    scan: Scanner,
    tail: u64,
    /// The document bytes `emitted..scan.pos`, not yet sent.
    held: Vec<u8>,
    emitted: u64,
}

impl StreamInjector {
    /// An injector holding back at most `tail_bytes` (see
    /// [`DEFAULT_TAIL_BYTES`]).
    pub fn new(tail_bytes: usize) -> StreamInjector {
        StreamInjector {
            scan: Scanner::new(),
            tail: u64::try_from(tail_bytes).unwrap_or(u64::MAX),
            held: Vec::new(),
            emitted: 0,
        }
    }

    /// Bytes currently held back (never more than `tail_bytes`).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Whether [`finish`](Self::finish) would insert the snippet if the
    /// document ended now (without consuming anything).
    pub fn would_inject(&self) -> bool {
        self.scan.place(self.emitted).0.injected()
    }

    /// Whether an `<html>` or `<body>` start tag has been seen so far (the
    /// document check; it cannot be undone by later bytes).
    pub fn document_seen(&self) -> bool {
        self.scan.doc_seen
    }

    /// Feeds the next piece of the body; appends to `out` what may go to the
    /// client now.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.scan.feed(chunk);
        let pos = self.scan.pos;
        let floor = pos.saturating_sub(self.tail);
        // Hold from the candidate and from an end tag still being read,
        // unless that would hold more than `tail` bytes: then it goes.
        let candidate = self.scan.last_body.or(self.scan.last_html);
        let mut hold = pos;
        for p in [candidate, self.scan.pending()].into_iter().flatten() {
            if p >= self.emitted && p >= floor {
                hold = hold.min(p);
            }
        }
        let hold = hold.max(self.emitted);
        // `held` covers emitted..chunk_start, `chunk` covers chunk_start..pos.
        let chunk_start = pos - chunk.len() as u64;
        let from_held = usize::try_from(hold.min(chunk_start).saturating_sub(self.emitted))
            .unwrap_or(usize::MAX)
            .min(self.held.len());
        if from_held == self.held.len() {
            out.extend_from_slice(&self.held);
            self.held.clear();
        } else if from_held > 0 {
            out.extend_from_slice(&self.held[..from_held]);
            self.held.drain(..from_held);
        }
        let from_chunk = usize::try_from(hold.saturating_sub(chunk_start))
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let (now, later) = chunk.split_at(from_chunk);
        out.extend_from_slice(now);
        self.held.extend_from_slice(later);
        self.emitted = hold;
    }

    /// Ends the document: appends the held bytes to `out` with `snippet`
    /// inserted per the rule, and resets the injector for a new document.
    pub fn finish(&mut self, snippet: &[u8], out: &mut Vec<u8>) -> Placement {
        let (placement, at) = self.scan.place(self.emitted);
        let cut = match (placement, at) {
            (_, Some(p)) => Some(
                usize::try_from(p.saturating_sub(self.emitted))
                    .unwrap_or(usize::MAX)
                    .min(self.held.len()),
            ),
            (Placement::End, None) => Some(self.held.len()),
            _ => None,
        };
        match cut {
            Some(cut) => {
                let (head, tail) = self.held.split_at(cut);
                out.reserve(head.len() + snippet.len() + tail.len());
                out.extend_from_slice(head);
                out.extend_from_slice(snippet);
                out.extend_from_slice(tail);
            }
            None => out.extend_from_slice(&self.held),
        }
        self.held.clear();
        self.emitted = 0;
        self.scan = Scanner::new();
        placement
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SNIP: &[u8] = b"<script>/*\x01TG-SNIPPET\x01*/</script>";

    fn whole(doc: &[u8]) -> (Vec<u8>, Placement) {
        let mut out = Vec::new();
        let p = inject_whole(doc, SNIP, &mut out);
        (out, p)
    }

    /// Streams `doc` cut at `cuts` (sorted positions) with `tail`.
    fn stream(doc: &[u8], cuts: &[usize], tail: usize) -> (Vec<u8>, Placement) {
        let mut inj = StreamInjector::new(tail);
        let mut out = Vec::new();
        let mut last = 0;
        let mut seen = false;
        for &c in cuts.iter().chain(std::iter::once(&doc.len())) {
            let c = c.clamp(last, doc.len());
            inj.push(&doc[last..c], &mut out);
            // The document check only ever turns on.
            assert!(!seen || inj.document_seen());
            seen = inj.document_seen();
            assert!(inj.held_len() <= tail, "held {} > {tail}", inj.held_len());
            // Emitted bytes are a prefix of the document, untouched.
            assert_eq!(&out[..], &doc[..out.len()]);
            last = c;
        }
        let would = inj.would_inject();
        let p = inj.finish(SNIP, &mut out);
        assert_eq!(would, p.injected());
        assert!(!p.injected() || seen);
        assert_eq!(inj.held_len(), 0);
        (out, p)
    }

    fn with(doc: &[u8], at: usize) -> Vec<u8> {
        [&doc[..at], SNIP, &doc[at..]].concat()
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).rposition(|w| w == needle)
    }

    /// Checks `doc` against the expected placement and insertion offset,
    /// whole, streamed in one piece, byte by byte, and with a large tail.
    fn check(doc: &[u8], placement: Placement, at: Option<usize>) {
        let expected = match (placement, at) {
            (Placement::Skipped, _) => doc.to_vec(),
            (Placement::End, _) => with(doc, doc.len()),
            (_, Some(a)) => with(doc, a),
            (_, None) => panic!("position needed"),
        };
        let show = String::from_utf8_lossy(doc);
        let (out, p) = whole(doc);
        assert_eq!(p, placement, "whole: {show}");
        assert_eq!(out, expected, "whole: {show}");
        let big = doc.len() + 1;
        for cuts in [vec![], (1..doc.len()).collect::<Vec<_>>()] {
            let (out, p) = stream(doc, &cuts, big);
            assert_eq!(p, placement, "stream {cuts:?}: {show}");
            assert_eq!(out, expected, "stream {cuts:?}: {show}");
        }
    }

    #[test]
    fn before_last_body_case_variants() {
        for end in [
            "</body>",
            "</BODY>",
            "</Body>",
            "</bOdY >",
            "</body\t>",
            "</body\r\n>",
            "</body   \n >",
            "</body/>",
            "</body foo=bar>",
            "</body x=\"a>b\">",
        ] {
            let doc = format!("<html><body><p>hi</p>{end}\n</html>\n");
            let at = doc.find(end).unwrap();
            check(doc.as_bytes(), Placement::BeforeBody, Some(at));
        }
    }

    #[test]
    fn not_body_end_tags() {
        // None of these is a `body` end tag: the snippet goes before </html>.
        for fake in [
            "</bodyx>",
            "</bod>",
            "</ body>",
            "< /body>",
            "<body/>",
            "</b ody>",
            "&lt;/body&gt;",
        ] {
            let doc = format!("<html><body>x{fake}y</html>");
            let at = doc.rfind("</html>");
            check(doc.as_bytes(), Placement::BeforeHtml, at);
        }
    }

    #[test]
    fn last_body_wins() {
        let doc = b"<html><body>a</body>b</body>c</BODY >d</html>";
        check(doc, Placement::BeforeBody, find_last(doc, b"</BODY >"));
        // A later </html> does not move it after the last </body>.
        let doc = b"<html><body>a</html></body></html>";
        check(doc, Placement::BeforeBody, Some(20));
    }

    #[test]
    fn html_fallback_and_end() {
        let doc = b"<html><p>no body end</p></html></HTML>\n";
        check(doc, Placement::BeforeHtml, find_last(doc, b"</HTML>"));
        let doc = b"<!doctype html><html><body><p>unterminated page\n";
        check(doc, Placement::End, None);
        let doc = b"<body>only a body start";
        check(doc, Placement::End, None);
    }

    #[test]
    fn fragments_are_skipped() {
        for doc in [
            &b""[..],
            b"<p>hello</p>",
            b"<div>x</div></body></html>",
            b"<!doctype html><title>t</title><p>implied html and body",
            b"<!-- <html><body> -->text</body>",
            b"<script>'<html><body>'</script></body>",
            b"<htmlx><bodyx>",
            b"<textarea><body></textarea></body>",
            b"\xef\xbb\xbfplain text",
            b"h\x00t\x00m\x00l\x00",
        ] {
            check(doc, Placement::Skipped, None);
        }
    }

    #[test]
    fn document_check_tags_are_case_insensitive_and_may_come_late() {
        check(b"<HTML>x", Placement::End, None);
        check(b"<Body class=a>x", Placement::End, None);
        let doc = b"x</body>y<html>z";
        check(doc, Placement::BeforeBody, Some(1));
    }

    #[test]
    fn body_in_comment_does_not_count() {
        let doc = b"<html><body>a</body><!-- </body> --></html>";
        check(doc, Placement::BeforeBody, Some(13));
        // A comment opened early and closed much later.
        let doc = b"<html><body><!-- a\n</body>\n</html>\n b -->c</html>";
        check(doc, Placement::BeforeHtml, find_last(doc, b"</html>"));
        // Comment variants: `<!-->` and `<!--->` are closed empty comments,
        // `--!>` closes, `-- >` does not.
        let doc = b"<html><body><!-->x</body>";
        check(doc, Placement::BeforeBody, Some(18));
        let doc = b"<html><body><!--->x</body>";
        check(doc, Placement::BeforeBody, Some(19));
        let doc = b"<html><body><!-- a --!>x</body>";
        check(doc, Placement::BeforeBody, Some(24));
        let doc = b"<html><body>x</body><!-- a -- > </body> --></html>";
        check(doc, Placement::BeforeBody, Some(13));
        // Nested `<!--` does not nest: the first `-->` closes.
        let doc = b"<html><body><!-- <!-- --></body> -->";
        check(doc, Placement::BeforeBody, Some(25));
    }

    #[test]
    fn unterminated_comment_runs_to_the_end() {
        let doc = b"<html><body>a</body><!-- </body> </html>";
        check(doc, Placement::BeforeBody, Some(13));
        // End placement would put the snippet inside the comment: skipped.
        let doc = b"<html><body>a<!-- </body>";
        check(doc, Placement::Skipped, None);
    }

    #[test]
    fn end_inside_tag_or_raw_text_is_skipped() {
        for doc in [
            &b"<html><body><div title=\"x"[..],
            b"<html><body><script>var a = 1;",
            b"<html><body><style>p{}",
            b"<html><body></body",
            b"<html><body></",
            b"<html><body><",
            b"<html><body><!DOCTYPE",
            b"<html><body><plaintext></body></html>",
        ] {
            check(doc, Placement::Skipped, None);
        }
    }

    #[test]
    fn bogus_comments_and_doctype() {
        let doc = b"<!DOCTYPE html><html><body>a</body><!x </body> ></html>";
        check(doc, Placement::BeforeBody, Some(28));
        let doc = b"<?xml version='1.0'?><html><body>a</body><?x </body> ?>";
        check(doc, Placement::BeforeBody, Some(34));
        let doc = b"<html><body>a</body><![CDATA[ </body> ]]>";
        check(doc, Placement::BeforeBody, Some(13));
        // `</>` is dropped; `</3` starts a bogus comment.
        let doc = b"<html><body></>a</3 </body> >b</body>x";
        check(doc, Placement::BeforeBody, Some(30));
    }

    #[test]
    fn attribute_values_hide_tags() {
        let doc = b"<html><body>a</body><div title=\"</body>\" data-x='</body>'>";
        check(doc, Placement::BeforeBody, Some(13));
        let doc = b"<html><body>a</body><div title=\"x>y</body>\"></div>";
        check(doc, Placement::BeforeBody, Some(13));
        // A quote is only special at the start of a value.
        let doc = b"<html><body><a b\"c></body>";
        check(doc, Placement::BeforeBody, Some(19));
        let doc = b"<html><body><a b=c\"d></body>";
        check(doc, Placement::BeforeBody, Some(21));
        let doc = b"<html><body><a b=\"x\"=\"y></body>";
        check(doc, Placement::BeforeBody, Some(24));
        let doc = b"<html><body><a b = 'x>' /></body>";
        check(doc, Placement::BeforeBody, Some(26));
        // A quoted value in an end tag counts too.
        let doc = b"<html><body>a</body x=\"</body>\">b";
        check(doc, Placement::BeforeBody, Some(13));
    }

    #[test]
    fn raw_text_elements() {
        for el in [
            "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
            "noscript",
        ] {
            let doc = format!("<html><body>a</body><{el}>x = '</body>';</{el}>\n</html>");
            check(doc.as_bytes(), Placement::BeforeBody, Some(13));
            // Upper-case tags and an end tag with attributes close it too.
            let up = el.to_ascii_uppercase();
            let doc = format!("<html><body><{up} a=1>'</body>'</{up} x>b</body>");
            let at = doc.rfind("</body>");
            check(doc.as_bytes(), Placement::BeforeBody, at);
            // Only the element's own end tag closes it.
            let doc = format!("<html><body><{el}></scrip></styles></{el}x></body>");
            check(doc.as_bytes(), Placement::Skipped, None);
        }
    }

    #[test]
    fn script_escapes() {
        // <!-- in a script: </script> still ends it...
        let doc = b"<html><body><script><!-- x </script>y</body>";
        check(doc, Placement::BeforeBody, Some(37));
        // ...unless a <script> inside the escape double-escapes it.
        let doc = b"<html><body><script><!--\ndocument.write('<script>a</script>');\nvar s = '</body>';\n//--></script>z</body>";
        check(doc, Placement::BeforeBody, find_last(doc, b"</body>"));
        let doc =
            b"<html><body>a</body><script><!-- d('<script></script>'); '</body>' --></script>";
        check(doc, Placement::BeforeBody, Some(13));
        // `-->` leaves the escape, and then </script> ends the script.
        let doc = b"<html><body><script><!-- <script> --> </script>b</body>";
        check(doc, Placement::BeforeBody, Some(48));
        // Without `-->` the double escape survives the first </script>.
        let doc = b"<html><body><script><!-- <script> </script> </body>";
        check(doc, Placement::Skipped, None);
        // `<scripts>` does not double-escape; `<!-x` is not an escape.
        let doc = b"<html><body><script><!-- <scripts> </script>b</body>";
        check(doc, Placement::BeforeBody, Some(45));
        let doc = b"<html><body><script><!-x <script> </script>b</body>";
        check(doc, Placement::BeforeBody, Some(44));
    }

    #[test]
    fn crlf_and_bom() {
        let doc = b"\xef\xbb\xbf<!DOCTYPE html>\r\n<html>\r\n<body>\r\n<p>x</p>\r\n</body>\r\n</html>\r\n";
        let at = find_last(doc, b"</body>");
        check(doc, Placement::BeforeBody, at);
        let (out, _) = whole(doc);
        assert!(out.starts_with(b"\xef\xbb\xbf<!DOCTYPE"));
    }

    #[test]
    fn body_split_at_every_byte_and_pair() {
        let doc = b"<html><body>hello</BODY\r\n></html>";
        let expected = with(doc, 17);
        let tail = 64;
        for i in 0..=doc.len() {
            for j in i..=doc.len() {
                let (out, p) = stream(doc, &[i, j], tail);
                assert_eq!(p, Placement::BeforeBody, "cuts {i} {j}");
                assert_eq!(out, expected, "cuts {i} {j}");
            }
        }
        // With a tail shorter than what follows the tag, every split gives End.
        let tail = doc.len() - 17 - 1;
        for i in 0..=doc.len() {
            let (out, p) = stream(doc, &[i], tail);
            assert_eq!(p, Placement::End, "cut {i}");
            assert_eq!(out, with(doc, doc.len()));
        }
    }

    #[test]
    fn tail_overflow_goes_to_end() {
        let mut doc = b"<html><body>x</body>".to_vec();
        doc.extend(std::iter::repeat_n(b'y', 100));
        // Exactly `tail` bytes from the `<` of </body> to the end: still held.
        let held = doc.len() - 13;
        let (out, p) = stream(&doc, &[5, 40, 90], held);
        assert_eq!(p, Placement::BeforeBody);
        assert_eq!(out, with(&doc, 13));
        // One byte more and it has gone out.
        for cuts in [vec![], vec![5, 40, 90], (1..doc.len()).collect()] {
            let (out, p) = stream(&doc, &cuts, held - 1);
            assert_eq!(p, Placement::End);
            assert_eq!(out, with(&doc, doc.len()));
        }
        // Same for </html> without </body>, and with a zero tail.
        let doc = b"<html>x</html>yyyy";
        assert_eq!(stream(doc, &[], 11).1, Placement::BeforeHtml);
        assert_eq!(stream(doc, &[], 10).1, Placement::End);
        assert_eq!(stream(doc, &[3], 0).1, Placement::End);
        // A released </body> is not replaced by a later </html>.
        let doc = b"<html><body>x</body>yyyyyyyyyyyy</html>";
        let (out, p) = stream(doc, &[], 10);
        assert_eq!(p, Placement::End);
        assert_eq!(out, with(doc, doc.len()));
    }

    #[test]
    fn emits_early_and_holds_only_from_the_candidate() {
        let mut inj = StreamInjector::new(DEFAULT_TAIL_BYTES);
        let mut out = Vec::new();
        inj.push(b"<html><body><p>first</p>", &mut out);
        assert_eq!(out, b"<html><body><p>first</p>");
        assert_eq!(inj.held_len(), 0);
        inj.push(b"more text </bo", &mut out);
        assert_eq!(inj.held_len(), 4, "a possible </body> is held");
        inj.push(b"dy>\n</ht", &mut out);
        assert_eq!(inj.held_len(), 12);
        inj.push(b"ml>\n", &mut out);
        assert_eq!(out, b"<html><body><p>first</p>more text ");
        let p = inj.finish(b"[S]", &mut out);
        assert_eq!(p, Placement::BeforeBody);
        assert_eq!(
            out,
            b"<html><body><p>first</p>more text [S]</body>\n</html>\n"
        );
        // A second </body> releases the first.
        let mut out = Vec::new();
        inj.push(b"<body>a</body>b", &mut out);
        assert_eq!(out, b"<body>a");
        inj.push(b"</body>c", &mut out);
        assert_eq!(out, b"<body>a</body>b");
        // Other end tags are not held once their name is known.
        inj.push(b"</div", &mut out);
        assert_eq!(inj.held_len(), 13);
        inj.push(b"</h", &mut out);
        assert_eq!(inj.held_len(), 16);
        inj.push(b"2>", &mut out);
        assert_eq!(inj.held_len(), 18);
        assert_eq!(inj.finish(b"[S]", &mut out), Placement::BeforeBody);
        assert_eq!(out, b"<body>a</body>b[S]</body>c</div</h2>");
    }

    #[test]
    fn long_pending_end_tag_is_released() {
        // `</body` followed by more whitespace than the tail: the tag is let
        // go while still open, so the result is End, whatever the split.
        let mut doc = b"<html><body>x</body".to_vec();
        doc.extend(std::iter::repeat_n(b' ', 50));
        doc.extend_from_slice(b">");
        for cuts in [vec![], vec![15], vec![20, 40], (1..doc.len()).collect()] {
            let (out, p) = stream(&doc, &cuts, 30);
            assert_eq!(p, Placement::End);
            assert_eq!(out, with(&doc, doc.len()));
        }
        let (_, p) = stream(&doc, &[15], doc.len() - 13);
        assert_eq!(p, Placement::BeforeBody);
    }

    #[test]
    fn injector_is_reusable_after_finish() {
        let mut inj = StreamInjector::new(16);
        let mut out = Vec::new();
        inj.push(b"<!-- never closed <html><body>", &mut out);
        assert_eq!(inj.finish(b"[S]", &mut out), Placement::Skipped);
        let mut out = Vec::new();
        inj.push(b"<html><body>a</body>", &mut out);
        assert_eq!(inj.finish(b"[S]", &mut out), Placement::BeforeBody);
        assert_eq!(out, b"<html><body>a[S]</body>");
    }

    #[test]
    fn placement_names() {
        assert_eq!(Placement::BeforeBody.as_str(), "before_body");
        assert_eq!(Placement::BeforeHtml.as_str(), "before_html");
        assert_eq!(Placement::End.as_str(), "end");
        assert_eq!(Placement::Skipped.as_str(), "skipped");
        assert!(Placement::End.injected());
        assert!(!Placement::Skipped.injected());
    }

    // ---- property tests -------------------------------------------------

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        let fixed: Vec<&'static [u8]> = vec![
            b"<html>",
            b"<HTML lang=en>",
            b"<body>",
            b"<Body class=\"x\">",
            b"</body>",
            b"</BODY >",
            b"</body\r\n>",
            b"</html>",
            b"</HTML>",
            b"<!--",
            b"-->",
            b"--!>",
            b"<!-->",
            b"-",
            b"<!",
            b"<",
            b"</",
            b">",
            b"\"",
            b"'",
            b"=",
            b"<div title=\"",
            b"<script>",
            b"</script>",
            b"<SCRIPT>",
            b"<style>",
            b"</style>",
            b"<title>",
            b"</title>",
            b"<p>",
            b"</p>",
            b"text ",
            b"\r\n",
            b"<!DOCTYPE html>",
            b"<?x",
            b"</bo",
            b"dy>",
            b"</ht",
            b"ml>",
        ];
        prop_oneof![
            8 => prop::sample::select(fixed).prop_map(|f| f.to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    fn document() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(fragment(), 0..48).prop_map(|v| v.concat())
    }

    fn cuts_for(doc_len: usize, idx: &[prop::sample::Index]) -> Vec<usize> {
        let mut cuts: Vec<usize> = idx.iter().map(|i| i.index(doc_len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    /// Whether `out` is `doc` with the snippet inserted at a place that
    /// agrees with `p`.
    fn well_formed(doc: &[u8], out: &[u8], p: Placement) -> bool {
        if p == Placement::Skipped {
            return out == doc && count(out, SNIP) == 0;
        }
        let Some(at) = find_last(out, SNIP) else {
            return false;
        };
        if count(out, SNIP) != 1 || [&out[..at], &out[at + SNIP.len()..]].concat() != doc {
            return false;
        }
        let rest = doc[at..].to_ascii_lowercase();
        match p {
            Placement::BeforeBody => rest.starts_with(b"</body"),
            Placement::BeforeHtml => rest.starts_with(b"</html"),
            _ => rest.is_empty(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn split_independent_and_whole_equivalent(
            doc in document(),
            a in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            b in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            tail in 0usize..96,
        ) {
            prop_assume!(count(&doc, SNIP) == 0);
            let (one, p1) = stream(&doc, &[], tail);
            let (two, p2) = stream(&doc, &cuts_for(doc.len(), &a), tail);
            let (three, p3) = stream(&doc, &cuts_for(doc.len(), &b), tail);
            prop_assert_eq!(p1, p2);
            prop_assert_eq!(p1, p3);
            prop_assert_eq!(&one, &two);
            prop_assert_eq!(&one, &three);
            prop_assert!(well_formed(&doc, &one, p1));

            // With the whole document in the tail: identical to inject_whole.
            let (w, pw) = whole(&doc);
            let (s, ps) = stream(&doc, &cuts_for(doc.len(), &a), doc.len());
            prop_assert_eq!(pw, ps);
            prop_assert_eq!(&w, &s);
            prop_assert!(well_formed(&doc, &w, pw));

            // A short tail only ever turns a placement into End (or Skipped
            // when the end is not markup), and never changes a Skipped.
            if p1 != pw {
                prop_assert!(matches!(pw, Placement::BeforeBody | Placement::BeforeHtml));
                prop_assert!(matches!(p1, Placement::End | Placement::Skipped));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..12),
            tail in 0usize..128,
        ) {
            let doc = pieces.concat();
            let mut inj = StreamInjector::new(tail);
            let mut out = Vec::new();
            for p in &pieces {
                inj.push(p, &mut out);
                prop_assert!(inj.held_len() <= tail);
            }
            let placement = inj.finish(b"S", &mut out);
            let mut w = Vec::new();
            let pw = inject_whole(&doc, b"S", &mut w);
            prop_assert_eq!(out.len(), doc.len() + usize::from(placement.injected()));
            prop_assert_eq!(w.len(), doc.len() + usize::from(pw.injected()));
        }
    }

    // ---- a model built from known parts ----------------------------------

    /// A document piece whose meaning is known by construction, so the
    /// expected placement does not come from the scanner under test.
    #[derive(Debug, Clone)]
    enum Part {
        Text(String),
        /// A start tag; `doc` when it is html or body.
        Start(String, bool),
        /// An end tag in data: Some(true) body, Some(false) html.
        End(String, Option<bool>),
        Comment(String),
        Raw(&'static str, String),
    }

    fn case_variant(name: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<bool>(), name.len()).prop_map(move |up| {
            name.chars()
                .zip(up)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    fn pick(options: &'static [&'static str], n: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(options), 0..n).prop_map(|v| v.concat())
    }

    fn part() -> impl Strategy<Value = Part> {
        // Text and comment contents are built so they cannot end what they
        // are in: no `<` in text, no `-->` / `--!>` / leading `>` in comments,
        // no closing tag of any raw-text element in raw text, no `<!--` in
        // scripts (escapes are covered by the unit tests).
        const TEXT: &[&str] = &[
            "a",
            " ",
            "\r\n",
            "-->",
            "&lt;/body&gt;",
            "\u{e9}",
            ">",
            "\"",
        ];
        const COMMENT: &[&str] = &[
            "x",
            " ",
            "</body>",
            "</html>",
            "<body>",
            "<html>",
            "<script>",
            "</script>",
            "<!--",
            "-",
            "<",
            "!",
            "<!-",
            "\"",
        ];
        const RAW: &[&str] = &[
            "x",
            " ",
            "\"</body>\"",
            "'</html>'",
            "</bod",
            "<body>",
            "<html>",
            "<",
            "-->",
            "</p>",
            "</scrip",
            "<scrip",
            "</styl",
            "</titl",
            "</textare",
            "-",
            ">",
        ];
        const WS: &[&str] = &["", " ", "\n", "\r\n", "\t "];
        prop_oneof![
            3 => pick(TEXT, 6).prop_map(Part::Text),
            2 => (prop_oneof![case_variant("html"), case_variant("body")], any::<bool>())
                .prop_map(|(n, attr)| {
                    let a = if attr { " class=\"a>b</body>\"" } else { "" };
                    Part::Start(format!("<{n}{a}>"), true)
                }),
            1 => prop::sample::select(vec!["p", "div", "head", "bodyx", "htm"])
                .prop_map(|n| Part::Start(format!("<{n} title='</body>'>"), false)),
            3 => (prop_oneof![case_variant("body"), case_variant("html")], prop::sample::select(WS))
                .prop_map(|(n, ws)| {
                    let body = n.eq_ignore_ascii_case("body");
                    Part::End(format!("</{n}{ws}>"), Some(body))
                }),
            1 => prop::sample::select(vec!["</p>", "</div >", "</bodyx>", "</htm>", "</>"])
                .prop_map(|t| Part::End(t.to_string(), None)),
            2 => pick(COMMENT, 6).prop_map(Part::Comment),
            2 => (prop::sample::select(vec!["script", "style", "title", "textarea"]), pick(RAW, 6))
                .prop_map(|(el, text)| Part::Raw(el, text)),
        ]
    }

    /// How a model document ends: cleanly, or inside something left open.
    fn ending() -> impl Strategy<Value = Option<&'static str>> {
        prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(vec![
                "<!-- </body> open",
                "<script> '</body>'",
                "<div title=\"</body>",
                "</body",
                "<",
            ]).prop_map(Some),
        ]
    }

    /// The document and what must happen to it: placement and offset.
    fn model(parts: &[Part], ending: Option<&str>) -> (Vec<u8>, Placement, Option<usize>) {
        let mut doc = String::new();
        let (mut is_doc, mut body, mut html) = (false, None, None);
        for p in parts {
            match p {
                Part::Text(t) => doc.push_str(t),
                Part::Start(t, d) => {
                    is_doc |= *d;
                    doc.push_str(t);
                }
                Part::End(t, kind) => {
                    match kind {
                        Some(true) => body = Some(doc.len()),
                        Some(false) => html = Some(doc.len()),
                        None => {}
                    }
                    doc.push_str(t);
                }
                Part::Comment(c) => {
                    doc.push_str("<!--");
                    doc.push_str(c);
                    doc.push_str("-->");
                }
                Part::Raw(el, text) => {
                    doc.push_str(&format!("<{el}>{text}</{el}>"));
                }
            }
        }
        if let Some(e) = ending {
            doc.push_str(e);
        }
        let (p, at) = if !is_doc {
            (Placement::Skipped, None)
        } else if let Some(b) = body {
            (Placement::BeforeBody, Some(b))
        } else if let Some(h) = html {
            (Placement::BeforeHtml, Some(h))
        } else if ending.is_some() {
            (Placement::Skipped, None)
        } else {
            (Placement::End, None)
        };
        (doc.into_bytes(), p, at)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn matches_the_model(
            parts in prop::collection::vec(part(), 0..24),
            end in ending(),
            a in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            tail in 0usize..128,
        ) {
            let (doc, placement, at) = model(&parts, end);
            let expected = match (placement, at) {
                (Placement::Skipped, _) => doc.clone(),
                (Placement::End, _) => with(&doc, doc.len()),
                (_, Some(a)) => with(&doc, a),
                _ => unreachable!(),
            };
            let (w, pw) = whole(&doc);
            prop_assert_eq!(pw, placement, "{}", String::from_utf8_lossy(&doc));
            prop_assert_eq!(&w, &expected);
            let (s, ps) = stream(&doc, &cuts_for(doc.len(), &a), doc.len());
            prop_assert_eq!(ps, placement);
            prop_assert_eq!(&s, &expected);

            // With a finite tail: the candidate survives iff it starts at
            // most `tail` bytes before the end.
            let (s, ps) = stream(&doc, &cuts_for(doc.len(), &a), tail);
            let kept = at.is_some_and(|x| doc.len() - x <= tail);
            if at.is_none() || kept {
                prop_assert_eq!(ps, placement);
                prop_assert_eq!(&s, &expected);
            } else if end.is_some() {
                prop_assert_eq!(ps, Placement::Skipped);
                prop_assert_eq!(&s, &doc);
            } else {
                prop_assert_eq!(ps, Placement::End);
                prop_assert_eq!(&s, &with(&doc, doc.len()));
            }
        }
    }
}
