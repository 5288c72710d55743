//! Metrics: the per-core and per-sink counters (submodules) and the
//! [`Registry`] that turns them into the Prometheus text exposition.
//!
//! The registry is built once by the main thread (cores, sinks, version),
//! then frozen in an `Arc` and read by the exposition thread ([`serve`]).
//! Scraping only loads relaxed atomics: core metrics are summed across cores
//! (histograms bucket by bucket) so the request path never shares a cache
//! line. Every series of the bounded label enums exists from the first scrape,
//! at zero. The registry implements `prometheus::core::Collector` (the crate's
//! plain, non-protobuf model is all it needs) and renders with the crate's
//! `TextEncoder` (format 0.0.4).

pub mod core;
mod expose;
pub mod labels;
pub mod prim;
pub mod sinks;

pub use expose::{serve, MetricsServer};

use self::core::CoreMetrics;
use self::labels::{
    AuthFailure, DropReason, EventSource, InjectResult, Route, Sink, SinkFailure, StatusClass,
    TokenKind, UpstreamError,
};
use self::prim::{Counter, Histogram, BUCKETS};
use self::sinks::{JournalStats, SinkHealth, SinkStats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Prefix of every exported metric name.
pub const PREFIX: &str = "trackgate_";

/// What went wrong setting up metrics, worded for the operator.
#[derive(Debug)]
pub enum MetricsError {
    /// The exposition socket could not be bound.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The socket was bound but the exposition thread could not start.
    Spawn(std::io::Error),
    /// `set_core_driver` named a core that was never added.
    UnknownCore(usize),
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::Bind { addr, source } => write!(
                f,
                "METRICS_ADDR={addr}: cannot listen for Prometheus scrapes: {source} \
                 (is another process using the port, or is the address not local?)"
            ),
            MetricsError::Spawn(e) => write!(f, "cannot start the metrics thread: {e}"),
            MetricsError::UnknownCore(core) => write!(
                f,
                "metrics: core {core} has no registered metrics (add_core was not called for it)"
            ),
        }
    }
}

