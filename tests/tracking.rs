//! End-to-end: tracking endpoints answered by the real binary, tg1 tokens,
//! and the NDJSON events it writes.

mod common;
use common::*;
use std::net::IpAddr;
use std::time::Duration;
use trackgate::track::token::{sign, Kind, Signer};
use uuid::Uuid;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn fetch_token(p: &Proc, ua: &str) -> serde_json::Value {
    let r = http(
        p.addr,
        format!("GET /hmac/public-key HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    serde_json::from_slice(&r.body).expect("json")
}

fn post(
    p: &Proc,
    path: &str,
    sig_header: Option<&str>,
    ua: &str,
    body: &[u8],
    extra: &str,
) -> Resp {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {ua}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}", body.len());
    if let Some(s) = sig_header {
        req.push_str(&format!("X-GoTrack-HMAC: {s}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    http(p.addr, &raw)
}

fn no_origin() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TEST_MODE", "false"),
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
    ]
}

#[test]
fn pixel_answers_the_gif_and_writes_one_event() {
    let p = Proc::start(&no_origin());
    let r = get(
        p.addr,
        "/px.gif?e=pageview&uid=u1&url=https%3A%2F%2Fshop.example%2Fa%3Futm_source%3Dnews%26gclid%3DG1&ref=https%3A%2F%2Fgoogle.com%2F&utm_campaign=launch&color=blue",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert_eq!(r.body.len(), 43);
    assert_eq!(&r.body[..6], b"GIF89a");
    assert_eq!(r.body[42], 0x3b);
    assert_eq!(
        r.header("cache-control"),
        Some("no-store, no-cache, must-revalidate, max-age=0")
    );
    let cookie = r.header("set-cookie").expect("session cookie");
    assert!(
        cookie.starts_with("_tg_sid=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
    );
    let ev = p.wait_events(1);
    assert_eq!(ev.len(), 1);
    let e = &ev[0];
    assert_eq!(e["type"], "pageview");
    assert_eq!(e["source"], "pixel");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["url"], "https://shop.example/a?utm_source=news&gclid=G1");
    assert_eq!(e["referrer"], "https://google.com/");
    assert_eq!(e["ua"], UA);
    assert_eq!(e["payload"]["utm"]["campaign"], "launch");
    assert_eq!(e["payload"]["utm"]["source"], "news");
    assert_eq!(e["payload"]["click_ids"]["gclid"], "G1");
    assert_eq!(e["payload"]["props"]["color"], "blue");
    assert!(e["auth"].is_null());
    let sid = cookie
        .split(';')
        .next()
        .expect("kv")
        .split('=')
        .nth(1)
        .expect("value");
    assert_eq!(e["session_id"], sid);
    // Field order is the documented one.
    let line = std::fs::read_to_string(&p.log_path).expect("file");
    let keys: Vec<&str> = [
        "event_id",
        "timestamp",
        "type",
        "source",
        "ip",
        "ip_hash",
        "ua",
        "url",
        "referrer",
        "session_id",
        "pageview_id",
        "auth",
        "payload",
    ]
    .to_vec();
    let mut pos = 0;
    for k in keys {
        let at = line[pos..]
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} out of order in {line}"));
        pos += at;
    }
}

#[test]
fn collect_with_a_fetched_token() {
    let p = Proc::start(&no_origin());
    let t = fetch_token(&p, UA);
    assert_eq!(t["scheme"], "tg1");
    assert_eq!(t["header"], "X-GoTrack-HMAC");
    let token = t["token"].as_str().expect("token");
    assert!(token.starts_with("tg1.f."));
    let pv = t["pageview_id"].as_str().expect("pv");
    let body = br#"[{"type":"pageview","url":"https://shop.example/?utm_source=x","ts":1700000000000},{"e":"click","payload":{"el":"buy"},"pageview_id":"00000000-0000-0000-0000-000000000000"}]"#;
    let sig = sign(token, body).expect("sign");
    let r = post(&p, "/collect", Some(&sig), UA, body, "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.text(), r#"{"accepted":2,"status":"ok"}"#);
    assert_eq!(r.header("x-gotrack-accepted"), Some("2"));
    let ev = p.wait_events(2);
    assert_eq!(ev.len(), 2);
    for e in &ev {
        assert_eq!(e["source"], "collect");
        assert_eq!(e["pageview_id"], pv, "pageview_id comes from the token");
        assert_eq!(e["auth"]["scheme"], "tg1");
        assert_eq!(e["auth"]["kind"], "f");
        assert_eq!(e["auth"]["ip_changed"], false);
    }
    assert_eq!(ev[0]["payload"]["client_ts"], 1700000000000u64);
    assert_eq!(ev[1]["type"], "click");
    assert_eq!(ev[1]["payload"]["el"], "buy");
}

#[test]
fn collect_rejections() {
    let p = Proc::start(&no_origin());
    let t = fetch_token(&p, UA);
    let token = t["token"].as_str().expect("token");
    let body = br#"{"type":"pageview"}"#;
    // Missing signature.
    assert_eq!(post(&p, "/collect", None, UA, body, "").status, 401);
    // Another User-Agent.
    let sig = sign(token, body).expect("sign");
    let r = post(&p, "/collect", Some(&sig), "curl/8", body, "");
    assert_eq!(r.status, 401);
    assert!(r.text().contains("bad_signature"));
    // Tampered body.
    let r = post(
        &p,
        "/collect",
        Some(&sig),
        UA,
        br#"{"type":"purchase"}"#,
        "",
    );
    assert_eq!(r.status, 401);
    // Expired token.
    let signer = Signer::new(SECRET.as_bytes(), None, 1800);
    let old = signer.mint(
        Kind::Fetched,
        Uuid::now_v7(),
        now() - 4000,
        IpAddr::from([127, 0, 0, 1]),
        UA.as_bytes(),
    );
    let r = post(
        &p,
        "/collect",
        Some(&sign(&old, body).expect("sign")),
        UA,
        body,
        "",
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("expired"));
    // Invalid JSON, properly signed.
    let bad = b"{not json";
    let r = post(
        &p,
        "/collect",
        Some(&sign(token, bad).expect("sign")),
        UA,
        bad,
        "",
    );
    assert_eq!(r.status, 400);
    assert!(r.header("content-type").is_some_and(|c| c.contains("json")));
    // Too many events.
    let many = format!("[{}]", vec![r#"{"type":"x"}"#; 101].join(","));
    let r = post(
        &p,
        "/collect",
        Some(&sign(token, many.as_bytes()).expect("sign")),
        UA,
        many.as_bytes(),
        "",
    );
    assert_eq!(r.status, 413);
    // Over MAX_BODY_BYTES (checked before authentication).
    // The server answers 413 from the head alone; the client may still be
    // writing (a write error then is fine), the answer must arrive anyway.
    let huge = vec![b' '; 1_048_577];
    let mut c = Client::connect(p.addr);
    c.send(format!("POST /collect HTTP/1.1\r\nHost: t\r\nUser-Agent: {UA}\r\nX-GoTrack-HMAC: tg1.f.x\r\nContent-Length: {}\r\n\r\n", huge.len()).as_bytes());
    let _ = std::io::Write::write_all(&mut c.stream, &huge);
    let r = c.read_response("POST").expect("413");
    assert_eq!(r.status, 413);
    assert!(p.events().is_empty(), "no event from a rejected request");
}

#[test]
fn ip_change_and_previous_secret() {
    let old_secret = "the-old-secret-0123456789";
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("HMAC_SECRET_PREVIOUS", old_secret),
    ]);
    let body = br#"{"type":"pageview"}"#;
    // A kind p token minted for another network, signed with the previous secret.
    let signer = Signer::new(old_secret.as_bytes(), None, 1800);
    let tok = signer.mint(
        Kind::Page,
        Uuid::now_v7(),
        now(),
        "203.0.113.9".parse().expect("ip"),
        UA.as_bytes(),
    );
    let r = post(
        &p,
        "/collect",
        Some(&sign(&tok, body).expect("sign")),
        UA,
        body,
        "",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let ev = p.wait_events(1);
    assert_eq!(ev[0]["auth"]["kind"], "p");
    assert_eq!(ev[0]["auth"]["ip_changed"], true);
    // A secret that is neither current nor previous is refused.
    let other = Signer::new(b"some-other-secret-0123456789", None, 1800);
    let tok = other.mint(
        Kind::Page,
        Uuid::now_v7(),
        now(),
        "127.0.0.1".parse().expect("ip"),
        UA.as_bytes(),
    );
    assert_eq!(
        post(
            &p,
            "/collect",
            Some(&sign(&tok, body).expect("sign")),
            UA,
            body,
            ""
        )
        .status,
        401
    );
}

#[test]
fn stealth_posts_are_collected_and_beacons_use_the_query() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[("FORWARD_DESTINATION", &origin.url())]);
    let t = fetch_token(&p, UA);
    let token = t["token"].as_str().expect("token");
    let body = br#"{"type":"engagement","payload":{"scroll":80}}"#;
    let sig = sign(token, body).expect("sign");
    // Header form, to a page path: collected, not proxied; url from Referer.
    let r = post(
        &p,
        "/products/42",
        Some(&sig),
        UA,
        body,
        "Referer: https://shop.example/products/42\r\n",
    );
    assert_eq!(r.status, 202);
    // Beacon form: `?_tg=` on the page path (sendBeacon cannot set headers).
    let r = post(&p, &format!("/products/42?_tg={sig}"), None, UA, body, "");
    assert_eq!(r.status, 202);
    // An unsigned POST goes to the origin.
    let r = post(&p, "/products/42", None, UA, b"a=1", "");
    assert_eq!(r.text(), "origin");
    assert_eq!(origin.requests().len(), 1);
    let ev = p.wait_events(2);
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| e["source"] == "stealth"));
    assert_eq!(ev[0]["url"], "https://shop.example/products/42");
    assert_eq!(
        ev[1]["url"].as_str().map(|u| u.contains("/products/42")),
        Some(true)
    );
    assert_eq!(ev[0]["payload"]["scroll"], 80);
}

