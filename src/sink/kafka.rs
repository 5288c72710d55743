//! The Kafka downstream: one librdkafka producer, owned by the Kafka sink's
//! thread, and the rule that only a delivery report acknowledges an event.
//!
//! [`KafkaSink::deliver`] produces one record per event (key `event_id`,
//! value the event's JSON, headers `event_type`, `schema=v1` and `source`)
//! and then serves the producer's delivery reports until every record of the
//! call has one. It returns `Ok` only when each record was acknowledged or
//! isolated as poison (below); any other failed or timed-out record makes the
//! whole call an `Err`, so the runner produces the same events again from the
//! journal (at-least-once: a duplicate carries the same key). The wait is
//! bounded by librdkafka's `message.timeout.ms`, after
//! which librdkafka itself fails every record it still holds. A producer that
//! hit a fatal error (idempotence) is dropped and built again on the next
//! call. The broker is never needed at construction: librdkafka connects
//! lazily and keeps reconnecting.
//!
//! Poison events: a record refused for a reason that belongs to that record
//! ([`is_poison`]: too large for the producer's `message.max.bytes` or the
//! topic's `max.message.bytes`, a record or timestamp the broker refuses)
//! would fail every redelivery and stall the sink behind it. When every
//! failure of a call is of that kind, the failed records are produced again
//! in halves (librdkafka fails a whole produce request, so innocent
//! neighbours share the error) until each refused record is alone; those go
//! to the dead-letter file (`KAFKA_DEAD_LETTER`, fsynced before `deliver`
//! returns) with the error, and are counted in [`Delivered::dead_lettered`].
//! Refusals about the topic or the producer (authorization, unknown topic)
//! concern every event: they are returned as `Err` (kind `rejected`) and the
//! events wait in the journal until the operator fixes the brokers, rather
//! than turning the whole stream into dead letters. A dead-letter line is
//! `{"dead_lettered_at":"<RFC 3339>","topic":"…","error":"…","event":"<the
//! event line, as a JSON string>"}`.
//!
//! The producer is a [`BaseProducer`] polled on the sink's own thread: no
//! async runtime, no extra polling thread, and the delivery callback runs
//! where `deliver` can count it.

pub mod config;

pub use config::{Acks, Compression, KafkaConfig, Sasl, SaslMechanism};

use crate::metrics::labels::SinkFailure;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::ClientContext;
use simd_json::prelude::*;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use super::Delivered;

/// The value of the `schema` header on every record.
pub const SCHEMA_VERSION: &str = "v1";

/// Slack on top of `message.timeout.ms` before `deliver` stops waiting for
/// reports librdkafka should already have produced.
const REPORT_SLACK: Duration = Duration::from_secs(5);

/// How long one poll of the producer waits for delivery reports.
const POLL_STEP: Duration = Duration::from_millis(2);

/// Why the Kafka sink could not be built or could not deliver.
#[derive(Debug)]
pub enum KafkaError {
    /// `KAFKA_BROKERS` is empty.
    NoBrokers,
    /// librdkafka refused a property (from `KAFKA_CONFIG` or a variable).
    Property {
        key: String,
        value: String,
        reason: String,
    },
    /// librdkafka could not create the producer.
    Create(Box<RdError>),
    /// The producer refused to queue an event (too large, bad topic...).
    Enqueue {
        event_id: Option<String>,
        error: Box<RdError>,
        topic: String,
    },
    /// Some records got a failed delivery report (timed out, refused...).
    Undelivered {
        failed: usize,
        total: usize,
        first: Box<RdError>,
        /// The last error librdkafka reported about the brokers, if any.
        broker: String,
        topic: String,
        timeout_ms: u64,
    },
    /// The producer hit a fatal error (e.g. the idempotent producer lost
    /// its producer id); it is dropped and built again on the next call.
    Fatal { code: String, reason: String },
    /// Appending to the dead-letter file failed (the events stay in the
    /// journal and are produced again).
    DeadLetter {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Not every delivery report arrived within `message.timeout.ms` plus
    /// [`REPORT_SLACK`], or by the deadline of [`KafkaSink::deliver_until`];
    /// the records were purged from the producer.
    ReportsMissing {
        missing: usize,
        total: usize,
        waited: Duration,
        broker: String,
    },
}

impl KafkaError {
    /// The failure kind counted in `sink_failures_total{sink="kafka"}`.
    pub fn kind(&self) -> SinkFailure {
        match self {
            KafkaError::NoBrokers | KafkaError::Property { .. } | KafkaError::Create(_) => {
                SinkFailure::Open
            }
            KafkaError::ReportsMissing { .. } => SinkFailure::Connect,
            KafkaError::Fatal { .. } | KafkaError::DeadLetter { .. } => SinkFailure::Write,
            KafkaError::Enqueue { error: e, .. } | KafkaError::Undelivered { first: e, .. } => {
                if is_connection(e) {
                    SinkFailure::Connect
                } else if is_permanent(e) {
                    SinkFailure::Rejected
                } else {
                    SinkFailure::Write
                }
            }
        }
    }

