//! The cores: one thread per CPU, pinned with `core_affinity`, each running
//! its own monoio runtime (io_uring, or epoll where io_uring is blocked, as
//! Docker's default seccomp profile does) with its own `SO_REUSEPORT`
//! listener, upstream pool, metrics, buffers and channel to the journal.
//! Nothing on the request path is shared between cores; the configuration
//! is shared read-only.
//!
//! Because every core listens with `SO_REUSEPORT`, a new trackgate process can
//! bind the same port beside an old one that is draining: start the new one,
//! then send SIGTERM to the old one, and no connection is refused.

use super::{conn, Shared, Started};
use crate::config::ConfigError;
use crate::metrics::core::CoreMetrics;
use crate::proxy::inject::InjectState;
use crate::proxy::pool::Pool;
use crate::sink::SinkHandle;
use crate::track::endpoints::Tracker;
use crate::{debug, info, warn};
use monoio::io::Canceller;
use monoio::net::{ListenerOpts, TcpListener};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Everything one core owns.
pub struct Core {
    pub id: usize,
    /// `io_uring` or `epoll`.
    pub driver: &'static str,
    pub shared: Arc<Shared>,
    pub metrics: Arc<CoreMetrics>,
    /// The tracking endpoints (tokens, events) of this core.
    pub tracker: Tracker,
    /// HTML injection state (codec, memory budget).
    pub inject: InjectState,
    /// This core's keep-alive connections to the origin.
    pub pool: Pool,
    /// Client connections open on this core.
    pub open: Cell<usize>,
    /// Cancels every idle keep-alive read when draining starts.
    pub idle_cancel: RefCell<Canceller>,
}

impl Core {
    pub fn draining(&self) -> bool {
        self.shared.draining()
    }
}

