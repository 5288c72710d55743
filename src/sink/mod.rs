//! The sink fan-out: the one door through which encoded events leave a core.
//!
//! A core hands a [`Batch`] (whole NDJSON lines) to its [`SinkHandle`], which
//! offers it, without blocking, to the bounded crossbeam channel of every
//! enabled sink. Each sink runs on its own named blocking thread, so a slow
//! disk or a dead database only ever fills a queue: the cores see
//! [`SubmitError::Full`] and count a drop, they never wait.
//!
//! The main thread owns [`Sinks`]: it reads the per-sink [`SinkStats`] for
//! `/readyz` and `/metrics`, forwards SIGHUP ([`Sinks::reopen`]) and stops the
//! sinks at shutdown over a separate control channel, because clones of the
//! handle may still live in the cores and the data channels may never
//! disconnect. This module is also the seam for the Kafka and PostgreSQL
//! sinks and the journal that will sit in front of them: the cores only ever
//! call [`SinkHandle::submit`].

pub mod kafka;
pub mod log;

use crate::metrics::labels::{Sink, SinkFailure};
use crate::metrics::sinks::SinkStats;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that lists the outputs (named in operator messages).
const OUTPUTS_VAR: &str = "OUTPUTS";
/// The environment variable that sets the per-sink queue capacity.
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
    /// Not implemented yet: arrives with the sinks issue.
    Kafka,
    /// Not implemented yet: arrives with the sinks issue.
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

/// What the sinks need from the configuration.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The enabled outputs. Only [`Output::Log`] is implemented so far.
    pub outputs: Vec<Output>,
    /// Capacity of each sink's channel, in batches.
    pub queue_capacity: usize,
    /// Settings of the log sink (used when `outputs` holds [`Output::Log`]).
    pub log: log::LogConfig,
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
    /// The operating system refused to start a sink thread.
    Spawn { sink: Sink, source: std::io::Error },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::NotImplemented(o) => write!(
                f,
                "{OUTPUTS_VAR} names `{}`, but the Kafka and PostgreSQL sinks arrive with a later release; \
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
                "{QUEUE_CAPACITY_VAR} is 0; the sink queue needs room for at least 1 batch"
            ),
            SinkError::Log(e) => e.fmt(f),
            SinkError::Spawn { sink, source } => write!(
                f,
                "cannot start the {} sink thread: {source}; check the process and thread limits (ulimit -u)",
                sink.as_str()
            ),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::Log(e) => Some(e),
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

/// Why [`SinkHandle::submit`] did not take a batch. The caller counts the
/// batch's events as dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// Some enabled sink's queue is full; nothing was sent to any sink.
    Full,
    /// The sinks are shutting down (or gone); nothing was sent.
    Closed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full => f.write_str("a sink queue is full"),
            SubmitError::Closed => f.write_str("the sinks are shutting down"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Closes the door at shutdown. One word: the high bit says "closed", the
/// rest counts submits in progress, so shutdown can wait until no core is
/// between its check and its send before it tells the sinks to drain.
#[derive(Debug, Default)]
struct Gate(AtomicUsize);

const GATE_CLOSED: usize = 1 << (usize::BITS - 1);

impl Gate {
    fn enter(&self) -> Option<GatePass<'_>> {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        let pass = GatePass(self);
        if prev & GATE_CLOSED != 0 {
            return None; // `pass` is dropped: the count goes back down.
        }
        Some(pass)
    }

    fn close(&self) {
        self.0.fetch_or(GATE_CLOSED, Ordering::AcqRel);
    }

    fn in_flight(&self) -> usize {
        self.0.load(Ordering::Acquire) & !GATE_CLOSED
    }
}

struct GatePass<'a>(&'a Gate);

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One sink's end of the fan-out.
#[derive(Debug)]
struct Lane {
    sink: Sink,
    tx: Sender<Batch>,
    capacity: usize,
    stats: Arc<SinkStats>,
}

#[derive(Debug)]
struct Fanout {
    gate: Gate,
    lanes: Vec<Lane>,
}

/// The cores' handle on the sinks. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct SinkHandle {
    inner: Arc<Fanout>,
}

