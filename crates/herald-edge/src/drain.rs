//! Draining on SIGTERM: readiness goes false, new connects get 503, and
//! open streams are closed one by one over a window, each at its own
//! random moment, so clients reconnect elsewhere without a thundering herd.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Shared drain state of one edge.
#[derive(Debug)]
pub struct Drain {
    token: CancellationToken,
    /// When draining began; each stream's turn is an offset from it.
    started: OnceLock<Instant>,
    /// Streams are closed at random points within this window.
    window: Duration,
}

impl Drain {
    pub fn new(window: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            started: OnceLock::new(),
            window,
        }
    }

    /// Starts draining; idempotent.
    pub fn start(&self) {
        let _ = self.started.set(Instant::now());
        self.token.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// A stream's random place in the drain window, drawn when it opens.
    pub fn turn(&self) -> Duration {
        self.window.mul_f64(fastrand::f64())
    }

    /// Resolves once draining has begun and `turn` has passed since.
    pub async fn until(&self, turn: Duration) {
        self.token.cancelled().await;
        let started = *self.started.get_or_init(Instant::now);
        tokio::time::sleep_until(started + turn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_spread_over_the_window() {
        let drain = Drain::new(Duration::from_secs(10));
        let turns: Vec<Duration> = (0..100).map(|_| drain.turn()).collect();
        assert!(turns.iter().all(|t| *t < Duration::from_secs(10)));
        assert!(turns.iter().any(|t| *t > Duration::from_secs(5)));
        assert!(turns.iter().any(|t| *t < Duration::from_secs(5)));

        let waiting =
            tokio::time::timeout(Duration::from_secs(60), drain.until(Duration::from_secs(3)));
        assert!(
            waiting.await.is_err(),
            "nothing happens before draining starts"
        );
        let start = Instant::now();
        drain.start();
        drain.until(Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
