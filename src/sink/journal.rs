//! The durable journal: the one place an accepted event is written before
//! any sink sees it, owned by the journal thread ([`super`] runs it).
//!
//! Layout under `DATA_DIR`:
//! - `LOCK`: held with `flock` for the life of the process, so two trackgate
//!   processes never share one journal.
//! - `journal/<base>.seg`: segment files. A position is a *logical* byte
//!   offset across all segments; a segment's name is the offset of its first
//!   byte, so positions stay comparable across segments and restarts.
//! - `checkpoints/<sink>`: each sink's checkpoint (`offset seq`), the first
//!   position it has not yet had acknowledged downstream.
//!
//! A record is `len: u32 LE | crc32c: u32 LE | seq: u64 LE | payload`, the
//! CRC covering `seq` and the payload; `seq` numbers events so that lag can
//! be told in events. Records are appended to a buffer and made durable by
//! [`Journal::commit`] (one write, one `fdatasync`: group commit).
//!
//! At start a short record at the very end of the newest segment (a write
//! torn by a crash, never acknowledged) is cut off with a warning; a record
//! whose CRC does not match anywhere else quarantines its segment (renamed
//! `*.quarantined`, left for the operator). After a failed `fdatasync` the
//! journal refuses everything: the page cache may have dropped the data, so
//! carrying on could acknowledge events that are not on disk.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Bytes of a record's header.
pub const HEADER: u64 = 16;
/// The largest payload a record may hold (far above `MAX_BODY_BYTES`).
const MAX_RECORD: u32 = 64 * 1024 * 1024;

/// CRC-32C (Castagnoli), table driven. Written here rather than pulled from a
/// crate: twenty lines, and the journal's format depends on nothing else.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_update(0, data)
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// The CPU's CRC-32C instruction where there is one (SSE 4.2: 600-byte
/// records in tens of nanoseconds instead of microseconds, which showed as
/// 8 % of a core in the pixel path's profile, see PERFORMANCE.md), else the
/// table. Both give the same value (tested).
fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2, checked just above.
            return unsafe { crc32c_sse42(crc, data) };
        }
    }
    crc32c_table(crc, data)
}

fn crc32c_table(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(!crc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    crc32c_update(crc32c_update(0, &seq.to_le_bytes()), payload)
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Settings of the journal.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// `DATA_DIR`.
    pub data_dir: PathBuf,
    /// `JOURNAL_MAX_MB` in bytes: the most the segments may hold.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

impl JournalConfig {
    /// Segments of an eighth of the budget, between 64 KiB and 64 MiB, so
    /// that deleting passed segments frees space in small steps.
    pub fn new(data_dir: PathBuf, max_bytes: u64) -> JournalConfig {
        JournalConfig {
            data_dir,
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024),
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.data_dir.join("checkpoints")
    }
}

/// What went wrong with the journal; `Display` is the operator's message.
#[derive(Debug)]
pub enum JournalError {
    /// Another process holds `DATA_DIR/LOCK`.
    Locked { dir: PathBuf },
    /// A file operation failed.
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Appending would take the journal past `JOURNAL_MAX_MB`.
    Full { max_bytes: u64 },
    /// An `fdatasync` failed earlier: the journal acknowledges nothing more.
    Failed(String),
    /// A record read back does not match its CRC.
    Corrupt { path: PathBuf, offset: u64 },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Locked { dir } => write!(
                f,
                "DATA_DIR={} is in use by another trackgate process (its LOCK file is held); \
                 stop that process or give this one its own DATA_DIR",
                dir.display()
            ),
            JournalError::Io { what, path, source } => write!(
                f,
                "journal: cannot {what} {}: {source}; check that DATA_DIR exists, is writable \
                 by this user and has free space",
                path.display()
            ),
            JournalError::Full { max_bytes } => write!(
                f,
                "the journal holds JOURNAL_MAX_MB ({} MiB) of events no sink has passed yet; \
                 events are refused until a sink catches up (fix the sink that is behind, or \
                 raise JOURNAL_MAX_MB)",
                max_bytes / (1024 * 1024)
            ),
            JournalError::Failed(why) => write!(f, "{why}"),
            JournalError::Corrupt { path, offset } => write!(
                f,
                "journal segment {} has a record at byte {offset} whose CRC does not match: \
                 the disk corrupted it; the segment is skipped",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

fn io_err(what: &str, path: &Path, source: io::Error) -> JournalError {
    JournalError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

/// A sink's checkpoint: the first logical offset (and event sequence number)
/// it has not had acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: u64,
    pub seq: u64,
}

/// Reads `dir/<name>`; `None` when there is none yet.
pub fn read_checkpoint(dir: &Path, name: &str) -> Result<Option<Checkpoint>, JournalError> {
    let path = dir.join(name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read the checkpoint", &path, e)),
    };
    let mut it = text.split_ascii_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(offset)), Some(Ok(seq))) => Ok(Some(Checkpoint { offset, seq })),
        _ => Err(io_err(
            "parse the checkpoint",
            &path,
            io::Error::new(io::ErrorKind::InvalidData, "expected `offset seq`"),
        )),
    }
}

/// Writes `dir/<name>` durably (temporary file, fsync, rename, fsync dir).
pub fn write_checkpoint(dir: &Path, name: &str, cp: Checkpoint) -> Result<(), JournalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(format!("{} {}\n", cp.offset, cp.seq).as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| io_err("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_err("rename into place", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync the directory", dir, e))
}

