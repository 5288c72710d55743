//! The log sink: appends the NDJSON event lines to a file (or to stdout) on
//! its own blocking thread, and owns everything about that file: buffering
//! up to `BATCH_SIZE` events or `FLUSH_INTERVAL_MS`, the `LOG_FSYNC` policy,
//! size rotation with numbered backups, age pruning of the backups, reopening
//! on SIGHUP, and riding out I/O failures without losing or splitting a line.
//!
//! A failing disk never blocks a core: while the sink retries (with a capped
//! backoff) it stops taking batches from its channel, the channel fills and
//! the cores get `SubmitError::Full`. Nothing it has taken is dropped.

use super::{Backlog, Batch, Control, Finished};
use crate::metrics::labels::SinkFailure;
use crate::metrics::sinks::{SinkHealth, SinkStats};
use crossbeam_channel::{select, Receiver};
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// First retry delay after a failure; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often old backups are pruned (besides start-up and each rotation).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a sink whose owner vanished (control channel closed without a
/// stop) keeps trying to write what it holds before it exits.
const ORPHAN_STOP: Duration = Duration::from_secs(5);

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Append to this file (`LOG_PATH`).
    File(PathBuf),
    /// Pure NDJSON on stdout: no rotation, no fsync.
    Stdout,
}

/// When written data is forced to disk (`LOG_FSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// At each flush tick, when something was written since the last fsync.
    Interval,
    /// After every write: an event counts as written only once on disk.
    Always,
    /// Never: the kernel writes back when it likes.
    Never,
}

/// Settings of the log sink.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub path: LogTarget,
    /// Rotate before the file would grow past this size (`LOG_ROTATE_MB` ×
    /// 1 MiB); 0 = never.
    pub rotate_bytes: u64,
    /// Rotated files kept, `path.1` (newest) … `path.N` (`LOG_BACKUPS`).
    pub backups: u32,
    /// Delete backups older than this many days (`LOG_MAX_AGE_DAYS`); 0 = off.
    pub max_age_days: u32,
    pub fsync: Fsync,
    /// Write out (and fsync, under [`Fsync::Interval`]) at least this often
    /// (`FLUSH_INTERVAL_MS`).
    pub flush_interval: Duration,
    /// Write out as soon as this many events are buffered (`BATCH_SIZE`).
    pub batch_size: usize,
}

impl LogConfig {
    /// Refuses settings that cannot work, naming the variable to fix.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.batch_size == 0 {
            return Err(LogError::Invalid {
                var: "BATCH_SIZE",
                problem: "is 0; set it to 1 or more events",
            });
        }
        if self.flush_interval.is_zero() {
            return Err(LogError::Invalid {
                var: "FLUSH_INTERVAL_MS",
                problem: "is 0; set it to 1 or more milliseconds",
            });
        }
        if let LogTarget::File(p) = &self.path {
            if p.as_os_str().is_empty() {
                return Err(LogError::Invalid {
                    var: "LOG_PATH",
                    problem: "is empty; set it to the events file to append to",
                });
            }
        }
        Ok(())
    }
}

/// Why the log sink cannot start.
#[derive(Debug)]
pub enum LogError {
    /// The events file cannot be opened for appending.
    Open { path: PathBuf, source: io::Error },
    /// A setting that cannot work.
    Invalid {
        var: &'static str,
        problem: &'static str,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Open { path, source } => write!(
                f,
                "cannot open the events file LOG_PATH={} for appending: {source}; \
                 create its directory and make it writable by this user, or set LOG_PATH to another file",
                path.display()
            ),
            LogError::Invalid { var, problem } => write!(f, "{var} {problem}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Open { source, .. } => Some(source),
            LogError::Invalid { .. } => None,
        }
    }
}

/// Prints one operator message, on one line, to stderr. The only place the
/// log sink speaks; swap it for the logging module when that arrives.
fn say(msg: &str) {
    let one_line = msg.replace(['\n', '\r'], " ");
    eprintln!("trackgate: log sink: {one_line}");
}

/// Batches received but not yet handed to a write.
#[derive(Debug, Default)]
struct Pending {
    batches: VecDeque<Batch>,
    events: u64,
    bytes: u64,
}

