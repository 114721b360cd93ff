//! Which SUB a `+OK` or `-ERR` answers (pure).
//!
//! The connection logs in with `verbose`, so the server answers every SUB
//! and UNSUB, in order, with `+OK` or `-ERR` (PINGs get their PONG and
//! nothing else). A refused SUB is then known by its place in line: the
//! `maximum subscriptions exceeded` error does not name its subject. It
//! costs five bytes a subscription change.

use std::collections::VecDeque;

use crate::deliver::Sid;

/// The operations sent and not yet answered, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// A SUB's sid, or `None` for an UNSUB.
    pending: VecDeque<Option<Sid>>,
}

impl Acks {
    pub(crate) fn subscribed(&mut self, sid: Sid) {
        self.pending.push_back(Some(sid));
    }

    pub(crate) fn unsubscribed(&mut self) {
        self.pending.push_back(None);
    }

    /// A `+OK` answered the oldest.
    pub(crate) fn ok(&mut self) {
        self.pending.pop_front();
        self.shrink();
    }

    /// A `-ERR` refused the oldest: its sid, if it was a SUB.
    pub(crate) fn refused(&mut self) -> Option<Sid> {
        let sid = self.pending.pop_front().flatten();
        self.shrink();
        sid
    }

    /// The SUB the next answer is for, if the oldest is one.
    pub(crate) fn oldest(&self) -> Option<Sid> {
        self.pending.front().copied().flatten()
    }

    /// Let the memory of a re-subscription of many go once answered.
    fn shrink(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 1024 {
            self.pending = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_in_order() {
        let mut acks = Acks::default();
        acks.subscribed(1);
        acks.unsubscribed();
        acks.subscribed(2);
        acks.subscribed(3);
        assert_eq!(acks.oldest(), Some(1));
        acks.ok();
        assert_eq!(acks.oldest(), None, "an UNSUB is next");
        acks.ok();
        assert_eq!(acks.refused(), Some(2));
        acks.ok();
        assert_eq!(acks.refused(), None, "nothing left to answer");
    }

    #[test]
    fn a_large_line_is_let_go_once_answered() {
        let mut acks = Acks::default();
        for sid in 0..100_000 {
            acks.subscribed(sid);
        }
        for _ in 0..100_000 {
            acks.ok();
        }
        assert_eq!(acks.pending.capacity(), 0);
    }
}
