//! The way out of a core for every event: journal first, then the sinks.
//!
//! Each core owns one [`SinkHandle`] whose bounded crossbeam channel leads
//! to the journal thread (nothing on the request path is shared between
//! cores: one channel per core). The journal thread appends what arrives to
//! the [`journal`] and makes it durable with one `fdatasync` per group
//! commit; with `ACK_MODE=durable` a collect request's 202 waits for that
//! fsync through an [`ack`] one-shot (the core awaits, it never blocks).
//! After the fsync the same bytes go to each enabled sink's thread
//! ([`runner`]), which hands them to its downstream (the [`log`] file;
//! Kafka and PostgreSQL plug in at [`runner::Downstream`]) and persists its
//! checkpoint once the downstream acknowledged. A sink that falls behind
//! reads the journal files from its checkpoint; segments every sink has
//! passed are deleted.
//!
//! The main thread owns [`Sinks`]: it reads the stats for `/readyz` and
//! `/metrics`, forwards SIGHUP and stops everything in order at shutdown.

pub mod ack;
pub mod journal;
pub mod kafka;
pub mod log;
pub mod postgres;
pub mod runner;

use crate::metrics::labels::Sink;
use crate::metrics::sinks::{JournalStats, SinkStats};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that lists the outputs (named in operator messages).
const OUTPUTS_VAR: &str = "OUTPUTS";
/// The most group commits a sink's channel holds.
const SINK_QUEUE_MAX: usize = 256;
/// The environment variable that sets the queue capacities.
const QUEUE_CAPACITY_VAR: &str = "QUEUE_CAPACITY";

/// One or more whole NDJSON lines (each ending in `\n`), one line per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: bytes::Bytes,
    /// How many events (lines) `bytes` holds.
    pub events: u32,
}

/// A sink the configuration can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// The NDJSON file (or stdout) sink of [`log`].
    Log,
    /// The Kafka downstream (`src/sink/kafka.rs`, not merged yet).
    Kafka,
    /// The PostgreSQL downstream (`src/sink/postgres.rs`, not merged yet).
    Postgres,
}

impl Output {
    /// The name used in configuration and in metric labels.
    pub fn as_str(self) -> &'static str {
        self.label().as_str()
    }

    /// The metric label of this output's sink.
    pub fn label(self) -> Sink {
        match self {
            Output::Log => Sink::Log,
            Output::Kafka => Sink::Kafka,
            Output::Postgres => Sink::Postgres,
        }
    }
}

/// An output name the configuration does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOutput(pub String);

impl fmt::Display for UnknownOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{OUTPUTS_VAR} names an unknown output `{}`; use a comma-separated list of log, kafka, postgres",
            self.0
        )
    }
}

impl std::error::Error for UnknownOutput {}

impl std::str::FromStr for Output {
    type Err = UnknownOutput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "log" | "file" => Ok(Output::Log),
            "kafka" => Ok(Output::Kafka),
            "postgres" | "postgresql" => Ok(Output::Postgres),
            _ => Err(UnknownOutput(s.to_string())),
        }
    }
}

/// What a downstream reports for one [`runner::Downstream::deliver`] call
/// (the contract shared with the Kafka and PostgreSQL downstreams).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Events the downstream now holds because of this call.
    pub written: u64,
    /// Events it already had (PostgreSQL ON CONFLICT DO NOTHING skips).
    pub duplicates: u64,
    /// Events isolated as poison and written to the dead-letter file instead.
    pub dead_lettered: u64,
}

/// When a collect request is answered (`ACK_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After the journal's fsync covering its events.
    Durable,
    /// As soon as its events are queued to the journal thread.
    Queued,
}

/// What the sinks need from the configuration.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The enabled outputs.
    pub outputs: Vec<Output>,
    /// Capacity of each core's channel to the journal, in batches, and of
    /// each sink's channel from it (at most 256 group commits)
    /// (`QUEUE_CAPACITY`).
    pub queue_capacity: usize,
    /// Settings of the log sink (used when `outputs` holds [`Output::Log`]).
    pub log: log::LogConfig,
    /// Settings of the PostgreSQL sink (used with [`Output::Postgres`]).
    pub postgres: postgres::PgConfig,
    /// Settings of the Kafka sink (used with [`Output::Kafka`]).
    pub kafka: kafka::KafkaConfig,
    /// `DATA_DIR`, `JOURNAL_MAX_MB`.
    pub journal: journal::JournalConfig,
    /// `JOURNAL_FSYNC_MS`: the least time between two group commits (0:
    /// commit whatever is queued at once).
    pub fsync_interval: Duration,
    pub ack_mode: AckMode,
    /// One handle (and channel) per core.
    pub cores: usize,
    /// Most events per downstream delivery (`BATCH_SIZE`).
    pub batch_size: usize,
    /// When another process holds the `DATA_DIR` lock, serve anyway and
    /// take the journal over when it exits (a zero-downtime restart);
    /// otherwise refuse to start.
    pub wait_for_lock: bool,
}

