//! End-to-end: HTML injection through the real binary, in front of origins
//! written here. Injected pages get the snippet exactly once; everything
//! else comes back byte for byte.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use trackgate::inject::codec::{Codec, Coding, Limits};
use trackgate::track::token::sign;

const PAGE: &str = "<!doctype html><html><head><title>t</title></head><body><p>hi</p><!-- </body> --></body></html>\n";

/// An origin answering every request with `status`, the extra header lines
/// `headers` (each ending in \r\n), and `body` with a Content-Length.
fn origin(status: u16, headers: &'static str, body: Vec<u8>) -> Origin {
    Origin::start(move |_req, s| {
        let head = format!(
            "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).is_ok() && s.write_all(&body).is_ok()
    })
}

fn html_origin(extra: &'static str, body: Vec<u8>) -> Origin {
    let headers: &'static str =
        Box::leak(format!("Content-Type: text/html; charset=utf-8\r\n{extra}").into_boxed_str());
    origin(200, headers, body)
}

fn start(o: &Origin) -> Proc {
    Proc::start(&[("FORWARD_DESTINATION", &o.url())])
}

/// A browser-like page request with `extra` header lines.
fn page_req(p: &Proc, method: &str, extra: &str) -> Resp {
    let raw = format!(
        "{method} /shop/page?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {UA}\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\n{extra}Connection: close\r\n\r\n"
    );
    http(p.addr, raw.as_bytes())
}

fn config_of(body: &[u8]) -> serde_json::Value {
    let s = String::from_utf8_lossy(body);
    let start = s.find("id=\"trackgate-config\">").expect("config block") + 22;
    let end = start + s[start..].find("</script>").expect("end");
    serde_json::from_str(&s[start..end]).expect("config json")
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Codec::new(6)
        .expect("codec")
        .encode(coding, data, &mut out)
        .expect("encode");
    out
}

fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Codec::new(6)
        .expect("codec")
        .decode(coding, data, &Limits::default(), &mut out)
        .expect("decode");
    out
}

/// The snippet sits once, right before the last `</body>`.
fn assert_injected_once(body: &[u8]) {
    let s = String::from_utf8_lossy(body);
    assert_eq!(s.matches("id=\"trackgate-config\"").count(), 1, "{s}");
    let cfg = s.find("id=\"trackgate-config\"").expect("snippet");
    let at = s[..cfg].rfind("<script").expect("script tag");
    let noscript_end = s.find("</noscript>").expect("noscript") + "</noscript>".len();
    assert_eq!(&s[noscript_end..], "</body></html>\n", "{s}");
    assert!(s[..at].ends_with("<!-- </body> -->"), "{s}");
}

#[test]
fn identity_page_gets_the_snippet_once_before_the_last_body() {
    let o = html_origin(
        "ETag: \"abc\"\r\nContent-MD5: x\r\nDigest: sha-256=x\r\nContent-Digest: sha-256=:x:\r\nAccept-Ranges: bytes\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.status, 200);
    assert_injected_once(&r.body);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("etag"), Some("W/\"abc\""));
    assert_eq!(r.header("content-md5"), None);
    assert_eq!(r.header("digest"), None);
    assert_eq!(r.header("content-digest"), None);
    assert_eq!(r.header("accept-ranges"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("cache-control"), Some("private"));
    let cfg = config_of(&r.body);
    assert_eq!(cfg["endpoint"], "/collect");
    assert_eq!(cfg["pixel"], "/px.gif");
    let pv = cfg["pageview_id"].as_str().expect("pv").to_string();
    assert_eq!(pv.len(), 36);
    assert!(r
        .text()
        .contains(&format!("/px.gif?e=pageview&amp;pv={pv}")));

    // The page_served event carries the same pageview id.
    let ev = p.wait_events(1);
    let e = ev
        .iter()
        .find(|e| e["type"] == "page_served")
        .expect("page_served");
    assert_eq!(e["source"], "server");
    assert_eq!(e["pageview_id"], pv.as_str());
    assert_eq!(e["payload"]["path"], "/shop/page");
    assert_eq!(e["payload"]["status"], 200);
    assert_eq!(e["payload"]["encoding"], "identity");
    assert_eq!(e["payload"]["placement"], "before_body");
    assert_eq!(
        e["payload"]["request_headers"],
        serde_json::json!(["Host", "User-Agent", "Accept", "Connection"])
    );

    // The injected token is accepted by /collect, as kind p.
    let token = cfg["token"].as_str().expect("token");
    assert!(token.starts_with("tg1.p."));
    let body = br#"{"type":"pageview","url":"https://shop.example/shop/page"}"#;
    let sig = sign(token, body).expect("sign");
    let raw = format!(
        "POST /collect HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    let c = http(p.addr, &raw);
    assert_eq!(c.status, 202, "{}", c.text());
    let ev = p.wait_events(2);
    let e = ev
        .iter()
        .find(|e| e["source"] == "collect")
        .expect("collect");
    assert_eq!(e["auth"]["kind"], "p");
    assert_eq!(e["pageview_id"], pv.as_str());
}

#[test]
fn slow_identity_origin_streams_before_it_finishes() {
    let first: Vec<u8> = [
        b"<!doctype html><html><head><meta charset=utf-8><title>t</title><link rel=stylesheet href=/a.css></head><body>".to_vec(),
        b"<p>lorem ipsum</p>".repeat(12_000),
    ]
    .concat();
    let rest = b"<p>end</p></body></html>".to_vec();
    let len = first.len() + rest.len();
    let o = Origin::start(move |_req, s| {
        let head =
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len}\r\n\r\n");
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&first);
        std::thread::sleep(Duration::from_secs(1));
        s.write_all(&rest).is_ok()
    });
    let p = start(&o);
    let mut s = TcpStream::connect(p.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    // More than the head: body bytes arrived.
    while got.len() < 100_000 {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "first bytes after {:?}",
        t0.elapsed()
    );
    s.read_to_end(&mut got).expect("rest");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("id=\"trackgate-config\"").count(), 1);
    assert!(
        text.ends_with("</noscript></body></html>\r\n0\r\n\r\n"),
        "{}",
        &text[text.len() - 200..]
    );
}

