//! Configuration: every setting comes from the environment, with GoTrack's
//! variable names kept so its users can switch.
//!
//! [`VARS`] is the one list of variables, defaults and meanings: `--help`
//! prints it and the README's table is checked against it. A bad value never
//! falls back to a default (GoTrack did that silently): [`Config::from_lookup`]
//! returns a [`ConfigError`] naming the variable, the value given and the form
//! expected, and the binary exits with code 2.

use crate::logging::{Format as LogFormat, Level as LogLevel};
pub use crate::sink::log::{Fsync, LogTarget};
pub use crate::sink::{AckMode, Output};
use crate::track::client_ip::TrustedProxies;
use crate::track::ipmode::{derive_ip_hash_secret, IpMode};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// One environment variable: name, default (empty = unset) and meaning.
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

const fn v(name: &'static str, default: &'static str, help: &'static str) -> Var {
    Var {
        name,
        default,
        help,
    }
}

/// Every variable trackgate reads, in the order `--help` lists them.
#[rustfmt::skip]
pub const VARS: &[Var] = &[
    v("SERVER_ADDR", ":19890", "listen address; \":PORT\" means every interface (IPv6 and IPv4)"),
    v("FORWARD_DESTINATION", "", "origin, http://host:port[/base] (required for serve unless TEST_MODE)"),
    v("PRESERVE_HOST", "true", "send the client's Host to the origin (false: the origin's host)"),
    v("HMAC_SECRET", "", "secret for tg1 tokens, at least 16 bytes (required for serve)"),
    v("HMAC_SECRET_PREVIOUS", "", "previous secret, still accepted when verifying (rotation)"),
    v("TOKEN_TTL_S", "1800", "lifetime of a tg1 token in seconds"),
    v("OUTPUTS", "log", "comma list of sinks: log, kafka, postgres"),
    v("LOG_PATH", "./events.ndjson", "NDJSON event file, or \"stdout\""),
    v("LOG_ROTATE_MB", "100", "rotate the event file at this size (0 = never)"),
    v("LOG_BACKUPS", "10", "rotated files kept (events.ndjson.1 ...)"),
    v("LOG_MAX_AGE_DAYS", "0", "delete rotated files older than this (0 = off)"),
    v("LOG_FSYNC", "interval", "interval | always | never"),
    v("BATCH_SIZE", "100", "events buffered before the log sink writes"),
    v("FLUSH_INTERVAL_MS", "250", "the log sink writes (and fsyncs, with interval) at least this often"),
    v("QUEUE_CAPACITY", "65536", "batches each core's journal queue (and each sink's queue) holds before requests are refused"),
    v("DATA_DIR", "./data", "directory of the journal, the sinks' checkpoints and the LOCK file"),
    v("JOURNAL_MAX_MB", "1024", "most disk the journal may use; when full, collect answers 503"),
    v("JOURNAL_FSYNC_MS", "5", "at most one journal fsync per this many ms; batches queued meanwhile share it (0: no wait)"),
    v("ACK_MODE", "durable", "durable: collect's 202 waits for the journal fsync | queued: answer at enqueue"),
    v("PG_DSN", "", "PostgreSQL connection string, key=value or postgres:// URL (needed with OUTPUTS=postgres)"),
    v("PG_TABLE", "events_json", "table the postgres sink writes (schema: deploy/init.sql)"),
    v("PG_BATCH_SIZE", "500", "events per PostgreSQL transaction"),
    v("PG_FLUSH_MS", "500", "the postgres sink writes a partial batch at least this often"),
    v("PG_COPY", "true", "binary COPY through a staging table (false: multi-row INSERT)"),
    v("PG_CREATE_TABLE", "true", "create the table and its indexes at connect (idempotent)"),
    v("PG_DEAD_LETTER", "./data/postgres.dead.ndjson", "NDJSON file for events PostgreSQL refuses, each with the error"),
    v("KAFKA_BROKERS", "", "Kafka bootstrap servers, host:port comma list (required with OUTPUTS=kafka)"),
    v("KAFKA_TOPIC", "gotrack.events", "topic the Kafka sink produces to"),
    v("KAFKA_ACKS", "all", "all | 1: replicas that must have a record before its delivery report (0 refused)"),
    v("KAFKA_COMPRESSION", "none", "none | gzip | snappy | lz4 | zstd"),
    v("KAFKA_IDEMPOTENT", "true", "idempotent producer (no duplicates from librdkafka's own retries; needs KAFKA_ACKS=all)"),
    v("KAFKA_SASL_MECHANISM", "", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (unset: no SASL)"),
    v("KAFKA_SASL_USER", "", "SASL user name"),
    v("KAFKA_SASL_PASSWORD", "", "SASL password (never printed)"),
    v("KAFKA_TLS_CA", "", "PEM file of CAs signing the brokers' certificates (enables TLS)"),
    v("KAFKA_TLS_SKIP_VERIFY", "false", "TLS without certificate chain or host name checks (logged loudly; enables TLS)"),
    v("KAFKA_DEAD_LETTER", "./data/kafka.dead.ndjson", "NDJSON file (fsynced) for events the Kafka brokers refuse for good (too large...), each with the error"),
    v("KAFKA_CONFIG", "", "other librdkafka properties, k=v comma list, e.g. linger.ms=20,batch.num.messages=10000"),
    v("CORES", "", "number of cores to run on: the first N CPUs of the affinity mask (default all)"),
    v("TRUST_PROXY", "false", "take the client IP from X-Forwarded-For when the peer is trusted"),
    v("TRUSTED_PROXIES", "", "CIDR list of trusted proxies (default with TRUST_PROXY: loopback and private ranges)"),
    v("MAX_BODY_BYTES", "1048576", "largest collect body accepted (413 above)"),
    v("MAX_BATCH_EVENTS", "100", "most events in one collect body (413 above)"),
    v("TRACK_PREFIX", "", "path prefix for every tracking endpoint, e.g. /_t"),
    v("INJECT", "on", "inject the tracking snippet into HTML pages: on | off"),
    v("INJECT_TAIL_BYTES", "65536", "identity HTML: bytes held back to find the last </body>"),
    v("INJECT_MAX_BYTES", "4194304", "compressed HTML: most decoded bytes per page (larger pages pass through)"),
    v("INJECT_CORE_BUDGET_MB", "64", "compressed HTML: memory per core for all pages being rewritten at once"),
    v("INJECT_GZIP_LEVEL", "6", "re-encoding level for gzip/deflate pages, 1 to 12"),
    v("CORS_ORIGINS", "", "comma list of origins allowed to call the tracking endpoints (* for any)"),
    v("COOKIE_NAME", "_tg_sid", "session cookie name"),
    v("COOKIE_DOMAIN", "", "session cookie Domain attribute"),
    v("COOKIE_MODE", "on", "on | off: issue a session cookie from /px.gif"),
    v("IP_MODE", "full", "full | truncate | hash | none: what the event's ip field holds"),
    v("IP_HASH_SECRET", "", "key of the daily ip_hash (default derived from HMAC_SECRET)"),
    v("TEST_MODE", "false", "emit 5 sample events about a second after start"),
    v("METRICS_ENABLED", "false", "serve Prometheus metrics on METRICS_ADDR"),
    v("METRICS_ADDR", "127.0.0.1:9090", "metrics listen address (never the public port)"),
    v("LOG_LEVEL", "info", "error | warn | info | debug"),
    v("LOG_FORMAT", "json", "json | text (operator logs on stderr)"),
    v("UPSTREAM_CONNECT_TIMEOUT_MS", "3000", "origin connect timeout (502 after)"),
    v("UPSTREAM_TIMEOUT_S", "30", "wait for the origin's response head and between body reads (504 after)"),
    v("UPSTREAM_IDLE_TIMEOUT_S", "30", "close pooled origin connections idle this long"),
    v("UPSTREAM_POOL_SIZE", "64", "idle origin connections kept per core"),
    v("UPSTREAM_DNS_TTL_S", "30", "re-resolve the origin's host name this often"),
    v("HEADER_TIMEOUT_S", "10", "deadline for a client's whole request head"),
    v("IDLE_TIMEOUT_S", "60", "close idle keep-alive client connections after this; also bounds each read of a request body and each write to a client"),
    v("BODY_TIMEOUT_S", "20", "a request body gets this long, plus one second per MIN_BODY_RATE_BPS bytes received, before the connection is cut"),
    v("MIN_BODY_RATE_BPS", "500", "least average rate of a request body after BODY_TIMEOUT_S, bytes per second (0 = no rate rule)"),
    v("MAX_CONNECTIONS", "10000", "client connections each core keeps open; a connection past it gets 503 and is closed"),
    v("RATE_LIMIT_RPS", "20", "tracking endpoints: requests per second per client IP bucket (/24, /48) on each core (0 = no limit)"),
    v("RATE_LIMIT_BURST", "100", "tracking endpoints: requests a client IP bucket may make at once on each core"),
    v("DESYNC_MODE", "defensive", "strictest: refuse every ambiguous request (400); defensive: forward it normalised and close the origin connection after it"),
    v("TUNNEL_IDLE_TIMEOUT_S", "300", "close an upgraded (WebSocket) connection when no byte moved in one direction for this long"),
    v("SHUTDOWN_TIMEOUT_S", "10", "on SIGTERM: deadline for requests in flight and for sinks to drain"),
    v("ENABLE_HTTPS", "false", "TLS termination (not in this build: arrives with the TLS issue)"),
    v("WORKER_CONCURRENCY", "", "GoTrack's setting, ignored with a warning: use CORES"),
];

/// Which command reads the configuration (they differ in what is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Demo,
}

