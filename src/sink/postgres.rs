//! The PostgreSQL downstream: writes events into one table, deduplicated by
//! `event_id`, with the commit as the acknowledgement.
//!
//! [`PgSink::deliver`] is blocking code run on the sink's own thread. It
//! splits the events into batches of `PG_BATCH_SIZE`; each batch is one
//! transaction: binary `COPY` into a per-connection `TEMP` staging table,
//! then `INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING` into the table
//! (with `PG_COPY=false`: multi-row `INSERT … ON CONFLICT`, split into
//! statements under PostgreSQL's 65,535-parameter limit). Rows staged minus
//! rows inserted are the duplicates (events the table already had: a replay
//! after a crash, or the same event twice).
//!
//! A batch the server refuses because of its data (SQLSTATE classes 22, 23
//! and 54: a value `jsonb` refuses, a constraint an operator added, a value
//! too large) is bisected until the offending events are alone; those go to
//! the dead-letter file (`PG_DEAD_LETTER`, fsynced before `deliver` returns)
//! with the server's error, and the rest commit. Events without a valid
//! `event_id` or time never reach the server ([`row::Row::parse`]). Every
//! other failure is returned: a lost connection ([`PgError::is_connection`])
//! or a refusal that is about the database, not the events (missing table,
//! permissions, disk full), which bisecting would only turn into dead
//! letters. The caller (the sink runner) waits and delivers the same events
//! again; what already committed comes back as duplicates.
//!
//! A dead-letter line is `{"dead_lettered_at":"<RFC 3339>","table":"…",
//! "error":"<the server's message with its SQLSTATE, or why the event was
//! not readable>","event":"<the event line, as a JSON string>"}`. A batch
//! delivered again after an error may dead-letter the same event again.
//!
//! No connection is made by [`PgSink::new`]: the first `deliver` connects,
//! creates the table when `PG_CREATE_TABLE=true` (the statements of
//! `deploy/init.sql`, compiled in) and the staging table; a broken
//! connection is dropped and made again by the next `deliver`.
//!
//! Counting: events written, duplicates and dead letters are returned in
//! [`Delivered`], failures as [`PgError::kind`], for the runner to count (it
//! also times each `deliver`, which the runner sizes to `PG_BATCH_SIZE`:
//! one transaction).

pub mod row;
#[cfg(test)]
pub mod testdb;
#[cfg(test)]
mod tests;

use crate::metrics::labels::SinkFailure;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::config::SslMode;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};
use row::Row;
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// The schema, shipped as `deploy/init.sql`; run with the configured table
/// name in place of `events_json`.
pub const INIT_SQL: &str = include_str!("../../deploy/init.sql");
/// The table name `deploy/init.sql` uses (and `PG_TABLE`'s default).
pub const DEFAULT_TABLE: &str = "events_json";
/// The longest `PG_TABLE`: index names append up to 12 bytes and PostgreSQL
/// truncates identifiers at 63.
pub const MAX_TABLE_LEN: usize = 51;
/// PostgreSQL's limit on bind parameters in one statement.
pub const MAX_PARAMS: usize = 65_535;
/// Columns bound per event (event_id, ts, payload).
const COLUMNS: usize = 3;
/// The per-connection staging table of the COPY path.
const STAGE: &str = "trackgate_stage";
/// `connect_timeout` when `PG_DSN` sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `tcp_user_timeout` when `PG_DSN` sets none: a server that stops
/// acknowledging (a dead host, a cut network) breaks the connection after
/// this instead of leaving `deliver` blocked.
const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

pub use super::Delivered;

