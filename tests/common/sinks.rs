//! Helpers for the sink tests: signed collect requests carrying events with
//! known ids, sent on fresh connections.

use super::{public_key_token, UA};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A valid UUID naming test event `n`.
pub fn event_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Sends one request on a fresh connection; the status, headers and body
/// text, or `None` when the connection failed (the process is gone).
pub fn send(addr: SocketAddr, req: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(req).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text))
}

pub fn collect_req(token: &str, ids: &[String], pad: usize) -> Vec<u8> {
    let events: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"type":"load","event_id":"{id}","payload":{{"pad":"{}"}}}}"#,
                "x".repeat(pad)
            )
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    let sig = trackgate::track::token::sign(token, body.as_bytes()).expect("sign");
    let mut req = format!(
        "POST /collect HTTP/1.1\r\nHost: t\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

pub fn token(addr: SocketAddr) -> String {
    public_key_token(addr, UA)["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// Clients posting collect batches (and pixels) until told to stop or the
/// process goes away. Returns the ids that got a 202 and the pixel types
/// that got a GIF.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    pixels: Arc<Mutex<HashSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, token: &str, clients: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let pixels = Arc::new(Mutex::new(HashSet::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, acked, pixels) = (stop.clone(), acked.clone(), pixels.clone());
                let token = token.to_string();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let ids: Vec<String> =
                            (0..3).map(|k| event_id(c << 32 | (n * 3 + k))).collect();
                        let req = collect_req(&token, &ids, 40);
                        match send(addr, &req) {
                            Some((202, _)) => acked.lock().expect("lock").extend(ids),
                            Some(_) => {}
                            None => break,
                        }
                        let kind = format!("px-{c}-{n}");
                        let px = format!(
                            "GET /px.gif?e={kind} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                        );
                        match send(addr, px.as_bytes()) {
                            Some((200, t)) if t.contains("image/gif") => {
                                pixels.lock().expect("lock").insert(kind);
                            }
                            Some(_) => {}
                            None => break,
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            pixels,
            threads,
        }
    }

    pub fn finish(self) -> (HashSet<String>, HashSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let a = self.acked.lock().expect("lock").clone();
        let p = self.pixels.lock().expect("lock").clone();
        (a, p)
    }
}

/// Posts `n` events in requests of 10 from id `from`, one request after
/// the other; the ids that got a 202.
pub fn post_one_by_one(addr: SocketAddr, token: &str, from: u64, n: u64) -> HashSet<String> {
    post_many(addr, token, from, n, 1, 10).0
}

/// Posts events `base..base+n` from `clients` threads, `per_request` events
/// per collect request (fresh connection each); the ids that got a 202, and
/// the 202s' latencies.
pub fn post_many(
    addr: SocketAddr,
    token: &str,
    base: u64,
    n: u64,
    clients: u64,
    per_request: u64,
) -> (HashSet<String>, Vec<std::time::Duration>) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let token = token.to_string();
            std::thread::spawn(move || {
                let mut acked = HashSet::new();
                let mut waits = Vec::new();
                let mut i = c * per_request;
                while i < n {
                    let ids: Vec<String> = (i..(i + per_request).min(n))
                        .map(|k| event_id(base + k))
                        .collect();
                    let req = collect_req(&token, &ids, 40);
                    let t0 = std::time::Instant::now();
                    if let Some((202, _)) = send(addr, &req) {
                        waits.push(t0.elapsed());
                        acked.extend(ids);
                    }
                    i += clients * per_request;
                }
                (acked, waits)
            })
        })
        .collect();
    let mut acked = HashSet::new();
    let mut waits = Vec::new();
    for t in threads {
        let (a, w) = t.join().expect("client");
        acked.extend(a);
        waits.extend(w);
    }
    (acked, waits)
}

/// Scrapes `maddr` until `series` is at least `want` (or `within` passed);
/// returns its last value.
pub fn wait_metric(maddr: SocketAddr, series: &str, want: f64, within: std::time::Duration) -> f64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = super::metric(&super::scrape(maddr), series).unwrap_or(0.0);
        if v >= want || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The `q` quantile (0..=1) of `d`, in milliseconds.
pub fn quantile_ms(d: &mut [std::time::Duration], q: f64) -> f64 {
    if d.is_empty() {
        return 0.0;
    }
    d.sort_unstable();
    let i = ((d.len() - 1) as f64 * q).round() as usize;
    d[i].as_secs_f64() * 1000.0
}
