//! tg1 tokens: minting them into pages and token hand-outs, and verifying
//! the signed tokens that come back with every collect request.
//!
//! A token binds a pageview id, an issue time, the client's IP bucket and
//! (through the key) its User-Agent to a secret only trackgate knows:
//!
//! ```text
//! token    = tg1.<kind>.<pv>.<iat>.<ipb>.<key>
//! key      = base64url_nopad(HMAC-SHA256(secret, "tg1.<kind>.<pv>.<iat>.<ipb>." + uahash))
//! uahash   = hex(SHA-256(User-Agent)[..8])
//! ipb      = hex(SHA-256(ip bucket)[..4]),  bucket = "a.b.c.0/24" or "<v6 /48 network>/48"
//! presented = tg1.<kind>.<pv>.<iat>.<ipb>.<hex(HMAC-SHA256(key as ASCII, body))>
//! ```
//!
//! The client never learns the secret; it holds a key that is only good for
//! its own User-Agent, pageview and issue time, and proves possession by
//! MACing each request body. Verification is on the hot path: it parses
//! in place, keeps everything on the stack, and clones precomputed HMAC
//! states. An IP bucket that differs from the request's is reported, not
//! rejected (mobile clients move between networks; it is a fraud signal).
//! `docs/tg1-vectors.json` holds test vectors for other implementations.

use std::fmt;
use std::net::IpAddr;

use hmac::{digest::KeyInit, Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::client_ip::IpText;
use super::ipmode::network;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// How far in the future an issue time may be (clock skew between cores,
/// hosts, or a restarted clock), in seconds.
pub const MAX_SKEW_S: u64 = 60;

/// Where a token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Minted into a page trackgate served (`p`).
    Page,
    /// Fetched from `/hmac/public-key` or `/hmac.js` (`f`).
    Fetched,
}

impl Kind {
    /// The token field: `'p'` or `'f'`.
    pub fn as_char(self) -> char {
        match self {
            Kind::Page => 'p',
            Kind::Fetched => 'f',
        }
    }

    /// The token field as a string: `"p"` or `"f"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Page => "p",
            Kind::Fetched => "f",
        }
    }

    fn from_field(f: &[u8]) -> Option<Kind> {
        match f {
            b"p" => Some(Kind::Page),
            b"f" => Some(Kind::Fetched),
            _ => None,
        }
    }
}

/// Why a presented token was refused. [`AuthError::reason`] is the metric
/// label; the messages never include the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// No token was sent.
    Missing,
    /// The token is not six well-formed `tg1` fields.
    Malformed,
    /// The token was issued more than the TTL ago.
    Expired,
    /// The token was issued more than [`MAX_SKEW_S`] in the future.
    NotYetValid,
    /// The MAC matches neither the current nor the previous secret.
    BadSignature,
}

impl AuthError {
    /// Stable snake_case label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Missing => "no tg1 token in X-GoTrack-HMAC or _tg",
            AuthError::Malformed => "tg1 token is malformed",
            AuthError::Expired => "tg1 token has expired",
            AuthError::NotYetValid => "tg1 token is issued in the future",
            AuthError::BadSignature => "tg1 token signature does not match the body",
        })
    }
}

impl std::error::Error for AuthError {}

/// What a valid token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub kind: Kind,
    pub pageview_id: Uuid,
    pub iat: u64,
    /// `now - iat`, 0 for a token issued (slightly) in the future.
    pub age_s: u64,
    /// The token's IP bucket is not the request's (a signal, not an error).
    pub ip_changed: bool,
    /// Only the previous secret verified it (a rotation is under way).
    pub previous_secret: bool,
}

/// Mints and verifies tg1 tokens. Built once at start; each core gets a clone
/// (the keyed HMAC states are precomputed, so a clone is a memcpy).
#[derive(Clone)]
pub struct Signer {
    current: HmacSha256,
    previous: Option<HmacSha256>,
    ttl_s: u64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("secret", &"<redacted>")
            .field(
                "previous_secret",
                &self.previous.as_ref().map(|_| "<redacted>"),
            )
            .field("ttl_s", &self.ttl_s)
            .finish()
    }
}

/// The longest possible presented token: `tg1.k.` + 36 + `.` + 20 + `.` + 8 +
/// `.` + 64.
const MAX_PRESENTED: usize = 6 + 36 + 1 + 20 + 1 + 8 + 1 + 64;
const KEY_LEN: usize = 43;

/// Parsed fields of a presented token, in canonical form.
struct Presented {
    kind: Kind,
    pv: Uuid,
    iat: u64,
    ipb: [u8; 8],
    mac: [u8; 32],
}