impl SinkHandle {
    /// Offers `batch` to every enabled sink without blocking. All or nothing:
    /// when any sink's queue is full nothing is sent and [`SubmitError::Full`]
    /// is returned. If a queue fills between that check and the send (another
    /// core raced us) while other sinks took the batch, the batch is counted
    /// as a `rejected` failure on the sink that missed it.
    pub fn submit(&self, batch: Batch) -> Result<(), SubmitError> {
        let Some(_pass) = self.inner.gate.enter() else {
            return Err(SubmitError::Closed);
        };
        let lanes = &self.inner.lanes;
        if self.is_full() {
            return Err(SubmitError::Full);
        }
        let mut accepted = 0usize;
        let mut missed_full = 0u32; // bit i: lane i was full
        let mut missed_closed = 0u32; // bit i: lane i is gone
        let last = lanes.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, lane) in lanes.iter().enumerate() {
            let b = if i == last {
                batch.take()
            } else {
                batch.clone()
            };
            let Some(b) = b else { break };
            match lane.tx.try_send(b) {
                Ok(()) => accepted += 1,
                Err(TrySendError::Full(_)) => missed_full |= 1 << i,
                Err(TrySendError::Disconnected(_)) => missed_closed |= 1 << i,
            }
        }
        if accepted == 0 {
            return Err(if missed_full != 0 {
                SubmitError::Full
            } else {
                SubmitError::Closed
            });
        }
        for (i, lane) in lanes.iter().enumerate() {
            if (missed_full | missed_closed) & (1 << i) != 0 {
                // Shared writers: the core threads, never the sink thread
                // (which does not count `rejected`).
                lane.stats.failures[SinkFailure::Rejected.index()].add_shared(1);
            }
        }
        Ok(())
    }

    /// Whether a submit would be refused right now because some sink's queue
    /// is full (`/readyz` reports it: events cannot be accepted at all).
    pub fn is_full(&self) -> bool {
        self.inner.lanes.iter().any(|l| l.tx.len() >= l.capacity)
    }

    /// A handle backed by one in-memory channel and no sink thread, for tests
    /// and benchmarks of the code that submits. The lane is labelled `log`;
    /// dropping the receiver makes `submit` return [`SubmitError::Closed`].
    pub fn in_memory(capacity: usize) -> (SinkHandle, Receiver<Batch>) {
        let (handle, mut ends) = fanout(&[Sink::Log], capacity.max(1));
        let rx = match ends.pop() {
            Some(end) => end.rx,
            // `fanout` returns one end per label; an empty list cannot happen,
            // but a disconnected receiver is a safe answer if it ever did.
            None => crossbeam_channel::bounded(1).1,
        };
        (handle, rx)
    }

    fn close(&self) {
        self.inner.gate.close();
    }
}

/// The receiving end of one lane, before its thread is started.
struct LaneEnd {
    rx: Receiver<Batch>,
    stats: Arc<SinkStats>,
}

/// Builds the channels of the fan-out without starting any thread.
fn fanout(sinks: &[Sink], capacity: usize) -> (SinkHandle, Vec<LaneEnd>) {
    let mut lanes = Vec::with_capacity(sinks.len());
    let mut ends = Vec::with_capacity(sinks.len());
    for &sink in sinks {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let stats = Arc::new(SinkStats::default());
        lanes.push(Lane {
            sink,
            tx,
            capacity,
            stats: Arc::clone(&stats),
        });
        ends.push(LaneEnd { rx, stats });
    }
    let inner = Arc::new(Fanout {
        gate: Gate::default(),
        lanes,
    });
    (SinkHandle { inner }, ends)
}

/// Orders from the main thread to a sink thread.
#[derive(Debug)]
enum Control {
    /// SIGHUP: close and reopen the output (log sink: its file).
    Reopen,
    /// Drain the queue, flush, sync and return by `stop_by`.
    Stop { stop_by: Instant },
}

/// What a sink thread buffers but has not written yet, published for the
/// shutdown report in case the thread does not finish in time.
#[derive(Debug, Default)]
struct Backlog {
    events: AtomicU64,
    bytes: AtomicU64,
}

