//! How others close a stream: the fan-out (slow consumer), the NATS
//! connection's loss, or the stream itself. A leaf: shared by the fan-out
//! and the session, it imports neither.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::metrics::CloseReason;

/// Closes one stream, once, for the first reason given.
#[derive(Debug)]
pub struct Signal {
    /// The first reason given wins.
    reason: OnceLock<CloseReason>,
    closed: CancellationToken,
    /// Closes the whole HTTP/1.1 connection: a client that stopped reading
    /// never polls the body again, so only dropping the connection frees it.
    transport: Option<CancellationToken>,
}

impl Signal {
    pub fn new(transport: Option<CancellationToken>) -> Arc<Self> {
        Arc::new(Self {
            reason: OnceLock::new(),
            closed: CancellationToken::new(),
            transport,
        })
    }

    /// Closes the stream for `reason` unless it is already closing;
    /// returns whether this call was the one that closed it.
    pub fn close(&self, reason: CloseReason) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        self.closed.cancel();
        if reason == CloseReason::SlowConsumer
            && let Some(transport) = &self.transport
        {
            transport.cancel();
        }
        true
    }

    /// Resolves once the stream is closed.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }
}