impl Pending {
    fn push(&mut self, b: Batch) {
        self.events += u64::from(b.events);
        self.bytes += b.bytes.len() as u64;
        self.batches.push_back(b);
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn pop_front_into(&mut self, chunk: &mut Chunk) {
        if let Some(b) = self.batches.pop_front() {
            self.events -= u64::from(b.events);
            self.bytes -= b.bytes.len() as u64;
            chunk.add(&b.bytes, u64::from(b.events));
        }
    }

    /// Moves the first `len` bytes of the front batch (whole lines) into `chunk`.
    fn split_front_into(&mut self, len: usize, chunk: &mut Chunk) {
        let Some(front) = self.batches.front_mut() else {
            return;
        };
        if len >= front.bytes.len() {
            self.pop_front_into(chunk);
            return;
        }
        let head = front.bytes.split_to(len);
        let lines = head.iter().filter(|&&b| b == b'\n').count();
        let events = u32::try_from(lines).unwrap_or(u32::MAX).min(front.events);
        front.events -= events;
        self.events -= u64::from(events);
        self.bytes -= head.len() as u64;
        chunk.add(&head, u64::from(events));
    }

    fn take_all(&mut self, chunk: &mut Chunk) {
        while !self.batches.is_empty() {
            self.pop_front_into(chunk);
        }
    }

    /// Moves whole lines, `room` bytes at most, into `chunk`. Returns whether
    /// anything moved.
    fn take_fitting(&mut self, room: u64, chunk: &mut Chunk) -> bool {
        let mut left = room;
        let mut moved = false;
        while let Some(front) = self.batches.front() {
            let len = front.bytes.len() as u64;
            if len <= left {
                left -= len;
                self.pop_front_into(chunk);
                moved = true;
                continue;
            }
            // `left < len`, so it fits in usize.
            let window = &front.bytes[..left as usize];
            if let Some(nl) = window.iter().rposition(|&b| b == b'\n') {
                self.split_front_into(nl + 1, chunk);
                moved = true;
            }
            break;
        }
        moved
    }

    /// Moves the first line, however long, into `chunk`.
    fn take_line(&mut self, chunk: &mut Chunk) {
        let Some(front) = self.batches.front() else {
            return;
        };
        match front.bytes.iter().position(|&b| b == b'\n') {
            Some(nl) => self.split_front_into(nl + 1, chunk),
            None => self.pop_front_into(chunk),
        }
    }
}

/// The bytes of one write-out, and how far they got.
#[derive(Debug, Default)]
struct Chunk {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    off: usize,
    events: u64,
    /// Something (possibly an empty batch) was put in since the last clear.
    used: bool,
}

impl Chunk {
    fn add(&mut self, bytes: &[u8], events: u64) {
        self.buf.extend_from_slice(bytes);
        self.events += events;
        self.used = true;
    }

    fn is_empty(&self) -> bool {
        !self.used
    }

    fn rest(&self) -> &[u8] {
        self.buf.get(self.off..).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.off = 0;
        self.events = 0;
        self.used = false;
    }

    /// The file changed under a half-written chunk: start again at the
    /// beginning of the line that was cut, so the new file gets it whole.
    fn rewind_to_line_start(&mut self) {
        let done = self.buf.get(..self.off).unwrap_or_default();
        self.off = done.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    }
}

/// A failure that was already counted, reported and scheduled for retry.
#[derive(Debug)]
struct Failed;

#[derive(Debug)]
struct Retry {
    at: Instant,
    delay: Duration,
}

/// `path.N`.
fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A rename or delete of the rotation that failed.
struct RotateError {
    what: String,
    source: io::Error,
}

/// Moves `path` to `path.1` after shifting `path.1..` up by one, keeping at
/// most `backups` of them (`backups == 0`: `path` is deleted). Only the run
/// of backups that exists without a gap from `.1` is shifted, so a rotation
/// retried after a half-done one never overwrites a backup it still needs.
fn shift_backups(path: &Path, backups: u32) -> Result<(), RotateError> {
    if !exists(path) {
        // Moved away (logrotate before its SIGHUP): nothing left to rotate.
        return Ok(());
    }
    let mut run = 0u32;
    while run < u32::MAX && exists(&backup_path(path, run + 1)) {
        run += 1;
    }
    for n in (backups.saturating_add(1)..=run).rev() {
        let p = backup_path(path, n);
        ignore_not_found(fs::remove_file(&p)).map_err(|source| RotateError {
            what: format!("deleting the old backup {}", p.display()),
            source,
        })?;
    }
    if backups == 0 {
        return ignore_not_found(fs::remove_file(path)).map_err(|source| RotateError {
            what: format!("deleting {} (LOG_BACKUPS=0)", path.display()),
            source,
        });
    }
    for n in (1..=run.min(backups - 1)).rev() {
        let (from, to) = (backup_path(path, n), backup_path(path, n + 1));
        fs::rename(&from, &to).map_err(|source| RotateError {
            what: format!("renaming {} to {}", from.display(), to.display()),
            source,
        })?;
    }
    let to = backup_path(path, 1);
    ignore_not_found(fs::rename(path, &to)).map_err(|source| RotateError {
        what: format!("renaming {} to {}", path.display(), to.display()),
        source,
    })
}

/// An open output: the file, its size, and whether it is a regular file
/// (only those are rotated and fsynced; stdout or a device is not).
struct Opened {
    file: File,
    size: u64,
    regular: bool,
}

/// Opens `path` for appending (created 0644 if missing). A last line left
/// without its `\n` by a crash is closed first, so the next line stays whole.
fn open_path(path: &Path) -> io::Result<Opened> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    let meta = file.metadata()?;
    let regular = meta.is_file();
    let mut size = meta.len();
    if regular && size > 0 {
        let mut last = [0u8; 1];
        // Best effort: a file we may append to but not read keeps its tail.
        let read = File::open(path).and_then(|r| r.read_exact_at(&mut last, size - 1));
        if read.is_ok() && last[0] != b'\n' {
            file.write_all(b"\n")?;
            size += 1;
        }
    }
    Ok(Opened {
        file,
        size,
        regular,
    })
}

