//! One NATS connection carrying many subscriptions, whose reader hands each
//! message straight to a callback.
//!
//! Why by hand: async-nats gives every `Subscriber` its own tokio mpsc
//! channel, whose first block (32 × ~185-byte `Message`, ~5.9 KiB) is
//! allocated when the subscription is made, and someone must poll each
//! one (a task per subject, ~4.3 KiB more). The edge holds one subscription
//! per connected user, so NATS routes a user's events only to the nodes
//! that hold one of their streams; at 15,000 idle streams that was ~10 KiB
//! of a 14.1 KiB stream. Here a subscription costs a map entry.
//!
//! Everything else (publishing, requests, JetStream) stays on async-nats.

use std::sync::Arc;

use herald_core::nats::NatsSecurity;

/// A subscription's id on its connection.
pub type Sid = u64;

/// Receives every message of every subscription.
pub trait Deliver: Send + Sync + 'static {
    /// Called on the connection's task, in arrival order; must not block
    /// or await (short locks are fine).
    fn deliver(&self, sid: Sid, message: &async_nats::Message);
}

/// Why the connection could not be made at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to NATS: {0}")]
    Unreachable(String),
}

/// Why a round trip failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoundTripError {
    #[error("no answer from NATS within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the NATS connection is closed")]
    Closed,
}

/// A cheap handle to the connection; its task ends, closing the socket,
/// when the last handle is dropped.
#[derive(Clone)]
pub struct Subscriptions {
    _todo: Arc<()>,
}

impl Subscriptions {
    /// Connects like `herald_core::nats::connect` (same URLs and
    /// credentials), failing fast at start-up; afterwards reconnects for as
    /// long as needed, bumping `losses` on every disconnect before it
    /// subscribes again to every live subject.
    pub async fn connect(
        urls: &[String],
        security: &NatsSecurity,
        name: &str,
        losses: tokio::sync::watch::Sender<u64>,
        deliver: Arc<dyn Deliver>,
    ) -> Result<Self, ConnectError> {
        let _ = (urls, security, name, losses, deliver);
        todo!()
    }

    /// Registers interest in `subject`; sent now, or on reconnect.
    pub fn subscribe(&self, subject: &str) -> Sid {
        let _ = subject;
        todo!()
    }

    /// Drops the subscription; messages for it that arrive later are dropped.
    pub fn unsubscribe(&self, sid: Sid) {
        let _ = sid;
        todo!()
    }

    /// Resolves once the server has processed everything sent on this
    /// connection before the call. Callers waiting together share a ping.
    pub async fn round_trip(&self) -> Result<(), RoundTripError> {
        todo!()
    }

    /// Live subscriptions.
    pub fn len(&self) -> usize {
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