/// Why [`start`] refused to start the sinks.
#[derive(Debug)]
pub enum SinkError {
    /// An output that this build does not implement yet.
    NotImplemented(Output),
    /// No output is enabled, so every event would be lost.
    NoOutputs,
    /// The same output is listed twice.
    Duplicate(Output),
    /// `queue_capacity` is zero.
    ZeroCapacity,
    /// The log sink's settings or its file.
    Log(log::LogError),
    /// The journal cannot be opened (lock, directory, checkpoints).
    Journal(journal::JournalError),
    /// A downstream refused its settings (`message` is its operator message).
    Downstream { output: Output, message: String },
    /// The operating system refused to start a thread.
    Spawn {
        name: String,
        source: std::io::Error,
    },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::NotImplemented(o) => write!(
                f,
                "{OUTPUTS_VAR} names `{}`, but this build does not include that sink yet; \
                 remove it from {OUTPUTS_VAR} (only `log` is available in this build)",
                o.as_str()
            ),
            SinkError::NoOutputs => write!(
                f,
                "{OUTPUTS_VAR} enables no output, so every event would be lost; set {OUTPUTS_VAR}=log"
            ),
            SinkError::Duplicate(o) => write!(
                f,
                "{OUTPUTS_VAR} names `{}` twice; list each output once",
                o.as_str()
            ),
            SinkError::ZeroCapacity => write!(
                f,
                "{QUEUE_CAPACITY_VAR} is 0; the queues need room for at least 1 batch"
            ),
            SinkError::Log(e) => e.fmt(f),
            SinkError::Journal(e) => e.fmt(f),
            SinkError::Downstream { output, message } => {
                write!(f, "the {} sink: {message}", output.as_str())
            }
            SinkError::Spawn { name, source } => write!(
                f,
                "cannot start the {name} thread: {source}; check the process and thread limits (ulimit -u)"
            ),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::Log(e) => Some(e),
            SinkError::Journal(e) => Some(e),
            SinkError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<log::LogError> for SinkError {
    fn from(e: log::LogError) -> Self {
        SinkError::Log(e)
    }
}

impl From<journal::JournalError> for SinkError {
    fn from(e: journal::JournalError) -> Self {
        SinkError::Journal(e)
    }
}

/// Why a batch was not taken (or, in durable mode, not made durable). The
/// caller counts the batch's events as dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// This core's channel to the journal is full.
    Full,
    /// The journal holds `JOURNAL_MAX_MB`.
    JournalFull,
    /// An fsync of the journal failed: nothing is acknowledged any more.
    Failed,
    /// The journal is shutting down (or gone).
    Closed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Full => "the journal queue is full",
            SubmitError::JournalFull => "the journal is full (JOURNAL_MAX_MB)",
            SubmitError::Failed => "the journal failed and acknowledges nothing",
            SubmitError::Closed => "the journal is shutting down",
        })
    }
}

impl std::error::Error for SubmitError {}

/// One batch on its way to the journal thread.
#[derive(Debug)]
pub struct Entry {
    pub batch: Batch,
    /// Completed after the fsync covering the batch (durable collect only).
    pub ack: Option<ack::AckSender>,
    /// When the core queued it (for `journal_ack_wait_seconds`).
    pub queued: Instant,
}

/// Most bytes of events gathered in one turn of a core's event loop before
/// they are sent without waiting for the turn to end.
const GATHER_MAX: usize = 64 * 1024;

/// One core's door to the journal. Not shared: each core gets its own.
///
/// Events that need no acknowledgement (pixel hits, server events) are
/// written straight into [`SinkHandle::gather`]'s buffer and leave as one
/// [`Entry`] per turn of the core's event loop ([`SinkHandle::flush`], run
/// by the core's flusher task right after the requests of that turn): one
/// channel send, and at most one wakeup of the journal thread, for all the
/// pixel hits a turn answered, instead of one per hit.
#[derive(Debug)]
pub struct SinkHandle {
    tx: Sender<Entry>,
    capacity: usize,
    journal: Arc<JournalStats>,
    ack_mode: AckMode,
    /// Whole event lines gathered this turn, and how many.
    gathered: std::cell::RefCell<Vec<u8>>,
    gathered_events: std::cell::Cell<u32>,
    /// The core's flusher task, parked until something is gathered.
    flusher: std::cell::RefCell<Option<std::task::Waker>>,
    /// The core is ending: its flusher task stops, events go out at once.
    closing: std::cell::Cell<bool>,
}

impl SinkHandle {
    /// Refusals known before queueing: the journal is full or failed.
    fn precheck(&self) -> Result<(), SubmitError> {
        if self.journal.is_failed() {
            return Err(SubmitError::Failed);
        }
        if self.journal.is_full() {
            return Err(SubmitError::JournalFull);
        }
        Ok(())
    }