    /// True when the brokers could not be reached (or did not answer in
    /// time), as opposed to a broker refusing the records or a bad setting.
    pub fn is_connection(&self) -> bool {
        self.kind() == SinkFailure::Connect
    }
}

/// Errors that mean "no broker answered", not "a broker said no".
fn is_connection(e: &RdError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SSL
        )
    )
}

/// Refusals that belong to one record, not to the topic or the producer:
/// the same record is refused again however often it is produced, while the
/// other events go through. Topic-wide refusals (authorization, unknown or
/// invalid topic) are not here: they would make every event a dead letter.
/// Neither is a corrupt message (`InvalidMessage`, a CRC mismatch on the
/// way), which producing again fixes.
pub fn is_poison(e: &RdError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTimestamp
        )
    )
}

/// Errors that producing the same record again cannot fix.
fn is_permanent(e: &RdError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTimestamp
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopic
        )
    )
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaError::NoBrokers => f.write_str(
                "KAFKA_BROKERS is empty; set it to the brokers' host:port list, e.g. kafka-1:9092,kafka-2:9092",
            ),
            KafkaError::Property { key, value, reason } => write!(
                f,
                "librdkafka refuses the property {key}={value:?}: {reason}; fix it in KAFKA_CONFIG \
                 (or the KAFKA_* variable that sets it)"
            ),
            KafkaError::Create(e) => {
                let text = e.to_string();
                let check = if text.contains("ssl.ca") {
                    "KAFKA_TLS_CA (a PEM file of CA certificates)"
                } else if text.to_ascii_lowercase().contains("sasl") {
                    "KAFKA_SASL_MECHANISM, KAFKA_SASL_USER and KAFKA_SASL_PASSWORD"
                } else if text.contains("ssl") {
                    "KAFKA_TLS_CA and KAFKA_TLS_SKIP_VERIFY"
                } else {
                    "the KAFKA_* settings"
                };
                write!(f, "cannot create the Kafka producer: {text}; check {check}")
            }
            KafkaError::Enqueue {
                event_id,
                error,
                topic,
            } => {
                write!(
                    f,
                    "the Kafka producer refused event {} for topic {topic}: {error}",
                    event_id.as_deref().unwrap_or("<without event_id>")
                )?;
                hint(f, error, None)?;
                f.write_str("; the events stay in the journal and are produced again")
            }
            KafkaError::Undelivered {
                failed,
                total,
                first,
                broker,
                topic,
                timeout_ms,
            } => {
                write!(
                    f,
                    "Kafka did not acknowledge {failed} of {total} events on topic {topic} ({first})"
                )?;
                if !broker.is_empty() {
                    write!(f, "; last broker error: {broker}")?;
                }
                hint(f, first, Some(*timeout_ms))?;
                f.write_str("; the events stay in the journal and are produced again")
            }
            KafkaError::Fatal { code, reason } => write!(
                f,
                "the Kafka producer hit a fatal error ({code}: {reason}) and is rebuilt; with \
                 KAFKA_IDEMPOTENT=true the brokers must allow this producer IdempotentWrite \
                 (ACLs); the events stay in the journal and are produced again"
            ),
            KafkaError::ReportsMissing {
                missing,
                total,
                waited,
                broker,
            } => {
                write!(
                    f,
                    "librdkafka gave no delivery report for {missing} of {total} events within {:.1}s",
                    waited.as_secs_f64()
                )?;
                if !broker.is_empty() {
                    write!(f, "; last broker error: {broker}")?;
                }
                f.write_str("; the events stay in the journal and are produced again")
            }
            KafkaError::DeadLetter { path, source } => write!(
                f,
                "cannot append events Kafka refuses to the dead-letter file {} \
                 (KAFKA_DEAD_LETTER): {source}; the events stay in the journal and are produced again",
                path.display()
            ),
        }
    }
}

