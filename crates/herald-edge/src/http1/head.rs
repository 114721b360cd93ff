//! The first request head of a plain connection, read by the edge itself:
//! a stream request (`GET /v1/events` over HTTP/1.1, nothing after its
//! head) is served without hyper (see [`crate::http1::plain`]); anything else goes
//! to hyper with the bytes read so far.

use bytes::{Bytes, BytesMut};
use herald_core::listener::{MAX_HEAD, Shared};
use http::{HeaderName, HeaderValue, Method, Request, Version};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First read: most stream requests (a token, a few headers) fit.
const FIRST_READ: usize = 1024;

/// Most headers looked at; a head with more goes to hyper (which takes 100).
const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection asked for.
#[derive(Debug)]
pub(crate) enum First {
    /// A stream request the edge serves itself.
    Stream(Box<Request<()>>),
    /// Anything else: hyper serves it, reading these bytes first.
    Hyper(Bytes),
    /// Closed, failed, stopped or late before a complete head.
    Done,
}

/// Reads until a head is complete, within the from-accept `deadline`
/// (counted in `header_timeouts` when missed) or until `stop`.
pub(crate) async fn read(
    stream: &mut TcpStream,
    deadline: Instant,
    shared: &Shared,
    stop: &CancellationToken,
) -> First {
    let reading = tokio::time::timeout_at(deadline, read_head(stream));
    tokio::select! {
        _ = stop.cancelled() => First::Done,
        read = reading => read.unwrap_or_else(|_| {
            shared.metrics.header_timeouts.inc();
            tracing::debug!("no request head by the header deadline");
            First::Done
        }),
    }
}

async fn read_head(stream: &mut TcpStream) -> First {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        if buf.len() == buf.capacity() {
            // Past MAX_HEAD, hyper reads on and answers 431.
            if buf.len() >= MAX_HEAD {
                return First::Hyper(buf.freeze());
            }
            buf.reserve((buf.len() * 2).min(MAX_HEAD) - buf.len());
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return First::Done,
            Ok(_) => {}
        }
        match parse(&buf) {
            Parsed::Partial => continue,
            Parsed::Stream(req) => return First::Stream(req),
            Parsed::Other => return First::Hyper(buf.freeze()),
        }
    }
}

/// What a buffer holds so far.
#[derive(Debug)]
enum Parsed {
    Partial,
    Stream(Box<Request<()>>),
    /// Not a stream request the edge serves itself (or not HTTP/1.1 at all).
    Other,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        // Pipelined bytes after the head are hyper's to serve.
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {
            stream_request(&head).map_or(Parsed::Other, |req| Parsed::Stream(Box::new(req)))
        }
        Ok(httparse::Status::Complete(_)) | Err(_) => Parsed::Other,
    }
}

/// The request, if it is one the edge serves itself: `GET /v1/events`
/// over HTTP/1.1 with no body and no protocol upgrade.
fn stream_request(head: &httparse::Request<'_, '_>) -> Option<Request<()>> {
    let path = head.path?;
    let events = path == "/v1/events" || path.starts_with("/v1/events?");
    if head.method != Some("GET") || head.version != Some(1) || !events {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11);
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if !plain_header(&name, header.value) {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    request.body(()).ok()
}

/// Headers that ask for more than a plain GET leave the request to hyper:
/// a body, or another protocol.
fn plain_header(name: &HeaderName, value: &[u8]) -> bool {
    match name.as_str() {
        "content-length" => value == b"0",
        "transfer-encoding" | "upgrade" | "http2-settings" | "expect" => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(head: &str) -> Option<Box<Request<()>>> {
        match parse(head.as_bytes()) {
            Parsed::Stream(req) => Some(req),
            _ => None,
        }
    }

    #[test]
    fn a_stream_request_is_the_edges() {
        let req =
            stream("GET /v1/events?topic=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
                .expect("a stream request");
        assert_eq!(req.uri().path(), "/v1/events");
        assert_eq!(req.uri().query(), Some("topic=a"));
        assert_eq!(req.headers()["authorization"], "Bearer t");
        assert!(stream("GET /v1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn anything_else_is_hyper_s() {
        for head in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/eventsx HTTP/1.1\r\n\r\n",
            "GET /v1/events HTTP/1.0\r\n\r\n",
            "POST /v1/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "GET /v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\n\r\nGET /v1/events HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(matches!(parse(head.as_bytes()), Parsed::Other), "{head:?}");
        }
    }

    proptest::proptest! {
        /// Untrusted bytes never panic the reader, and only a whole
        /// stream request with nothing after it is the edge's.
        #[test]
        fn any_bytes_are_classified(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Parsed::Stream(req) = parse(&bytes) {
                proptest::prop_assert_eq!(req.uri().path(), "/v1/events");
                proptest::prop_assert!(bytes.ends_with(b"\r\n\r\n"));
            }
        }

        /// A stream request split anywhere waits for the rest, then is
        /// the edge's: heads arrive in pieces.
        #[test]
        fn every_prefix_of_a_stream_head_is_partial(token in "[A-Za-z0-9._-]{0,300}", query in "[a-z=&]{0,40}") {
            let head = format!("GET /v1/events?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
            let bytes = head.as_bytes();
            for cut in 0..bytes.len() {
                proptest::prop_assert!(matches!(parse(&bytes[..cut]), Parsed::Partial), "cut at {}", cut);
            }
            proptest::prop_assert!(matches!(parse(bytes), Parsed::Stream(_)));
        }
    }

    #[test]
    fn a_half_head_waits_for_more() {
        assert!(matches!(
            parse(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(parse(b""), Parsed::Partial));
    }
}