impl Signer {
    /// A signer with the current `secret`, optionally the `previous` one
    /// (still accepted while clients holding old keys age out), and the token
    /// lifetime in seconds.
    pub fn new(secret: &[u8], previous: Option<&[u8]>, ttl_s: u64) -> Signer {
        Signer {
            current: keyed_hmac(secret),
            previous: previous.map(keyed_hmac),
            ttl_s,
        }
    }

    /// Token lifetime in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    /// A token for `pv` issued at `iat` to the client at `ip` with User-Agent
    /// `ua`, with the key (not a MAC) as last field. Signed with the current
    /// secret.
    pub fn mint(&self, kind: Kind, pv: Uuid, iat: u64, ip: IpAddr, ua: &[u8]) -> String {
        let mut pv_buf = [0u8; 36];
        let pv_txt = pv.hyphenated().encode_lower(&mut pv_buf);
        let mut iat_buf = [0u8; 20];
        let iat_txt = write_decimal(iat, &mut iat_buf);
        let ipb = ipb(ip);
        let key = derive_key(
            &self.current,
            kind,
            pv_txt.as_bytes(),
            iat_txt,
            &ipb,
            &ua_hash(ua),
        );
        let mut out = String::with_capacity(6 + 36 + 1 + iat_txt.len() + 1 + 8 + 1 + KEY_LEN);
        out.push_str("tg1.");
        out.push_str(kind.as_str());
        out.push('.');
        out.push_str(pv_txt);
        push_ascii(&mut out, b".");
        push_ascii(&mut out, iat_txt);
        push_ascii(&mut out, b".");
        push_ascii(&mut out, &ipb);
        push_ascii(&mut out, b".");
        push_ascii(&mut out, &key);
        out
    }

    /// Checks a presented token (header `X-GoTrack-HMAC` or query `_tg`)
    /// against the request's `body`, User-Agent `ua` and address `ip` at
    /// unix time `now`. Never panics and does not allocate.
    pub fn verify(
        &self,
        presented: &[u8],
        body: &[u8],
        ua: &[u8],
        ip: IpAddr,
        now: u64,
    ) -> Result<Verified, AuthError> {
        let t = parse_presented(presented)?;
        if t.iat > now.saturating_add(MAX_SKEW_S) {
            return Err(AuthError::NotYetValid);
        }
        if now.saturating_sub(t.iat) > self.ttl_s {
            return Err(AuthError::Expired);
        }
        let mut pv_buf = [0u8; 36];
        let pv_txt = t.pv.hyphenated().encode_lower(&mut pv_buf).as_bytes();
        let mut iat_buf = [0u8; 20];
        let iat_txt = write_decimal(t.iat, &mut iat_buf);
        let uah = ua_hash(ua);
        let check = |secret: &HmacSha256| {
            let key = derive_key(secret, t.kind, pv_txt, iat_txt, &t.ipb, &uah);
            keyed_hmac(&key)
                .chain_update(body)
                .verify_slice(&t.mac)
                .is_ok()
        };
        let previous_secret = if check(&self.current) {
            false
        } else if self.previous.as_ref().is_some_and(check) {
            true
        } else {
            return Err(AuthError::BadSignature);
        };
        Ok(Verified {
            kind: t.kind,
            pageview_id: t.pv,
            iat: t.iat,
            age_s: now.saturating_sub(t.iat),
            ip_changed: t.ipb != ipb(ip),
            previous_secret,
        })
    }
}

/// The client side: turns a minted token (key as last field) into the value
/// to send for `body`, replacing the key with hex(HMAC-SHA256(key, body)).
/// `None` if `token_with_key` is not shaped like a minted token.
pub fn sign(token_with_key: &str, body: &[u8]) -> Option<String> {
    let (head, key) = token_with_key.rsplit_once('.')?;
    let well_formed = head.starts_with("tg1.")
        && head.bytes().filter(|&b| b == b'.').count() == 4
        && key.len() == KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return None;
    }
    let mac = keyed_hmac(key.as_bytes())
        .chain_update(body)
        .finalize()
        .into_bytes();
    let mut hex = [0u8; 64];
    hex_lower_into(&mac, &mut hex);
    let mut out = String::with_capacity(head.len() + 1 + 64);
    out.push_str(head);
    out.push('.');
    push_ascii(&mut out, &hex);
    Some(out)
}

/// The bucket string of `ip` (canonicalised): `a.b.c.0/24` for IPv4, the /48
/// network in `Ipv6Addr` display form plus `/48` for IPv6.
pub fn ip_bucket(ip: IpAddr) -> String {
    String::from_utf8_lossy(bucket_text(ip).as_bytes()).into_owned()
}