impl std::error::Error for MetricsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetricsError::Bind { source, .. } => Some(source),
            MetricsError::Spawn(e) => Some(e),
            MetricsError::UnknownCore(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric family: name (without [`PREFIX`]), help, type, labels.
#[derive(Debug)]
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

macro_rules! specs {
    ($($id:ident: $kind:ident $name:literal [$($label:literal),*] $help:literal;)*) => {
        $(const $id: Spec = Spec {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: &[$($label),*],
        };)*
        /// Every family, in exposition order.
        const SPECS: &[Spec] = &[$($id),*];
    };
}

specs! {
    REQUESTS: Counter "requests_total" ["route", "status_class"]
        "Requests answered, by route and HTTP status class.";
    REQUEST_DURATION: Histogram "request_duration_seconds" ["route"]
        "Time from a request head read to its response written, by route.";
    CONNECTIONS_OPEN: Gauge "connections_open" []
        "Client connections currently open.";
    CONNECTIONS_ACCEPTED: Counter "connections_accepted_total" []
        "Client connections accepted.";
    CONNECTIONS_REFUSED: Counter "connections_refused_total" []
        "Client connections answered 503 and closed at once: MAX_CONNECTIONS reached on their core.";
    DESYNC_AMBIGUOUS: Counter "desync_ambiguous_total" []
        "Requests DESYNC_MODE counts as ambiguous (refused under strictest; forwarded with the origin connection closed after them under defensive).";
    RATE_LIMITED: Counter "rate_limited_total" []
        "Tracking requests answered 429: their client IP bucket was over RATE_LIMIT_RPS / RATE_LIMIT_BURST.";
    BYTES_RECEIVED: Counter "bytes_received_total" []
        "Bytes received from clients.";
    BYTES_SENT: Counter "bytes_sent_total" []
        "Bytes sent to clients.";
    EVENTS: Counter "events_total" ["source"]
        "Events queued toward the sinks, by source.";
    EVENTS_DROPPED: Counter "events_dropped_total" ["reason"]
        "Events not queued, by reason.";
    AUTH_FAILURES: Counter "auth_failures_total" ["reason"]
        "Signed requests refused, by reason.";
    TOKENS_ISSUED: Counter "tokens_issued_total" ["kind"]
        "tg1 tokens handed out, by kind (p: page, f: fetched).";
    INJECT: Counter "inject_total" ["result"]
        "HTML responses considered for injection: injected, or why not.";
    UPSTREAM_REQUESTS: Counter "upstream_requests_total" ["status_class"]
        "Responses received from the origin, by HTTP status class.";
    UPSTREAM_DURATION: Histogram "upstream_duration_seconds" []
        "Time from a request sent to the origin to its response head received.";
    UPSTREAM_ERRORS: Counter "upstream_errors_total" ["kind"]
        "Failed exchanges with the origin, by kind.";
    UPSTREAM_CONNECTS: Counter "upstream_connects_total" []
        "New connections opened to the origin.";
    UPSTREAM_POOL_IDLE: Gauge "upstream_pool_idle" []
        "Idle origin connections kept for reuse.";
    SINK_QUEUE_DEPTH: Gauge "sink_queue_depth" ["sink"]
        "Batches waiting in a sink's queue.";
    SINK_EVENTS_WRITTEN: Counter "sink_events_written_total" ["sink"]
        "Events a sink has written.";
    SINK_FAILURES: Counter "sink_failures_total" ["sink", "kind"]
        "Sink failures, by sink and kind.";
    SINK_FLUSH_DURATION: Histogram "sink_flush_duration_seconds" ["sink"]
        "Time a sink took to flush one batch.";
    SINK_UP: Gauge "sink_up" ["sink"]
        "1 when the sink is healthy, 0 when starting, down or stopped.";
    SINK_EVENTS_ACKED: Counter "sink_events_acknowledged_total" ["sink"]
        "Events whose delivery a sink's downstream acknowledged (its checkpoint moved past them).";
    SINK_EVENTS_REPLAYED: Counter "sink_events_replayed_total" ["sink"]
        "Events a sink read back from the journal files (it had fallen behind, or after a restart).";
    SINK_EVENTS_DUPLICATE: Counter "sink_events_duplicate_total" ["sink"]
        "Events a sink's downstream already had (skipped).";
    SINK_EVENTS_DEAD_LETTERED: Counter "sink_events_dead_lettered_total" ["sink"]
        "Events a sink isolated as poison and wrote to its dead-letter file.";
    SINK_LAG_EVENTS: Gauge "sink_checkpoint_lag_events" ["sink"]
        "Journaled events a sink has not had acknowledged yet.";
    SINK_LAG_BYTES: Gauge "sink_checkpoint_lag_bytes" ["sink"]
        "Journal bytes past a sink's checkpoint.";
    JOURNAL_BYTES: Gauge "journal_bytes" []
        "Bytes in the journal's segment files.";
    JOURNAL_SEGMENTS: Gauge "journal_segments" []
        "Segment files the journal keeps.";
    JOURNAL_EVENTS: Counter "journal_events_total" []
        "Events made durable in the journal.";
    JOURNAL_REFUSED: Counter "journal_refused_events_total" []
        "Events the journal thread refused after they were queued (full or failed).";
    JOURNAL_FULL: Gauge "journal_full" []
        "1 while the journal holds JOURNAL_MAX_MB and collect answers 503.";
    JOURNAL_FAILED: Gauge "journal_failed" []
        "1 after an fsync of the journal failed: nothing is acknowledged any more.";
    JOURNAL_FSYNC_DURATION: Histogram "journal_fsync_duration_seconds" []
        "Time of each group commit of the journal (write and fdatasync).";
    JOURNAL_ACK_WAIT: Histogram "journal_ack_wait_seconds" []
        "Time from a durable collect's enqueue to the fsync that covers it.";
    LOG_ROTATIONS: Counter "log_rotations_total" []
        "Rotations of the log sink's file.";
    CORE_INFO: Gauge "core_info" ["core", "driver"]
        "Always 1: one series per core, with the I/O driver it runs.";
    BUILD_INFO: Gauge "build_info" ["version"]
        "Always 1: the running trackgate version.";
}

/// One core's metrics and, once known, its I/O driver.
#[derive(Debug)]
struct CoreEntry {
    core: usize,
    driver: OnceLock<&'static str>,
    metrics: Arc<CoreMetrics>,
}

/// Everything exported on `/metrics`. Built by the main thread, then shared
/// read-only (`Arc<Registry>`) with the exposition thread.
#[derive(Debug)]
pub struct Registry {
    version: String,
    /// Sorted by core id.
    cores: Vec<CoreEntry>,
    /// Sorted by sink index.
    sinks: Vec<(Sink, Arc<SinkStats>)>,
    journal: Option<Arc<JournalStats>>,
    descs: Vec<Desc>,
}

impl Registry {
    /// An empty registry for this build `version` (`build_info{version}`).
    pub fn new(version: &str) -> Registry {
        let mut descs = Vec::with_capacity(SPECS.len());
        for spec in SPECS {
            let labels = spec.labels.iter().map(|l| (*l).to_owned()).collect();
            match Desc::new(
                full_name(spec),
                spec.help.to_owned(),
                labels,
                HashMap::new(),
            ) {
                Ok(d) => descs.push(d),
                // Names and labels are constants checked by the tests; if one
                // were invalid the family would still be exported.
                Err(e) => crate::error!(
                    "metrics: invalid metric description",
                    metric = spec.name,
                    error = e
                ),
            }
        }
        Registry {
            version: version.to_owned(),
            cores: Vec::new(),
            sinks: Vec::new(),
            journal: None,
            descs,
        }
    }

    /// Registers core `core`'s metrics. Adding the same core again replaces
    /// the earlier entry (and forgets its driver).
    pub fn add_core(&mut self, core: usize, metrics: Arc<CoreMetrics>) {
        let entry = CoreEntry {
            core,
            driver: OnceLock::new(),
            metrics,
        };
        match self.cores.binary_search_by_key(&core, |c| c.core) {
            Ok(i) => self.cores[i] = entry,
            Err(i) => self.cores.insert(i, entry),
        }
    }

    /// Records which I/O driver core `core` runs (`core_info{driver}`; it
    /// reads `unknown` until set). Takes `&self` so a core can report it after
    /// the registry is frozen; the first value set wins.
    pub fn set_core_driver(&self, core: usize, driver: &'static str) -> Result<(), MetricsError> {
        let entry = self
            .cores
            .binary_search_by_key(&core, |c| c.core)
            .map(|i| &self.cores[i])
            .map_err(|_| MetricsError::UnknownCore(core))?;
        let _ = entry.driver.set(driver);
        Ok(())
    }

    /// Registers a sink's stats. Sinks never added have no sink series.
    /// Adding the same sink again replaces the earlier stats.
    pub fn add_sink(&mut self, sink: Sink, stats: Arc<SinkStats>) {
        match self
            .sinks
            .binary_search_by_key(&sink.index(), |(s, _)| s.index())
        {
            Ok(i) => self.sinks[i].1 = stats,
            Err(i) => self.sinks.insert(i, (sink, stats)),
        }
    }

    /// Registers the journal's stats (journal families are empty without).
    pub fn set_journal(&mut self, stats: Arc<JournalStats>) {
        self.journal = Some(stats);
    }

    /// Appends the whole text exposition (format 0.0.4) to `out`.
    pub fn render(&self, out: &mut String) {
        let encoder = prometheus::TextEncoder::new();
        for family in self.collect() {
            if family.get_metric().is_empty() {
                continue; // e.g. sink families with no sink added
            }
            if let Err(e) = encoder.encode_utf8(std::slice::from_ref(&family), out) {
                // Only an empty family can fail, and those are skipped; keep
                // the rest of the scrape and say why one family is missing.
                out.push_str("# trackgate: could not encode ");
                out.push_str(family.name());
                out.push_str(": ");
                out.push_str(&e.to_string().replace('\n', " "));
                out.push('\n');
            }
        }
    }

    fn collect_core(&self, out: &mut Vec<MetricFamily>) {
        let cores: Vec<&CoreMetrics> = self.cores.iter().map(|c| &*c.metrics).collect();

        let mut requests = [[0u64; StatusClass::COUNT]; Route::COUNT];
        let mut durations: [HistTotals; Route::COUNT] = Default::default();
        let mut upstream_duration = HistTotals::default();
        let (mut open, mut idle) = (0i64, 0i64);
        for m in &cores {
            for (row, counters) in requests.iter_mut().zip(m.requests.iter()) {
                add_counters(row, counters);
            }
            for (t, h) in durations.iter_mut().zip(m.request_duration.iter()) {
                t.add(h);
            }
            upstream_duration.add(&m.upstream_duration);
            open = open.wrapping_add(m.connections_open.get());
            idle = idle.wrapping_add(m.upstream_pool_idle.get());
        }

        let mut series = Vec::with_capacity(Route::COUNT * StatusClass::COUNT);
        for route in Route::ALL {
            for class in StatusClass::ALL {
                series.push(counter(
                    &REQUESTS,
                    &[route.as_str(), class.as_str()],
                    requests[route.index()][class.index()],
                ));
            }
        }
        out.push(family(&REQUESTS, series));

        let series = Route::ALL
            .iter()
            .map(|r| histogram(&REQUEST_DURATION, &[r.as_str()], &durations[r.index()]))
            .collect();
        out.push(family(&REQUEST_DURATION, series));

        out.push(family(
            &CONNECTIONS_OPEN,
            vec![gauge(&CONNECTIONS_OPEN, &[], open as f64)],
        ));
        for (spec, field) in [
            (
                &CONNECTIONS_ACCEPTED,
                (|m| &m.connections_accepted) as fn(&CoreMetrics) -> &Counter,
            ),
            (&CONNECTIONS_REFUSED, |m| &m.connections_refused),
            (&DESYNC_AMBIGUOUS, |m| &m.desync_ambiguous),
            (&RATE_LIMITED, |m| &m.rate_limited),
            (&BYTES_RECEIVED, |m| &m.bytes_received),
            (&BYTES_SENT, |m| &m.bytes_sent),
        ] {
            let total = cores
                .iter()
                .fold(0u64, |a, m| a.wrapping_add(field(m).get()));
            out.push(family(spec, vec![counter(spec, &[], total)]));
        }

        out.push(labelled(
            &EVENTS,
            EventSource::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.events[..],
        ));
        out.push(labelled(
            &EVENTS_DROPPED,
            DropReason::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.events_dropped[..],
        ));
        out.push(labelled(
            &AUTH_FAILURES,
            AuthFailure::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.auth_failures[..],
        ));
        out.push(labelled(
            &TOKENS_ISSUED,
            TokenKind::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.tokens_issued[..],
        ));
        out.push(labelled(
            &INJECT,
            InjectResult::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.inject[..],
        ));
        out.push(labelled(
            &UPSTREAM_REQUESTS,
            StatusClass::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.upstream_requests[..],
        ));
        out.push(family(
            &UPSTREAM_DURATION,
            vec![histogram(&UPSTREAM_DURATION, &[], &upstream_duration)],
        ));
        out.push(labelled(
            &UPSTREAM_ERRORS,
            UpstreamError::ALL,
            |s| s.as_str(),
            |s| s.index(),
            &cores,
            |m| &m.upstream_errors[..],
        ));
        let connects = cores
            .iter()
            .fold(0u64, |a, m| a.wrapping_add(m.upstream_connects.get()));
        out.push(family(
            &UPSTREAM_CONNECTS,
            vec![counter(&UPSTREAM_CONNECTS, &[], connects)],
        ));
        out.push(family(
            &UPSTREAM_POOL_IDLE,
            vec![gauge(&UPSTREAM_POOL_IDLE, &[], idle as f64)],
        ));
    }

    fn collect_sinks(&self, out: &mut Vec<MetricFamily>) {
        let per_sink = |spec: &Spec, f: &dyn Fn(&str, &SinkStats) -> proto::Metric| {
            let series = self.sinks.iter().map(|(s, st)| f(s.as_str(), st)).collect();
            family(spec, series)
        };
        out.push(per_sink(&SINK_QUEUE_DEPTH, &|s, st| {
            gauge(&SINK_QUEUE_DEPTH, &[s], st.queue_depth.get() as f64)
        }));
        out.push(per_sink(&SINK_EVENTS_WRITTEN, &|s, st| {
            counter(&SINK_EVENTS_WRITTEN, &[s], st.events_written.get())
        }));
        let mut failures = Vec::with_capacity(self.sinks.len() * SinkFailure::COUNT);
        for (sink, st) in &self.sinks {
            for kind in SinkFailure::ALL {
                failures.push(counter(
                    &SINK_FAILURES,
                    &[sink.as_str(), kind.as_str()],
                    st.failures[kind.index()].get(),
                ));
            }
        }
        out.push(family(&SINK_FAILURES, failures));
        out.push(per_sink(&SINK_FLUSH_DURATION, &|s, st| {
            let mut t = HistTotals::default();
            t.add(&st.flush_duration);
            histogram(&SINK_FLUSH_DURATION, &[s], &t)
        }));
        out.push(per_sink(&SINK_UP, &|s, st| {
            let up = st.health() == SinkHealth::Healthy;
            gauge(&SINK_UP, &[s], if up { 1.0 } else { 0.0 })
        }));
        type Get = fn(&SinkStats) -> u64;
        let sink_counters: [(&Spec, Get); 4] = [
            (&SINK_EVENTS_ACKED, |st| st.events_acked.get()),
            (&SINK_EVENTS_REPLAYED, |st| st.events_replayed.get()),
            (&SINK_EVENTS_DUPLICATE, |st| st.events_duplicate.get()),
            (&SINK_EVENTS_DEAD_LETTERED, |st| {
                st.events_dead_lettered.get()
            }),
        ];
        for (spec, get) in sink_counters {
            out.push(per_sink(spec, &|s, st| counter(spec, &[s], get(st))));
        }
        out.push(per_sink(&SINK_LAG_EVENTS, &|s, st| {
            gauge(&SINK_LAG_EVENTS, &[s], st.lag_events.get() as f64)
        }));
        out.push(per_sink(&SINK_LAG_BYTES, &|s, st| {
            gauge(&SINK_LAG_BYTES, &[s], st.lag_bytes.get() as f64)
        }));
        let j = self.journal.as_deref();
        let one = |f: &dyn Fn(&JournalStats) -> proto::Metric| j.map(f).into_iter().collect();
        out.push(family(
            &JOURNAL_BYTES,
            one(&|j| gauge(&JOURNAL_BYTES, &[], j.bytes.get() as f64)),
        ));
        out.push(family(
            &JOURNAL_SEGMENTS,
            one(&|j| gauge(&JOURNAL_SEGMENTS, &[], j.segments.get() as f64)),
        ));
        out.push(family(
            &JOURNAL_EVENTS,
            one(&|j| counter(&JOURNAL_EVENTS, &[], j.events.get())),
        ));
        out.push(family(
            &JOURNAL_REFUSED,
            one(&|j| counter(&JOURNAL_REFUSED, &[], j.refused.get())),
        ));
        out.push(family(
            &JOURNAL_FULL,
            one(&|j| gauge(&JOURNAL_FULL, &[], if j.is_full() { 1.0 } else { 0.0 })),
        ));
        out.push(family(
            &JOURNAL_FAILED,
            one(&|j| gauge(&JOURNAL_FAILED, &[], if j.is_failed() { 1.0 } else { 0.0 })),
        ));
        out.push(family(
            &JOURNAL_FSYNC_DURATION,
            one(&|j| {
                let mut t = HistTotals::default();
                t.add(&j.fsync_duration);
                histogram(&JOURNAL_FSYNC_DURATION, &[], &t)
            }),
        ));
        out.push(family(
            &JOURNAL_ACK_WAIT,
            one(&|j| {
                let mut t = HistTotals::default();
                t.add(&j.ack_wait);
                histogram(&JOURNAL_ACK_WAIT, &[], &t)
            }),
        ));
        // Present even before the log sink is added, so dashboards see 0.
        let rotations = self
            .sinks
            .iter()
            .find(|(s, _)| *s == Sink::Log)
            .map_or(0, |(_, st)| st.rotations.get());
        out.push(family(
            &LOG_ROTATIONS,
            vec![counter(&LOG_ROTATIONS, &[], rotations)],
        ));
    }

    fn collect_info(&self, out: &mut Vec<MetricFamily>) {
        let series = self
            .cores
            .iter()
            .map(|c| {
                let core = c.core.to_string();
                let driver = c.driver.get().copied().unwrap_or("unknown");
                gauge(&CORE_INFO, &[&core, driver], 1.0)
            })
            .collect();
        out.push(family(&CORE_INFO, series));
        out.push(family(
            &BUILD_INFO,
            vec![gauge(&BUILD_INFO, &[&self.version], 1.0)],
        ));
    }
}

impl Collector for Registry {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    /// Every family, in exposition order; sink families are empty when no sink
    /// was added (a `prometheus::Registry` prunes those, as does `render`).
    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(SPECS.len());
        self.collect_core(&mut out);
        self.collect_sinks(&mut out);
        self.collect_info(&mut out);
        out
    }
}

