//! Draining on SIGTERM: readiness goes false, new connects get 503, and
//! open streams are closed one by one over a window, each at its own
//! random moment, so clients reconnect elsewhere without a thundering herd.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::fanout::signal::Signal;
use crate::metrics::CloseReason;

/// Shared drain state of one edge.
#[derive(Debug)]
pub(crate) struct Drain {
    draining: AtomicBool,
    /// Streams are closed at random points within this window.
    window: Duration,
}

impl Drain {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            draining: AtomicBool::new(false),
            window,
        }
    }

    /// Starts draining: from now on, new streams are refused.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Closes `streams`, each at a random moment of the window from now.
    /// One timer for all of them: an idle stream waits on nothing for it.
    pub(crate) async fn close_over_window(&self, streams: Vec<Arc<Signal>>) {
        let start = Instant::now();
        let mut turns: Vec<(Duration, Arc<Signal>)> = streams
            .into_iter()
            .map(|signal| (self.window.mul_f64(fastrand::f64()), signal))
            .collect();
        turns.sort_by_key(|(turn, _)| *turn);
        for (turn, signal) in turns {
            tokio::time::sleep_until(start + turn).await;
            signal.close(CloseReason::Drain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn streams_close_one_by_one_over_the_window() {
        let drain = Drain::new(Duration::from_secs(10));
        assert!(!drain.is_draining());
        drain.start();
        assert!(drain.is_draining());
        let streams: Vec<Arc<Signal>> = (0..100).map(|_| Signal::new(None, 0)).collect();
        let closing = drain.close_over_window(streams.clone());
        let mut closing = std::pin::pin!(closing);
        let closed = |streams: &[Arc<Signal>]| {
            streams
                .iter()
                .filter(|s| s.reason() == Some(CloseReason::Drain))
                .count()
        };
        let start = Instant::now();
        let halfway = tokio::time::timeout(Duration::from_secs(5), &mut closing).await;
        assert!(halfway.is_err(), "not all at once");
        let half = closed(&streams);
        assert!(
            (20..80).contains(&half),
            "{half} of 100 closed in half the window"
        );
        closing.await;
        assert_eq!(closed(&streams), 100);
        assert!(start.elapsed() <= Duration::from_secs(10));
    }
}
