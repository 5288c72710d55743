//! Identifiers: a per-core pseudo-random generator for event ids (UUIDv7)
//! and direct OS randomness for secrets.
//!
//! Every event gets an id, so id generation must not take a lock or make a
//! syscall: each core owns one [`Rng`] (xoshiro256**), seeded once from the
//! kernel. The generator is fast and well distributed but not
//! cryptographically secure; anything secret (HMAC keys, nonces) comes from
//! [`os_random`] instead.

use std::io;
use uuid::Uuid;

/// xoshiro256** state. Owned by one core; not `Sync` by intent of use, and
/// deliberately not `Clone` so two owners never hand out the same ids.
#[derive(Debug)]
pub struct Rng {
    s: [u64; 4],
}

/// SplitMix64 step: spreads a single seed into well-mixed state words.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded with 256 bits from the kernel (`getrandom`).
    pub fn from_os() -> io::Result<Rng> {
        let mut bytes = [0u8; 32];
        os_random(&mut bytes)?;
        let mut s = [0u64; 4];
        for (word, chunk) in s.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            // The all-zero state is the one fixed point of xoshiro.
            return Ok(Rng::from_seed(0));
        }
        Ok(Rng { s })
    }

    /// A deterministic generator, for tests and reproducible runs.
    pub fn from_seed(seed: u64) -> Rng {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        // SplitMix64 output words are never all zero for four steps in a row.
        Rng { s }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let word = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&word[..rest.len()]);
        }
    }

    /// A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, then 74 random
    /// bits, with version 7 and the RFC variant. Ids from one core in the
    /// same millisecond are unique (random) but not ordered among themselves.
    #[inline]
    pub fn uuid_v7(&mut self, unix_ms: u64) -> Uuid {
        let mut rand = [0u8; 10];
        self.fill(&mut rand);
        uuid::Builder::from_unix_timestamp_millis(unix_ms, &rand).into_uuid()
    }
}

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`, blocking only until
/// the pool is initialised at boot). For secrets; one syscall per 256 bytes
/// or so, so not for per-event use.
pub fn os_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for
        // the duration of the call; getrandom writes at most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "getrandom returned no bytes",
            ));
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn seeded_is_deterministic_and_seeds_differ() {
        let mut a = Rng::from_seed(42);
        let mut b = Rng::from_seed(42);
        let mut c = Rng::from_seed(43);
        let xa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn zero_seed_is_not_stuck() {
        let mut r = Rng::from_seed(0);
        let x: HashSet<u64> = (0..100).map(|_| r.next_u64()).collect();
        assert_eq!(x.len(), 100);
    }

    #[test]
    fn bits_are_balanced() {
        // Each bit position is set in roughly half of 4096 outputs; a broken
        // generator (stuck bit, zero output) lands far outside 1700..2400.
        let mut r = Rng::from_seed(7);
        let mut counts = [0u32; 64];
        for _ in 0..4096 {
            let x = r.next_u64();
            for (i, c) in counts.iter_mut().enumerate() {
                *c += ((x >> i) & 1) as u32;
            }
        }
        for (i, c) in counts.iter().enumerate() {
            assert!((1700..2400).contains(c), "bit {i} set {c} times");
        }
    }

    #[test]
    fn fill_covers_odd_lengths() {
        let mut r = Rng::from_seed(1);
        for len in [0usize, 1, 7, 8, 9, 31, 64] {
            let mut buf = vec![0u8; len];
            r.fill(&mut buf);
            if len >= 7 {
                assert!(buf.iter().any(|&b| b != 0), "len {len}");
            }
        }
        // fill agrees with next_u64's little-endian bytes.
        let mut a = Rng::from_seed(9);
        let mut b = Rng::from_seed(9);
        let mut buf = [0u8; 12];
        a.fill(&mut buf);
        let w0 = b.next_u64().to_le_bytes();
        let w1 = b.next_u64().to_le_bytes();
        assert_eq!(&buf[..8], &w0);
        assert_eq!(&buf[8..], &w1[..4]);
    }

    #[test]
    fn uuid_v7_shape() {
        let mut r = Rng::from_seed(3);
        let ms = 1_795_829_081_123u64;
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let id = r.uuid_v7(ms);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, ms);
            assert!(seen.insert(id));
        }
        // Later milliseconds sort later.
        let a = r.uuid_v7(ms);
        let b = r.uuid_v7(ms + 1);
        assert!(a < b);
    }

    #[test]
    fn os_randomness() {
        let mut a = [0u8; 300];
        let mut b = [0u8; 300];
        os_random(&mut a).unwrap();
        os_random(&mut b).unwrap();
        assert_ne!(a, b);
        os_random(&mut []).unwrap();
        let mut r1 = Rng::from_os().unwrap();
        let mut r2 = Rng::from_os().unwrap();
        assert_ne!(r1.next_u64(), r2.next_u64());
    }
}