/// Every checkpoint in `dir`.
fn all_checkpoints(dir: &Path) -> Result<Vec<Checkpoint>, JournalError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io_err("list", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            continue;
        }
        if let Some(cp) = read_checkpoint(dir, name)? {
            out.push(cp);
        }
    }
    Ok(out)
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The segments in `dir`, sorted by base offset.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io_err("list", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((base, entry.path()));
    }
    out.sort_unstable_by_key(|(b, _)| *b);
    Ok(out)
}

/// How a segment ended when it was scanned.
#[derive(Debug, PartialEq, Eq)]
enum ScanEnd {
    /// Every byte is in a valid record.
    Clean,
    /// A record runs past the end of the file at this offset.
    Short(u64),
    /// A complete record at this offset fails its CRC.
    BadCrc(u64),
}

struct Scan {
    valid_len: u64,
    records: u64,
    last_seq: Option<u64>,
    end: ScanEnd,
}

fn scan(path: &Path) -> Result<Scan, JournalError> {
    let data = fs::read(path).map_err(|e| io_err("read", path, e))?;
    let mut off = 0usize;
    let mut records = 0;
    let mut last_seq = None;
    let end = loop {
        let Some(h) = data.get(off..off + HEADER as usize) else {
            break if off == data.len() {
                ScanEnd::Clean
            } else {
                ScanEnd::Short(off as u64)
            };
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&h[8..16]);
        let seq = u64::from_le_bytes(s);
        let start = off + HEADER as usize;
        let Some(payload) = data.get(start..start + len as usize) else {
            break if len > MAX_RECORD {
                ScanEnd::BadCrc(off as u64)
            } else {
                ScanEnd::Short(off as u64)
            };
        };
        if record_crc(seq, payload) != crc {
            break ScanEnd::BadCrc(off as u64);
        }
        records += 1;
        last_seq = Some(seq);
        off = start + len as usize;
    };
    let valid_len = match end {
        ScanEnd::Clean => data.len() as u64,
        ScanEnd::Short(o) | ScanEnd::BadCrc(o) => o,
    };
    Ok(Scan {
        valid_len,
        records,
        last_seq,
        end,
    })
}

/// What [`Journal::open`] found and did, for the start-up log.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Operator warnings (torn tail cut, segments quarantined).
    pub warnings: Vec<String>,
    /// Records found in the segments kept.
    pub records: u64,
}

struct Segment {
    base: u64,
    len: u64,
    path: PathBuf,
}

/// The journal, owned by the journal thread.
pub struct Journal {
    dir: PathBuf,
    lock: File,
    max_bytes: u64,
    segment_bytes: u64,
    /// Closed segments, oldest first, then the active one (last).
    segments: Vec<Segment>,
    active: File,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    next_seq: u64,
    /// Sum of the segments' lengths (bytes on disk).
    disk_bytes: u64,
    failed: Option<String>,
}