/// A histogram summed over several sources: non-cumulative counts (the last
/// slot is +Inf) and the sum of observations in seconds.
#[derive(Debug, Default, Clone)]
struct HistTotals {
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl HistTotals {
    fn add(&mut self, h: &Histogram) {
        let (counts, sum) = h.snapshot();
        for (t, c) in self.counts.iter_mut().zip(counts) {
            *t = t.wrapping_add(c);
        }
        self.sum += sum;
    }
}

fn add_counters(totals: &mut [u64], counters: &[Counter]) {
    for (t, c) in totals.iter_mut().zip(counters) {
        *t = t.wrapping_add(c.get());
    }
}

fn full_name(spec: &Spec) -> String {
    format!("{PREFIX}{}", spec.name)
}

fn family(spec: &Spec, series: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(full_name(spec));
    f.set_help(spec.help.to_owned());
    f.set_field_type(match spec.kind {
        Kind::Counter => MetricType::COUNTER,
        Kind::Gauge => MetricType::GAUGE,
        Kind::Histogram => MetricType::HISTOGRAM,
    });
    f.set_metric(series);
    f
}

/// Label pairs in the order of `spec.labels`.
fn label_pairs(spec: &Spec, values: &[&str]) -> Vec<proto::LabelPair> {
    spec.labels
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut p = proto::LabelPair::default();
            p.set_name((*name).to_owned());
            p.set_value((*value).to_owned());
            p
        })
        .collect()
}

