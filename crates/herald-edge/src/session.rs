//! One client's SSE stream: its queue, heartbeats and expiry, turned into
//! the response body; and the guard that cleans up after it. What ends
//! many streams at once (a NATS loss, a drain) closes their signals from
//! outside, so an idle stream waits on nothing shared.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};

use crate::admission::Permit;
use crate::fanout::Fanout;
use crate::fanout::delivery::{ConnId, Delivery};
use crate::fanout::queue;
use crate::fanout::signal::Signal;
use crate::lifecycle::StreamLife;
use crate::metrics::{CloseReason, Metrics};
use crate::resume::replay::Replay;
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

/// A JWT `exp` (seconds since the epoch) as a tokio instant.
fn expiry_instant(exp: u64) -> Instant {
    let secs = exp.saturating_sub(crate::orders::revocations::unix_now());
    Instant::now() + Duration::from_secs(secs)
}

/// Undoes everything opening a stream did, however the stream ends.
pub(crate) struct Guard {
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
pub(crate) struct Session {
    pub queue: queue::Receiver<Delivery>,
    /// Missed events to send before the live queue, when resuming
    /// (boxed: most streams have none, and every stream holds this).
    pub replay: Option<Box<Replay>>,
    /// Where the client is: updated with every persisted event sent.
    pub cursor: Cursor,
    /// Subjects (by cursor key) of another region that the resume could
    /// not replay (see `replay::Plan::behind`): the first live event of
    /// one ends the stream, whose client then resumes them.
    pub behind: Box<[u32]>,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub exp: u64,
    pub retry: Duration,
    pub guard: Guard,
}

/// A stream's frames: the opening, then replayed and live events,
/// heartbeats (when it writes its own), and a closing hint. Polled by
/// whoever writes the stream: hyper (as the response body) or the plain
/// writer (see `plain`), each without a future of its own around it.
pub(crate) struct Frames {
    opening: Option<Bytes>,
    /// `None` past the last frame: what the session held is freed then.
    running: Option<Running>,
}

struct Running {
    session: Session,
    /// Wakes a stream that writes its own heartbeats, for its next one
    /// or its token's expiry.
    timer: Option<Box<Timer>>,
    /// The last frame is made: the stream drops this at once.
    done: bool,
}

/// One timer, made once, reset at each heartbeat.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    next_heartbeat: Instant,
    every: Duration,
    expires: Instant,
}

impl Session {
    /// The stream's frames, `opening` first, and a `heartbeat` every so
    /// often if the stream writes its own (`None`: the node writes them,
    /// and ends the stream at `exp`; see [`crate::http1::beats`]).
    pub(crate) fn into_frames(mut self, opening: Bytes, heartbeat: Option<Duration>) -> Frames {
        self.guard.opened = true;
        self.guard.metrics.connects.inc();
        self.guard.metrics.connections.inc();
        let timer = heartbeat.map(|every| {
            let expires = expiry_instant(self.exp);
            let next_heartbeat = on_grid(Instant::now() + every);
            Box::new(Timer {
                sleep: Box::pin(tokio::time::sleep_until(next_heartbeat.min(expires))),
                next_heartbeat,
                every,
                expires,
            })
        });
        Frames {
            opening: Some(opening),
            running: Some(Running {
                session: self,
                timer,
                done: false,
            }),
        }
    }
}

impl Frames {
    /// The next frame; `None` after the last.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(opening) = self.opening.take() {
            return Poll::Ready(Some(opening));
        }
        let Some(running) = &mut self.running else {
            return Poll::Ready(None);
        };
        let frame = ready!(running.poll_frame(cx));
        // Past the last frame, nothing of the stream is kept while the
        // client takes it, or does not: its guard frees the slot, leaves
        // the subjects and counts the close now.
        if running.done {
            self.running = None;
        }
        Poll::Ready(Some(frame))
    }

    /// How the stream is closed from outside, and its token's `exp` (in
    /// seconds since the Unix epoch); `None` once it has ended.
    pub(crate) fn ending(&self) -> Option<(&Arc<Signal>, u64)> {
        let session = &self.running.as_ref()?.session;
        Some((&session.guard.signal, session.exp))
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
    /// The next frame: events, a heartbeat, or the last one (then `done`).
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        loop {
            let s = &mut self.session;
            // A close goes first; then events; then the timer.
            if s.guard.signal.poll_closed(cx).is_ready() {
                let reason = s.guard.signal.reason().unwrap_or(CloseReason::ServerError);
                return Poll::Ready(self.finish(reason));
            }
            let next = match &mut s.replay {
                Some(replay) => match replay.poll_next(cx) {
                    Poll::Ready(d) => Poll::Ready(d.map_or(Step::ReplayDone, Step::Send)),
                    Poll::Pending => Poll::Pending,
                },
                None => match s.queue.poll_recv(cx) {
                    Poll::Ready(d) => {
                        Poll::Ready(d.map_or(Step::Close(CloseReason::ServerError), Step::Send))
                    }
                    Poll::Pending => Poll::Pending,
                },
            };
            let step = match next {
                Poll::Ready(step) => step,
                Poll::Pending => ready!(self.poll_timer(cx)),
            };
            match step {
                Step::Send(first) => {
                    if let Some(frame) = self.batch(first) {
                        return Poll::Ready(frame);
                    }
                }
                Step::ReplayDone => {
                    let replay = self.session.replay.take();
                    if replay.is_some_and(|r| r.failed()) {
                        return Poll::Ready(self.finish(CloseReason::ServerError));
                    }
                }
                Step::Heartbeat => return Poll::Ready(sse::heartbeat()),
                Step::Close(reason) => return Poll::Ready(self.finish(reason)),
            }
        }
    }

    /// A heartbeat, and the timer set for the next; or the token expired.
    /// Never ready for a stream without a timer.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        ready!(timer.sleep.as_mut().poll(cx));
        let now = Instant::now();
        if now >= timer.expires {
            return Poll::Ready(Step::Close(CloseReason::TokenExpired));
        }
        // Skipping (not delaying) a late beat keeps the stream on the grid.
        while timer.next_heartbeat <= now {
            timer.next_heartbeat += timer.every;
        }
        let wake = timer.next_heartbeat.min(timer.expires);
        timer.sleep.as_mut().reset(wake);
        Poll::Ready(Step::Heartbeat)
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
                self.session.guard.signal.close(CloseReason::ServerError);
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
        let _ = self.session.guard.signal.close(reason);
        let base = self.session.retry.as_millis() as u64;
        let retry = match reason {
            CloseReason::Drain | CloseReason::ServerError => sse::jittered(base),
            // NATS would refuse again at once: come back later, spread.
            CloseReason::SubscriptionRefused => sse::jittered(base.max(REFUSED_RETRY_MS)),
            _ => base,
        };
        let closing = sse::closing(retry, reason.as_str());
        match self.session.guard.signal.farewell() {
            Some(farewell) => [farewell, &closing].concat().into(),
            None => closing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open plain stream holds this in its task: it once was a
    /// 960-byte box around a session and its pending `next_frame`.
    #[test]
    fn a_streams_frames_stay_small() {
        let frames = std::mem::size_of::<Frames>();
        println!("stream frames {frames} bytes");
        assert!(frames <= 240, "stream frames of {frames} bytes");
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
