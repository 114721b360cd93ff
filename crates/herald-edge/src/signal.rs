//! How others close a stream: the fan-out (slow consumer), the NATS
//! connection's loss, or the stream itself. A leaf: shared by the fan-out
//! and the session, it imports neither.

use std::sync::{Arc, OnceLock};

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
    closed: CancellationToken,
    /// Closes the whole HTTP/1.1 connection: a client that stopped reading
    /// never polls the body again, so only dropping the connection frees it.
    transport: Option<CancellationToken>,
}

#[derive(Debug)]
struct Closing {
    reason: CloseReason,
    farewell: Option<Box<[u8]>>,
}

/// What a plain stream's writer needs of its stream, handed to it in the
/// response's extensions: how it is closed, and when its token expires.
#[derive(Debug, Clone)]
pub struct Ending {
    pub signal: Arc<Signal>,
    /// The token's `exp`, in seconds since the Unix epoch: 8 bytes the
    /// writer holds for the stream's life, where an `Instant` takes 16.
    pub exp: u64,
}

impl Signal {
    /// A stream's signal; `issued_at` is its token's `iat` (0: none).
    pub fn new(transport: Option<CancellationToken>, issued_at: u64) -> Arc<Self> {
        Arc::new(Self {
            closing: OnceLock::new(),
            issued_at,
            closed: CancellationToken::new(),
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
        if first {
            self.closed.cancel();
        }
        // A slow consumer's connection goes only if this closes the stream
        // (one already closing sends what it has queued, then its reason).
        // A socket that timed out goes whatever the stream was doing: its
        // last frame may be what is stuck.
        let drop_transport = match reason {
            CloseReason::SlowConsumer => first,
            CloseReason::WriteTimeout => true,
            _ => false,
        };
        if drop_transport && let Some(transport) = &self.transport {
            transport.cancel();
        }
        first
    }

    /// Resolves once the stream is closed.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
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

    #[test]
    fn the_transport_goes_for_a_client_that_is_not_reading() {
        let transport = CancellationToken::new();
        let signal = Signal::new(Some(transport.clone()), 0);
        assert!(signal.close(CloseReason::TokenExpired));
        assert!(!transport.is_cancelled(), "a close writes its last frame");
        // The last frame is stuck: the socket goes, the first reason stays.
        assert!(!signal.close(CloseReason::WriteTimeout));
        assert!(transport.is_cancelled());
        assert_eq!(signal.reason(), Some(CloseReason::TokenExpired));

        let transport = CancellationToken::new();
        let signal = Signal::new(Some(transport.clone()), 0);
        assert!(signal.close(CloseReason::Drain));
        assert!(!signal.close(CloseReason::SlowConsumer));
        assert!(
            !transport.is_cancelled(),
            "a closing stream sends its queue"
        );
        assert!(Signal::new(None, 0).close(CloseReason::WriteTimeout));
    }
}
