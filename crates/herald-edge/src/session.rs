//! One client's SSE stream: its queue, heartbeats, expiry and drain turn,
//! turned into the response body; and the guard that cleans up after it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::admission::Permit;
use crate::drain::Drain;
use crate::fanout::{ConnId, Fanout};
use crate::metrics::{CloseReason, Metrics};
use crate::sse;

/// At most this many queued events are written in one frame.
const MAX_BATCH: u64 = 64;

/// Lets others close a stream: the fan-out (slow consumer) or the stream itself.
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

    fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }
}

/// Undoes everything opening a stream did, however the stream ends.
pub struct Guard {
    pub id: ConnId,
    /// Subjects joined so far; left on drop.
    pub subjects: Vec<String>,
    pub fanout: Arc<Fanout>,
    pub signal: Arc<Signal>,
    pub metrics: Metrics,
    /// Set once the stream was handed to the client; only then is it counted.
    pub opened: bool,
    pub _permit: Permit,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for subject in &self.subjects {
            self.fanout.leave(subject, self.id);
        }
        if self.opened {
            let reason = self.signal.reason().unwrap_or(CloseReason::ClientGone);
            self.metrics.closed(reason);
            self.metrics.connections.dec();
            tracing::debug!(conn = self.id, reason = reason.as_str(), "stream closed");
        }
    }
}

/// Everything a stream needs while it runs.
pub struct Session {
    pub queue: mpsc::Receiver<Bytes>,
    pub signal: Arc<Signal>,
    pub heartbeat: Duration,
    pub expires: Instant,
    pub drain: Arc<Drain>,
    pub retry: Duration,
    pub metrics: Metrics,
    pub guard: Guard,
}

struct Running {
    session: Session,
    heartbeat: Interval,
    drain_turn: Duration,
    done: bool,
}

impl Session {
    /// The body: `opening` first, then events, heartbeats and a closing hint.
    pub fn into_stream(mut self, opening: Bytes) -> impl Stream<Item = Bytes> + Send {
        self.guard.opened = true;
        self.metrics.connects.inc();
        self.metrics.connections.inc();
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let running = Running {
            drain_turn: self.drain.turn(),
            session: self,
            heartbeat,
            done: false,
        };
        let first = futures::stream::once(async move { opening });
        let rest = futures::stream::unfold(running, |mut r| async move {
            let frame = r.next_frame().await?;
            Some((frame, r))
        });
        futures::StreamExt::chain(first, rest)
    }
}

impl Running {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let s = &mut self.session;
        let reason = tokio::select! {
            biased;
            _ = s.signal.closed.cancelled() => s.signal.reason().unwrap_or(CloseReason::ServerError),
            event = s.queue.recv() => match event {
                Some(first) => return Some(self.batch(first)),
                None => CloseReason::ServerError,
            },
            _ = self.heartbeat.tick() => return Some(sse::heartbeat()),
            _ = tokio::time::sleep_until(s.expires) => CloseReason::TokenExpired,
            _ = s.drain.until(self.drain_turn) => CloseReason::Drain,
        };
        Some(self.finish(reason))
    }

    /// Coalesces what is already queued into one write: fewer syscalls under load.
    fn batch(&mut self, first: Bytes) -> Bytes {
        let s = &mut self.session;
        let Ok(second) = s.queue.try_recv() else {
            s.metrics.delivered.inc();
            return first;
        };
        let mut buf = BytesMut::with_capacity(first.len() * 4);
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        let mut count: u64 = 2;
        while count < MAX_BATCH {
            let Ok(next) = s.queue.try_recv() else { break };
            buf.extend_from_slice(&next);
            count += 1;
        }
        s.metrics.delivered.inc_by(count);
        buf.freeze()
    }

    /// The last frame: a reconnect hint, spread out while draining so that
    /// clients do not all come back in the same instant.
    fn finish(&mut self, reason: CloseReason) -> Bytes {
        self.done = true;
        let _ = self.session.signal.close(reason);
        let base = self.session.retry.as_millis() as u64;
        let retry = if reason == CloseReason::Drain {
            base + fastrand::u64(0..=base)
        } else {
            base
        };
        sse::closing(retry, reason.as_str())
    }
}
