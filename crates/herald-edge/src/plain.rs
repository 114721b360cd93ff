//! Plain (not TLS) connections: a `GET /v1/events` over HTTP/1.1 is
//! served without hyper, whose per-connection read and write buffers and
//! dispatcher would cost an idle stream several KiB; anything else goes
//! to hyper with the bytes read so far.
//!
//! A stream's connection holds only its socket, its body and a few
//! handles: the head's buffer is gone once the head is parsed, one frame
//! is written at a time, and the connection closes after the response
//! (`connection: close`; an EventSource reconnects on a new one anyway).
//! Its heartbeats are written by the node's heartbeat task
//! ([`crate::beats`]), so an idle stream's task does not wake; a socket
//! that takes nothing for `--write-timeout` ends the stream (see
//! [`crate::line`]).

use std::convert::Infallible;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use herald_core::listener::Accepted;
use herald_core::serve::{CLOSE_GRACE, Http, Opening};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::beats::Heartbeats;
use crate::body::Body;
use crate::head::{self, First};
use crate::line::Line;
use crate::metrics::CloseReason;
use crate::signal::{Ending, Signal};
use crate::state::State;
use crate::wire::{self, Framing};

/// Serves one plain connection until it ends, until `stop` asks it to
/// close (cut after [`CLOSE_GRACE`]), or until `transport` drops it (a
/// slow consumer or a write timeout on its stream).
pub async fn serve(
    accepted: Accepted,
    state: Arc<State>,
    http: Http,
    transport: CancellationToken,
    stop: CancellationToken,
) {
    let Accepted {
        mut stream,
        deadline,
        slot,
    } = accepted;
    // Boxed, as the other phases below: a future is as big as its
    // biggest phase, and the stream phase is the one that lasts. Each box
    // is made in its own statement: a temporary in an `.await` statement
    // keeps its room in this future even once moved into the box.
    let reading = Box::pin(head::read(&mut stream, deadline, slot.shared(), &stop));
    let first = reading.await;
    let kill = transport.clone();
    match first {
        First::Done => {}
        First::Hyper(read) => {
            let accepted = Accepted {
                stream,
                deadline,
                slot,
            };
            let opening = Opening::After(read);
            let serving = crate::service::serve(&http, accepted, opening, state, transport, stop);
            Box::pin(serving).await;
        }
        First::Stream(req) => {
            // Out of its box, which is freed here rather than held (224
            // bytes) until the stream ends.
            let req = {
                let boxed = req;
                *boxed
            };
            // Not through `until_killed`: it would hold a second copy of
            // this connection's state.
            tokio::select! {
                _ = respond(stream, req, state, transport) => {}
                _ = kill.cancelled() => tracing::debug!("connection dropped (slow consumer or write timeout)"),
                _ = cut_after(&stop) => tracing::debug!("stream connection cut: it did not close in time"),
            }
            drop(slot); // the socket is closed with `stream`, just after
        }
    }
}

/// Routes `req` as hyper's path does and writes the response; the
/// socket closes when it is written, when it has taken nothing for the
/// write timeout, or when this future is dropped.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps a copy of an argument"
)]
fn respond(
    stream: TcpStream,
    req: Request<()>,
    state: Arc<State>,
    transport: CancellationToken,
) -> impl Future<Output = ()> {
    // Not an `async fn`, which would keep a copy of an argument (8 bytes
    // a stream).
    async move {
        let routing = crate::events::route(req, state.clone(), Some(transport), Heartbeats::ByNode);
        let routing = Box::pin(routing); // its own statement: see `serve`
        let (head, framing, body, ending) = framed(routing.await);
        match framing {
            Framing::Length(_) => {
                drop(ending); // not held across an await: it would cost every stream
                // A refusal fits in a new socket's buffer; bounded all the same.
                let timeout = state.config.write_timeout;
                let writing = write_full(stream, head, body);
                let _ = Box::pin(tokio::time::timeout(timeout, writing)).await;
            }
            Framing::Chunked => {
                // Every chunked answer is a stream, which says how it ends.
                let Ending { signal, exp } = ending.unwrap_or_else(|| Ending {
                    signal: Signal::new(None, 0),
                    exp: u64::MAX,
                });
                let line = Arc::new(Line::new(stream, signal));
                state.beats.add(&line);
                if write_chunked(&line, head, body, exp).await.is_ok() {
                    let _ = socket2::SockRef::from(line.socket()).shutdown(Shutdown::Write);
                }
            }
        }
    }
}

/// The response's head and framing, its body, and how its stream ends:
/// nothing else of it stays in the stream's future.
fn framed(response: Response<Body>) -> (Bytes, Framing, Body, Option<Ending>) {
    let (mut parts, body) = response.into_parts();
    let framing = match body.size_hint().exact() {
        Some(len) => Framing::Length(len),
        None => Framing::Chunked,
    };
    let ending = parts.extensions.remove::<Ending>();
    let head = wire::head(parts.status, &parts.headers, framing);
    (head, framing, body, ending)
}

