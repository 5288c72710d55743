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
