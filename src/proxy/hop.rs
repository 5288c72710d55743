//! Hop-by-hop header rules (RFC 9110 §7.6.1): which headers describe one
//! connection and must not be forwarded, in either direction.

/// Headers that are always connection-specific.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Headers trackgate sets or needs for framing: a peer cannot have them
/// removed by naming them in `Connection` (`Connection: X-Forwarded-For`
/// would otherwise hide the client's address from the origin).
pub fn is_protected(name: &[u8]) -> bool {
    const OURS: [&[u8]; 7] = [
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"via",
        b"host",
        b"content-length",
        b"date",
    ];
    OURS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether `name` must be dropped when forwarding: hop-by-hop, or named by
/// the message's `Connection` header (unless protected).
pub fn drop_header<'a>(name: &[u8], connection_tokens: impl Iterator<Item = &'a [u8]>) -> bool {
    Nominated::of(connection_tokens).drops(name)
}

/// The field names a message's `Connection` header nominates for removal
/// (hop-by-hop and protected names left out), gathered once per message:
/// each field is then checked against this short list (usually empty, no
/// allocation) instead of a scan of the whole head.
pub struct Nominated<'a> {
    names: Vec<&'a [u8]>,
}

impl<'a> Nominated<'a> {
    pub fn of(connection_tokens: impl Iterator<Item = &'a [u8]>) -> Nominated<'a> {
        Nominated {
            names: connection_tokens
                .filter(|t| !is_hop_by_hop(t) && !is_protected(t))
                .collect(),
        }
    }

    /// Whether `name` must be dropped when forwarding (see [`drop_header`]).
    pub fn drops(&self, name: &[u8]) -> bool {
        is_hop_by_hop(name) || self.names.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_nominated() {
        assert!(is_hop_by_hop(b"Transfer-Encoding"));
        assert!(is_hop_by_hop(b"KEEP-ALIVE"));
        assert!(!is_hop_by_hop(b"content-type"));
        let tokens: [&[u8]; 2] = [b"x-secret", b"X-Forwarded-For"];
        assert!(drop_header(b"X-Secret", tokens.iter().copied()));
        assert!(!drop_header(b"x-forwarded-for", tokens.iter().copied()));
        assert!(!drop_header(b"accept", tokens.iter().copied()));
        let n = Nominated::of(tokens.iter().copied());
        assert!(n.drops(b"x-SECRET"));
        assert!(n.drops(b"te"));
        assert!(!n.drops(b"X-Forwarded-For"));
        assert!(!n.drops(b"accept"));
        assert!(Nominated::of(std::iter::empty()).names.is_empty());
    }
}
