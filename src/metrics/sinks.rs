//! The counters a sink thread (and the journal thread) owns, shared with
//! the scrape thread and with `/readyz` (which reports each sink's state).

use super::labels::SinkFailure;
use super::prim::{Counter, Gauge, Histogram};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
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
    /// `sink_events_written_total{sink}`: events the downstream now holds.
    pub events_written: Counter,
    /// `sink_events_acknowledged_total{sink}`: events whose delivery the
    /// downstream acknowledged (written, duplicates and dead-lettered).
    pub events_acked: Counter,
    /// `sink_events_replayed_total{sink}`: events read back from the journal
    /// files (the sink had fallen behind, or after a restart).
    pub events_replayed: Counter,
    /// `sink_events_duplicate_total{sink}`: events the downstream already had.
    pub events_duplicate: Counter,
    /// `sink_events_dead_lettered_total{sink}`.
    pub events_dead_lettered: Counter,
    /// `sink_checkpoint_lag_events{sink}`: journaled events not yet acknowledged.
    pub lag_events: Gauge,
    /// `sink_checkpoint_lag_bytes{sink}`: journal bytes past the checkpoint.
    pub lag_bytes: Gauge,
    /// The sink is reading the journal files to catch up.
    pub replaying: AtomicBool,
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
            events_acked: Counter::default(),
            events_replayed: Counter::default(),
            events_duplicate: Counter::default(),
            events_dead_lettered: Counter::default(),
            lag_events: Gauge::default(),
            lag_bytes: Gauge::default(),
            replaying: AtomicBool::new(false),
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

/// Metrics and state of the journal. Written by the journal thread only;
/// the cores read `full` and `failed` before they enqueue.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// `journal_bytes`: bytes in the segment files.
    pub bytes: Gauge,
    /// `journal_segments`: segment files kept.
    pub segments: Gauge,
    /// `journal_events_total`: events made durable.
    pub events: Counter,
    /// `journal_refused_events_total`: events refused (journal full or
    /// failed) after they were queued.
    pub refused: Counter,
    /// `journal_fsync_duration_seconds`: each group commit's write + fdatasync.
    pub fsync_duration: Histogram,
    /// `journal_ack_wait_seconds`: from a durable request's enqueue to the
    /// fsync that covers it.
    pub ack_wait: Histogram,
    /// The journal holds `JOURNAL_MAX_MB`: collect answers 503.
    pub full: AtomicBool,
    /// An fsync failed: nothing is acknowledged any more.
    pub failed: AtomicBool,
    /// Another process holds the `DATA_DIR` lock; events queue until it exits.
    pub waiting: AtomicBool,
    reason: Mutex<String>,
}

impl JournalStats {
    pub fn set_failed(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
        self.failed.store(true, Relaxed);
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Relaxed)
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Relaxed)
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Relaxed)
    }

    /// Why the journal failed; empty when it did not.
    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
