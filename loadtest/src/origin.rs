//! `loadtest origin`: the upstream for the proxy and inject scenarios, so
//! trackgate and nginx are measured against the same origin. It serves a
//! 20 KiB asset under `/static/` and a 50 KiB HTML page everywhere else,
//! gzipped (compressed once at start, as a static pre-compressed file)
//! when the request's `Accept-Encoding` takes gzip, identity otherwise.
//! One pinned monoio thread per `--cores`, `SO_REUSEPORT` listeners.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::args::Driver;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

/// Size of the asset.
pub const ASSET_LEN: usize = 20 * 1024;
/// Size of the identity HTML page.
pub const PAGE_LEN: usize = 50 * 1024;

/// The asset: incompressible bytes (like an image), the same every run.
pub fn asset() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..ASSET_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The page: a shop's product page of exactly [`PAGE_LEN`] bytes, varied
/// text (so gzip has real work), ending in `</body>\n</html>\n`.
pub fn page() -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "organic",
        "cotton",
        "jacket",
        "waterproof",
        "seams",
        "delivery",
        "returns",
        "size",
        "colour",
        "navy",
        "linen",
        "stitched",
        "pocket",
        "collar",
        "review",
        "customers",
        "weather",
        "lightweight",
        "breathable",
        "warranty",
        "sustainable",
        "fabric",
        "zip",
        "hood",
    ];
    let mut p = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Waterproof jacket | Shop</title>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"stylesheet\" href=\"/static/site.css\">\n\
         <script src=\"/static/app.3f9a1c.js\" defer></script>\n</head>\n<body>\n\
         <header><nav><a href=\"/\">Home</a> <a href=\"/products\">Products</a></nav></header>\n<main>\n",
    );
    let tail = "</main>\n<footer><p>&copy; Shop</p></footer>\n</body>\n</html>\n";
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut n = 0;
    while p.len() + tail.len() + 600 < PAGE_LEN {
        n += 1;
        p.push_str(&format!(
            "<section class=\"card\" id=\"p{n}\"><h2>Item {n}</h2><p>"
        ));
        for _ in 0..40 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
            p.push(' ');
        }
        p.push_str(&format!(
            "</p><a href=\"/products/{}\" data-sku=\"{:08x}\">{}.{:02} EUR</a></section>\n",
            x % 1000,
            x as u32,
            x % 300,
            x % 100
        ));
    }
    while p.len() + tail.len() < PAGE_LEN {
        p.push(' ');
    }
    p.push_str(tail);
    p.into_bytes()
}

/// gzip of `data` at level 6 (what a web server's default would send).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut c = libdeflater::Compressor::new(
        libdeflater::CompressionLvl::new(6).expect("level 6 is valid"),
    );
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c
        .gzip_compress(data, &mut out)
        .expect("the bound is large enough");
    out.truncate(n);
    out
}

fn response(ctype: &str, gz: bool, body: &[u8]) -> Bytes {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: public, max-age=60\r\nVary: Accept-Encoding\r\n{}\r\n",
        body.len(),
        if gz { "Content-Encoding: gzip\r\n" } else { "" }
    )
    .into_bytes();
    r.extend_from_slice(body);
    r.into()
}

/// The prebuilt answers.
#[derive(Clone)]
pub struct Answers {
    pub asset: Bytes,
    pub page: Bytes,
    pub page_gz: Bytes,
    pub no_content: Bytes,
}

impl Answers {
    pub fn new() -> Answers {
        let page = page();
        Answers {
            asset: response("image/webp", false, &asset()),
            page: response("text/html; charset=utf-8", false, &page),
            page_gz: response("text/html; charset=utf-8", true, &gzip(&page)),
            no_content: Bytes::from_static(b"HTTP/1.1 204 No Content\r\n\r\n"),
        }
    }

    /// The answer to one request head, and how many body bytes follow it.
    pub fn answer(&self, req: &httparse::Request) -> Result<(Bytes, usize), String> {
        let mut body_len = 0;
        let mut gz = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                body_len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("bad Content-Length")?;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked request bodies are not supported".into());
            } else if h.name.eq_ignore_ascii_case("accept-encoding") {
                gz = accepts_gzip(h.value);
            }
        }
        let path = req.path.unwrap_or("/");
        let a = match req.method {
            Some("GET") | Some("HEAD") if path.starts_with("/static/") => self.asset.clone(),
            Some("GET") | Some("HEAD") if gz => self.page_gz.clone(),
            Some("GET") | Some("HEAD") => self.page.clone(),
            _ => self.no_content.clone(),
        };
        Ok((a, body_len))
    }
}

