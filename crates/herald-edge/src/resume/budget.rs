//! What one connect may replay: a cap on events and bytes, so that a
//! client's cursor never buys it unbounded work. Whatever does not fit is
//! not dropped: its subject gets a `herald.reset` (see `replay`).

/// Per-connect replay caps (`--max-replay-events`, `--max-replay-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    pub events: usize,
    /// SSE frame bytes (the `id:` lines aside).
    pub bytes: usize,
}

/// What is left of one connect's [`ReplayLimits`].
#[derive(Debug)]
pub(crate) struct Budget {
    events: usize,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(limits: ReplayLimits) -> Self {
        Self {
            events: limits.events,
            bytes: limits.bytes,
        }
    }

    /// Whether another event may still be replayed; checked before reading
    /// one, so that an exhausted budget costs no more reads.
    pub(crate) fn has_room(&self) -> bool {
        self.events > 0
    }

    /// Takes an event of `len` bytes if it fits. Once one does not, the
    /// budget is spent: later subjects are not replayed in part either,
    /// which keeps the order of what a connect replays simple to tell.
    pub(crate) fn take(&mut self, len: usize) -> bool {
        if self.events == 0 || len > self.bytes {
            self.events = 0;
            return false;
        }
        self.events -= 1;
        self.bytes -= len;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_run_out() {
        let mut budget = Budget::new(ReplayLimits {
            events: 2,
            bytes: 1000,
        });
        assert!(budget.take(10));
        assert!(budget.has_room());
        assert!(budget.take(10));
        assert!(!budget.has_room());
        assert!(!budget.take(0));
    }

    #[test]
    fn bytes_run_out_and_end_the_budget() {
        let mut budget = Budget::new(ReplayLimits {
            events: 100,
            bytes: 100,
        });
        assert!(budget.take(60));
        // 40 bytes left: a 50-byte event does not fit, and nothing after it does.
        assert!(!budget.take(50));
        assert!(!budget.has_room());
        assert!(!budget.take(1));
    }

    #[test]
    fn hostile_sizes_do_not_overflow() {
        let mut budget = Budget::new(ReplayLimits {
            events: usize::MAX,
            bytes: usize::MAX,
        });
        assert!(budget.take(usize::MAX));
        assert!(!budget.take(1));
        let mut budget = Budget::new(ReplayLimits {
            events: 0,
            bytes: 0,
        });
        assert!(!budget.has_room());
        assert!(!budget.take(0));
    }
}
