//! The client IP: the one place that decides which address a request comes from.
//!
//! It owns address canonicalisation (an IPv4-mapped IPv6 address is the IPv4
//! address it carries, so a dual-stack socket and an IPv4 socket see the same
//! client), CIDR parsing and matching, the trusted-proxy list, and the
//! `X-Forwarded-For` walk. Every other module (tokens, IP hashing, events)
//! takes the `IpAddr` this module returns, so all of them agree on who the
//! client is and a spoofed header cannot make them disagree.
//!
//! The walk runs on every request: it parses header bytes in place with the
//! standard library's parsers and never allocates.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

pub(crate) use crate::net::IpText;

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) becomes the IPv4 address;
/// anything else is returned unchanged.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// A network: an address with its host bits cleared and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR (or a list of them) did not parse. Carries the offending text,
/// which comes from configuration, never from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// The part before the `/` (or the whole entry) is not an IP address.
    BadAddress(String),
    /// The part after the `/` is not a prefix length valid for the family.
    BadPrefix(String),
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress(s) => write!(
                f,
                "invalid CIDR {s:?}: expected an IP address such as 10.0.0.0/8, ::1/128 or 192.0.2.7"
            ),
            CidrError::BadPrefix(s) => write!(
                f,
                "invalid CIDR {s:?}: the prefix length must be 0..=32 for IPv4 and 0..=128 for IPv6"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The network containing `addr` with `prefix` bits, or `None` if the
    /// prefix is too long for the family. Host bits are cleared; an
    /// IPv4-mapped network of prefix ≥ 96 is stored as the IPv4 network.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                (canonical(addr), prefix - 96)
            }
            _ => (addr, prefix),
        };
        match addr {
            IpAddr::V4(v4) if prefix <= 32 => Some(Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(prefix))),
                prefix,
            }),
            IpAddr::V6(v6) if prefix <= 128 => Some(Cidr {
                addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(prefix))),
                prefix,
            }),
            _ => None,
        }
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (canonicalised first) lies inside this network. An IPv4
    /// address also matches an IPv6 network that covers its mapped form
    /// (`::/0`, `::ffff:0:0/80`, …).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                u128::from(ip.to_ipv6_mapped()) & mask128(self.prefix) == u128::from(net)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

#[inline]
fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

