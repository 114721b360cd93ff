//! The order of one subject's live events, as a small pure state machine.
//!
//! Each persisted event arrives with its stream sequence and the subject's
//! previous one (JetStream RePublish's `Nats-Sequence` and
//! `Nats-Last-Sequence`). An event whose previous sequence is past the last
//! one this node has for the subject shows that events were missed between
//! JetStream and the edge (interest that had not reached the stream
//! leader's server yet, a message lost on a route): they are read from
//! history (see `fill`) while the subject's later events wait, then all go
//! out in order. Late, never lost.
//!
//! While nothing is missing a subject holds one sequence; what waits during
//! a fill is bounded, and past the bound (or if the read fails) the
//! subject's streams must end, so that their clients resume from their
//! cursors instead of skipping events.
//!
//! Only a subject that knows its last sequence can see a gap: the first
//! event after subscribing, after a NATS loss or after a fill given up is
//! taken as it comes (a stream's start and resume cover what came before).
//! A sequence learned from a read only ever lowers what is known: too low
//! costs a read whose events the streams already have and drop by their
//! cursors; too high would skip events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most events a subject holds while a fill runs.
pub const MAX_HELD: usize = 128;
/// Most frame bytes a subject holds while a fill runs.
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// The `upto` of a fill that reads everything stored after its `after`.
pub const OPEN: u64 = u64::MAX;

/// Fill ids, unique in the process: the answer to a fill given up is told
/// apart from that of a later fill of the same range.
static FILLS: AtomicU64 = AtomicU64::new(1);

/// Where one subject's live events stand.
#[derive(Debug, Default)]
pub enum Gaps<T> {
    /// No last sequence: the next event is taken as it comes.
    #[default]
    Unknown,
    /// Every event of the subject up to this sequence has been handed on
    /// (or lies before where its streams started).
    At(u64),
    /// Missed events are being read; later ones wait.
    Filling(Box<Filling<T>>),
}

/// A fill under way and what waits for it.
#[derive(Debug)]
pub struct Filling<T> {
    fill: Fill,
    /// Live events that came meanwhile, in arrival order.
    held: VecDeque<Event<T>>,
    bytes: usize,
}

/// A read to make: the subject's stored events in `(after, upto]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub id: u64,
    pub after: u64,
    pub upto: u64,
}

/// A persisted event as it arrived live.
#[derive(Debug)]
pub struct Event<T> {
    pub seq: u64,
    /// The subject's previous sequence when the event was stored (0: it had
    /// none); `None` if the event does not say.
    pub prev: Option<u64>,
    /// Whether it may come twice (the subscriptions are moving between
    /// NATS servers): one at or below the last is then a duplicate.
    /// Otherwise a lower sequence is taken as is (a history stream may
    /// have been recreated).
    pub repeat: bool,
    /// Its frame's size, for the bound on what is held.
    pub bytes: usize,
    pub item: T,
}

/// What to do with a live event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Hand it on now.
    Deliver(T),
    /// A duplicate: drop it.
    Drop,
    /// Held until the fill under way ends.
    Held,
    /// Held: events before it were missed; start this fill.
    Fill(Fill),
    /// Too much to hold: what was held is dropped, and every stream of
    /// the subject must end (its client resumes from its cursor).
    GiveUp,
}

/// What a fill's answer lets go.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<T> {
    /// The events read, then those held, in order, without duplicates.
    pub events: Vec<T>,
    /// Held events showed another gap: it is being filled now.
    pub next: Option<Fill>,
}

impl<T> Gaps<T> {
    /// A live event.
    pub fn live(&mut self, event: Event<T>) -> Next<T> {
        match self {
            Self::Filling(filling) => {
                let bytes = filling.bytes + event.bytes;
                if filling.held.len() >= MAX_HELD || bytes > MAX_HELD_BYTES {
                    *self = Self::Unknown;
                    return Next::GiveUp;
                }
                filling.bytes = bytes;
                filling.held.push_back(event);
                Next::Held
            }
            Self::At(last) if event.seq <= *last && event.repeat => Next::Drop,
            Self::At(last) if event.prev.is_some_and(|prev| prev > *last) => {
                let fill = Fill {
                    id: FILLS.fetch_add(1, Ordering::Relaxed),
                    after: *last,
                    upto: event.prev.unwrap_or_default(),
                };
                *self = Self::Filling(Box::new(Filling {
                    fill,
                    bytes: event.bytes,
                    held: VecDeque::from([event]),
                }));
                Next::Fill(fill)
            }
            Self::At(_) | Self::Unknown => {
                *self = Self::At(event.seq);
                Next::Deliver(event.item)
            }
        }
    }