impl Backlog {
    fn set(&self, events: u64, bytes: u64) {
        self.events.store(events, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

/// How one sink thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkShutdown {
    pub sink: Sink,
    /// The thread finished and was joined before the deadline.
    pub joined: bool,
    /// Events accepted from the cores but not written (buffered in the sink,
    /// plus those still queued if the thread did not finish).
    pub unwritten_events: u64,
    /// Bytes of the events in `unwritten_events` that are known; batches
    /// still queued in an unfinished thread's channel are in `queued_batches`.
    pub unwritten_bytes: u64,
    /// Batches left in the channel (only when the thread did not finish).
    pub queued_batches: usize,
    /// Why the sink could not finish cleanly (the operator's message).
    pub error: Option<String>,
}

impl SinkShutdown {
    /// Everything was written and the thread was joined.
    pub fn is_clean(&self) -> bool {
        self.joined
            && self.unwritten_events == 0
            && self.unwritten_bytes == 0
            && self.queued_batches == 0
            && self.error.is_none()
    }
}

/// What [`Sinks::shutdown`] could and could not do, one entry per sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    pub sinks: Vec<SinkShutdown>,
}

impl ShutdownReport {
    /// Every sink wrote everything and was joined.
    pub fn is_clean(&self) -> bool {
        self.sinks.iter().all(SinkShutdown::is_clean)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.sinks {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{} sink: ", s.sink.as_str())?;
            if s.is_clean() {
                f.write_str("stopped, everything written")?;
                continue;
            }
            if s.joined {
                f.write_str("stopped")?;
            } else {
                f.write_str("did not stop before the deadline")?;
            }
            write!(
                f,
                ", {} events ({} bytes) not written",
                s.unwritten_events, s.unwritten_bytes
            )?;
            if s.queued_batches > 0 {
                write!(f, ", {} batches still queued", s.queued_batches)?;
            }
            if let Some(e) = &s.error {
                write!(f, ", last error: {e}")?;
            }
        }
        Ok(())
    }
}

/// What a sink thread sends back when it stops.
#[derive(Debug)]
struct Finished {
    unwritten_events: u64,
    unwritten_bytes: u64,
    error: Option<String>,
}

/// One running sink thread, as the main thread sees it.
#[derive(Debug)]
struct Worker {
    sink: Sink,
    stats: Arc<SinkStats>,
    ctrl: Sender<Control>,
    done: Receiver<Finished>,
    backlog: Arc<Backlog>,
    thread: JoinHandle<()>,
}

/// The running sinks, owned by the main thread.
#[derive(Debug)]
pub struct Sinks {
    handle: SinkHandle,
    workers: Vec<Worker>,
}

/// How long before the caller's deadline a sink thread stops retrying, so
/// that it can report and be joined in time.
fn stop_margin(deadline: Duration) -> Duration {
    (deadline / 10).min(Duration::from_millis(250))
}

impl Sinks {
    /// Each sink's label and counters, for `/readyz` and `/metrics`.
    pub fn stats(&self) -> Vec<(Sink, Arc<SinkStats>)> {
        self.workers
            .iter()
            .map(|w| (w.sink, Arc::clone(&w.stats)))
            .collect()
    }

    /// SIGHUP: the log sink flushes, closes and reopens its file (after
    /// logrotate moved it away).
    pub fn reopen(&self) {
        for w in &self.workers {
            // Fails only if the thread is gone, and then there is nothing to reopen.
            let _ = w.ctrl.send(Control::Reopen);
        }
    }

