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
        "ETag: \"abc\"\r\nContent-MD5: x\r\nAccept-Ranges: bytes\r\n",
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
        b"<html><body>".to_vec(),
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
        assert_eq!(r.header("etag"), Some("\"e\""));
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
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &o.url()),
        ("INJECT_TAIL_BYTES", "16"),
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