fn counter(spec: &Spec, labels: &[&str], value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::from_label(label_pairs(spec, labels));
    m.set_counter(c);
    m
}

fn gauge(spec: &Spec, labels: &[&str], value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::from_label(label_pairs(spec, labels));
    m.set_gauge(g);
    m
}

/// A histogram series with cumulative buckets; the encoder adds `+Inf`
/// from the sample count, which is the total of every slot.
fn histogram(spec: &Spec, labels: &[&str], totals: &HistTotals) -> proto::Metric {
    let mut running = 0u64;
    let mut buckets = Vec::with_capacity(BUCKETS.len());
    for (bound, count) in BUCKETS.iter().zip(totals.counts.iter()) {
        running = running.wrapping_add(*count);
        let mut b = proto::Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(running);
        buckets.push(b);
    }
    let total = totals.counts.iter().fold(0u64, |a, c| a.wrapping_add(*c));
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(total);
    h.set_sample_sum(totals.sum);
    let mut m = proto::Metric::from_label(label_pairs(spec, labels));
    m.set_histogram(h);
    m
}

/// A counter family with one label drawn from a bounded enum, summed across
/// cores.
fn labelled<L: Copy>(
    spec: &Spec,
    all: &[L],
    name: impl Fn(L) -> &'static str,
    index: impl Fn(L) -> usize,
    cores: &[&CoreMetrics],
    field: impl Fn(&CoreMetrics) -> &[Counter],
) -> MetricFamily {
    let mut totals = vec![0u64; all.len()];
    for m in cores {
        add_counters(&mut totals, field(m));
    }
    let series = all
        .iter()
        .map(|l| {
            counter(
                spec,
                &[name(*l)],
                totals.get(index(*l)).copied().unwrap_or(0),
            )
        })
        .collect();
    family(spec, series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Value of the sample line `name{labels}` (labels verbatim, "" for none).
    fn sample(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| !l.starts_with('#') && l.rsplit_once(' ').map(|(s, _)| s) == Some(series))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    fn two_cores() -> (Registry, Arc<CoreMetrics>, Arc<CoreMetrics>) {
        let a = Arc::new(CoreMetrics::default());
        let b = Arc::new(CoreMetrics::default());
        let mut r = Registry::new("1.2.3");
        r.add_core(1, b.clone());
        r.add_core(0, a.clone());
        (r, a, b)
    }

    #[test]
    fn every_series_carries_exactly_its_family_labels() {
        let (mut r, _, _) = two_cores();
        r.add_sink(Sink::Kafka, Arc::new(SinkStats::default()));
        r.set_journal(Arc::new(JournalStats::default()));
        let families = r.collect();
        assert_eq!(families.len(), SPECS.len());
        for (spec, fam) in SPECS.iter().zip(&families) {
            assert_eq!(fam.name(), full_name(spec));
            assert!(!fam.get_metric().is_empty(), "{}", spec.name);
            for m in fam.get_metric() {
                let names: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
                assert_eq!(names, spec.labels, "{}", spec.name);
            }
        }
    }

    #[test]
    fn every_spec_has_a_valid_desc() {
        let r = Registry::new("x");
        assert_eq!(r.desc().len(), SPECS.len());
        let mut names: Vec<_> = SPECS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SPECS.len(), "duplicate metric name");
    }

    #[test]
    fn sums_across_cores() {
        let (r, a, b) = two_cores();
        a.request(Route::Pixel, 200, Duration::from_micros(50));
        a.request(Route::Pixel, 204, Duration::from_millis(3));
        b.request(Route::Pixel, 200, Duration::from_secs(10));
        b.request(Route::Proxy, 502, Duration::from_millis(30));
        a.connections_open.set(3);
        b.connections_open.set(4);
        a.bytes_sent.add(100);
        b.bytes_sent.add(23);
        a.event(EventSource::Collect, 5);
        b.event(EventSource::Collect, 2);
        b.dropped(DropReason::QueueFull, 7);
        a.auth_failure(AuthFailure::Expired);
        b.auth_failure(AuthFailure::Expired);
        b.token_issued(TokenKind::Fetched);
        a.upstream_requests[StatusClass::Success.index()].add(9);
        b.upstream_error(UpstreamError::Timeout);
        a.upstream_connects.add(2);
        b.upstream_connects.add(1);
        b.upstream_pool_idle.set(6);
        r.set_core_driver(0, "io_uring").unwrap();
        r.set_core_driver(1, "legacy").unwrap();
        r.set_core_driver(1, "io_uring").unwrap(); // first value wins

        let mut t = String::new();
        r.render(&mut t);
        let p = "trackgate_";
        let s = |series: &str| sample(&t, &format!("{p}{series}"));
        assert_eq!(
            s(r#"requests_total{route="pixel",status_class="2xx"}"#),
            3.0
        );
        assert_eq!(
            s(r#"requests_total{route="proxy",status_class="5xx"}"#),
            1.0
        );
        assert_eq!(
            s(r#"requests_total{route="proxy",status_class="2xx"}"#),
            0.0
        );
        assert_eq!(s(r#"request_duration_seconds_count{route="pixel"}"#), 3.0);
        assert_eq!(
            s(r#"request_duration_seconds_bucket{route="pixel",le="0.0001"}"#),
            1.0
        );
        assert_eq!(
            s(r#"request_duration_seconds_bucket{route="pixel",le="0.005"}"#),
            2.0
        );
        assert_eq!(
            s(r#"request_duration_seconds_bucket{route="pixel",le="5"}"#),
            2.0
        );
        assert_eq!(
            s(r#"request_duration_seconds_bucket{route="pixel",le="+Inf"}"#),
            3.0
        );
        assert!((s(r#"request_duration_seconds_sum{route="pixel"}"#) - 10.00305).abs() < 1e-9);
        assert_eq!(s("connections_open"), 7.0);
        assert_eq!(s("bytes_sent_total"), 123.0);
        assert_eq!(s(r#"events_total{source="collect"}"#), 7.0);
        assert_eq!(s(r#"events_total{source="pixel"}"#), 0.0);
        assert_eq!(s(r#"events_dropped_total{reason="queue_full"}"#), 7.0);
        assert_eq!(s(r#"auth_failures_total{reason="expired"}"#), 2.0);
        assert_eq!(s(r#"tokens_issued_total{kind="f"}"#), 1.0);
        assert_eq!(s(r#"upstream_requests_total{status_class="2xx"}"#), 9.0);
        assert_eq!(s(r#"upstream_errors_total{kind="timeout"}"#), 1.0);
        assert_eq!(s("upstream_connects_total"), 3.0);
        assert_eq!(s("upstream_pool_idle"), 6.0);
        assert_eq!(s("upstream_duration_seconds_count"), 0.0);
        assert_eq!(s(r#"core_info{core="0",driver="io_uring"}"#), 1.0);
        assert_eq!(s(r#"core_info{core="1",driver="legacy"}"#), 1.0);
        assert_eq!(s(r#"build_info{version="1.2.3"}"#), 1.0);
        assert!(matches!(
            r.set_core_driver(9, "x"),
            Err(MetricsError::UnknownCore(9))
        ));
    }

    #[test]
    fn first_render_has_every_family_and_every_label_combination() {
        let (mut r, _, _) = two_cores();
        let log = Arc::new(SinkStats::default());
        r.add_sink(Sink::Log, log.clone());
        r.set_journal(Arc::new(JournalStats::default()));
        let mut t = String::new();
        r.render(&mut t);
        for spec in SPECS {
            let name = full_name(spec);
            assert!(
                t.contains(&format!("# HELP {name} {}\n", spec.help)),
                "{name}"
            );
            let kind = match spec.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert!(t.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        let p = "trackgate_";
        let requests = t
            .lines()
            .filter(|l| l.starts_with(&format!("{p}requests_total{{")))
            .count();
        assert_eq!(requests, Route::COUNT * StatusClass::COUNT);
        let failures = t
            .lines()
            .filter(|l| l.starts_with(&format!("{p}sink_failures_total{{")))
            .count();
        assert_eq!(failures, SinkFailure::COUNT);
        for reason in AuthFailure::ALL {
            assert_eq!(
                sample(
                    &t,
                    &format!("{p}auth_failures_total{{reason=\"{}\"}}", reason.as_str())
                ),
                0.0
            );
        }
        assert_eq!(
            sample(
                &t,
                &format!("{p}core_info{{core=\"0\",driver=\"unknown\"}}")
            ),
            1.0
        );
        assert_eq!(sample(&t, &format!("{p}sink_up{{sink=\"log\"}}")), 0.0);
        log.set_healthy();
        log.rotations.inc();
        log.events_written.add(41);
        log.failure(SinkFailure::Fsync);
        log.queue_depth.set(2);
        log.flush_duration.observe(Duration::from_millis(2));
        let mut t = String::new();
        r.render(&mut t);
        assert_eq!(sample(&t, &format!("{p}sink_up{{sink=\"log\"}}")), 1.0);
        assert_eq!(sample(&t, &format!("{p}log_rotations_total")), 1.0);
        assert_eq!(
            sample(&t, &format!("{p}sink_events_written_total{{sink=\"log\"}}")),
            41.0
        );
        assert_eq!(
            sample(
                &t,
                &format!("{p}sink_failures_total{{sink=\"log\",kind=\"fsync\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(&t, &format!("{p}sink_queue_depth{{sink=\"log\"}}")),
            2.0
        );
        assert_eq!(
            sample(
                &t,
                &format!("{p}sink_flush_duration_seconds_count{{sink=\"log\"}}")
            ),
            1.0
        );
        assert!(!t.contains("sink=\"kafka\""), "kafka was never added");
    }

    #[test]
    fn sinks_not_added_leave_valid_output() {
        let r = Registry::new("0.1.0");
        let mut t = String::new();
        r.render(&mut t);
        assert!(!t.contains("trackgate_sink_up"), "no sink, no sink series");
        assert!(!t.contains("trackgate_core_info"), "no core, no core_info");
        assert_eq!(sample(&t, "trackgate_log_rotations_total"), 0.0);
        // Every sample line's family was announced by a TYPE line before it.
        let mut typed = Vec::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_owned());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(
                    typed.iter().any(|f| name == f
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name == format!("{f}{s}"))),
                    "sample before its TYPE: {l}"
                );
            }
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_count() {
        let (mut r, a, b) = two_cores();
        let sink = Arc::new(SinkStats::default());
        r.add_sink(Sink::Postgres, sink.clone());
        for (i, us) in [50u64, 80, 300, 700, 1_500, 40_000, 900_000, 7_000_000]
            .iter()
            .enumerate()
        {
            let m = if i % 2 == 0 { &a } else { &b };
            m.upstream_duration.observe(Duration::from_micros(*us));
            sink.flush_duration.observe(Duration::from_micros(*us));
        }
        let mut t = String::new();
        r.render(&mut t);
        for (metric, labels) in [
            ("trackgate_upstream_duration_seconds", ""),
            (
                "trackgate_sink_flush_duration_seconds",
                "sink=\"postgres\",",
            ),
        ] {
            let mut last = 0.0;
            let mut les = Vec::new();
            for l in t
                .lines()
                .filter(|l| l.starts_with(&format!("{metric}_bucket{{{labels}le=")))
            {
                let v: f64 = l.rsplit_once(' ').unwrap().1.parse().unwrap();
                assert!(v >= last, "not cumulative: {l}");
                last = v;
                les.push(
                    l.split("le=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
            assert_eq!(les.len(), BUCKETS.len() + 1);
            assert_eq!(les.last().map(String::as_str), Some("+Inf"));
            let count_series = if labels.is_empty() {
                format!("{metric}_count")
            } else {
                format!("{metric}_count{{{}}}", labels.trim_end_matches(','))
            };
            assert_eq!(last, 8.0);
            assert_eq!(sample(&t, &count_series), 8.0);
        }
        assert_eq!(
            sample(
                &t,
                "trackgate_upstream_duration_seconds_bucket{le=\"0.00025\"}"
            ),
            2.0
        );
        assert_eq!(
            sample(&t, "trackgate_upstream_duration_seconds_bucket{le=\"1\"}"),
            7.0
        );
    }

    #[test]
    fn registers_in_a_prometheus_registry() {
        let (mut r, a, _) = two_cores();
        r.add_sink(Sink::Log, Arc::new(SinkStats::default()));
        r.set_journal(Arc::new(JournalStats::default()));
        a.bytes_received.add(5);
        let prom = prometheus::Registry::new();
        prom.register(Box::new(r)).unwrap();
        let families = prom.gather();
        assert_eq!(families.len(), SPECS.len());
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap();
        assert_eq!(sample(&text, "trackgate_bytes_received_total"), 5.0);
    }

    #[test]
    fn errors_name_the_setting() {
        let addr: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let e = MetricsError::Bind {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("METRICS_ADDR") && msg.contains("127.0.0.1:9100"),
            "{msg}"
        );
    }
}