fn gzip_origin(coding_name: &'static str, body: Vec<u8>) -> Origin {
    let headers: &'static str = Box::leak(
        format!("Content-Type: text/html\r\nContent-Encoding: {coding_name}\r\nETag: W/\"w\"\r\n")
            .into_boxed_str(),
    );
    origin(200, headers, body)
}

#[test]
fn gzip_page_is_reencoded_or_sent_identity() {
    let o = gzip_origin("gzip", encode(Coding::Gzip, PAGE.as_bytes()));
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("etag"), Some("W/\"w\""));
    assert_injected_once(&decode(Coding::Gzip, &r.body));
    // br was never asked of the origin.
    let seen = o.requests().pop().expect("seen");
    assert_eq!(seen.header("accept-encoding").as_deref(), Some("gzip"));

    // A client that takes no gzip gets identity.
    let r = page_req(&p, "GET", "Accept-Encoding: identity\r\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_injected_once(&r.body);
}

#[test]
fn multi_member_gzip_and_deflate_pages() {
    let half = PAGE.len() / 2;
    let two = [
        encode(Coding::Gzip, &PAGE.as_bytes()[..half]),
        encode(Coding::Gzip, &PAGE.as_bytes()[half..]),
    ]
    .concat();
    let o = gzip_origin("gzip", two);
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: gzip\r\n");
    assert_injected_once(&decode(Coding::Gzip, &r.body));

    let o = gzip_origin("deflate", encode(Coding::Zlib, PAGE.as_bytes()));
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: deflate\r\n");
    assert_eq!(r.header("content-encoding"), Some("deflate"));
    assert_injected_once(&decode(Coding::Zlib, &r.body));

    // Raw deflate sent as `deflate` (some servers do): re-encoded the same way.
    let o = gzip_origin("deflate", encode(Coding::RawDeflate, PAGE.as_bytes()));
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: deflate\r\n");
    assert_eq!(r.header("content-encoding"), Some("deflate"));
    assert_injected_once(&decode(Coding::RawDeflate, &r.body));
}

