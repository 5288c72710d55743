//! Per-core token buckets for the tracking endpoints (`/px.gif`, collect,
//! `/hmac/public-key`, `/hmac.js`), keyed by the client's IP bucket (its /24
//! for IPv4, /48 for IPv6: the same networks tg1 tokens bind to).
//! `RATE_LIMIT_RPS` refills each bucket, `RATE_LIMIT_BURST` is its size; a
//! request that finds it empty is answered 429 with `Retry-After`.
//!
//! Each core has its own limiter and nothing is shared between threads, so
//! a client whose connections land on N cores gets up to N times the rate:
//! the limit is a guard against floods from one network, not an exact quota.
//! Proxied traffic never comes here, and the hook in `endpoints.rs` skips
//! loopback clients (a load balancer on the same host whose
//! `X-Forwarded-For` is not trusted would put every visitor in one bucket;
//! set `TRUST_PROXY` so the limiter sees the real client addresses).
//!
//! Memory is bounded: at most [`MAX_BUCKETS`] networks per core. When that
//! many are tracked, buckets that have refilled (as good as absent) are
//! dropped; if none has, a new network is let through untracked until one
//! does (fail open: a limiter must not become an outage).

use crate::track::client_ip::canonical;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most client networks tracked per core.
pub const MAX_BUCKETS: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One core's limiter.
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    buckets: RefCell<HashMap<u128, Bucket>>,
}

/// The /24 (IPv4) or /48 (IPv6) network of `ip`, as a map key (the top bit
/// tells the families apart).
fn network_key(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => (1u128 << 127) | u128::from(u32::from(v4) & 0xffff_ff00),
        // The /48 prefix, moved down so it never reaches the top bit.
        IpAddr::V6(v6) => u128::from(v6) >> 80,
    }
}

impl RateLimiter {
    /// `rps == 0`: no limit.
    pub fn new(rps: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rps: f64::from(rps),
            burst: f64::from(burst.max(1)),
            buckets: RefCell::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`'s network at `now`. `Err(wait)`: none left;
    /// the next one comes after `wait` (at least one second, for
    /// `Retry-After`).
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rps <= 0.0 {
            return Ok(());
        }
        let key = network_key(ip);
        let mut map = self.buckets.borrow_mut();
        if !map.contains_key(&key) && map.len() >= MAX_BUCKETS {
            let full = self.burst / self.rps;
            map.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < full);
            if map.len() >= MAX_BUCKETS {
                return Ok(());
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rps).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rps;
            Err(Duration::from_secs_f64(wait.max(1.0).ceil()))
        }
    }

    /// Networks tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(2, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(ip("192.0.2.1"), t), Ok(()));
        }
        assert_eq!(
            l.check(ip("192.0.2.9"), t),
            Err(Duration::from_secs(1)),
            "same /24"
        );
        assert_eq!(l.check(ip("192.0.3.1"), t), Ok(()), "another /24");
        // Half a second at 2/s earns one token.
        assert_eq!(
            l.check(ip("192.0.2.1"), t + Duration::from_millis(500)),
            Ok(())
        );
        assert!(l
            .check(ip("192.0.2.1"), t + Duration::from_millis(500))
            .is_err());
        // Never more than the burst.
        let later = t + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(l.check(ip("192.0.2.1"), later), Ok(()));
        }
        assert!(l.check(ip("192.0.2.1"), later).is_err());
    }

    #[test]
    fn ipv6_by_48_and_mapped_v4_as_v4() {
        let l = RateLimiter::new(1, 1);
        let t = Instant::now();
        assert_eq!(l.check(ip("2001:db8:1::1"), t), Ok(()));
        assert!(l.check(ip("2001:db8:1:ffff::2"), t).is_err(), "same /48");
        assert_eq!(l.check(ip("2001:db8:2::1"), t), Ok(()));
        assert_eq!(l.check(ip("198.51.100.7"), t), Ok(()));
        assert!(
            l.check(ip("::ffff:198.51.100.8"), t).is_err(),
            "mapped: same /24"
        );
        assert_ne!(network_key(ip("0.0.0.0")), network_key(ip("::")));
        assert_ne!(network_key(ip("255.255.255.0")), network_key(ip("8000::")));
    }

    #[test]
    fn zero_rps_is_no_limit() {
        let l = RateLimiter::new(0, 1);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check(ip("192.0.2.1"), t), Ok(()));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let l = RateLimiter::new(1, 1);
        let t = Instant::now();
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            let _ = l.check(IpAddr::V4((i << 8).into()), t);
        }
        assert_eq!(l.tracked(), MAX_BUCKETS);
        // Once the buckets have refilled, they make room.
        let _ = l.check(ip("2001:db8::1"), t + Duration::from_secs(2));
        assert_eq!(l.tracked(), 1);
    }
}
