//! The threads behind the journal: the journal thread (group commit, then
//! fan-out) and one blocking thread per enabled sink running its
//! [`Downstream`].
//!
//! A sink thread delivers the records the journal thread hands it after
//! each fsync. When its channel was full (it is slow) or it was down, it
//! finds a gap between its checkpoint and the next record it holds, and
//! reads the journal files from its checkpoint until it has caught up:
//! nothing is dropped. It persists its checkpoint only after the downstream
//! acknowledged, so a restart resumes from there (at-least-once).

use super::ack::{AckError, AckSender};
use super::journal::{self, Checkpoint, Journal, Reader, HEADER};
use super::{
    log, Control, Delivered, Entry, JournalShared, Output, SinkConfig, SinkError, SinkShared,
};
use crate::metrics::labels::{Sink, SinkFailure};
use crate::metrics::sinks::{JournalStats, SinkStats};
use crate::{error, info, warn};
use bytes::Bytes;
use crossbeam_channel::{select, Receiver, Select, Sender};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First retry delay after a failed delivery; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often an idle thread looks at its clock (interval fsync, deletion of
/// passed segments).
const TICK: Duration = Duration::from_millis(50);
/// A sink writes its checkpoint at most this often (and when it stops).
/// Each write is a small file made durable (write, fsync, rename, fsync of
/// the directory), after the downstream's own data is durable: at a few
/// hundred events a second that cost more than the events themselves when
/// it was every 50 ms. A crash delivers at most this much again.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Most events per Kafka delivery (librdkafka's `batch.num.messages`).
const KAFKA_BATCH: usize = 10_000;
/// A group commit closes early past this many buffered bytes.
const GROUP_BYTES: u64 = 4 * 1024 * 1024;

/// One event as the journal holds it.
#[derive(Debug, Clone)]
pub struct Rec {
    pub seq: u64,
    /// Logical offsets of the record's first byte and just past its last.
    pub start: u64,
    pub end: u64,
    /// The event's JSON, without the trailing newline.
    pub data: Bytes,
}

/// The records of one group commit, shared by every sink.
pub type Delivery = Arc<Vec<Rec>>;

/// A downstream's failure, as the runner sees it.
#[derive(Debug, Clone)]
pub struct DeliverError {
    pub kind: SinkFailure,
    /// The operator's message.
    pub message: String,
}

/// The downstreams, one match each. The Kafka and PostgreSQL downstreams
/// plug in here and nowhere else in the sinks: a variant
/// (`Kafka(super::kafka::KafkaSink)`), its construction in
/// [`Downstream::build`] (`KafkaSink::new(cfg.kafka.clone())
/// .map_err(|e| SinkError::Downstream { output, message: e.to_string() })`,
/// with a `kafka` field added to [`SinkConfig`] and filled in
/// `server::run`), and one arm in each method below (`deliver` maps the
/// error through its `kind()` and `Display`; `tick`, `reopen` and `close`
/// may do nothing).
pub enum Downstream {
    Log(log::LogSink),
    Postgres(Box<super::postgres::PgSink>),
    Kafka(super::kafka::KafkaSink),
}

impl Downstream {
    /// Builds the downstream of `output` (it must not need its remote to be
    /// up: connections are made lazily in `deliver`).
    pub fn build(
        output: Output,
        cfg: &SinkConfig,
        stats: Arc<SinkStats>,
    ) -> Result<Downstream, SinkError> {
        match output {
            Output::Log => Ok(Downstream::Log(log::LogSink::new(cfg.log.clone(), stats)?)),
            Output::Postgres => super::postgres::PgSink::new(cfg.postgres.clone())
                .map(|s| Downstream::Postgres(Box::new(s)))
                .map_err(|e| SinkError::Downstream {
                    output,
                    message: e.to_string(),
                }),
            Output::Kafka => super::kafka::KafkaSink::new(cfg.kafka.clone())
                .map(Downstream::Kafka)
                .map_err(|e| SinkError::Downstream {
                    output,
                    message: e.to_string(),
                }),
        }
    }

    /// Most events per delivery, and how long a partial batch may wait for
    /// more (`PG_BATCH_SIZE`, `PG_FLUSH_MS`); `default` is `BATCH_SIZE`.
    pub fn batching(&self, default: usize) -> (usize, Duration) {
        match self {
            Downstream::Log(_) => (default, Duration::ZERO),
            Downstream::Postgres(s) => (s.config().batch_size, s.config().flush_interval),
            // librdkafka batches on its own (`linger.ms`), but a delivery
            // waits for every report: a small one pays a linger and a round
            // trip per few events, so a Kafka delivery takes up to
            // librdkafka's own batch (`batch.num.messages`, 10,000).
            Downstream::Kafka(_) => (default.max(KAFKA_BATCH), Duration::ZERO),
        }
    }

    /// Returns only when the downstream acknowledged every event. A Kafka
    /// delivery gives up at `deadline` (shutdown); the others are bounded by
    /// their own timeouts.
    pub fn deliver(
        &mut self,
        events: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliverError> {
        match self {
            Downstream::Log(s) => s.deliver(events).map_err(|e| DeliverError {
                kind: e.kind(),
                message: e.to_string(),
            }),
            Downstream::Postgres(s) => s.deliver(events).map_err(|e| DeliverError {
                kind: e.kind(),
                message: e.to_string(),
            }),
            Downstream::Kafka(s) => s.deliver_until(events, deadline).map_err(|e| DeliverError {
                kind: e.kind(),
                message: e.to_string(),
            }),
        }
    }

    /// Called at least every [`TICK`]: timed work (the log's interval fsync).
    fn tick(&mut self) {
        match self {
            Downstream::Log(s) => s.tick(),
            Downstream::Postgres(_) | Downstream::Kafka(_) => {}
        }
    }

    /// Makes what was delivered durable before a checkpoint says so: the
    /// log file's fsync (unless `LOG_FSYNC=never`). PostgreSQL and Kafka
    /// acknowledge durably already.
    fn make_durable(&mut self) -> Result<(), DeliverError> {
        match self {
            Downstream::Log(s) => s.make_durable().map_err(|e| DeliverError {
                kind: e.kind(),
                message: e.to_string(),
            }),
            Downstream::Postgres(_) | Downstream::Kafka(_) => Ok(()),
        }
    }

    /// SIGHUP.
    fn reopen(&mut self) {
        match self {
            Downstream::Log(s) => s.reopen(),
            Downstream::Postgres(_) | Downstream::Kafka(_) => {}
        }
    }

    /// Shutdown: flush and close.
    fn close(&mut self) {
        match self {
            Downstream::Log(s) => s.close(),
            Downstream::Postgres(_) | Downstream::Kafka(_) => {}
        }
    }
}

/// The journal thread's end of one sink's channel.
pub struct Lane {
    pub tx: Sender<Delivery>,
    pub shared: Arc<SinkShared>,
}

/// The journal thread: appends what the cores send, commits in groups,
/// answers the durable acks, hands the records to the sinks and deletes
/// the segments every sink has passed.
pub struct JournalThread {
    pub journal: Journal,
    /// One receiver per core.
    pub inputs: Vec<Receiver<Entry>>,
    pub lanes: Vec<Lane>,
    pub stats: Arc<JournalStats>,
    pub shared: Arc<JournalShared>,
    /// `JOURNAL_FSYNC_MS`: the least time between two fsyncs.
    pub gather: Duration,
    /// Scratch for the line ranges of one entry.
    pub lines: Vec<(usize, usize)>,
}

/// One group commit being gathered.
#[derive(Default)]
struct Group {
    recs: Vec<Rec>,
    acks: Vec<(AckSender, Instant)>,
    bytes: u64,
}

impl JournalThread {
    pub fn run(mut self) {
        self.publish();
        let mut next_release = Instant::now() + TICK;
        let mut last_commit = Instant::now()
            .checked_sub(self.gather)
            .unwrap_or_else(Instant::now);
        while !self.inputs.is_empty() {
            let mut group = Group::default();
            if let Some(e) = self.wait(next_release) {
                self.take(e, &mut group);
                // At most one fsync per `JOURNAL_FSYNC_MS`: a batch arriving
                // after a quiet spell is committed at once; under load the
                // batches gather until the interval since the last fsync ends.
                let deadline = last_commit + self.gather;
                loop {
                    while group.bytes < GROUP_BYTES {
                        match self.try_next() {
                            Some(e) => self.take(e, &mut group),
                            None => break,
                        }
                    }
                    let now = Instant::now();
                    if group.bytes >= GROUP_BYTES || now >= deadline || self.inputs.is_empty() {
                        break;
                    }
                    // Sleep out the interval instead of waking for every
                    // entry (each wakeup would take the CPU from a core):
                    // what arrives meanwhile queues (a core's channel holds
                    // QUEUE_CAPACITY entries) and is all taken above.
                    std::thread::sleep(deadline - now);
                }
                self.commit(group);
                last_commit = Instant::now();
            }
            if Instant::now() >= next_release {
                self.release();
                next_release = Instant::now() + TICK;
            }
        }
        // Every core is gone: everything queued was committed above.
        self.release();
        self.shared.closed.store(true, Ordering::Release);
    }

    fn publish(&self) {
        self.shared.end.store(self.journal.end(), Ordering::Release);
        self.shared
            .next_seq
            .store(self.journal.next_seq(), Ordering::Release);
        self.stats.bytes.set(self.journal.bytes() as i64);
        self.stats.segments.set(self.journal.segments() as i64);
    }

    /// The next entry from any core, without waiting. Forgets cores that
    /// have gone.
    fn try_next(&mut self) -> Option<Entry> {
        let mut i = 0;
        while i < self.inputs.len() {
            match self.inputs[i].try_recv() {
                Ok(e) => return Some(e),
                Err(crossbeam_channel::TryRecvError::Empty) => i += 1,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.inputs.swap_remove(i);
                }
            }
        }
        None
    }

    /// Waits until `deadline` for an entry from any core.
    fn wait(&mut self, deadline: Instant) -> Option<Entry> {
        loop {
            if let Some(e) = self.try_next() {
                return Some(e);
            }
            if self.inputs.is_empty() {
                return None;
            }
            let mut sel = Select::new();
            for rx in &self.inputs {
                sel.recv(rx);
            }
            // Ready: an entry or a disconnection, taken by `try_next` above.
            if sel.ready_deadline(deadline).is_err() {
                return None;
            }
        }
    }

    /// Appends one batch, all its events or none.
    fn take(&mut self, e: Entry, group: &mut Group) {
        let mut lines = std::mem::take(&mut self.lines);
        line_ranges_into(&e.batch.bytes, &mut lines);
        let need: u64 = lines.iter().map(|(a, b)| HEADER + (b - a) as u64).sum();
        let refuse = if self.journal.failed().is_some() {
            Some(AckError::Failed)
        } else if need > self.journal.room() {
            let max = self.journal.max_bytes();
            if self.journal.room() < max / 16 && !self.stats.is_full() {
                self.stats.full.store(true, Ordering::Relaxed);
                warn!(
                    "journal full: collect answers 503 until a sink catches up",
                    journal_max_bytes = max
                );
            }
            Some(AckError::Full)
        } else {
            None
        };
        if let Some(why) = refuse {
            self.stats.refused.add(lines.len() as u64);
            if let Some(a) = e.ack {
                a.complete(Err(why));
            }
            self.lines = lines;
            return;
        }
        for &(a, b) in &lines {
            let start = self.journal.pending_end();
            match self.journal.append(&e.batch.bytes[a..b]) {
                Ok(seq) => {
                    let end = self.journal.pending_end();
                    group.bytes += end - start;
                    group.recs.push(Rec {
                        seq,
                        start,
                        end,
                        data: e.batch.bytes.slice(a..b),
                    });
                }
                // Room was checked for the whole batch; a failed journal
                // refuses it at commit.
                Err(err) => warn!("journal append refused", error = err),
            }
        }
        self.lines = lines;
        if let Some(a) = e.ack {
            group.acks.push((a, e.queued));
        }
    }

    fn commit(&mut self, group: Group) {
        if group.recs.is_empty() {
            for (a, _) in group.acks {
                a.complete(Ok(()));
            }
            return;
        }
        let t0 = Instant::now();
        match self.journal.commit() {
            Ok(_) => {
                self.stats.fsync_duration.observe(t0.elapsed());
                self.stats.events.add(group.recs.len() as u64);
                self.publish();
                for (a, queued) in group.acks {
                    self.stats.ack_wait.observe(queued.elapsed());
                    a.complete(Ok(()));
                }
                let d: Delivery = Arc::new(group.recs);
                for lane in &self.lanes {
                    // A full channel: that sink reads the files instead.
                    let _ = lane.tx.try_send(Arc::clone(&d));
                }
            }
            Err(e) => {
                let first = self.stats.is_failed();
                self.stats.set_failed(e.to_string());
                if !first {
                    error!(
                        "JOURNAL FAILED: no event is acknowledged any more",
                        error = e
                    );
                }
                self.stats.refused.add(group.recs.len() as u64);
                for (a, _) in group.acks {
                    a.complete(Err(AckError::Failed));
                }
            }
        }
    }

    /// Deletes the segments every sink has passed; clears `full` once there
    /// is room again.
    fn release(&mut self) {
        let min = self
            .lanes
            .iter()
            .map(|l| l.shared.checkpoint.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        self.journal.release(min);
        let max = self.journal.max_bytes();
        if self.stats.is_full() && self.journal.room() >= max / 8 {
            self.stats.full.store(false, Ordering::Relaxed);
            info!("journal has room again: events are accepted");
        }
        self.publish();
    }
}

/// The byte ranges of the non-empty lines of `b` (without their `\n`).
/// Written into `out` (cleared first), reusing its allocation; the
/// newlines are found with `memchr` (SIMD), as a gathered entry holds a
/// whole turn's events.
fn line_ranges_into(b: &[u8], out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        if i > start {
            out.push((start, i));
        }
        start = i + 1;
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
}

/// How a sink thread ended.
#[derive(Debug)]
pub struct Finished {
    /// The sequence number of the first event not acknowledged.
    pub checkpoint_seq: u64,
    pub error: Option<String>,
}

/// One sink's thread.
pub struct SinkThread {
    pub sink: Sink,
    pub downstream: Downstream,
    pub stats: Arc<SinkStats>,
    pub shared: Arc<SinkShared>,
    pub journal: Arc<JournalShared>,
    pub journal_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    /// The first position not acknowledged (in memory).
    pub checkpoint: Checkpoint,
    /// The checkpoint last written to disk, and when.
    pub persisted: Checkpoint,
    pub persisted_at: Instant,
    pub batch_size: usize,
    /// How long a partial batch waits for more events (0: deliver at once).
    pub linger: Duration,
    pub data: Receiver<Delivery>,
    pub ctrl: Receiver<Control>,
}

/// A delivery being consumed: the records and the index of the next one.
type Held = Option<(Delivery, usize)>;

impl SinkThread {
    pub fn run(mut self) -> Finished {
        let mut reader = Reader::new(self.journal_dir.clone());
        let mut held: Held = None;
        let mut stop_by: Option<Instant> = None;
        let mut batch: Vec<Rec> = Vec::with_capacity(self.batch_size);
        self.stats.set_healthy();
        loop {
            while let Ok(c) = self.ctrl.try_recv() {
                self.control(c, &mut stop_by);
            }
            let end = self.journal.end.load(Ordering::Acquire);
            self.publish_lag(end);
            if let Some(s) = stop_by {
                let done =
                    self.checkpoint.offset >= end && self.journal.closed.load(Ordering::Acquire);
                if done || Instant::now() >= s {
                    break;
                }
            }
            batch.clear();
            let replayed = self.next_batch(&mut held, &mut reader, end, &mut batch);
            if !replayed && stop_by.is_none() {
                self.linger(&mut held, &mut reader, &mut batch);
            }
            if batch.is_empty() {
                if replayed {
                    continue; // skipped a gap; look again
                }
                self.idle(&mut held, &mut stop_by);
                continue;
            }
            if !self.deliver(&batch, replayed, &mut stop_by) {
                break;
            }
        }
        self.downstream.close();
        self.persist();
        self.stats.set_stopped();
        let end = self.journal.end.load(Ordering::Acquire);
        self.publish_lag(end);
        let error = (self.checkpoint.offset < end)
            .then(|| self.stats.reason())
            .filter(|r| !r.is_empty());
        Finished {
            checkpoint_seq: self.checkpoint.seq,
            error,
        }
    }

    fn control(&mut self, c: Control, stop_by: &mut Option<Instant>) {
        match c {
            Control::Reopen => self.downstream.reopen(),
            Control::Stop { stop_by: s } => *stop_by = Some(s),
        }
    }

    /// Nothing to deliver: wait for a delivery, an order or the tick.
    fn idle(&mut self, held: &mut Held, stop_by: &mut Option<Instant>) {
        let data = &self.data;
        let ctrl = &self.ctrl;
        select! {
            recv(data) -> d => if let Ok(d) = d { *held = Some((d, 0)) },
            recv(ctrl) -> c => match c {
                Ok(c) => self.control(c, stop_by),
                // The owner is gone without a stop: stop soon.
                Err(_) => {
                    stop_by.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
                }
            },
            default(TICK) => {}
        }
        self.downstream.tick();
        if self.persisted_at.elapsed() >= CHECKPOINT_EVERY {
            self.persist();
        }
        self.stats.queue_depth.set(self.data.len() as i64);
    }

    /// A partial batch fresh from the journal thread waits up to
    /// [`SinkThread::linger`] for more deliveries that continue it, so a
    /// downstream with a per-batch cost (one PostgreSQL transaction) gets
    /// full batches under a trickle of events.
    fn linger(&mut self, held: &mut Held, reader: &mut Reader, batch: &mut Vec<Rec>) {
        if batch.is_empty() || self.linger.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.linger;
        while batch.len() < self.batch_size && held.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.data.recv_timeout(left) {
                Ok(d) => *held = Some((d, 0)),
                Err(_) => break,
            }
            let end = self.journal.end.load(Ordering::Acquire);
            if self.next_batch(held, reader, end, batch) {
                break;
            }
        }
    }

    /// Fills `batch` with the records after the checkpoint (or after the
    /// last record `batch` already holds): from the deliveries when they
    /// continue it, else, when `batch` is empty, from the journal files.
    /// Returns whether the files were read (or a gap skipped).
    fn next_batch(
        &mut self,
        held: &mut Held,
        reader: &mut Reader,
        end: u64,
        batch: &mut Vec<Rec>,
    ) -> bool {
        let mut pos = batch.last().map_or(self.checkpoint.offset, |r| r.end);
        loop {
            if held.is_none() {
                *held = self.data.try_recv().ok().map(|d| (d, 0));
            }
            let Some((d, i)) = held.as_mut() else { break };
            while *i < d.len() && d[*i].end <= pos {
                *i += 1;
            }
            let Some(r) = d.get(*i) else {
                *held = None;
                continue;
            };
            if r.start > pos {
                break; // a gap: the files have what is missing
            }
            while batch.len() < self.batch_size {
                let Some(r) = d.get(*i) else { break };
                batch.push(r.clone());
                pos = r.end;
                *i += 1;
            }
            if batch.len() >= self.batch_size {
                break;
            }
        }
        self.stats.queue_depth.set(self.data.len() as i64);
        if !batch.is_empty() {
            self.stats.replaying.store(false, Ordering::Relaxed);
            return false;
        }
        if pos >= end {
            return false;
        }
        // Behind: read the journal files up to the next held record.
        let until = held
            .as_ref()
            .and_then(|(d, i)| d.get(*i))
            .map_or(end, |r| r.start.min(end));
        self.stats.replaying.store(true, Ordering::Relaxed);
        let mut recs = Vec::with_capacity(self.batch_size);
        match reader.read(pos, until, self.batch_size, &mut recs) {
            Ok(p) => {
                for r in recs {
                    batch.push(Rec {
                        seq: r.seq,
                        start: r.end - HEADER - r.payload.len() as u64,
                        end: r.end,
                        data: Bytes::from(r.payload),
                    });
                }
                if batch.is_empty() && p > pos {
                    // Jumped over a deleted or quarantined range.
                    self.checkpoint.offset = p;
                    return true;
                }
            }
            Err(e) => {
                self.stats.failure(SinkFailure::Corrupt);
                error!("journal read failed", sink = self.sink.as_str(), error = e);
                if let journal::JournalError::Corrupt { .. } = e {
                    if let Ok(Some(next)) = reader.skip_segment(pos) {
                        self.checkpoint.offset = next;
                        return true;
                    }
                }
                std::thread::sleep(TICK);
            }
        }
        !batch.is_empty()
    }

    /// Delivers `batch` (retrying with a capped backoff), then persists the
    /// checkpoint. False when stopped before it could be delivered.
    fn deliver(&mut self, batch: &[Rec], replayed: bool, stop_by: &mut Option<Instant>) -> bool {
        let events: Vec<&[u8]> = batch.iter().map(|r| &r.data[..]).collect();
        let mut delay = RETRY_FIRST;
        let mut said: Option<String> = None;
        loop {
            let t0 = Instant::now();
            match self.downstream.deliver(&events, *stop_by) {
                Ok(d) => {
                    self.stats.flush_duration.observe(t0.elapsed());
                    if said.is_some() {
                        info!("sink delivering again", sink = self.sink.as_str());
                    }
                    self.stats.set_healthy();
                    self.stats.events_written.add(d.written);
                    self.stats.events_duplicate.add(d.duplicates);
                    self.stats.events_dead_lettered.add(d.dead_lettered);
                    self.stats.events_acked.add(batch.len() as u64);
                    if replayed {
                        self.stats.events_replayed.add(batch.len() as u64);
                    }
                    break;
                }
                Err(e) => {
                    self.stats.failure(e.kind);
                    if said.as_deref() != Some(e.message.as_str()) {
                        warn!(
                            "sink delivery failed; retrying",
                            sink = self.sink.as_str(),
                            error = e.message
                        );
                        said = Some(e.message.clone());
                    }
                    self.stats.set_down(e.message);
                    let wake = Instant::now() + delay;
                    delay = (delay * 2).min(RETRY_MAX);
                    while Instant::now() < wake {
                        self.publish_lag(self.journal.end.load(Ordering::Acquire));
                        if stop_by.is_some_and(|s| Instant::now() >= s) {
                            return false;
                        }
                        let left = wake.saturating_duration_since(Instant::now());
                        match self.ctrl.recv_timeout(left.min(TICK)) {
                            Ok(c) => self.control(c, stop_by),
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                                stop_by
                                    .get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
                                std::thread::sleep(left.min(TICK));
                            }
                        }
                    }
                    if stop_by.is_some_and(|s| Instant::now() >= s) {
                        return false;
                    }
                }
            }
        }
        if let Some(last) = batch.last() {
            self.checkpoint = Checkpoint {
                offset: last.end,
                seq: last.seq + 1,
            };
            if self.persisted_at.elapsed() >= CHECKPOINT_EVERY {
                self.persist();
            }
        }
        true
    }

    /// Writes the checkpoint (when it moved since the last write). Paced to
    /// one write per [`CHECKPOINT_EVERY`] while delivering: a crash can then
    /// only make the sink deliver the last few batches again.
    fn persist(&mut self) {
        self.persisted_at = Instant::now();
        if self.persisted == self.checkpoint {
            return;
        }
        if let Err(e) = self.downstream.make_durable() {
            // What was written since the last checkpoint may be lost:
            // deliver it again from there (read back from the journal).
            self.stats.failure(e.kind);
            warn!(
                "cannot make delivered events durable; delivering them again",
                sink = self.sink.as_str(),
                error = e.message
            );
            self.checkpoint = self.persisted;
            return;
        }
        match journal::write_checkpoint(&self.checkpoint_dir, self.sink.as_str(), self.checkpoint) {
            Ok(()) => {
                self.persisted = self.checkpoint;
                self.shared
                    .checkpoint
                    .store(self.checkpoint.offset, Ordering::Release);
                self.shared
                    .checkpoint_seq
                    .store(self.checkpoint.seq, Ordering::Release);
            }
            Err(e) => {
                self.stats.failure(SinkFailure::Checkpoint);
                warn!(
                    "cannot persist the sink checkpoint (events may be delivered again after a restart)",
                    sink = self.sink.as_str(),
                    error = e
                );
            }
        }
    }

    fn publish_lag(&self, end: u64) {
        let next = self.journal.next_seq.load(Ordering::Acquire);
        self.stats
            .lag_events
            .set(next.saturating_sub(self.checkpoint.seq) as i64);
        self.stats
            .lag_bytes
            .set(end.saturating_sub(self.checkpoint.offset) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::journal::JournalConfig;
    use crate::sink::{ack, Batch};
    use std::sync::atomic::AtomicUsize;

    fn tmp(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "trackgate-runner-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn entry(text: &'static str, ack: Option<ack::AckSender>) -> Entry {
        Entry {
            batch: Batch {
                bytes: Bytes::from_static(text.as_bytes()),
                events: text.matches('\n').count() as u32,
            },
            ack,
            queued: Instant::now(),
        }
    }

    #[test]
    fn after_a_failed_commit_the_journal_thread_acknowledges_nothing() {
        let dir = tmp("failed");
        let cfg = JournalConfig {
            data_dir: dir.clone(),
            max_bytes: 1 << 20,
            segment_bytes: 1 << 20,
        };
        let (mut journal, _) = Journal::open(&cfg).unwrap();
        journal.break_writes();
        let (tx, rx) = crossbeam_channel::bounded(8);
        let (lane_tx, lane_rx) = crossbeam_channel::bounded(8);
        let stats = Arc::new(JournalStats::default());
        let jt = JournalThread {
            journal,
            inputs: vec![rx],
            lanes: vec![Lane {
                tx: lane_tx,
                shared: Arc::default(),
            }],
            stats: Arc::clone(&stats),
            shared: Arc::default(),
            gather: Duration::ZERO,
            lines: Vec::new(),
        };
        let (a1, w1) = ack::pair();
        let (a2, w2) = ack::pair();
        tx.send(entry("{\"n\":1}\n", Some(a1))).unwrap();
        let t = std::thread::spawn(move || jt.run());
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(w1), Err(ack::AckError::Failed));
        assert!(stats.is_failed());
        assert!(
            stats.reason().contains("stops acknowledging"),
            "{}",
            stats.reason()
        );
        // Never retried: a later batch is refused too, nothing reaches a sink.
        tx.send(entry("{\"n\":2}\n", Some(a2))).unwrap();
        assert_eq!(rt.block_on(w2), Err(ack::AckError::Failed));
        drop(tx);
        t.join().unwrap();
        assert!(lane_rx.try_recv().is_err());
        assert_eq!(stats.events.get(), 0);
        assert_eq!(stats.refused.get(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_batch_is_journaled_whole_one_record_per_line() {
        let dir = tmp("lines");
        let cfg = JournalConfig {
            data_dir: dir.clone(),
            max_bytes: 1 << 20,
            segment_bytes: 1 << 20,
        };
        let (journal, _) = Journal::open(&cfg).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(8);
        let (lane_tx, lane_rx) = crossbeam_channel::bounded(8);
        let jt = JournalThread {
            journal,
            inputs: vec![rx],
            lanes: vec![Lane {
                tx: lane_tx,
                shared: Arc::default(),
            }],
            stats: Arc::default(),
            shared: Arc::default(),
            gather: Duration::ZERO,
            lines: Vec::new(),
        };
        tx.send(entry("{\"a\":1}\n{\"b\":2}\n", None)).unwrap();
        drop(tx);
        std::thread::spawn(move || jt.run()).join().unwrap();
        let d = lane_rx.try_recv().unwrap();
        let got: Vec<&[u8]> = d.iter().map(|r| &r.data[..]).collect();
        assert_eq!(got, [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!((d[0].seq, d[1].seq), (0, 1));
        assert_eq!(d[0].end, d[1].start);
        let mut out = Vec::new();
        Reader::new(cfg.journal_dir())
            .read(0, d[1].end, 10, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].end, d[1].end);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn line_ranges_skip_empty_lines() {
        let line_ranges = |b: &[u8]| {
            let mut out = vec![(9, 9)];
            line_ranges_into(b, &mut out);
            out
        };
        assert_eq!(line_ranges(b"ab\n\ncd"), vec![(0, 2), (4, 6)]);
        assert_eq!(line_ranges(b"\nab\ncd\n\n"), vec![(1, 3), (4, 6)]);
        assert!(line_ranges(b"").is_empty());
    }
}