#[test]
fn br_and_other_skips_come_back_byte_for_byte() {
    let body = PAGE.as_bytes().to_vec();
    let cases: Vec<(u16, &'static str, &'static str)> = vec![
        (
            200,
            "Content-Type: text/html\r\nContent-Encoding: br\r\n",
            "",
        ),
        (
            200,
            "Content-Type: text/html\r\nCache-Control: no-transform\r\n",
            "",
        ),
        (
            200,
            "Content-Type: text/html\r\nContent-Disposition: attachment\r\n",
            "",
        ),
        (
            206,
            "Content-Type: text/html\r\nContent-Range: bytes 0-99/200\r\n",
            "",
        ),
        (
            200,
            "Content-Type: text/html\r\n",
            "Sec-Fetch-Dest: image\r\n",
        ),
        (200, "Content-Type: text/html\r\n", "HX-Request: true\r\n"),
        // Stacked codings, and a gzip body that does not decode.
        (
            200,
            "Content-Type: text/html\r\nContent-Encoding: gzip, gzip\r\n",
            "Accept-Encoding: gzip\r\n",
        ),
        (
            200,
            "Content-Type: text/html\r\nContent-Encoding: gzip\r\n",
            "Accept-Encoding: gzip\r\n",
        ),
        (404, "Content-Type: text/html\r\n", ""),
        (200, "Content-Type: text/plain\r\n", ""),
    ];
    for (status, headers, req_extra) in cases {
        let o = origin(status, headers, body.clone());
        let p = start(&o);
        let r = page_req(&p, "GET", req_extra);
        assert_eq!(r.status, status);
        assert!(r.body == body, "{headers} {req_extra}: {}", r.text());
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
    // A fragment: no <html>, no <body>.
    let frag = b"<div>partial</div>".to_vec();
    let o = html_origin("", frag.clone());
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert!(r.body == frag, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    assert!(p.events().is_empty(), "no page_served for a fragment");
}

#[test]
fn chunked_origin_is_injected() {
    let o = Origin::start(|_req, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for part in PAGE.as_bytes().chunks(7) {
            let _ = s.write_all(format!("{:x}\r\n", part.len()).as_bytes());
            let _ = s.write_all(part);
            let _ = s.write_all(b"\r\n");
        }
        s.write_all(b"0\r\n\r\n").is_ok()
    });
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
}

#[test]
fn head_204_304_get_no_body_and_no_injection() {
    let o = html_origin("ETag: \"h\"\r\n", PAGE.as_bytes().to_vec());
    let p = start(&o);
    let mut c = Client::connect(p.addr);
    let r = c.request(
        format!("HEAD / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nUser-Agent: {UA}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("etag"), Some("W/\"h\""));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // The connection is still in sync: no body followed.
    let r =
        c.request(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nConnection: close\r\n\r\n");
    assert_injected_once(&r.body);

    for status in [204u16, 304] {
        let o = Origin::start(move |_req, s| {
            s.write_all(
                format!("HTTP/1.1 {status} X\r\nContent-Type: text/html\r\nETag: \"e\"\r\n\r\n")
                    .as_bytes(),
            )
            .is_ok()
        });
        let p = start(&o);
        let r = page_req(&p, "GET", "");
        assert_eq!(r.status, status);
        assert!(r.body.is_empty());
        // A 304 revalidates a stored page, which was injected: it gets the
        // rewrite's head edits (a 204 has no page to revalidate).
        let want = if status == 304 { "W/\"e\"" } else { "\"e\"" };
        assert_eq!(r.header("etag"), Some(want));
    }
}

#[test]
fn csp_nonce_hash_unsafe_inline_and_meta() {
    // A nonce: our tags carry it.
    let o = html_origin(
        "Content-Security-Policy: script-src 'nonce-r4nd0m' 'strict-dynamic'\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_eq!(
        r.text().matches("<script nonce=\"r4nd0m\"").count(),
        2,
        "{}",
        r.text()
    );
    assert_eq!(
        r.header("content-security-policy"),
        Some("script-src 'nonce-r4nd0m' 'strict-dynamic'")
    );

    // Hash-only: the header gets our hash.
    let hash = trackgate::inject::snippet::tracker_sha256_b64();
    let o = html_origin(
        "Content-Security-Policy: script-src 'self'; img-src 'self'\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    assert_eq!(
        r.header("content-security-policy"),
        Some(format!("script-src 'self' 'sha256-{hash}'; img-src 'self'").as_str())
    );

    // unsafe-inline: unchanged header.
    let o = html_origin(
        "Content-Security-Policy: script-src 'self' 'unsafe-inline'\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    assert_eq!(
        r.header("content-security-policy"),
        Some("script-src 'self' 'unsafe-inline'")
    );

    // A meta policy without a nonce: the page is left alone.
    let page = PAGE.replace(
        "<title>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\"><title>",
    );
    let o = html_origin("", page.clone().into_bytes());
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.text(), page);
}

#[test]
fn shared_cacheable_page_carries_no_token() {
    let o = html_origin(
        "Cache-Control: public, max-age=600\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    let cfg = config_of(&r.body);
    assert!(cfg.get("token").is_none() && cfg.get("pageview_id").is_none());
    assert!(!r.text().contains("tg1."));
    assert_eq!(r.header("cache-control"), Some("public, max-age=600"));
    let ev = p.wait_events(1);
    assert_eq!(ev[0]["type"], "page_served");
    assert_eq!(ev[0]["pageview_id"], serde_json::Value::Null);

    // no-cache is not shared-cacheable, but a shared cache may still store
    // it: the per-client page is marked private.
    let o = html_origin("Cache-Control: no-cache\r\n", PAGE.as_bytes().to_vec());
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert!(config_of(&r.body)["token"].is_string());
    let cc: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cc, ["no-cache", "private"]);
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn gzip_bomb_passes_through_with_bounded_memory() {
    let member = encode(Coding::Gzip, &vec![0u8; 64 << 20]);
    let bomb: Vec<u8> = member.repeat(16); // 1 GiB of zeros
    let len = bomb.len();
    let o = gzip_origin("gzip", bomb.clone());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &o.url()),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let pid = p.child.as_ref().expect("child").id();
    // Warm up (first connection, buffers), then measure.
    let _ = get(p.addr, "/warm");
    let before = rss_kib(pid);
    for _ in 0..3 {
        let r = page_req(&p, "GET", "Accept-Encoding: gzip\r\n");
        assert_eq!(r.body.len(), len);
        assert!(r.body == bomb);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    let m = scrape(p.metrics_addr());
    // Three page requests and the warm-up (the same bomb).
    assert_eq!(
        metric(&m, r#"trackgate_inject_total{result="too_large"}"#),
        Some(4.0)
    );
    assert_eq!(
        metric(&m, r#"trackgate_inject_total{result="injected"}"#),
        Some(0.0)
    );
}

#[test]
fn inject_off_leaves_pages_alone() {
    let o = html_origin("", PAGE.as_bytes().to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &o.url()), ("INJECT", "off")]);
    let r = page_req(&p, "GET", "Accept-Encoding: br\r\n");
    assert_eq!(r.text(), PAGE);
    let seen = o.requests().pop().expect("seen");
    assert_eq!(seen.header("accept-encoding").as_deref(), Some("br"));
}

#[test]
fn every_chunk_split_gives_the_same_page() {
    // The origin splits the page into chunks of the size in the path.
    let o = Origin::start(|req, s| {
        let size: usize = req
            .request_line()
            .split(['/', ' '])
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for part in PAGE.as_bytes().chunks(size) {
            let _ = s.write_all(format!("{:x}\r\n", part.len()).as_bytes());
            let _ = s.write_all(part);
            let _ = s.write_all(b"\r\n");
            let _ = s.flush();
        }
        s.write_all(b"0\r\n\r\n").is_ok()
    });
    // A small tail (it also bounds the hold before the document's head is
    // read, so it must cover this page's head: 56 bytes up to `<body>`).
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &o.url()),
        ("INJECT_TAIL_BYTES", "64"),
    ]);
    let mut want: Option<String> = None;
    for size in 1..=PAGE.len() {
        let raw = format!(
            "GET /{size} HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nUser-Agent: {UA}\r\nCache-Control: x\r\nConnection: close\r\n\r\n"
        );
        let r = http(p.addr, raw.as_bytes());
        assert_injected_once(&r.body);
        // Equal up to the per-response pageview id and token.
        let text = r.text();
        let cut = text.find("{\"endpoint\"").expect("config");
        let end = text.find("</script>").expect("end");
        let norm = format!("{}{}", &text[..cut], &text[end..]);
        let norm = norm.split("pv=").next().expect("pv").to_string();
        match &want {
            None => want = Some(norm),
            Some(w) => assert_eq!(&norm, w, "split {size}"),
        }
    }
}