/// The PostgreSQL sink's settings (`PG_*`).
#[derive(Clone)]
pub struct PgConfig {
    /// `PG_DSN`: a libpq-style key/value string or `postgres://` URL. May
    /// hold a password: never printed.
    pub dsn: String,
    /// `PG_TABLE`, checked by [`check_table`].
    pub table: String,
    /// `PG_BATCH_SIZE`: events per transaction.
    pub batch_size: usize,
    /// `PG_FLUSH_MS`: how long the runner lets a partial batch wait.
    pub flush_interval: Duration,
    /// `PG_COPY`: binary COPY through a staging table (else multi-row INSERT).
    pub copy: bool,
    /// `PG_CREATE_TABLE`: create the table and its indexes at connect.
    pub create_table: bool,
    /// `PG_DEAD_LETTER`: the NDJSON file poison events are appended to.
    pub dead_letter: PathBuf,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("dsn", &"<not shown>")
            .field("table", &self.table)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("copy", &self.copy)
            .field("create_table", &self.create_table)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

/// Checks a `PG_TABLE` value: an unqualified name of lowercase ASCII letters,
/// digits and `_`, not starting with a digit, at most [`MAX_TABLE_LEN`]
/// bytes (so it means the same quoted or not, and index names derived from
/// it fit). Returns what is expected when it is not one.
pub fn check_table(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TABLE_LEN
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(
            "a table name of lowercase letters, digits and _ (not starting with a digit), \
             at most 51 bytes, without a schema (set search_path in PG_DSN's options instead)",
        )
    }
}

/// Parses `PG_DSN`. The error names what is wrong without repeating the DSN
/// (it may hold a password).
pub fn parse_dsn(dsn: &str) -> Result<postgres::Config, String> {
    if dsn.trim().is_empty() {
        return Err(
            "a connection string, e.g. host=db.internal user=trackgate dbname=analytics \
                    or postgres://trackgate@db.internal/analytics"
                .into(),
        );
    }
    let cfg: postgres::Config = dsn.parse().map_err(|e| {
        format!("a libpq key/value string or postgres:// URL (it does not parse: {e})")
    })?;
    if cfg.get_ssl_mode() == SslMode::Require {
        return Err(
            "sslmode=disable or prefer: TLS to PostgreSQL is not in this build \
                    (reach the server over a unix socket, a private network or a TLS tunnel)"
                .into(),
        );
    }
    Ok(cfg)
}

/// The schema statements for `table`: [`INIT_SQL`] with every identifier
/// that starts with `events_json` renamed and quoted.
pub fn schema_sql(table: &str) -> String {
    let src = INIT_SQL;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = String::with_capacity(src.len() + 64);
    let mut i = 0;
    while let Some(pos) = src[i..].find(DEFAULT_TABLE) {
        let start = i + pos;
        let boundary = start == 0 || !is_ident(src.as_bytes()[start - 1]);
        let mut end = start + DEFAULT_TABLE.len();
        if !boundary {
            out.push_str(&src[i..end]);
            i = end;
            continue;
        }
        while end < src.len() && is_ident(src.as_bytes()[end]) {
            end += 1;
        }
        out.push_str(&src[i..start]);
        out.push('"');
        out.push_str(table);
        out.push_str(&src[start + DEFAULT_TABLE.len()..end]);
        out.push('"');
        i = end;
    }
    out.push_str(&src[i..]);
    out
}

