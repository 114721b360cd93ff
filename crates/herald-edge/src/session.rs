//! One client's SSE stream: its queue, heartbeats and expiry, turned into
//! the response body; and the guard that cleans up after it. What ends
//! many streams at once (a NATS loss, a drain) closes their signals from
//! outside, so an idle stream waits on nothing shared.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::admission::Permit;
use crate::delivery::{ConnId, Delivery};
use crate::fanout::Fanout;
use crate::lifecycle::StreamLife;
use crate::metrics::{CloseReason, Metrics};
use crate::queue;
use crate::replay::Replay;
use crate::signal::Signal;
use crate::sse;
use herald_domain::cursor::Cursor;
use herald_subscriptions::Sid;

/// A stream whose subscription NATS refused is told to come back after
/// about this long (jittered), not at once.
const REFUSED_RETRY_MS: u64 = 5_000;

/// At most this many queued events are written in one frame.
const MAX_BATCH: u64 = 64;

/// Heartbeats fall on this grid (with an interval that is a multiple of
/// it), so that the runtime wakes a few times a second to write many
/// streams' heartbeats, not once per stream: an idle node's CPU goes to
/// waking its workers more than to writing.
const HEARTBEAT_GRID: Duration = Duration::from_secs(1);

/// The first point of the heartbeat grid at or after `at`.
fn on_grid(at: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // A runtime whose clock is behind the epoch (paused time in tests).
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let grid = HEARTBEAT_GRID.as_nanos();
    let steps = since.as_nanos().div_ceil(grid);
    epoch + Duration::from_nanos((steps * grid) as u64)
}

/// Undoes everything opening a stream did, however the stream ends.
pub struct Guard {
    pub id: ConnId,
    /// Subscriptions joined so far; left on drop.
    pub joined: Vec<Sid>,
    pub fanout: Arc<Fanout>,
    pub signal: Arc<Signal>,
    pub metrics: Arc<Metrics>,
    /// Set once the stream was handed to the client; only then is it counted.
    pub opened: bool,
    /// What its disconnect's lifecycle event needs (`--lifecycle-events`).
    pub life: Option<Box<StreamLife>>,
    pub _permit: Permit,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.fanout.leave_stream(self.id, &self.joined);
        if self.opened {
            let reason = self.signal.reason().unwrap_or(CloseReason::ClientGone);
            self.metrics.closed(reason);
            self.metrics.connections.dec();
            if let Some(life) = &self.life {
                life.disconnected(reason);
            }
            tracing::debug!(conn = self.id, reason = reason.as_str(), "stream closed");
        }
    }
}

/// Everything a stream needs while it runs.
pub struct Session {
    pub queue: queue::Receiver<Delivery>,
    /// Missed events to send before the live queue, when resuming.
    pub replay: Option<Replay>,
    /// Where the client is: updated with every persisted event sent.
    pub cursor: Cursor,
    /// Subjects (by cursor key) of another region that the resume could
    /// not replay (see `replay::Plan::behind`): the first live event of
    /// one ends the stream, whose client then resumes them.
    pub behind: Box<[u32]>,
    /// Closed by the fan-out (slow consumer), on a NATS loss, by the
    /// drain, or by the stream itself.
    pub signal: Arc<Signal>,
    /// `None` when the node writes this stream's heartbeats (see
    /// [`crate::beats`]); then the timer only ends the stream at `expires`.
    pub heartbeat: Option<Duration>,
    pub expires: Instant,
    pub retry: Duration,
    pub guard: Guard,
}

struct Running {
    session: Session,
    /// Wakes the stream for its next heartbeat or its expiry, whichever
    /// comes first: one timer, made once, reset at each heartbeat.
    timer: Pin<Box<Sleep>>,
    next_heartbeat: Option<Instant>,
    /// The last frame is made: the stream drops this at once.
    done: bool,
}

impl Session {
    /// The body: `opening` first, then replayed and live events,
    /// heartbeats, and a closing hint.
    pub fn into_stream(mut self, opening: Bytes) -> impl Stream<Item = Bytes> + Send {
        self.guard.opened = true;
        self.guard.metrics.connects.inc();
        self.guard.metrics.connections.inc();
        let next_heartbeat = self.heartbeat.map(|h| on_grid(Instant::now() + h));
        let wake = next_heartbeat.map_or(self.expires, |at| at.min(self.expires));
        let running = Running {
            timer: Box::pin(tokio::time::sleep_until(wake)),
            next_heartbeat,
            session: self,
            done: false,
        };
        let first = futures::stream::once(async move { opening });
        let rest = futures::stream::unfold(Some(running), |mut running| async move {
            // Used in place: moved into a local, it would be held twice.
            let frame = running.as_mut()?.next_frame().await;
            // Past the last frame, nothing of the stream is kept while the
            // client takes it, or does not: its guard frees the slot,
            // leaves the subjects and counts the close now.
            Some((frame, running.filter(|r| !r.done)))
        });
        futures::StreamExt::chain(first, rest)
    }
}

/// What the stream does next.
enum Step {
    Send(Delivery),
    ReplayDone,
    Heartbeat,
    Close(CloseReason),
}

