//! The log sink's downstream: appends each acknowledged event as one NDJSON
//! line to a file (or to stdout), and owns everything about that file:
//! the `LOG_FSYNC` policy, size rotation with numbered backups, age pruning
//! of the backups and reopening on SIGHUP.
//!
//! It runs on its sink thread ([`super::runner`]). [`LogSink::deliver`]
//! returns once the lines are written (and, under `LOG_FSYNC=always`,
//! fsynced): that is the acknowledgement after which the runner moves the
//! sink's checkpoint. On a failure the file is closed, so that the next
//! open ends a half-written line, and the runner delivers the same events
//! again (at-least-once).

use super::Delivered;
use crate::metrics::labels::SinkFailure;
use crate::metrics::sinks::SinkStats;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often old backups are pruned (besides start-up and each rotation).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

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

/// Why the log sink cannot start or could not deliver.
#[derive(Debug)]
pub enum LogError {
    /// The events file cannot be opened for appending.
    Open { path: PathBuf, source: io::Error },
    /// Writing the lines failed.
    Write { path: String, source: io::Error },
    /// fdatasync of the file failed.
    Fsync { path: String, source: io::Error },
    /// A rename or delete of the rotation failed.
    Rotate { what: String, source: io::Error },
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
            LogError::Write { path, source } => write!(
                f,
                "cannot write to the events file {path} (LOG_PATH): {source}; the events stay in \
                 the journal and are retried: free disk space or fix the file system"
            ),
            LogError::Fsync { path, source } => write!(
                f,
                "fsync of the events file {path} failed: {source}; the events stay in the journal \
                 and are written again: check the disk and the kernel log"
            ),
            LogError::Rotate { what, source } => write!(
                f,
                "cannot rotate the events file (LOG_ROTATE_MB): {what} failed: {source}; writing \
                 is paused until rotation succeeds: fix the directory's permissions, or set \
                 LOG_ROTATE_MB=0"
            ),
            LogError::Invalid { var, problem } => write!(f, "{var} {problem}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Open { source, .. }
            | LogError::Write { source, .. }
            | LogError::Fsync { source, .. }
            | LogError::Rotate { source, .. } => Some(source),
            LogError::Invalid { .. } => None,
        }
    }
}

impl LogError {
    /// The `sink_failures_total{kind}` label.
    pub fn kind(&self) -> SinkFailure {
        match self {
            LogError::Open { .. } | LogError::Invalid { .. } => SinkFailure::Open,
            LogError::Write { .. } => SinkFailure::Write,
            LogError::Fsync { .. } => SinkFailure::Fsync,
            LogError::Rotate { .. } => SinkFailure::Rotate,
        }
    }
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
pub(crate) struct RotateError {
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
/// without its `\n` by a crash (`kill -9` in the middle of a write) is cut
/// off, so every line in the file stays one whole event: its events were
/// never acknowledged to the journal, which delivers them again.
fn open_path(path: &Path) -> io::Result<Opened> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    let meta = file.metadata()?;
    let regular = meta.is_file();
    let mut size = meta.len();
    if regular && size > 0 {
        // Best effort: a file we may append to but not read keeps its tail.
        if let Ok(Some(whole)) = File::open(path).and_then(|r| whole_lines_len(&r, size)) {
            if whole < size {
                file.set_len(whole)?;
                crate::warn!(
                    "cut a torn last line left by a crash; its events are delivered again from the journal",
                    file = path.display(),
                    bytes = size - whole
                );
                size = whole;
            }
        }
    }
    Ok(Opened {
        file,
        size,
        regular,
    })
}

/// The length of `file`'s first `size` bytes up to and including its last
/// `\n` (0 when it has none); `None` when it ends in `\n` already.
fn whole_lines_len(file: &File, size: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if end == size && chunk.last() == Some(&b'\n') {
            return Ok(None);
        }
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64 + 1));
        }
        end = start;
    }
    Ok(Some(0))
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

/// The log sink, owned by its thread.
pub struct LogSink {
    cfg: LogConfig,
    stats: Arc<SinkStats>,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// The current file is a regular file (rotated and fsynced).
    regular: bool,
    /// Written since the last fsync.
    dirty: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    next_prune: Option<Instant>,
}

