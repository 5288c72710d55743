//! The per-request work on trackgate's hot paths, one function each:
//! parsing a request head, minting and verifying a tg1 token, encoding a
//! pixel event, appending to the journal (buffered, and a 100-record group
//! commit with its `fdatasync`). `make bench` runs these; `make test` does not.

use std::net::IpAddr;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use trackgate::http::head::parse_request;
use trackgate::sink::journal::{Journal, JournalConfig};
use trackgate::track::event::{RequestCtx, Source};
use trackgate::track::ids::Rng;
use trackgate::track::pixel::build_pixel_event;
use trackgate::track::token::{self, Kind, Signer};
use uuid::Uuid;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const QUERY: &str = "e=pageview&url=https%3A%2F%2Fshop.example%2Fproducts%2F42%3Futm_source%3Dnews%26utm_campaign%3Dwinter\
&ref=https%3A%2F%2Fwww.google.com%2F&uid=u-81f3a2&sid=s-5c1d0e&pv=0192f4c6-3b1e-7c3a-9d0e-5f6a7b8c9d0e&sw=1440&sh=900&lang=en-GB";

fn head_parsing(c: &mut Criterion) {
    let req = format!(
        "GET /px.gif?{QUERY} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {UA}\r\n\
         Accept: image/avif,image/webp,*/*\r\nAccept-Language: en-GB,en;q=0.8\r\n\
         Accept-Encoding: gzip, deflate, br\r\nReferer: https://shop.example/products/42\r\n\
         Cookie: _tg_sid=s-5c1d0e\r\nSec-Fetch-Dest: image\r\nConnection: keep-alive\r\n\r\n"
    );
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("parse_pixel_request_head", |b| {
        b.iter(|| parse_request(black_box(req.as_bytes())).map(|h| h.is_some()))
    });
    g.finish();
}

fn tg1(c: &mut Criterion) {
    let signer = Signer::new(b"bench-secret-0123456789abcdef", None, 1800);
    let ip: IpAddr = "203.0.113.7".parse().expect("ip");
    let pv = Uuid::from_u128(0x0192_f4c6_3b1e_7c3a_9d0e_5f6a_7b8c_9d0e);
    let now = 1_764_500_000;
    let body = br##"[{"type":"click","url":"https://shop.example/products/42","payload":{"target":"#buy"}}]"##;
    let minted = signer.mint(Kind::Page, pv, now, ip, UA.as_bytes());
    let presented = token::sign(&minted, body).expect("a minted token signs");
    let mut g = c.benchmark_group("tg1");
    g.bench_function("mint", |b| {
        b.iter(|| signer.mint(Kind::Page, black_box(pv), now, ip, UA.as_bytes()))
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            signer
                .verify(
                    black_box(presented.as_bytes()),
                    body,
                    UA.as_bytes(),
                    ip,
                    now + 5,
                )
                .is_ok()
        })
    });
    g.finish();
}

fn event_encoding(c: &mut Criterion) {
    let mut rng = Rng::from_os().expect("getrandom");
    let ctx = RequestCtx {
        received_ms: 1_764_500_000_123,
        source: Source::Pixel,
        ip: Some("203.0.113.7"),
        ip_hash: None,
        ua: Some(UA.as_bytes()),
        auth: None,
        pageview_id: None,
        session_id: Some(b"s-5c1d0e"),
    };
    let mut out = Vec::with_capacity(2048);
    c.bench_function("event/pixel_encode", |b| {
        b.iter(|| {
            out.clear();
            build_pixel_event(&mut out, black_box(QUERY.as_bytes()), &ctx, &mut rng);
            out.len()
        })
    });
}

fn journal(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("trackgate-bench-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = JournalConfig::new(dir.clone(), 1 << 40);
    let (mut j, _) = Journal::open(&cfg).expect("open the journal");
    let event = vec![b'x'; 600]; // about one pixel event line
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_buffered", |b| {
        let mut n = 0u32;
        b.iter(|| {
            let seq = j.append(black_box(&event));
            n += 1;
            if n % 4096 == 0 {
                let _ = j.commit();
            }
            seq.is_ok()
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("group_commit_100_fdatasync", |b| {
        b.iter(|| {
            for _ in 0..100 {
                let _ = j.append(&event);
            }
            j.commit().is_ok()
        })
    });
    g.finish();
    drop(j);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, head_parsing, tg1, event_encoding, journal);
criterion_main!(benches);