#[test]
fn twenty_megabyte_pages_pass_through() {
    let mut page = b"<html><body>".to_vec();
    while page.len() < 20 << 20 {
        page.extend_from_slice(b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing.</p>\n");
    }
    page.extend_from_slice(b"</body></html>");
    // Identity: streamed, injected at the end.
    let o = html_origin("", page.clone());
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert!(r.body.starts_with(&page[..page.len() - 14]));
    assert_eq!(r.text().matches("id=\"trackgate-config\"").count(), 1);
    assert!(r.body.ends_with(b"</noscript></body></html>"));

    // gzip: decodes to more than INJECT_MAX_BYTES, so it goes out as it came.
    let gz = encode(Coding::Gzip, &page);
    let o = gzip_origin("gzip", gz.clone());
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: gzip\r\n");
    assert!(r.body == gz);
    assert_eq!(r.header("etag"), Some("W/\"w\""));
    assert_eq!(
        r.header("content-length"),
        Some(gz.len().to_string().as_str())
    );
}

#[test]
fn csp_script_src_elem_and_two_policies() {
    let hash = trackgate::inject::snippet::tracker_sha256_b64();
    // script-src-elem governs; script-src is left alone.
    let o = html_origin(
        "Content-Security-Policy: script-src 'none'; script-src-elem 'self'\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    assert_eq!(
        r.header("content-security-policy"),
        Some(format!("script-src 'none'; script-src-elem 'self' 'sha256-{hash}'").as_str())
    );

    // Two headers: both must allow the script; report-only is left alone.
    let o = html_origin(
        "Content-Security-Policy: default-src 'self'\r\nContent-Security-Policy: script-src 'self' 'unsafe-inline'\r\nContent-Security-Policy-Report-Only: script-src 'none'\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    let csps: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-security-policy"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        csps,
        [
            format!("default-src 'self' 'sha256-{hash}'").as_str(),
            "script-src 'self' 'unsafe-inline'"
        ]
    );
    assert_eq!(
        r.header("content-security-policy-report-only"),
        Some("script-src 'none'")
    );
}

#[test]
fn origin_dying_inside_a_compressed_page_is_a_502() {
    let o = Origin::start(|_req, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\nContent-Length: 1000\r\n\r\nabc");
        false
    });
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.status, 502);
}