impl Journal {
    /// Takes the lock, checks every segment (cutting a torn tail,
    /// quarantining corrupt segments) and starts a fresh active segment.
    pub fn open(cfg: &JournalConfig) -> Result<(Journal, OpenReport), JournalError> {
        let data = &cfg.data_dir;
        fs::create_dir_all(data).map_err(|e| io_err("create", data, e))?;
        let lock = lock(data)?;
        let dir = cfg.journal_dir();
        let cps = cfg.checkpoint_dir();
        for d in [&dir, &cps] {
            fs::create_dir_all(d).map_err(|e| io_err("create", d, e))?;
        }
        let mut report = OpenReport::default();
        let found = list_segments(&dir)?;
        let mut segments = Vec::with_capacity(found.len() + 1);
        let mut next_seq = 0u64;
        let mut end = 0u64;
        let last = found.len().saturating_sub(1);
        for (i, (base, path)) in found.into_iter().enumerate() {
            let s = scan(&path)?;
            let keep_len = match s.end {
                ScanEnd::Clean => Some(s.valid_len),
                ScanEnd::Short(off) if i == last => {
                    report.warnings.push(format!(
                        "journal: the last record of {} (at byte {off}) is incomplete, a write torn \
                         by a crash that was never acknowledged; it is skipped",
                        path.display()
                    ));
                    Some(s.valid_len)
                }
                ScanEnd::Short(off) | ScanEnd::BadCrc(off) => {
                    let q = path.with_extension("seg.quarantined");
                    report.warnings.push(format!(
                        "journal: segment {} is corrupt at byte {off} (CRC mismatch or cut short); \
                         it is moved to {} and its events are not delivered: inspect the disk",
                        path.display(),
                        q.display()
                    ));
                    fs::rename(&path, &q).map_err(|e| io_err("quarantine", &path, e))?;
                    None
                }
            };
            let Some(len) = keep_len else { continue };
            if s.end != ScanEnd::Clean {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        f.set_len(len)?;
                        f.sync_all()
                    })
                    .map_err(|e| io_err("cut the torn tail of", &path, e))?;
            }
            report.records += s.records;
            if let Some(q) = s.last_seq {
                next_seq = next_seq.max(q + 1);
            }
            end = end.max(base + len);
            if len == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            segments.push(Segment { base, len, path });
        }
        // A journal emptied by its sinks continues where they stopped.
        for cp in all_checkpoints(&cps)? {
            end = end.max(cp.offset);
            next_seq = next_seq.max(cp.seq);
        }
        let disk_bytes = segments.iter().map(|s| s.len).sum();
        let path = dir.join(segment_name(end));
        let active = create_segment(&path, &dir)?;
        segments.push(Segment {
            base: end,
            len: 0,
            path,
        });
        let j = Journal {
            dir,
            lock,
            max_bytes: cfg.max_bytes,
            segment_bytes: cfg.segment_bytes.max(1),
            segments,
            active,
            buf: Vec::with_capacity(64 * 1024),
            next_seq,
            disk_bytes,
            failed: None,
        };
        Ok((j, report))
    }

    /// Makes every later write fail, as a dying disk would (tests of the
    /// callers' failure handling).
    #[cfg(test)]
    pub(crate) fn break_writes(&mut self) {
        if let Some(seg) = self.segments.last() {
            if let Ok(ro) = File::open(&seg.path) {
                self.active = ro;
            }
        }
    }

    /// A second descriptor of the `DATA_DIR` lock: the lock is held until
    /// every descriptor of it is closed.
    pub fn lock_clone(&self) -> Option<File> {
        self.lock.try_clone().ok()
    }

    /// The logical offset just past the last committed record.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.base + s.len)
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes on disk plus bytes buffered.
    pub fn bytes(&self) -> u64 {
        self.disk_bytes + self.buf.len() as u64
    }

    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The offset of the oldest byte still kept.
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base)
    }

    /// The logical offset just past the last record appended (committed or
    /// still buffered).
    pub fn pending_end(&self) -> u64 {
        self.end() + self.buf.len() as u64
    }

    /// Bytes that may still be appended under `JOURNAL_MAX_MB`.
    pub fn room(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes())
    }

    /// `JOURNAL_MAX_MB` in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether a record of `payload_len` bytes would fit under the budget.
    pub fn has_room(&self, payload_len: usize) -> bool {
        self.bytes() + HEADER + payload_len as u64 <= self.max_bytes
    }

    /// Buffers one record; returns its sequence number. Durable only after
    /// the next [`commit`](Self::commit).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if let Some(why) = &self.failed {
            return Err(JournalError::Failed(why.clone()));
        }
        if !self.has_room(payload.len()) {
            return Err(JournalError::Full {
                max_bytes: self.max_bytes,
            });
        }
        let seq = self.next_seq;
        encode_record(&mut self.buf, seq, payload);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Writes the buffered records and `fdatasync`s them: one system call
    /// pair for everything appended since the last commit. Returns the new
    /// durable end. A failure here is final (see the module doc).
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        if let Some(why) = &self.failed {
            return Err(JournalError::Failed(why.clone()));
        }
        if self.buf.is_empty() {
            return Ok(self.end());
        }
        let path = self.active_path();
        let res = self.active.write_all(&self.buf);
        if let Err(e) = res {
            return Err(self.fail(format!(
                "journal: writing {} failed: {e}; the journal stops acknowledging events (they may \
                 be half written): fix the disk and restart trackgate",
                path.display()
            )));
        }
        if let Err(e) = self.active.sync_data() {
            return Err(self.fail(format!(
                "journal: fdatasync of {} FAILED: {e}; the kernel may have dropped the data, so the \
                 journal stops acknowledging events (never retried): check the disk and the kernel \
                 log, then restart trackgate",
                path.display()
            )));
        }
        let n = self.buf.len() as u64;
        self.buf.clear();
        self.disk_bytes += n;
        if let Some(s) = self.segments.last_mut() {
            s.len += n;
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.len >= self.segment_bytes)
        {
            self.roll()?;
        }
        Ok(self.end())
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map_or_else(|| self.dir.clone(), |s| s.path.clone())
    }

    fn fail(&mut self, why: String) -> JournalError {
        self.failed = Some(why.clone());
        JournalError::Failed(why)
    }

    /// Why the journal stopped acknowledging, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), JournalError> {
        let base = self.end();
        let path = self.dir.join(segment_name(base));
        self.active = create_segment(&path, &self.dir)?;
        self.segments.push(Segment { base, len: 0, path });
        Ok(())
    }

    /// Deletes every closed segment that ends at or before `upto` (the
    /// lowest checkpoint of the enabled sinks). Returns how many went.
    pub fn release(&mut self, upto: u64) -> usize {
        let mut n = 0;
        while self.segments.len() > 1 {
            let s = &self.segments[0];
            if s.base + s.len > upto {
                break;
            }
            if let Err(e) = fs::remove_file(&s.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    crate::warn!(
                        "journal: cannot delete a passed segment",
                        path = s.path.display(),
                        error = e
                    );
                    break;
                }
            }
            self.disk_bytes -= s.len;
            self.segments.remove(0);
            n += 1;
        }
        n
    }
}