#[inline]
fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Accepts `10.0.0.0/8`, `::1/128`, or a bare address (a host route).
    /// Host bits set below the prefix are cleared, as Go's `ParseCIDR` does.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let t = s.trim();
        let (addr_s, prefix_s) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_owned()))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_s {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::BadPrefix(s.to_owned()));
                }
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(CidrError::BadPrefix(s.to_owned())),
                }
            }
        };
        Cidr::new(addr, prefix).ok_or_else(|| CidrError::BadPrefix(s.to_owned()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` entries are believed. Empty means
/// disabled: the peer address is the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Cidr>,
}

impl TrustedProxies {
    /// No proxy is trusted; `X-Forwarded-For` is ignored.
    pub fn disabled() -> TrustedProxies {
        TrustedProxies { nets: Vec::new() }
    }

    /// Trust exactly these networks (an empty list is [`Self::disabled`]).
    pub fn new(nets: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    /// Loopback, RFC 1918, link-local and unique-local networks: the usual
    /// place for a load balancer in front of trackgate.
    pub fn private_ranges() -> TrustedProxies {
        let v4 = |a, b, p| Cidr::new(IpAddr::V4(Ipv4Addr::new(a, b, 0, 0)), p);
        let v6 = |seg0, p| Cidr::new(IpAddr::V6(Ipv6Addr::new(seg0, 0, 0, 0, 0, 0, 0, 0)), p);
        let nets = [
            v4(127, 0, 8),
            Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            v4(10, 0, 8),
            v4(172, 16, 12),
            v4(192, 168, 16),
            v4(169, 254, 16),
            v6(0xfc00, 7),
            v6(0xfe80, 10),
        ];
        TrustedProxies {
            nets: nets.into_iter().flatten().collect(),
        }
    }

    /// Parses a comma- and/or whitespace-separated list of CIDRs or bare
    /// addresses. An empty list is [`Self::disabled`].
    pub fn parse_list(s: &str) -> Result<TrustedProxies, CidrError> {
        let nets = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether any proxy is trusted at all.
    pub fn is_enabled(&self) -> bool {
        !self.nets.is_empty()
    }

    /// The trusted networks.
    pub fn nets(&self) -> &[Cidr] {
        &self.nets
    }

    /// Whether `ip` (canonicalised) is inside a trusted network.
    #[inline]
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(ip))
    }
}

/// The client address of a request that arrived from `peer`, given every
/// `X-Forwarded-For` header value in the order received.
///
/// The peer (canonicalised) is the answer unless it is a trusted proxy. Then
/// the entries of all headers, taken as one comma-separated list, are walked
/// right to left: trusted hops are skipped and the first untrusted address is
/// the client. An entry that is not an address (`unknown`, garbage) ends the
/// walk: the answer is the closest trusted hop to its right, or the peer.
/// If every entry is trusted, the leftmost one is the client. Empty entries
/// are ignored. `1.2.3.4:80` and `[2001:db8::1]:443` forms are accepted.
///
/// Implemented as one left-to-right pass (the iterator is read once, nothing
/// is buffered) that yields the same answer as the right-to-left walk.
pub fn client_ip<'a>(
    peer: IpAddr,
    xff: impl Iterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.is_enabled() || !trusted.is_trusted(peer) {
        return peer;
    }
    // The rightmost entry seen so far that would stop a right-to-left walk.
    let mut stop: Option<Option<IpAddr>> = None; // Some(Some(ip)) untrusted, Some(None) garbage
                                                 // The first trusted entry right of `stop` (the closest trusted hop).
    let mut after_stop: Option<IpAddr> = None;
    // The leftmost entry, used when every entry is trusted.
    let mut leftmost: Option<IpAddr> = None;
    let mut seen = false;
    for value in xff {
        for entry in value.split(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            let parsed = parse_entry(entry).map(canonical);
            if !seen {
                seen = true;
                leftmost = parsed;
            }
            match parsed {
                Some(ip) if trusted.is_trusted(ip) => {
                    if after_stop.is_none() {
                        after_stop = Some(ip);
                    }
                }
                other => {
                    stop = Some(other);
                    after_stop = None;
                }
            }
        }
    }
    match stop {
        Some(Some(client)) => client,
        Some(None) => after_stop.unwrap_or(peer),
        None => leftmost.unwrap_or(peer),
    }
}

/// One `X-Forwarded-For` entry as an address: `1.2.3.4`, `2001:db8::1`,
/// `1.2.3.4:80`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn walk(peer: &str, headers: &[&str], trusted: &TrustedProxies) -> IpAddr {
        client_ip(ip(peer), headers.iter().map(|h| h.as_bytes()), trusted)
    }

    fn lb() -> TrustedProxies {
        TrustedProxies::parse_list("10.0.0.0/8, 2001:db8:ffff::/48").unwrap()
    }

    #[test]
    fn canonical_unmaps_only_mapped() {
        assert_eq!(canonical(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        // IPv4-compatible (deprecated) is not mapped: left alone.
        assert_eq!(canonical(ip("::192.0.2.1")), ip("::192.0.2.1"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
    }

    #[test]
    fn cidr_parses_and_clears_host_bits() {
        let c = cidr("10.1.2.3/8");
        assert_eq!(c.addr(), ip("10.0.0.0"));
        assert_eq!(c.prefix(), 8);
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1/128").to_string(), "::1/128");
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("2001:db8::7").to_string(), "2001:db8::7/128");
        assert_eq!(cidr(" 0.0.0.0/0 ").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn cidr_rejects_bad_input() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "10.0.0.0/a",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::BadPrefix(_))),
                "{bad}"
            );
        }
        for bad in ["", "10.0.0/8", "example.com", "10.0.0.256", "/8"] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::BadAddress(_))),
                "{bad}"
            );
        }
        let msg = "10.0.0.0/40".parse::<Cidr>().unwrap_err().to_string();
        assert!(
            msg.contains("10.0.0.0/40") && msg.contains("prefix"),
            "{msg}"
        );
    }

    #[test]
    fn cidr_contains() {
        let c = cidr("172.16.0.0/12");
        assert!(c.contains(ip("172.16.0.1")));
        assert!(c.contains(ip("172.31.255.255")));
        assert!(!c.contains(ip("172.32.0.0")));
        assert!(!c.contains(ip("172.15.255.255")));
        assert!(
            c.contains(ip("::ffff:172.20.1.1")),
            "mapped is canonicalised"
        );
        assert!(!c.contains(ip("2001:db8::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::/0").contains(ip("203.0.113.9")));
        assert!(cidr("::/0").contains(ip("::1")));
        let v6 = cidr("2001:db8:1::/48");
        assert!(v6.contains(ip("2001:db8:1:ffff::1")));
        assert!(!v6.contains(ip("2001:db8:2::1")));
        assert!(cidr("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!cidr("192.0.2.7").contains(ip("192.0.2.8")));
    }

    #[test]
    fn private_ranges_cover_the_usual_suspects() {
        let p = TrustedProxies::private_ranges();
        for t in [
            "127.0.0.1",
            "127.255.0.1",
            "::1",
            "10.9.8.7",
            "172.16.0.1",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(p.is_trusted(ip(t)), "{t}");
        }
        for u in [
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "fec0::1",
            "::2",
        ] {
            assert!(!p.is_trusted(ip(u)), "{u}");
        }
    }

    #[test]
    fn parse_list_forms() {
        let t = TrustedProxies::parse_list("10.0.0.0/8,192.168.0.0/16 ::1\t, 203.0.113.5").unwrap();
        assert_eq!(t.nets().len(), 4);
        assert!(t.is_trusted(ip("203.0.113.5")));
        assert!(!t.is_trusted(ip("203.0.113.6")));
        assert!(!TrustedProxies::parse_list("").unwrap().is_enabled());
        assert!(!TrustedProxies::parse_list(" , ").unwrap().is_enabled());
        assert!(TrustedProxies::parse_list("10.0.0.0/8, nope").is_err());
        assert!(!TrustedProxies::disabled().is_enabled());
        assert!(!TrustedProxies::new(Vec::new()).is_enabled());
    }

    #[test]
    fn disabled_or_untrusted_peer_wins() {
        assert_eq!(
            walk("203.0.113.9", &["1.1.1.1"], &TrustedProxies::disabled()),
            ip("203.0.113.9")
        );
        assert_eq!(walk("203.0.113.9", &["1.1.1.1"], &lb()), ip("203.0.113.9"));
        assert_eq!(
            walk("::ffff:203.0.113.9", &["1.1.1.1"], &lb()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_peer_without_xff_is_the_client() {
        assert_eq!(walk("10.0.0.1", &[], &lb()), ip("10.0.0.1"));
        assert_eq!(walk("10.0.0.1", &["", " , "], &lb()), ip("10.0.0.1"));
        assert_eq!(walk("::ffff:10.0.0.1", &[], &lb()), ip("10.0.0.1"));
    }

    #[test]
    fn rightmost_untrusted_wins() {
        assert_eq!(
            walk("10.0.0.1", &["198.51.100.4"], &lb()),
            ip("198.51.100.4")
        );
        assert_eq!(
            walk("10.0.0.1", &["198.51.100.4, 10.0.0.2, 10.0.0.3"], &lb()),
            ip("198.51.100.4")
        );
        assert_eq!(
            walk(
                "10.0.0.1",
                &["198.51.100.4", "10.0.0.2", " 10.0.0.3 "],
                &lb()
            ),
            ip("198.51.100.4"),
            "several headers are one list"
        );
        assert_eq!(
            walk("10.0.0.1", &["2001:db8:1::5, 2001:db8:ffff::1"], &lb()),
            ip("2001:db8:1::5")
        );
        assert_eq!(
            walk("10.0.0.1", &["::ffff:198.51.100.4"], &lb()),
            ip("198.51.100.4"),
            "entries are canonicalised"
        );
    }

    #[test]
    fn spoofed_left_entries_never_win() {
        // The client sends its own XFF; the trusted proxy appends the real peer.
        assert_eq!(
            walk("10.0.0.1", &["1.1.1.1, 203.0.113.7"], &lb()),
            ip("203.0.113.7")
        );
        // Spoofing a trusted-looking address on the left does not help either.
        assert_eq!(
            walk("10.0.0.1", &["10.0.0.5, 203.0.113.7"], &lb()),
            ip("203.0.113.7")
        );
        // Nor garbage, nor a separate spoofed header before the proxy's own.
        assert_eq!(
            walk("10.0.0.1", &["unknown, <script>", "203.0.113.7"], &lb()),
            ip("203.0.113.7")
        );
        assert_eq!(
            walk(
                "10.0.0.1",
                &["8.8.8.8", "10.0.0.9, 203.0.113.7, 10.0.0.2"],
                &lb()
            ),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        assert_eq!(
            walk("10.0.0.1", &["10.0.0.7, 10.0.0.8", "10.0.0.9"], &lb()),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_closest_trusted_hop() {
        assert_eq!(
            walk(
                "10.0.0.1",
                &["198.51.100.4, garbage, 10.0.0.7, 10.0.0.8"],
                &lb()
            ),
            ip("10.0.0.7")
        );
        assert_eq!(
            walk("10.0.0.1", &["198.51.100.4, unknown"], &lb()),
            ip("10.0.0.1"),
            "no trusted hop right of the garbage: the peer"
        );
        assert_eq!(walk("10.0.0.1", &["garbage"], &lb()), ip("10.0.0.1"));
        // Garbage left of an untrusted entry does not matter.
        assert_eq!(
            walk("10.0.0.1", &["garbage, 198.51.100.4, 10.0.0.8"], &lb()),
            ip("198.51.100.4")
        );
        // Non-UTF-8 bytes are garbage too, never a panic.
        let bad: &[u8] = b"\xff\xfe, 10.0.0.8";
        assert_eq!(
            client_ip(ip("10.0.0.1"), [bad].into_iter(), &lb()),
            ip("10.0.0.8")
        );
    }

    #[test]
    fn port_and_bracket_forms() {
        assert_eq!(
            walk("10.0.0.1", &["198.51.100.4:8080"], &lb()),
            ip("198.51.100.4")
        );
        assert_eq!(
            walk("10.0.0.1", &["[2001:db8:1::5]:443"], &lb()),
            ip("2001:db8:1::5")
        );
        assert_eq!(
            walk("10.0.0.1", &["[2001:db8:1::5]"], &lb()),
            ip("2001:db8:1::5")
        );
        assert_eq!(
            walk("10.0.0.1", &["198.51.100.4, 10.0.0.2:1234"], &lb()),
            ip("198.51.100.4")
        );
        // Malformed port forms are garbage.
        for g in [
            "198.51.100.4:",
            "198.51.100.4:99999",
            "[2001:db8::1",
            "2001:db8::1]:1",
        ] {
            assert_eq!(walk("10.0.0.1", &[g], &lb()), ip("10.0.0.1"), "{g}");
        }
    }

    #[test]
    fn ip_text_of_matches_display() {
        for a in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "10.200.3.45",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.1",
        ] {
            let addr = ip(a);
            assert_eq!(IpText::of(addr).as_str(), addr.to_string());
        }
        for n in 0..=255u8 {
            let addr = IpAddr::from([n, 255 - n, n / 3, 7]);
            assert_eq!(IpText::of(addr).as_str(), addr.to_string());
        }
    }

    #[test]
    fn ip_text_formats_without_overflow() {
        let mut t = IpText::new();
        write!(
            t,
            "{}/{}",
            ip("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"),
            128
        )
        .unwrap();
        assert_eq!(
            t.as_bytes(),
            b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128".as_slice()
        );
        let mut t = IpText::new();
        assert!(write!(t, "{}", "x".repeat(65)).is_err());
    }

    /// The walk exactly as documented (right to left, with buffering), to
    /// check the one-pass implementation against.
    fn reference(peer: IpAddr, headers: &[Vec<u8>], trusted: &TrustedProxies) -> IpAddr {
        let peer = canonical(peer);
        if !trusted.is_enabled() || !trusted.is_trusted(peer) {
            return peer;
        }
        let entries: Vec<&[u8]> = headers
            .iter()
            .flat_map(|h| h.split(|&b| b == b','))
            .map(|e| e.trim_ascii())
            .filter(|e| !e.is_empty())
            .collect();
        let mut closest_trusted = peer;
        for e in entries.iter().rev() {
            match parse_entry(e).map(canonical) {
                None => return closest_trusted,
                Some(i) if trusted.is_trusted(i) => closest_trusted = i,
                Some(i) => return i,
            }
        }
        match entries.first() {
            Some(_) => closest_trusted,
            None => peer,
        }
    }

    fn entry_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..4).prop_map(|d| format!("10.0.0.{d}")),
            (0u8..4).prop_map(|d| format!("198.51.100.{d}")),
            (0u8..4).prop_map(|d| format!("::ffff:10.0.1.{d}")),
            (0u8..4).prop_map(|d| format!("[2001:db8:ffff::{d}]:443")),
            (0u8..4).prop_map(|d| format!("2001:db8:{d}::1")),
            Just("unknown".to_owned()),
            Just(String::new()),
            "[ -~]{0,12}",
        ]
    }

    proptest::proptest! {
        #[test]
        fn walk_matches_reference_on_arbitrary_bytes(
            headers in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..48), 0..4)
        ) {
            let got = client_ip(ip("10.0.0.1"), headers.iter().map(|v| v.as_slice()), &lb());
            proptest::prop_assert_eq!(got, reference(ip("10.0.0.1"), &headers, &lb()));
        }

        #[test]
        fn walk_matches_reference_on_plausible_lists(
            headers in proptest::collection::vec(proptest::collection::vec(entry_strategy(), 0..6), 0..4),
            peer_trusted in proptest::bool::ANY,
        ) {
            let peer = if peer_trusted { ip("10.0.0.1") } else { ip("192.0.2.1") };
            let headers: Vec<Vec<u8>> = headers.iter().map(|h| h.join(",").into_bytes()).collect();
            let got = client_ip(peer, headers.iter().map(|v| v.as_slice()), &lb());
            proptest::prop_assert_eq!(got, reference(peer, &headers, &lb()));
        }
    }
}
