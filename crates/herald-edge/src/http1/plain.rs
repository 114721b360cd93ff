//! Plain (not TLS) connections: a `GET /v1/events` over HTTP/1.1 is
//! served without hyper, whose per-connection read and write buffers and
//! dispatcher would cost an idle stream several KiB; anything else goes
//! to hyper with the bytes read so far.
//!
//! A stream is its own small task, [`Streaming`], polled by hand: its
//! socket, its frames, and the frame being written, nothing else. The
//! head's buffer is gone once the head is parsed, one frame is written
//! at a time, and the connection closes after the response (`connection:
//! close`; an EventSource reconnects on a new one anyway). Its heartbeats
//! are written, its write timeout and its token's expiry kept, by the
//! node's heartbeat task ([`crate::http1::beats`]), so an idle stream's task
//! does not wake; a socket that takes nothing for `--write-timeout` ends
//! the stream (see [`crate::http1::line`]).

use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use herald_core::listener::{Accepted, Slot};
use herald_core::serve::{CLOSE_GRACE, Http, Opening};
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::http1::beats::Heartbeats;
use crate::http1::head::{self, First};
use crate::http1::line::Line;
use crate::http1::wire::{self, Framing};
use crate::session::Frames;
use crate::state::State;

/// Serves one plain connection: a stream goes on as its own task
/// ([`Streaming`]) and this one ends; anything else is answered here, or
/// by hyper, until `stop` asks it to close.
pub(crate) async fn serve(
    accepted: Accepted,
    state: Arc<State>,
    http: Http,
    stop: CancellationToken,
) {
    let Accepted {
        mut stream,
        deadline,
        slot,
    } = accepted;
    // Boxed, as the other phases below: a future is as big as its
    // biggest phase. Each box is made in its own statement: a temporary
    // in an `.await` statement keeps its room in this future even once
    // moved into the box.
    let reading = Box::pin(head::read(&mut stream, deadline, slot.shared(), &stop));
    let first = reading.await;
    match first {
        First::Done => {}
        First::Hyper(read) => {
            let accepted = Accepted {
                stream,
                deadline,
                slot,
            };
            let opening = Opening::After(read);
            let transport = CancellationToken::new();
            let serving = crate::service::serve(&http, accepted, opening, state, transport, stop);
            Box::pin(serving).await;
        }
        First::Stream(req) => {
            let routing = crate::events::route(*req, state.clone(), None, Heartbeats::ByNode);
            let routing = Box::pin(routing); // its own statement: see above
            // A route that outlasts a shutdown's grace (NATS slow) is cut,
            // as hyper's connections are.
            let response = tokio::select! {
                response = routing => response,
                () = cut_after(&stop) => return,
            };
            respond(stream, slot, response, &state).await;
        }
    }
}

/// Writes a short answer here; hands a stream to its own task.
async fn respond(stream: TcpStream, slot: Slot, response: Response<Body>, state: &State) {
    let (parts, body) = response.into_parts();
    match body {
        Body::Stream(frames) => {
            let Some((signal, exp)) = frames.ending() else {
                return; // ended before it began: nothing to write
            };
            let line = Arc::new(Line::new(stream, signal.clone(), exp));
            state.beats.add(&line);
            let head = wire::head(parts.status, &parts.headers, Framing::Chunked);
            tokio::spawn(Streaming::new(line, frames, head, slot));
        }
        full => {
            let len = full.size_hint().exact().unwrap_or_default();
            let head = wire::head(parts.status, &parts.headers, Framing::Length(len));
            // A refusal fits in a new socket's buffer; bounded all the same.
            let writing = write_full(stream, head, full);
            let _ = tokio::time::timeout(state.config.write_timeout, writing).await;
            drop(slot);
        }
    }
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

/// Returns [`CLOSE_GRACE`] after `stop`: the time hyper's path gives a
/// connection asked to close.
async fn cut_after(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(CLOSE_GRACE).await;
}

/// What a plain stream writes: its frames, `None` after the last.
pub(crate) trait Source: Unpin {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>>;
}

impl Source for Frames {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Frames::poll_next(self, cx)
    }
}

