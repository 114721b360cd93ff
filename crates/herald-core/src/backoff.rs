//! Back-off for accept loops. A failing `accept` (out of file descriptors,
//! EMFILE, is the usual cause) fails again at once; retried without a
//! pause it spins a core and floods the log while the condition lasts. So
//! each failure pauses, from [`FIRST_PAUSE`] doubling to [`MAX_PAUSE`], a
//! success starts over, and a run of failures is logged once as it begins
//! and once as it ends. A leaf module: every listener accepts through it.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// The pause after the first failure of a run.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause: a recovered system is noticed within a second.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Calls `accept` until it succeeds, pausing after each failure as the
/// module says.
pub async fn accept<T, F, Fut>(mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut backoff = Backoff::default();
    loop {
        match accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                return accepted;
            }
            Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
        }
    }
}

/// One run of failures: how long to pause next, and since when it lasts.
#[derive(Debug, Default)]
struct Backoff {
    /// The next pause; zero before the first failure.
    next: Duration,
    failures: u64,
    since: Option<Instant>,
}

impl Backoff {
    /// Counts a failure; returns the pause before the next try.
    fn failed(&mut self, error: &io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(%error, "accept failed; retrying with back-off up to {MAX_PAUSE:?}");
            self.since = Some(Instant::now());
        } else {
            tracing::debug!(%error, failures = self.failures + 1, "accept failed again");
        }
        self.failures += 1;
        let pause = self.next.max(FIRST_PAUSE);
        self.next = (pause * 2).min(MAX_PAUSE);
        pause
    }

    /// Ends a run of failures, if there was one.
    fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            let failing_for = since.elapsed();
            tracing::info!(failures = self.failures, ?failing_for, "accepting again");
        }
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24) // EMFILE: too many open files
    }

    /// The moments `accept` was tried while it failed `failures` times.
    async fn tries(failures: usize) -> Vec<Duration> {
        let start = Instant::now();
        let tried = RefCell::new(Vec::new());
        let accepted = accept(|| {
            tried.borrow_mut().push(start.elapsed());
            let fail = tried.borrow().len() <= failures;
            async move { if fail { Err(emfile()) } else { Ok("socket") } }
        })
        .await;
        assert_eq!(accepted, "socket");
        tried.into_inner()
    }

    fn gaps(tries: &[Duration]) -> Vec<u128> {
        tries
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn failures_pause_doubling_up_to_a_second() {
        let tried = tries(10).await;
        assert_eq!(tried.len(), 11);
        assert_eq!(
            gaps(&tried),
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_is_not_retried_in_a_busy_loop() {
        let start = Instant::now();
        let mut calls = 0u32;
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            accept(|| {
                calls += 1;
                async { Err::<(), _>(emfile()) }
            }),
        )
        .await;
        assert!(waited.is_err(), "never succeeds");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // 10 ms + 20 + … + 640 = 1.27 s for the first 8, then one a second.
        assert_eq!(calls, 8 + 3, "tries in 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_starts_the_next_run_from_the_first_pause() {
        assert_eq!(gaps(&tries(3).await), [10, 20, 40]);
        assert_eq!(gaps(&tries(2).await), [10, 20]);
        assert_eq!(tries(0).await, [Duration::ZERO]);
    }
}
