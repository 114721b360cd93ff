//! Per-user connect rate: a token bucket per user, so that a client (or a
//! script holding a token) cannot loop connects, each of which may read
//! history. Real browsers reconnect in bursts (every tab after a network
//! switch) and then rarely; the burst covers them.
//!
//! A user whose bucket has refilled is the same as one never seen, so it is
//! forgotten: the map holds only users who connected within one refill
//! period, and is swept when it doubles or a refill period passes, on a
//! connect, and by [`ConnectLimiter::forget_refilled`] as often as one
//! connect's token comes back (a user who connected once is forgotten a
//! second later; the map's table shrinks with it, so the memory of a
//! burst of users comes back).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest wait or sweep period: a rate so low that its timers would
/// overflow a `Duration` (`--connect-rate-per-user 1e-300`) uses this.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

fn capped(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).map_or(LONGEST, |d| d.min(LONGEST))
}

/// Fewest entries before a sweep is worth it.
const MIN_SWEEP: usize = 1024;

/// How fast one user may connect to one edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectRate {
    /// Connects per second, sustained.
    pub per_second: f64,
    /// Connects allowed at once after a quiet period.
    pub burst: u32,
}

impl ConnectRate {
    /// Time for an empty bucket to fill up (how often the map is swept).
    fn refill(&self) -> Duration {
        capped(f64::from(self.burst) / self.per_second)
    }
}

/// The connect rate limiter of one edge.
#[derive(Debug)]
pub struct ConnectLimiter {
    rate: ConnectRate,
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    users: HashMap<String, Bucket>,
    /// Sweep once the map reaches this size...
    sweep_at: usize,
    /// ...or once this instant passes.
    sweep_by: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Connects available (fractions accrue).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    fn refilled(self, rate: &ConnectRate, now: Instant) -> f64 {
        let accrued = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        (self.tokens + accrued).min(f64::from(rate.burst))
    }
}

impl ConnectLimiter {
    pub fn new(rate: ConnectRate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(Buckets {
                users: HashMap::new(),
                sweep_at: MIN_SWEEP,
                sweep_by: Instant::now() + rate.refill(),
            }),
        }
    }

    /// Takes one connect for `user`, or says how long until one is free.
    pub fn check(&self, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.users.len() >= buckets.sweep_at || now >= buckets.sweep_by {
            self.sweep(&mut buckets, now);
        }
        let full = f64::from(self.rate.burst);
        let tokens = match buckets.users.get(user) {
            Some(bucket) => bucket.refilled(&self.rate, now),
            None => full,
        };
        if tokens < 1.0 {
            return Err(capped((1.0 - tokens) / self.rate.per_second));
        }
        let bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        buckets.users.insert(user.to_owned(), bucket);
        Ok(())
    }

    /// Forgets users whose bucket is full again.
    fn sweep(&self, buckets: &mut Buckets, now: Instant) {
        let full = f64::from(self.rate.burst);
        buckets
            .users
            .retain(|_, bucket| bucket.refilled(&self.rate, now) < full);
        // A table four times larger than needed is a burst's, gone.
        if buckets.users.capacity() > 4 * buckets.users.len().max(MIN_SWEEP) {
            buckets.users.shrink_to(2 * buckets.users.len());
        }
        buckets.sweep_at = (2 * buckets.users.len()).max(MIN_SWEEP);
        buckets.sweep_by = now + self.rate.refill();
    }

    /// Sweeps until `stop`, so that users are forgotten even when no
    /// connect comes to trigger it: as often as one connect's token comes
    /// back (most users connect once, and are forgotten a second later
    /// rather than a whole refill period), at most once a second.
    pub async fn forget_refilled(&self, stop: CancellationToken) {
        let one_back = capped(1.0 / self.rate.per_second).min(self.rate.refill());
        let mut every = tokio::time::interval(one_back.max(Duration::from_secs(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {
                    let mut buckets = self.buckets.lock().unwrap();
                    self.sweep(&mut buckets, Instant::now());
                }
            }
        }
    }

    /// Users currently remembered.
    pub fn remembered(&self) -> usize {
        self.buckets.lock().unwrap().users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> ConnectLimiter {
        ConnectLimiter::new(ConnectRate { per_second, burst })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let limiter = limiter(2.0, 5);
        for _ in 0..5 {
            limiter.check("alice").unwrap();
        }
        let wait = limiter.check("alice").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Others are not affected.
        limiter.check("bob").unwrap();
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(limiter.check("alice").is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        limiter.check("alice").unwrap();
        assert!(limiter.check("alice").is_err());
        // A refused connect costs nothing: the next is free as promised.
        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.check("alice").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_gets_exactly_the_rate() {
        let limiter = limiter(1.0, 10);
        let mut admitted = 0;
        // A client retrying every 10 ms for a minute.
        for _ in 0..6000 {
            if limiter.check("loop").is_ok() {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!((69..=71).contains(&admitted), "{admitted}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_to_the_burst_only() {
        let limiter = limiter(1.0, 3);
        limiter.check("alice").unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            limiter.check("alice").unwrap();
        }
        assert!(limiter.check("alice").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn users_who_stop_connecting_are_forgotten() {
        let limiter = limiter(1.0, 4);
        for i in 0..5000 {
            limiter.check(&format!("user{i}")).unwrap();
        }
        // Still refilling: all remembered.
        assert_eq!(limiter.remembered(), 5000);
        // Once every bucket refilled, a single connect sweeps them all.
        tokio::time::advance(Duration::from_secs(4)).await;
        limiter.check("late").unwrap();
        assert_eq!(limiter.remembered(), 1);
        // A hostile stream of fresh user ids, one per millisecond, holds at
        // most the users of one refill period (and twice that before a sweep).
        for i in 0..20_000 {
            limiter.check(&format!("fresh{i}")).unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(limiter.remembered() <= 2 * 4000, "{}", limiter.remembered());
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurdly_low_rate_limits_without_overflowing_its_timers() {
        let limiter = limiter(1e-300, 2);
        limiter.check("alice").unwrap();
        limiter.check("alice").unwrap();
        assert_eq!(limiter.check("alice").unwrap_err(), LONGEST);
        tokio::time::advance(LONGEST).await;
        assert!(limiter.check("alice").is_err());
        limiter.check("bob").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_users_is_forgotten_without_another_connect() {
        let limiter = std::sync::Arc::new(limiter(1.0, 4));
        let stop = CancellationToken::new();
        let forgetting = tokio::spawn({
            let limiter = limiter.clone();
            let stop = stop.clone();
            async move { limiter.forget_refilled(stop).await }
        });
        for i in 0..50_000 {
            limiter.check(&format!("user{i}")).unwrap();
        }
        for _ in 0..4 {
            limiter.check("busy").unwrap();
        }
        let grown = limiter.buckets.lock().unwrap().users.capacity();
        assert!(grown >= 50_000, "{grown}");
        // No connect comes. Users who connected once have their one token
        // back within a second, and are forgotten at the next sweep; the
        // table is small again. One who took the whole burst waits for it.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(limiter.remembered(), 1);
        let capacity = limiter.buckets.lock().unwrap().users.capacity();
        assert!(capacity <= 2 * MIN_SWEEP, "{capacity}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(limiter.remembered(), 0);
        stop.cancel();
        forgetting.await.unwrap();
    }
}
