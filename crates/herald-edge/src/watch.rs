//! The write timeout of connections served by hyper (TLS, HTTP/2, HTTP/1.1
//! that is not a plain stream). hyper has none: a client that stops
//! reading leaves the connection, and the streams on it with their
//! queues, subjects and slots, for as long as the socket lives.
//!
//! Each such connection notes when its socket stopped taking bytes
//! ([`WriteStall`], kept by herald-core's serving), and the node's
//! heartbeat task ([`crate::http1::beats`]) closes its streams
//! ([`CloseReason::WriteTimeout`]) and drops it once that has lasted the
//! write timeout. An HTTP/2 stream that its client stops reading while the
//! connection goes on (another tab's stream is read) is not a stalled
//! socket: it is closed as a slow consumer, and its siblings live on.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use herald_core::stall::WriteStall;
use tokio_util::sync::CancellationToken;

use crate::fanout::signal::Signal;
use crate::metrics::CloseReason;

/// What the heartbeat task needs to time one connection served by hyper.
#[derive(Debug)]
pub(crate) struct Watch {
    stall: Arc<WriteStall>,
    /// The streams opened on the connection, to count why they close.
    streams: Mutex<Vec<Weak<Signal>>>,
    connection: CancellationToken,
}

impl Watch {
    /// A watch on the connection that `connection` drops.
    pub(crate) fn new(connection: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            stall: Arc::default(),
            streams: Mutex::default(),
            connection,
        })
    }

    /// Where serving notes the connection's writes.
    pub(crate) fn stall(&self) -> Arc<WriteStall> {
        self.stall.clone()
    }

    /// Counts `signal`'s stream as closed by a write timeout if the
    /// connection times out.
    pub(crate) fn add(&self, signal: &Arc<Signal>) {
        let mut streams = self.streams.lock().unwrap();
        // An HTTP/2 connection may carry many streams over its life.
        streams.retain(|s| s.strong_count() > 0);
        streams.push(Arc::downgrade(signal));
    }

    /// Closes the connection's streams, and drops it, if its socket has
    /// taken nothing for `timeout`.
    pub(crate) fn check(&self, timeout: Duration) {
        let stalled = self.stall.since();
        if stalled.is_none_or(|since| since.elapsed() < timeout) {
            return;
        }
        for signal in self.streams.lock().unwrap().iter() {
            if let Some(signal) = signal.upgrade() {
                signal.close(CloseReason::WriteTimeout);
            }
        }
        self.connection.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_socket_takes_nothing_is_dropped_with_its_streams() {
        let connection = CancellationToken::new();
        let watch = Watch::new(connection.clone());
        let streams: Vec<_> = (0..3).map(|_| Signal::new(None, 0)).collect();
        for signal in &streams {
            watch.add(signal);
        }
        let ended = streams[2].clone();
        assert!(ended.close(CloseReason::ClientGone));
        let stall = watch.stall();

        // Writes waiting, then taken: no stall.
        stall.refused();
        tokio::time::advance(TIMEOUT * 2).await;
        stall.took();
        watch.check(TIMEOUT);
        assert!(!connection.is_cancelled());

        stall.refused();
        tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
        watch.check(TIMEOUT);
        assert!(!connection.is_cancelled(), "not yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        watch.check(TIMEOUT);
        assert!(connection.is_cancelled());
        for signal in &streams[..2] {
            assert_eq!(signal.reason(), Some(CloseReason::WriteTimeout));
        }
        assert_eq!(
            ended.reason(),
            Some(CloseReason::ClientGone),
            "first reason kept"
        );
    }

    #[test]
    fn streams_gone_are_forgotten() {
        let watch = Watch::new(CancellationToken::new());
        for _ in 0..10 {
            watch.add(&Signal::new(None, 0));
        }
        let kept = Signal::new(None, 0);
        watch.add(&kept);
        assert_eq!(watch.streams.lock().unwrap().len(), 1);
    }
}