    fn send(&self, entry: Entry) -> Result<(), SubmitError> {
        match self.tx.try_send(entry) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Queues `batch` without waiting for anything (pixel, server events,
    /// and collect under `ACK_MODE=queued`).
    pub fn submit(&self, batch: Batch) -> Result<(), SubmitError> {
        self.precheck()?;
        self.send(Entry {
            batch,
            ack: None,
            queued: Instant::now(),
        })
    }

    /// Appends the event lines `write` produces (`events` of them, whole
    /// lines each ending in `\n`) to this turn's gathered events, sent by
    /// the next [`SinkHandle::flush`]. Refused, with nothing written, when
    /// the journal is full or failed or this core's queue is full.
    pub fn gather(&self, events: u32, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), SubmitError> {
        self.precheck()?;
        let mut buf = self.gathered.borrow_mut();
        let was_empty = buf.is_empty();
        // Only this core sends on its channel: a free slot seen now is
        // still free when the flush sends (the journal thread only takes).
        if was_empty && self.tx.len() >= self.capacity {
            return Err(SubmitError::Full);
        }
        if was_empty && buf.capacity() == 0 {
            buf.reserve(GATHER_MAX / 4);
        }
        write(&mut buf);
        self.gathered_events
            .set(self.gathered_events.get() + events);
        let full = buf.len() >= GATHER_MAX || self.closing.get();
        drop(buf);
        if full {
            self.flush()?;
        } else if was_empty {
            let parked = self.flusher.borrow_mut().take();
            if let Some(w) = parked {
                w.wake();
            }
        }
        Ok(())
    }

    /// Sends the events gathered so far as one entry. `Err` only when the
    /// journal thread is gone (the events are then lost; the caller counts
    /// them): the queue slot was checked when the first of them came.
    pub fn flush(&self) -> Result<(), SubmitError> {
        let events = self.gathered_events.replace(0);
        let buf = std::mem::take(&mut *self.gathered.borrow_mut());
        if buf.is_empty() {
            return Ok(());
        }
        self.send(Entry {
            batch: Batch {
                bytes: bytes::Bytes::from(buf),
                events,
            },
            ack: None,
            queued: Instant::now(),
        })
        .inspect_err(|_| self.gathered_events.set(events))
    }

    /// How many gathered events a failed flush left unsent (then cleared).
    pub fn take_unsent(&self) -> u32 {
        self.gathered.borrow_mut().clear();
        self.gathered_events.replace(0)
    }

    /// Resolves once events have been gathered (the flusher task awaits
    /// this, then calls [`SinkHandle::flush`]), or the core is ending
    /// ([`SinkHandle::is_closing`]).
    pub fn gathered(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.gathered.borrow().is_empty() && !self.closing.get() {
                *self.flusher.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    /// The core is ending: wakes the flusher task so it stops (it holds
    /// the core), and from now on gathered events are sent at once.
    pub fn close_gathering(&self) {
        self.closing.set(true);
        let parked = self.flusher.borrow_mut().take();
        if let Some(w) = parked {
            w.wake();
        }
    }

    /// Whether [`SinkHandle::close_gathering`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Queues a collect batch. Under `ACK_MODE=durable` returns the wait
    /// for the fsync that covers it; under `queued`, `None`.
    pub fn submit_collect(&self, batch: Batch) -> Result<Option<ack::AckWait>, SubmitError> {
        if self.ack_mode == AckMode::Queued {
            return self.submit(batch).map(|()| None);
        }
        self.precheck()?;
        let (tx, wait) = ack::pair();
        self.send(Entry {
            batch,
            ack: Some(tx),
            queued: Instant::now(),
        })?;
        Ok(Some(wait))
    }

    /// Whether events are refused right now (journal full or failed, or
    /// this core's queue full): `/readyz` reports it.
    pub fn is_full(&self) -> bool {
        self.journal.is_full() || self.journal.is_failed() || self.tx.len() >= self.capacity
    }

    /// The journal's state (for `/readyz`).
    pub fn journal(&self) -> &JournalStats {
        &self.journal
    }
}

impl Drop for SinkHandle {
    /// A core that ends sends what it gathered in its last turn.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Orders from the main thread to a sink thread.
#[derive(Debug)]
pub enum Control {
    /// SIGHUP: close and reopen the output (log sink: its file).
    Reopen,
    /// Deliver what the journal holds until `stop_by`, then stop.
    Stop { stop_by: Instant },
}

/// State a sink thread publishes for the journal thread and the main thread.
#[derive(Debug, Default)]
pub struct SinkShared {
    /// The last checkpoint persisted (offset), for deleting passed segments.
    pub checkpoint: AtomicU64,
    /// Its event sequence number.
    pub checkpoint_seq: AtomicU64,
}

/// What the journal thread publishes for the sink threads.
#[derive(Debug, Default)]
pub struct JournalShared {
    /// The durable end (logical offset).
    pub end: AtomicU64,
    /// The sequence number the next durable event will get.
    pub next_seq: AtomicU64,
    /// Set when the journal thread has exited (everything is committed).
    pub closed: std::sync::atomic::AtomicBool,
    /// Set at shutdown: a journal thread still waiting for the `DATA_DIR`
    /// lock stops waiting.
    pub give_up: std::sync::atomic::AtomicBool,
}

/// How one sink thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkShutdown {
    pub sink: Sink,
    /// The thread finished and was joined before the deadline.
    pub joined: bool,
    /// Journaled events it had not had acknowledged: they stay in the
    /// journal and are delivered after the next start.
    pub left_events: u64,
    /// Why the sink could not finish (the operator's message).
    pub error: Option<String>,
}

/// What [`Sinks::shutdown`] could and could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The journal thread committed everything and stopped.
    pub journal_clean: bool,
    pub sinks: Vec<SinkShutdown>,
}

impl ShutdownReport {
    /// The journal closed cleanly and every sink delivered everything.
    pub fn is_clean(&self) -> bool {
        self.journal_clean
            && self
                .sinks
                .iter()
                .all(|s| s.joined && s.left_events == 0 && s.error.is_none())
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.journal_clean {
            f.write_str("journal: committed and closed")?;
        } else {
            f.write_str("journal: did not close cleanly")?;
        }
        for s in &self.sinks {
            write!(f, "; {} sink: ", s.sink.as_str())?;
            if !s.joined {
                f.write_str("did not stop before the deadline, ")?;
            }
            if s.left_events == 0 {
                f.write_str("everything delivered")?;
            } else {
                write!(
                    f,
                    "{} events left in the journal for the next start",
                    s.left_events
                )?;
            }
            if let Some(e) = &s.error {
                write!(f, ", last error: {e}")?;
            }
        }
        Ok(())
    }
}

/// One running sink thread, as the main thread sees it.
#[derive(Debug)]
struct Worker {
    sink: Sink,
    stats: Arc<SinkStats>,
    ctrl: Sender<Control>,
}

/// The sink threads once started (at once, or when the `DATA_DIR` lock is
/// free), and a descriptor of the lock that keeps it held until the sinks
/// have stopped.
#[derive(Debug, Default)]
struct Launched {
    threads: Vec<(Sink, JoinHandle<runner::Finished>)>,
    lock: Option<std::fs::File>,
}

/// The running journal and sinks, owned by the main thread.
#[derive(Debug)]
pub struct Sinks {
    journal_stats: Arc<JournalStats>,
    journal_shared: Arc<JournalShared>,
    journal_thread: Option<JoinHandle<()>>,
    workers: Vec<Worker>,
    launched: Arc<Mutex<Launched>>,
}

impl Sinks {
    /// Each sink's label and counters, for `/readyz` and `/metrics`.
    pub fn stats(&self) -> Vec<(Sink, Arc<SinkStats>)> {
        self.workers
            .iter()
            .map(|w| (w.sink, Arc::clone(&w.stats)))
            .collect()
    }

    /// The journal's counters.
    pub fn journal_stats(&self) -> Arc<JournalStats> {
        Arc::clone(&self.journal_stats)
    }

    /// SIGHUP: the log sink closes and reopens its file.
    pub fn reopen(&self) {
        for w in &self.workers {
            let _ = w.ctrl.send(Control::Reopen);
        }
    }

    /// Call after every [`SinkHandle`] is dropped (the cores have stopped):
    /// the journal thread commits what is queued and exits; then each sink
    /// delivers what the journal holds until `deadline`. What is left stays
    /// in the journal for the next start.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let until = Instant::now() + deadline;
        let journal_clean = match self.journal_thread.take() {
            Some(t) => {
                while !t.is_finished() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Still waiting for the DATA_DIR lock: give up.
                self.journal_shared.give_up.store(true, Ordering::Release);
                let grace = Instant::now() + Duration::from_millis(500);
                while !t.is_finished() && Instant::now() < grace {
                    std::thread::sleep(Duration::from_millis(2));
                }
                t.is_finished() && t.join().is_ok() && !self.journal_stats.is_waiting()
            }
            None => true,
        };
        let stop_by = until
            .checked_sub((deadline / 10).min(Duration::from_millis(250)))
            .unwrap_or(until);
        for w in &self.workers {
            let _ = w.ctrl.send(Control::Stop { stop_by });
        }
        let mut launched = match self.launched.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        let mut sinks = Vec::with_capacity(self.workers.len());
        for w in self.workers.drain(..) {
            let next = self.journal_shared.next_seq.load(Ordering::Acquire);
            let Some(i) = launched.threads.iter().position(|(s, _)| *s == w.sink) else {
                sinks.push(SinkShutdown {
                    sink: w.sink,
                    joined: false,
                    left_events: 0,
                    error: Some(
                        "never started: the DATA_DIR lock stayed held by another process".into(),
                    ),
                });
                continue;
            };
            let (_, thread) = launched.threads.swap_remove(i);
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                match thread.join() {
                    Ok(fin) => sinks.push(SinkShutdown {
                        sink: w.sink,
                        joined: true,
                        left_events: next.saturating_sub(fin.checkpoint_seq),
                        error: fin.error,
                    }),
                    Err(_) => sinks.push(SinkShutdown {
                        sink: w.sink,
                        joined: false,
                        left_events: w.stats.lag_events.get().max(0) as u64,
                        error: Some("the sink thread panicked".into()),
                    }),
                }
            } else {
                sinks.push(SinkShutdown {
                    sink: w.sink,
                    joined: false,
                    left_events: w.stats.lag_events.get().max(0) as u64,
                    error: Some(w.stats.reason()).filter(|r| !r.is_empty()),
                });
            }
        }
        // Only now may another process take the journal.
        drop(launched.lock.take());
        ShutdownReport {
            journal_clean,
            sinks,
        }
    }
}

/// A sink prepared before the journal is open.
struct SinkPlan {
    sink: Sink,
    downstream: runner::Downstream,
    stats: Arc<SinkStats>,
    shared: Arc<SinkShared>,
    data: Receiver<runner::Delivery>,
    ctrl: Receiver<Control>,
}

/// Everything the journal thread and the sink threads need, prepared
/// before the journal is open (the open may wait for the `DATA_DIR` lock).
struct Bring {
    plans: Vec<SinkPlan>,
    lanes: Vec<runner::Lane>,
    inputs: Vec<Receiver<Entry>>,
    journal_stats: Arc<JournalStats>,
    journal_shared: Arc<JournalShared>,
    journal_cfg: journal::JournalConfig,
    batch_size: usize,
    gather: Duration,
    launched: Arc<Mutex<Launched>>,
}

impl Bring {
    /// Starts the sink threads on the open `journal`; returns the journal
    /// thread's work.
    fn launch(self, journal: journal::Journal) -> Result<runner::JournalThread, SinkError> {
        self.journal_shared
            .end
            .store(journal.end(), Ordering::Release);
        self.journal_shared
            .next_seq
            .store(journal.next_seq(), Ordering::Release);
        let cp_dir = self.journal_cfg.checkpoint_dir();
        let mut started = Vec::with_capacity(self.plans.len());
        for plan in self.plans {
            let sink = plan.sink;
            let checkpoint =
                journal::read_checkpoint(&cp_dir, sink.as_str())?.unwrap_or(journal::Checkpoint {
                    offset: journal.start(),
                    seq: 0,
                });
            plan.shared
                .checkpoint
                .store(checkpoint.offset, Ordering::Release);
            plan.shared
                .checkpoint_seq
                .store(checkpoint.seq, Ordering::Release);
            let (batch_size, linger) = plan.downstream.batching(self.batch_size);
            let ctx = runner::SinkThread {
                sink,
                downstream: plan.downstream,
                stats: plan.stats,
                shared: plan.shared,
                journal: Arc::clone(&self.journal_shared),
                journal_dir: self.journal_cfg.journal_dir(),
                checkpoint_dir: cp_dir.clone(),
                checkpoint,
                persisted: checkpoint,
                persisted_at: Instant::now(),
                batch_size: batch_size.max(1),
                linger,
                data: plan.data,
                ctrl: plan.ctrl,
            };
            let thread = std::thread::Builder::new()
                .name(format!("sink-{}", sink.as_str()))
                .spawn(move || ctx.run())
                .map_err(|source| SinkError::Spawn {
                    name: format!("sink-{}", sink.as_str()),
                    source,
                })?;
            started.push((sink, thread));
        }
        let lock = journal.lock_clone();
        if let Ok(mut l) = self.launched.lock() {
            l.threads = started;
            l.lock = lock;
        }
        Ok(runner::JournalThread {
            journal,
            inputs: self.inputs,
            lanes: self.lanes,
            stats: self.journal_stats,
            shared: self.journal_shared,
            gather: self.gather,
            lines: Vec::new(),
        })
    }

