//! HTTP/1.1 response framing for the streams the edge serves without
//! hyper: the head hyper would write (plus `connection: close`), and
//! chunks.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http::StatusCode;

/// The last chunk of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
}

/// The response head: status line, `headers`, framing, `connection:
/// close` (each stream has its own connection) and `date`, as hyper
/// writes them.
pub(crate) fn head(status: StatusCode, headers: &HeaderMap, framing: Framing) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    let reason = status.canonical_reason().unwrap_or("<unknown status code>");
    let _ = write!(buf, "HTTP/1.1 {} {reason}\r\n", status.as_u16());
    for (name, value) in headers {
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(len) => {
            let _ = write!(buf, "content-length: {len}\r\n");
        }
        Framing::Chunked => buf.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.put_slice(b"connection: close\r\n");
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let _ = write!(buf, "date: {date}\r\n\r\n");
    buf.freeze()
}

/// The size line of a chunk of `len` bytes (its data and `\r\n` follow).
pub(crate) fn chunk_size(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn heads_carry_framing_close_and_date() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        let head = head(StatusCode::OK, &headers, Framing::Chunked);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\ndate: "
            ),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
        let refusal = super::head(
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            Framing::Length(12),
        );
        assert!(
            refusal.starts_with(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 12\r\n"),
            "{refusal:?}"
        );
    }

    #[test]
    fn chunk_sizes_are_hex() {
        assert_eq!(chunk_size(255), Bytes::from_static(b"ff\r\n"));
        assert_eq!(chunk_size(1), Bytes::from_static(b"1\r\n"));
    }
}