    /// Closes the door (every core's `submit` returns `Closed` from now on),
    /// lets each sink drain its queue, flush and sync, and joins the threads.
    /// Returns within `deadline` (plus the time of a write stuck in the
    /// kernel), reporting what could not be written.
    pub fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let until = started + deadline;
        self.handle.close();
        // A core may be between its check of the gate and its send; it does
        // not block, so this wait is short.
        while self.handle.inner.gate.in_flight() > 0 && Instant::now() < until {
            std::thread::yield_now();
        }
        let stop_by = until.checked_sub(stop_margin(deadline)).unwrap_or(started);
        for w in &self.workers {
            let _ = w.ctrl.send(Control::Stop { stop_by });
        }
        let mut sinks = Vec::with_capacity(self.workers.len());
        for w in self.workers {
            let lane_len = self
                .handle
                .inner
                .lanes
                .iter()
                .find(|l| l.sink == w.sink)
                .map_or(0, |l| l.tx.len());
            match w.done.recv_deadline(until) {
                Ok(fin) => {
                    let joined = w.thread.join().is_ok();
                    sinks.push(SinkShutdown {
                        sink: w.sink,
                        joined,
                        unwritten_events: fin.unwritten_events,
                        unwritten_bytes: fin.unwritten_bytes,
                        queued_batches: 0,
                        error: fin.error,
                    });
                }
                Err(_) => {
                    // Still running (stuck in a system call) or it died: do
                    // not wait any longer; the thread is left detached.
                    let joined = w.thread.is_finished() && w.thread.join().is_ok();
                    sinks.push(SinkShutdown {
                        sink: w.sink,
                        joined,
                        unwritten_events: w.backlog.events.load(Ordering::Relaxed),
                        unwritten_bytes: w.backlog.bytes.load(Ordering::Relaxed),
                        queued_batches: lane_len,
                        error: Some(w.stats.reason()).filter(|r| !r.is_empty()),
                    });
                }
            }
        }
        ShutdownReport { sinks }
    }
}

/// Checks the configuration, opens the outputs (so a bad `LOG_PATH` fails
/// here, at start-up) and starts one named thread per sink.
pub fn start(cfg: SinkConfig) -> Result<(SinkHandle, Sinks), SinkError> {
    if cfg.outputs.is_empty() {
        return Err(SinkError::NoOutputs);
    }
    for (i, o) in cfg.outputs.iter().enumerate() {
        if cfg.outputs[..i].contains(o) {
            return Err(SinkError::Duplicate(*o));
        }
        if *o != Output::Log {
            return Err(SinkError::NotImplemented(*o));
        }
    }
    if cfg.queue_capacity == 0 {
        return Err(SinkError::ZeroCapacity);
    }
    cfg.log.validate()?;

    let labels: Vec<Sink> = cfg.outputs.iter().map(|o| o.label()).collect();
    let (handle, ends) = fanout(&labels, cfg.queue_capacity);
    let mut workers = Vec::with_capacity(ends.len());
    for (output, end) in cfg.outputs.iter().zip(ends) {
        let worker = match output {
            Output::Log => {
                let backlog = Arc::new(Backlog::default());
                log::LogSink::open(
                    cfg.log.clone(),
                    Arc::clone(&end.stats),
                    Arc::clone(&backlog),
                )
                .map_err(SinkError::from)
                .and_then(|sink| {
                    spawn(Sink::Log, end, backlog, move |data, ctrl| {
                        sink.run(data, ctrl)
                    })
                })
            }
            Output::Kafka | Output::Postgres => Err(SinkError::NotImplemented(*output)),
        };
        match worker {
            Ok(w) => workers.push(w),
            Err(e) => {
                // Stop what already runs before reporting the error.
                Sinks { handle, workers }.shutdown(Duration::from_secs(5));
                return Err(e);
            }
        }
    }
    let sinks = Sinks {
        handle: handle.clone(),
        workers,
    };
    Ok((handle, sinks))
}