#[test]
fn hmac_js_and_track_prefix() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("TRACK_PREFIX", "/_t"),
    ]);
    let r = get(p.addr, "/_t/hmac.js");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("window.trackgateToken={"));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.contains("javascript")));
    // With a prefix, /px.gif belongs to the origin.
    assert_eq!(get(p.addr, "/px.gif").text(), "origin");
    assert_eq!(get(p.addr, "/_t/px.gif").status, 200);
    assert_eq!(get(p.addr, "/_t/healthz").text(), "ok\n");
    // Refreshing a token keeps the pageview id.
    let pv = Uuid::now_v7().to_string();
    let r = get(p.addr, &format!("/_t/hmac/public-key?pv={pv}"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["pageview_id"], pv.as_str());
    assert!(v["token"].as_str().expect("token").contains(&pv));
}

#[test]
fn cors_only_for_configured_origins_on_tracking_endpoints() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", &origin.url()),
        ("CORS_ORIGINS", "https://app.example"),
    ]);
    let pre = http(p.addr, b"OPTIONS /collect HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n");
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let pre = http(p.addr, b"OPTIONS /collect HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n");
    assert!(pre.header("access-control-allow-origin").is_none());
    // OPTIONS elsewhere goes to the origin, and proxied responses are untouched.
    let r = http(p.addr, b"OPTIONS /page HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nConnection: close\r\n\r\n");
    assert_eq!(r.text(), "origin");
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn health_and_readiness() {
    let p = Proc::start(&no_origin());
    let r = get(p.addr, "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    // Until its thread has started, a sink is "starting" and the status
    // "degraded" (still 200): on a loaded machine the first /readyz can
    // come before that.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (r, v) = loop {
        let r = get(p.addr, "/readyz");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        if v["status"] != "degraded" || std::time::Instant::now() > deadline {
            break (r, v);
        }
        assert_eq!(v["sinks"]["log"]["state"], "starting", "{v}");
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 200);
    assert_eq!(v["status"], "ready");
    assert_eq!(v["sinks"]["log"]["state"], "healthy");
    assert_eq!(get(p.addr, "/readyz?strict=1").status, 200);
}

#[test]
fn events_validate_against_the_published_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/event.schema.json")).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("TEST_MODE", "true"),
    ]);
    get(p.addr, "/px.gif?e=x&url=%00%ff&ref=%E2%80%A8");
    let ev = p.wait_events(6);
    assert!(ev.len() >= 6, "{ev:?}");
    for e in &ev {
        assert!(validator.is_valid(e), "{e}");
    }
}