fn open_target(target: &LogTarget) -> io::Result<Opened> {
    match target {
        LogTarget::File(p) => open_path(p),
        LogTarget::Stdout => {
            let fd = io::stdout().as_fd().try_clone_to_owned()?;
            Ok(Opened {
                file: File::from(fd),
                size: 0,
                regular: false,
            })
        }
    }
}

/// The log sink's state, owned by its thread.
pub(super) struct LogSink {
    cfg: LogConfig,
    stats: Arc<SinkStats>,
    backlog: Arc<Backlog>,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// The current file is a regular file (rotated and fsynced).
    regular: bool,
    pending: Pending,
    chunk: Chunk,
    /// Written since the last fsync.
    dirty: bool,
    /// Under [`Fsync::Always`]: events written, counted once fsynced.
    unsynced: u64,
    retry: Option<Retry>,
    /// The last failure message printed (each is printed once).
    last_said: Option<String>,
    next_prune: Option<Instant>,
}

impl LogSink {
    /// Opens the output on the calling thread, so that a bad `LOG_PATH`
    /// stops the start-up, and prunes old backups.
    pub(super) fn open(
        cfg: LogConfig,
        stats: Arc<SinkStats>,
        backlog: Arc<Backlog>,
    ) -> Result<LogSink, LogError> {
        cfg.validate()?;
        let opened = open_target(&cfg.path).map_err(|source| LogError::Open {
            path: match &cfg.path {
                LogTarget::File(p) => p.clone(),
                LogTarget::Stdout => PathBuf::from("<stdout>"),
            },
            source,
        })?;
        let mut sink = LogSink {
            cfg,
            stats,
            backlog,
            file: Some(opened.file),
            size: opened.size,
            regular: opened.regular,
            pending: Pending::default(),
            chunk: Chunk::default(),
            dirty: false,
            unsynced: 0,
            retry: None,
            last_said: None,
            next_prune: None,
        };
        sink.prune();
        sink.stats.set_healthy();
        Ok(sink)
    }