/// A configuration error: which variable, what was given, what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    /// The value as given, or a description for secrets (never the secret).
    pub given: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} is not valid: expected {}",
            self.var, self.given, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// The origin named by `FORWARD_DESTINATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Host name or IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// Base path prefixed to every forwarded target, without a trailing `/`
    /// (empty when none).
    pub base_path: String,
    /// The value for a `Host` header naming the origin (`host` or `host:port`).
    pub authority: String,
}

/// The whole configuration, immutable once built and shared read-only.
pub struct Config {
    pub server_addr: SocketAddr,
    /// Bind `[::]` with IPv4 too; falls back to `0.0.0.0` when IPv6 is off.
    pub server_addr_any: bool,
    pub destination: Option<Destination>,
    pub preserve_host: bool,
    pub hmac_secret: Vec<u8>,
    pub hmac_secret_previous: Option<Vec<u8>>,
    /// True when the demo generated the secret (never printed).
    pub hmac_secret_generated: bool,
    pub token_ttl_s: u64,
    pub outputs: Vec<Output>,
    pub log_path: LogTarget,
    pub log_rotate_bytes: u64,
    pub log_backups: u32,
    pub log_max_age_days: u32,
    pub log_fsync: Fsync,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub queue_capacity: usize,
    /// `DATA_DIR`: the journal, checkpoints and lock file.
    pub data_dir: PathBuf,
    /// `JOURNAL_MAX_MB` in bytes.
    pub journal_max_bytes: u64,
    /// `JOURNAL_FSYNC_MS`.
    pub journal_fsync: Duration,
    pub ack_mode: AckMode,
    /// The `PG_*` settings of the postgres sink (`dsn` empty when unset).
    pub pg: crate::sink::postgres::PgConfig,
    /// The Kafka sink's settings (`KAFKA_*`), checked even when it is not enabled.
    pub kafka: crate::sink::kafka::KafkaConfig,
    pub cores: Option<usize>,
    pub trusted_proxies: TrustedProxies,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    /// Normalised: empty, or `/something` without a trailing slash.
    pub track_prefix: String,
    pub cors_origins: Vec<String>,
    /// `INJECT`: rewrite HTML pages at all.
    pub inject: bool,
    pub inject_tail_bytes: usize,
    pub inject_max_bytes: usize,
    /// `INJECT_CORE_BUDGET_MB` in bytes.
    pub inject_core_budget: usize,
    pub inject_gzip_level: i32,
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub cookie_mode: bool,
    pub ip_mode: IpMode,
    pub ip_hash_secret: Vec<u8>,
    pub test_mode: bool,
    pub metrics_enabled: bool,
    pub metrics_addr: SocketAddr,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub upstream_pool_size: usize,
    pub upstream_dns_ttl: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub tunnel_idle_timeout: Duration,
    /// `BODY_TIMEOUT_S` and `MIN_BODY_RATE_BPS` (0: no rate rule).
    pub body_timeout: Duration,
    pub min_body_rate: u64,
    /// `MAX_CONNECTIONS`, per core.
    pub max_connections: usize,
    /// `RATE_LIMIT_RPS` (0: no limit) and `RATE_LIMIT_BURST`.
    pub rate_limit_rps: u32,
    pub rate_limit_burst: u32,
    /// `DESYNC_MODE`.
    pub desync_mode: crate::http::desync::DesyncMode,
    pub shutdown_timeout: Duration,
    /// Warnings to log once logging is set up (e.g. WORKER_CONCURRENCY).
    pub warnings: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets are never printed, not even in debug output.
        f.debug_struct("Config")
            .field("server_addr", &self.server_addr)
            .field("destination", &self.destination)
            .field("outputs", &self.outputs)
            .field("log_path", &self.log_path)
            .field("cores", &self.cores)
            .field("hmac_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

const MIN_SECRET_BYTES: usize = 16;
/// The longest timeout or interval accepted: one day.
const MAX_SECS: u64 = 86_400;

/// Reads variables through `get` (the environment in production, a map in
/// tests) and applies defaults.
struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    /// The value, or the default from [`VARS`]; `None` when both are empty.
    fn raw(&self, name: &'static str) -> Option<String> {
        if let Some(val) = (self.get)(name) {
            let t = val.trim().to_string();
            if !t.is_empty() {
                return Some(t);
            }
        }
        VARS.iter()
            .find(|var| var.name == name)
            .map(|var| var.default.to_string())
            .filter(|d| !d.is_empty())
    }

    fn string(&self, name: &'static str) -> String {
        self.raw(name).unwrap_or_default()
    }

    fn parse<T: std::str::FromStr + PartialOrd + Copy>(
        &self,
        name: &'static str,
        expected: &str,
        min: Option<T>,
    ) -> Result<T, ConfigError> {
        let raw = self.string(name);
        match raw.parse::<T>() {
            Ok(val) if min.is_none_or(|m| val >= m) => Ok(val),
            _ => Err(err(name, &raw, expected)),
        }
    }

    fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        let raw = self.string(name);
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(err(name, &raw, "true or false")),
        }
    }

    /// A duration in whole seconds, 1 s to one day (deadlines are added to
    /// clock readings: no value may overflow them).
    fn secs(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let v = self.parse::<u64>(name, "whole seconds, from 1 to 86400", Some(1))?;
        if v > MAX_SECS {
            return Err(err(
                name,
                &self.string(name),
                "whole seconds, from 1 to 86400",
            ));
        }
        Ok(Duration::from_secs(v))
    }

    /// A duration in milliseconds, 1 ms to one day.
    fn millis(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let v = self.parse::<u64>(name, "milliseconds, from 1 to 86400000", Some(1))?;
        if v > MAX_SECS * 1000 {
            return Err(err(
                name,
                &self.string(name),
                "milliseconds, from 1 to 86400000",
            ));
        }
        Ok(Duration::from_millis(v))
    }
}