#[test]
fn http10_client_gets_a_close_delimited_injected_page_and_metrics_count() {
    let o = html_origin("", PAGE.as_bytes().to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &o.url()),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let raw = format!("GET / HTTP/1.0\r\nHost: a\r\nAccept: text/html\r\nUser-Agent: {UA}\r\n\r\n");
    let r = http(p.addr, raw.as_bytes());
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_injected_once(&r.body);
    let _ = p.wait_events(1);
    let m = scrape(p.metrics_addr());
    assert_eq!(
        metric(&m, r#"trackgate_inject_total{result="injected"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"trackgate_inject_total{result="csp_meta_no_nonce"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"trackgate_tokens_issued_total{kind="p"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"trackgate_events_total{source="server"}"#),
        Some(1.0)
    );
}

#[test]
fn meta_csp_nonce_is_reused_and_meta_without_nonce_skips_compressed_pages() {
    let page = PAGE.replace(
        "<title>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'nonce-m3ta'\"><title>",
    );
    let o = html_origin("", page.into_bytes());
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    assert_eq!(r.text().matches("<script nonce=\"m3ta\"").count(), 2);

    let page = PAGE.replace(
        "<title>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\"><title>",
    );
    let gz = encode(Coding::Gzip, page.as_bytes());
    let o = gzip_origin("gzip", gz.clone());
    let p = start(&o);
    let r = page_req(&p, "GET", "Accept-Encoding: gzip\r\n");
    assert!(r.body == gz);
}

#[test]
fn over_the_core_budget_the_page_goes_out_unchanged() {
    // ~20 KB compressed: its decode bound (100x) is over a 1 MiB budget.
    let mut page = b"<html><body>".to_vec();
    let mut x: u32 = 1;
    while page.len() < 40_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        page.extend_from_slice(format!("<i>{x:x}</i>").as_bytes());
    }
    page.extend_from_slice(b"</body></html>");
    let gz = encode(Coding::Gzip, &page);
    assert!(gz.len() > 11 * 1024, "{}", gz.len());
    let o = gzip_origin("gzip", gz.clone());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &o.url()),
        ("INJECT_CORE_BUDGET_MB", "1"),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let r = page_req(&p, "GET", "Accept-Encoding: gzip\r\n");
    assert!(r.body == gz);
    let m = scrape(p.metrics_addr());
    assert_eq!(
        metric(&m, r#"trackgate_inject_total{result="budget"}"#),
        Some(1.0)
    );
}

#[test]
fn csp_that_blocks_our_beacon_is_reported_not_changed() {
    let csp = "default-src 'self'; script-src 'self' 'unsafe-inline'; connect-src 'none'; img-src https://cdn.example";
    let headers: &'static str =
        Box::leak(format!("Content-Security-Policy: {csp}\r\n").into_boxed_str());
    let o = html_origin(headers, b"<html><body><p>hi</p></body></html>".to_vec());
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.header("content-security-policy"), Some(csp));
    assert_eq!(r.text().matches("id=\"trackgate-config\"").count(), 1);
    let ev = p.wait_events(1);
    let e = ev
        .iter()
        .find(|e| e["type"] == "page_served")
        .expect("page_served");
    assert_eq!(e["payload"]["csp"]["blocked_connect"], true, "{e}");
    assert_eq!(e["payload"]["csp"]["blocked_img"], true, "{e}");
}