    /// The thread's body: receive, buffer, write out, until told to stop.
    pub(super) fn run(mut self, data: Receiver<Batch>, ctrl: Receiver<Control>) -> Finished {
        let never = crossbeam_channel::never();
        let mut data_open = true;
        let batch_size = self.cfg.batch_size as u64;
        let mut next_flush = Instant::now() + self.cfg.flush_interval;
        loop {
            // While failing, leave new batches in the channel: it fills and
            // the cores see `Full` instead of this thread growing a buffer.
            let accepting = data_open && self.retry.is_none() && self.pending.events < batch_size;
            let source = if accepting { &data } else { &never };
            let mut wake = next_flush;
            if let Some(r) = &self.retry {
                wake = wake.min(r.at);
            }
            if let Some(p) = self.next_prune {
                wake = wake.min(p);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            select! {
                recv(source) -> msg => match msg {
                    Ok(batch) => {
                        self.pending.push(batch);
                        self.publish_backlog();
                        if self.pending.events >= batch_size {
                            let _ = self.write_out(false, false);
                        }
                    }
                    Err(_) => data_open = false,
                },
                recv(ctrl) -> msg => match msg {
                    Ok(Control::Reopen) => self.reopen(),
                    Ok(Control::Stop { stop_by }) => return self.finish(&data, stop_by),
                    Err(_) => return self.finish(&data, Instant::now() + ORPHAN_STOP),
                },
                default(timeout) => {}
            }
            self.stats.queue_depth.set(data.len() as i64);
            let now = Instant::now();
            if now >= next_flush {
                let _ = self.write_out(true, false);
                next_flush = now + self.cfg.flush_interval;
            } else if self.retry.as_ref().is_some_and(|r| now >= r.at) {
                let _ = self.write_out(false, false);
            }
            if self.next_prune.is_some_and(|p| now >= p) {
                self.prune();
            }
        }
    }

    /// Stop: take everything left in the queue, write it, sync, close.
    /// Retries failures until `stop_by`, then reports what is left.
    pub(super) fn finish(mut self, data: &Receiver<Batch>, stop_by: Instant) -> Finished {
        loop {
            for b in data.try_iter() {
                self.pending.push(b);
            }
            self.stats.queue_depth.set(data.len() as i64);
            if self.write_out(true, true).is_ok() {
                break;
            }
            let now = Instant::now();
            let next = self.retry.as_ref().map_or(now, |r| r.at);
            if next >= stop_by {
                break;
            }
            std::thread::sleep(next.saturating_duration_since(now));
        }
        let unwritten_events = self.pending.events + self.chunk.events;
        let unwritten_bytes = self.pending.bytes + self.chunk.rest().len() as u64;
        let error = (self.stats.health() == SinkHealth::Down).then(|| self.stats.reason());
        if unwritten_events > 0 || unwritten_bytes > 0 {
            say(&format!(
                "stopping with {unwritten_events} events ({unwritten_bytes} bytes) not written to {}: {}",
                self.target_name(),
                error.as_deref().unwrap_or("the shutdown deadline passed")
            ));
        }
        self.close();
        self.backlog.set(unwritten_events, unwritten_bytes);
        self.stats.set_stopped();
        Finished {
            unwritten_events,
            unwritten_bytes,
            error,
        }
    }

    fn target_name(&self) -> String {
        match &self.cfg.path {
            LogTarget::File(p) => p.display().to_string(),
            LogTarget::Stdout => String::from("stdout"),
        }
    }

    fn publish_backlog(&self) {
        self.backlog.set(
            self.pending.events + self.chunk.events,
            self.pending.bytes + self.chunk.rest().len() as u64,
        );
    }

    /// Counts and reports a failure, marks the sink down and schedules the
    /// next attempt (100 ms, doubling to 5 s).
    fn fail(&mut self, kind: SinkFailure, reason: String) -> Failed {
        self.stats.failure(kind);
        self.stats.set_down(reason.clone());
        let delay = self
            .retry
            .as_ref()
            .map_or(RETRY_FIRST, |r| (r.delay * 2).min(RETRY_MAX));
        self.retry = Some(Retry {
            at: Instant::now() + delay,
            delay,
        });
        if self.last_said.as_deref() != Some(reason.as_str()) {
            say(&reason);
            self.last_said = Some(reason);
        }
        Failed
    }

    fn recovered(&mut self) {
        self.retry = None;
        if self.stats.health() != SinkHealth::Healthy {
            if self.last_said.take().is_some() {
                say(&format!("writing to {} again", self.target_name()));
            }
            self.stats.set_healthy();
        }
    }

    /// Writes out everything buffered (rotating as needed); with `tick`, also
    /// the interval fsync. Unless `force`d, does nothing before a scheduled
    /// retry is due.
    fn write_out(&mut self, tick: bool, force: bool) -> Result<(), Failed> {
        if !force && self.retry.as_ref().is_some_and(|r| Instant::now() < r.at) {
            return Err(Failed);
        }
        let started = Instant::now();
        let result = self.write_out_inner(tick);
        self.publish_backlog();
        if result? {
            self.stats.flush_duration.observe(started.elapsed());
        }
        self.recovered();
        Ok(())
    }

    /// Returns whether any I/O was done.
    fn write_out_inner(&mut self, tick: bool) -> Result<bool, Failed> {
        let mut did = false;
        self.ensure_open()?;
        loop {
            if self.chunk.is_empty() {
                if self.unsynced > 0 {
                    self.sync()?;
                    did = true;
                }
                if self.pending.is_empty() {
                    break;
                }
                if !self.fill_chunk() {
                    self.rotate()?;
                    did = true;
                    continue;
                }
            }
            self.write_chunk()?;
            did = true;
        }
        if tick && self.cfg.fsync == Fsync::Interval && self.dirty {
            self.sync()?;
            did = true;
        }
        Ok(did)
    }

    fn ensure_open(&mut self) -> Result<(), Failed> {
        if self.file.is_some() {
            return Ok(());
        }
        match open_target(&self.cfg.path) {
            Ok(o) => {
                self.file = Some(o.file);
                self.size = o.size;
                self.regular = o.regular;
                Ok(())
            }
            Err(e) => {
                let reason = format!(
                    "cannot open the events file {} (LOG_PATH): {e}; {} events are held and the queue \
                     fills until it opens: check that its directory exists and is writable",
                    self.target_name(),
                    self.pending.events + self.chunk.events
                );
                Err(self.fail(SinkFailure::Open, reason))
            }
        }
    }

    /// Puts the next write-out in `chunk`. False when the current file must
    /// be rotated first (not one more line fits).
    fn fill_chunk(&mut self) -> bool {
        let limit = self.cfg.rotate_bytes;
        if !self.regular || limit == 0 {
            self.pending.take_all(&mut self.chunk);
            return true;
        }
        let room = limit.saturating_sub(self.size);
        if self.pending.take_fitting(room, &mut self.chunk) {
            return true;
        }
        if self.size > 0 {
            return false;
        }
        // An empty file and a line longer than the limit: it goes in whole.
        self.pending.take_line(&mut self.chunk);
        true
    }

    /// Writes the rest of `chunk`; then counts its events (under
    /// [`Fsync::Always`] after the fsync).
    fn write_chunk(&mut self) -> Result<(), Failed> {
        self.ensure_open()?;
        while self.chunk.off < self.chunk.buf.len() {
            let Some(file) = self.file.as_mut() else {
                return self.ensure_open();
            };
            let rest = self.chunk.buf.get(self.chunk.off..).unwrap_or_default();
            match file.write(rest) {
                Ok(0) => {
                    let reason = format!(
                        "writing to the events file {} (LOG_PATH) made no progress; {} events are held \
                         and retried: check the file system",
                        self.target_name(),
                        self.pending.events + self.chunk.events
                    );
                    return Err(self.fail(SinkFailure::Write, reason));
                }
                Ok(n) => {
                    self.chunk.off += n;
                    self.size += n as u64;
                    self.dirty = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let reason = format!(
                        "cannot write to the events file {} (LOG_PATH): {e}; {} events are held and \
                         retried: free disk space or fix the file system",
                        self.target_name(),
                        self.pending.events + self.chunk.events
                    );
                    return Err(self.fail(SinkFailure::Write, reason));
                }
            }
        }
        let events = self.chunk.events;
        self.chunk.clear();
        if self.cfg.fsync == Fsync::Always && self.regular {
            self.unsynced += events;
            self.sync()
        } else {
            self.stats.events_written.add(events);
            Ok(())
        }
    }

    /// fdatasync the current file (when the policy and the file allow it);
    /// then the events written under `Always` count as written.
    fn sync(&mut self) -> Result<(), Failed> {
        let result = match &self.file {
            Some(f) if self.regular && self.cfg.fsync != Fsync::Never => f.sync_data(),
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                self.stats.events_written.add(self.unsynced);
                self.unsynced = 0;
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                let reason = format!(
                    "fsync of the events file {} failed: {e}; lines written since the last successful \
                     fsync may already be lost from the page cache (they are not written again): \
                     check the disk and the kernel log",
                    self.target_name()
                );
                Err(self.fail(SinkFailure::Fsync, reason))
            }
        }
    }