fn err(var: &'static str, given: &str, expected: &str) -> ConfigError {
    ConfigError {
        var,
        given: format!("{given:?}"),
        expected: expected.to_string(),
    }
}

/// Parses `SERVER_ADDR`: `:PORT`, `HOST:PORT`, `[V6]:PORT`. Returns the
/// address and whether it means "every interface".
pub fn parse_listen_addr(var: &'static str, raw: &str) -> Result<(SocketAddr, bool), ConfigError> {
    let expected = "\":PORT\", \"IP:PORT\" or \"[IPv6]:PORT\"";
    if let Some(port) = raw.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| err(var, raw, expected))?;
        return Ok((
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            true,
        ));
    }
    if let Some((host, port)) = raw.rsplit_once(':') {
        if host == "localhost" {
            let port: u16 = port.parse().map_err(|_| err(var, raw, expected))?;
            return Ok((SocketAddr::from(([127, 0, 0, 1], port)), false));
        }
    }
    raw.parse::<SocketAddr>()
        .map(|a| (a, false))
        .map_err(|_| err(var, raw, expected))
}

/// Parses `FORWARD_DESTINATION` (`http://host[:port][/base]`).
pub fn parse_destination(raw: &str) -> Result<Destination, ConfigError> {
    const VAR: &str = "FORWARD_DESTINATION";
    let expected = "http://host[:port][/base path], e.g. http://127.0.0.1:8080";
    let rest = if let Some(rest) = raw.strip_prefix("http://") {
        rest
    } else if raw.starts_with("https://") {
        return Err(err(
            VAR,
            raw,
            "an http:// origin: https:// destinations are not in this build (they arrive with the TLS issue)",
        ));
    } else {
        return Err(err(VAR, raw, expected));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(err(VAR, raw, "no query or fragment in the destination"));
    }
    if authority.contains('@') || authority.is_empty() {
        return Err(err(VAR, raw, expected));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| err(VAR, raw, expected))?;
        h.parse::<Ipv6Addr>().map_err(|_| err(VAR, raw, expected))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| err(VAR, raw, expected))?,
            None if after.is_empty() => 80,
            None => return Err(err(VAR, raw, expected)),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| err(VAR, raw, expected))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok || port == 0 {
        return Err(err(VAR, raw, expected));
    }
    let base_path = path.trim_end_matches('/').to_string();
    let path_ok = base_path.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
    });
    if !path_ok {
        return Err(err(
            VAR,
            raw,
            "a base path of URL path characters (percent-encode anything else)",
        ));
    }
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == 80 {
        host_part
    } else {
        format!("{host_part}:{port}")
    };
    Ok(Destination {
        host,
        port,
        base_path,
        authority,
    })
}

