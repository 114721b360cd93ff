//! A plain HTTP/1.1 stream's socket, written by two: the stream's own
//! task (its head, events, last chunk) and the node's heartbeat task
//! ([`crate::http1::beats`]). Neither waits on the other: the heartbeat task
//! only writes when the stream is between frames and the socket has room,
//! and a heartbeat the socket took only part of is finished by whichever
//! writes next. Nothing is written after the last chunk.
//!
//! Both note when the socket stopped taking bytes, and the heartbeat task,
//! which visits every stream each interval, closes the stream once its
//! socket has taken nothing for the write timeout
//! ([`CloseReason::WriteTimeout`], which cuts the connection and so a
//! write blocked on it), and once its token expires: an idle stream
//! costs no timer, and the stream's task holds none.

use std::io::{self, ErrorKind, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Buf;
use herald_core::stamp::Stamp;
use tokio::net::TcpStream;

use crate::fanout::signal::Signal;
use crate::metrics::CloseReason;

/// One heartbeat, as a chunk of the chunked body.
const BEAT: &[u8] = b"d\r\n: heartbeat\n\n\r\n";

/// Most bytes a client may send after its request head.
const MAX_SENT_AFTER_HEAD: u16 = 1024;

pub(crate) struct Line {
    socket: TcpStream,
    /// Closes the stream when its socket takes nothing for too long, or
    /// its token expires.
    signal: Arc<Signal>,
    /// The stream's token's `exp`, in seconds since the Unix epoch.
    exp: u64,
    /// The heartbeat task watches this stream's expiry closely.
    expiring: AtomicBool,
    /// Eight bytes: every open stream has one.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    writer: Writer,
    /// Bytes of a heartbeat still to write, before anything else.
    beat_rest: u8,
    /// Bytes the client sent after its request head.
    sent_after_head: u16,
    /// Since when the socket has taken no bytes; `None` while it takes
    /// what it is given.
    stalled: Option<Stamp>,
}

/// Who may write to the socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The stream, writing a frame (it may be waiting for room); first
    /// the response's head, so no heartbeat goes before it.
    #[default]
    Stream,
    /// The heartbeat task too: the stream is between frames.
    Either,
    /// No one: the last chunk is written, or being written.
    Done,
}

impl Line {
    pub(crate) fn new(socket: TcpStream, signal: Arc<Signal>, exp: u64) -> Self {
        Self {
            socket,
            signal,
            exp,
            expiring: AtomicBool::new(false),
            state: Mutex::default(),
        }
    }

    /// The stream's token's `exp`, in seconds since the Unix epoch.
    pub(crate) fn exp(&self) -> u64 {
        self.exp
    }

    /// Notes that the heartbeat task watches this stream's expiry closely;
    /// whether it did not already.
    pub(crate) fn watch_expiry(&self) -> bool {
        !self.expiring.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    pub(crate) fn signal(&self) -> &Signal {
        &self.signal
    }

    /// Writes a heartbeat now, or the rest of one the socket took only
    /// part of, if the stream is between frames; never waits for room.
    /// Busy streams get theirs too: skipping one after an event would
    /// leave a gap of up to two intervals. Closes the stream if its socket
    /// has taken nothing for `timeout`, whoever was writing.
    pub(crate) fn beat(&self, timeout: Duration) {
        let mut state = self.state.lock().unwrap();
        if state.writer == Writer::Either {
            if state.beat_rest == 0 {
                state.beat_rest = BEAT.len() as u8;
            }
            // A broken socket is the stream task's to find (`client_gone`).
            let _ = self.finish_beat(&mut state);
            if usize::from(state.beat_rest) == BEAT.len() {
                state.beat_rest = 0; // none of it went: none is owed
            }
        }
        let stalled = state
            .stalled
            .is_some_and(|since| since.elapsed() >= timeout);
        drop(state);
        if stalled {
            // What the socket holds will never be read: a reset frees it at
            // once, where a close would leave the kernel probing the
            // client's closed window with it.
            let _ = socket2::SockRef::from(&self.socket).set_linger(Some(Duration::ZERO));
            self.signal.close(CloseReason::WriteTimeout);
        }
    }

    /// Starts a frame: the stream writes it, the heartbeat task waits
    /// until it is out; after the `last` one, nothing is written.
    pub(crate) fn begin(&self, last: bool) {
        self.state.lock().unwrap().writer = match last {
            true => Writer::Done,
            false => Writer::Stream,
        };
    }

    /// Writes all of `buf`, the frame begun (after the rest of a heartbeat
    /// the socket took only part of); wakes `cx` when there is room.
    pub(crate) fn poll_write(
        &self,
        cx: &mut Context<'_>,
        buf: &mut impl Buf,
    ) -> Poll<io::Result<()>> {
        loop {
            match self.try_write(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    ready!(self.socket.poll_write_ready(cx))?;
                }
                done => return Poll::Ready(done),
            }
        }
    }