/// What is written at once: a chunk's size line, its data and the CRLF
/// after it; or the response's head alone.
type Chunk = Chain<Chain<Bytes, Bytes>, &'static [u8]>;

/// A plain stream: its head, then a frame at a time as chunks, until its
/// frames end, the client goes away, or its connection is cut (a slow
/// consumer, a write timeout, a shutdown). Dropping the frames ends the
/// session as hyper's path does (`client_gone` unless the signal says
/// otherwise).
pub(crate) struct Streaming<S> {
    line: Arc<Line>,
    /// `None` once the stream ended: only its last bytes remain to write.
    frames: Option<S>,
    /// What is being written: the head first, then a chunk at a time.
    pending: Option<Chunk>,
    /// The pending chunk is the last.
    last: bool,
    /// Counts the socket as open.
    _slot: Slot,
}

impl<S: Source> Streaming<S> {
    pub(crate) fn new(line: Arc<Line>, frames: S, head: Bytes, slot: Slot) -> Self {
        line.begin(false);
        Self {
            line,
            frames: Some(frames),
            pending: Some(head.chain(Bytes::new()).chain(&[][..])),
            last: false,
            _slot: slot,
        }
    }

    /// The next chunk: the stream's next frame, or the last chunk.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Chunk> {
        loop {
            let next = match &mut self.frames {
                Some(frames) => ready!(frames.poll_next(cx)),
                None => None,
            };
            let chunk = match next {
                Some(data) if data.is_empty() => continue,
                Some(data) => wire::chunk_size(data.len()).chain(data).chain(&b"\r\n"[..]),
                None => {
                    self.frames = None;
                    self.last = true;
                    let last = Bytes::from_static(wire::LAST_CHUNK);
                    last.chain(Bytes::new()).chain(&[][..])
                }
            };
            self.line.begin(self.last);
            return Poll::Ready(chunk);
        }
    }
}