impl LogSink {
    /// Opens the output on the calling thread, so that a bad `LOG_PATH`
    /// stops the start-up, and prunes old backups.
    pub fn new(cfg: LogConfig, stats: Arc<SinkStats>) -> Result<LogSink, LogError> {
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
            file: Some(opened.file),
            size: opened.size,
            regular: opened.regular,
            dirty: false,
            last_sync: Instant::now(),
            buf: Vec::with_capacity(64 * 1024),
            next_prune: None,
        };
        sink.prune();
        Ok(sink)
    }

    fn target_name(&self) -> String {
        match &self.cfg.path {
            LogTarget::File(p) => p.display().to_string(),
            LogTarget::Stdout => String::from("stdout"),
        }
    }

    /// Appends one line per event (rotating as needed); under
    /// `LOG_FSYNC=always` fsyncs before returning. On error the file is
    /// closed and nothing is counted: the caller delivers the same events
    /// again.
    pub fn deliver(&mut self, events: &[&[u8]]) -> Result<Delivered, LogError> {
        let r = self.deliver_inner(events);
        if r.is_err() {
            self.drop_file();
        }
        r
    }

    fn deliver_inner(&mut self, events: &[&[u8]]) -> Result<Delivered, LogError> {
        if self.next_prune.is_some_and(|p| Instant::now() >= p) {
            self.prune();
        }
        self.ensure_open()?;
        let limit = self.cfg.rotate_bytes;
        let rotating = self.regular && limit > 0;
        self.buf.clear();
        for ev in events {
            let line = ev.len() as u64 + 1;
            if rotating && self.size + self.buf.len() as u64 + line > limit {
                if !self.buf.is_empty() {
                    self.write_buf()?;
                }
                // A line longer than the limit goes whole into a fresh file.
                if self.size > 0 {
                    self.rotate()?;
                }
            }
            self.buf.extend_from_slice(ev);
            self.buf.push(b'\n');
        }
        self.write_buf()?;
        let due = match self.cfg.fsync {
            Fsync::Always => true,
            Fsync::Interval => self.last_sync.elapsed() >= self.cfg.flush_interval,
            Fsync::Never => false,
        };
        if due {
            self.sync()?;
        }
        let n = events.len() as u64;
        Ok(Delivered {
            written: n,
            ..Delivered::default()
        })
    }

    fn ensure_open(&mut self) -> Result<(), LogError> {
        if self.file.is_some() {
            return Ok(());
        }
        let o = open_target(&self.cfg.path).map_err(|source| LogError::Open {
            path: PathBuf::from(self.target_name()),
            source,
        })?;
        self.file = Some(o.file);
        self.size = o.size;
        self.regular = o.regular;
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), LogError> {
        let name = self.target_name();
        let Some(file) = self.file.as_mut() else {
            return Err(LogError::Write {
                path: name,
                source: io::Error::other("the file is closed"),
            });
        };
        file.write_all(&self.buf)
            .map_err(|source| LogError::Write { path: name, source })?;
        self.size += self.buf.len() as u64;
        self.dirty = true;
        self.buf.clear();
        Ok(())
    }

    /// fdatasync the current file when the policy and the file allow it.
    fn sync(&mut self) -> Result<(), LogError> {
        self.last_sync = Instant::now();
        if !self.dirty {
            return Ok(());
        }
        let res = match &self.file {
            Some(f) if self.regular && self.cfg.fsync != Fsync::Never => f.sync_data(),
            _ => Ok(()),
        };
        res.map_err(|source| LogError::Fsync {
            path: self.target_name(),
            source,
        })?;
        self.dirty = false;
        Ok(())
    }

    /// Before the runner persists a checkpoint past the lines written:
    /// fsyncs them unless `LOG_FSYNC=never` (under `always` they already
    /// are), so a power cut cannot lose lines the checkpoint has passed.
    pub fn make_durable(&mut self) -> Result<(), LogError> {
        match self.cfg.fsync {
            Fsync::Interval => self.sync(),
            Fsync::Always | Fsync::Never => Ok(()),
        }
    }

    /// Interval fsync, called by the runner at least every 50 ms.
    pub fn tick(&mut self) {
        if self.cfg.fsync == Fsync::Interval
            && self.dirty
            && self.last_sync.elapsed() >= self.cfg.flush_interval
        {
            if let Err(e) = self.sync() {
                // Lines already acknowledged may be lost on power failure;
                // the file is reopened for the next delivery.
                self.stats.failure(e.kind());
                crate::error!("log sink", detail = e);
                self.drop_file();
            }
        }
        if self.next_prune.is_some_and(|p| Instant::now() >= p) {
            self.prune();
        }
    }

    fn drop_file(&mut self) {
        self.file = None;
        self.dirty = false;
        self.size = 0;
    }

    /// Size rotation: sync and close the full file, shift the backups, open
    /// a fresh file.
    fn rotate(&mut self) -> Result<(), LogError> {
        let LogTarget::File(path) = &self.cfg.path else {
            return Ok(());
        };
        let path = path.clone();
        self.sync()?;
        self.drop_file();
        shift_backups(&path, self.cfg.backups).map_err(|e| LogError::Rotate {
            what: e.what,
            source: e.source,
        })?;
        self.stats.rotations.inc();
        self.ensure_open()?;
        self.prune();
        Ok(())
    }

    /// SIGHUP (logrotate moved the file away): sync, close; the next
    /// delivery opens the path again.
    pub fn reopen(&mut self) {
        if let Err(e) = self.sync() {
            crate::error!("log sink", detail = e);
        }
        self.drop_file();
        if let Err(e) = self.ensure_open() {
            crate::warn!("log sink: cannot reopen the events file", detail = e);
        }
    }

    /// Shutdown: sync and close.
    pub fn close(&mut self) {
        if let Err(e) = self.sync() {
            crate::error!("log sink", detail = e);
        }
        self.drop_file();
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
                crate::warn!("log sink", detail = format!(
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
                    crate::warn!(
                        "log sink",
                        detail = format!(
                            "cannot delete the old backup {} (LOG_MAX_AGE_DAYS={days}): {e}",
                            entry.path().display()
                        )
                    );
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
            let dir = std::env::temp_dir().join(format!(
                "trackgate-logsink-{tag}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
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
        format!("{{\"n\":{i},\"pad\":\"abcdefgh\"}}")
    }

    fn deliver(s: &mut LogSink, from: usize, to: usize) {
        let lines: Vec<String> = (from..to).map(line).collect();
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let d = s.deliver(&refs).unwrap();
        assert_eq!(d.written, (to - from) as u64);
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_default()
    }

    fn numbers(text: &str) -> Vec<u64> {
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("{\"n\":")?;
                rest.split(',').next()?.parse().ok()
            })
            .collect()
    }

    fn backups_in(dir: &TempDir) -> Vec<u32> {
        let mut v: Vec<u32> = (1..100)
            .filter(|n| exists(&backup_path(&dir.file(), *n)))
            .collect();
        v.sort_unstable();
        v
    }

    fn sink(cfg: LogConfig) -> (LogSink, Arc<SinkStats>) {
        let stats = Arc::new(SinkStats::default());
        (LogSink::new(cfg, Arc::clone(&stats)).unwrap(), stats)
    }

    #[test]
    fn lines_are_appended_whole_and_in_order() {
        let dir = TempDir::new("append");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.fsync = Fsync::Always;
        let (mut s, _) = sink(cfg);
        deliver(&mut s, 0, 5);
        deliver(&mut s, 5, 9);
        s.close();
        assert_eq!(numbers(&read(&dir.file())), (0..9).collect::<Vec<u64>>());
    }

    #[test]
    fn rotation_keeps_every_line_across_backups() {
        let dir = TempDir::new("rotate");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.rotate_bytes = 200;
        cfg.backups = 50;
        let (mut s, stats) = sink(cfg);
        for i in 0..40 {
            deliver(&mut s, i * 4, i * 4 + 4);
        }
        s.close();
        assert!(stats.rotations.get() > 3);
        let mut got = Vec::new();
        for n in backups_in(&dir).into_iter().rev() {
            let text = read(&backup_path(&dir.file(), n));
            assert!(text.len() <= 200, "backup {n} is {} bytes", text.len());
            got.extend(numbers(&text));
        }
        got.extend(numbers(&read(&dir.file())));
        assert_eq!(got, (0..160).collect::<Vec<u64>>());
    }

    #[test]
    fn rotation_keeps_at_most_backups() {
        let dir = TempDir::new("rotate-few");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.rotate_bytes = 100;
        cfg.backups = 2;
        let (mut s, stats) = sink(cfg);
        for i in 0..30 {
            deliver(&mut s, i * 2, i * 2 + 2);
        }
        s.close();
        assert_eq!(backups_in(&dir), vec![1, 2]);
        assert!(stats.rotations.get() > 2);
        let mut got = numbers(&read(&backup_path(&dir.file(), 2)));
        got.extend(numbers(&read(&backup_path(&dir.file(), 1))));
        got.extend(numbers(&read(&dir.file())));
        let first = got[0];
        assert_eq!(got, (first..60).collect::<Vec<u64>>());
    }

    #[test]
    fn zero_backups_deletes_the_rotated_file() {
        let dir = TempDir::new("rotate-none");
        let mut cfg = config(LogTarget::File(dir.file()));
        cfg.rotate_bytes = 100;
        cfg.backups = 0;
        let (mut s, stats) = sink(cfg);
        for i in 0..30 {
            deliver(&mut s, i, i + 1);
        }
        s.close();
        assert!(backups_in(&dir).is_empty());
        assert!(stats.rotations.get() > 0);
        assert_eq!(numbers(&read(&dir.file())).last(), Some(&29));
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
        assert!(shift_backups(&p, 3).is_ok());
        assert_eq!(read(&backup_path(&p, 1)), "cur\n");
        assert_eq!(read(&backup_path(&p, 2)), "two\n");
        assert_eq!(read(&backup_path(&p, 3)), "three\n");
        fs::write(&p, "new\n").unwrap();
        assert!(shift_backups(&p, 3).is_ok());
        assert!(!exists(&p));
        assert_eq!(read(&backup_path(&p, 1)), "new\n");
        assert_eq!(read(&backup_path(&p, 2)), "cur\n");
        assert_eq!(read(&backup_path(&p, 3)), "two\n");
        assert!(!exists(&backup_path(&p, 4)));
        assert!(shift_backups(&p, 3).is_ok());
        assert_eq!(read(&backup_path(&p, 1)), "new\n");
    }

    #[test]
    fn restart_cuts_a_torn_last_line() {
        let dir = TempDir::new("restart");
        let (mut s, _) = sink(config(LogTarget::File(dir.file())));
        deliver(&mut s, 0, 3);
        s.close();
        let mut f = OpenOptions::new().append(true).open(dir.file()).unwrap();
        f.write_all(b"{\"n\":99,\"pa").unwrap();
        drop(f);
        let (mut s, _) = sink(config(LogTarget::File(dir.file())));
        deliver(&mut s, 3, 5);
        s.close();
        let text = read(&dir.file());
        // The torn line (never acknowledged: the journal delivers its
        // events again) is gone; every line is whole.
        assert_eq!(numbers(&text), vec![0, 1, 2, 3, 4], "{text}");
        assert!(!text.contains("99"), "{text}");
        assert!(text.lines().all(|l| l.ends_with('}')), "{text}");
    }

    #[test]
    fn a_file_of_one_torn_line_is_emptied_and_whole_files_are_kept() {
        let dir = TempDir::new("torn-only");
        fs::write(dir.file(), b"{\"n\":1,\"pa").unwrap();
        let (mut s, _) = sink(config(LogTarget::File(dir.file())));
        deliver(&mut s, 7, 8);
        s.close();
        assert_eq!(numbers(&read(&dir.file())), vec![7]);
        // A long file ending in a newline is left as it is (the scan reads
        // back more than one 64 KiB chunk only when it must).
        let long = "x".repeat(200 * 1024) + "\n";
        fs::write(dir.file(), &long).unwrap();
        let f = File::open(dir.file()).unwrap();
        assert_eq!(whole_lines_len(&f, long.len() as u64).unwrap(), None);
        let torn = format!("{long}{}", "y".repeat(100 * 1024));
        fs::write(dir.file(), &torn).unwrap();
        let f = File::open(dir.file()).unwrap();
        assert_eq!(
            whole_lines_len(&f, torn.len() as u64).unwrap(),
            Some(long.len() as u64)
        );
    }

    #[test]
    fn reopen_after_a_rename_starts_a_new_file() {
        let dir = TempDir::new("reopen");
        let (mut s, _) = sink(config(LogTarget::File(dir.file())));
        deliver(&mut s, 0, 5);
        let moved = dir.0.join("events.ndjson.moved");
        fs::rename(dir.file(), &moved).unwrap();
        s.reopen();
        assert!(exists(&dir.file()));
        deliver(&mut s, 5, 9);
        s.close();
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
        let (_s, _) = sink(cfg);
        assert!(!exists(&backup_path(&p, 1)));
        assert!(!exists(&backup_path(&p, 7)));
        assert!(exists(&backup_path(&p, 2)));
        assert!(exists(&dir.0.join("other.ndjson.1")));
    }

    #[test]
    fn a_failed_delivery_is_an_error_then_succeeds_once_the_path_is_back() {
        let dir = TempDir::new("down");
        let sub = dir.0.join("sub");
        fs::create_dir_all(&sub).unwrap();
        let path = sub.join("events.ndjson");
        let (mut s, _) = sink(config(LogTarget::File(path.clone())));
        deliver(&mut s, 0, 2);
        fs::remove_dir_all(&sub).unwrap();
        s.reopen();
        let l = line(2);
        let err = s.deliver(&[l.as_bytes()]).err().unwrap();
        assert_eq!(err.kind(), SinkFailure::Open);
        let msg = err.to_string();
        assert!(msg.contains("LOG_PATH") && msg.contains("sub"), "{msg}");
        fs::create_dir_all(&sub).unwrap();
        deliver(&mut s, 2, 4);
        s.close();
        assert_eq!(numbers(&read(&path)), vec![2, 3]);
    }

    #[test]
    fn a_bad_log_path_fails_at_start_up() {
        let dir = TempDir::new("badpath");
        let path = dir.0.join("missing").join("events.ndjson");
        let err = LogSink::new(
            config(LogTarget::File(path.clone())),
            Arc::new(SinkStats::default()),
        )
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
}
