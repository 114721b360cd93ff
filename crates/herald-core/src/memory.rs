//! Memory freed by closed streams goes back to the system. glibc's malloc
//! keeps what it frees in its arenas (one per thread that allocated) and
//! returns little of it by itself: churned for 90 s (2,000 streams live,
//! 100 replaced every 0.3 s), an edge grew from 77 to 130 MB and held
//! 127 MB with no stream open, 9 MB at start; `malloc_trim` brought it to
//! 16 MB. So every few seconds a task asks how much the arenas hold free
//! and trims when that is worth it.

use std::time::Duration;

/// How often resident memory is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often the arenas' free bytes are counted when resident memory
/// stays put. Counting walks every free chunk of every arena: done every
/// 5 s, it was 7 % of an idle edge's CPU (15,000 streams). A burst of
/// streams that ends frees memory without moving resident memory, so it
/// is seen within this long.
const COUNT_FREE_EVERY: Duration = Duration::from_secs(30);

/// What makes a trim worth it: this much memory freed (the arenas' free
/// bytes above their lowest since the last trim: a burst of streams has
/// ended), or resident memory grown this much while at least as much is
/// free (steady churn spreading allocations over fresh pages). Trimmed
/// chunks still count as free, hence low-water marks, not totals. A trim
/// walks every arena (3 ms with 20 MB free, 14 ms with 110 MB), so it runs
/// on a blocking thread and never when nothing changed.
const WORTH: usize = 8 << 20;

/// Starts the task that gives the allocator's free memory back; a no-op
/// where the allocator is not glibc's.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut low = glibc::state();
        let mut counted = (tokio::time::Instant::now(), low.resident);
        loop {
            check.tick().await;
            let resident = glibc::resident_bytes();
            low.resident = low.resident.min(resident);
            let (at, then) = counted;
            if resident.abs_diff(then) <= WORTH && at.elapsed() < COUNT_FREE_EVERY {
                continue;
            }
            let now = glibc::state();
            counted = (tokio::time::Instant::now(), now.resident);
            low = low.min(&now);
            if worth_trimming(&low, &now) {
                let _ = tokio::task::spawn_blocking(glibc::trim).await;
                low = glibc::state();
                counted = (tokio::time::Instant::now(), low.resident);
            }
        }
    });
}

/// The allocator's free bytes and the process's resident bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    free: usize,
    resident: usize,
}

impl State {
    fn min(&self, other: &Self) -> Self {
        Self {
            free: self.free.min(other.free),
            resident: self.resident.min(other.resident),
        }
    }
}

/// `low`: the lowest of each since the last trim.
fn worth_trimming(low: &State, now: &State) -> bool {
    let freed = now.free.saturating_sub(low.free) > WORTH;
    let grown = now.resident.saturating_sub(low.resident) > WORTH && now.free > WORTH;
    freed || grown
}

/// The only unsafe code in Herald's services: two calls into the C library that
/// have no safe wrapper.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use super::State;

    pub(super) fn state() -> State {
        State {
            free: free_bytes(),
            resident: resident_bytes(),
        }
    }

    /// Bytes in free chunks across all arenas.
    fn free_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// This process's resident memory (`VmRSS`); 0 if unreadable.
    pub(super) fn resident_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok());
        kib.unwrap_or(0) * 1024
    }

    /// Returns every arena's free pages to the system.
    pub(super) fn trim() {
        let before = state();
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim takes the arenas' locks itself; 0 keeps no
        // padding at the heap's top.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            free = before.free,
            resident_before = before.resident,
            resident_after = resident_bytes(),
            took_us = started.elapsed().as_micros() as u64,
            "returned free memory to the system"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn state(free_mb: usize, resident_mb: usize) -> State {
        State {
            free: free_mb * MB,
            resident: resident_mb * MB,
        }
    }

    #[test]
    fn trims_after_a_burst_ended_or_under_churn_only() {
        let low = state(2, 80);
        // Streams closed: 60 MB more free.
        assert!(worth_trimming(&low, &state(62, 80)));
        // Churn: resident grew while much is free.
        assert!(worth_trimming(&low, &state(12, 100)));
        // Growth with nothing free to give back: more streams, not waste.
        assert!(!worth_trimming(&low, &state(3, 140)));
        // Nothing changed since the last trim, however much is free.
        let trimmed = state(110, 20);
        assert!(!worth_trimming(&trimmed, &trimmed));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_freed_memory_back() {
        let before = glibc::resident_bytes();
        // Many small blocks, as streams allocate: freed, they stay in the
        // arena rather than going back by themselves.
        let blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 400]).collect();
        let grown = glibc::resident_bytes();
        assert!(grown > before + 60 * MB, "{before} -> {grown}");
        // Keep every 500th block: live memory scattered over the heap.
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(500).collect();
        glibc::trim();
        let trimmed = glibc::resident_bytes();
        assert!(trimmed < grown - 50 * MB, "{grown} -> {trimmed}");
        assert_eq!(kept.len(), 400);
    }
}
