//! Plain (not TLS) connections: a `GET /v1/events` over HTTP/1.1 is
//! served without hyper, whose per-connection read and write buffers and
//! dispatcher would cost an idle stream several KiB; anything else goes
//! to hyper with the bytes read so far.
//!
//! A stream's connection holds only its socket, its body and a few
//! handles: the head's buffer is gone once the head is parsed, one frame
//! is written at a time, and the connection closes after the response
//! (`connection: close`; an EventSource reconnects on a new one anyway).

use std::convert::Infallible;
use std::io::ErrorKind;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use herald_core::listener::Accepted;
use herald_core::serve::{CLOSE_GRACE, Http};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::head::{self, First};
use crate::server::{Body, State};
use crate::wire::{self, Framing};

/// Serves one plain connection; `transport` is the slow-consumer kill
/// switch of its stream, `stop` asks it to close (within [`CLOSE_GRACE`]).
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
    // biggest phase, and the stream phase is the one that lasts.
    let first = Box::pin(head::read(&mut stream, deadline, slot.shared(), &stop)).await;
    match first {
        First::Done => {}
        First::Hyper(read) => {
            let accepted = Accepted {
                stream,
                deadline,
                slot,
            };
            let service = crate::server::service(state, transport);
            Box::pin(http.serve_after(accepted, read, service, stop)).await;
        }
        First::Stream(req) => {
            tokio::select! {
                _ = respond(&mut stream, *req, state, transport) => {}
                _ = cut_after(&stop) => tracing::debug!("stream connection cut: it did not close in time"),
            }
            drop(slot); // the socket is closed with `stream`, just after
        }
    }
}

/// Routes `req` as hyper's path does and writes the response.
async fn respond(
    stream: &mut TcpStream,
    req: Request<()>,
    state: Arc<State>,
    transport: CancellationToken,
) {
    let response = Box::pin(crate::events::route(req, state, Some(transport))).await;
    let (parts, body) = response.into_parts();
    let framing = match body.size_hint().exact() {
        Some(len) => Framing::Length(len),
        None => Framing::Chunked,
    };
    let head = wire::head(parts.status, &parts.headers, framing);
    drop(parts);
    let written = match framing {
        Framing::Length(_) => write_full(stream, head, body).await,
        Framing::Chunked => write_chunked(stream, head, body).await,
    };
    if written.is_ok() {
        let _ = stream.shutdown().await;
    }
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
async fn write_chunked(stream: &mut TcpStream, head: Bytes, mut body: Body) -> std::io::Result<()> {
    let mut head = Some(head);
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = client_gone(stream) => return Err(ErrorKind::ConnectionReset.into()),
        };
        let first = head.take().unwrap_or_default();
        let Some(frame) = frame else {
            return stream
                .write_all_buf(&mut first.chain(wire::LAST_CHUNK))
                .await;
        };
        let data = frame
            .map(|f| f.into_data())
            .unwrap_or_else(|never: Infallible| match never {});
        let Ok(data) = data else { continue };
        if data.is_empty() {
            continue;
        }
        let size = wire::chunk_size(data.len());
        let mut out = first.chain(size).chain(data).chain(&b"\r\n"[..]);
        stream.write_all_buf(&mut out).await?;
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
