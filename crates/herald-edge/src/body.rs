//! The body type of every edge response: known bytes, or a stream's
//! frames. Not a boxed body: the plain writer takes a stream's frames out
//! of its response and polls them itself (see `plain`), and hyper polls
//! them without an adapter around them.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use crate::session::Frames;

/// Response body type of every edge response.
#[allow(
    clippy::large_enum_variant,
    reason = "a stream's frames are held inline: boxed, every stream would pay for one more allocation"
)]
pub(crate) enum Body {
    /// Known bytes (`None` once taken, or for an empty body).
    Full(Option<Bytes>),
    /// An SSE stream.
    Stream(Frames),
}

/// A body of known bytes.
pub(crate) fn full(bytes: Bytes) -> Body {
    Body::Full((!bytes.is_empty()).then_some(bytes))
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take()),
            Body::Stream(frames) => frames.poll_next(cx),
        };
        next.map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    use super::*;

    #[tokio::test]
    async fn known_bytes_say_their_length_and_come_whole() {
        for text in [&b""[..], b"{\"error\":\"x\"}"] {
            let body = full(Bytes::from_static(text));
            assert_eq!(body.size_hint().exact(), Some(text.len() as u64));
            assert_eq!(body.is_end_stream(), text.is_empty());
            let collected = body.collect().await.unwrap().to_bytes();
            assert_eq!(collected, text);
        }
    }
}