impl Default for Answers {
    fn default() -> Self {
        Answers::new()
    }
}

/// Whether an `Accept-Encoding` value takes gzip (`gzip` listed without
/// `q=0`).
pub fn accepts_gzip(v: &[u8]) -> bool {
    let v = String::from_utf8_lossy(v).to_ascii_lowercase();
    v.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let zero = parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
        (name == "gzip" || name == "x-gzip") && !zero
    })
}

/// Serves forever on `addr` with `cores` threads.
pub fn serve(addr: SocketAddr, cores: usize, driver: Driver) -> Result<(), String> {
    let answers = Answers::new();
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    // Bind once here so a bad address fails before threads start.
    std::net::TcpListener::bind(addr)
        .map_err(|e| format!("origin: cannot listen on {addr}: {e}"))?;
    let mut threads = Vec::new();
    for t in 0..cores {
        let answers = answers.clone();
        let cpu = cpus.get(t % cpus.len().max(1)).copied();
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            if let Some(cpu) = cpu {
                core_affinity::set_for_current(cpu);
            }
            let work = async move {
                let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
                let l = TcpListener::bind_with_config(addr, &opts)
                    .map_err(|e| format!("origin: cannot listen on {addr}: {e}"))?;
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            monoio::spawn(conn(s, answers.clone()));
                        }
                        Err(e) => eprintln!("origin: accept: {e}"),
                    }
                }
            };
            let err = |e: std::io::Error| format!("origin: runtime: {e}");
            match driver {
                Driver::Uring => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()
                    .map_err(err)?
                    .block_on(work),
                Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .map_err(err)?
                    .block_on(work),
            }
        }));
    }
    eprintln!("origin: listening on {addr} ({cores} thread(s))");
    for t in threads {
        t.join()
            .map_err(|_| "origin thread panicked".to_string())??;
    }
    Ok(())
}

async fn conn(mut s: TcpStream, answers: Answers) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        // Answer every complete request already buffered.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut req = httparse::Request::new(&mut headers);
            let head = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            let Ok((answer, body_len)) = answers.answer(&req) else {
                return;
            };
            if buf.len() < head + body_len {
                break;
            }
            buf.drain(..head + body_len);
            let (res, _) = s.write_all(answer).await;
            if res.is_err() {
                return;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let owned = std::mem::take(&mut buf);
        let len = owned.len();
        let (res, slice) = s.read(owned.slice_mut(len..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_and_asset_sizes() {
        let p = page();
        assert_eq!(p.len(), PAGE_LEN);
        assert!(p.ends_with(b"</body>\n</html>\n"));
        assert_eq!(asset().len(), ASSET_LEN);
        let gz = gzip(&p);
        assert!(gz.len() < p.len() / 2, "gzip {} of {}", gz.len(), p.len());
        let mut out = vec![0u8; PAGE_LEN];
        let n = libdeflater::Decompressor::new()
            .gzip_decompress(&gz, &mut out)
            .unwrap();
        assert_eq!(&out[..n], &p[..]);
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(b"gzip, deflate, br"));
        assert!(accepts_gzip(b"br;q=1.0, GZIP;q=0.5"));
        assert!(!accepts_gzip(b"identity"));
        assert!(!accepts_gzip(b"gzip;q=0"));
        assert!(!accepts_gzip(b""));
    }

    #[test]
    fn answers_by_path_and_encoding() {
        let a = Answers::new();
        let ask = |raw: &[u8]| {
            let mut h = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Request::new(&mut h);
            r.parse(raw).unwrap();
            a.answer(&r)
        };
        let (r, _) = ask(b"GET /static/a.bin HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!(r, a.asset);
        let (r, _) = ask(b"GET /products/1 HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!(r, a.page_gz);
        let (r, _) = ask(b"GET /products/1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r, a.page);
        let (r, n) = ask(b"POST /x HTTP/1.1\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!((r, n), (a.no_content.clone(), 12));
        assert!(ask(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }
}