fn create_segment(path: &Path, dir: &Path) -> Result<File, JournalError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err("create the segment", path, e))?;
    sync_dir(dir)?;
    Ok(f)
}

/// Takes `DATA_DIR/LOCK` (an exclusive `flock`, released when the process
/// ends, however it ends).
fn lock(data: &Path) -> Result<File, JournalError> {
    let path = data.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("open the lock file", &path, e))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(JournalError::Locked {
                dir: data.to_path_buf(),
            });
        }
        return Err(io_err("lock", &path, e));
    }
    Ok(f)
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// The logical offset just past this record.
    pub end: u64,
    pub payload: Vec<u8>,
}

/// Reads the journal from any position: a sink catching up after it fell
/// behind or after a restart. Owned by one sink thread.
pub struct Reader {
    dir: PathBuf,
    /// The open segment: base, file, and the file's read offset.
    cur: Option<(u64, PathBuf, File, u64)>,
}

impl Reader {
    pub fn new(journal_dir: PathBuf) -> Reader {
        Reader {
            dir: journal_dir,
            cur: None,
        }
    }

    /// Reads records starting at `from`, none ending past `until` (the
    /// durable end), at most `max` of them, into `out`. Returns the position
    /// after the last record read; a position inside a deleted or
    /// quarantined range moves on to the next segment.
    pub fn read(
        &mut self,
        from: u64,
        until: u64,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<u64, JournalError> {
        let mut pos = from;
        let first = out.len();
        while out.len() - first < max && pos < until {
            match self.position(pos)? {
                Some(p) => pos = p,
                None => return Ok(pos),
            }
            if pos >= until {
                break;
            }
            let Some((base, path, file, at)) = self.cur.as_mut() else {
                return Ok(pos);
            };
            let mut h = [0u8; HEADER as usize];
            match file.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The end of this segment: go on with the next one
                    // (past a quarantined gap if there is one).
                    let current = *base;
                    self.cur = None;
                    match self.skip_segment(current)? {
                        Some(b) => {
                            pos = pos.max(b);
                            continue;
                        }
                        None => return Ok(pos),
                    }
                }
                Err(e) => return Err(io_err("read", path, e)),
            }
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let mut s = [0u8; 8];
            s.copy_from_slice(&h[8..16]);
            let seq = u64::from_le_bytes(s);
            let end = pos + HEADER + u64::from(len);
            if end > until {
                self.cur = None;
                return Ok(pos);
            }
            if len > MAX_RECORD {
                let (p, o) = (path.clone(), *at);
                self.cur = None;
                return Err(JournalError::Corrupt { path: p, offset: o });
            }
            let mut payload = vec![0u8; len as usize];
            file.read_exact(&mut payload)
                .map_err(|e| io_err("read", path, e))?;
            if record_crc(seq, &payload) != crc {
                let (p, o) = (path.clone(), *at);
                self.cur = None;
                return Err(JournalError::Corrupt { path: p, offset: o });
            }
            *at += HEADER + u64::from(len);
            out.push(Record { seq, end, payload });
            pos = end;
        }
        Ok(pos)
    }

    /// The base of the first segment starting after `pos` (to skip a
    /// corrupt one, or to go on past the end of the one holding `pos`).
    pub fn skip_segment(&mut self, pos: u64) -> Result<Option<u64>, JournalError> {
        self.cur = None;
        Ok(list_segments(&self.dir)?
            .into_iter()
            .map(|(b, _)| b)
            .find(|b| *b > pos))
    }

    /// Opens the segment holding `pos` and seeks to it. Returns the position
    /// reached: `pos`, or the start of the oldest segment when `pos` was
    /// deleted; `None` when no segment holds anything at or after `pos`.
    fn position(&mut self, pos: u64) -> Result<Option<u64>, JournalError> {
        if let Some((base, _, _, at)) = &self.cur {
            if *base + *at == pos {
                return Ok(Some(pos));
            }
        }
        self.cur = None;
        let segs = list_segments(&self.dir)?;
        let (pos, base, path) = match segs.iter().rev().find(|(b, _)| *b <= pos) {
            Some((b, p)) => (pos, *b, p.clone()),
            None => match segs.first() {
                Some((b, p)) => (*b, *b, p.clone()),
                None => return Ok(None),
            },
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let at = pos - base;
        file.seek(SeekFrom::Start(at))
            .map_err(|e| io_err("seek in", &path, e))?;
        self.cur = Some((base, path, file, at));
        Ok(Some(pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) struct Tmp(pub PathBuf);
    impl Tmp {
        pub(crate) fn new(tag: &str) -> Tmp {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "trackgate-journal-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn cfg(t: &Tmp, max: u64, seg: u64) -> JournalConfig {
        JournalConfig {
            data_dir: t.0.clone(),
            max_bytes: max,
            segment_bytes: seg,
        }
    }

    fn read_all(c: &JournalConfig, from: u64, until: u64) -> Vec<Record> {
        let mut r = Reader::new(c.journal_dir());
        let mut out = Vec::new();
        let mut pos = from;
        loop {
            let before = out.len();
            pos = r.read(pos, until, 7, &mut out).unwrap();
            if out.len() == before {
                return out;
            }
        }
    }

    fn payloads(rs: &[Record]) -> Vec<String> {
        rs.iter()
            .map(|r| String::from_utf8(r.payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c_table(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc32c_instruction_and_table_agree() {
        // Every length around the 8-byte steps, and chained updates (as
        // `record_crc` chains the sequence number and the payload).
        let data: Vec<u8> = (0..1100u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..40).chain([599, 600, 601, 1024, 1100]) {
            for start in [0, 1, 3, 7] {
                let d = &data[start..start + len.min(data.len() - start)];
                assert_eq!(
                    crc32c_update(0x1234_5678, d),
                    crc32c_table(0x1234_5678, d),
                    "len {len}"
                );
                assert_eq!(crc32c_update(0, d), crc32c_table(0, d), "len {len}");
            }
        }
        let (a, b) = data.split_at(13);
        assert_eq!(
            crc32c_update(crc32c_update(0, a), b),
            crc32c_table(0, &data)
        );
    }

    #[test]
    fn records_survive_reopen_across_segments() {
        let t = Tmp::new("reopen");
        let c = cfg(&t, 1 << 20, 100);
        let (mut j, rep) = Journal::open(&c).unwrap();
        assert_eq!(rep.records, 0);
        for i in 0..20 {
            assert_eq!(j.append(format!("event-{i}").as_bytes()).unwrap(), i);
            if i % 3 == 0 {
                j.commit().unwrap();
            }
        }
        let end = j.commit().unwrap();
        assert!(j.segments() > 2, "rolled into several segments");
        let got = read_all(&c, 0, end);
        assert_eq!(got.len(), 20);
        assert_eq!(got[19].end, end);
        drop(j);
        let (mut j, rep) = Journal::open(&c).unwrap();
        assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
        assert_eq!(rep.records, 20);
        assert_eq!(j.end(), end);
        assert_eq!(j.append(b"after").unwrap(), 20);
        let end2 = j.commit().unwrap();
        let got = read_all(&c, 0, end2);
        let expected: Vec<String> = (0..20)
            .map(|i| format!("event-{i}"))
            .chain(["after".to_string()])
            .collect();
        assert_eq!(payloads(&got), expected);
        // Reading from the middle gives the rest.
        let mid = got[9].end;
        assert_eq!(read_all(&c, mid, end2).len(), 11);
        // Nothing is returned past `until`.
        assert_eq!(read_all(&c, 0, got[4].end).len(), 5);
    }

    #[test]
    fn a_torn_last_record_is_skipped_with_a_warning() {
        let t = Tmp::new("torn");
        let c = cfg(&t, 1 << 20, 1 << 20);
        let (mut j, _) = Journal::open(&c).unwrap();
        for i in 0..3 {
            j.append(format!("e{i}").as_bytes()).unwrap();
        }
        let end = j.commit().unwrap();
        drop(j);
        let (_, path) = list_segments(&c.journal_dir()).unwrap().pop().unwrap();
        // A crash during the next write: half a record.
        let mut rec = Vec::new();
        encode_record(&mut rec, 3, b"never acknowledged");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&rec[..rec.len() / 2]).unwrap();
        drop(f);
        let (mut j, rep) = Journal::open(&c).unwrap();
        assert_eq!(rep.warnings.len(), 1, "{:?}", rep.warnings);
        assert!(rep.warnings[0].contains("incomplete"), "{:?}", rep.warnings);
        assert_eq!(rep.records, 3);
        assert_eq!(j.end(), end);
        assert_eq!(fs::metadata(&path).unwrap().len(), end);
        j.append(b"e3").unwrap();
        let end = j.commit().unwrap();
        assert_eq!(payloads(&read_all(&c, 0, end)), ["e0", "e1", "e2", "e3"]);
    }

    #[test]
    fn a_crc_mismatch_quarantines_the_segment() {
        let t = Tmp::new("crc");
        let c = cfg(&t, 1 << 20, 60);
        let (mut j, _) = Journal::open(&c).unwrap();
        for i in 0..6 {
            j.append(format!("event-{i}-padding").as_bytes()).unwrap();
            j.commit().unwrap();
        }
        drop(j);
        let segs = list_segments(&c.journal_dir()).unwrap();
        assert!(segs.len() >= 3);
        // Flip one payload byte in the first segment.
        let (_, first) = &segs[0];
        let mut bytes = fs::read(first).unwrap();
        bytes[HEADER as usize + 2] ^= 0x40;
        fs::write(first, &bytes).unwrap();
        let (j, rep) = Journal::open(&c).unwrap();
        assert!(
            rep.warnings.iter().any(|w| w.contains("corrupt")),
            "{:?}",
            rep.warnings
        );
        assert!(first.with_extension("seg.quarantined").exists());
        assert!(!first.exists());
        // The others are still read, from the start of the journal.
        let got = read_all(&c, 0, j.end());
        assert!(!got.is_empty());
        assert!(payloads(&got).iter().all(|p| p != "event-0-padding"));
        assert_eq!(
            payloads(&got).last().map(String::as_str),
            Some("event-5-padding")
        );
    }

    #[test]
    fn the_reader_reports_corruption_found_after_start() {
        let t = Tmp::new("crc-read");
        let c = cfg(&t, 1 << 20, 1 << 20);
        let (mut j, _) = Journal::open(&c).unwrap();
        j.append(b"hello").unwrap();
        let end = j.commit().unwrap();
        let (_, p) = list_segments(&c.journal_dir()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&p).unwrap();
        bytes[HEADER as usize] ^= 1;
        fs::write(&p, &bytes).unwrap();
        let mut r = Reader::new(c.journal_dir());
        let mut out = Vec::new();
        let e = r.read(0, end, 10, &mut out).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("CRC"));
    }

    #[test]
    fn a_failed_write_stops_every_later_commit() {
        let t = Tmp::new("failed");
        let c = cfg(&t, 1 << 20, 1 << 20);
        let (mut j, _) = Journal::open(&c).unwrap();
        j.append(b"kept").unwrap();
        let end = j.commit().unwrap();
        // The segment's descriptor now refuses writes, as a dying disk would.
        j.break_writes();
        j.append(b"lost").unwrap();
        let e = j.commit().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("stops acknowledging"), "{e}");
        assert!(j.failed().is_some());
        // Never retried, never carried on: every later call is refused.
        assert!(matches!(j.append(b"x"), Err(JournalError::Failed(_))));
        assert!(matches!(j.commit(), Err(JournalError::Failed(_))));
        assert_eq!(j.end(), end);
    }

    #[test]
    fn a_second_process_is_kept_off_the_data_dir() {
        let t = Tmp::new("lock");
        let c = cfg(&t, 1 << 20, 1 << 20);
        let (j, _) = Journal::open(&c).unwrap();
        // flock locks belong to the open file description: a second open
        // in this process conflicts exactly as another process would.
        let msg = Journal::open(&c).err().map(|e| e.to_string());
        assert!(
            msg.as_deref().unwrap_or("").contains("in use by another"),
            "{msg:?}"
        );
        drop(j);
        assert!(Journal::open(&c).is_ok());
    }

    #[test]
    fn full_refuses_until_released() {
        let t = Tmp::new("full");
        let c = cfg(&t, 200, 60);
        let (mut j, _) = Journal::open(&c).unwrap();
        let mut n = 0u64;
        let err = loop {
            match j.append(b"0123456789abcdef") {
                Ok(_) => {
                    n += 1;
                    j.commit().unwrap();
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(err, JournalError::Full { .. }));
        assert!(err.to_string().contains("JOURNAL_MAX_MB"));
        assert_eq!(n, 200 / (HEADER + 16));
        assert!(j.bytes() <= 200);
        // A sink passes the first records: their segments go, room returns.
        let recs = read_all(&c, 0, j.end());
        let before = j.segments();
        assert!(j.release(recs[4].end) >= 1);
        assert!(j.segments() < before);
        assert!(j.append(b"0123456789abcdef").is_ok());
        j.commit().unwrap();
        // Released records are not read again; the rest are.
        let rest = read_all(&c, 0, j.end());
        assert!(rest.len() < recs.len() + 1);
        assert_eq!(rest.last().map(|r| r.seq), Some(n));
    }

    #[test]
    fn checkpoints_round_trip_and_carry_an_emptied_journal_forward() {
        let t = Tmp::new("ckpt");
        let c = cfg(&t, 1 << 20, 50);
        let (mut j, _) = Journal::open(&c).unwrap();
        for _ in 0..5 {
            j.append(b"0123456789abcdef").unwrap();
            j.commit().unwrap();
        }
        let end = j.end();
        let cp = Checkpoint {
            offset: end,
            seq: j.next_seq(),
        };
        write_checkpoint(&c.checkpoint_dir(), "log", cp).unwrap();
        assert_eq!(
            read_checkpoint(&c.checkpoint_dir(), "log").unwrap(),
            Some(cp)
        );
        assert_eq!(read_checkpoint(&c.checkpoint_dir(), "kafka").unwrap(), None);
        j.release(end);
        drop(j);
        // Every closed segment is gone; remove the rest too (as if all were passed).
        for (_, p) in list_segments(&c.journal_dir()).unwrap() {
            fs::remove_file(p).unwrap();
        }
        let (mut j, _) = Journal::open(&c).unwrap();
        assert_eq!(j.end(), end);
        assert_eq!(j.append(b"x").unwrap(), 5);
        let e2 = j.commit().unwrap();
        let got = read_all(&c, end, e2);
        assert_eq!(payloads(&got), ["x"]);
    }
}