impl<S: Source> Future for Streaming<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.line.signal().poll_cut(cx).is_ready() {
            tracing::debug!("connection cut (slow consumer, write timeout or shutdown)");
            return Poll::Ready(());
        }
        if this.line.poll_client_gone(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            if this.pending.is_none() {
                this.pending = Some(ready!(this.poll_chunk(cx)));
            }
            let Some(chunk) = &mut this.pending else {
                unreachable!("set above")
            };
            match this.line.poll_write(cx, chunk) {
                Poll::Ready(Ok(())) => this.pending = None,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {
                    // No room: the frames are not polled until the chunk is
                    // out, so a close made meanwhile (at the token's `exp`,
                    // a drain, a revocation) is acted on here. The stream
                    // ends at once: what its session holds (slot, subjects,
                    // count) goes with the frames, and only the socket
                    // waits, within the write timeout, for the client to
                    // take the chunk and the last one.
                    if this.frames.is_some() && this.line.signal().poll_closed(cx).is_ready() {
                        this.frames = None;
                    }
                    return Poll::Pending;
                }
            }
            if this.last {
                let _ = socket2::SockRef::from(this.line.socket()).shutdown(Shutdown::Write);
                return Poll::Ready(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_core::listener::{Bounds, Listener};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::http1::line::tests::is_cut;
    use crate::metrics::CloseReason;

    /// The size of the future `f` would return; `f` is never called.
    fn future_size<F>(_f: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A value of any type, for arguments of a call that never runs.
    fn never<T>() -> T {
        unreachable!("only the call's type is looked at")
    }

    /// Frames given in order, then the end if `ends`, else none until
    /// dropped; `dropped` resolves when they are.
    struct Given {
        frames: Vec<Bytes>,
        ends: bool,
        _held: tokio::sync::oneshot::Sender<()>,
    }

    impl Source for Given {
        fn poll_next(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
            match (self.frames.is_empty(), self.ends) {
                (false, _) => Poll::Ready(Some(self.frames.remove(0))),
                (true, true) => Poll::Ready(None),
                (true, false) => Poll::Pending,
            }
        }
    }

    /// A stream on an accepted socket that writes `frames` (then ends if
    /// `ends`), its client, and what resolves once its frames are dropped.
    async fn streaming(
        frames: Vec<Bytes>,
        ends: bool,
    ) -> (
        Streaming<Given>,
        Arc<Line>,
        TcpStream,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = Listener::new(tcp, Bounds::default());
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let signal = crate::fanout::signal::Signal::new(None, 0);
        let line = Arc::new(Line::new(accepted.stream, signal, u64::MAX));
        let (held, dropped) = tokio::sync::oneshot::channel();
        let given = Given {
            frames,
            ends,
            _held: held,
        };
        let head = Bytes::from_static(b"HEAD ");
        let streaming = Streaming::new(line.clone(), given, head, accepted.slot);
        (streaming, line, client.unwrap(), dropped)
    }

    /// Frames go out as chunks, the head with the first, then the last
    /// chunk; the socket closes after it.
    #[tokio::test]
    async fn frames_go_out_as_chunks_then_the_last_and_the_close() {
        let frames = vec![
            Bytes::from_static(b"one"),
            Bytes::new(),
            Bytes::from_static(b"hello"),
        ];
        let (streaming, _line, mut client, dropped) = streaming(frames, true).await;
        let running = tokio::spawn(streaming);
        let mut got = Vec::new();
        let reading = client.read_to_end(&mut got);
        tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the socket closes")
            .unwrap();
        assert_eq!(got, b"HEAD 3\r\none\r\n5\r\nhello\r\n0\r\n\r\n");
        assert!(dropped.await.is_err(), "the frames are dropped");
        assert!(running.await.is_ok());
    }

    /// A client that reads nothing: the writer waits for room with a frame
    /// of 64 MiB. A close meanwhile (a drain, the token's expiry) ends the
    /// stream then (its frames, which hold its guard, are dropped), while
    /// the socket waits for the client; a cut then drops the connection.
    #[tokio::test]
    async fn a_close_while_a_write_waits_ends_the_stream_at_once() {
        let frames = vec![Bytes::from(vec![b'x'; 64 << 20])];
        let (streaming, line, _client, dropped) = streaming(frames, false).await;
        let running = tokio::spawn(streaming);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!running.is_finished(), "the socket took 64 MiB unread");
        line.signal().close(CloseReason::Drain);
        let ended = tokio::time::timeout(Duration::from_secs(5), dropped).await;
        assert!(ended.is_ok(), "the frames are dropped");
        assert!(!running.is_finished(), "the write still waits");
        line.signal().close(CloseReason::WriteTimeout);
        assert!(is_cut(&line));
        let done = tokio::time::timeout(Duration::from_secs(5), running).await;
        assert!(done.is_ok(), "a cut drops the connection");
        assert_eq!(line.signal().reason(), Some(CloseReason::Drain));
    }

    /// A client that goes away ends its stream, frames and all.
    #[tokio::test]
    async fn a_client_that_goes_ends_its_stream() {
        let (streaming, _line, client, dropped) = streaming(Vec::new(), false).await;
        let running = tokio::spawn(streaming);
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), dropped).await;
        assert!(ended.is_ok(), "the frames are dropped");
        assert!(running.await.is_ok());
    }

    /// Every idle stream holds its task: tokio's cell around this future,
    /// aligned to 128 bytes (512 in a release build at 336 bytes; 640
    /// with the head kept apart and a chunk of four buffers). The
    /// connection's future is gone once the stream starts.
    #[test]
    fn a_streams_task_stays_small() {
        let serve = future_size(|| serve(never(), never(), never(), never()));
        let streaming = std::mem::size_of::<Streaming<Frames>>();
        println!("connection future {serve} bytes; stream task's future {streaming} bytes");
        // Held only while a head is read and routed, but by every
        // connection of a reconnect storm at once.
        assert!(serve <= 2_048, "connection future of {serve} bytes");
        assert!(streaming <= 344, "stream future of {streaming} bytes");
    }
}