/// What the operator can do about `e`.
fn hint(f: &mut fmt::Formatter<'_>, e: &RdError, timeout_ms: Option<u64>) -> fmt::Result {
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    ) {
        f.write_str(
            "; a record this large needs message.max.bytes raised with KAFKA_CONFIG (and the \
             topic's max.message.bytes on the brokers)",
        )
    } else if is_connection(e) {
        if let Some(ms) = timeout_ms {
            write!(f, "; no broker acknowledged within message.timeout.ms={ms}")?;
        }
        f.write_str(
            ": check that KAFKA_BROKERS is reachable and that the TLS/SASL settings match the \
             brokers' listener",
        )
    } else if is_permanent(e) {
        f.write_str(
            "; the brokers refuse these records: check KAFKA_TOPIC exists and the topic's ACLs \
             allow this producer to write",
        )
    } else {
        Ok(())
    }
}

impl std::error::Error for KafkaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KafkaError::Create(e)
            | KafkaError::Enqueue { error: e, .. }
            | KafkaError::Undelivered { first: e, .. } => Some(e.as_ref()),
            KafkaError::DeadLetter { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Delivery reports of the current `deliver` call.
#[derive(Debug, Default)]
struct Reports {
    /// Which call's reports count; older ones (of a call that already gave
    /// up) are ignored.
    generation: usize,
    pending: usize,
    /// Each failed record: its index in the call's events, and the error.
    failed: Vec<(usize, RdError)>,
}

/// The producer's callbacks: delivery reports, global errors and
/// librdkafka's log lines (into trackgate's operator log).
#[derive(Debug, Default)]
struct Context {
    reports: Mutex<Reports>,
    last_error: Mutex<String>,
}

impl Context {
    fn begin(&self, generation: usize, pending: usize) {
        if let Ok(mut r) = self.reports.lock() {
            *r = Reports {
                generation,
                pending,
                ..Reports::default()
            };
        }
        if let Ok(mut e) = self.last_error.lock() {
            e.clear();
        }
    }

    /// Records not yet reported.
    fn pending(&self) -> usize {
        self.reports.lock().map_or(0, |r| r.pending)
    }

    /// A record the producer refused to queue: it gets no report.
    fn refused(&self, index: usize, error: RdError) {
        if let Ok(mut r) = self.reports.lock() {
            r.pending = r.pending.saturating_sub(1);
            r.failed.push((index, error));
        }
    }

    /// The failed records of the current call.
    fn take_failed(&self) -> Vec<(usize, RdError)> {
        match self.reports.lock() {
            Ok(mut r) => std::mem::take(&mut r.failed),
            Err(_) => vec![(0, RdError::Canceled)],
        }
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            // A connection failure arrives both as a FAIL log line and as an
            // error event: [`Self::error`] reports it once.
            RDKafkaLogLevel::Error if fac == "FAIL" => {}
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                crate::error!("librdkafka", facility = fac, message = message)
            }
            RDKafkaLogLevel::Warning => {
                crate::warn!("librdkafka", facility = fac, message = message)
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                crate::info!("librdkafka", facility = fac, message = message)
            }
            RDKafkaLogLevel::Debug => {
                crate::debug!("librdkafka", facility = fac, message = message)
            }
        }
    }

    fn error(&self, error: RdError, reason: &str) {
        let text = format!("{error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            // Follows each connection failure (reported on its own), and
            // would hide its cause in the next error message.
            crate::debug!("kafka brokers down", error = text);
            return;
        }
        if let Ok(mut last) = self.last_error.lock() {
            if *last != text {
                crate::warn!("kafka broker error", error = text);
                *last = text;
            }
        }
    }
}

