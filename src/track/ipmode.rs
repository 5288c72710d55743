//! What an event says about the client's IP: its `ip` and `ip_hash` fields.
//!
//! Operators choose how much of the address is kept (`IP_MODE`): all of it,
//! the network it belongs to (/24 for IPv4, /48 for IPv6), or nothing but a
//! keyed hash. The hash is keyed with a secret that changes every UTC day,
//! so a client can be followed within a day (for fraud detection) but hashes
//! from different days cannot be joined, and nobody without the secret can
//! turn a hash back into an address by trying all 2³² IPv4 addresses.
//!
//! The network truncation here is also what tg1 tokens use for their IP
//! bucket, so "the same network" means the same thing everywhere.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hmac::Mac;

use super::client_ip::{canonical, IpText};
use super::token::{hex_lower_into, keyed_hmac, write_decimal, HmacSha256};

/// How much of the client address an event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpMode {
    /// The whole (canonical) address.
    Full,
    /// The /24 (IPv4) or /48 (IPv6) network address.
    Truncate,
    /// No address, only the daily keyed hash.
    Hash,
    /// Nothing about the address: no `ip`, and no `ip_hash` either.
    None,
}

impl IpMode {
    /// Whether events carry an `ip_hash` in this mode (every mode but `None`).
    pub fn carries_hash(self) -> bool {
        self != IpMode::None
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IpMode::Full => "full",
            IpMode::Truncate => "truncate",
            IpMode::Hash => "hash",
            IpMode::None => "none",
        }
    }
}

impl fmt::Display for IpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP mode that is not one of the four choices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpModeError(String);

impl fmt::Display for IpModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid IP mode {:?}: expected one of full, truncate, hash, none",
            self.0
        )
    }
}

impl std::error::Error for IpModeError {}

impl FromStr for IpMode {
    type Err = IpModeError;

    /// `full`, `truncate`, `hash` or `none` (ASCII case and surrounding
    /// whitespace ignored).
    fn from_str(s: &str) -> Result<IpMode, IpModeError> {
        let t = s.trim();
        [IpMode::Full, IpMode::Truncate, IpMode::Hash, IpMode::None]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| IpModeError(s.to_owned()))
    }
}

/// The network `ip` belongs to, for truncation and token IP buckets: after
/// canonicalisation, the /24 of an IPv4 address or the /48 of an IPv6
/// address, as (network address, prefix length).
#[inline]
pub fn network(ip: IpAddr) -> (IpAddr, u8) {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            (IpAddr::V4(Ipv4Addr::new(a, b, c, 0)), 24)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0)),
                48,
            )
        }
    }
}

/// The `ip` field of an event under `mode`: the canonical address (`Full`),
/// its network address (`Truncate`), or nothing (`Hash`, `None`).
pub(crate) fn render_ip(mode: IpMode, ip: IpAddr) -> Option<IpText> {
    match mode {
        IpMode::Full => Some(IpText::of(canonical(ip))),
        IpMode::Truncate => Some(IpText::of(network(ip).0)),
        IpMode::Hash | IpMode::None => None,
    }
}

const SECRET_LABEL: &[u8] = b"trackgate ip-hash secret v1";
const DAY_LABEL: &[u8] = b"trackgate ip-hash day ";

/// The IP-hash secret derived from the token secret, for when
/// `IP_HASH_SECRET` is not set: HMAC-SHA256(hmac_secret, "trackgate ip-hash
/// secret v1"). Knowing it does not reveal the token secret.
pub fn derive_ip_hash_secret(hmac_secret: &[u8]) -> Vec<u8> {
    keyed_hmac(hmac_secret)
        .chain_update(SECRET_LABEL)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Computes `ip_hash`: lowercase hex of the first 16 bytes of
/// HMAC-SHA256(day_key, canonical address text), where day_key =
/// HMAC-SHA256(secret, "trackgate ip-hash day " + UTC day number).
///
/// One per core (clone it); the day key is derived once per day and cached.
#[derive(Clone)]
pub struct IpHasher {
    secret: HmacSha256,
    /// The UTC day `day_mac` is keyed for; `NO_DAY` before the first hash
    /// (no real day number is that large).
    day: u64,
    day_mac: HmacSha256,
    /// Hashes of recently seen addresses on `day` (direct-mapped by
    /// address; emptied when the day changes): a visitor's every hit
    /// would otherwise pay two SHA-256 compressions.
    recent: Vec<Option<(IpAddr, [u8; 32])>>,
}

/// Slots of [`IpHasher::recent`] (a power of two).
const RECENT_SLOTS: usize = 256;

/// The slot of `ip` in [`IpHasher::recent`].
fn slot(ip: IpAddr) -> usize {
    let x = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    };
    // Fibonacci hashing: the top bits of a multiply spread nearby addresses.
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % RECENT_SLOTS
}