/// The token's `ipb` field for `ip`: lowercase hex of the first 4 bytes of
/// SHA-256 of [`ip_bucket`], as ASCII.
pub fn ipb(ip: IpAddr) -> [u8; 8] {
    let digest = Sha256::digest(bucket_text(ip).as_bytes());
    let mut out = [0u8; 8];
    hex_lower_into(digest.get(..4).unwrap_or(&[]), &mut out);
    out
}

/// The User-Agent hash bound into the key: lowercase hex of the first 8 bytes
/// of SHA-256(`ua`), as ASCII.
pub fn ua_hash(ua: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(ua);
    let mut out = [0u8; 16];
    hex_lower_into(digest.get(..8).unwrap_or(&[]), &mut out);
    out
}

/// Appends bytes that are ASCII by construction (digits, hex, base64url).
fn push_ascii(out: &mut String, ascii: &[u8]) {
    out.extend(ascii.iter().map(|&b| char::from(b)));
}

fn bucket_text(ip: IpAddr) -> IpText {
    let (net, prefix) = network(ip);
    let mut t = IpText::new();
    // 64 bytes always hold a network address and "/48"; cannot fail.
    let _ = fmt::Write::write_fmt(&mut t, format_args!("{net}/{prefix}"));
    t
}

fn derive_key(
    secret: &HmacSha256,
    kind: Kind,
    pv: &[u8],
    iat: &[u8],
    ipb: &[u8; 8],
    uah: &[u8; 16],
) -> [u8; KEY_LEN] {
    let mac = secret
        .clone()
        .chain_update(b"tg1.")
        .chain_update(kind.as_str())
        .chain_update(b".")
        .chain_update(pv)
        .chain_update(b".")
        .chain_update(iat)
        .chain_update(b".")
        .chain_update(ipb)
        .chain_update(b".")
        .chain_update(uah)
        .finalize()
        .into_bytes();
    base64url_32(&mac.into())
}

fn parse_presented(p: &[u8]) -> Result<Presented, AuthError> {
    if p.is_empty() {
        return Err(AuthError::Missing);
    }
    if p.len() > MAX_PRESENTED {
        return Err(AuthError::Malformed);
    }
    let mut fields = p.split(|&b| b == b'.');
    let mut next = || fields.next().ok_or(AuthError::Malformed);
    let (prefix, kind, pv, iat, ipb, mac) = (next()?, next()?, next()?, next()?, next()?, next()?);
    if fields.next().is_some() || prefix != b"tg1" {
        return Err(AuthError::Malformed);
    }
    let kind = Kind::from_field(kind).ok_or(AuthError::Malformed)?;
    if pv.len() != 36 {
        return Err(AuthError::Malformed);
    }
    let pv = Uuid::try_parse_ascii(pv).map_err(|_| AuthError::Malformed)?;
    let iat = parse_decimal(iat).ok_or(AuthError::Malformed)?;
    let ipb: [u8; 8] = ipb.try_into().map_err(|_| AuthError::Malformed)?;
    if !ipb.iter().all(|&b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(AuthError::Malformed);
    }
    if mac.len() != 64 {
        return Err(AuthError::Malformed);
    }
    let mut mac_bytes = [0u8; 32];
    for (out, pair) in mac_bytes.iter_mut().zip(mac.chunks_exact(2)) {
        match pair {
            [hi, lo] => {
                let digit = |b: u8| crate::http::hex_digit(b).ok_or(AuthError::Malformed);
                *out = (digit(*hi)? << 4) | digit(*lo)?
            }
            _ => return Err(AuthError::Malformed),
        }
    }
    Ok(Presented {
        kind,
        pv,
        iat,
        ipb,
        mac: mac_bytes,
    })
}

/// 1..=20 ASCII digits that fit a u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// HMAC-SHA256 keyed with `key`, built without a fallible constructor: a key
/// up to the 64-byte block size is zero-padded, a longer one is hashed first,
/// exactly as HMAC (RFC 2104) defines it.
pub(crate) fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let h = Sha256::digest(key);
        if let Some(dst) = block.get_mut(..h.len()) {
            dst.copy_from_slice(&h);
        }
    } else if let Some(dst) = block.get_mut(..key.len()) {
        dst.copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block)
}

