//! Scenarios: which requests a run sends and what a correct answer is.
//! Requests are built once per connection (collect and stealth carry a tg1
//! token minted with trackgate's own `track::token` code for the
//! connection's address and User-Agent, so the server's authentication path
//! runs for real); every response is checked by [`check`].

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use trackgate::track::token::{self, Kind as TokenKind, Signer};
use uuid::Uuid;

use crate::args::Url;
use crate::http::Response;

/// What `--scenario` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Pixel,
    Collect,
    Stealth,
    Proxy,
    Inject,
    Mix,
}

/// One kind of request (a scenario other than `mix` sends only one kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Req {
    Pixel,
    Collect,
    Stealth,
    Proxy,
    Inject,
}

pub const USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 trackgate-loadtest";

/// Path of the 20 KiB asset the origin serves (see `origin`).
pub const ASSET_PATH: &str = "/static/app.3f9a1c.bin";
/// Path of the 50 KiB HTML page the origin serves.
pub const PAGE_PATH: &str = "/products/42";
/// Marker of the injected snippet (its config block).
pub const SNIPPET_MARKER: &[u8] = b"id=\"trackgate-config\"";

/// `mix`, per 100 requests: like a shop's traffic, mostly assets, one
/// page view, its pixel and a few collected events.
const MIX: [(Req, u32); 5] = [
    (Req::Proxy, 55),
    (Req::Pixel, 25),
    (Req::Inject, 10),
    (Req::Collect, 7),
    (Req::Stealth, 3),
];