    /// Closes the current file (the caller synced it if it had to).
    fn close(&mut self) {
        if self.file.take().is_some() {
            self.chunk.rewind_to_line_start();
            // Written to the old file; their fsync failed and was reported.
            self.stats.events_written.add(self.unsynced);
            self.unsynced = 0;
            self.dirty = false;
            self.size = 0;
        }
    }

    /// Size rotation: sync and close the full file, shift the backups, open
    /// a fresh file. On failure the file stays closed; the retry reopens the
    /// path and, finding it still full, rotates again.
    fn rotate(&mut self) -> Result<(), Failed> {
        let LogTarget::File(path) = &self.cfg.path else {
            return Ok(());
        };
        let path = path.clone();
        if self.dirty || self.unsynced > 0 {
            self.sync()?;
        }
        self.close();
        if let Err(e) = shift_backups(&path, self.cfg.backups) {
            let reason = format!(
                "cannot rotate the events file {} (LOG_ROTATE_MB): {} failed: {}; writing is paused \
                 until rotation succeeds: fix the directory's permissions, or set LOG_ROTATE_MB=0",
                path.display(),
                e.what,
                e.source
            );
            return Err(self.fail(SinkFailure::Rotate, reason));
        }
        self.stats.rotations.inc();
        self.ensure_open()?;
        self.prune();
        Ok(())
    }

    /// SIGHUP (logrotate moved the file away): write what is buffered to the
    /// old file, sync, close, and open the path again.
    fn reopen(&mut self) {
        if self.file.is_some() {
            let _ = self.write_out(false, true);
            if self.dirty || self.unsynced > 0 {
                let _ = self.sync();
            }
            self.close();
        }
        // An operator's signal: try at once, whatever the backoff said.
        self.retry = None;
        let _ = self.write_out(false, true);
    }

