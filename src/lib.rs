//! trackgate: a first-party tracking pixel and event collector, built as a
//! thread-per-core io_uring reverse proxy.
//!
//! Data flows one way: request → core (`server`) → local answer (`track`) or
//! origin (`proxy`, with `inject` on HTML) → encoded event → bounded channel
//! (`sink`) → sink threads. Each module's doc comment says what it owns.

pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod inject;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod server;
pub mod sink;
pub mod track;