const NO_DAY: u64 = u64::MAX;

impl fmt::Debug for IpHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpHasher")
            .field("secret", &"<redacted>")
            .field("cached_day", &(self.day != NO_DAY).then_some(self.day))
            .finish()
    }
}

impl IpHasher {
    /// A hasher keyed with `secret` (the IP-hash secret, not the token secret).
    pub fn new(secret: &[u8]) -> IpHasher {
        let secret = keyed_hmac(secret);
        IpHasher {
            day_mac: secret.clone(),
            secret,
            day: NO_DAY,
            recent: Vec::new(),
        }
    }

    /// The hash of `ip` (canonicalised) on the UTC day containing `unix_s`,
    /// as 32 ASCII lowercase hex digits.
    pub fn hash(&mut self, ip: IpAddr, unix_s: u64) -> [u8; 32] {
        let day = unix_s / 86_400;
        if day != self.day {
            let mut digits = [0u8; 20];
            let key = self
                .secret
                .clone()
                .chain_update(DAY_LABEL)
                .chain_update(write_decimal(day, &mut digits))
                .finalize()
                .into_bytes();
            self.day_mac = keyed_hmac(&key);
            self.day = day;
            self.recent.clear();
        }
        let ip = canonical(ip);
        if self.recent.is_empty() {
            self.recent.resize(RECENT_SLOTS, None);
        }
        let s = slot(ip);
        if let Some(Some((seen, hash))) = self.recent.get(s) {
            if *seen == ip {
                return *hash;
            }
        }
        let text = IpText::of(ip);
        let digest = self
            .day_mac
            .clone()
            .chain_update(text.as_bytes())
            .finalize()
            .into_bytes();
        let mut out = [0u8; 32];
        hex_lower_into(digest.get(..16).unwrap_or(&[]), &mut out);
        if let Some(e) = self.recent.get_mut(s) {
            *e = Some((ip, out));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn h(hasher: &mut IpHasher, s: &str, t: u64) -> String {
        String::from_utf8(hasher.hash(ip(s), t).to_vec()).unwrap()
    }

    #[test]
    fn mode_parses_and_rejects() {
        assert_eq!("full".parse::<IpMode>().unwrap(), IpMode::Full);
        assert_eq!("truncate".parse::<IpMode>().unwrap(), IpMode::Truncate);
        assert_eq!(" Hash ".parse::<IpMode>().unwrap(), IpMode::Hash);
        assert_eq!("none".parse::<IpMode>().unwrap(), IpMode::None);
        let err = "anon".parse::<IpMode>().unwrap_err().to_string();
        assert!(err.contains("\"anon\""), "{err}");
        for choice in ["full", "truncate", "hash", "none"] {
            assert!(err.contains(choice), "{err}");
            assert_eq!(choice.parse::<IpMode>().unwrap().to_string(), choice);
        }
        assert!("".parse::<IpMode>().is_err());
    }

    #[test]
    fn render_by_mode() {
        assert_eq!(
            render_ip(IpMode::Full, ip("::ffff:192.0.2.77"))
                .as_ref()
                .map(IpText::as_str),
            Some("192.0.2.77")
        );
        assert_eq!(
            render_ip(IpMode::Full, ip("2001:DB8::1"))
                .as_ref()
                .map(IpText::as_str),
            Some("2001:db8::1")
        );
        assert_eq!(
            render_ip(IpMode::Truncate, ip("192.0.2.77"))
                .as_ref()
                .map(IpText::as_str),
            Some("192.0.2.0")
        );
        assert_eq!(
            render_ip(IpMode::Truncate, ip("::ffff:192.0.2.77"))
                .as_ref()
                .map(IpText::as_str),
            Some("192.0.2.0")
        );
        assert_eq!(
            render_ip(IpMode::Truncate, ip("2001:db8:1:2:3:4:5:6"))
                .as_ref()
                .map(IpText::as_str),
            Some("2001:db8:1::")
        );
        assert_eq!(
            render_ip(IpMode::Truncate, ip("2001:0:0:ffff::1"))
                .as_ref()
                .map(IpText::as_str),
            Some("2001::")
        );
        assert!(render_ip(IpMode::Hash, ip("192.0.2.77")).is_none());
        assert!(render_ip(IpMode::None, ip("192.0.2.77")).is_none());
        assert!(IpMode::Full.carries_hash() && IpMode::Truncate.carries_hash());
        assert!(IpMode::Hash.carries_hash() && !IpMode::None.carries_hash());
    }

    #[test]
    fn derived_secret_is_the_documented_hmac() {
        let d = derive_ip_hash_secret(b"0123456789abcdef0123");
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"0123456789abcdef0123").unwrap();
        m.update(b"trackgate ip-hash secret v1");
        assert_eq!(d, m.finalize().into_bytes().to_vec());
        assert_eq!(d.len(), 32);
        assert_ne!(d, derive_ip_hash_secret(b"0123456789abcdef0124"));
    }

    #[test]
    fn hash_matches_the_definition() {
        let secret = b"ip-hash-secret-for-tests";
        let t = 1_767_225_600 + 3_600; // 2026-01-01T01:00Z, day 20454
        let mut dk = <HmacSha256 as Mac>::new_from_slice(secret).unwrap();
        dk.update(b"trackgate ip-hash day 20454");
        let day_key = dk.finalize().into_bytes();
        let mut m = <HmacSha256 as Mac>::new_from_slice(&day_key).unwrap();
        m.update(b"203.0.113.9");
        let full = m.finalize().into_bytes();
        let expect: String = full[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut hasher = IpHasher::new(secret);
        assert_eq!(h(&mut hasher, "203.0.113.9", t), expect);
    }

    #[test]
    fn same_ip_same_day_same_hash() {
        let mut a = IpHasher::new(b"ip-hash-secret-for-tests");
        let day_start = 20_454 * 86_400;
        let x = h(&mut a, "203.0.113.9", day_start);
        assert_eq!(x, h(&mut a, "203.0.113.9", day_start + 86_399));
        assert_eq!(x.len(), 32);
        assert!(x
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(x, h(&mut a, "203.0.113.10", day_start));
        // A fresh clone computes the same hash.
        let mut b = IpHasher::new(b"ip-hash-secret-for-tests");
        assert_eq!(x, h(&mut b, "203.0.113.9", day_start + 5));
    }

    #[test]
    fn next_day_differs_and_cache_follows_the_clock() {
        let mut a = IpHasher::new(b"ip-hash-secret-for-tests");
        let day_start = 20_454 * 86_400;
        let d0 = h(&mut a, "203.0.113.9", day_start);
        let d1 = h(&mut a, "203.0.113.9", day_start + 86_400);
        assert_ne!(d0, d1);
        // Going back (clock step) recomputes the earlier day correctly.
        assert_eq!(d0, h(&mut a, "203.0.113.9", day_start + 1));
    }

    #[test]
    fn the_recent_cache_never_changes_a_hash() {
        // 1,000 addresses (many sharing a slot), hashed twice in a
        // different order and over a day change, against a fresh hasher
        // (no cache) for each.
        let secret = b"ip-hash-secret-for-tests";
        let day_start = 20_454 * 86_400;
        let addrs: Vec<IpAddr> = (0..1000u32)
            .map(|i| {
                if i % 3 == 0 {
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16])
                } else {
                    IpAddr::from((0xc000_0200u32 + i * 7).to_be_bytes())
                }
            })
            .collect();
        let mut cached = IpHasher::new(secret);
        for t in [day_start, day_start + 5, day_start + 86_400] {
            for (n, a) in addrs
                .iter()
                .enumerate()
                .rev()
                .chain(addrs.iter().enumerate())
            {
                let fresh = IpHasher::new(secret).hash(*a, t);
                assert_eq!(cached.hash(*a, t), fresh, "address {n} at {t}");
            }
        }
    }

    #[test]
    fn different_secret_differs() {
        let mut a = IpHasher::new(b"ip-hash-secret-for-tests");
        let mut b = IpHasher::new(b"ip-hash-secret-for-testz");
        assert_ne!(h(&mut a, "203.0.113.9", 0), h(&mut b, "203.0.113.9", 0));
    }

    #[test]
    fn mapped_v6_hashes_as_v4() {
        let mut a = IpHasher::new(b"ip-hash-secret-for-tests");
        assert_eq!(
            h(&mut a, "::ffff:203.0.113.9", 99),
            h(&mut a, "203.0.113.9", 99)
        );
        assert_ne!(h(&mut a, "2001:db8::1", 99), h(&mut a, "2001:db8::2", 99));
    }

    #[test]
    fn debug_is_redacted() {
        let mut a = IpHasher::new(b"super-secret-value-123");
        a.hash(ip("192.0.2.1"), 86_400 * 3);
        let d = format!("{a:?}");
        assert!(d.contains("<redacted>") && d.contains("Some(3)"), "{d}");
        assert!(!d.contains("super"), "{d}");
    }

    #[test]
    fn network_is_canonical() {
        assert_eq!(network(ip("::ffff:10.1.2.3")), (ip("10.1.2.0"), 24));
        assert_eq!(
            network(ip("2001:db8:abcd:12::1")),
            (ip("2001:db8:abcd::"), 48)
        );
    }
}