// ---------------------------------------------------------------------------
// Review fixes (issue 3): each test below failed before its fix.
// ---------------------------------------------------------------------------

fn start_metrics(o: &Origin, extra: &[(&str, &str)]) -> Proc {
    let url = o.url();
    let mut env: Vec<(&str, &str)> = vec![
        ("FORWARD_DESTINATION", url.as_str()),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ];
    env.extend_from_slice(extra);
    Proc::start(&env)
}

/// The sum of `inject_total` over every result.
fn inject_sum(p: &Proc) -> f64 {
    scrape(p.metrics_addr())
        .lines()
        .filter(|l| l.starts_with("trackgate_inject_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn inject_count(p: &Proc, result: &str) -> Option<f64> {
    let m = scrape(p.metrics_addr());
    metric(
        &m,
        &format!("trackgate_inject_total{{result=\"{result}\"}}"),
    )
}

/// The header fields of `r` (names lowercased), minus those that describe
/// the framing of this one message.
fn head_fields(r: &Resp) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "transfer-encoding" | "content-length" | "connection"
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn revalidation_304_of_an_injectable_page_gets_the_rewrite_head_edits() {
    // The origin answers its page (a strong ETag, a hash-only CSP, no cache
    // headers) and, to a conditional request, a 304 with the same fields.
    const FIELDS: &str = "ETag: \"v1\"\r\nContent-Security-Policy: script-src 'self'\r\n";
    let o = Origin::start(|req, s| {
        if req.header("if-none-match").is_some() {
            return s
                .write_all(format!("HTTP/1.1 304 Not Modified\r\n{FIELDS}\r\n").as_bytes())
                .is_ok();
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{FIELDS}Content-Length: {}\r\n\r\n",
            PAGE.len()
        );
        s.write_all(head.as_bytes()).is_ok() && s.write_all(PAGE.as_bytes()).is_ok()
    });
    let p = start(&o);
    let full = page_req(&p, "GET", "");
    assert_injected_once(&full.body);
    let etag = full.header("etag").expect("etag").to_string();
    assert_eq!(etag, "W/\"v1\"");
    let r = page_req(&p, "GET", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    // A cache updating its stored (injected) page from this 304 keeps the
    // weak validator, the Vary, the privacy and the CSP that allows it.
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("cache-control"), Some("private"));
    assert_eq!(
        r.header("content-security-policy"),
        full.header("content-security-policy")
    );

    // A 304 to a request that cannot get an injected page is left alone.
    let r = page_req(
        &p,
        "GET",
        &format!("If-None-Match: {etag}\r\nSec-Fetch-Dest: image\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.header("cache-control"), None);
}

#[test]
fn head_gets_the_same_head_edits_as_its_get() {
    let o = Origin::start(|req, s| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nETag: \"h\"\r\nContent-Security-Policy: script-src 'self'\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\n\r\n",
            PAGE.len()
        );
        let ok = s.write_all(head.as_bytes()).is_ok();
        if req.request_line().starts_with("HEAD") {
            return ok;
        }
        ok && s.write_all(PAGE.as_bytes()).is_ok()
    });
    let p = start(&o);
    let get = page_req(&p, "GET", "");
    assert_injected_once(&get.body);
    let head = page_req(&p, "HEAD", "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), None);
    assert_eq!(head.header("cache-control"), Some("private"));
    assert!(head
        .header("content-security-policy")
        .is_some_and(|v| v.contains("'sha256-")));
    // Date aside, the two heads carry the same fields.
    let strip = |v: Vec<(String, String)>| -> Vec<(String, String)> {
        v.into_iter().filter(|(n, _)| n != "date").collect()
    };
    assert_eq!(strip(head_fields(&head)), strip(head_fields(&get)));

    // The origin is asked a HEAD the way it is asked the GET: no br.
    let _ = page_req(&p, "HEAD", "Accept-Encoding: br, gzip\r\n");
    let seen = o.requests().pop().expect("seen");
    assert!(seen.request_line().starts_with("HEAD"));
    assert_eq!(seen.header("accept-encoding").as_deref(), Some("gzip"));
}

#[test]
fn identity_page_left_alone_keeps_the_origin_head() {
    // A <meta> policy without a nonce: no snippet, and no head edits either
    // (the decision is made before the head goes out).
    let page = PAGE.replace(
        "<title>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\"><title>",
    );
    let o = html_origin("ETag: \"m\"\r\n", page.clone().into_bytes());
    let p = start_metrics(&o, &[]);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.text(), page);
    assert_eq!(r.header("etag"), Some("\"m\""));
    assert_eq!(
        r.header("content-length"),
        Some(page.len().to_string().as_str())
    );
    assert_eq!(r.header("cache-control"), None);
    assert_eq!(r.header("vary"), None);
    assert_eq!(inject_count(&p, "csp_meta_no_nonce"), Some(1.0));

    // A fragment (no <html>, no <body>) keeps its head too.
    let frag = b"<div>partial</div>".to_vec();
    let o = html_origin("ETag: \"f\"\r\n", frag.clone());
    let p = start_metrics(&o, &[]);
    let r = page_req(&p, "GET", "");
    assert!(r.body == frag);
    assert_eq!(r.header("etag"), Some("\"f\""));
    assert_eq!(r.header("content-length"), Some("18"));
    assert_eq!(inject_count(&p, "no_document_markup"), Some(1.0));
}

#[test]
fn meta_csp_past_the_tail_bound_is_not_missed() {
    // A head longer than INJECT_TAIL_BYTES with a nonce-less <meta> policy
    // after the bound: the page must not get a snippet that policy blocks.
    let style = format!("<style>{}</style>", "p{color:red}".repeat(200));
    let page = format!(
        "<!doctype html><html><head>{style}<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\"></head><body><p>x</p></body></html>"
    );
    let o = html_origin("ETag: \"t\"\r\n", page.clone().into_bytes());
    let p = start_metrics(&o, &[("INJECT_TAIL_BYTES", "1024")]);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.text(), page);
    assert_eq!(r.header("etag"), Some("\"t\""));
    assert_eq!(inject_count(&p, "head_too_long"), Some(1.0));
    assert_eq!(inject_count(&p, "injected"), Some(0.0));

    // With a bound that covers the head, the meta policy is seen and the
    // page is skipped for it.
    let p = start_metrics(&o, &[("INJECT_TAIL_BYTES", "65536")]);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.text(), page);
    assert_eq!(inject_count(&p, "csp_meta_no_nonce"), Some(1.0));
}

