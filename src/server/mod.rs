//! The server: start-up, the pinned cores, signals and graceful shutdown.
//!
//! `run` starts the journal and the sinks, the origin resolver and one thread
//! per core (each a monoio runtime with its own `SO_REUSEPORT` listener and
//! its own channel to the journal, see [`cores`]), then the main thread only
//! waits for signals: SIGHUP reopens the event file, SIGTERM/SIGINT stop
//! accepting, let requests in flight finish within `SHUTDOWN_TIMEOUT_S`, let
//! the journal commit what the cores queued and the sinks deliver what they
//! can in the time left (the rest stays in the journal), and exit 0.

pub mod conn;
pub mod cores;
pub mod signals;

use crate::config::Config;
use crate::metrics::core::CoreMetrics;
use crate::metrics::Registry;
use crate::proxy::upstream::Upstream;
use crate::sink::{self, SinkConfig};
use crate::{error, info, warn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State every core reads (never writes) on its request path, plus the
/// shutdown flag the main thread sets.
pub struct Shared {
    pub cfg: Config,
    /// Set once on SIGTERM/SIGINT: cores stop accepting and close idle
    /// connections; `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The journal's state, for `/readyz`.
    pub journal_stats: Arc<crate::metrics::sinks::JournalStats>,
    /// Sink health, for `/readyz`.
    pub sink_stats: Vec<(
        crate::metrics::labels::Sink,
        Arc<crate::metrics::sinks::SinkStats>,
    )>,
    /// The origin's addresses (refreshed by the resolver thread).
    pub upstream: Option<Arc<Upstream>>,
}

impl Shared {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Raises `RLIMIT_NOFILE` to its hard limit (a proxy holds two descriptors
/// per request in flight).
fn raise_nofile() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return None;
            }
        }
        Some(lim.rlim_cur)
    }
}

/// Runs the proxy until SIGTERM/SIGINT. Returns the process exit code.
/// `on_listening` is called with the bound address once every core listens.
pub fn run(cfg: Config, on_listening: &dyn Fn(std::net::SocketAddr)) -> i32 {
    if let Err(e) = cores::plan(&cfg) {
        eprintln!("trackgate: configuration error: {e}");
        return 2;
    }
    for w in &cfg.warnings {
        warn!("configuration warning", detail = w);
    }
    if let Some(n) = raise_nofile() {
        info!("file descriptor limit", nofile = n);
    }
    // Block the signals we handle before any thread starts, so every thread
    // inherits the mask and only the main thread receives them.
    let signals = match signals::Signals::block() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot block signals", error = e);
            return 1;
        }
    };

    // The origin first: a name that does not resolve stops the start-up
    // before the journal's DATA_DIR is touched.
    let upstream = match &cfg.destination {
        Some(dest) => match Upstream::start(dest.clone(), cfg.upstream_dns_ttl) {
            Ok(u) => Some(u),
            Err(e) => {
                error!("cannot resolve FORWARD_DESTINATION", error = e);
                return 1;
            }
        },
        None => None,
    };

    let n_cores = match cores::plan(&cfg) {
        Ok(p) => p.len(),
        Err(e) => {
            eprintln!("trackgate: configuration error: {e}");
            return 2;
        }
    };
    let sink_cfg = SinkConfig {
        outputs: cfg.outputs.clone(),
        queue_capacity: cfg.queue_capacity,
        journal: sink::journal::JournalConfig::new(cfg.data_dir.clone(), cfg.journal_max_bytes),
        fsync_interval: cfg.journal_fsync,
        ack_mode: cfg.ack_mode,
        cores: n_cores,
        batch_size: cfg.batch_size,
        wait_for_lock: true,
        postgres: cfg.pg.clone(),
        kafka: cfg.kafka.clone(),
        log: sink::log::LogConfig {
            path: cfg.log_path.clone(),
            rotate_bytes: cfg.log_rotate_bytes,
            backups: cfg.log_backups,
            max_age_days: cfg.log_max_age_days,
            fsync: cfg.log_fsync,
            flush_interval: cfg.flush_interval,
            batch_size: cfg.batch_size,
        },
    };
    let (sink_handles, sinks) = match sink::start(sink_cfg) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start the sinks", error = e);
            return 1;
        }
    };

    let shutdown_timeout = cfg.shutdown_timeout;
    let metrics_cfg = (cfg.metrics_enabled, cfg.metrics_addr);
    let shared = Arc::new(Shared {
        cfg,
        draining: AtomicBool::new(false),
        journal_stats: sinks.journal_stats(),
        sink_stats: sinks.stats(),
        upstream,
    });

    let started = match cores::start(&shared, sink_handles) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start the cores", error = e);
            shared.draining.store(true, Ordering::Relaxed);
            sinks.shutdown(shutdown_timeout);
            return 1;
        }
    };

    let mut registry = Registry::new(env!("CARGO_PKG_VERSION"));
    for (i, (m, driver)) in started.metrics.iter().enumerate() {
        registry.add_core(i, Arc::clone(m));
        let _ = registry.set_core_driver(i, driver);
    }
    for (kind, stats) in &shared.sink_stats {
        registry.add_sink(*kind, Arc::clone(stats));
    }
    registry.set_journal(Arc::clone(&shared.journal_stats));
    let registry = Arc::new(registry);
    let metrics_server = if metrics_cfg.0 {
        match crate::metrics::serve(Arc::clone(&registry), metrics_cfg.1) {
            Ok(s) => {
                info!("metrics listening", addr = metrics_cfg.1);
                Some(s)
            }
            Err(e) => {
                error!("cannot serve metrics", error = e);
                shared.draining.store(true, Ordering::Relaxed);
                started.join();
                sinks.shutdown(shutdown_timeout);
                return 1;
            }
        }
    } else {
        None
    };

    info!(
        "listening",
        addr = started.addr,
        cores = started.metrics.len(),
        origin = shared
            .cfg
            .destination
            .as_ref()
            .map(|d| d.authority.clone())
            .unwrap_or_else(|| "-".into())
    );
    on_listening(started.addr);

    loop {
        match signals.wait() {
            signals::Signal::Reopen => {
                info!("SIGHUP: reopening the event file");
                sinks.reopen();
            }
            signals::Signal::Stop(name) => {
                info!("shutting down", signal = name);
                break;
            }
        }
    }

    let t0 = Instant::now();
    shared.draining.store(true, Ordering::Relaxed);
    let unfinished = started.join();
    if unfinished > 0 {
        warn!(
            "shutdown deadline passed with connections still open",
            connections = unfinished
        );
    }
    let left = shutdown_timeout
        .saturating_sub(t0.elapsed())
        .max(Duration::from_secs(1));
    let report = sinks.shutdown(left);
    if let Some(m) = metrics_server {
        m.shutdown();
    }
    info!("stopped", sinks = report);
    0
}

/// Metrics of the started cores and the address they listen on.
pub struct Started {
    pub addr: std::net::SocketAddr,
    pub metrics: Vec<(Arc<CoreMetrics>, &'static str)>,
    threads: Vec<std::thread::JoinHandle<usize>>,
}

impl Started {
    /// Waits for every core to finish draining (they watch the draining
    /// flag and each enforces `SHUTDOWN_TIMEOUT_S` itself). Returns how many
    /// connections were still open at the deadline.
    pub fn join(self) -> usize {
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap_or(0))
            .sum()
    }
}