/// A refusal or other short answer, in one write, then the close.
async fn write_full(mut stream: TcpStream, head: Bytes, body: Body) {
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    if stream.write_all_buf(&mut head.chain(body)).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// The stream, a frame at a time (the head goes with the first), until
/// it ends or the client goes away; dropping `body` then ends the session
/// as hyper's path does (`client_gone`). A socket that takes nothing for
/// the write timeout drops the whole connection (see `line`).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps copies of its arguments"
)]
fn write_chunked(
    line: &Line,
    mut head: Bytes,
    mut body: Body,
    exp: u64,
) -> impl Future<Output = io::Result<()>> {
    // Not an `async fn`: it would hold its arguments twice, for as long
    // as the stream lasts.
    async move {
        loop {
            let next = tokio::select! {
                next = next_data(&mut body) => next,
                () = line.client_gone() => return Err(ErrorKind::ConnectionReset.into()),
            };
            // The head goes with the first frame.
            let Some(data) = next else {
                let first = std::mem::take(&mut head);
                return line.write_last(first.chain(wire::LAST_CHUNK)).await;
            };
            if data.is_empty() {
                continue;
            }
            let first = std::mem::take(&mut head);
            let size = wire::chunk_size(data.len());
            let writing = line.write_all(first.chain(size).chain(data).chain(&b"\r\n"[..]));
            tokio::pin!(writing);
            if let Poll::Ready(written) = futures::poll!(writing.as_mut()) {
                written?;
                continue;
            }
            // No room: the session is not polled until the frame is out, so
            // a close made meanwhile (at the token's `exp`, a drain, a
            // revocation) is acted on here. The stream ends at once: what
            // its session holds (slot, subjects, count) goes with the body,
            // and only the socket waits, within the write timeout, for the
            // client to take the frame and the last chunk.
            let closing = Box::pin(closing(line.signal(), exp)); // only while a write waits
            tokio::select! {
                biased;
                written = &mut writing => written?,
                () = closing => {
                    body = crate::body::full(Bytes::new());
                    writing.await?;
                }
            }
        }
    }
}

/// The data of the body's next frame (empty for a frame without); `None`
/// at its end.
async fn next_data(body: &mut Body) -> Option<Bytes> {
    let frame = body.frame().await?;
    let frame = frame.unwrap_or_else(|never: Infallible| match never {});
    Some(frame.into_data().unwrap_or_default())
}

/// Returns once the stream is closed, or its token expires (`exp`, which
/// closes it).
async fn closing(signal: &Signal, exp: u64) {
    let expiry = async {
        tokio::time::sleep_until(crate::events::expiry_instant(exp)).await;
        signal.close(CloseReason::TokenExpired);
    };
    tokio::select! {
        () = signal.closed() => {}
        () = expiry => {}
    }
}

/// Returns [`CLOSE_GRACE`] after `stop`: the time hyper's path gives a
/// connection asked to close.
async fn cut_after(stop: &CancellationToken) {
    stop.cancelled().await;
    // Boxed: a timer in every stream's future for the whole stream would
    // cost more than this one allocation at shutdown.
    Box::pin(tokio::time::sleep(CLOSE_GRACE)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` would return; `f` is never called.
    fn future_size<F>(_f: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A value of any type, for arguments of a call that never runs.
    fn never<T>() -> T {
        unreachable!("only the call's type is looked at")
    }

    /// A body of one frame of `len` bytes that then waits for ever;
    /// `dropped` resolves when it is dropped.
    fn one_frame(len: usize) -> (Body, tokio::sync::oneshot::Receiver<()>) {
        let (held, dropped) = tokio::sync::oneshot::channel::<()>();
        let frame = futures::stream::once(async move {
            Ok(hyper::body::Frame::data(Bytes::from(vec![b'x'; len])))
        });
        let frames = futures::StreamExt::chain(frame, futures::stream::pending());
        let frames = futures::StreamExt::map(frames, move |frame| {
            let _ = &held;
            frame
        });
        (
            BodyExt::boxed(http_body_util::StreamBody::new(frames)),
            dropped,
        )
    }

    /// A client that reads nothing: the writer waits for room with a frame
    /// of 64 MiB. The token expires meanwhile: the stream ends then (its
    /// body, which holds its guard, is dropped) and is counted as expired,
    /// while the socket waits for the client. A close by signal likewise.
    #[tokio::test]
    async fn a_close_while_a_write_waits_ends_the_stream_at_once() {
        for by_signal in [false, true] {
            let (line, _client, _) = crate::line::tests::pair().await;
            let (body, dropped) = one_frame(64 << 20);
            let exp = if by_signal {
                u64::MAX
            } else {
                herald_testing::token::now() + 1
            };
            let writing = write_chunked(&line, Bytes::new(), body, exp);
            tokio::pin!(writing);
            if by_signal {
                assert!(futures::poll!(writing.as_mut()).is_pending());
                line.signal().close(CloseReason::Drain);
            }
            let ended = tokio::time::timeout(std::time::Duration::from_secs(5), dropped);
            tokio::select! {
                _ = &mut writing => panic!("the socket took 64 MiB unread"),
                ended = ended => assert!(ended.is_ok(), "the body is dropped"),
            }
            let want = if by_signal {
                CloseReason::Drain
            } else {
                CloseReason::TokenExpired
            };
            assert_eq!(line.signal().reason(), Some(want));
            assert!(
                futures::poll!(writing.as_mut()).is_pending(),
                "the write still waits"
            );
        }
    }

    /// Every idle stream holds this future: boxes made in an `.await`
    /// statement, or a connection future moved into a wrapper, once made
    /// it 2.5 KiB (debug build; release is smaller).
    #[test]
    fn a_streams_connection_future_stays_small() {
        let serve = future_size(|| serve(never(), never(), never(), never(), never()));
        let route = future_size(|| crate::events::route::<()>(never(), never(), never(), never()));
        println!("connection future {serve} bytes; route future (boxed) {route} bytes");
        assert!(serve <= 1_400, "connection future of {serve} bytes");
    }
}
