//! The newest persisted events of one subject, kept by its fan-out task so
//! that clients resuming the same subject from the same place (a whole
//! topic's audience after an edge died) are served from memory instead of
//! each reading history.
//!
//! What is held is only useful if it is known to be complete: `floor` and
//! the held sequences say from where on every event of the subject is here.
//! Events come from the live subscription (complete from the moment
//! recording starts) and from replays read out of history ("everything
//! after N", complete when the reader's live subscription predates the
//! read). Any doubt (an eviction, a NATS disconnect) lowers what is claimed,
//! never raises it.

use std::collections::VecDeque;

use bytes::Bytes;

/// Most events held per subject.
pub(crate) const MAX_EVENTS: usize = 32;
/// Most frame bytes held per subject.
pub(crate) const MAX_BYTES: usize = 16 * 1024;

/// Whether a read of `events` frames of `bytes` in all could be held: a
/// history read larger than this is not kept for others (they would find
/// its start trimmed away), so its reader need not keep it either.
pub(crate) fn could_hold(events: usize, bytes: usize) -> bool {
    events <= MAX_EVENTS && bytes <= MAX_BYTES
}

/// One subject's recent events.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// Ascending stream sequences with their SSE frames.
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Every event with a greater sequence is in `events`. Without a floor,
    /// completeness starts at the first held event.
    floor: Option<u64>,
    /// Whether live events are being kept.
    recording: bool,
}

impl Recent {
    /// Starts keeping live events; from now on they are complete.
    pub(crate) fn start_recording(&mut self) {
        self.recording = true;
    }

    pub(crate) fn is_recording(&self) -> bool {
        self.recording
    }

    /// Forgets everything held (events may have been missed); recording
    /// goes on, complete again from the next event.
    pub(crate) fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
        self.floor = None;
    }

    /// A live event, in subscription order.
    pub(crate) fn record(&mut self, seq: u64, frame: &Bytes) {
        if !self.recording {
            return;
        }
        if self.events.back().is_some_and(|&(last, _)| seq <= last) {
            return; // already held (from a replay read)
        }
        self.push(seq, frame.clone());
        self.trim();
    }

    /// Every event after `after`, read from history while recording was on.
    pub(crate) fn seed(&mut self, after: u64, read: Vec<(u64, Bytes)>) {
        if !self.recording || self.covers(after) {
            return;
        }
        // Nothing held is at or below `after`: what is held is the live
        // tail, which the read may overlap.
        let last_read = read.last().map_or(after, |&(seq, _)| seq);
        let live: Vec<_> = self
            .events
            .drain(..)
            .filter(|&(s, _)| s > last_read)
            .collect();
        self.bytes = 0;
        self.floor = Some(after);
        for (seq, frame) in read.into_iter().chain(live) {
            self.push(seq, frame);
        }
        self.trim();
    }

    /// The events after `after`, if every one of them is held.
    pub(crate) fn after(&self, after: u64) -> Option<Vec<(u64, Bytes)>> {
        if !self.covers(after) {
            return None;
        }
        let start = self.events.partition_point(|&(seq, _)| seq <= after);
        Some(self.events.range(start..).cloned().collect())
    }

    /// Whether `after` is a position from which everything is held: the
    /// floor, or a held event (a client's cursor names an event it got).
    fn covers(&self, after: u64) -> bool {
        self.floor == Some(after)
            || self
                .events
                .binary_search_by_key(&after, |&(seq, _)| seq)
                .is_ok()
    }

    fn push(&mut self, seq: u64, frame: Bytes) {
        self.bytes += frame.len();
        self.events.push_back((seq, frame));
    }

    /// Drops the oldest events over the limits; the floor follows them.
    fn trim(&mut self) {
        while self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES {
            let Some((seq, frame)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= frame.len();
            self.floor = Some(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Bytes {
        Bytes::from(format!("data: {seq}\n\n"))
    }

    fn seqs(events: Option<Vec<(u64, Bytes)>>) -> Option<Vec<u64>> {
        events.map(|e| e.into_iter().map(|(seq, _)| seq).collect())
    }

    fn recording() -> Recent {
        let mut recent = Recent::default();
        recent.start_recording();
        recent
    }

    #[test]
    fn nothing_is_kept_before_recording() {
        let mut recent = Recent::default();
        recent.record(5, &frame(5));
        recent.seed(1, vec![(5, frame(5))]);
        assert_eq!(recent.after(1), None);
        assert_eq!(recent.after(5), None);
    }

    #[test]
    fn live_events_serve_cursors_that_name_one_of_them() {
        let mut recent = recording();
        for seq in [10, 12, 15] {
            recent.record(seq, &frame(seq));
        }
        assert_eq!(seqs(recent.after(10)), Some(vec![12, 15]));
        assert_eq!(seqs(recent.after(15)), Some(vec![]));
        // The event before 10 was never seen: 9 may be followed by others.
        assert_eq!(recent.after(9), None);
        // Not an event of this subject (garbage, or another subject's).
        assert_eq!(recent.after(11), None);
        assert_eq!(recent.after(99), None);
    }

    #[test]
    fn a_seed_covers_from_its_start_and_merges_with_live_events() {
        let mut recent = recording();
        recent.record(30, &frame(30)); // arrived live while the read ran
        recent.seed(3, vec![(7, frame(7)), (20, frame(20)), (30, frame(30))]);
        assert_eq!(seqs(recent.after(3)), Some(vec![7, 20, 30]));
        assert_eq!(seqs(recent.after(20)), Some(vec![30]));
        recent.record(31, &frame(31));
        assert_eq!(seqs(recent.after(3)), Some(vec![7, 20, 30, 31]));
        // An empty read still says "nothing after 40 but what is held".
        let mut recent = recording();
        recent.seed(40, vec![]);
        assert_eq!(seqs(recent.after(40)), Some(vec![]));
    }

    #[test]
    fn a_seed_already_covered_changes_nothing() {
        let mut recent = recording();
        recent.seed(3, vec![(7, frame(7))]);
        recent.seed(7, vec![]);
        assert_eq!(seqs(recent.after(3)), Some(vec![7]));
    }

    #[test]
    fn eviction_raises_the_floor() {
        let mut recent = recording();
        recent.seed(0, vec![]);
        for seq in 1..=(MAX_EVENTS as u64 + 5) {
            recent.record(seq, &frame(seq));
        }
        assert_eq!(recent.after(0), None);
        assert_eq!(recent.after(4), None);
        let held = seqs(recent.after(5)).unwrap();
        assert_eq!(held.len(), MAX_EVENTS);
        assert_eq!(held.first(), Some(&6));
        // One frame over the byte limit is not held, yet what follows is.
        let big = Bytes::from(vec![b'x'; MAX_BYTES + 1]);
        recent.record(100, &big);
        assert_eq!(seqs(recent.after(100)), Some(vec![]));
        recent.record(101, &frame(101));
        assert_eq!(seqs(recent.after(100)), Some(vec![101]));
    }

    #[test]
    fn clearing_forgets_until_the_next_event() {
        let mut recent = recording();
        recent.seed(1, vec![(2, frame(2))]);
        recent.clear();
        assert_eq!(recent.after(1), None);
        assert_eq!(recent.after(2), None);
        recent.record(3, &frame(3));
        assert_eq!(seqs(recent.after(3)), Some(vec![]));
        assert_eq!(recent.after(2), None);
    }
}
