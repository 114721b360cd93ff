//! A plain HTTP/1.1 stream's socket, written by two: the stream's own
//! task (its head, events, last chunk) and the node's heartbeat task
//! ([`crate::beats`]). Neither waits on the other: the heartbeat task
//! only writes when the stream is between frames and the socket has room,
//! and a heartbeat the socket took only part of is finished by the stream
//! before its next frame.

use std::io::{self, ErrorKind, IoSlice};
use std::sync::Mutex;
use std::task::{Poll, ready};

use bytes::Buf;
use tokio::net::TcpStream;

/// One heartbeat, as a chunk of the chunked body.
const BEAT: &[u8] = b"d\r\n: heartbeat\n\n\r\n";

pub struct Line {
    socket: TcpStream,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The stream is writing a frame (it may be waiting for room).
    writing: bool,
    /// Bytes of a heartbeat still to write, before anything else.
    beat_rest: usize,
}

impl Line {
    /// A line whose first write is the response's head: until then it is
    /// `writing`, so no heartbeat goes before the head.
    pub fn new(socket: TcpStream) -> Self {
        let state = State {
            writing: true,
            ..State::default()
        };
        Self {
            socket,
            state: Mutex::new(state),
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Writes a heartbeat now if the stream is between frames and the
    /// socket takes it without waiting. A full socket has a client that is
    /// not reading, which a heartbeat would not help (the slow-consumer
    /// limit deals with it). Busy streams get theirs too: skipping one
    /// after an event would leave a gap of up to two intervals.
    pub fn beat(&self) {
        let mut state = self.state.lock().unwrap();
        if state.writing || state.beat_rest > 0 {
            return;
        }
        if let Ok(n) = self.socket.try_write(BEAT) {
            state.beat_rest = BEAT.len() - n;
        }
    }

    /// Writes all of `buf` (one frame), after the rest of a heartbeat the
    /// socket took only part of.
    pub async fn write_all(&self, mut buf: impl Buf) -> io::Result<()> {
        self.state.lock().unwrap().writing = true;
        // Polled by hand: a `writable()` future would sit in every
        // stream's connection future, idle or not.
        std::future::poll_fn(|cx| {
            loop {
                match self.try_write(&mut buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        ready!(self.socket.poll_write_ready(cx))?;
                    }
                    done => return Poll::Ready(done),
                }
            }
        })
        .await
    }

    /// Writes what the socket takes now: all of `buf`, or `WouldBlock`.
    fn try_write(&self, buf: &mut impl Buf) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        while state.beat_rest > 0 {
            let from = BEAT.len() - state.beat_rest;
            state.beat_rest -= written(self.socket.try_write(&BEAT[from..]))?;
        }
        while buf.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 4];
            let filled = buf.chunks_vectored(&mut slices);
            buf.advance(written(self.socket.try_write_vectored(&slices[..filled]))?);
        }
        state.writing = false;
        Ok(())
    }
}

/// A write's byte count; none written of a non-empty buffer is an error,
/// not a reason to try again.
fn written(result: io::Result<usize>) -> io::Result<usize> {
    match result? {
        0 => Err(ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A line on one end of a loopback connection, and the other end.
    async fn pair() -> (Line, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Line::new(accepted.unwrap().0), client.unwrap())
    }

    /// A frame waits for room in a full socket; room comes; a heartbeat
    /// due then must not cut into the frame. The client gets it whole,
    /// and the heartbeat after it.
    #[tokio::test]
    async fn a_heartbeat_never_splits_a_frame_that_waits_for_room() {
        let (line, mut client) = pair().await;
        let frame = vec![b'x'; 64 << 20];
        let mut rest = &frame[..];
        line.state.lock().unwrap().writing = true; // as `write_all` does
        let full = line.try_write(&mut rest).unwrap_err();
        assert_eq!(full.kind(), ErrorKind::WouldBlock);
        let sent = frame.len() - rest.len();
        assert!(sent > 0, "part of the frame went out");
        // The client reads all that was sent: room again, mid-frame.
        let mut got = vec![0; sent];
        client.read_exact(&mut got).await.unwrap();
        line.socket.writable().await.unwrap();
        line.beat();
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
        line.beat();
        let mut beat = vec![0; BEAT.len()];
        client.read_exact(&mut beat).await.unwrap();
        assert_eq!(beat, BEAT);
    }

    #[test]
    fn a_heartbeat_is_one_well_formed_chunk() {
        let text = std::str::from_utf8(BEAT).unwrap();
        let (size, rest) = text.split_once("\r\n").unwrap();
        let data = rest.strip_suffix("\r\n").unwrap();
        assert_eq!(usize::from_str_radix(size, 16).unwrap(), data.len());
        assert_eq!(data.as_bytes(), &crate::sse::heartbeat()[..]);
    }
}