/// Writes lowercase hex of `src` into `dst` (which should be twice as long;
/// extra input or output is ignored).
pub(crate) fn hex_lower_into(src: &[u8], dst: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (b, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out[0] = HEX[usize::from(b >> 4)];
        out[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// Writes `n` in decimal into `buf`, returning the digits.
pub(crate) fn write_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// base64url without padding of 32 bytes: 43 characters.
fn base64url_32(src: &[u8; 32]) -> [u8; KEY_LEN] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let sym = |v: u32| ALPHABET[(v & 63) as usize];
    let mut out = [0u8; KEY_LEN];
    let (chunks, rest) = src.split_at(30);
    for (c, o) in chunks.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let v = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        o[0] = sym(v >> 18);
        o[1] = sym(v >> 12);
        o[2] = sym(v >> 6);
        o[3] = sym(v);
    }
    // 2 bytes left = 16 bits = 3 symbols (the last one zero-padded).
    let v = (u32::from(rest[0]) << 16) | (u32::from(rest[1]) << 8);
    out[40] = sym(v >> 18);
    out[41] = sym(v >> 12);
    out[42] = sym(v >> 6);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"current-secret-0123456789";
    const PREVIOUS: &[u8] = b"previous-secret-0123456789";
    const TTL: u64 = 1800;
    const NOW: u64 = 1_767_225_600;
    const UA: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) Test/1.0";
    const BODY: &[u8] = br#"{"e":"pageview"}"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pv() -> Uuid {
        Uuid::parse_str("0192f0c1-7a3b-7cde-8f01-23456789abcd").unwrap()
    }

    fn signer() -> Signer {
        Signer::new(SECRET, Some(PREVIOUS), TTL)
    }

    fn presented(s: &Signer, iat: u64, ip_s: &str, ua: &[u8], body: &[u8]) -> String {
        let t = s.mint(Kind::Page, pv(), iat, ip(ip_s), ua);
        sign(&t, body).unwrap()
    }

    fn check(
        s: &Signer,
        p: &str,
        body: &[u8],
        ua: &[u8],
        ip_s: &str,
        now: u64,
    ) -> Result<Verified, AuthError> {
        s.verify(p.as_bytes(), body, ua, ip(ip_s), now)
    }

    #[test]
    fn keyed_hmac_matches_the_crate_for_all_key_lengths() {
        for len in [0usize, 1, 16, 43, 63, 64, 65, 100, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let ours = keyed_hmac(&key)
                .chain_update(b"msg")
                .finalize()
                .into_bytes();
            let theirs = <HmacSha256 as Mac>::new_from_slice(&key)
                .unwrap()
                .chain_update(b"msg")
                .finalize()
                .into_bytes();
            assert_eq!(ours, theirs, "key length {len}");
        }
    }

    #[test]
    fn base64url_known_answers() {
        let mut src = [0u8; 32];
        assert_eq!(
            &base64url_32(&src),
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        );
        src = [0xff; 32];
        assert_eq!(
            &base64url_32(&src),
            b"__________________________________________8"
        );
        for (i, b) in src.iter_mut().enumerate() {
            *b = i as u8;
        }
        // python3: base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=")
        assert_eq!(
            &base64url_32(&src),
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        );
        src[0] = 0xfb;
        src[1] = 0xef;
        assert!(base64url_32(&src).starts_with(b"--8C"));
    }

    #[test]
    fn decimal_round_trip() {
        let mut b = [0u8; 20];
        for n in [0u64, 7, 10, 1_767_225_600, u64::MAX] {
            let s = write_decimal(n, &mut b).to_vec();
            assert_eq!(s, n.to_string().into_bytes());
            assert_eq!(parse_decimal(&s), Some(n));
        }
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"000000000000000000001"), None);
        assert_eq!(parse_decimal(b"00012"), Some(12));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b"1 "), None);
    }

    #[test]
    fn kind_spellings() {
        assert_eq!(Kind::Page.as_char(), 'p');
        assert_eq!(Kind::Fetched.as_char(), 'f');
        assert_eq!(Kind::Page.as_str(), "p");
        assert_eq!(Kind::Fetched.as_str(), "f");
    }

    #[test]
    fn buckets() {
        assert_eq!(ip_bucket(ip("203.0.113.77")), "203.0.113.0/24");
        assert_eq!(ip_bucket(ip("::ffff:203.0.113.77")), "203.0.113.0/24");
        assert_eq!(ip_bucket(ip("2001:db8:1:2::3")), "2001:db8:1::/48");
        assert_eq!(ip_bucket(ip("::1")), "::/48");
        assert_eq!(ipb(ip("203.0.113.1")), ipb(ip("203.0.113.254")));
        assert_ne!(ipb(ip("203.0.113.1")), ipb(ip("203.0.114.1")));
        assert_eq!(ipb(ip("::ffff:203.0.113.1")), ipb(ip("203.0.113.1")));
        let b = ipb(ip("203.0.113.1"));
        let d = Sha256::digest(b"203.0.113.0/24");
        let expect: String = d[..4].iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(&b, expect.as_bytes());
    }

    #[test]
    fn ua_hash_is_truncated_sha256() {
        let d = Sha256::digest(b"");
        let expect: String = d[..8].iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(&ua_hash(b""), expect.as_bytes());
        assert_ne!(ua_hash(b"a"), ua_hash(b"b"));
    }

    #[test]
    fn mint_shape() {
        let t = signer().mint(Kind::Fetched, pv(), NOW, ip("203.0.113.9"), UA);
        let f: Vec<&str> = t.split('.').collect();
        assert_eq!(f.len(), 6, "{t}");
        assert_eq!(f[0], "tg1");
        assert_eq!(f[1], "f");
        assert_eq!(f[2], "0192f0c1-7a3b-7cde-8f01-23456789abcd");
        assert_eq!(f[3], "1767225600");
        assert_eq!(f[4].as_bytes(), ipb(ip("203.0.113.9")));
        assert_eq!(f[5].len(), 43);
        assert!(f[5]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!t.contains('='));
        // Deterministic.
        assert_eq!(
            t,
            signer().mint(Kind::Fetched, pv(), NOW, ip("203.0.113.9"), UA)
        );
        // The key depends on every input.
        let base = signer().mint(Kind::Page, pv(), NOW, ip("203.0.113.9"), UA);
        for other in [
            signer().mint(Kind::Page, Uuid::nil(), NOW, ip("203.0.113.9"), UA),
            signer().mint(Kind::Page, pv(), NOW + 1, ip("203.0.113.9"), UA),
            signer().mint(Kind::Page, pv(), NOW, ip("203.0.114.9"), UA),
            signer().mint(Kind::Page, pv(), NOW, ip("203.0.113.9"), b"other"),
            Signer::new(PREVIOUS, None, TTL).mint(Kind::Page, pv(), NOW, ip("203.0.113.9"), UA),
        ] {
            assert_ne!(
                base.rsplit_once('.').unwrap().1,
                other.rsplit_once('.').unwrap().1
            );
        }
    }

    #[test]
    fn round_trip() {
        let s = signer();
        for (kind, addr) in [
            (Kind::Page, "203.0.113.9"),
            (Kind::Fetched, "2001:db8:1::5"),
            (Kind::Page, "::ffff:198.51.100.4"),
        ] {
            let t = s.mint(kind, pv(), NOW - 10, ip(addr), UA);
            for body in [&b""[..], BODY, "héllo ✓".as_bytes()] {
                let p = sign(&t, body).unwrap();
                let v = check(&s, &p, body, UA, addr, NOW).unwrap();
                assert_eq!(
                    v,
                    Verified {
                        kind,
                        pageview_id: pv(),
                        iat: NOW - 10,
                        age_s: 10,
                        ip_changed: false,
                        previous_secret: false,
                    }
                );
            }
        }
        // An empty User-Agent works too.
        let p = presented(&s, NOW, "203.0.113.9", b"", BODY);
        assert!(check(&s, &p, BODY, b"", "203.0.113.9", NOW).is_ok());
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let s = signer();
        let p = presented(&s, NOW, "203.0.113.9", UA, BODY);
        let (head, mac) = p.rsplit_once('.').unwrap();
        let up = format!("{head}.{}", mac.to_ascii_uppercase());
        assert!(check(&s, &up, BODY, UA, "203.0.113.9", NOW).is_ok());
        let pv_up = p.replace(
            "0192f0c1-7a3b-7cde-8f01-23456789abcd",
            "0192F0C1-7A3B-7CDE-8F01-23456789ABCD",
        );
        assert_ne!(pv_up, p);
        let v = check(&s, &pv_up, BODY, UA, "203.0.113.9", NOW).unwrap();
        assert_eq!(v.pageview_id, pv());
    }

    #[test]
    fn other_ip_is_a_signal_not_a_rejection() {
        let s = signer();
        let p = presented(&s, NOW, "203.0.113.9", UA, BODY);
        let v = check(&s, &p, BODY, UA, "198.51.100.4", NOW).unwrap();
        assert!(v.ip_changed);
        let v = check(&s, &p, BODY, UA, "203.0.113.200", NOW).unwrap();
        assert!(!v.ip_changed, "same /24");
        let v = check(&s, &p, BODY, UA, "::ffff:203.0.113.1", NOW).unwrap();
        assert!(!v.ip_changed, "mapped form of the same /24");
    }

    #[test]
    fn rejection_reasons() {
        let s = signer();
        let p = presented(&s, NOW, "203.0.113.9", UA, BODY);
        assert_eq!(
            check(&s, "", BODY, UA, "203.0.113.9", NOW),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&s, &p, br#"{"e":"pageviex"}"#, UA, "203.0.113.9", NOW),
            Err(AuthError::BadSignature),
            "tampered body"
        );
        assert_eq!(
            check(&s, &p, BODY, b"Mozilla/5.0 other", "203.0.113.9", NOW),
            Err(AuthError::BadSignature),
            "wrong UA"
        );
        assert_eq!(
            check(&s, &p, BODY, UA, "203.0.113.9", NOW + TTL + 1),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check(&s, &p, BODY, UA, "203.0.113.9", NOW - 61),
            Err(AuthError::NotYetValid)
        );
        // Fields of the token are bound to the key.
        let tweaked = p.replacen(".1767225600.", ".1767225601.", 1);
        assert_eq!(
            check(&s, &tweaked, BODY, UA, "203.0.113.9", NOW),
            Err(AuthError::BadSignature)
        );
        let tweaked = p.replacen("tg1.p.", "tg1.f.", 1);
        assert_eq!(
            check(&s, &tweaked, BODY, UA, "203.0.113.9", NOW),
            Err(AuthError::BadSignature)
        );
        let other_ipb = String::from_utf8(ipb(ip("198.51.100.4")).to_vec()).unwrap();
        let mine = String::from_utf8(ipb(ip("203.0.113.9")).to_vec()).unwrap();
        let tweaked = p.replacen(&mine, &other_ipb, 1);
        assert_eq!(
            check(&s, &tweaked, BODY, UA, "198.51.100.4", NOW),
            Err(AuthError::BadSignature),
            "the ipb cannot be rewritten to hide a move"
        );
        // Sending the key instead of a MAC is malformed.
        let minted = s.mint(Kind::Page, pv(), NOW, ip("203.0.113.9"), UA);
        assert_eq!(
            check(&s, &minted, BODY, UA, "203.0.113.9", NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn malformed_tokens() {
        let s = signer();
        let p = presented(&s, NOW, "203.0.113.9", UA, BODY);
        let f: Vec<&str> = p.split('.').collect();
        let join = |parts: &[&str]| parts.join(".");
        let long_mac = format!("{}0", f[5]);
        let bad = [
            join(&f[..5]),
            format!("{p}."),
            format!(".{p}"),
            format!("{p}.00"),
            join(&["tg2", f[1], f[2], f[3], f[4], f[5]]),
            join(&["TG1", f[1], f[2], f[3], f[4], f[5]]),
            join(&["tg1", "x", f[2], f[3], f[4], f[5]]),
            join(&["tg1", "P", f[2], f[3], f[4], f[5]]),
            join(&["tg1", "", f[2], f[3], f[4], f[5]]),
            join(&[
                "tg1",
                f[1],
                "0192f0c17a3b7cde8f0123456789abcd",
                f[3],
                f[4],
                f[5],
            ]),
            join(&[
                "tg1",
                f[1],
                "{0192f0c1-7a3b-7cde-8f01-23456789abcd}",
                f[3],
                f[4],
                f[5],
            ]),
            join(&[
                "tg1",
                f[1],
                "0192f0c1-7a3b-7cde-8f01-23456789abcg",
                f[3],
                f[4],
                f[5],
            ]),
            join(&[
                "tg1",
                f[1],
                "0192f0c1-7a3b-7cde-8f0123-456789abcd",
                f[3],
                f[4],
                f[5],
            ]),
            join(&["tg1", f[1], f[2], "", f[4], f[5]]),
            join(&["tg1", f[1], f[2], "+1767225600", f[4], f[5]]),
            join(&["tg1", f[1], f[2], "-1", f[4], f[5]]),
            join(&["tg1", f[1], f[2], "1767225600 ", f[4], f[5]]),
            join(&["tg1", f[1], f[2], "99999999999999999999", f[4], f[5]]),
            join(&["tg1", f[1], f[2], "123456789012345678901", f[4], f[5]]),
            join(&["tg1", f[1], f[2], f[3], "abcdef0", f[4], f[5]]),
            join(&["tg1", f[1], f[2], f[3], "abcdef012", f[5]]),
            join(&["tg1", f[1], f[2], f[3], "ABCDEF01", f[5]]),
            join(&["tg1", f[1], f[2], f[3], "abcdefgh", f[5]]),
            join(&["tg1", f[1], f[2], f[3], f[4], &f[5][..63]]),
            join(&["tg1", f[1], f[2], f[3], f[4], &long_mac]),
            join(&[
                "tg1",
                f[1],
                f[2],
                f[3],
                f[4],
                &f[5].replacen(|_| true, "g", 1),
            ]),
            " ".repeat(10),
            "x".repeat(10_000),
        ];
        for b in bad {
            assert_eq!(
                check(&s, &b, BODY, UA, "203.0.113.9", NOW),
                Err(AuthError::Malformed),
                "{b}"
            );
        }
    }

    #[test]
    fn ttl_and_skew_boundaries() {
        let s = signer();
        let p = presented(&s, NOW, "203.0.113.9", UA, BODY);
        let at = |now| check(&s, &p, BODY, UA, "203.0.113.9", now);
        assert_eq!(at(NOW + TTL).unwrap().age_s, TTL, "iat == now - ttl");
        assert_eq!(at(NOW + TTL + 1), Err(AuthError::Expired));
        assert_eq!(at(NOW - 60).unwrap().age_s, 0, "iat == now + 60");
        assert_eq!(at(NOW - 61), Err(AuthError::NotYetValid));
        // Extreme clocks never overflow.
        assert_eq!(at(0), Err(AuthError::NotYetValid));
        assert_eq!(at(u64::MAX), Err(AuthError::Expired));
        let late = presented(&s, u64::MAX, "203.0.113.9", UA, BODY);
        assert!(check(&s, &late, BODY, UA, "203.0.113.9", u64::MAX).is_ok());
        assert_eq!(s.ttl_s(), TTL);
    }

    #[test]
    fn previous_secret_during_and_after_rotation() {
        let old = Signer::new(PREVIOUS, None, TTL);
        let p = presented(&old, NOW, "203.0.113.9", UA, BODY);
        let v = check(&signer(), &p, BODY, UA, "203.0.113.9", NOW).unwrap();
        assert!(v.previous_secret);
        let v = check(
            &signer(),
            &presented(&signer(), NOW, "203.0.113.9", UA, BODY),
            BODY,
            UA,
            "203.0.113.9",
            NOW,
        )
        .unwrap();
        assert!(!v.previous_secret);
        // Rotation finished: the previous secret is dropped.
        let rotated = Signer::new(SECRET, None, TTL);
        assert_eq!(
            check(&rotated, &p, BODY, UA, "203.0.113.9", NOW),
            Err(AuthError::BadSignature)
        );
        // An unrelated secret is never accepted.
        let stranger = Signer::new(b"some-other-secret-xyz", None, TTL);
        let p = presented(&stranger, NOW, "203.0.113.9", UA, BODY);
        assert_eq!(
            check(&signer(), &p, BODY, UA, "203.0.113.9", NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn sign_rejects_non_tokens() {
        let t = signer().mint(Kind::Page, pv(), NOW, ip("203.0.113.9"), UA);
        assert!(sign(&t, BODY).is_some());
        assert_eq!(sign("", BODY), None);
        assert_eq!(sign("tg1.p.x.y", BODY), None);
        assert_eq!(sign(&t.replacen("tg1", "tg2", 1), BODY), None);
        assert_eq!(sign(&format!("{t}x"), BODY), None);
        assert_eq!(sign(&format!("a.{t}"), BODY), None);
        let signed = sign(&t, BODY).unwrap();
        assert_eq!(sign(&signed, BODY), None, "a MAC is not a key");
    }

    #[test]
    fn reasons_and_messages() {
        let all = [
            (AuthError::Missing, "missing"),
            (AuthError::Malformed, "malformed"),
            (AuthError::Expired, "expired"),
            (AuthError::NotYetValid, "not_yet_valid"),
            (AuthError::BadSignature, "bad_signature"),
        ];
        for (e, r) in all {
            assert_eq!(e.reason(), r);
            assert!(e.to_string().contains("tg1"), "{e}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let d = format!("{:?}", signer());
        assert!(d.contains("<redacted>") && d.contains("1800"), "{d}");
        assert!(!d.contains("secret-0123"), "{d}");
        // Not even as bytes (e.g. a derived Debug of the HMAC state).
        assert!(!d.contains("99, 117, 114"), "{d}");
    }

    #[test]
    fn published_vectors() {
        use serde_json::Value;
        let doc: Value = serde_json::from_str(include_str!("../../docs/tg1-vectors.json")).unwrap();
        let text = |v: &Value, k: &str| -> String {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
                .to_owned()
        };
        let num = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        let secret = text(&doc, "secret");
        let previous = text(&doc, "previous_secret");
        assert!(secret.len() >= 16 && previous.len() >= 16);
        let ttl = num(&doc, "ttl_s");
        assert_eq!(ttl, 1800);
        assert_eq!(num(&doc, "max_skew_s"), MAX_SKEW_S);
        let signer = Signer::new(secret.as_bytes(), Some(previous.as_bytes()), ttl);

        let tokens = doc["tokens"].as_array().unwrap();
        assert!(tokens.len() >= 5);
        for t in tokens {
            let addr = ip(&text(t, "ip"));
            let ua = text(t, "user_agent");
            assert_eq!(ip_bucket(addr), text(t, "ip_bucket"), "{t}");
            assert_eq!(&ipb(addr)[..], text(t, "ipb").as_bytes(), "{t}");
            assert_eq!(
                &ua_hash(ua.as_bytes())[..],
                text(t, "ua_hash").as_bytes(),
                "{t}"
            );
            let by = match text(t, "signed_with").as_str() {
                "secret" => Signer::new(secret.as_bytes(), None, ttl),
                "previous_secret" => Signer::new(previous.as_bytes(), None, ttl),
                other => panic!("unknown signed_with {other}"),
            };
            let kind = match text(t, "kind").as_str() {
                "p" => Kind::Page,
                "f" => Kind::Fetched,
                other => panic!("unknown kind {other}"),
            };
            let pv = Uuid::parse_str(&text(t, "pageview_id")).unwrap();
            let minted = by.mint(kind, pv, num(t, "iat"), addr, ua.as_bytes());
            assert_eq!(minted, text(t, "token"), "{t}");
            assert_eq!(minted.rsplit_once('.').unwrap().1, text(t, "key"), "{t}");
        }

        let signatures = doc["signatures"].as_array().unwrap();
        assert!(signatures.iter().any(|s| s["body"] == ""));
        assert!(signatures.iter().any(|s| !text(s, "body").is_ascii()));
        for s in signatures {
            let got = sign(&text(s, "token"), text(s, "body").as_bytes());
            assert_eq!(got.as_deref(), Some(text(s, "header").as_str()), "{s}");
        }

        let verifications = doc["verifications"].as_array().unwrap();
        let mut seen = std::collections::HashSet::new();
        for v in verifications {
            let r = signer.verify(
                text(v, "header").as_bytes(),
                text(v, "body").as_bytes(),
                text(v, "user_agent").as_bytes(),
                ip(&text(v, "ip")),
                num(v, "now"),
            );
            let verdict = text(v, "verdict");
            seen.insert(verdict.clone());
            match r {
                Ok(ok) => {
                    assert_eq!(verdict, "ok", "{v}");
                    assert_eq!(Some(ok.ip_changed), v["ip_changed"].as_bool(), "{v}");
                    assert_eq!(
                        Some(ok.previous_secret),
                        v["previous_secret"].as_bool(),
                        "{v}"
                    );
                    seen.insert(format!("ip_changed={}", ok.ip_changed));
                    seen.insert(format!("previous_secret={}", ok.previous_secret));
                }
                Err(e) => {
                    assert_eq!(e.reason(), verdict, "{v}");
                    assert!(v.get("ip_changed").is_none(), "{v}");
                }
            }
        }
        for want in [
            "ok",
            "missing",
            "malformed",
            "expired",
            "not_yet_valid",
            "bad_signature",
            "ip_changed=true",
            "ip_changed=false",
            "previous_secret=true",
        ] {
            assert!(seen.contains(want), "vectors lack a {want} case");
        }
    }

    proptest! {
        #[test]
        fn verify_never_panics(presented in proptest::collection::vec(any::<u8>(), 0..200),
                               body in proptest::collection::vec(any::<u8>(), 0..64),
                               ua in proptest::collection::vec(any::<u8>(), 0..64),
                               now in any::<u64>()) {
            let r = signer().verify(&presented, &body, &ua, ip("203.0.113.9"), now);
            // Random bytes essentially never verify.
            prop_assert!(r.is_err());
        }

        #[test]
        fn verify_never_panics_on_token_shaped_input(
            kind in "[pfx]",
            pv in "[0-9a-fA-F-]{34,38}",
            iat in "[0-9+-]{0,22}",
            ipb in "[0-9a-gA-G]{7,9}",
            mac in "[0-9a-gA-G]{62,66}",
            now in any::<u64>(),
        ) {
            let p = format!("tg1.{kind}.{pv}.{iat}.{ipb}.{mac}");
            let r = signer().verify(p.as_bytes(), BODY, UA, ip("203.0.113.9"), now);
            prop_assert!(r.is_err());
        }

        #[test]
        fn round_trip_any_inputs(body in proptest::collection::vec(any::<u8>(), 0..256),
                                 ua in proptest::collection::vec(any::<u8>(), 0..128),
                                 v4 in any::<u32>(), iat in 0u64..=u64::MAX - 2000, age in 0u64..=1800,
                                 page in any::<bool>(), pvb in any::<u128>()) {
            let s = signer();
            let kind = if page { Kind::Page } else { Kind::Fetched };
            let addr = IpAddr::from(std::net::Ipv4Addr::from(v4));
            let t = s.mint(kind, Uuid::from_u128(pvb), iat, addr, &ua);
            let p = sign(&t, &body).unwrap();
            let v = s.verify(p.as_bytes(), &body, &ua, addr, iat + age).unwrap();
            prop_assert_eq!(v.pageview_id, Uuid::from_u128(pvb));
            prop_assert_eq!(v.kind, kind);
            prop_assert_eq!(v.age_s, age);
            prop_assert!(!v.ip_changed && !v.previous_secret);
        }
    }
}