/// Why the PostgreSQL sink could not deliver. `Display` is the operator's
/// message.
#[derive(Debug)]
pub enum PgError {
    /// A setting is unusable.
    Config { var: &'static str, expected: String },
    /// Connecting failed (the server is down or unreachable, or refuses us).
    Connect {
        target: String,
        source: postgres::Error,
    },
    /// The connection broke during a batch; nothing of that batch committed.
    ConnectionLost {
        target: String,
        source: postgres::Error,
    },
    /// The server refused for a reason that is not about the events.
    Refused {
        target: String,
        doing: &'static str,
        source: postgres::Error,
    },
    /// Appending to the dead-letter file failed.
    DeadLetter {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl PgError {
    /// The failure kind for `sink_failures_total{sink="postgres",kind}`.
    pub fn kind(&self) -> SinkFailure {
        match self {
            PgError::Config { .. } => SinkFailure::Open,
            PgError::Connect { .. } | PgError::ConnectionLost { .. } => SinkFailure::Connect,
            PgError::Refused { .. } | PgError::DeadLetter { .. } => SinkFailure::Write,
        }
    }

    /// Whether the server could not be reached or the connection broke (the
    /// next `deliver` reconnects).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            PgError::Connect { .. } | PgError::ConnectionLost { .. }
        )
    }

    /// The SQLSTATE the server answered with, if it answered.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Connect { source, .. }
            | PgError::ConnectionLost { source, .. }
            | PgError::Refused { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// The server's message (with its SQLSTATE) or the client's.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str("; ");
                s.push_str(d);
            }
            s
        }
        None => e.to_string(),
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Config { var, expected } => {
                write!(f, "{var} is not usable: expected {expected}")
            }
            PgError::Connect { target, source } => write!(
                f,
                "cannot connect to PostgreSQL at {target}: {}; check PG_DSN and that the server is up \
                 (events wait in the journal and are retried)",
                describe(source)
            ),
            PgError::ConnectionLost { target, source } => write!(
                f,
                "the connection to PostgreSQL at {target} broke: {}; the batch did not commit and is retried",
                describe(source)
            ),
            PgError::Refused { target, doing, source } => write!(
                f,
                "PostgreSQL at {target} refused {doing}: {}; fix the database (PG_TABLE, the user's \
                 privileges, disk space; PG_CREATE_TABLE=false needs deploy/init.sql run first): \
                 the batch is retried",
                describe(source)
            ),
            PgError::DeadLetter { path, source } => write!(
                f,
                "cannot append poison events to the dead-letter file {} (PG_DEAD_LETTER): {source}; \
                 the batch is retried",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Connect { source, .. }
            | PgError::ConnectionLost { source, .. }
            | PgError::Refused { source, .. } => Some(source),
            PgError::DeadLetter { source, .. } => Some(source),
            PgError::Config { .. } => None,
        }
    }
}

/// How one batch attempt failed.
enum BatchError {
    /// The server refused the data: bisect.
    Data(postgres::Error),
    /// Anything else: give up on this `deliver`.
    Fatal(PgError),
}

/// An event that goes to the dead-letter file, and why.
struct Dead<'a> {
    event: &'a [u8],
    error: String,
}

/// One PostgreSQL connection (made lazily), owned by the sink's thread.
pub struct PgSink {
    cfg: PgConfig,
    conn: postgres::Config,
    /// `host:port/dbname as user`, for messages (never the password).
    target: String,
    client: Option<Client>,
    schema_sql: String,
    copy_sql: String,
    insert_from_stage: String,
    insert_head: String,
}