fn parse_outputs(raw: &str) -> Result<Vec<Output>, ConfigError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let o: Output = part
            .parse()
            .map_err(|_| err("OUTPUTS", raw, "a comma list of log, kafka, postgres"))?;
        if !out.contains(&o) {
            out.push(o);
        }
    }
    if out.is_empty() {
        return Err(err("OUTPUTS", raw, "at least one of log, kafka, postgres"));
    }
    Ok(out)
}

/// The `PG_*` variables. `PG_DSN` is checked when set (it is needed only
/// with `OUTPUTS=postgres`) and never echoed: it may hold a password.
fn parse_pg(r: &Reader<'_>) -> Result<crate::sink::postgres::PgConfig, ConfigError> {
    use crate::sink::postgres::{check_table, parse_dsn, PgConfig};
    let dsn = r.raw("PG_DSN").unwrap_or_default();
    if !dsn.is_empty() {
        parse_dsn(&dsn).map_err(|expected| ConfigError {
            var: "PG_DSN",
            given: format!("<{} bytes, not shown>", dsn.len()),
            expected,
        })?;
    }
    let table = r.string("PG_TABLE");
    check_table(&table).map_err(|expected| err("PG_TABLE", &table, expected))?;
    Ok(PgConfig {
        dsn,
        table,
        batch_size: r.parse("PG_BATCH_SIZE", "a count of events, at least 1", Some(1))?,
        flush_interval: r.millis("PG_FLUSH_MS")?,
        copy: r.bool("PG_COPY")?,
        create_table: r.bool("PG_CREATE_TABLE")?,
        dead_letter: PathBuf::from(r.string("PG_DEAD_LETTER")),
    })
}

