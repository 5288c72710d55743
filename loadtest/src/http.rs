//! The client's HTTP/1.1 response reader: a complete response (head and
//! body, `Content-Length` or chunked) out of the bytes received so far, or
//! "need more". Pure functions over a byte slice, tested below.

/// A received response: what the checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Vec<u8>,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
    /// `Connection: close`: the server closes after this response.
    pub close: bool,
    /// The body, de-chunked (still content-encoded).
    pub body: Vec<u8>,
}

/// The first complete response in `buf` and how many bytes it took;
/// `Ok(None)` when more bytes are needed.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let mut resp = Response {
        status,
        content_type: Vec::new(),
        gzip: false,
        close: r.version == Some(0),
        body: Vec::new(),
    };
    let mut length = None;
    let mut chunked = false;
    for h in r.headers.iter() {
        let v = h.value;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| "bad Content-Length".to_string())?;
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case(b"chunked") || v.ends_with(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-type") {
            resp.content_type = v.to_vec();
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            resp.gzip = v.eq_ignore_ascii_case(b"gzip");
        } else if h.name.eq_ignore_ascii_case("connection") {
            resp.close = v.eq_ignore_ascii_case(b"close");
        }
    }
    let rest = &buf[head_len..];
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some((resp, head_len)));
    }
    if chunked {
        return Ok(dechunk(rest)?.map(|(body, used)| {
            resp.body = body;
            (resp, head_len + used)
        }));
    }
    match length {
        Some(n) if rest.len() >= n => {
            resp.body = rest[..n].to_vec();
            Ok(Some((resp, head_len + n)))
        }
        Some(_) => Ok(None),
        None => Err(format!(
            "status {status} without Content-Length or chunked body (close-delimited bodies are not supported)"
        )),
    }
}

/// A whole chunked body (with its last chunk and trailers) at the start of
/// `buf`: the data and the bytes used, or `None` when incomplete.
pub fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let size_txt = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_txt = std::str::from_utf8(size_txt)
            .map_err(|_| "bad chunk size".to_string())?
            .trim();
        let size = usize::from_str_radix(size_txt, 16)
            .map_err(|_| format!("bad chunk size `{size_txt}`"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers: lines until an empty one.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_pipelined_rest() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nContent-Length: 3\r\n\r\nGIFHTTP/1.1";
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"GIF"[..], false)
        );
        assert_eq!(r.content_type, b"image/gif");
        assert_eq!(&raw[used..], b"HTTP/1.1");
        // Every prefix is "need more", never an error.
        for n in 0..used {
            assert_eq!(parse_response(&raw[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn chunked_with_trailers_and_flags() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\
                    Connection: close\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(r.gzip && r.close);
        assert_eq!(used, raw.len());
        for n in 0..raw.len() {
            assert_eq!(parse_response(&raw[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(parse_response(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n"
        )
        .is_err());
        let (r, _) = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 204);
    }
}
