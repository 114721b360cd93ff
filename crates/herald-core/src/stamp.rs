//! Coarse instants that fit in four bytes: when a socket stopped taking
//! bytes is kept in every stream's state at the edge, where a full
//! `Instant` would take sixteen, and in an atomic for a connection hyper
//! serves (see [`crate::stall`]). A leaf module.

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// An instant, in milliseconds since the first one this process took
/// (tokio's clock, so paused time in tests moves it too). The count wraps
/// after 49 days; every stamp is looked at long before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(NonZeroU32);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the epoch, not wrapped.
fn since_epoch() -> u64 {
    Instant::now()
        .saturating_duration_since(epoch())
        .as_millis() as u64
}

impl Stamp {
    pub fn now() -> Self {
        Self::of(since_epoch())
    }

    fn of(ms: u64) -> Self {
        // Truncated on purpose: the count wraps (see the type). Zero is
        // kept for "no stamp" where a stamp is stored in an atomic.
        let raw = (ms as u32).wrapping_add(1);
        Self(NonZeroU32::new(raw).unwrap_or(NonZeroU32::MIN))
    }

    /// Milliseconds from this stamp to `now` (since the epoch).
    fn until(self, now: u64) -> u64 {
        u64::from(Self::of(now).0.get().wrapping_sub(self.0.get()))
    }

    pub fn elapsed(self) -> Duration {
        Duration::from_millis(self.until(since_epoch()))
    }

    /// The instant this stamp stands for (to the millisecond).
    pub fn instant(self) -> Instant {
        let now = since_epoch();
        epoch() + Duration::from_millis(now.saturating_sub(self.until(now)))
    }

    /// For an atomic: never zero.
    pub fn raw(self) -> u32 {
        self.0.get()
    }

    /// The stamp an atomic holds; `None` for zero.
    pub fn from_raw(raw: u32) -> Option<Self> {
        NonZeroU32::new(raw).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stamps_measure_time_to_the_millisecond() {
        let stamp = Stamp::now();
        assert_eq!(stamp.elapsed(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(stamp.elapsed(), Duration::from_millis(2_500));
        assert_eq!(
            Instant::now() - stamp.instant(),
            Duration::from_millis(2_500)
        );
        assert_eq!(Stamp::from_raw(stamp.raw()), Some(stamp));
        assert_eq!(Stamp::from_raw(0), None);
    }
}
