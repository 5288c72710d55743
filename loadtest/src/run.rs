//! The load run: one pinned monoio thread per `--cores`, the connections
//! spread over them, each connection a task sending one request at a time
//! (closed loop) or on its open-loop [`Schedule`]. Per-thread results are
//! merged at the end; nothing is shared between threads while running.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::args::{Driver, RunArgs};
use crate::http::{parse_response, Response};
use crate::scenario::{check, Requests};
use crate::schedule::Schedule;

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Error messages kept to show (the count is always exact).
const SAMPLES: usize = 5;

/// What a run measured.
pub struct Outcome {
    pub hist: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    pub warmup_errors: u64,
    pub samples: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            hist: new_hist(),
            requests: 0,
            errors: 0,
            warmup_errors: 0,
            samples: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn error(&mut self, measured: bool, msg: String) {
        if measured {
            self.errors += 1;
        } else {
            self.warmup_errors += 1;
        }
        if self.samples.len() < SAMPLES {
            self.samples.push(msg);
        }
    }

    fn merge(&mut self, o: Outcome) {
        let _ = self.hist.add(&o.hist);
        self.requests += o.requests;
        self.errors += o.errors;
        self.warmup_errors += o.warmup_errors;
        for s in o.samples {
            if self.samples.len() < SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

/// Latency in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("static histogram bounds are valid")
}

struct Plan {
    args: RunArgs,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// Runs the load described by `args` and returns the merged outcome.
pub fn run(args: &RunArgs) -> Result<Outcome, String> {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    // Threads get their connections before the clock starts.
    let start = Instant::now() + Duration::from_millis(200);
    let plan = Plan {
        args: args.clone(),
        start,
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    let plan = Arc::new(plan);
    let mut threads = Vec::new();
    for t in 0..args.cores {
        let conns: Vec<usize> = (0..args.connections)
            .filter(|c| c % args.cores == t)
            .collect();
        let cpu = cpus.get(t % cpus.len().max(1)).copied();
        let plan = Arc::clone(&plan);
        let h = std::thread::Builder::new()
            .name(format!("loadtest-{t}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(cpu);
                }
                run_thread(&plan, conns)
            })
            .map_err(|e| format!("cannot start a load thread: {e}"))?;
        threads.push(h);
    }
    let mut total = Outcome::new();
    for h in threads {
        let o = h
            .join()
            .map_err(|_| "a load thread panicked".to_string())??;
        total.merge(o);
    }
    total.elapsed = args.duration;
    Ok(total)
}

fn run_thread(plan: &Arc<Plan>, conns: Vec<usize>) -> Result<Outcome, String> {
    let out = Rc::new(RefCell::new(Outcome::new()));
    let work = {
        let out = Rc::clone(&out);
        let plan = Arc::clone(plan);
        async move {
            let mut tasks = Vec::new();
            for c in conns {
                let out = Rc::clone(&out);
                tasks.push(monoio::spawn(connection(Arc::clone(&plan), c, out)));
            }
            for t in tasks {
                t.await;
            }
        }
    };
    let err = |e: std::io::Error| format!("cannot build the monoio runtime: {e}");
    match plan.args.driver {
        Driver::Uring => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .build()
            .map_err(err)?
            .block_on(work),
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(err)?
            .block_on(work),
    }
    Ok(Rc::try_unwrap(out)
        .map_err(|_| "load tasks still hold the results".to_string())?
        .into_inner())
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

/// A connection's wait for its open-loop slots, to the microsecond.
///
/// monoio's timer has a resolution of one millisecond and rounds up: a
/// request slept to its slot goes out up to a millisecond or two late, and
/// as latency is measured from the slot (against coordinated omission),
/// that lateness would be charged to the server: at 1,000 req/s every
/// server measured p50 ≈ 0.95 ms, p99 ≈ 1.6 ms. A timerfd (nanosecond
/// resolution) waited on through the runtime instead wakes the task on
/// time. Falls back to the runtime's timer if the timerfd cannot be made.
struct Pacer {
    timer: Option<(monoio::net::UnixStream, std::os::fd::RawFd)>,
}

impl Pacer {
    fn new() -> Pacer {
        use std::os::fd::FromRawFd;
        // SAFETY: creates a descriptor this function owns from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Pacer { timer: None };
        }
        // The runtime registers any pollable descriptor this way; the
        // stream is only ever waited on for readability, never read or
        // written as a socket. SAFETY: `fd` is ours and open.
        let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        Pacer {
            timer: monoio::net::UnixStream::from_std(std).ok().map(|s| (s, fd)),
        }
    }

    async fn until(&self, t: Instant) {
        let now = Instant::now();
        if t <= now {
            return;
        }
        let Some((stream, fd)) = &self.timer else {
            return sleep_until(t).await;
        };
        let d = t - now;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: arms our own timerfd with a valid itimerspec.
        if unsafe { libc::timerfd_settime(*fd, 0, &spec, std::ptr::null_mut()) } < 0 {
            return sleep_until(t).await;
        }
        loop {
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into a local buffer from our timerfd.
            let n = unsafe { libc::read(*fd, expirations.as_mut_ptr().cast(), 8) };
            if n == 8 || Instant::now() >= t {
                return;
            }
            if stream.readable(false).await.is_err() {
                return sleep_until(t).await;
            }
        }
    }
}

/// One keep-alive connection: reconnects after an error or a close.
async fn connection(plan: Arc<Plan>, idx: usize, out: Rc<RefCell<Outcome>>) {
    let args = &plan.args;
    let schedule = args.rate.map(|r| Schedule::new(r, args.connections, idx));
    let mut inflate = libdeflater::Decompressor::new();
    let mut k: u64 = 0;
    let mut sent: u64 = 0;
    sleep_until(plan.start).await;
    let pacer = Pacer::new();
    'reconnect: while Instant::now() < plan.end {
        let stream = match TcpStream::connect(args.url.addr).await {
            Ok(s) => s,
            Err(e) => {
                let measured = Instant::now() >= plan.measure_from;
                out.borrow_mut()
                    .error(measured, format!("connect to {}: {e}", args.url.addr));
                monoio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ip = stream
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let reqs = Requests::build(&args.url, ip, args.hmac_secret.as_deref());
        let mut stream = stream;
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            let intended = match schedule {
                Some(s) => {
                    let t = plan.start + s.at(k);
                    if t >= plan.end {
                        return;
                    }
                    pacer.until(t).await;
                    t
                }
                None => Instant::now(),
            };
            if intended >= plan.end {
                return;
            }
            k += 1;
            let measured = intended >= plan.measure_from;
            let kind = args.scenario.pick(sent);
            sent += 1;
            let result = monoio::time::timeout(
                REQUEST_TIMEOUT,
                exchange(&mut stream, reqs.get(kind), &mut buf),
            )
            .await;
            let done = Instant::now();
            let resp = match result {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    out.borrow_mut().error(measured, format!("{kind:?}: {e}"));
                    continue 'reconnect;
                }
                Err(_) => {
                    out.borrow_mut().error(
                        measured,
                        format!("{kind:?}: no answer within {REQUEST_TIMEOUT:?}"),
                    );
                    continue 'reconnect;
                }
            };
            let verdict = check(kind, &resp, &mut inflate);
            let mut o = out.borrow_mut();
            if measured {
                o.requests += 1;
                let us = (done - intended).as_micros().max(1) as u64;
                let _ = o.hist.record(us.min(100_000_000));
            }
            if let Err(e) = verdict {
                o.error(measured, e);
            }
            drop(o);
            if resp.close {
                continue 'reconnect;
            }
        }
    }
}

/// Writes one request and reads its response (bytes past it stay in `buf`).
async fn exchange(
    stream: &mut TcpStream,
    req: Bytes,
    buf: &mut Vec<u8>,
) -> Result<Response, String> {
    let (res, _) = stream.write_all(req).await;
    res.map_err(|e| format!("write: {e}"))?;
    loop {
        if !buf.is_empty() {
            if let Some((resp, used)) = parse_response(buf)? {
                buf.drain(..used);
                return Ok(resp);
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let owned = std::mem::take(buf);
        let len = owned.len();
        let (res, slice) = stream.read(owned.slice_mut(len..)).await;
        *buf = slice.into_inner();
        match res {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