type Report = Result<(SocketAddr, &'static str), String>;

/// The CPUs the cores run on: the first `CORES` of the process's affinity
/// mask (all of them by default). `None` where the mask cannot be read (the
/// core then runs unpinned).
pub fn plan(
    cfg: &crate::config::Config,
) -> Result<Vec<Option<core_affinity::CoreId>>, ConfigError> {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    match cfg.cores {
        Some(n) if !cpus.is_empty() && n > cpus.len() => Err(ConfigError {
            var: "CORES",
            given: format!("\"{n}\""),
            expected: format!(
                "at most {} (the CPUs in this process's affinity mask)",
                cpus.len()
            ),
        }),
        Some(n) if cpus.is_empty() => Ok(vec![None; n]),
        Some(n) => Ok(cpus[..n].iter().copied().map(Some).collect()),
        None if cpus.is_empty() => Ok(vec![None]),
        None => Ok(cpus.into_iter().map(Some).collect()),
    }
}

/// Starts the cores. Core 0 binds first (so `SERVER_ADDR` with port 0 gets
/// one concrete port) and the others bind the same address.
pub fn start(shared: &Arc<Shared>, sinks: Vec<SinkHandle>) -> Result<Started, String> {
    let cpus = plan(&shared.cfg).map_err(|e| e.to_string())?;
    if sinks.len() != cpus.len() {
        return Err(format!(
            "{} journal channels for {} cores (a bug: report it)",
            sinks.len(),
            cpus.len()
        ));
    }
    let n = cpus.len();
    let mut addr = shared.cfg.server_addr;
    let mut any = shared.cfg.server_addr_any;
    let mut started = Started {
        addr,
        metrics: Vec::with_capacity(n),
        threads: Vec::with_capacity(n),
    };
    for (id, (cpu, sinks2)) in cpus.into_iter().zip(sinks).enumerate() {
        let (tx, rx) = mpsc::channel::<Report>();
        let metrics = Arc::new(CoreMetrics::default());
        let shared2 = Arc::clone(shared);
        let metrics2 = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name(format!("tg-core-{id}"))
            .spawn(move || core_thread(id, cpu, shared2, sinks2, metrics2, addr, any, tx))
            .map_err(|e| format!("cannot start core thread {id}: {e}"))?;
        match rx.recv() {
            Ok(Ok((bound, driver))) => {
                if id == 0 {
                    addr = bound;
                    any = false;
                    started.addr = bound;
                }
                started.metrics.push((metrics, driver));
                started.threads.push(thread);
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(format!("core {id} stopped during start-up"));
            }
        }
    }
    Ok(started)
}

#[allow(clippy::too_many_arguments)]
fn core_thread(
    id: usize,
    cpu: Option<core_affinity::CoreId>,
    shared: Arc<Shared>,
    sinks: SinkHandle,
    metrics: Arc<CoreMetrics>,
    addr: SocketAddr,
    any: bool,
    report: mpsc::Sender<Report>,
) -> usize {
    let pinned = cpu.map(core_affinity::set_for_current).unwrap_or(false);
    let rt = build_runtime(true).or_else(|e| {
        debug!(
            "io_uring task-run flags refused; plain io_uring",
            core = id,
            error = e
        );
        build_runtime(false)
    });
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = report.send(Err(format!("core {id}: cannot build the runtime: {e}")));
            return 0;
        }
    };
    let driver = match &rt {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    rt.block_on(async move {
        let tracker = match Tracker::new(Arc::clone(&shared), sinks, Arc::clone(&metrics)) {
            Ok(t) => t,
            Err(e) => {
                let _ = report.send(Err(format!("core {id}: {e}")));
                return 0;
            }
        };
        let inject = match InjectState::new(&shared.cfg) {
            Ok(s) => s,
            Err(e) => {
                let _ = report.send(Err(format!("core {id}: INJECT_GZIP_LEVEL: {e}")));
                return 0;
            }
        };
        let core = Rc::new(Core {
            id,
            inject,
            driver,
            pool: Pool::new(&shared.cfg, Arc::clone(&metrics)),
            shared,
            metrics,
            tracker,
            open: Cell::new(0),
            idle_cancel: RefCell::new(Canceller::new()),
        });
        let listener = match bind(addr, any) {
            Ok(l) => l,
            Err(e) => {
                let _ = report.send(Err(format!(
                    "core {id}: cannot listen on SERVER_ADDR {addr}: {e}"
                )));
                return 0;
            }
        };
        // The flusher: sends the pixel hits (and server events) a turn of
        // the event loop gathered as one entry, right after that turn's
        // requests (it is woken by the first of them and runs after the
        // tasks already woken).
        let c = Rc::clone(&core);
        monoio::spawn(async move { c.tracker.flush_each_turn().await });
        let local = listener.local_addr().unwrap_or(addr);
        info!("core started", core = id, driver = driver, pinned = pinned);
        let _ = report.send(Ok((local, driver)));
        if id == 0 && core.shared.cfg.test_mode {
            let c = Rc::clone(&core);
            monoio::spawn(async move {
                monoio::time::sleep(Duration::from_secs(1)).await;
                let n = c.tracker.emit_test_events();
                info!("TEST_MODE: sample events sent", events = n);
            });
        }
        accept_loop(&core, &listener).await;
        take_backlog(&core, &listener);
        drop(listener);
        drain(&core).await
    })
}

/// The core's runtime: io_uring, or epoll where io_uring is unavailable or
/// blocked (monoio probes it). `taskrun` asks io_uring to run completion
/// work when the core next enters the kernel (`IORING_SETUP_COOP_TASKRUN`,
/// Linux 5.19) rather than interrupting it with an inter-processor
/// interrupt for every packet that completes a read: on a busy core (and
/// on a VM, where each such interrupt is a costly exit) those interrupts
/// took about a seventh of the core's time (PERFORMANCE.md). The core
/// enters the kernel on every turn of its loop anyway.
fn build_runtime(
    taskrun: bool,
) -> std::io::Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
> {
    let mut urb = io_uring::IoUring::builder();
    if taskrun {
        urb.setup_coop_taskrun().setup_taskrun_flag();
    }
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .uring_builder(urb)
        .build()
}

/// Binds the listener: `[::]` (dual stack) for "every interface", falling
/// back to `0.0.0.0` where IPv6 is unavailable.
fn bind(addr: SocketAddr, any: bool) -> std::io::Result<TcpListener> {
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    match TcpListener::bind_with_config(addr, &opts) {
        Ok(l) => Ok(l),
        Err(e) if any => {
            debug!("IPv6 bind failed, using IPv4", error = e);
            TcpListener::bind_with_config(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()),
                &opts,
            )
        }
        Err(e) => Err(e),
    }
}