impl ProducerContext for Context {
    /// The `generation` of the attempt that produced the record, and the
    /// record's index in that attempt's events.
    type DeliveryOpaque = Box<(usize, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<(usize, usize)>) {
        let (generation, index) = *tag;
        let Ok(mut r) = self.reports.lock() else {
            return;
        };
        if r.generation != generation || r.pending == 0 {
            return;
        }
        r.pending -= 1;
        if let Err((e, _)) = result {
            r.failed.push((index, e.clone()));
        }
    }
}

/// The fields of an event that become the record's key and headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub source: Option<String>,
}

impl RecordMeta {
    /// Reads `event_id`, `type` and `source` from one event's JSON. An event
    /// without them (which trackgate never encodes) is still produced, with
    /// the key or header left out, rather than stall every later event.
    pub fn of(event: &[u8]) -> RecordMeta {
        let mut buf = event.to_vec();
        let Ok(v) = simd_json::to_borrowed_value(&mut buf) else {
            return RecordMeta::default();
        };
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        RecordMeta {
            event_id: field("event_id"),
            event_type: field("type"),
            source: field("source"),
        }
    }

    /// `event_type`, `schema` and `source`, in that order.
    pub fn headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(3);
        if let Some(t) = &self.event_type {
            h = h.insert(Header {
                key: "event_type",
                value: Some(t.as_str()),
            });
        }
        h = h.insert(Header {
            key: "schema",
            value: Some(SCHEMA_VERSION),
        });
        if let Some(s) = &self.source {
            h = h.insert(Header {
                key: "source",
                value: Some(s.as_str()),
            });
        }
        h
    }
}

/// One Kafka producer, owned by the Kafka sink's thread.
pub struct KafkaSink {
    cfg: KafkaConfig,
    client_config: ClientConfig,
    /// The effective `message.timeout.ms`.
    timeout: Duration,
    producer: Option<BaseProducer<Context>>,
    generation: usize,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("cfg", &self.cfg)
            .field("timeout", &self.timeout)
            .field("connected", &self.producer.is_some())
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Checks the settings with librdkafka and builds the producer. No broker
    /// needs to be up: librdkafka connects when the first record is produced.
    pub fn new(cfg: KafkaConfig) -> Result<Self, KafkaError> {
        if cfg.brokers.trim().is_empty() {
            return Err(KafkaError::NoBrokers);
        }
        let mut client_config = ClientConfig::new();
        for (k, v) in cfg.properties() {
            client_config.set(k, v);
        }
        let native = client_config
            .create_native_config()
            .map_err(property_error)?;
        let timeout_ms: u64 = native
            .get("message.timeout.ms")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(config::DEFAULT_MESSAGE_TIMEOUT_MS);
        for w in cfg.warnings() {
            crate::warn!(w);
        }
        let mut sink = KafkaSink {
            cfg,
            client_config,
            timeout: Duration::from_millis(timeout_ms),
            producer: None,
            generation: 0,
        };
        sink.producer = Some(sink.create()?);
        Ok(sink)
    }

    /// The settings this sink runs with.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The effective `message.timeout.ms`: no `deliver` call waits much
    /// longer than this.
    pub fn message_timeout(&self) -> Duration {
        self.timeout
    }

    fn create(&self) -> Result<BaseProducer<Context>, KafkaError> {
        self.client_config
            .create_with_context(Context::default())
            .map_err(|e| match e {
                RdError::ClientConfig(..) => property_error(e),
                e => KafkaError::Create(Box::new(e)),
            })
    }