/// Starts the thread `sink-<name>` running `body` on the lane's receiver.
fn spawn<F>(sink: Sink, end: LaneEnd, backlog: Arc<Backlog>, body: F) -> Result<Worker, SinkError>
where
    F: FnOnce(Receiver<Batch>, Receiver<Control>) -> Finished + Send + 'static,
{
    let (ctrl_tx, ctrl_rx) = crossbeam_channel::unbounded();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let stats = Arc::clone(&end.stats);
    let rx = end.rx;
    let thread = std::thread::Builder::new()
        .name(format!("sink-{}", sink.as_str()))
        .spawn(move || {
            let fin = body(rx, ctrl_rx);
            let _ = done_tx.send(fin);
        })
        .map_err(|source| SinkError::Spawn { sink, source })?;
    Ok(Worker {
        sink,
        stats,
        ctrl: ctrl_tx,
        done: done_rx,
        backlog,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(s: &'static str) -> Batch {
        Batch {
            bytes: Bytes::from_static(s.as_bytes()),
            events: s.matches('\n').count() as u32,
        }
    }

    #[test]
    fn submit_is_all_or_nothing_across_sinks() {
        let (h, ends) = fanout(&[Sink::Log, Sink::Kafka], 2);
        assert_eq!(h.submit(batch("{\"a\":1}\n")), Ok(()));
        assert_eq!(h.submit(batch("{\"a\":2}\n")), Ok(()));
        assert_eq!(h.submit(batch("{\"a\":3}\n")), Err(SubmitError::Full));
        // Only the first sink makes room: still full as a whole, and the
        // first sink must not receive the refused batch.
        assert_eq!(
            ends[0].rx.try_recv().map(|b| b.bytes),
            Ok(Bytes::from_static(b"{\"a\":1}\n"))
        );
        assert_eq!(h.submit(batch("{\"a\":4}\n")), Err(SubmitError::Full));
        assert_eq!(ends[0].rx.len(), 1);
        assert_eq!(ends[1].rx.len(), 2);
        assert!(ends[1].rx.try_recv().is_ok());
        assert_eq!(h.submit(batch("{\"a\":5}\n")), Ok(()));
        let got: Vec<Bytes> = ends[0].rx.try_iter().map(|b| b.bytes).collect();
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"{\"a\":2}\n"),
                Bytes::from_static(b"{\"a\":5}\n")
            ]
        );
        for e in &ends {
            assert_eq!(e.stats.failures[SinkFailure::Rejected.index()].get(), 0);
        }
    }

    #[test]
    fn in_memory_handle_reports_full_then_closed() {
        let (h, rx) = SinkHandle::in_memory(1);
        let h2 = h.clone();
        assert_eq!(h.submit(batch("x\n")), Ok(()));
        assert_eq!(h2.submit(batch("y\n")), Err(SubmitError::Full));
        assert_eq!(rx.recv().map(|b| b.events), Ok(1));
        drop(rx);
        assert_eq!(h.submit(batch("z\n")), Err(SubmitError::Closed));
    }

    #[test]
    fn closed_gate_refuses_and_counts_nothing_in_flight() {
        let (h, ends) = fanout(&[Sink::Log], 4);
        h.close();
        assert_eq!(h.submit(batch("x\n")), Err(SubmitError::Closed));
        assert_eq!(h.inner.gate.in_flight(), 0);
        assert!(ends[0].rx.is_empty());
    }

    #[test]
    fn start_refuses_bad_configuration() {
        let log = log::tests::config(log::LogTarget::Stdout);
        let cfg = |outputs: Vec<Output>, cap: usize| SinkConfig {
            outputs,
            queue_capacity: cap,
            log: log.clone(),
        };
        let msg = |r: Result<(SinkHandle, Sinks), SinkError>| match r {
            Ok(_) => String::from("started"),
            Err(e) => e.to_string(),
        };
        assert!(msg(start(cfg(vec![Output::Kafka], 4))).contains("kafka"));
        assert!(msg(start(cfg(vec![Output::Log, Output::Postgres], 4))).contains("postgres"));
        assert!(msg(start(cfg(vec![], 4))).contains("OUTPUTS"));
        assert!(msg(start(cfg(vec![Output::Log, Output::Log], 4))).contains("twice"));
        assert!(msg(start(cfg(vec![Output::Log], 0))).contains("QUEUE_CAPACITY"));
    }

    #[test]
    fn outputs_parse_by_name() {
        assert_eq!("log".parse::<Output>(), Ok(Output::Log));
        assert_eq!(" Kafka ".parse::<Output>(), Ok(Output::Kafka));
        assert_eq!("postgres".parse::<Output>(), Ok(Output::Postgres));
        assert!("s3".parse::<Output>().is_err());
    }

    #[test]
    fn report_names_what_was_lost() {
        let r = ShutdownReport {
            sinks: vec![SinkShutdown {
                sink: Sink::Log,
                joined: true,
                unwritten_events: 3,
                unwritten_bytes: 30,
                queued_batches: 0,
                error: Some("disk full".into()),
            }],
        };
        assert!(!r.is_clean());
        let text = r.to_string();
        assert!(
            text.contains("3 events") && text.contains("disk full"),
            "{text}"
        );
    }
}
