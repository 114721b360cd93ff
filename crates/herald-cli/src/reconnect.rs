//! When `herald subscribe` tries again, as a browser's EventSource would:
//! after a stream ends, wait the server's `retry:` time; after attempts
//! that fail to open a stream, back off exponentially (with jitter, so
//! many terminals do not return in step) up to a ceiling.

use std::time::Duration;

/// The reconnection time before a server names one (browsers use ~3 s).
pub(crate) const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// Longest back-off, unless the server's own `retry:` asks for longer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Reconnection state across attempts.
#[derive(Debug, Clone)]
pub(crate) struct Reconnect {
    /// The server's last `retry:` hint.
    retry: Duration,
    /// Attempts in a row that did not open a stream.
    failures: u32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            retry: DEFAULT_RETRY,
            failures: 0,
        }
    }
}

impl Reconnect {
    /// A `retry:` field from the stream.
    pub(crate) fn hint(&mut self, ms: u64) {
        self.retry = Duration::from_millis(ms);
    }

    /// A stream opened: the next wait starts from the hint again.
    pub(crate) fn opened(&mut self) {
        self.failures = 0;
    }

    /// How long to wait before the next attempt, and counts it as one
    /// more that has yet to open a stream. `at_least` is a server's
    /// `Retry-After`, if it sent one.
    pub(crate) fn next_delay(&mut self, at_least: Option<Duration>) -> Duration {
        let ceiling = MAX_BACKOFF.max(self.retry);
        let doubled = self
            .retry
            .saturating_mul(1u32.checked_shl(self.failures).unwrap_or(u32::MAX));
        let mut delay = doubled.min(ceiling);
        if self.failures > 0 {
            // Up to a quarter more, so clients that failed together spread out.
            delay = delay.saturating_add(delay.mul_f64(fastrand::f64() / 4.0));
        }
        self.failures = self.failures.saturating_add(1);
        delay.max(at_least.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn after_a_stream_the_wait_is_the_servers_hint() {
        let mut r = Reconnect::default();
        assert_eq!(r.next_delay(None), DEFAULT_RETRY);
        r.hint(500);
        r.opened();
        assert_eq!(r.next_delay(None), ms(500));
        r.opened();
        assert_eq!(
            r.next_delay(None),
            ms(500),
            "every stream resets the back-off"
        );
    }

    #[test]
    fn failures_back_off_doubling_with_jitter_to_the_ceiling() {
        let mut r = Reconnect::default();
        r.hint(500);
        r.opened();
        assert_eq!(r.next_delay(None), ms(500));
        for expected in [1000, 2000, 4000, 8000, 16000, 30000, 30000] {
            let delay = r.next_delay(None);
            let base = ms(expected);
            assert!(delay >= base && delay <= base + base / 4, "{delay:?}");
        }
        for _ in 0..100 {
            assert!(r.next_delay(None) <= MAX_BACKOFF + MAX_BACKOFF / 4);
        }
    }

    #[test]
    fn a_long_hint_or_retry_after_is_honoured() {
        let mut r = Reconnect::default();
        r.hint(60_000);
        assert_eq!(r.next_delay(None), ms(60_000));
        let second = r.next_delay(None);
        assert!(second >= ms(60_000) && second <= ms(75_000), "{second:?}");

        let mut r = Reconnect::default();
        r.hint(100);
        assert_eq!(r.next_delay(Some(ms(7000))), ms(7000));
        r.hint(u64::MAX);
        assert!(r.next_delay(None) >= Duration::from_secs(u64::MAX / 1000));
    }

    #[test]
    fn the_jitter_spreads_failed_clients() {
        let delays: Vec<Duration> = (0..100)
            .map(|_| {
                let mut r = Reconnect::default();
                r.hint(1000);
                r.next_delay(None);
                r.next_delay(None)
            })
            .collect();
        assert!(delays.iter().any(|d| *d < ms(2200)));
        assert!(delays.iter().any(|d| *d > ms(2300)));
    }
}