    /// Deletes backups `path.N` older than `max_age_days`.
    fn prune(&mut self) {
        let days = self.cfg.max_age_days;
        let LogTarget::File(path) = &self.cfg.path else {
            return;
        };
        if days == 0 || !self.regular {
            return;
        }
        self.next_prune = Some(Instant::now() + PRUNE_EVERY);
        let Some(cutoff) =
            SystemTime::now().checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        else {
            return;
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Some(name) = path.file_name() else {
            return;
        };
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                say(&format!(
                    "cannot list {} to delete backups older than {days} days (LOG_MAX_AGE_DAYS): {e}",
                    dir.display()
                ));
                return;
            }
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let is_backup = file_name
                .as_bytes()
                .strip_prefix(name.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"."))
                .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
            if !is_backup {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old {
                if let Err(e) = ignore_not_found(fs::remove_file(entry.path())) {
                    say(&format!(
                        "cannot delete the old backup {} (LOG_MAX_AGE_DAYS={days}): {e}",
                        entry.path().display()
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{start, Output, SinkConfig, SinkHandle, Sinks, SubmitError};
    use super::*;
    use crate::metrics::labels::Sink;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A quick, small configuration for tests.
    pub(crate) fn config(path: LogTarget) -> LogConfig {
        LogConfig {
            path,
            rotate_bytes: 0,
            backups: 3,
            max_age_days: 0,
            fsync: Fsync::Interval,
            flush_interval: Duration::from_millis(20),
            batch_size: 16,
        }
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "trackgate-sink-{tag}-{}-{}-{nanos}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("events.ndjson")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn line(i: usize) -> String {
        format!("{{\"n\":{i},\"pad\":\"abcdefgh\"}}\n")
    }

    /// Lines `from..to` as batches of 1 to 4 lines.
    fn batches(from: usize, to: usize) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut i = from;
        let mut k = 0;
        while i < to {
            let n = (k % 4 + 1).min(to - i);
            let text: String = (i..i + n).map(line).collect();
            out.push(Batch {
                bytes: Bytes::from(text),
                events: n as u32,
            });
            i += n;
            k += 1;
        }
        out
    }

    fn start_log(cfg: LogConfig, capacity: usize) -> (SinkHandle, Sinks) {
        start(SinkConfig {
            outputs: vec![Output::Log],
            queue_capacity: capacity,
            log: cfg,
        })
        .unwrap()
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Submits every batch, waiting while the queue is full.
    fn submit_all(h: &SinkHandle, bs: Vec<Batch>) {
        for b in bs {
            wait_for("room in the queue", || match h.submit(b.clone()) {
                Ok(()) => true,
                Err(SubmitError::Full) => false,
                Err(SubmitError::Closed) => panic!("closed"),
            });
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_default()
    }

    /// The `n` of every line, checking each is a whole JSON object.
    fn numbers(text: &str) -> Vec<u64> {
        assert!(text.is_empty() || text.ends_with('\n'), "torn last line");
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["n"].as_u64().unwrap()
            })
            .collect()
    }

    fn stats_of(s: &Sinks) -> Arc<SinkStats> {
        let all = s.stats();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, Sink::Log);
        Arc::clone(&all[0].1)
    }

    #[test]
    fn lines_arrive_intact_and_in_order() {
        let dir = TempDir::new("order");
        let (h, sinks) = start_log(config(LogTarget::File(dir.file())), 8);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 1000));
        let report = sinks.shutdown(Duration::from_secs(10));
        assert!(report.is_clean(), "{report}");
        let got = numbers(&read(&dir.file()));
        assert_eq!(got, (0..1000).collect::<Vec<u64>>());
        assert_eq!(stats.events_written.get(), 1000);
        assert_eq!(stats.health(), SinkHealth::Stopped);
        assert_eq!(h.submit(batches(0, 1).remove(0)), Err(SubmitError::Closed));
    }

    #[test]
    fn always_fsync_counts_every_event() {
        let dir = TempDir::new("always");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.fsync = Fsync::Always;
        cfg.batch_size = 5;
        let (h, sinks) = start_log(cfg, 8);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 40));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        assert_eq!(numbers(&read(&dir.file())).len(), 40);
        assert_eq!(stats.events_written.get(), 40);
        let (buckets, _) = stats.flush_duration.snapshot();
        assert!(buckets.iter().sum::<u64>() > 0);
    }

    #[test]
    fn interval_flushes_without_reaching_batch_size() {
        let dir = TempDir::new("interval");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.batch_size = 10_000;
        let (h, sinks) = start_log(cfg, 8);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 3));
        wait_for("the interval flush", || {
            numbers(&read(&dir.file())).len() == 3
        });
        wait_for("the count", || stats.events_written.get() == 3);
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
    }

    fn backups_in(dir: &TempDir) -> Vec<u32> {
        let mut out: Vec<u32> = (1..100)
            .filter(|&n| exists(&backup_path(&dir.file(), n)))
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn rotation_loses_and_duplicates_nothing() {
        let dir = TempDir::new("rotate-all");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.rotate_bytes = 200; // ~7 lines of 29 bytes
        cfg.backups = 90;
        cfg.batch_size = 8;
        let (h, sinks) = start_log(cfg, 4);
        let stats = stats_of(&sinks);
        let mut all = batches(0, 150);
        // One line longer than the limit goes in whole, in a file of its own.
        let long = format!("{{\"n\":150,\"pad\":\"{}\"}}\n", "y".repeat(300));
        all.push(Batch {
            bytes: Bytes::from(long.clone()),
            events: 1,
        });
        all.extend(batches(151, 160));
        submit_all(&h, all);
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        let kept = backups_in(&dir);
        assert!(kept.len() >= 20, "{kept:?}");
        assert_eq!(kept, (1..=kept.len() as u32).collect::<Vec<_>>());
        assert_eq!(stats.rotations.get(), kept.len() as u64);
        // Oldest first: .N … .1, then the current file.
        let mut got = Vec::new();
        for n in kept.iter().rev() {
            let text = read(&backup_path(&dir.file(), *n));
            assert!(
                text.len() <= 200 || text == long,
                "{n}: {} bytes",
                text.len()
            );
            got.extend(numbers(&text));
        }
        got.extend(numbers(&read(&dir.file())));
        assert_eq!(got, (0..160).collect::<Vec<u64>>());
        assert_eq!(stats.events_written.get(), 160);
    }

    #[test]
    fn rotation_keeps_at_most_backups() {
        let dir = TempDir::new("rotate-few");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.rotate_bytes = 100;
        cfg.backups = 2;
        let (h, sinks) = start_log(cfg, 4);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 60));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        assert_eq!(backups_in(&dir), vec![1, 2]);
        assert!(stats.rotations.get() > 2);
        let mut got = numbers(&read(&backup_path(&dir.file(), 2)));
        got.extend(numbers(&read(&backup_path(&dir.file(), 1))));
        got.extend(numbers(&read(&dir.file())));
        // The newest lines, contiguous up to the last one.
        let first = got[0];
        assert_eq!(got, (first..60).collect::<Vec<u64>>());
    }

    #[test]
    fn zero_backups_deletes_the_rotated_file() {
        let dir = TempDir::new("rotate-none");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.rotate_bytes = 100;
        cfg.backups = 0;
        let (h, sinks) = start_log(cfg, 4);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 30));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        assert!(backups_in(&dir).is_empty());
        assert!(stats.rotations.get() > 0);
        let got = numbers(&read(&dir.file()));
        assert_eq!(got.last(), Some(&29));
        assert!(read(&dir.file()).len() <= 100);
    }

    #[test]
    fn shift_keeps_backups_after_a_half_done_rotation() {
        let dir = TempDir::new("shift");
        let p = dir.file();
        fs::write(&p, "cur\n").unwrap();
        fs::write(backup_path(&p, 2), "two\n").unwrap();
        fs::write(backup_path(&p, 3), "three\n").unwrap();
        fs::write(backup_path(&p, 4), "stale\n").unwrap();
        // A gap at .1 (an earlier rotation stopped half way): nothing is shifted.
        assert!(shift_backups(&p, 3).is_ok());
        assert_eq!(read(&backup_path(&p, 1)), "cur\n");
        assert_eq!(read(&backup_path(&p, 2)), "two\n");
        assert_eq!(read(&backup_path(&p, 3)), "three\n");
        fs::write(&p, "new\n").unwrap();
        // Now .1 … .4 exist: .4 is beyond the limit and goes, the rest shift.
        assert!(shift_backups(&p, 3).is_ok());
        assert!(!exists(&p));
        assert_eq!(read(&backup_path(&p, 1)), "new\n");
        assert_eq!(read(&backup_path(&p, 2)), "cur\n");
        assert_eq!(read(&backup_path(&p, 3)), "two\n");
        assert!(!exists(&backup_path(&p, 4)));
        // The file was moved away before the rotation: not an error.
        assert!(shift_backups(&p, 3).is_ok());
        assert_eq!(read(&backup_path(&p, 1)), "new\n");
    }

    #[test]
    fn restart_appends_and_closes_a_torn_line() {
        let dir = TempDir::new("restart");
        let (h, sinks) = start_log(config(LogTarget::File(dir.file())), 4);
        submit_all(&h, batches(0, 3));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        // A crash left half a line behind.
        let mut f = OpenOptions::new().append(true).open(dir.file()).unwrap();
        f.write_all(b"{\"n\":99,\"pa").unwrap();
        drop(f);
        let (h, sinks) = start_log(config(LogTarget::File(dir.file())), 4);
        submit_all(&h, batches(3, 5));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        let text = read(&dir.file());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[3], "{\"n\":99,\"pa");
        let mut whole: String = lines[..3].iter().map(|l| format!("{l}\n")).collect();
        whole.extend(lines[4..].iter().map(|l| format!("{l}\n")));
        assert_eq!(numbers(&whole), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn reopen_after_a_rename_starts_a_new_file() {
        let dir = TempDir::new("reopen");
        let (h, sinks) = start_log(config(LogTarget::File(dir.file())), 4);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 5));
        wait_for("the first lines", || stats.events_written.get() == 5);
        let moved = dir.0.join("events.ndjson.moved");
        fs::rename(dir.file(), &moved).unwrap();
        sinks.reopen();
        wait_for("the new file", || exists(&dir.file()));
        submit_all(&h, batches(5, 9));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        assert_eq!(numbers(&read(&moved)), vec![0, 1, 2, 3, 4]);
        assert_eq!(numbers(&read(&dir.file())), vec![5, 6, 7, 8]);
    }

    #[test]
    fn age_pruning_deletes_old_backups_only() {
        let dir = TempDir::new("prune");
        let p = dir.file();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        for name in [
            backup_path(&p, 1),
            backup_path(&p, 7),
            dir.0.join("other.ndjson.1"),
        ] {
            let f = File::create(&name).unwrap();
            f.set_modified(old).unwrap();
        }
        fs::write(backup_path(&p, 2), "{}\n").unwrap();
        let mut cfg = config(LogTarget::File(p.clone()));
        cfg.max_age_days = 3;
        let (_h, sinks) = start_log(cfg, 4);
        assert!(!exists(&backup_path(&p, 1)));
        assert!(!exists(&backup_path(&p, 7)));
        assert!(exists(&backup_path(&p, 2)));
        assert!(exists(&dir.0.join("other.ndjson.1")));
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
    }

    #[test]
    fn stop_drains_the_queue() {
        let dir = TempDir::new("drain");
        let stats = Arc::new(SinkStats::default());
        let backlog = Arc::new(Backlog::default());
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.batch_size = 3;
        let sink = LogSink::open(cfg, Arc::clone(&stats), backlog).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(64);
        for b in batches(0, 100) {
            tx.try_send(b).unwrap();
        }
        let fin = sink.finish(&rx, Instant::now() + Duration::from_secs(10));
        assert_eq!((fin.unwritten_events, fin.unwritten_bytes), (0, 0));
        assert!(fin.error.is_none());
        assert!(rx.is_empty());
        assert_eq!(numbers(&read(&dir.file())), (0..100).collect::<Vec<u64>>());
        assert_eq!(stats.events_written.get(), 100);
        assert_eq!(stats.health(), SinkHealth::Stopped);
    }

    #[test]
    fn shutdown_reports_what_it_could_not_write() {
        let dir = TempDir::new("lost");
        let sub = dir.0.join("sub");
        fs::create_dir_all(&sub).unwrap();
        let stats = Arc::new(SinkStats::default());
        let cfg = config(LogTarget::File(sub.join("events.ndjson")));
        let mut sink = LogSink::open(cfg, Arc::clone(&stats), Arc::default()).unwrap();
        fs::remove_dir_all(&sub).unwrap();
        sink.close();
        let (tx, rx) = crossbeam_channel::bounded(8);
        for b in batches(0, 6) {
            tx.try_send(b).unwrap();
        }
        let fin = sink.finish(&rx, Instant::now() + Duration::from_millis(300));
        assert_eq!(fin.unwritten_events, 6);
        assert!(fin.unwritten_bytes > 0);
        let error = fin.error.unwrap_or_default();
        assert!(
            error.contains("LOG_PATH") && error.contains("sub"),
            "{error}"
        );
        assert!(stats.failures[SinkFailure::Open.index()].get() >= 1);
    }

    #[test]
    fn full_queue_refuses_while_the_sink_is_down_then_recovers() {
        let dir = TempDir::new("down");
        let sub = dir.0.join("sub");
        fs::create_dir_all(&sub).unwrap();
        let path = sub.join("events.ndjson");
        let (h, sinks) = start_log(config(LogTarget::File(path.clone())), 2);
        let stats = stats_of(&sinks);
        submit_all(&h, batches(0, 2));
        wait_for("the first lines", || stats.events_written.get() == 2);

        // The directory goes away: reopening the file fails.
        fs::remove_dir_all(&sub).unwrap();
        sinks.reopen();
        wait_for("the sink to go down", || stats.health() == SinkHealth::Down);
        assert!(stats.failures[SinkFailure::Open.index()].get() >= 1);
        let reason = stats.reason();
        assert!(reason.contains(&path.display().to_string()), "{reason}");
        assert!(reason.contains("No such file"), "{reason}");

        // It holds what it has and takes no more: the queue fills.
        let mut accepted = Vec::new();
        for b in batches(2, 40) {
            match h.submit(b.clone()) {
                Ok(()) => accepted.push(b),
                Err(SubmitError::Full) => break,
                Err(SubmitError::Closed) => panic!("closed"),
            }
        }
        // Exactly the queue's capacity: the failing sink takes nothing.
        assert_eq!(accepted.len(), 2);
        assert_eq!(h.submit(batches(50, 51).remove(0)), Err(SubmitError::Full));
        wait_for("the queue depth gauge", || stats.queue_depth.get() == 2);
        assert_eq!(stats.health(), SinkHealth::Down);

        fs::create_dir_all(&sub).unwrap();
        wait_for("recovery", || stats.health() == SinkHealth::Healthy);
        let accepted_events: u64 = accepted.iter().map(|b| u64::from(b.events)).sum();
        wait_for("the held lines", || {
            stats.events_written.get() == 2 + accepted_events
        });
        assert!(stats.reason().is_empty());
        assert!(sinks.shutdown(Duration::from_secs(10)).is_clean());
        let expected: Vec<u64> = (2..2 + accepted_events).collect();
        assert_eq!(numbers(&read(&path)), expected);
    }

    #[test]
    fn a_bad_log_path_fails_at_start_up() {
        let dir = TempDir::new("badpath");
        let path = dir.0.join("missing").join("events.ndjson");
        let err = start(SinkConfig {
            outputs: vec![Output::Log],
            queue_capacity: 4,
            log: config(LogTarget::File(path.clone())),
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("LOG_PATH"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let mut cfg = config(LogTarget::Stdout);
        assert!(cfg.validate().is_ok());
        cfg.batch_size = 0;
        assert!(cfg
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("BATCH_SIZE"));
        cfg.batch_size = 1;
        cfg.flush_interval = Duration::ZERO;
        let msg = cfg
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("FLUSH_INTERVAL_MS"));
    }

    #[test]
    fn pending_cuts_only_at_line_ends() {
        let mut p = Pending::default();
        p.push(Batch {
            bytes: Bytes::from_static(b"aaaa\nbbbb\ncccc\n"),
            events: 3,
        });
        p.push(Batch {
            bytes: Bytes::from_static(b"dd\n"),
            events: 1,
        });
        let mut c = Chunk::default();
        assert!(!p.take_fitting(4, &mut c));
        assert!(c.is_empty());
        assert!(p.take_fitting(12, &mut c));
        assert_eq!((c.buf.as_slice(), c.events), (&b"aaaa\nbbbb\n"[..], 2));
        assert_eq!((p.events, p.bytes), (2, 8));
        c.clear();
        assert!(p.take_fitting(100, &mut c));
        assert_eq!((c.buf.as_slice(), c.events), (&b"cccc\ndd\n"[..], 2));
        assert!(p.is_empty());
        assert_eq!((p.events, p.bytes), (0, 0));
    }

    #[test]
    fn a_rewound_chunk_restarts_the_cut_line() {
        let mut c = Chunk::default();
        c.add(b"one\ntwo\nthree\n", 3);
        c.off = 6;
        c.rewind_to_line_start();
        assert_eq!(c.rest(), b"two\nthree\n");
        c.off = 2;
        c.rewind_to_line_start();
        assert_eq!(c.off, 0);
    }
}