    /// The journal thread of a process started while another one held the
    /// `DATA_DIR` lock (a zero-downtime restart): the cores already queue
    /// events; take the lock as soon as the other process lets go of it.
    fn wait_then_run(self) {
        let cfg = self.journal_cfg.clone();
        loop {
            if self.journal_shared.give_up.load(Ordering::Acquire) {
                crate::error!(
                    "stopping without ever taking the DATA_DIR lock: the events queued meanwhile \
                     were not journaled",
                    data_dir = cfg.data_dir.display()
                );
                return;
            }
            std::thread::sleep(LOCK_RETRY);
            match journal::Journal::open(&cfg) {
                Ok((j, report)) => {
                    for w in &report.warnings {
                        crate::warn!("journal", detail = w);
                    }
                    let stats = Arc::clone(&self.journal_stats);
                    match self.launch(j) {
                        Ok(jt) => {
                            stats.waiting.store(false, Ordering::Relaxed);
                            crate::info!("DATA_DIR lock taken: events are journaled");
                            jt.run();
                        }
                        Err(e) => {
                            crate::error!("cannot start the sinks", error = e);
                            stats.set_failed(e.to_string());
                            stats.waiting.store(false, Ordering::Relaxed);
                        }
                    }
                    return;
                }
                Err(journal::JournalError::Locked { .. }) => {}
                Err(e) => {
                    crate::error!("cannot open the journal", error = e);
                    self.journal_stats.set_failed(e.to_string());
                    self.journal_stats.waiting.store(false, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// How often a process started beside another one tries the lock.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Checks the configuration, opens the outputs (so a bad `LOG_PATH` fails
/// here, at start-up) and the journal, and starts the journal thread and one
/// thread per sink. Returns one handle per core. When another process holds
/// the `DATA_DIR` lock, either refuses, or (with `wait_for_lock`) returns at
/// once and takes the journal over when that process exits.
pub fn start(cfg: SinkConfig) -> Result<(Vec<SinkHandle>, Sinks), SinkError> {
    if cfg.outputs.is_empty() {
        return Err(SinkError::NoOutputs);
    }
    for (i, o) in cfg.outputs.iter().enumerate() {
        if cfg.outputs[..i].contains(o) {
            return Err(SinkError::Duplicate(*o));
        }
    }
    if cfg.queue_capacity == 0 {
        return Err(SinkError::ZeroCapacity);
    }
    cfg.log.validate()?;

    // The downstreams first: an output this build lacks, or a bad
    // `LOG_PATH`, is refused before the journal is touched.
    let mut downstreams = Vec::with_capacity(cfg.outputs.len());
    for output in &cfg.outputs {
        let stats = Arc::new(SinkStats::default());
        let d = runner::Downstream::build(*output, &cfg, Arc::clone(&stats))?;
        downstreams.push((output.label(), d, stats));
    }
    let journal_stats = Arc::new(JournalStats::default());
    let journal_shared = Arc::new(JournalShared::default());
    let mut plans = Vec::with_capacity(downstreams.len());
    let mut lanes = Vec::with_capacity(downstreams.len());
    let mut workers = Vec::with_capacity(downstreams.len());
    for (sink, downstream, stats) in downstreams {
        let shared = Arc::new(SinkShared::default());
        // Small: a sink that cannot keep up reads the journal files
        // instead of holding group commits in memory.
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity.min(SINK_QUEUE_MAX));
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::unbounded();
        lanes.push(runner::Lane {
            tx,
            shared: Arc::clone(&shared),
        });
        workers.push(Worker {
            sink,
            stats: Arc::clone(&stats),
            ctrl: ctrl_tx,
        });
        plans.push(SinkPlan {
            sink,
            downstream,
            stats,
            shared,
            data: rx,
            ctrl: ctrl_rx,
        });
    }
    // One channel per core to the journal thread.
    let mut handles = Vec::with_capacity(cfg.cores.max(1));
    let mut inputs = Vec::with_capacity(cfg.cores.max(1));
    for _ in 0..cfg.cores.max(1) {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
        handles.push(SinkHandle {
            tx,
            capacity: cfg.queue_capacity,
            journal: Arc::clone(&journal_stats),
            ack_mode: cfg.ack_mode,
            gathered: Default::default(),
            gathered_events: Default::default(),
            flusher: Default::default(),
            closing: Default::default(),
        });
        inputs.push(rx);
    }
    let launched = Arc::new(Mutex::new(Launched::default()));
    let bring = Bring {
        plans,
        lanes,
        inputs,
        journal_stats: Arc::clone(&journal_stats),
        journal_shared: Arc::clone(&journal_shared),
        journal_cfg: cfg.journal.clone(),
        batch_size: cfg.batch_size.max(1),
        gather: cfg.fsync_interval,
        launched: Arc::clone(&launched),
    };
    let body: Box<dyn FnOnce() + Send> = match journal::Journal::open(&cfg.journal) {
        Ok((journal, report)) => {
            for w in &report.warnings {
                crate::warn!("journal", detail = w);
            }
            let jt = bring.launch(journal)?;
            Box::new(move || jt.run())
        }
        Err(journal::JournalError::Locked { dir }) if cfg.wait_for_lock => {
            crate::warn!(
                "DATA_DIR is locked by another trackgate process: requests are served and their \
                 events queued until it exits and this process takes the journal over",
                data_dir = dir.display()
            );
            journal_stats.waiting.store(true, Ordering::Relaxed);
            Box::new(move || bring.wait_then_run())
        }
        Err(e) => return Err(e.into()),
    };
    let journal_thread = std::thread::Builder::new()
        .name("journal".into())
        .spawn(body)
        .map_err(|source| SinkError::Spawn {
            name: "journal".into(),
            source,
        })?;
    Ok((
        handles,
        Sinks {
            journal_stats,
            journal_shared,
            journal_thread: Some(journal_thread),
            workers,
            launched,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sinks::SinkHealth;
    use bytes::Bytes;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicUsize;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "trackgate-sinks-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(p.join("out")).unwrap();
            Tmp(p)
        }
        fn log(&self) -> PathBuf {
            self.0.join("out").join("events.ndjson")
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(t: &Tmp, max_bytes: u64, capacity: usize) -> SinkConfig {
        let defaults =
            crate::config::Config::from_lookup(crate::config::Mode::Serve, &|k| match k {
                "FORWARD_DESTINATION" => Some("http://127.0.0.1:9".to_string()),
                "HMAC_SECRET" => Some("0123456789abcdef0123".to_string()),
                _ => None,
            })
            .expect("defaults");
        SinkConfig {
            outputs: vec![Output::Log],
            queue_capacity: capacity,
            log: log::tests::config(log::LogTarget::File(t.log())),
            postgres: defaults.pg,
            kafka: defaults.kafka,
            journal: journal::JournalConfig {
                data_dir: t.0.join("data"),
                max_bytes,
                segment_bytes: 400,
            },
            fsync_interval: Duration::from_millis(1),
            ack_mode: AckMode::Durable,
            cores: 2,
            batch_size: 8,
            wait_for_lock: false,
        }
    }

    fn batch(from: usize, to: usize) -> Batch {
        let text: String = (from..to).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        Batch {
            bytes: Bytes::from(text),
            events: (to - from) as u32,
        }
    }

    fn numbers(p: &Path) -> Vec<u64> {
        fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("{\"n\":")?.strip_suffix('}')?.parse().ok())
            .collect()
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_stats(s: &Sinks) -> Arc<SinkStats> {
        Arc::clone(&s.stats()[0].1)
    }

    #[test]
    fn events_from_every_core_reach_the_log_and_the_checkpoint() {
        let t = Tmp::new("basic");
        let (handles, sinks) = start(config(&t, 1 << 20, 64)).unwrap();
        assert_eq!(handles.len(), 2);
        for i in 0..20 {
            handles[i % 2].submit(batch(i * 3, i * 3 + 3)).unwrap();
        }
        drop(handles);
        let report = sinks.shutdown(Duration::from_secs(10));
        assert!(report.is_clean(), "{report}");
        let mut got = numbers(&t.log());
        got.sort_unstable();
        assert_eq!(got, (0..60).collect::<Vec<u64>>());
        let cp = journal::read_checkpoint(&t.0.join("data/checkpoints"), "log")
            .unwrap()
            .unwrap();
        assert_eq!(cp.seq, 60);
    }

    #[test]
    fn a_durable_ack_resolves_after_the_fsync() {
        let t = Tmp::new("ack");
        let cfg = config(&t, 1 << 20, 64);
        let jdir = cfg.journal.journal_dir();
        let (handles, sinks) = start(cfg).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            let wait = handles[0].submit_collect(batch(0, 4)).unwrap();
            match wait {
                Some(w) => w.await,
                None => Err(ack::AckError::Closed),
            }
        });
        assert_eq!(r, Ok(()));
        // Acknowledged means in the journal, whatever the sinks did.
        let mut out = Vec::new();
        journal::Reader::new(jdir)
            .read(0, u64::MAX, 100, &mut out)
            .unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].payload, b"{\"n\":0}");
        drop(handles);
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
    }

    #[test]
    fn a_down_sink_falls_behind_then_replays_from_the_journal() {
        let t = Tmp::new("behind");
        // A sink channel of one delivery: most deliveries miss it.
        let (handles, sinks) = start(config(&t, 1 << 20, 1)).unwrap();
        let stats = log_stats(&sinks);
        handles[0].submit(batch(0, 2)).unwrap();
        wait_for("the first lines", || numbers(&t.log()).len() == 2);
        fs::remove_dir_all(t.0.join("out")).unwrap();
        sinks.reopen();
        let mut sent = 2;
        for i in 0..40 {
            let b = batch(2 + i * 2, 4 + i * 2);
            wait_for("room", || handles[i % 2].submit(b.clone()).is_ok());
            sent += 2;
        }
        wait_for("the sink to go down", || stats.health() == SinkHealth::Down);
        assert!(stats.reason().contains("LOG_PATH"), "{}", stats.reason());
        wait_for("the lag", || stats.lag_events.get() == sent - 2);
        fs::create_dir_all(t.0.join("out")).unwrap();
        wait_for("the catch-up", || stats.lag_events.get() == 0);
        assert_eq!(stats.health(), SinkHealth::Healthy);
        assert!(stats.events_replayed.get() > 0);
        drop(handles);
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        let mut got = numbers(&t.log());
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, (2..sent as u64).collect::<Vec<u64>>());
    }

    #[test]
    fn what_shutdown_cannot_deliver_is_delivered_after_a_restart() {
        let t = Tmp::new("restart");
        let (handles, sinks) = start(config(&t, 1 << 20, 64)).unwrap();
        let stats = log_stats(&sinks);
        fs::remove_dir_all(t.0.join("out")).unwrap();
        sinks.reopen();
        for i in 0..10 {
            handles[0].submit(batch(i * 2, i * 2 + 2)).unwrap();
        }
        wait_for("the sink to go down", || stats.health() == SinkHealth::Down);
        drop(handles);
        let report = sinks.shutdown(Duration::from_millis(500));
        assert!(!report.is_clean());
        assert!(report.journal_clean);
        assert_eq!(report.sinks[0].left_events, 20, "{report}");
        assert!(report.to_string().contains("20 events left"), "{report}");

        fs::create_dir_all(t.0.join("out")).unwrap();
        let (handles, sinks) = start(config(&t, 1 << 20, 64)).unwrap();
        handles[1].submit(batch(20, 22)).unwrap();
        drop(handles);
        let report = sinks.shutdown(Duration::from_secs(10));
        assert!(report.is_clean(), "{report}");
        assert_eq!(numbers(&t.log()), (0..22).collect::<Vec<u64>>());
    }

    #[test]
    fn passed_segments_are_deleted_and_a_full_journal_refuses_until_it_drains() {
        let t = Tmp::new("full");
        let cfg = config(&t, 2000, 64);
        let jdir = cfg.journal.journal_dir();
        let (handles, sinks) = start(cfg).unwrap();
        let stats = log_stats(&sinks);
        let js = sinks.journal_stats();
        for i in 0..50 {
            handles[0].submit(batch(i, i + 1)).unwrap();
        }
        wait_for("delivery", || stats.events_acked.get() == 50);
        wait_for("deletion", || {
            journal::list_segments(&jdir).unwrap().len() <= 2 && js.segments.get() <= 2
        });
        // The sink goes down: the journal fills and refuses.
        fs::remove_dir_all(t.0.join("out")).unwrap();
        sinks.reopen();
        let mut i = 50;
        wait_for("the journal to fill", || {
            let r = handles[0].submit(batch(i, i + 1));
            i += 1;
            r == Err(SubmitError::JournalFull)
        });
        assert!(js.is_full());
        assert!(js.bytes.get() <= 2000);
        assert!(js.refused.get() >= 1);
        assert!(handles[0].is_full());
        fs::create_dir_all(t.0.join("out")).unwrap();
        wait_for("room again", || !js.is_full());
        assert!(handles[0].submit(batch(1000, 1001)).is_ok());
        drop(handles);
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        let got = numbers(&t.log());
        assert_eq!(got.last(), Some(&1000));
    }

    fn bare_handle(capacity: usize) -> (SinkHandle, Receiver<Entry>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let h = SinkHandle {
            tx,
            capacity,
            journal: Arc::default(),
            ack_mode: AckMode::Durable,
            gathered: Default::default(),
            gathered_events: Default::default(),
            flusher: Default::default(),
            closing: Default::default(),
        };
        (h, rx)
    }

    #[test]
    fn gathered_events_leave_as_one_entry_per_flush() {
        let (h, rx) = bare_handle(4);
        for i in 0..3 {
            h.gather(1, |out| {
                out.extend_from_slice(format!("{{\"n\":{i}}}\n").as_bytes())
            })
            .unwrap();
        }
        assert!(rx.try_recv().is_err(), "nothing is sent before the flush");
        h.flush().unwrap();
        let e = rx.try_recv().unwrap();
        assert_eq!(e.batch.events, 3);
        assert_eq!(&e.batch.bytes[..], b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
        assert!(e.ack.is_none());
        h.flush().unwrap();
        assert!(rx.try_recv().is_err(), "an empty flush sends nothing");

        // A turn that gathers GATHER_MAX bytes sends them without waiting.
        let line = vec![b'x'; 1023];
        for _ in 0..GATHER_MAX / 1024 {
            h.gather(1, |out| {
                out.extend_from_slice(&line);
                out.push(b'\n');
            })
            .unwrap();
        }
        assert_eq!(
            rx.try_recv().unwrap().batch.events as usize,
            GATHER_MAX / 1024
        );

        // Once the core is ending, every event goes out at once; a handle
        // dropped with events gathered sends them.
        h.close_gathering();
        h.gather(1, |out| out.extend_from_slice(b"{}\n")).unwrap();
        assert_eq!(rx.try_recv().unwrap().batch.events, 1);
        let (h, rx) = bare_handle(4);
        h.gather(2, |out| out.extend_from_slice(b"{}\n{}\n"))
            .unwrap();
        drop(h);
        assert_eq!(rx.try_recv().unwrap().batch.events, 2);
    }

    #[test]
    fn gathering_is_refused_when_the_queue_is_full() {
        let (h, rx) = bare_handle(1);
        h.gather(1, |out| out.extend_from_slice(b"{}\n")).unwrap();
        // The free slot seen by the first event of the turn is kept for it.
        h.gather(1, |out| out.extend_from_slice(b"{}\n")).unwrap();
        h.flush().unwrap();
        let mut wrote = false;
        assert_eq!(
            h.gather(1, |_| wrote = true),
            Err(SubmitError::Full),
            "the queue's one slot is taken"
        );
        assert!(!wrote, "nothing is written for a refused event");
        assert_eq!(rx.try_recv().unwrap().batch.events, 2);
        h.gather(1, |out| out.extend_from_slice(b"{}\n")).unwrap();
    }

    #[test]
    fn start_refuses_bad_configuration() {
        let t = Tmp::new("bad");
        let cfg = |outputs: Vec<Output>, cap: usize| {
            let mut c = config(&t, 1 << 20, cap);
            c.outputs = outputs;
            c
        };
        let msg = |r: Result<(Vec<SinkHandle>, Sinks), SinkError>| match r {
            Ok(_) => String::from("started"),
            Err(e) => e.to_string(),
        };
        assert!(msg(start(cfg(vec![Output::Kafka], 4))).contains("kafka"));
        assert!(msg(start(cfg(vec![Output::Log, Output::Postgres], 4))).contains("postgres"));
        assert!(msg(start(cfg(vec![], 4))).contains("OUTPUTS"));
        assert!(msg(start(cfg(vec![Output::Log, Output::Log], 4))).contains("twice"));
        assert!(msg(start(cfg(vec![Output::Log], 0))).contains("QUEUE_CAPACITY"));
        // Two processes (here: two starts) on one DATA_DIR.
        let (h, s) = start(cfg(vec![Output::Log], 4)).unwrap();
        assert!(msg(start(cfg(vec![Output::Log], 4))).contains("DATA_DIR"));
        drop(h);
        s.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn outputs_parse_by_name() {
        assert_eq!("log".parse::<Output>(), Ok(Output::Log));
        assert_eq!(" Kafka ".parse::<Output>(), Ok(Output::Kafka));
        assert_eq!("postgres".parse::<Output>(), Ok(Output::Postgres));
        assert!("s3".parse::<Output>().is_err());
    }
}
