//! The counters one core owns. A core writes only its own [`CoreMetrics`]
//! (single-writer atomics: no shared cache lines on the request path); the
//! scrape thread reads every core's copy and sums them.

use super::labels::{
    AuthFailure, DropReason, EventSource, InjectResult, Route, StatusClass, TokenKind,
    UpstreamError,
};
use super::prim::{Counter, Gauge, Histogram};

/// Per-core metrics. Cache-line aligned so two cores' copies never share a line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct CoreMetrics {
    /// `requests_total{route,status_class}`.
    pub requests: [[Counter; StatusClass::COUNT]; Route::COUNT],
    /// `request_duration_seconds{route}`.
    pub request_duration: [Histogram; Route::COUNT],
    /// `connections_open`.
    pub connections_open: Gauge,
    /// `connections_accepted_total`.
    pub connections_accepted: Counter,
    /// `connections_refused_total`.
    pub connections_refused: Counter,
    /// `rate_limited_total`.
    pub rate_limited: Counter,
    /// `desync_ambiguous_total`.
    pub desync_ambiguous: Counter,
    /// `bytes_received_total` (from clients).
    pub bytes_received: Counter,
    /// `bytes_sent_total` (to clients).
    pub bytes_sent: Counter,
    /// `events_total{source}`: events queued toward the sinks.
    pub events: [Counter; EventSource::COUNT],
    /// `events_dropped_total{reason}`.
    pub events_dropped: [Counter; DropReason::COUNT],
    /// `auth_failures_total{reason}`.
    pub auth_failures: [Counter; AuthFailure::COUNT],
    /// `tokens_issued_total{kind}`.
    pub tokens_issued: [Counter; TokenKind::COUNT],
    /// `inject_total{result}`: HTML responses injected or skipped, by reason.
    pub inject: [Counter; InjectResult::COUNT],
    /// `upstream_requests_total{status_class}`.
    pub upstream_requests: [Counter; StatusClass::COUNT],
    /// `upstream_duration_seconds` (request sent → response head received).
    pub upstream_duration: Histogram,
    /// `upstream_errors_total{kind}`.
    pub upstream_errors: [Counter; UpstreamError::COUNT],
    /// `upstream_connects_total`.
    pub upstream_connects: Counter,
    /// `upstream_pool_idle`.
    pub upstream_pool_idle: Gauge,
}

impl CoreMetrics {
    #[inline]
    pub fn request(&self, route: Route, status: u16, elapsed: std::time::Duration) {
        self.requests[route.index()][StatusClass::of(status).index()].inc();
        self.request_duration[route.index()].observe(elapsed);
    }

    #[inline]
    pub fn event(&self, source: EventSource, n: u64) {
        self.events[source.index()].add(n);
    }

    #[inline]
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.events_dropped[reason.index()].add(n);
    }

    #[inline]
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason.index()].inc();
    }

    #[inline]
    pub fn token_issued(&self, kind: TokenKind) {
        self.tokens_issued[kind.index()].inc();
    }

    #[inline]
    pub fn inject(&self, result: InjectResult) {
        self.inject[result.index()].inc();
    }

    #[inline]
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind.index()].inc();
    }
}