fn parse_prefix(raw: &str) -> Result<String, ConfigError> {
    let t = raw.trim_end_matches('/');
    if t.is_empty() {
        return Ok(String::new());
    }
    let ok = t.starts_with('/')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.' | b'~'));
    if !ok {
        return Err(err(
            "TRACK_PREFIX",
            raw,
            "a path starting with / made of letters, digits and / _ - . ~ (e.g. /_t)",
        ));
    }
    Ok(t.to_string())
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(mode: Mode) -> Result<Config, ConfigError> {
        Config::from_lookup(mode, &|k| std::env::var(k).ok())
    }

    /// Reads variables through `get`; applies defaults; validates everything.
    pub fn from_lookup(
        mode: Mode,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let r = Reader { get };
        let mut warnings = Vec::new();

        if r.bool("ENABLE_HTTPS")? {
            return Err(err(
                "ENABLE_HTTPS",
                &r.string("ENABLE_HTTPS"),
                "false: TLS termination is not in this build (it arrives with the TLS issue); terminate TLS in front of trackgate",
            ));
        }
        if let Some(w) = r.raw("WORKER_CONCURRENCY") {
            warnings.push(format!(
                "WORKER_CONCURRENCY={w:?} is GoTrack's setting and is ignored: trackgate runs one thread per core, set CORES instead"
            ));
        }

        let (server_addr, server_addr_any) =
            parse_listen_addr("SERVER_ADDR", &r.string("SERVER_ADDR"))?;
        let test_mode = r.bool("TEST_MODE")?;

        let destination = match r.raw("FORWARD_DESTINATION") {
            Some(raw) => Some(parse_destination(&raw)?),
            None if mode == Mode::Serve && !test_mode => {
                return Err(err(
                    "FORWARD_DESTINATION",
                    "",
                    "the origin to proxy to, e.g. http://127.0.0.1:8080 (required unless TEST_MODE=true)",
                ))
            }
            None => None,
        };

        let (hmac_secret, hmac_secret_generated) = match (get)("HMAC_SECRET") {
            Some(s) if s.len() >= MIN_SECRET_BYTES => (s.into_bytes(), false),
            Some(s) if !s.is_empty() || mode == Mode::Serve => {
                return Err(ConfigError {
                    var: "HMAC_SECRET",
                    given: format!("<{} bytes, not shown>", s.len()),
                    expected: format!(
                        "a secret of at least {MIN_SECRET_BYTES} bytes, e.g. from `openssl rand -hex 32`"
                    ),
                })
            }
            None if mode == Mode::Serve => {
                return Err(ConfigError {
                    var: "HMAC_SECRET",
                    given: "<unset>".into(),
                    expected: format!(
                        "a secret of at least {MIN_SECRET_BYTES} bytes, e.g. from `openssl rand -hex 32`"
                    ),
                })
            }
            _ => {
                let mut buf = [0u8; 32];
                crate::track::ids::os_random(&mut buf).map_err(|e| ConfigError {
                    var: "HMAC_SECRET",
                    given: "<unset>".into(),
                    expected: format!("a secret (generating one failed: {e})"),
                })?;
                (hex(&buf).into_bytes(), true)
            }
        };
        let hmac_secret_previous = match (get)("HMAC_SECRET_PREVIOUS") {
            Some(s) if s.is_empty() => None,
            Some(s) if s.len() >= MIN_SECRET_BYTES => Some(s.into_bytes()),
            Some(s) => {
                return Err(ConfigError {
                    var: "HMAC_SECRET_PREVIOUS",
                    given: format!("<{} bytes, not shown>", s.len()),
                    expected: format!("a secret of at least {MIN_SECRET_BYTES} bytes, or unset"),
                })
            }
            None => None,
        };

        let outputs = parse_outputs(&r.string("OUTPUTS"))?;
        let kafka = crate::sink::kafka::KafkaConfig::from_lookup(&|name| r.raw(name))?;
        if outputs.contains(&Output::Kafka) && kafka.brokers.is_empty() {
            return Err(err(
                "KAFKA_BROKERS",
                "",
                "the Kafka brokers, e.g. kafka-1:9092,kafka-2:9092 (OUTPUTS names kafka)",
            ));
        }
        if outputs.contains(&Output::Postgres)
            && r.raw("PG_DSN").unwrap_or_default().trim().is_empty()
        {
            return Err(err(
                "PG_DSN",
                "",
                "a PostgreSQL connection string, e.g. `host=db user=trackgate dbname=events` or a postgres:// URL (OUTPUTS names postgres)",
            ));
        }
        let log_path = match r.string("LOG_PATH").as_str() {
            "stdout" | "-" => LogTarget::Stdout,
            p => LogTarget::File(PathBuf::from(p)),
        };
        let log_fsync = match r.string("LOG_FSYNC").to_ascii_lowercase().as_str() {
            "interval" => Fsync::Interval,
            "always" => Fsync::Always,
            "never" => Fsync::Never,
            other => return Err(err("LOG_FSYNC", other, "interval, always or never")),
        };
        let ack_mode = match r.string("ACK_MODE").to_ascii_lowercase().as_str() {
            "durable" => AckMode::Durable,
            "queued" => AckMode::Queued,
            other => return Err(err("ACK_MODE", other, "durable or queued")),
        };
        let journal_fsync_ms: u64 =
            r.parse("JOURNAL_FSYNC_MS", "milliseconds (0 = no gathering)", None)?;
        if journal_fsync_ms > 1000 {
            return Err(err(
                "JOURNAL_FSYNC_MS",
                &journal_fsync_ms.to_string(),
                "at most 1000 milliseconds (durable acks wait this long)",
            ));
        }
        let pg = parse_pg(&r)?;
        let cores = match r.raw("CORES") {
            None => None,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => return Err(err("CORES", &raw, "a number of cores, at least 1")),
            },
        };
        let trust_proxy = r.bool("TRUST_PROXY")?;
        let trusted_proxies = if !trust_proxy {
            TrustedProxies::disabled()
        } else {
            match r.raw("TRUSTED_PROXIES") {
                None => TrustedProxies::private_ranges(),
                Some(raw) => TrustedProxies::parse_list(&raw).map_err(|e| {
                    err(
                        "TRUSTED_PROXIES",
                        &raw,
                        &format!("a comma list of CIDRs such as 10.0.0.0/8, ::1/128 ({e})"),
                    )
                })?,
            }
        };

        let cookie_mode = match r.string("COOKIE_MODE").to_ascii_lowercase().as_str() {
            "on" | "true" => true,
            "off" | "false" => false,
            other => return Err(err("COOKIE_MODE", other, "on or off")),
        };
        let cookie_name = r.string("COOKIE_NAME");
        if cookie_name.is_empty()
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(err(
                "COOKIE_NAME",
                &cookie_name,
                "a cookie name of letters, digits, _ - .",
            ));
        }
        let cookie_domain = r.raw("COOKIE_DOMAIN");
        if let Some(d) = &cookie_domain {
            if !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            {
                return Err(err("COOKIE_DOMAIN", d, "a domain name such as example.com"));
            }
        }

        let ip_mode: IpMode = {
            let raw = r.string("IP_MODE");
            raw.parse()
                .map_err(|_| err("IP_MODE", &raw, "full, truncate, hash or none"))?
        };
        let ip_hash_secret = match (get)("IP_HASH_SECRET") {
            Some(s) if !s.is_empty() => s.into_bytes(),
            _ => derive_ip_hash_secret(&hmac_secret),
        };

        let cors_origins = r
            .string("CORS_ORIGINS")
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect();

        let metrics_enabled = r.bool("METRICS_ENABLED")?;
        let (metrics_addr, _) = parse_listen_addr("METRICS_ADDR", &r.string("METRICS_ADDR"))?;
        if metrics_enabled && server_addr.port() == metrics_addr.port() && server_addr.port() != 0 {
            return Err(err(
                "METRICS_ADDR",
                &r.string("METRICS_ADDR"),
                "a port other than SERVER_ADDR's: metrics are never served on the public port",
            ));
        }

        let inject = {
            let raw = r.string("INJECT");
            match raw.to_ascii_lowercase().as_str() {
                "on" => true,
                "off" => false,
                _ => return Err(err("INJECT", &raw, "on or off")),
            }
        };
        let inject_gzip_level: i32 =
            r.parse("INJECT_GZIP_LEVEL", "a level from 1 to 12", Some(1))?;
        if inject_gzip_level > 12 {
            return Err(err(
                "INJECT_GZIP_LEVEL",
                &r.string("INJECT_GZIP_LEVEL"),
                "a level from 1 to 12",
            ));
        }

        let log_level: LogLevel = {
            let raw = r.string("LOG_LEVEL");
            raw.parse()
                .map_err(|_| err("LOG_LEVEL", &raw, "error, warn, info or debug"))?
        };
        let log_format: LogFormat = {
            let raw = r.string("LOG_FORMAT");
            raw.parse()
                .map_err(|_| err("LOG_FORMAT", &raw, "json or text"))?
        };

        Ok(Config {
            server_addr,
            server_addr_any,
            destination,
            preserve_host: r.bool("PRESERVE_HOST")?,
            hmac_secret,
            hmac_secret_previous,
            hmac_secret_generated,
            token_ttl_s: r.secs("TOKEN_TTL_S")?.as_secs(),
            outputs,
            log_path,
            log_rotate_bytes: r
                .parse::<u64>("LOG_ROTATE_MB", "megabytes (0 = never rotate)", None)?
                .saturating_mul(1024 * 1024),
            log_backups: r.parse("LOG_BACKUPS", "a count of files (0 or more)", None)?,
            log_max_age_days: r.parse("LOG_MAX_AGE_DAYS", "days (0 = off)", None)?,
            log_fsync,
            batch_size: r.parse("BATCH_SIZE", "a count of events, at least 1", Some(1))?,
            flush_interval: r.millis("FLUSH_INTERVAL_MS")?,
            queue_capacity: r.parse("QUEUE_CAPACITY", "a count, at least 1", Some(1))?,
            data_dir: PathBuf::from(r.string("DATA_DIR")),
            journal_max_bytes: r
                .parse::<u64>("JOURNAL_MAX_MB", "megabytes, at least 1", Some(1))?
                .saturating_mul(1024 * 1024),
            journal_fsync: Duration::from_millis(journal_fsync_ms),
            ack_mode,
            pg,
            kafka,
            cores,
            trusted_proxies,
            max_body_bytes: r.parse("MAX_BODY_BYTES", "bytes, at least 1", Some(1))?,
            max_batch_events: r.parse("MAX_BATCH_EVENTS", "a count, at least 1", Some(1))?,
            track_prefix: parse_prefix(&r.string("TRACK_PREFIX"))?,
            cors_origins,
            inject,
            inject_tail_bytes: r.parse("INJECT_TAIL_BYTES", "bytes, at least 1", Some(1))?,
            inject_max_bytes: r.parse("INJECT_MAX_BYTES", "bytes, at least 1", Some(1))?,
            inject_core_budget: r
                .parse::<usize>("INJECT_CORE_BUDGET_MB", "megabytes, at least 1", Some(1))?
                .saturating_mul(1024 * 1024),
            inject_gzip_level,
            cookie_name,
            cookie_domain,
            cookie_mode,
            ip_mode,
            ip_hash_secret,
            test_mode,
            metrics_enabled,
            metrics_addr,
            log_level,
            log_format,
            upstream_connect_timeout: r.millis("UPSTREAM_CONNECT_TIMEOUT_MS")?,
            upstream_timeout: r.secs("UPSTREAM_TIMEOUT_S")?,
            upstream_idle_timeout: r.secs("UPSTREAM_IDLE_TIMEOUT_S")?,
            upstream_pool_size: r.parse("UPSTREAM_POOL_SIZE", "a count (0 = no pooling)", None)?,
            upstream_dns_ttl: r.secs("UPSTREAM_DNS_TTL_S")?,
            header_timeout: r.secs("HEADER_TIMEOUT_S")?,
            idle_timeout: r.secs("IDLE_TIMEOUT_S")?,
            tunnel_idle_timeout: r.secs("TUNNEL_IDLE_TIMEOUT_S")?,
            body_timeout: r.secs("BODY_TIMEOUT_S")?,
            min_body_rate: r.parse("MIN_BODY_RATE_BPS", "bytes per second (0 = off)", None)?,
            max_connections: r.parse("MAX_CONNECTIONS", "a count, at least 1", Some(1))?,
            rate_limit_rps: r.parse("RATE_LIMIT_RPS", "requests per second (0 = off)", None)?,
            rate_limit_burst: r.parse("RATE_LIMIT_BURST", "a count, at least 1", Some(1))?,
            desync_mode: {
                let raw = r.string("DESYNC_MODE");
                crate::http::desync::DesyncMode::parse(&raw)
                    .ok_or_else(|| err("DESYNC_MODE", &raw, "strictest or defensive"))?
            },
            shutdown_timeout: r.secs("SHUTDOWN_TIMEOUT_S")?,
            warnings,
        })
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(mode: Mode, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(mode, &move |k| map.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("FORWARD_DESTINATION", "http://127.0.0.1:8080"),
        ("HMAC_SECRET", "0123456789abcdef0123"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = BASE.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn kafka_settings_are_read_and_checked_even_when_kafka_is_off() {
        let c = load(Mode::Serve, BASE).expect("valid");
        assert_eq!(c.kafka, crate::sink::kafka::KafkaConfig::with_brokers(""));
        let c = load(
            Mode::Serve,
            &with(&[
                ("KAFKA_BROKERS", "k1:9092"),
                ("KAFKA_COMPRESSION", "zstd"),
                ("KAFKA_CONFIG", "linger.ms=20"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.kafka.brokers, "k1:9092");
        assert_eq!(c.kafka.compression, crate::sink::kafka::Compression::Zstd);
        assert_eq!(c.kafka.extra, vec![("linger.ms".into(), "20".into())]);
        let e = load(Mode::Serve, &with(&[("KAFKA_ACKS", "0")])).unwrap_err();
        assert_eq!(e.var, "KAFKA_ACKS");
        let e = load(
            Mode::Serve,
            &with(&[("KAFKA_SASL_MECHANISM", "PLAIN"), ("KAFKA_SASL_USER", "u")]),
        )
        .unwrap_err();
        assert_eq!(e.var, "KAFKA_SASL_PASSWORD");
        assert!(!e.to_string().contains("hunter"));
    }

    #[test]
    fn defaults_are_gotracks() {
        let c = load(Mode::Serve, BASE).expect("valid");
        assert_eq!(c.server_addr.port(), 19890);
        assert!(c.server_addr_any);
        assert_eq!(c.outputs, vec![Output::Log]);
        assert_eq!(c.log_path, LogTarget::File("./events.ndjson".into()));
        assert_eq!(c.log_rotate_bytes, 100 * 1024 * 1024);
        assert_eq!(c.log_backups, 10);
        assert_eq!(c.log_fsync, Fsync::Interval);
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.queue_capacity, 65536);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.journal_max_bytes, 1024 * 1024 * 1024);
        assert_eq!(c.journal_fsync, Duration::from_millis(5));
        assert_eq!(c.ack_mode, AckMode::Durable);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.max_batch_events, 100);
        assert_eq!(c.cookie_name, "_tg_sid");
        assert!(c.cookie_mode);
        assert_eq!(c.token_ttl_s, 1800);
        assert_eq!(c.metrics_addr, "127.0.0.1:9090".parse().expect("addr"));
        assert!(!c.metrics_enabled);
        assert!(c.preserve_host);
        assert_eq!(c.track_prefix, "");
        assert!(c.inject);
        assert_eq!(c.inject_tail_bytes, 65536);
        assert_eq!(c.inject_max_bytes, 4 * 1024 * 1024);
        assert_eq!(c.inject_core_budget, 64 * 1024 * 1024);
        assert_eq!(c.inject_gzip_level, 6);
        assert_eq!(c.ip_mode, IpMode::Full);
        assert_eq!(
            c.ip_hash_secret,
            derive_ip_hash_secret(b"0123456789abcdef0123")
        );
    }

    #[test]
    fn postgres_settings() {
        let c = load(Mode::Serve, BASE).expect("valid");
        assert_eq!(c.pg.dsn, "");
        assert_eq!(c.pg.table, "events_json");
        assert_eq!(c.pg.batch_size, 500);
        assert_eq!(c.pg.flush_interval, Duration::from_millis(500));
        assert!(c.pg.copy && c.pg.create_table);
        assert_eq!(
            c.pg.dead_letter,
            PathBuf::from("./data/postgres.dead.ndjson")
        );
        let c = load(
            Mode::Serve,
            &with(&[
                ("PG_DSN", "postgres://tg:s3cret-pw@db.internal/analytics"),
                ("PG_TABLE", "clicks"),
                ("PG_BATCH_SIZE", "2000"),
                ("PG_FLUSH_MS", "50"),
                ("PG_COPY", "false"),
                ("PG_CREATE_TABLE", "off"),
                ("PG_DEAD_LETTER", "/var/lib/trackgate/pg.dead"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.pg.table, "clicks");
        assert_eq!(c.pg.batch_size, 2000);
        assert_eq!(c.pg.flush_interval, Duration::from_millis(50));
        assert!(!c.pg.copy && !c.pg.create_table);
        assert_eq!(
            c.pg.dead_letter,
            PathBuf::from("/var/lib/trackgate/pg.dead")
        );
        assert!(!format!("{:?}", c.pg).contains("s3cret"));
        for (var, val) in [
            ("PG_TABLE", "public.events"),
            ("PG_TABLE", "Events"),
            ("PG_BATCH_SIZE", "0"),
            ("PG_FLUSH_MS", "0"),
            ("PG_COPY", "maybe"),
            ("PG_CREATE_TABLE", "2"),
            ("PG_DSN", "host=db password=s3cret-pw sslmode=require"),
            ("PG_DSN", "postgres://tg:s3cret-pw@db:port/x"),
        ] {
            let e = load(Mode::Serve, &with(&[(var, val)])).unwrap_err();
            assert_eq!(e.var, var, "{val}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn hardening_settings() {
        use crate::http::desync::DesyncMode;
        let c = load(Mode::Serve, BASE).expect("valid");
        assert_eq!(c.desync_mode, DesyncMode::Defensive);
        assert_eq!(c.body_timeout, Duration::from_secs(20));
        assert_eq!(c.min_body_rate, 500);
        assert_eq!(c.max_connections, 10_000);
        assert_eq!((c.rate_limit_rps, c.rate_limit_burst), (20, 100));
        let c = load(
            Mode::Serve,
            &with(&[("DESYNC_MODE", "strictest"), ("RATE_LIMIT_RPS", "0")]),
        )
        .expect("valid");
        assert_eq!(c.desync_mode, DesyncMode::Strictest);
        assert_eq!(c.rate_limit_rps, 0);
        for (var, bad) in [
            ("DESYNC_MODE", "monitor"),
            ("MAX_CONNECTIONS", "0"),
            ("RATE_LIMIT_BURST", "0"),
            ("MIN_BODY_RATE_BPS", "-1"),
            ("BODY_TIMEOUT_S", "0"),
        ] {
            let e = load(Mode::Serve, &with(&[(var, bad)])).expect_err(var);
            assert_eq!(e.var, var);
        }
    }

    #[test]
    fn every_var_has_help_and_unique_name() {
        let mut seen = std::collections::HashSet::new();
        for var in VARS {
            assert!(seen.insert(var.name), "{} listed twice", var.name);
            assert!(!var.help.is_empty());
        }
    }

    #[test]
    fn required_vars_for_serve() {
        let e = load(Mode::Serve, &[("HMAC_SECRET", "0123456789abcdef0123")]).unwrap_err();
        assert_eq!(e.var, "FORWARD_DESTINATION");
        let e = load(Mode::Serve, &[("FORWARD_DESTINATION", "http://a:1")]).unwrap_err();
        assert_eq!(e.var, "HMAC_SECRET");
        // Test mode makes the destination optional.
        let c = load(
            Mode::Serve,
            &[
                ("HMAC_SECRET", "0123456789abcdef0123"),
                ("TEST_MODE", "true"),
            ],
        )
        .expect("test mode");
        assert!(c.destination.is_none());
        // The demo generates a secret.
        let c = load(Mode::Demo, &[]).expect("demo");
        assert!(c.hmac_secret_generated);
        assert_eq!(c.hmac_secret.len(), 64);
    }

    #[test]
    fn short_secret_is_refused_without_echoing_it() {
        let e = load(
            Mode::Serve,
            &[
                ("FORWARD_DESTINATION", "http://a:1"),
                ("HMAC_SECRET", "tooshort"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.var, "HMAC_SECRET");
        assert!(!e.to_string().contains("tooshort"));
        assert!(e.to_string().contains("8 bytes"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, val) in [
            ("SERVER_ADDR", "nonsense"),
            ("LOG_FSYNC", "sometimes"),
            ("ACK_MODE", "later"),
            ("JOURNAL_MAX_MB", "0"),
            ("JOURNAL_FSYNC_MS", "5000"),
            ("CORES", "0"),
            ("CORES", "many"),
            ("BATCH_SIZE", "-1"),
            ("IP_MODE", "scramble"),
            ("COOKIE_MODE", "maybe"),
            ("TRUST_PROXY", "perhaps"),
            ("OUTPUTS", "log,carrier-pigeon"),
            ("OUTPUTS", " , "),
            ("TRACK_PREFIX", "no-slash"),
            ("LOG_LEVEL", "loud"),
            ("LOG_FORMAT", "xml"),
            ("ENABLE_HTTPS", "true"),
            ("FORWARD_DESTINATION", "https://example.com"),
            ("FORWARD_DESTINATION", "ftp://example.com"),
            ("FORWARD_DESTINATION", "http://"),
            ("FORWARD_DESTINATION", "http://host:99999"),
            ("UPSTREAM_TIMEOUT_S", "0"),
            ("UPSTREAM_TIMEOUT_S", "18446744073709551615"),
            ("SHUTDOWN_TIMEOUT_S", "86401"),
            ("FLUSH_INTERVAL_MS", "0"),
            ("TOKEN_TTL_S", "99999999999999999999"),
            ("FORWARD_DESTINATION", "http://host/a b"),
            ("INJECT", "maybe"),
            ("INJECT_TAIL_BYTES", "0"),
            ("INJECT_MAX_BYTES", "lots"),
            ("INJECT_CORE_BUDGET_MB", "0"),
            ("INJECT_GZIP_LEVEL", "0"),
            ("INJECT_GZIP_LEVEL", "13"),
        ] {
            let e = load(Mode::Serve, &with(&[(var, val)])).expect_err(var);
            assert_eq!(e.var, var, "{var}={val}");
            let line = e.to_string();
            assert!(line.contains(var) && line.contains("expected"), "{line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn a_named_sink_needs_its_address() {
        let e = load(Mode::Serve, &with(&[("OUTPUTS", "log,kafka")])).expect_err("kafka");
        assert_eq!(e.var, "KAFKA_BROKERS");
        let e = load(Mode::Serve, &with(&[("OUTPUTS", "postgres")])).expect_err("postgres");
        assert_eq!(e.var, "PG_DSN");
        let c = load(
            Mode::Serve,
            &with(&[
                ("OUTPUTS", "log,kafka,postgres"),
                ("KAFKA_BROKERS", "k1:9092"),
                ("PG_DSN", "host=db dbname=events"),
            ]),
        )
        .expect("all three");
        assert_eq!(
            c.outputs,
            vec![Output::Log, Output::Kafka, Output::Postgres]
        );
    }

    #[test]
    fn trusted_proxies_only_with_trust_proxy() {
        let c = load(Mode::Serve, &with(&[("TRUSTED_PROXIES", "10.0.0.0/8")])).expect("ok");
        assert!(!c
            .trusted_proxies
            .is_trusted("10.1.2.3".parse().expect("ip")));
        let c = load(Mode::Serve, &with(&[("TRUST_PROXY", "true")])).expect("ok");
        assert!(c
            .trusted_proxies
            .is_trusted("10.1.2.3".parse().expect("ip")));
        let e = load(
            Mode::Serve,
            &with(&[("TRUST_PROXY", "true"), ("TRUSTED_PROXIES", "10.0.0.0/99")]),
        )
        .unwrap_err();
        assert_eq!(e.var, "TRUSTED_PROXIES");
    }

    #[test]
    fn destinations() {
        let d = parse_destination("http://127.0.0.1:8080").expect("ok");
        assert_eq!(
            (d.host.as_str(), d.port, d.base_path.as_str()),
            ("127.0.0.1", 8080, "")
        );
        assert_eq!(d.authority, "127.0.0.1:8080");
        let d = parse_destination("http://origin.internal/app/").expect("ok");
        assert_eq!(
            (d.host.as_str(), d.port, d.base_path.as_str()),
            ("origin.internal", 80, "/app")
        );
        assert_eq!(d.authority, "origin.internal");
        let d = parse_destination("http://[::1]:9000/x").expect("ok");
        assert_eq!(
            (d.host.as_str(), d.port, d.base_path.as_str()),
            ("::1", 9000, "/x")
        );
        assert_eq!(d.authority, "[::1]:9000");
        assert!(parse_destination("http://user@host/").is_err());
        assert!(parse_destination("http://host/?q=1").is_err());
    }

    #[test]
    fn listen_addresses() {
        let (a, any) = parse_listen_addr("SERVER_ADDR", ":8080").expect("ok");
        assert!(any && a.port() == 8080);
        let (a, any) = parse_listen_addr("SERVER_ADDR", "127.0.0.1:0").expect("ok");
        assert!(!any && a.port() == 0);
        let (a, _) = parse_listen_addr("SERVER_ADDR", "[::1]:80").expect("ok");
        assert!(a.is_ipv6());
        let (a, _) = parse_listen_addr("SERVER_ADDR", "localhost:81").expect("ok");
        assert_eq!(a, "127.0.0.1:81".parse().expect("addr"));
    }

    #[test]
    fn prefix_is_normalised() {
        let c = load(Mode::Serve, &with(&[("TRACK_PREFIX", "/_t/")])).expect("ok");
        assert_eq!(c.track_prefix, "/_t");
    }

    #[test]
    fn worker_concurrency_warns() {
        let c = load(Mode::Serve, &with(&[("WORKER_CONCURRENCY", "8")])).expect("ok");
        assert!(c.warnings[0].contains("CORES"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = load(Mode::Serve, BASE).expect("ok");
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
    }
}