#[test]
fn script_src_none_is_never_given_our_hash() {
    for csp in [
        "script-src 'none'",
        "default-src 'none'; img-src 'self'",
        "script-src-elem 'none'; script-src 'self' 'unsafe-inline'",
    ] {
        let headers: &'static str =
            Box::leak(format!("Content-Security-Policy: {csp}\r\n").into_boxed_str());
        let o = html_origin(headers, PAGE.as_bytes().to_vec());
        let p = start_metrics(&o, &[]);
        let r = page_req(&p, "GET", "");
        assert_eq!(r.text(), PAGE, "{csp}");
        assert_eq!(r.header("content-security-policy"), Some(csp));
        assert_eq!(inject_count(&p, "csp_script_none"), Some(1.0), "{csp}");
        assert_eq!(inject_sum(&p), 1.0, "{csp}");
    }
}

#[test]
fn origin_failing_mid_identity_page_is_counted_aborted() {
    let o = Origin::start(|_req, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html><head></head><body><p>cut short",
        );
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    let p = start_metrics(&o, &[]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n");
    // The body is cut short: no complete response, then the close.
    assert!(c.read_response("GET").is_none());
    assert_eq!(inject_count(&p, "aborted"), Some(1.0));
    assert_eq!(inject_count(&p, "injected"), Some(0.0));
    assert_eq!(inject_sum(&p), 1.0, "counted once");

    // Failing before the head is decided: a 502, counted too.
    let o = Origin::start(|_req, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html><head><title>x",
        );
        false
    });
    let p = start_metrics(&o, &[]);
    let r = page_req(&p, "GET", "");
    assert_eq!(r.status, 502);
    assert_eq!(inject_count(&p, "aborted"), Some(1.0));
}

