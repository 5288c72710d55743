//! The tracker served as a file by the real binary: `/pixel.<hash>.js`
//! (immutable), `/pixel.js`, `/pixel.umd.js`, `/pixel.esm.js` (short cache,
//! ETag, 304), under `TRACK_PREFIX`, never proxied.

mod common;
use common::*;

#[test]
fn pixel_scripts_are_served_with_their_cache_rules() {
    let origin = Origin::fixed(200, "text/plain", b"origin".to_vec());
    let url = origin.url();
    let tg = Proc::start(&[
        ("FORWARD_DESTINATION", url.as_str()),
        ("TRACK_PREFIX", "/_t"),
    ]);
    let js = trackgate::inject::snippet::TRACKER_JS;
    let hash = trackgate::track::script::content_hash();

    let r = get(tg.addr, &format!("/_t/pixel.{hash}.js"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, js.as_bytes());
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    let etag = r.header("etag").expect("etag").to_string();

    for name in ["pixel.js", "pixel.umd.js"] {
        let r = get(tg.addr, &format!("/_t/{name}"));
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.body, js.as_bytes(), "{name}");
        assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        let r = http(
            tg.addr,
            format!("GET /_t/{name} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 304, "{name}");
        assert!(r.body.is_empty());
    }
    let r = get(tg.addr, "/_t/pixel.esm.js");
    assert_eq!(r.status, 200);
    assert!(r
        .text()
        .ends_with("export default globalThis.GoTrackPixel;\n"));
    assert_ne!(r.header("etag"), Some(etag.as_str()));

    // HEAD: headers and length, no body.
    let r = http(
        tg.addr,
        b"HEAD /_t/pixel.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(js.len().to_string().as_str())
    );
    // Other methods are refused, not proxied; other names are the origin's.
    let r = http(
        tg.addr,
        b"PUT /_t/pixel.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(get(tg.addr, "/pixel.js").text(), "origin");
    assert_eq!(
        get(tg.addr, "/_t/pixel.0123456789abcdef.js").text(),
        "origin"
    );
    assert!(origin
        .requests()
        .iter()
        .all(|q| !q.request_line().contains("/_t/pixel.js")));
}