async fn wait_draining(core: &Core) {
    while !core.draining() {
        monoio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn accept_loop(core: &Rc<Core>, listener: &TcpListener) {
    loop {
        monoio::select! {
            _ = wait_draining(core) => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    core.metrics.connections_accepted.inc();
                    if core.open.get() >= core.shared.cfg.max_connections {
                        core.metrics.connections_refused.inc();
                        debug!("MAX_CONNECTIONS reached: 503", core = core.id);
                        monoio::spawn(refuse(stream));
                        continue;
                    }
                    let c = Rc::clone(core);
                    monoio::spawn(conn::serve(c, stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) or memory:
                    // back off instead of spinning; everything else is a
                    // connection that died in the backlog.
                    let backoff = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                    if backoff {
                        warn!("accept failed, backing off", core = core.id, error = e);
                        monoio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        debug!("accept failed", core = core.id, error = e);
                    }
                }
            }
        }
    }
}

/// A connection past `MAX_CONNECTIONS`: a 503 that says to come back in a
/// second, then close. Nothing of the request is read; the write gets one
/// second (a client that does not read is simply closed).
async fn refuse(mut stream: monoio::net::TcpStream) {
    use monoio::io::AsyncWriteRentExt;
    const BODY: &str = "503 Service Unavailable: too many connections, retry shortly\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(msg.into_bytes())).await;
    let _ = monoio::io::AsyncWriteRent::shutdown(&mut stream).await;
    // Read what the client sent (at most 64 KiB, half a second) before the
    // descriptor closes: closing with unread input sends a reset, which can
    // destroy the 503 before the client reads it.
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_millis(500);
    for _ in 0..4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, monoio::io::AsyncReadRent::read(&mut stream, buf)).await {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            _ => break,
        }
    }
}

/// Before the listener closes: takes every connection already waiting in
/// its accept queue (Linux resets them when a `SO_REUSEPORT` listener
/// closes), to be answered with `Connection: close`.
fn take_backlog(core: &Rc<Core>, listener: &TcpListener) {
    let fd = listener.as_raw_fd();
    // SAFETY: fcntl and accept4 on the listener's own descriptor; accepted
    // descriptors are owned by the std stream built from them.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return;
        }
        // The epoll driver needs non-blocking sockets; io_uring works with
        // blocking ones, as its own accept returns them.
        let mut sock_flags = libc::SOCK_CLOEXEC;
        if core.driver == "epoll" {
            sock_flags |= libc::SOCK_NONBLOCK;
        }
        loop {
            let cfd = libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), sock_flags);
            if cfd < 0 {
                break;
            }
            let std_stream = std::net::TcpStream::from_raw_fd(cfd);
            let Ok(peer) = std_stream.peer_addr() else {
                continue;
            };
            let Ok(stream) = monoio::net::TcpStream::from_std(std_stream) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            core.metrics.connections_accepted.inc();
            monoio::spawn(conn::serve(Rc::clone(core), stream, peer));
        }
    }
}

/// After the listener closed: wakes idle keep-alive connections (they close)
/// and waits for requests in flight until `SHUTDOWN_TIMEOUT_S`. Returns the
/// connections still open at the deadline.
async fn drain(core: &Rc<Core>) -> usize {
    let deadline = Instant::now() + core.shared.cfg.shutdown_timeout;
    loop {
        let old = core.idle_cancel.replace(Canceller::new());
        let _ = old.cancel();
        // Sleep before looking: connections taken from the backlog have
        // been spawned but not run yet.
        monoio::time::sleep(Duration::from_millis(10)).await;
        if core.open.get() == 0 || Instant::now() >= deadline {
            break;
        }
    }
    core.pool.clear();
    // Stop the flusher task (it holds the core) and let it finish.
    core.tracker.close_events();
    monoio::time::sleep(Duration::from_millis(1)).await;
    core.open.get()
}