impl fmt::Debug for PgSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSink")
            .field("cfg", &self.cfg)
            .field("target", &self.target)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl PgSink {
    /// Checks the settings and prepares the statements; does not connect.
    pub fn new(cfg: PgConfig) -> Result<PgSink, PgError> {
        check_table(&cfg.table).map_err(|e| PgError::Config {
            var: "PG_TABLE",
            expected: format!("{e} (given {:?})", cfg.table),
        })?;
        if cfg.batch_size == 0 {
            return Err(PgError::Config {
                var: "PG_BATCH_SIZE",
                expected: "a count of events, at least 1".into(),
            });
        }
        if cfg.dead_letter.as_os_str().is_empty() {
            return Err(PgError::Config {
                var: "PG_DEAD_LETTER",
                expected: "a file path for events PostgreSQL refuses".into(),
            });
        }
        let mut conn = parse_dsn(&cfg.dsn).map_err(|expected| PgError::Config {
            var: "PG_DSN",
            expected,
        })?;
        if conn.get_connect_timeout().is_none() {
            conn.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if conn.get_tcp_user_timeout().is_none() {
            conn.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
        }
        if conn.get_application_name().is_none() {
            conn.application_name("trackgate");
        }
        let target = describe_target(&conn);
        let t = &cfg.table;
        Ok(PgSink {
            schema_sql: schema_sql(t),
            copy_sql: format!("COPY {STAGE} (event_id, ts, payload) FROM STDIN (FORMAT binary)"),
            insert_from_stage: format!(
                "INSERT INTO \"{t}\" (event_id, ts, payload) SELECT event_id, ts, payload FROM {STAGE} \
                 ON CONFLICT (event_id) DO NOTHING"
            ),
            insert_head: format!("INSERT INTO \"{t}\" (event_id, ts, payload) VALUES "),
            cfg,
            conn,
            target,
            client: None,
        })
    }

    /// The settings this sink runs with (the runner reads batch size and
    /// flush interval).
    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }

    /// Writes `events` (one event's JSON line each, without the newline) and
    /// returns when every one is committed, was already in the table, or is
    /// in the fsynced dead-letter file. On `Err` the caller delivers the same
    /// events again later.
    pub fn deliver(&mut self, events: &[&[u8]]) -> Result<Delivered, PgError> {
        let mut done = Delivered::default();
        let mut dead = Vec::new();
        let mut rows = Vec::with_capacity(events.len());
        for &event in events {
            match Row::parse(event) {
                Ok(row) => rows.push(row),
                Err(error) => dead.push(Dead { event, error }),
            }
        }
        for batch in rows.chunks(self.cfg.batch_size) {
            self.write_bisecting(batch, &mut done, &mut dead)?;
        }
        if !dead.is_empty() {
            self.append_dead_letters(&dead)?;
            done.dead_lettered = dead.len() as u64;
        }
        Ok(done)
    }

    /// Writes `rows` in one transaction; when the server refuses their data,
    /// writes each half the same way, down to single events, which are dead.
    fn write_bisecting<'a>(
        &mut self,
        rows: &[Row<'a>],
        done: &mut Delivered,
        dead: &mut Vec<Dead<'a>>,
    ) -> Result<(), PgError> {
        match self.write_batch(rows) {
            Ok((written, duplicates)) => {
                done.written += written;
                done.duplicates += duplicates;
                Ok(())
            }
            Err(BatchError::Data(e)) if rows.len() == 1 => {
                dead.push(Dead {
                    event: rows[0].payload.0,
                    error: describe(&e),
                });
                Ok(())
            }
            Err(BatchError::Data(_)) => {
                let (a, b) = rows.split_at(rows.len() / 2);
                self.write_bisecting(a, done, dead)?;
                self.write_bisecting(b, done, dead)
            }
            Err(BatchError::Fatal(e)) => {
                if e.is_connection() || self.client.as_ref().is_some_and(Client::is_closed) {
                    self.client = None;
                }
                Err(e)
            }
        }
    }

    /// One transaction: returns (rows inserted, rows that were duplicates).
    fn write_batch(&mut self, rows: &[Row<'_>]) -> Result<(u64, u64), BatchError> {
        let target = self.target.clone();
        let fail = |e: postgres::Error, doing: &'static str| classify(e, doing, &target);
        let copy = self.cfg.copy;
        let (copy_sql, from_stage, insert_head) =
            (&self.copy_sql, &self.insert_from_stage, &self.insert_head);
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => connect(
                &self.conn,
                &self.target,
                self.cfg.create_table.then_some(self.schema_sql.as_str()),
            )
            .map_err(BatchError::Fatal)?,
        };
        let client = self.client.insert(client);
        let mut tx = client
            .transaction()
            .map_err(|e| fail(e, "to begin a transaction"))?;
        let inserted = if copy {
            let writer = tx
                .copy_in(copy_sql.as_str())
                .map_err(|e| fail(e, "COPY into the staging table"))?;
            let mut writer =
                BinaryCopyInWriter::new(writer, &[Type::UUID, Type::TIMESTAMPTZ, Type::JSONB]);
            for r in rows {
                writer
                    .write(&[&r.event_id, &r.ts, &r.payload])
                    .map_err(|e| fail(e, "COPY into the staging table"))?;
            }
            writer
                .finish()
                .map_err(|e| fail(e, "COPY into the staging table"))?;
            tx.execute(from_stage.as_str(), &[])
                .map_err(|e| fail(e, "INSERT … ON CONFLICT into the table"))?
        } else {
            let mut inserted = 0;
            for chunk in rows.chunks(MAX_PARAMS / COLUMNS) {
                let sql = insert_values_sql(insert_head, chunk.len());
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    Vec::with_capacity(chunk.len() * COLUMNS);
                for r in chunk {
                    params.push(&r.event_id);
                    params.push(&r.ts);
                    params.push(&r.payload);
                }
                inserted += tx
                    .execute(sql.as_str(), &params)
                    .map_err(|e| fail(e, "INSERT … ON CONFLICT into the table"))?;
            }
            inserted
        };
        tx.commit().map_err(|e| fail(e, "COMMIT"))?;
        let staged = rows.len() as u64;
        Ok((inserted, staged.saturating_sub(inserted)))
    }

    /// Appends one NDJSON line per dead event and fsyncs the file.
    fn append_dead_letters(&self, dead: &[Dead<'_>]) -> Result<(), PgError> {
        let path = &self.cfg.dead_letter;
        let fail = |source| PgError::DeadLetter {
            path: path.clone(),
            source,
        };
        let mut out = Vec::new();
        let now = crate::clock::unix_millis();
        for d in dead {
            out.extend_from_slice(b"{\"dead_lettered_at\":\"");
            crate::clock::write_rfc3339_millis(&mut out, now);
            out.extend_from_slice(b"\",\"table\":");
            crate::track::json::write_str(&mut out, self.cfg.table.as_bytes());
            out.extend_from_slice(b",\"error\":");
            crate::track::json::write_str(&mut out, d.error.as_bytes());
            out.extend_from_slice(b",\"event\":");
            crate::track::json::write_str(&mut out, d.event);
            out.extend_from_slice(b"}\n");
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        file.write_all(&out).map_err(fail)?;
        file.sync_data().map_err(fail)
    }
}

/// `INSERT … VALUES ($1,$2,$3),… ON CONFLICT (event_id) DO NOTHING` for `n` rows.
fn insert_values_sql(head: &str, n: usize) -> String {
    let mut sql = String::with_capacity(head.len() + n * 24 + 40);
    sql.push_str(head);
    for i in 0..n {
        let p = i * COLUMNS;
        if i > 0 {
            sql.push(',');
        }
        // Writing to a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut sql, format_args!("(${},${},${})", p + 1, p + 2, p + 3));
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
    sql
}

/// Connects and prepares the session: the schema (when asked) and the
/// staging table.
fn connect(conn: &postgres::Config, target: &str, schema: Option<&str>) -> Result<Client, PgError> {
    let mut client = conn.connect(NoTls).map_err(|source| PgError::Connect {
        target: target.to_string(),
        source,
    })?;
    let fatal = |e: postgres::Error, doing| match classify(e, doing, target) {
        BatchError::Fatal(e) => e,
        BatchError::Data(source) => PgError::Refused {
            target: target.to_string(),
            doing,
            source,
        },
    };
    if let Some(sql) = schema {
        client
            .batch_execute(sql)
            .map_err(|e| fatal(e, "to create the table (PG_CREATE_TABLE=true)"))?;
    }
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {STAGE} \
             (event_id uuid NOT NULL, ts timestamptz NOT NULL, payload jsonb NOT NULL) \
             ON COMMIT DELETE ROWS"
        ))
        .map_err(|e| fatal(e, "to create the staging table (needs TEMPORARY privilege)"))?;
    Ok(client)
}

/// Sorts a failed statement: the events' fault (bisect), the connection's,
/// or the database's.
fn classify(e: postgres::Error, doing: &'static str, target: &str) -> BatchError {
    let target = target.to_string();
    let Some(code) = e.code().map(|c| c.code().to_string()) else {
        // No SQLSTATE: I/O, a closed connection, a protocol error.
        return BatchError::Fatal(PgError::ConnectionLost { target, source: e });
    };
    if e.is_closed()
        || code.starts_with("08")
        || matches!(code.as_str(), "57P01" | "57P02" | "57P03")
    {
        BatchError::Fatal(PgError::ConnectionLost { target, source: e })
    } else if code.starts_with("22") || code.starts_with("23") || code.starts_with("54") {
        BatchError::Data(e)
    } else {
        BatchError::Fatal(PgError::Refused {
            target,
            doing,
            source: e,
        })
    }
}

/// `host:port/dbname as user` (first host), for operator messages.
fn describe_target(c: &postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        c.get_dbname().unwrap_or("(default database)"),
        c.get_user().unwrap_or("(default user)")
    )
}
