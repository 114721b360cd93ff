//! Which PONG answers whom.
//!
//! The server answers a connection's PINGs in order, after everything sent
//! before each one, so PONGs are matched to PINGs first in, first out. A
//! caller waiting for a round trip is answered by the first PONG of a PING
//! sent after it asked; at most one such PING is in flight, so a burst of
//! callers shares a few PINGs. Keep-alive PINGs go in the same line and
//! tell a live server from a silent socket.

use std::collections::VecDeque;

use tokio::sync::oneshot;

/// Someone waiting for a round trip; dropping it tells them the connection
/// is closed.
pub(crate) type Waiter = oneshot::Sender<()>;

#[derive(Default)]
pub(crate) struct RoundTrips {
    /// One entry per PING on the wire, oldest first: the callers it answers
    /// (none for a keep-alive).
    in_flight: VecDeque<Vec<Waiter>>,
    /// Asked since the last PING for callers was sent.
    waiting: Vec<Waiter>,
    /// Keep-alive PINGs sent since the last PONG.
    unanswered_keepalives: u32,
    /// When to drop waiters that gave up (timed out), so a long outage
    /// does not keep them all.
    prune_at: usize,
}

impl RoundTrips {
    pub(crate) fn ask(&mut self, waiter: Waiter) {
        self.waiting.push(waiter);
        if self.waiting.len() >= self.prune_at {
            self.waiting.retain(|w| !w.is_closed());
            self.prune_at = (self.waiting.len() * 2).max(64);
        }
    }

    /// Whether a PING should go out for callers now.
    pub(crate) fn wants_ping(&self) -> bool {
        !self.waiting.is_empty() && self.in_flight.iter().all(Vec::is_empty)
    }

    /// A PING for the callers waiting was written.
    pub(crate) fn ping_sent(&mut self) {
        self.in_flight.push_back(std::mem::take(&mut self.waiting));
    }

    /// A keep-alive PING was written.
    pub(crate) fn keepalive_sent(&mut self) {
        self.unanswered_keepalives += 1;
        self.in_flight.push_back(Vec::new());
    }

    /// Keep-alive PINGs sent since the server last answered one.
    pub(crate) fn unanswered_keepalives(&self) -> u32 {
        self.unanswered_keepalives
    }

    /// A PONG arrived: it answers the oldest PING.
    pub(crate) fn pong(&mut self) {
        self.unanswered_keepalives = 0;
        for waiter in self.in_flight.pop_front().unwrap_or_default() {
            let _ = waiter.send(());
        }
    }

    /// Everyone still waiting, oldest first: the connection was lost (its
    /// PINGs will never be answered, and what their callers sent must be
    /// sent again) or left, so they wait for a PING on the next one.
    pub(crate) fn take_waiters(&mut self) -> Vec<Waiter> {
        let mut waiters: Vec<Waiter> = self.in_flight.drain(..).flatten().collect();
        waiters.append(&mut self.waiting);
        self.unanswered_keepalives = 0;
        waiters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(rt: &mut RoundTrips) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        rt.ask(tx);
        rx
    }

    #[test]
    fn callers_who_ask_together_share_one_ping() {
        let mut rt = RoundTrips::default();
        assert!(!rt.wants_ping());
        let mut first: Vec<_> = (0..100).map(|_| waiter(&mut rt)).collect();
        assert!(rt.wants_ping());
        rt.ping_sent();
        // Asked after the PING went out: not answered by its PONG.
        let mut late = waiter(&mut rt);
        assert!(!rt.wants_ping(), "one PING for callers in flight at a time");
        rt.pong();
        assert!(first.iter_mut().all(|rx| rx.try_recv().is_ok()));
        assert!(late.try_recv().is_err());
        assert!(rt.wants_ping());
        rt.ping_sent();
        rt.pong();
        assert!(late.try_recv().is_ok());
    }

    #[test]
    fn pongs_are_matched_in_order_with_keepalives() {
        let mut rt = RoundTrips::default();
        rt.keepalive_sent();
        let mut rx = waiter(&mut rt);
        rt.ping_sent();
        assert_eq!(rt.unanswered_keepalives(), 1);
        rt.pong(); // the keep-alive's
        assert!(rx.try_recv().is_err());
        assert_eq!(rt.unanswered_keepalives(), 0);
        rt.pong();
        assert!(rx.try_recv().is_ok());
        rt.pong(); // unexpected: ignored
    }

    #[test]
    fn a_lost_connection_keeps_callers_waiting_for_the_next_one() {
        let mut rt = RoundTrips::default();
        let mut sent = waiter(&mut rt);
        rt.ping_sent();
        rt.keepalive_sent();
        let mut queued = waiter(&mut rt);
        let waiters = rt.take_waiters();
        assert_eq!(waiters.len(), 2);
        let mut next = RoundTrips::default();
        for waiter in waiters {
            next.ask(waiter);
        }
        assert!(next.wants_ping());
        next.ping_sent();
        next.pong();
        assert!(sent.try_recv().is_ok() && queued.try_recv().is_ok());
    }

    #[test]
    fn dropping_the_state_tells_callers_it_is_closed() {
        let mut rt = RoundTrips::default();
        let mut rx = waiter(&mut rt);
        drop(rt);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn callers_who_gave_up_are_pruned() {
        let mut rt = RoundTrips::default();
        for _ in 0..1000 {
            drop(waiter(&mut rt));
        }
        assert!(rt.waiting.len() < 128, "{}", rt.waiting.len());
    }
}
