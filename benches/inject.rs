//! Injecting the snippet into a 50 KiB page: identity (streamed through
//! `StreamInjector` in 16 KiB pieces) and gzip (decode, inject, re-encode).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use trackgate::inject::codec::{Codec, Coding, Limits};
use trackgate::inject::html::{inject_whole, StreamInjector, DEFAULT_TAIL_BYTES};
use trackgate::inject::snippet;

fn page() -> Vec<u8> {
    let mut p = b"<!doctype html><html><head><title>Shop</title></head><body>".to_vec();
    let mut i = 0u32;
    while p.len() < 50 * 1024 {
        p.extend_from_slice(
            format!("<div class=\"item\"><a href=\"/p/{i}\">Product {i}</a><!-- c --></div>\n")
                .as_bytes(),
        );
        i += 1;
    }
    p.extend_from_slice(b"</body></html>\n");
    p
}

fn bench(c: &mut Criterion) {
    let doc = page();
    let mut snip = Vec::new();
    snippet::write(&mut snip, "", None, None);
    let mut g = c.benchmark_group("inject_50k");
    g.throughput(Throughput::Bytes(doc.len() as u64));

    let mut inj = StreamInjector::new(DEFAULT_TAIL_BYTES);
    let mut out = Vec::with_capacity(doc.len() + snip.len());
    g.bench_function("identity", |b| {
        b.iter(|| {
            out.clear();
            for piece in doc.chunks(16 * 1024) {
                inj.push(black_box(piece), &mut out);
            }
            inj.finish(&snip, &mut out);
            black_box(out.len())
        })
    });

    let mut codec = Codec::new(6).expect("codec");
    let mut gz = Vec::new();
    codec.encode(Coding::Gzip, &doc, &mut gz).expect("encode");
    let limits = Limits::default();
    let (mut dec, mut injected, mut enc) = (Vec::new(), Vec::new(), Vec::new());
    g.bench_function("gzip", |b| {
        b.iter(|| {
            codec
                .decode(Coding::Gzip, black_box(&gz), &limits, &mut dec)
                .expect("decode");
            injected.clear();
            inject_whole(&dec, &snip, &mut injected);
            codec
                .encode(Coding::Gzip, &injected, &mut enc)
                .expect("encode");
            black_box(enc.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