impl Running {
    async fn next_frame(&mut self) -> Bytes {
        loop {
            let s = &mut self.session;
            let replaying = s.replay.is_some();
            let step = tokio::select! {
                biased;
                _ = s.signal.closed() => Step::Close(s.signal.reason().unwrap_or(CloseReason::ServerError)),
                d = recv_replay(&mut s.replay), if replaying => d.map_or(Step::ReplayDone, Step::Send),
                d = s.queue.recv(), if !replaying => d.map_or(Step::Close(CloseReason::ServerError), Step::Send),
                () = self.timer.as_mut() => match self.on_timer() {
                    Some(step) => step,
                    None => continue,
                },
            };
            match step {
                Step::Send(first) => {
                    if let Some(frame) = self.batch(first) {
                        return frame;
                    }
                }
                Step::ReplayDone => {
                    let replay = self.session.replay.take();
                    if replay.is_some_and(|r| r.failed()) {
                        return self.finish(CloseReason::ServerError);
                    }
                }
                Step::Heartbeat => return sse::heartbeat(),
                Step::Close(reason) => return self.finish(reason),
            }
        }
    }

    /// A heartbeat, and the timer set for the next; or the token expired.
    fn on_timer(&mut self) -> Option<Step> {
        let now = Instant::now();
        let expires = self.session.expires;
        if now >= expires {
            return Some(Step::Close(CloseReason::TokenExpired));
        }
        let (Some(next), Some(every)) = (&mut self.next_heartbeat, self.session.heartbeat) else {
            self.timer.as_mut().reset(expires);
            return None;
        };
        // Skipping (not delaying) a late beat keeps the stream on the grid.
        while *next <= now {
            *next += every;
        }
        let wake = (*next).min(expires);
        self.timer.as_mut().reset(wake);
        Some(Step::Heartbeat)
    }

    /// Writes `first` and whatever else is already queued into one frame:
    /// fewer syscalls under load. `None` if all were duplicates.
    fn batch(&mut self, first: Delivery) -> Option<Bytes> {
        // Room for one event and its id; more grows the buffer as needed.
        let mut buf = BytesMut::with_capacity(first.frame.len() + 64);
        let mut sent = u64::from(self.write(&mut buf, first));
        let mut taken = 1;
        while taken < MAX_BATCH {
            let next = match &mut self.session.replay {
                Some(replay) => replay.try_next(),
                None => self.session.queue.try_recv(),
            };
            let Some(next) = next else { break };
            sent += u64::from(self.write(&mut buf, next));
            taken += 1;
        }
        self.session.guard.metrics.delivered.inc_by(sent);
        if self.session.replay.is_some() {
            self.session.guard.metrics.replayed.inc_by(sent);
        }
        (!buf.is_empty()).then(|| buf.freeze())
    }

    /// Appends one event with its `id:` line; skips an event the client
    /// already has (sent by the replay, then again live).
    fn write(&mut self, buf: &mut BytesMut, delivery: Delivery) -> bool {
        let cursor = &mut self.session.cursor;
        if let Some((key, seq)) = delivery.position {
            if cursor.get(key).is_some_and(|have| seq <= have) {
                return false;
            }
            // A start learned late must not move a position that live
            // events already set: events up to it may still be on their
            // way, and would be dropped as sent.
            if delivery.is_mark() && cursor.get(key).is_some() {
                return false;
            }
            if self.session.behind.contains(&key) {
                self.session.signal.close(CloseReason::ServerError);
                return false;
            }
            cursor.set(key, seq);
            buf.extend_from_slice(b"id: ");
            buf.extend_from_slice(cursor.encode().as_bytes());
            buf.extend_from_slice(b"\n");
        }
        buf.extend_from_slice(&delivery.frame);
        true
    }

    /// The last frame: a reconnect hint, spread out when many streams end
    /// together (a drain; a NATS reconnect or history reads failing under
    /// load) so that their clients do not all come back in the same instant.
    fn finish(&mut self, reason: CloseReason) -> Bytes {
        self.done = true;
        let _ = self.session.signal.close(reason);
        let base = self.session.retry.as_millis() as u64;
        let retry = match reason {
            CloseReason::Drain | CloseReason::ServerError => sse::jittered(base),
            // NATS would refuse again at once: come back later, spread.
            CloseReason::SubscriptionRefused => sse::jittered(base.max(REFUSED_RETRY_MS)),
            _ => base,
        };
        let closing = sse::closing(retry, reason.as_str());
        match self.session.signal.farewell() {
            Some(farewell) => [farewell, &closing].concat().into(),
            None => closing,
        }
    }
}

async fn recv_replay(replay: &mut Option<Replay>) -> Option<Delivery> {
    replay.as_mut()?.next().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open stream holds this: moving the session out of the
    /// stream's state into a local once made it hold it twice (+272 bytes).
    #[test]
    fn a_streams_body_stays_small() {
        fn returned<T>(_f: impl FnOnce() -> T) -> usize {
            std::mem::size_of::<T>()
        }
        fn never<T>() -> T {
            unreachable!("only the call's type is looked at")
        }
        let body = returned(|| never::<Session>().into_stream(never()));
        println!("stream body {body} bytes");
        assert!(body <= 700, "stream body of {body} bytes");
    }

    #[test]
    fn heartbeats_start_on_the_grid_within_one_step() {
        on_grid(Instant::now()); // sets the grid's epoch
        let now = Instant::now();
        for offset_ms in [0, 1, 249, 250, 251, 14_999, 15_000] {
            let at = now + Duration::from_millis(offset_ms);
            let first = on_grid(at);
            assert!(first >= at && first - at < HEARTBEAT_GRID, "{offset_ms}");
            // Every stream's first heartbeat is on the same grid.
            let apart = first - on_grid(now);
            assert_eq!(
                apart.as_nanos() % HEARTBEAT_GRID.as_nanos(),
                0,
                "{offset_ms}"
            );
        }
    }
}