impl Scenario {
    pub fn parse(s: &str) -> Result<Scenario, String> {
        Ok(match s {
            "pixel" => Scenario::Pixel,
            "collect" => Scenario::Collect,
            "stealth" => Scenario::Stealth,
            "proxy" => Scenario::Proxy,
            "inject" => Scenario::Inject,
            "mix" => Scenario::Mix,
            _ => {
                return Err(format!(
                    "--scenario `{s}`: expected pixel, collect, stealth, proxy, inject or mix"
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pixel => "pixel",
            Scenario::Collect => "collect",
            Scenario::Stealth => "stealth",
            Scenario::Proxy => "proxy",
            Scenario::Inject => "inject",
            Scenario::Mix => "mix",
        }
    }

    pub fn needs_secret(self) -> bool {
        matches!(self, Scenario::Collect | Scenario::Stealth | Scenario::Mix)
    }

    /// The kind of the `n`th request a connection sends.
    pub fn pick(self, n: u64) -> Req {
        match self {
            Scenario::Pixel => Req::Pixel,
            Scenario::Collect => Req::Collect,
            Scenario::Stealth => Req::Stealth,
            Scenario::Proxy => Req::Proxy,
            Scenario::Inject => Req::Inject,
            Scenario::Mix => {
                // Spread each kind over the 100 slots (slot * 37 mod 100
                // visits every slot once) so kinds interleave.
                let mut slot = ((n % 100) * 37 % 100) as u32;
                for (req, w) in MIX {
                    if slot < w {
                        return req;
                    }
                    slot -= w;
                }
                Req::Proxy
            }
        }
    }
}

/// A 5-event batch as the browser tracker sends it.
pub fn collect_body() -> Vec<u8> {
    let mut b = String::from("[");
    let kinds = ["pageview", "scroll", "click", "form_start", "engagement"];
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str(&format!(
            "{{\"type\":\"{k}\",\"url\":\"https://shop.example/products/42?utm_source=news\",\
             \"referrer\":\"https://www.google.com/\",\"session_id\":\"s-5c1d0e\",\
             \"ts\":{},\"payload\":{{\"depth\":{},\"target\":\"#buy-{i}\",\"w\":1440,\"h\":900}}}}",
            1_764_000_000_000u64 + i as u64 * 750,
            i * 20
        ));
    }
    b.push(']');
    b.into_bytes()
}

/// The prebuilt request bytes of one connection, per kind.
pub struct Requests {
    pub pixel: Bytes,
    pub collect: Bytes,
    pub stealth: Bytes,
    pub proxy: Bytes,
    pub inject: Bytes,
}

impl Requests {
    /// Requests for a connection whose local address is `ip`; `secret`
    /// signs collect and stealth (when absent those are left empty and
    /// the scenario does not send them: `args` requires the secret).
    pub fn build(url: &Url, ip: IpAddr, secret: Option<&str>) -> Requests {
        let host = &url.host;
        let p = &url.prefix;
        let pv = Uuid::now_v7();
        let pixel = format!(
            "GET {p}/px.gif?e=pageview&url=https%3A%2F%2Fshop.example%2Fproducts%2F42%3Futm_source%3Dnews%26utm_campaign%3Dwinter\
             &ref=https%3A%2F%2Fwww.google.com%2F&uid=u-81f3a2&sid=s-5c1d0e&pv={pv}&sw=1440&sh=900&lang=en-GB HTTP/1.1\r\n\
             Host: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: image/avif,image/webp,*/*\r\n\
             Referer: https://shop.example/products/42\r\nCookie: _tg_sid=s-5c1d0e\r\n\r\n"
        )
        .into_bytes();
        let page_get = |path: &str, accept: &str, extra: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: {accept}\r\n\
                 Accept-Encoding: gzip, deflate\r\nAccept-Language: en-GB,en;q=0.8\r\n{extra}\r\n"
            )
            .into_bytes()
        };
        let proxy = page_get(ASSET_PATH, "*/*", "Sec-Fetch-Dest: script\r\n");
        let inject = page_get(
            PAGE_PATH,
            "text/html,application/xhtml+xml,*/*;q=0.8",
            "Sec-Fetch-Dest: document\r\n",
        );
        let (collect, stealth) = match secret {
            Some(s) => {
                let body = collect_body();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let signer = Signer::new(s.as_bytes(), None, 1800);
                let minted = signer.mint(TokenKind::Fetched, pv, now, ip, USER_AGENT.as_bytes());
                let presented = token::sign(&minted, &body).unwrap_or_default();
                let post = |path: &str| {
                    let mut r = format!(
                        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n\
                         Content-Type: text/plain;charset=UTF-8\r\nOrigin: https://shop.example\r\n\
                         Referer: https://shop.example/products/42\r\nX-GoTrack-HMAC: {presented}\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                };
                (post(&format!("{p}/collect")), post(PAGE_PATH))
            }
            None => (Vec::new(), Vec::new()),
        };
        Requests {
            pixel: pixel.into(),
            collect: collect.into(),
            stealth: stealth.into(),
            proxy: proxy.into(),
            inject: inject.into(),
        }
    }

    /// The request bytes (a cheap reference-counted clone).
    pub fn get(&self, r: Req) -> Bytes {
        match r {
            Req::Pixel => self.pixel.clone(),
            Req::Collect => self.collect.clone(),
            Req::Stealth => self.stealth.clone(),
            Req::Proxy => self.proxy.clone(),
            Req::Inject => self.inject.clone(),
        }
    }
}

/// Whether `resp` is a correct answer to a `req` request; the error says
/// what was wrong. `inflate` decodes a gzip body (reused per connection).
pub fn check(
    req: Req,
    resp: &Response,
    inflate: &mut libdeflater::Decompressor,
) -> Result<(), String> {
    let want = match req {
        Req::Collect | Req::Stealth => 202,
        _ => 200,
    };
    if resp.status != want {
        let snippet = String::from_utf8_lossy(&resp.body[..resp.body.len().min(120)]).into_owned();
        return Err(format!(
            "{req:?}: status {} (expected {want}): {snippet}",
            resp.status
        ));
    }
    match req {
        Req::Pixel => {
            if !resp.content_type.starts_with(b"image/gif") || resp.body.len() != 43 {
                return Err(format!(
                    "Pixel: expected a 43-byte image/gif, got {} bytes of {}",
                    resp.body.len(),
                    String::from_utf8_lossy(&resp.content_type)
                ));
            }
        }
        Req::Collect | Req::Stealth => {
            if !contains(&resp.body, b"\"accepted\":5") {
                return Err(format!(
                    "{req:?}: expected {{\"accepted\":5,…}}, got {}",
                    String::from_utf8_lossy(&resp.body)
                ));
            }
        }
        Req::Proxy => {
            if resp.body.len() != crate::origin::ASSET_LEN {
                return Err(format!(
                    "Proxy: asset of {} bytes (expected {})",
                    resp.body.len(),
                    crate::origin::ASSET_LEN
                ));
            }
        }
        Req::Inject => {
            let decoded;
            let page: &[u8] = if resp.gzip {
                decoded = gunzip(inflate, &resp.body)?;
                &decoded
            } else {
                &resp.body
            };
            if !contains(page, SNIPPET_MARKER) {
                return Err(format!(
                    "Inject: no snippet in the {}-byte page ({})",
                    page.len(),
                    if resp.gzip { "gzip" } else { "identity" }
                ));
            }
            if !page.ends_with(b"</html>\n") {
                return Err("Inject: the page does not end with </html> (truncated?)".into());
            }
        }
    }
    Ok(())
}

fn gunzip(inflate: &mut libdeflater::Decompressor, gz: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; 1 << 20];
    let n = inflate
        .gzip_decompress(gz, &mut out)
        .map_err(|e| format!("Inject: the gzip body does not decode: {e:?}"))?;
    out.truncate(n);
    Ok(out)
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse_url;
    use crate::http::Response;

    fn resp(status: u16, ctype: &str, gzip: bool, body: &[u8]) -> Response {
        Response {
            status,
            content_type: ctype.as_bytes().to_vec(),
            gzip,
            close: false,
            body: body.to_vec(),
        }
    }

    fn check1(req: Req, r: &Response) -> Result<(), String> {
        check(req, r, &mut libdeflater::Decompressor::new())
    }

    #[test]
    fn mix_follows_the_weights() {
        let mut n = [0u32; 5];
        for i in 0..100 {
            n[Scenario::Mix.pick(i) as usize] += 1;
        }
        assert_eq!(n, [25, 7, 3, 55, 10]); // Pixel, Collect, Stealth, Proxy, Inject
        assert_eq!(Scenario::Pixel.pick(7), Req::Pixel);
        // Interleaved, not 55 assets in a row.
        let mut first: Vec<Req> = (0..10).map(|i| Scenario::Mix.pick(i)).collect();
        first.dedup();
        first.sort_by_key(|r| *r as u8);
        first.dedup();
        assert!(first.len() >= 3, "{first:?}");
    }

    #[test]
    fn pixel_and_collect_checks() {
        let gif = [0u8; 43];
        assert!(check1(Req::Pixel, &resp(200, "image/gif", false, &gif)).is_ok());
        assert!(check1(Req::Pixel, &resp(200, "text/html", false, &gif)).is_err());
        assert!(check1(Req::Pixel, &resp(404, "image/gif", false, &gif)).is_err());
        assert!(check1(Req::Pixel, &resp(200, "image/gif", false, &gif[..40])).is_err());
        let ok = br#"{"accepted":5,"status":"ok"}"#;
        assert!(check1(Req::Collect, &resp(202, "application/json", false, ok)).is_ok());
        let e = check1(Req::Stealth, &resp(401, "application/json", false, b"{}")).unwrap_err();
        assert!(e.contains("401"), "{e}");
        assert!(check1(Req::Collect, &resp(202, "application/json", false, b"{}")).is_err());
    }

    #[test]
    fn inject_check_decodes_gzip_and_wants_the_snippet() {
        let page = b"<html><body>hi<script type=\"application/json\" id=\"trackgate-config\">{}</script></body></html>\n";
        let mut gz = vec![0u8; 4096];
        let n = libdeflater::Compressor::new(libdeflater::CompressionLvl::default())
            .gzip_compress(page, &mut gz)
            .unwrap();
        gz.truncate(n);
        assert!(check1(Req::Inject, &resp(200, "text/html", true, &gz)).is_ok());
        assert!(check1(Req::Inject, &resp(200, "text/html", false, page)).is_ok());
        let plain = b"<html><body>hi</body></html>\n";
        let e = check1(Req::Inject, &resp(200, "text/html", false, plain)).unwrap_err();
        assert!(e.contains("no snippet"), "{e}");
        assert!(check1(Req::Inject, &resp(200, "text/html", true, page)).is_err());
        assert!(check1(Req::Inject, &resp(200, "text/html", false, &page[..60])).is_err());
    }

    #[test]
    fn proxy_check_wants_the_whole_asset() {
        let asset = crate::origin::asset();
        assert!(check1(
            Req::Proxy,
            &resp(200, "application/octet-stream", false, &asset)
        )
        .is_ok());
        assert!(check1(Req::Proxy, &resp(200, "x", false, &asset[1..])).is_err());
        assert!(check1(Req::Proxy, &resp(502, "x", false, &asset)).is_err());
    }

    #[test]
    fn signed_requests_carry_a_token_the_server_accepts() {
        let url = parse_url("http://127.0.0.1:9/_t").unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let secret = "loadtest-secret-0123456789";
        let r = Requests::build(&url, ip, Some(secret));
        let text = String::from_utf8_lossy(&r.collect).into_owned();
        assert!(text.starts_with("POST /_t/collect HTTP/1.1\r\n"), "{text}");
        assert!(String::from_utf8_lossy(&r.stealth).starts_with("POST /products/42 "));
        let tok = text
            .lines()
            .find_map(|l| l.strip_prefix("X-GoTrack-HMAC: "))
            .unwrap();
        let body = collect_body();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signer = Signer::new(secret.as_bytes(), None, 1800);
        let v = signer
            .verify(tok.as_bytes(), &body, USER_AGENT.as_bytes(), ip, now)
            .expect("the server's verify accepts the loadtest's token");
        assert!(!v.ip_changed);
        // A different secret is refused: the check above can fail.
        let other = Signer::new(b"another-secret-0123456789", None, 1800);
        assert!(other
            .verify(tok.as_bytes(), &body, USER_AGENT.as_bytes(), ip, now)
            .is_err());
        assert!(text.ends_with(std::str::from_utf8(&body).unwrap()));
        assert!(String::from_utf8_lossy(&r.pixel).starts_with("GET /_t/px.gif?e=pageview&"));
    }
}