#[test]
fn two_trackgates_in_a_chain_inject_once() {
    for (name, coding) in [("identity", None), ("gzip", Some(Coding::Gzip))] {
        let o = match coding {
            None => html_origin("", PAGE.as_bytes().to_vec()),
            Some(c) => gzip_origin("gzip", encode(c, PAGE.as_bytes())),
        };
        let inner = start(&o);
        let inner_url = format!("http://{}", inner.addr);
        let outer = Proc::start(&[
            ("FORWARD_DESTINATION", inner_url.as_str()),
            ("METRICS_ENABLED", "true"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ]);
        let r = page_req(&outer, "GET", "Accept-Encoding: gzip\r\n");
        let body = match r.header("content-encoding") {
            Some("gzip") => decode(Coding::Gzip, &r.body),
            _ => r.body.clone(),
        };
        assert_injected_once(&body);
        assert_eq!(
            inject_count(&outer, "already_injected"),
            Some(1.0),
            "{name}"
        );
        assert_eq!(inject_count(&outer, "injected"), Some(0.0), "{name}");
        assert_eq!(inject_sum(&outer), 1.0, "{name}");
    }
}

/// Standard base64 with padding (for checking the CSP hash independently).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn the_hash_in_a_served_csp_is_that_of_the_served_tracker_text() {
    use sha2::{Digest, Sha256};
    assert_eq!(b64(b"abcd"), "YWJjZA==");
    let o = html_origin(
        "Content-Security-Policy: script-src 'self'\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    let text = r.text();
    // The tracker is the <script> right after the config block.
    let cfg_end = text.find("id=\"trackgate-config\"").expect("config");
    let open = cfg_end + text[cfg_end..].find("</script><script>").expect("tracker") + 17;
    let close = open + text[open..].find("</script>").expect("end");
    let served = &text[open..close];
    let want = format!("'sha256-{}'", b64(&Sha256::digest(served.as_bytes())));
    let csp = r.header("content-security-policy").expect("csp");
    assert!(csp.ends_with(&want), "{csp} vs {want}");
}

#[test]
fn late_surprises_keep_the_body_and_get_only_the_head_edits() {
    // The head goes out once `<body` is in; what comes after the origin's
    // pause decides only the body: ending inside a comment (no snippet can
    // go there), or carrying an earlier trackgate's snippet.
    let o = Origin::start(|req, s| {
        let rest: &[u8] = if req.request_line().contains("/comment") {
            b"<p>b</p><!-- never closed"
        } else {
            b"<script type=\"application/json\" id=\"trackgate-config\">{}</script></body></html>"
        };
        let first: &[u8] = b"<!doctype html><html><head><title>t</title></head><body><p>a</p>";
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nETag: \"l\"\r\nContent-Length: {}\r\n\r\n",
                first.len() + rest.len()
            )
            .as_bytes(),
        );
        let _ = s.write_all(first);
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(rest).is_ok()
    });
    let p = start_metrics(&o, &[]);
    for (path, result) in [
        ("/comment", "no_document_markup"),
        ("/twice", "already_injected"),
    ] {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        );
        let r = http(p.addr, raw.as_bytes());
        assert_eq!(r.status, 200);
        assert!(
            r.text().matches("trackgate-config").count() <= 1,
            "{}",
            r.text()
        );
        assert!(!r.text().contains("<noscript>"), "{}", r.text());
        assert_eq!(r.header("etag"), Some("W/\"l\""));
        assert_eq!(inject_count(&p, result), Some(1.0), "{path}");
    }
    assert_eq!(inject_count(&p, "injected"), Some(0.0));
    assert_eq!(inject_sum(&p), 2.0);
}

#[test]
fn comma_joined_policies_in_one_header_all_allow_the_tracker() {
    let hash = trackgate::inject::snippet::tracker_sha256_b64();
    let o = html_origin(
        "Content-Security-Policy: script-src 'self', default-src 'none'; script-src-elem https://cdn.example\r\n",
        PAGE.as_bytes().to_vec(),
    );
    let p = start(&o);
    let r = page_req(&p, "GET", "");
    assert_injected_once(&r.body);
    assert_eq!(
        r.header("content-security-policy"),
        Some(
            format!(
                "script-src 'self' 'sha256-{hash}', default-src 'none'; script-src-elem https://cdn.example 'sha256-{hash}'"
            )
            .as_str()
        )
    );
}

#[test]
fn every_inject_result_is_exposed() {
    use trackgate::metrics::labels::InjectResult;
    let o = html_origin("", PAGE.as_bytes().to_vec());
    let p = start_metrics(&o, &[]);
    let m = scrape(p.metrics_addr());
    for r in InjectResult::ALL {
        let series = format!("trackgate_inject_total{{result=\"{}\"}}", r.as_str());
        assert_eq!(metric(&m, &series), Some(0.0), "{series}");
    }
    // HEAD is counted (not_get), like every proxied response.
    let _ = page_req(&p, "HEAD", "");
    assert_eq!(inject_count(&p, "not_get"), Some(1.0));
    assert_eq!(inject_sum(&p), 1.0);
}
