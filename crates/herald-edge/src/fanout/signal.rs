//! How others close a stream: the fan-out (slow consumer), the NATS
//! connection's loss, or the stream itself. A leaf: shared by the fan-out
//! and the session, it imports neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

use crate::metrics::CloseReason;

/// Closes one stream, once, for the first reason given.
#[derive(Debug)]
pub struct Signal {
    /// The first reason given wins, with the event sent before the end
    /// when the app ended the stream (Disconnect, Revoke).
    closing: OnceLock<Closing>,
    /// The stream's token's `iat` (0: none): a revocation ends the
    /// streams whose tokens it refuses.
    issued_at: u64,
    /// Wakes the one task that drives the stream: a close, or a cut.
    waker: AtomicWaker,
    /// The connection is to go now, whatever the stream was writing: a
    /// client that stopped reading never takes the last frame.
    cut: AtomicBool,
    /// Closes the whole HTTP/1.1 connection hyper serves, at a cut: a
    /// client that stopped reading never polls the body again, so only
    /// dropping the connection frees it.
    transport: Option<CancellationToken>,
}

#[derive(Debug)]
struct Closing {
    reason: CloseReason,
    farewell: Option<Box<[u8]>>,
}

impl Signal {
    /// A stream's signal; `issued_at` is its token's `iat` (0: none);
    /// `transport` drops the hyper connection that serves it at a cut.
    pub fn new(transport: Option<CancellationToken>, issued_at: u64) -> Arc<Self> {
        Arc::new(Self {
            closing: OnceLock::new(),
            issued_at,
            waker: AtomicWaker::new(),
            cut: AtomicBool::new(false),
            transport,
        })
    }

    /// Closes the stream for `reason` unless it is already closing;
    /// returns whether this call was the one that closed it.
    pub fn close(&self, reason: CloseReason) -> bool {
        self.close_with(reason, None)
    }

    /// Closes the stream for `reason`, its last event `farewell` (a whole
    /// SSE event), unless it is already closing; as [`Signal::close`].
    pub fn close_with(&self, reason: CloseReason, farewell: Option<Box<[u8]>>) -> bool {
        let first = self.closing.set(Closing { reason, farewell }).is_ok();
        // A slow consumer's connection goes only if this closes the stream
        // (one already closing sends what it has queued, then its reason).
        // A socket that timed out goes whatever the stream was doing: its
        // last frame may be what is stuck.
        let cut = match reason {
            CloseReason::SlowConsumer => first,
            CloseReason::WriteTimeout => true,
            _ => false,
        };
        if cut {
            self.cut();
        } else if first {
            self.waker.wake();
        }
        first
    }

    /// Drops the stream's connection now, closing the stream if it is
    /// not closing yet (as a write timeout): a shutdown's last resort.
    pub fn cut(&self) {
        let _ = self.closing.set(Closing {
            reason: CloseReason::WriteTimeout,
            farewell: None,
        });
        self.cut.store(true, Ordering::Release);
        if let Some(transport) = &self.transport {
            transport.cancel();
        }
        self.waker.wake();
    }

    /// Ready once the stream is closed; wakes `cx` then otherwise.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        match self.closing.get() {
            Some(_) => Poll::Ready(()),
            None => Poll::Pending,
        }
    }

    /// Resolves once the stream is closed.
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    /// Ready once the connection is to go now; wakes `cx` then otherwise.
    pub fn poll_cut(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        match self.cut.load(Ordering::Acquire) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.closing.get().map(|c| c.reason)
    }

    /// The event to send before the stream ends, if the app gave one.
    pub fn farewell(&self) -> Option<&[u8]> {
        self.closing.get()?.farewell.as_deref()
    }

    /// The stream's token's `iat`, 0 if it had none.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_cut(signal: &Signal) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        signal.poll_cut(&mut cx).is_ready()
    }

    #[test]
    fn the_connection_goes_for_a_client_that_is_not_reading() {
        let transport = CancellationToken::new();
        let signal = Signal::new(Some(transport.clone()), 0);
        assert!(signal.close(CloseReason::TokenExpired));
        assert!(!is_cut(&signal), "a close writes its last frame");
        assert!(!transport.is_cancelled());
        // The last frame is stuck: the socket goes, the first reason stays.
        assert!(!signal.close(CloseReason::WriteTimeout));
        assert!(is_cut(&signal) && transport.is_cancelled());
        assert_eq!(signal.reason(), Some(CloseReason::TokenExpired));

        let signal = Signal::new(None, 0);
        assert!(signal.close(CloseReason::Drain));
        assert!(!signal.close(CloseReason::SlowConsumer));
        assert!(!is_cut(&signal), "a closing stream sends its queue");
        let signal = Signal::new(None, 0);
        assert!(signal.close(CloseReason::SlowConsumer));
        assert!(is_cut(&signal), "a slow consumer's connection goes");
        assert!(Signal::new(None, 0).close(CloseReason::WriteTimeout));
    }

    #[tokio::test]
    async fn a_close_wakes_the_stream_that_waits() {
        let signal = Signal::new(None, 0);
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.closed().await }
        });
        tokio::task::yield_now().await;
        signal.close(CloseReason::Drain);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(woken.is_ok(), "woken by the close");
    }
}
