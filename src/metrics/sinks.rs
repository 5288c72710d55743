//! The counters a sink thread owns, shared with the scrape thread and with
//! `/readyz` (which reports each sink's state).

use super::labels::SinkFailure;
use super::prim::{Counter, Gauge, Histogram};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

/// Health of one sink as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SinkHealth {
    Starting = 0,
    Healthy = 1,
    Down = 2,
    Stopped = 3,
}

impl SinkHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkHealth::Starting => "starting",
            SinkHealth::Healthy => "healthy",
            SinkHealth::Down => "down",
            SinkHealth::Stopped => "stopped",
        }
    }
}

/// Metrics and state of one sink. Written by the sink's own thread.
#[derive(Debug)]
pub struct SinkStats {
    /// `sink_queue_depth{sink}`: batches waiting in the sink's channel.
    pub queue_depth: Gauge,
    /// `sink_events_written_total{sink}`.
    pub events_written: Counter,
    /// `sink_failures_total{sink,kind}`.
    pub failures: [Counter; SinkFailure::COUNT],
    /// `sink_flush_duration_seconds{sink}`.
    pub flush_duration: Histogram,
    /// `log_rotations_total` (log sink only).
    pub rotations: Counter,
    health: AtomicU8,
    /// Why the sink is down (the operator's message), empty when healthy.
    reason: Mutex<String>,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            queue_depth: Gauge::default(),
            events_written: Counter::default(),
            failures: Default::default(),
            flush_duration: Histogram::default(),
            rotations: Counter::default(),
            health: AtomicU8::new(SinkHealth::Starting as u8),
            reason: Mutex::new(String::new()),
        }
    }
}

impl SinkStats {
    pub fn failure(&self, kind: SinkFailure) {
        self.failures[kind.index()].inc();
    }

    pub fn set_healthy(&self) {
        if self.health.swap(SinkHealth::Healthy as u8, Relaxed) != SinkHealth::Healthy as u8 {
            if let Ok(mut r) = self.reason.lock() {
                r.clear();
            }
        }
    }

    pub fn set_down(&self, reason: String) {
        self.health.store(SinkHealth::Down as u8, Relaxed);
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
    }

    pub fn set_stopped(&self) {
        self.health.store(SinkHealth::Stopped as u8, Relaxed);
    }

    pub fn health(&self) -> SinkHealth {
        match self.health.load(Relaxed) {
            0 => SinkHealth::Starting,
            1 => SinkHealth::Healthy,
            2 => SinkHealth::Down,
            _ => SinkHealth::Stopped,
        }
    }

    /// Why the sink is down; empty when it is not.
    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
