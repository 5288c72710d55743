//! Responses trackgate writes itself (tracking endpoints, health, errors):
//! a status, a few headers and a small body, serialised in one buffer.

use std::borrow::Cow;

/// The reason phrase for the statuses trackgate produces itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A locally produced response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Cow<'static, [u8]>,
    /// Close the connection after this response (the request's body was not
    /// read, or the request was malformed).
    pub close: bool,
}

impl Response {
    pub fn new(
        status: u16,
        content_type: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Response {
            status,
            headers: {
                // Room for what the endpoints add, so pushing never regrows.
                let mut h = Vec::with_capacity(6);
                h.push(("Content-Type", Cow::Borrowed(content_type)));
                h
            },
            body: body.into(),
            close: false,
        }
    }

    /// A short plain-text response (errors, health).
    pub fn text(status: u16, body: &'static str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", body.as_bytes())
    }

    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response::new(status, "application/json", body)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Serialises the response. `head_only` (HEAD requests) keeps the
    /// Content-Length but sends no body.
    pub fn write(&self, out: &mut Vec<u8>, head_only: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.status >= 200 && self.status != 204 && self.status != 304 {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, self.body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 204 && self.status != 304 {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Appends the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_length_and_close() {
        let mut out = Vec::new();
        Response::text(404, "not found\n")
            .closing()
            .write(&mut out, false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n"
        );
        out.clear();
        Response::text(200, "ok").write(&mut out, true);
        assert!(out.ends_with(b"Content-Length: 2\r\n\r\n"));
    }

    #[test]
    fn digits() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