    /// Writes what the socket takes now: all of `buf`, or `WouldBlock`.
    fn try_write(&self, buf: &mut impl Buf) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        self.finish_beat(&mut state)?;
        while buf.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 4];
            let filled = buf.chunks_vectored(&mut slices);
            let n = self.offer(&mut state, |s| s.try_write_vectored(&slices[..filled]))?;
            buf.advance(n);
        }
        if state.writer == Writer::Stream {
            state.writer = Writer::Either;
        }
        Ok(())
    }

    /// Writes the rest of a heartbeat, if any: all of it, or `WouldBlock`.
    fn finish_beat(&self, state: &mut State) -> io::Result<()> {
        while state.beat_rest > 0 {
            let from = BEAT.len() - usize::from(state.beat_rest);
            let n = self.offer(state, |s| s.try_write(&BEAT[from..]))?;
            state.beat_rest -= n as u8;
        }
        Ok(())
    }

    /// One write to the socket, noting whether it took bytes. None written
    /// of a non-empty buffer is an error, not a reason to try again.
    fn offer(
        &self,
        state: &mut State,
        write: impl FnOnce(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        match write(&self.socket) {
            Ok(0) => Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                state.stalled = None;
                Ok(n)
            }
            Err(e) => {
                if e.kind() == ErrorKind::WouldBlock {
                    state.stalled.get_or_insert_with(Stamp::now);
                }
                Err(e)
            }
        }
    }

    /// Ready when the client closes its side, the socket fails, or the
    /// client has sent more than [`MAX_SENT_AFTER_HEAD`] bytes since its
    /// request head; wakes `cx` when it sends. Whatever it sends is dropped.
    ///
    /// An EventSource sends nothing more, but a stray CRLF or a request
    /// pipelined behind the stream's (never answered: `connection:
    /// close`) is no reason to cut a stream. More is: closing keeps the
    /// stream's task from being woken by every packet of a client that
    /// writes without end. Not reading instead would leave the kernel
    /// holding up to a receive buffer of unread bytes per socket, and
    /// hide the client's close.
    pub(crate) fn poll_client_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if ready!(self.socket.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            let mut scrap = [0u8; 64];
            match self.socket.try_read(&mut scrap) {
                Ok(0) => return Poll::Ready(()),
                Ok(n) => {
                    let mut state = self.state.lock().unwrap();
                    let sent = state.sent_after_head.saturating_add(n as u16);
                    state.sent_after_head = sent;
                    if sent > MAX_SENT_AFTER_HEAD {
                        tracing::debug!(
                            bytes = sent,
                            "client sent too much after its request head"
                        );
                        return Poll::Ready(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A line on one end of a loopback connection (a token that never
    /// expires), and the other end.
    pub(crate) async fn pair() -> (Line, TcpStream) {
        pair_until(u64::MAX).await
    }

    /// [`pair`] with a token that expires at `exp`.
    pub(crate) async fn pair_until(exp: u64) -> (Line, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let line = Line::new(accepted.unwrap().0, Signal::new(None, 0), exp);
        (line, client.unwrap())
    }

    /// Whether the line's connection is to be dropped now.
    pub(crate) fn is_cut(line: &Line) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        line.signal.poll_cut(&mut cx).is_ready()
    }

    impl Line {
        pub(crate) async fn write_all(&self, mut buf: impl Buf) -> io::Result<()> {
            self.begin(false);
            std::future::poll_fn(|cx| self.poll_write(cx, &mut buf)).await
        }

        pub(crate) async fn write_last(&self, mut buf: impl Buf) -> io::Result<()> {
            self.begin(true);
            std::future::poll_fn(|cx| self.poll_write(cx, &mut buf)).await
        }

        async fn client_gone(&self) {
            std::future::poll_fn(|cx| self.poll_client_gone(cx)).await
        }
    }

    /// Fills the socket behind the line's back, as a client that stopped
    /// reading leaves it; the line is between frames.
    pub(crate) fn fill(line: &Line) {
        line.state.lock().unwrap().writer = Writer::Either;
        let block = vec![b'x'; 1 << 16];
        loop {
            match line.socket.try_write(&block) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// As `beat` leaves a line whose socket took all but `rest` bytes of
    /// a heartbeat.
    pub(crate) fn owe_beat(line: &Line, rest: usize) {
        line.state.lock().unwrap().beat_rest = rest as u8;
    }

    /// Why the line's stream was closed, if it was.
    pub(crate) fn closed_for(line: &Line) -> Option<CloseReason> {
        line.signal.reason()
    }

    /// A frame waits for room in a full socket; room comes; a heartbeat
    /// due then must not cut into the frame. The client gets it whole,
    /// and the heartbeat after it.
    #[tokio::test]
    async fn a_heartbeat_never_splits_a_frame_that_waits_for_room() {
        let (line, mut client) = pair().await;
        let frame = vec![b'x'; 64 << 20];
        let mut rest = &frame[..];
        let full = line.try_write(&mut rest).unwrap_err();
        assert_eq!(full.kind(), ErrorKind::WouldBlock);
        let sent = frame.len() - rest.len();
        assert!(sent > 0, "part of the frame went out");
        // The client reads all that was sent: room again, mid-frame.
        let mut got = vec![0; sent];
        client.read_exact(&mut got).await.unwrap();
        line.socket.writable().await.unwrap();
        line.beat(TIMEOUT);
        let (written, tail) = tokio::join!(line.write_all(rest), async {
            let mut tail = vec![0; frame.len() - sent];
            client.read_exact(&mut tail).await.map(|_| tail)
        });
        written.unwrap();
        let tail = tail.unwrap();
        assert!(
            got.iter().chain(&tail).all(|&b| b == b'x'),
            "a heartbeat cut into the frame"
        );
        // Between frames it goes out.
        line.beat(TIMEOUT);
        let mut beat = vec![0; BEAT.len()];
        client.read_exact(&mut beat).await.unwrap();
        assert_eq!(beat, BEAT);
    }

    /// An idle stream whose client stopped reading: its heartbeat finds
    /// the socket full, and the heartbeat task closes the stream once the
    /// socket has taken nothing for the timeout. The connection goes too.
    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_is_closed_after_the_timeout() {
        let (line, _client) = pair().await;
        fill(&line);
        line.beat(TIMEOUT);
        assert!(line.state.lock().unwrap().stalled.is_some());
        assert_eq!(
            line.state.lock().unwrap().beat_rest,
            0,
            "none went, none owed"
        );
        tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
        line.beat(TIMEOUT);
        assert_eq!(closed_for(&line), None, "not yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        line.beat(TIMEOUT);
        assert_eq!(closed_for(&line), Some(CloseReason::WriteTimeout));
        assert!(is_cut(&line), "the connection is dropped");
    }

    /// A frame blocked on a full socket: the stall counts from when the
    /// socket first refused bytes (here, to a heartbeat), and the
    /// heartbeat task closes the stream, whose connection (and so the
    /// blocked write) is dropped.
    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_is_cut_once_the_socket_took_nothing_for_the_timeout() {
        let (line, _client) = pair().await;
        fill(&line);
        line.beat(TIMEOUT);
        tokio::time::advance(TIMEOUT / 2).await;
        let frame = vec![b'y'; 1 << 20];
        let writing = line.write_all(&frame[..]);
        let cut = async {
            tokio::time::advance(TIMEOUT / 2).await;
            line.beat(TIMEOUT);
            std::future::poll_fn(|cx| line.signal.poll_cut(cx)).await;
        };
        tokio::select! {
            _ = writing => panic!("the socket took a frame"),
            () = cut => {}
        }
        assert_eq!(closed_for(&line), Some(CloseReason::WriteTimeout));
    }

    /// Bytes going out restart the count: a slow reader is not a stalled one.
    #[tokio::test]
    async fn a_socket_that_takes_bytes_is_not_stalled() {
        let (line, mut client) = pair().await;
        fill(&line);
        line.beat(TIMEOUT);
        assert!(line.state.lock().unwrap().stalled.is_some());
        // The client reads until the socket has room again (how much that
        // takes depends on the kernel's buffer sizes at the moment: a
        // fixed 1 MiB once waited for ever for bytes never written).
        let mut drained = vec![0; 1 << 16];
        loop {
            tokio::select! {
                ready = line.socket.writable() => break ready.unwrap(),
                read = client.read(&mut drained) => assert!(read.unwrap() > 0),
            }
        }
        line.beat(TIMEOUT);
        assert!(line.state.lock().unwrap().stalled.is_none());
    }

    /// The last chunk is the last thing on the wire: the heartbeat task
    /// writes nothing after it.
    #[tokio::test]
    async fn nothing_follows_the_last_chunk() {
        let (line, mut client) = pair().await;
        line.write_all(&b"HTTP/1.1 200 OK\r\n\r\n"[..])
            .await
            .unwrap();
        line.write_last(&b"0\r\n\r\n"[..]).await.unwrap();
        line.beat(TIMEOUT);
        drop(line);
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"HTTP/1.1 200 OK\r\n\r\n0\r\n\r\n");
    }

    /// What a client sends after its head is dropped, up to a bound; past
    /// it, the stream ends as if the client had gone.
    #[tokio::test]
    async fn a_client_that_keeps_sending_is_cut_off() {
        let (line, mut client) = pair().await;
        client.write_all(b"\r\n").await.unwrap();
        let gone = tokio::time::timeout(Duration::from_millis(200), line.client_gone()).await;
        assert!(gone.is_err(), "a stray CRLF is no reason to close");
        let flood = vec![b'z'; 64 * 1024];
        let writing = tokio::spawn(async move {
            let _ = client.write_all(&flood).await;
            client
        });
        tokio::time::timeout(Duration::from_secs(5), line.client_gone())
            .await
            .expect("cut off past the bound");
        let sent = line.state.lock().unwrap().sent_after_head;
        assert!(
            sent > MAX_SENT_AFTER_HEAD && sent < MAX_SENT_AFTER_HEAD + 64,
            "{sent}"
        );
        drop(line);
        drop(writing.await.unwrap());
    }

    #[test]
    fn a_heartbeat_is_one_well_formed_chunk() {
        let text = std::str::from_utf8(BEAT).unwrap();
        let (size, rest) = text.split_once("\r\n").unwrap();
        let data = rest.strip_suffix("\r\n").unwrap();
        assert_eq!(usize::from_str_radix(size, 16).unwrap(), data.len());
        assert_eq!(data.as_bytes(), &crate::sse::heartbeat()[..]);
        assert!(BEAT.len() < usize::from(u8::MAX), "its rest fits in a byte");
    }

    /// Every open stream holds a line: its state stays within 8 bytes.
    #[test]
    fn a_lines_state_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Mutex<State>>(), 16);
        assert_eq!(std::mem::size_of::<State>(), 8);
        println!("line {} bytes", std::mem::size_of::<Line>());
        assert!(std::mem::size_of::<Line>() <= 80);
    }
}
