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
//! ([`crate::beats`]), so an idle stream's task does not wake.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::Arc;

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
use crate::state::State;
use crate::wire::{self, Framing};

/// Serves one plain connection until it ends, until `stop` asks it to
/// close (cut after [`CLOSE_GRACE`]), or until `transport` drops it (a
/// slow consumer on its stream).
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
            let service = crate::service::service(state, transport);
            let opening = Opening::After(read);
            let serving = Box::pin(http.serve_connection(accepted, opening, service, stop));
            crate::service::until_killed(serving, kill).await;
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
                _ = kill.cancelled() => tracing::debug!("connection dropped (slow consumer)"),
                _ = cut_after(&stop) => tracing::debug!("stream connection cut: it did not close in time"),
            }
            drop(slot); // the socket is closed with `stream`, just after
        }
    }
}

/// Routes `req` as hyper's path does and writes the response; the
/// socket closes when it is written, or when this future is dropped.
async fn respond(
    mut stream: TcpStream,
    req: Request<()>,
    state: Arc<State>,
    transport: CancellationToken,
) {
    let routing = crate::events::route(req, state.clone(), Some(transport), Heartbeats::ByNode);
    let routing = Box::pin(routing); // its own statement: see `serve`
    let (head, framing, body) = framed(routing.await);
    match framing {
        Framing::Length(_) => {
            if write_full(&mut stream, head, body).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        }
        Framing::Chunked => {
            let line = Arc::new(Line::new(stream));
            state.beats.add(&line);
            if write_chunked(&line, head, body).await.is_ok() {
                let _ = socket2::SockRef::from(line.socket()).shutdown(Shutdown::Write);
            }
        }
    }
}

/// The response's head and framing, and its body: nothing else of it
/// stays in the stream's future.
fn framed(response: Response<Body>) -> (Bytes, Framing, Body) {
    let (parts, body) = response.into_parts();
    let framing = match body.size_hint().exact() {
        Some(len) => Framing::Length(len),
        None => Framing::Chunked,
    };
    (
        wire::head(parts.status, &parts.headers, framing),
        framing,
        body,
    )
}

/// A refusal or other short answer, in one write.
async fn write_full(stream: &mut TcpStream, head: Bytes, body: Body) -> std::io::Result<()> {
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    stream.write_all_buf(&mut head.chain(body)).await
}

/// The stream, a frame at a time (the head goes with the first), until
/// it ends or the client goes away; dropping `body` then ends the
/// session as hyper's path does (`client_gone`).
async fn write_chunked(line: &Line, head: Bytes, mut body: Body) -> std::io::Result<()> {
    let mut head = Some(head);
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = client_gone(line.socket()) => return Err(ErrorKind::ConnectionReset.into()),
        };
        let first = head.take().unwrap_or_default();
        let Some(frame) = frame else {
            return line.write_all(first.chain(wire::LAST_CHUNK)).await;
        };
        let data = frame
            .map(|f| f.into_data())
            .unwrap_or_else(|never: Infallible| match never {});
        let Ok(data) = data else { continue };
        if data.is_empty() {
            continue;
        }
        let size = wire::chunk_size(data.len());
        let out = first.chain(size).chain(data).chain(&b"\r\n"[..]);
        line.write_all(out).await?;
    }
}

/// Returns when the client closes its side or the socket fails. Nothing
/// more is read from a stream's connection: whatever the client sends is
/// dropped.
async fn client_gone(stream: &TcpStream) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let mut scrap = [0u8; 64];
        match stream.try_read(&mut scrap) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
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
