//! When a connection's socket stopped taking the bytes written to it. hyper
//! has no write timeout: a client that stops reading leaves the
//! connection, and whatever its requests hold, for as long as the socket
//! lives. A connection served with a [`WriteStall`] notes in it when a
//! write first found the socket full since the socket last took bytes;
//! whoever holds the other end (the edge's heartbeat task) decides when
//! that has lasted too long. Nothing here wakes or holds a timer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stamp::Stamp;

/// Since when a connection's socket has taken none of the bytes waiting
/// for it; none while it takes what it is given.
#[derive(Debug, Default)]
pub struct WriteStall {
    /// A [`Stamp`], or zero.
    since: AtomicU32,
}

impl WriteStall {
    pub fn since(&self) -> Option<Stamp> {
        Stamp::from_raw(self.since.load(Ordering::Relaxed))
    }

    /// A write found no room.
    pub fn refused(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            self.since.store(Stamp::now().raw(), Ordering::Relaxed);
        }
    }

    /// The socket took bytes, or has none waiting.
    pub fn took(&self) {
        if self.since.load(Ordering::Relaxed) != 0 {
            self.since.store(0, Ordering::Relaxed);
        }
    }
}

/// An IO noting its writes in a [`WriteStall`], if given one.
pub struct Stalling<IO> {
    pub io: IO,
    pub stall: Option<Arc<WriteStall>>,
}

impl<IO> Stalling<IO> {
    /// A write that took bytes (or a flush that left none waiting) clears
    /// the stall; one that found no room starts it.
    fn note<T>(&self, polled: &Poll<io::Result<T>>, took: impl FnOnce(&T) -> bool) {
        let Some(stall) = &self.stall else { return };
        match polled {
            Poll::Pending => stall.refused(),
            Poll::Ready(Ok(done)) if took(done) => stall.took(),
            Poll::Ready(_) => {}
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Stalling<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Stalling<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&polled, |n| *n > 0);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.note(&polled, |()| true);
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[tokio::test]
    async fn a_socket_that_takes_nothing_is_noted_until_it_takes_bytes_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut client = client.unwrap();
        let stall = Arc::new(WriteStall::default());
        let mut io = Stalling {
            io: accepted.unwrap().0,
            stall: Some(stall.clone()),
        };
        io.write_all(b"hello").await.unwrap();
        assert_eq!(stall.since(), None);

        // The client does not read: a big write waits, and the wait is noted.
        let big = vec![b'x'; 64 << 20];
        let writing = tokio::time::timeout(Duration::from_millis(300), io.write_all(&big)).await;
        assert!(writing.is_err(), "the socket took 64 MiB unread");
        let since = stall.since().expect("the stall is noted");

        // The client reads: the next write goes out and clears it.
        let mut got = vec![0; 1 << 20];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(
            stall.since(),
            Some(since),
            "noted until a write takes bytes"
        );
        io.write_all(b"more").await.unwrap();
        assert_eq!(stall.since(), None);
    }
}
