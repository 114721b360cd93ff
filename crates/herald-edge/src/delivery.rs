//! What the fan-out hands to streams: one framed event, shared by all, and
//! the queue it goes into.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::metrics::{CloseReason, Metrics};
use crate::queue::{self, TrySendError};
use crate::signal::Signal;

/// Identifies one stream on this node.
pub type ConnId = u64;

/// One event on its way to a stream: framed once, shared by all.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Bytes,
    /// The subject's cursor key and the event's stream sequence, for
    /// persisted events; `None` for ephemeral ones (no id, no replay).
    pub position: Option<(u32, u64)>,
}

/// The frame of a start mark: no event, only an `id:` line before it.
const MARK: &[u8] = b"\n";

impl Delivery {
    /// Where a stream starts on subject `key`, learned after it joined
    /// (see `control::mark_starts`): an `id:` line and no event.
    pub fn mark(key: u32, seq: u64) -> Self {
        Self {
            frame: Bytes::from_static(MARK),
            position: Some((key, seq)),
        }
    }

    pub fn is_mark(&self) -> bool {
        self.frame == MARK
    }
}

/// What a subject holds for one stream.
#[derive(Debug, Clone)]
pub struct Member {
    /// Bounded: when full, the stream is closed as a slow consumer.
    pub queue: queue::Sender<Delivery>,
    pub signal: Arc<Signal>,
}

/// Gives `delivery` to every member: a reference-counted copy into each
/// queue, no lock, no allocation per member. A member whose queue is full
/// is a slow consumer: closed, and dropped from the subject.
pub fn hand_out(members: &mut HashMap<ConnId, Member>, delivery: &Delivery, metrics: &Metrics) {
    members.retain(|_, member| match member.queue.try_send(delivery.clone()) {
        Ok(()) => true,
        Err(TrySendError::Full) => {
            // Counted here, at once: an HTTP/2 stream that stopped reading
            // ends only when its client reads it again or the connection
            // closes (HTTP/1.1 ones are dropped now).
            if member.signal.close(CloseReason::SlowConsumer) {
                metrics.slow_consumer_closes.inc();
            }
            false
        }
        Err(TrySendError::Closed) => false,
    });
}
