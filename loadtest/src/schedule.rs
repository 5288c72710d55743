//! The open-loop schedule: when each request is meant to be sent.
//!
//! At `rate` requests/s over `conns` connections, the run's request slots
//! are `g / rate` seconds after the start, `g = 0, 1, 2, …`; connection `i`
//! owns the slots `g = i + k·conns`. A connection sends its `k`th request
//! at its slot, or at once when it is late (the previous answer came after
//! the slot), and latency is measured from the slot, not from the actual
//! send: a stall then shows up in the latency of every request that should
//! have gone out during it (coordinated omission corrected, as wrk2 does).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub rate: u64,
    pub conns: u64,
    pub conn: u64,
}

impl Schedule {
    /// The schedule of connection `conn` of `conns` at `rate` requests/s.
    pub fn new(rate: u64, conns: usize, conn: usize) -> Schedule {
        Schedule {
            rate: rate.max(1),
            conns: conns.max(1) as u64,
            conn: conn as u64,
        }
    }

    /// When this connection's `k`th request is due, from the run's start.
    pub fn at(&self, k: u64) -> Duration {
        let slot = self.conn as u128 + k as u128 * self.conns as u128;
        let ns = slot * 1_000_000_000 / self.rate as u128;
        Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_interleave_across_connections_at_the_rate() {
        // 1000/s over 4 connections: every slot 1 ms apart, each connection every 4 ms.
        let all: Vec<Duration> = (0..3)
            .flat_map(|k| (0..4).map(move |c| Schedule::new(1000, 4, c).at(k)))
            .collect();
        let want: Vec<Duration> = (0..12).map(Duration::from_millis).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn a_second_holds_rate_requests() {
        let (rate, conns) = (30_000u64, 64usize);
        let n: usize = (0..conns)
            .map(|c| {
                let s = Schedule::new(rate, conns, c);
                (0..)
                    .take_while(|&k| s.at(k) < Duration::from_secs(1))
                    .count()
            })
            .sum();
        assert_eq!(n as u64, rate);
    }

    #[test]
    fn no_overflow_far_out() {
        let s = Schedule::new(1, 1, 0);
        assert_eq!(s.at(3600), Duration::from_secs(3600));
        assert!(Schedule::new(7, 3, 2).at(u64::MAX) > Duration::from_secs(1 << 33));
    }
}