    /// Produces every event and returns once each has a successful delivery
    /// report (see the module documentation). On `Err` nothing is assumed
    /// delivered: the caller delivers the same events again later.
    pub fn deliver(&mut self, events: &[&[u8]]) -> Result<Delivered, KafkaError> {
        self.deliver_until(events, None)
    }

    /// [`Self::deliver`], but gives up at `deadline` if that comes before
    /// librdkafka's own timeout (a graceful shutdown that must not wait
    /// `message.timeout.ms`). What is not acknowledged by then is purged from
    /// the producer and reported as an `Err`: it stays in the journal.
    pub fn deliver_until(
        &mut self,
        events: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Delivered, KafkaError> {
        if events.is_empty() {
            return Ok(Delivered::default());
        }
        if self.producer.is_none() {
            self.producer = Some(self.create()?);
        }
        let all: Vec<usize> = (0..events.len()).collect();
        let mut written = 0;
        let mut dead = Vec::new();
        if let Err(e) = self.isolate(events, &all, deadline, &mut written, &mut dead) {
            return Err(self.drop_if_fatal().unwrap_or(e));
        }
        if !dead.is_empty() {
            self.append_dead_letters(events, &dead)?;
        }
        Ok(Delivered {
            written,
            dead_lettered: dead.len() as u64,
            ..Delivered::default()
        })
    }

    /// Produces `events[i]` for each `i` in `which`. When every record that
    /// failed was refused as poison ([`is_poison`]), produces the failed ones
    /// again in halves until each refused record is alone, and puts those in
    /// `dead` (index and error). Any other failure is an `Err`.
    fn isolate(
        &mut self,
        events: &[&[u8]],
        which: &[usize],
        deadline: Option<Instant>,
        written: &mut u64,
        dead: &mut Vec<(usize, String)>,
    ) -> Result<(), KafkaError> {
        let batch: Vec<&[u8]> = which.iter().map(|&i| events[i]).collect();
        let failed = self.produce_all(&batch, deadline)?;
        *written += (which.len() - failed.len()) as u64;
        if failed.is_empty() {
            return Ok(());
        }
        if let Some((_, first)) = failed.iter().find(|(_, e)| !is_poison(e)) {
            return Err(KafkaError::Undelivered {
                failed: failed.len(),
                total: which.len(),
                first: Box::new(first.clone()),
                broker: self
                    .producer
                    .as_ref()
                    .map(|p| p.context().last_error())
                    .unwrap_or_default(),
                topic: self.cfg.topic.clone(),
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        if let [(i, e)] = failed.as_slice() {
            // Alone in its produce request and still refused: the record
            // itself is what the brokers refuse.
            dead.push((which[*i], e.to_string()));
            return Ok(());
        }
        let mut again: Vec<usize> = failed.iter().map(|(i, _)| which[*i]).collect();
        again.sort_unstable();
        let (a, b) = again.split_at(again.len() / 2);
        self.isolate(events, a, deadline, written, dead)?;
        self.isolate(events, b, deadline, written, dead)
    }

    /// Produces every event once and waits for every delivery report.
    /// Returns the records that failed (index into `events`, error); records
    /// the producer refused to queue as poison are among them. `Err` when
    /// not every report arrived in time or the producer refused a record for
    /// another reason.
    fn produce_all(
        &mut self,
        events: &[&[u8]],
        stop_at: Option<Instant>,
    ) -> Result<Vec<(usize, RdError)>, KafkaError> {
        let Some(producer) = self.producer.as_ref() else {
            return Err(KafkaError::Create(Box::new(RdError::Canceled)));
        };
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let ctx = producer.context();
        ctx.begin(generation, events.len());
        let bound = self.timeout + REPORT_SLACK;
        let started = Instant::now();
        let cap = |d: Instant| stop_at.map_or(d, |s| s.min(d));
        let mut deadline = cap(started + bound);
        for (i, event) in events.iter().enumerate() {
            let meta = RecordMeta::of(event);
            let mut record = BaseRecord::with_opaque_to(&self.cfg.topic, Box::new((generation, i)))
                .payload(*event)
                .headers(meta.headers());
            if let Some(id) = &meta.event_id {
                record = record.key(id.as_str());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        // The producer's own queue is full: serve reports
                        // (which frees room) and try again, within the bound.
                        if Instant::now() >= deadline {
                            return Err(self.give_up(
                                events.len() - i,
                                events.len(),
                                started.elapsed(),
                            ));
                        }
                        record = back;
                        producer.poll(POLL_STEP);
                    }
                    Err((error, _)) if is_poison(&error) => {
                        // Larger than the producer's message.max.bytes.
                        ctx.refused(i, error);
                        break;
                    }
                    Err((error, _)) => {
                        return Err(KafkaError::Enqueue {
                            event_id: meta.event_id.clone(),
                            error: Box::new(error),
                            topic: self.cfg.topic.clone(),
                        })
                    }
                }
            }
            // Each record times out message.timeout.ms after it was queued.
            deadline = cap(Instant::now() + bound);
        }
        loop {
            if ctx.pending() == 0 {
                return Ok(ctx.take_failed());
            }
            if Instant::now() >= deadline {
                return Err(self.give_up(ctx.pending(), events.len(), started.elapsed()));
            }
            producer.poll(POLL_STEP);
        }
    }

    /// Appends one NDJSON line per dead event and fsyncs the file.
    fn append_dead_letters(
        &self,
        events: &[&[u8]],
        dead: &[(usize, String)],
    ) -> Result<(), KafkaError> {
        let path = &self.cfg.dead_letter;
        let fail = |source| KafkaError::DeadLetter {
            path: path.clone(),
            source,
        };
        let mut out = Vec::new();
        let now = crate::clock::unix_millis();
        for (i, error) in dead {
            crate::warn!(
                "kafka refuses an event; written to the dead-letter file",
                topic = self.cfg.topic,
                error = error,
                file = path.display()
            );
            out.extend_from_slice(b"{\"dead_lettered_at\":\"");
            crate::clock::write_rfc3339_millis(&mut out, now);
            out.extend_from_slice(b"\",\"topic\":");
            crate::track::json::write_str(&mut out, self.cfg.topic.as_bytes());
            out.extend_from_slice(b",\"error\":");
            crate::track::json::write_str(&mut out, error.as_bytes());
            out.extend_from_slice(b",\"event\":");
            crate::track::json::write_str(&mut out, events[*i]);
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
        std::io::Write::write_all(&mut file, &out).map_err(fail)?;
        file.sync_data().map_err(fail)
    }

    /// Purges what librdkafka still holds (its reports, if they come, belong
    /// to a finished generation and are ignored).
    fn give_up(&self, missing: usize, total: usize, waited: Duration) -> KafkaError {
        let mut broker = String::new();
        if let Some(p) = self.producer.as_ref() {
            p.purge(PurgeConfig::default().queue().inflight());
            p.poll(Duration::ZERO);
            broker = p.context().last_error();
        }
        KafkaError::ReportsMissing {
            missing,
            total,
            waited,
            broker,
        }
    }

    /// An idempotent producer that hit a fatal error refuses everything
    /// afterwards: drop it, the next `deliver` builds a new one.
    fn drop_if_fatal(&mut self) -> Option<KafkaError> {
        let (code, reason) = self
            .producer
            .as_ref()
            .and_then(|p| p.client().fatal_error())?;
        self.producer = None;
        Some(KafkaError::Fatal {
            code: format!("{code:?}"),
            reason,
        })
    }
}

/// Turns librdkafka's refusal of a property into an operator message
/// (never printing the SASL password).
fn property_error(e: RdError) -> KafkaError {
    match e {
        RdError::ClientConfig(_, reason, key, value) => KafkaError::Property {
            value: if key.contains("password") {
                "<not shown>".into()
            } else {
                value
            },
            key,
            reason,
        },
        e => KafkaError::Create(Box::new(e)),
    }
}

#[cfg(test)]
mod tests;