    /// The answer to fill `id`: the events read, ascending. What history
    /// no longer held is gone, as for a resume: the gap is closed either
    /// way. `None` if the fill was given up or forgotten meanwhile.
    pub fn filled(&mut self, id: u64, read: Vec<(u64, T)>) -> Option<Released<T>> {
        if !self.is_filling(id) {
            return None;
        }
        let Self::Filling(filling) = std::mem::replace(self, Self::Unknown) else {
            unreachable!("checked above");
        };
        let Filling { fill, mut held, .. } = *filling;
        let mut events = Vec::with_capacity(read.len() + held.len());
        let mut last = fill.after;
        for (seq, item) in read {
            if seq > last && seq <= fill.upto {
                events.push(item);
                last = seq;
            }
        }
        *self = Self::At(match fill.upto {
            OPEN => last,
            upto => upto,
        });
        while let Some(event) = held.pop_front() {
            match self.live(event) {
                Next::Deliver(item) => events.push(item),
                Next::Fill(next) => {
                    if let Self::Filling(filling) = self {
                        filling.bytes += held.iter().map(|e| e.bytes).sum::<usize>();
                        filling.held.extend(held);
                    }
                    let next = Some(next);
                    return Some(Released { events, next });
                }
                // Not filling before this event: neither holds.
                Next::Drop | Next::Held | Next::GiveUp => {}
            }
        }
        Some(Released { events, next: None })
    }

    /// Fill `id` failed; returns whether it was the one under way (then
    /// what was held is dropped and the subject's streams must end).
    pub fn failed(&mut self, id: u64) -> bool {
        let current = self.is_filling(id);
        if current {
            *self = Self::Unknown;
        }
        current
    }

    /// A while after subscribing, reads whatever was stored after the last
    /// event handed on: in a cluster, interest reaches the stream leader's
    /// server a moment after the subscription is confirmed, and an event
    /// stored meanwhile is missed with no later event to show the gap.
    /// The fill is open-ended (`upto` [`OPEN`]): it ends at what it finds.
    pub fn settle(&mut self) -> Option<Fill> {
        let Self::At(last) = self else {
            return None;
        };
        let fill = Fill {
            id: FILLS.fetch_add(1, Ordering::Relaxed),
            after: *last,
            upto: OPEN,
        };
        *self = Self::Filling(Box::new(Filling {
            fill,
            bytes: 0,
            held: VecDeque::new(),
        }));
        Some(fill)
    }

    /// The subject's newest stored sequence, read after its subscription
    /// was confirmed: events after it will come live. Only lowers what is
    /// known (see the module's doc); ignored while a fill runs.
    pub fn learn(&mut self, newest: u64) {
        match self {
            Self::Unknown => *self = Self::At(newest),
            Self::At(last) => *last = (*last).min(newest),
            Self::Filling(_) => {}
        }
    }

    /// Live events may have been missed without a trace (NATS was lost):
    /// forget everything, including a fill under way.
    pub fn forget(&mut self) {
        *self = Self::Unknown;
    }

    fn is_filling(&self, id: u64) -> bool {
        matches!(self, Self::Filling(filling) if filling.fill.id == id)
    }

    /// Whether fill `id`, under way, is a settle read (see [`Gaps::settle`]).
    pub fn is_settle(&self, id: u64) -> bool {
        matches!(self, Self::Filling(filling) if filling.fill.id == id && filling.fill.upto == OPEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event `seq` after `prev`, that comes once; its item is its sequence.
    fn ev(seq: u64, prev: u64) -> Event<u64> {
        Event {
            seq,
            prev: Some(prev),
            repeat: false,
            bytes: 10,
            item: seq,
        }
    }

    fn repeated(seq: u64, prev: u64) -> Event<u64> {
        Event {
            repeat: true,
            ..ev(seq, prev)
        }
    }

    fn read(seqs: &[u64]) -> Vec<(u64, u64)> {
        seqs.iter().map(|&seq| (seq, seq)).collect()
    }

    fn started(next: Next<u64>) -> Fill {
        match next {
            Next::Fill(fill) => fill,
            other => panic!("expected a fill, got {other:?}"),
        }
    }

    #[test]
    fn a_settle_reads_what_was_stored_after_the_last_event_and_ends_there() {
        let mut gaps = Gaps::<u64>::default();
        assert_eq!(
            gaps.settle(),
            None,
            "nothing known: the next event is taken as it comes"
        );
        gaps.learn(4);
        let fill = gaps.settle().expect("a settle read");
        assert_eq!((fill.after, fill.upto), (4, OPEN));
        assert!(matches!(gaps.live(ev(8, 7)), Next::Held));
        // Stored meanwhile, missed live: 5 and 7; 8 came live.
        let released = gaps.filled(fill.id, read(&[5, 7])).unwrap();
        assert_eq!(released.events, [5, 7, 8]);
        assert!(matches!(gaps, Gaps::At(8)));
        // Nothing missed: the subject stays where it was.
        let fill = gaps.settle().unwrap();
        assert!(gaps.is_settle(fill.id));
        assert_eq!(
            gaps.filled(fill.id, read(&[])).unwrap().events,
            Vec::<u64>::new()
        );
        assert!(matches!(gaps, Gaps::At(8)));
        assert!(!gaps.is_settle(fill.id), "done");
    }

    #[test]
    fn events_in_order_go_out_at_once() {
        let mut gaps = Gaps::At(3);
        assert_eq!(gaps.live(ev(5, 3)), Next::Deliver(5));
        assert_eq!(gaps.live(ev(9, 5)), Next::Deliver(9));
        assert!(matches!(gaps, Gaps::At(9)));
    }

    #[test]
    fn a_gap_holds_later_events_until_the_missed_ones_are_read() {
        let mut gaps = Gaps::At(3);
        let fill = started(gaps.live(ev(8, 6)));
        assert_eq!((fill.after, fill.upto), (3, 6));
        assert_eq!(gaps.live(ev(9, 8)), Next::Held);
        assert_eq!(gaps.live(ev(12, 9)), Next::Held);
        let released = gaps.filled(fill.id, read(&[4, 6])).unwrap();
        assert_eq!(released.events, [4, 6, 8, 9, 12]);
        assert_eq!(released.next, None);
        assert!(matches!(gaps, Gaps::At(12)));
        assert_eq!(gaps.live(ev(13, 12)), Next::Deliver(13), "direct again");
    }

    #[test]
    fn the_first_event_is_taken_as_it_comes_unless_a_newest_was_learned() {
        let mut gaps = Gaps::Unknown;
        assert_eq!(gaps.live(ev(8, 6)), Next::Deliver(8));
        let mut gaps = Gaps::Unknown;
        gaps.learn(5);
        let fill = started(gaps.live(ev(8, 6)));
        assert_eq!((fill.after, fill.upto), (5, 6));
        // A subject with nothing stored yet learns 0: its first event must
        // name no previous one.
        let mut gaps = Gaps::Unknown;
        gaps.learn(0);
        assert_eq!(gaps.live(ev(1, 0)), Next::Deliver(1));
    }

    #[test]
    fn a_learned_newest_only_lowers_what_is_known() {
        let mut gaps = Gaps::Unknown;
        gaps.learn(6); // one stream read after event 6 was stored, missed live
        gaps.learn(5); // another read before it was stored
        let fill = started(gaps.live(ev(7, 6)));
        assert_eq!((fill.after, fill.upto), (5, 6));
        let mut gaps = Gaps::<u64>::At(9);
        gaps.learn(12);
        assert!(matches!(gaps, Gaps::At(9)));
    }

    #[test]
    fn an_event_that_names_no_previous_one_is_taken() {
        let mut gaps = Gaps::At(3);
        let unsaid = Event {
            prev: None,
            ..ev(8, 0)
        };
        assert_eq!(gaps.live(unsaid), Next::Deliver(8));
        // 0: the subject's previous event was deleted or expired.
        assert_eq!(gaps.live(ev(10, 0)), Next::Deliver(10));
    }

    #[test]
    fn held_events_that_show_another_gap_start_the_next_fill() {
        let mut gaps = Gaps::At(1);
        let first = started(gaps.live(ev(3, 2)));
        assert_eq!(gaps.live(ev(4, 3)), Next::Held);
        assert_eq!(gaps.live(ev(7, 6)), Next::Held);
        assert_eq!(gaps.live(ev(8, 7)), Next::Held);
        let released = gaps.filled(first.id, read(&[2])).unwrap();
        assert_eq!(released.events, [2, 3, 4]);
        let second = released.next.unwrap();
        assert_eq!((second.after, second.upto), (4, 6));
        assert_eq!(gaps.live(ev(9, 8)), Next::Held);
        let released = gaps.filled(second.id, read(&[5, 6])).unwrap();
        assert_eq!(released.events, [5, 6, 7, 8, 9]);
        assert_eq!(released.next, None);
    }

    #[test]
    fn what_history_no_longer_holds_does_not_stall_the_subject() {
        let mut gaps = Gaps::At(3);
        let fill = started(gaps.live(ev(8, 6)));
        // 6 expired before the read: the gap closes with what was there.
        let released = gaps.filled(fill.id, read(&[4])).unwrap();
        assert_eq!(released.events, [4, 8]);
        assert_eq!(released.next, None);
    }

    #[test]
    fn a_read_is_trusted_only_within_its_range_and_in_order() {
        let mut gaps = Gaps::At(3);
        let fill = started(gaps.live(ev(8, 6)));
        let released = gaps.filled(fill.id, read(&[2, 3, 5, 4, 6, 7, 8])).unwrap();
        assert_eq!(released.events, [5, 6, 8]);
    }

    #[test]
    fn while_subscriptions_move_duplicates_are_dropped_held_or_not() {
        let mut gaps = Gaps::At(4);
        assert_eq!(gaps.live(repeated(4, 3)), Next::Drop);
        // The new server's connection brings 6 before the old one's 5.
        let fill = started(gaps.live(repeated(6, 5)));
        assert_eq!(gaps.live(repeated(5, 4)), Next::Held);
        assert_eq!(gaps.live(repeated(6, 5)), Next::Held);
        let released = gaps.filled(fill.id, read(&[5])).unwrap();
        assert_eq!(released.events, [5, 6]);
        // Alone again, a lower sequence is a recreated stream: taken.
        assert_eq!(gaps.live(ev(1, 0)), Next::Deliver(1));
    }

    #[test]
    fn too_much_held_gives_up_and_a_late_answer_is_ignored() {
        let mut gaps = Gaps::At(1);
        let fill = started(gaps.live(ev(3, 2)));
        for seq in 4..3 + MAX_HELD as u64 {
            assert_eq!(gaps.live(ev(seq, seq - 1)), Next::Held, "{seq}");
        }
        let over = 3 + MAX_HELD as u64;
        assert_eq!(gaps.live(ev(over, over - 1)), Next::GiveUp);
        assert!(matches!(gaps, Gaps::Unknown));
        assert_eq!(gaps.filled(fill.id, read(&[2])), None);
        assert!(!gaps.failed(fill.id));
        // Taken as it comes from then on.
        assert_eq!(gaps.live(ev(over + 5, over + 4)), Next::Deliver(over + 5));
    }

    #[test]
    fn held_bytes_are_bounded_too() {
        let mut gaps = Gaps::At(1);
        started(gaps.live(ev(3, 2)));
        let big = |seq| Event {
            bytes: MAX_HELD_BYTES / 2,
            ..ev(seq, seq - 1)
        };
        assert_eq!(gaps.live(big(4)), Next::Held);
        assert_eq!(gaps.live(big(5)), Next::GiveUp);
    }

    #[test]
    fn a_failed_fill_gives_up_once() {
        let mut gaps = Gaps::At(1);
        let fill = started(gaps.live(ev(3, 2)));
        assert!(gaps.failed(fill.id));
        assert!(!gaps.failed(fill.id));
        assert!(matches!(gaps, Gaps::Unknown));
    }

    #[test]
    fn a_fill_forgotten_after_a_nats_loss_answers_nothing() {
        let mut gaps = Gaps::At(1);
        let fill = started(gaps.live(ev(3, 2)));
        gaps.forget();
        assert_eq!(gaps.filled(fill.id, read(&[2])), None);
        // A later fill of the same range is another one.
        gaps.learn(1);
        let again = started(gaps.live(ev(3, 2)));
        assert_ne!(again.id, fill.id);
        assert_eq!(gaps.filled(fill.id, read(&[2])), None);
        assert!(gaps.filled(again.id, read(&[2])).is_some());
    }

    #[test]
    fn a_subject_without_a_gap_holds_one_sequence() {
        // An idle stream's subjects must not grow: the enum is a tag and
        // a sequence (or a pointer).
        assert!(std::mem::size_of::<Gaps<crate::fanout::delivery::Delivery>>() <= 16);
    }
}
