//! Streams resuming a subject from the same place share one history read.
//!
//! The first stream that misses what the subject holds gets a [`Seeder`]
//! and reads; the others [`wait`] for that read (at most [`LOOKUP_WAIT`])
//! and are then served from memory. The reader [`Kept`] its read and gives
//! it back through the seeder, or lets go of it at once when the subject
//! could not hold it all, so that nobody waits for what will not come. A
//! stream already holding a seeder never waits ([`may_wait`]), so two
//! streams cannot each wait for the read the other holds.

use std::collections::{HashMap, hash_map};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::fanout::delivery::Delivery;
use crate::resume::recent::could_hold;

/// How long a resuming stream waits for another's history read.
pub(crate) const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// What the node already holds for a stream resuming a subject.
pub enum Lookup {
    /// Every event after the cursor, from memory.
    Hit(Vec<Delivery>),
    /// History must be read; hand the result to the seeder, if any, so
    /// that the next streams resuming from there are served from memory.
    Miss(Option<Seeder>),
}

/// What keeps a read for the streams waiting on it: the subject.
pub trait Keeper: Send + Sync {
    /// `read`: every event after `after`, in order, read while the NATS
    /// loss count was `epoch`; `None` if the reader gave up.
    fn keep(&self, after: u64, read: Option<Vec<(u64, Bytes)>>, epoch: u64);

    /// The subject's name, for logs.
    fn name(&self) -> &str;
}

/// Whether a stream holding these seeders may wait for another's read.
pub(crate) fn may_wait<'a>(held: impl IntoIterator<Item = &'a Option<Seeder>>) -> bool {
    held.into_iter().all(Option::is_none)
}

/// The reads under way on one subject, by where they start, with the
/// streams waiting for each.
#[derive(Default)]
pub(crate) struct Waiting(HashMap<u64, Vec<oneshot::Sender<Lookup>>>);

/// A stream's part in the reads from `after`.
pub(crate) enum Turn {
    /// Nobody reads from there yet: this stream reads for the others.
    Read,
    /// Someone does: wait for its answer.
    Wait(oneshot::Receiver<Lookup>),
    /// Someone does, but this stream may not wait: it reads for itself.
    Alone,
}

impl Waiting {
    pub(crate) fn turn(&mut self, after: u64, may_wait: bool) -> Turn {
        match self.0.entry(after) {
            hash_map::Entry::Occupied(mut waiting) if may_wait => {
                let (reply, answer) = oneshot::channel();
                waiting.get_mut().push(reply);
                Turn::Wait(answer)
            }
            hash_map::Entry::Occupied(_) => Turn::Alone,
            hash_map::Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                Turn::Read
            }
        }
    }

    /// Ends the read from `after`, answering each of its waiters.
    pub(crate) fn answer(&mut self, after: u64, answer: impl Fn() -> Lookup) {
        for reply in self.0.remove(&after).unwrap_or_default() {
            let _ = reply.send(answer());
        }
    }
}

/// The answer to a [`Turn::Wait`]: the read, or a miss if it is stuck or
/// was given up (the stream then reads for itself).
pub(crate) async fn wait(answer: oneshot::Receiver<Lookup>) -> Lookup {
    match tokio::time::timeout(LOOKUP_WAIT, answer).await {
        Ok(Ok(lookup)) => lookup,
        _ => Lookup::Miss(None),
    }
}

/// Gives a history read back to its subject, whose other streams resuming
/// from the same place wait for it; dropped unused, it lets them read for
/// themselves.
pub struct Seeder {
    /// Taken when the result is given.
    keeper: Option<Arc<dyn Keeper>>,
    after: u64,
    /// The loss count when the reader looked up.
    epoch: u64,
}

impl Seeder {
    pub fn new(keeper: Arc<dyn Keeper>, after: u64, epoch: u64) -> Self {
        Self {
            keeper: Some(keeper),
            after,
            epoch,
        }
    }

    /// `read`: every event after the looked-up cursor, in order.
    pub fn seed(mut self, read: Vec<(u64, Bytes)>) {
        self.give(Some(read));
    }

    fn give(&mut self, read: Option<Vec<(u64, Bytes)>>) {
        if let Some(keeper) = self.keeper.take() {
            keeper.keep(self.after, read, self.epoch);
        }
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.give(None);
    }
}

impl std::fmt::Debug for Seeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seeder")
            .field("subject", &self.keeper.as_ref().map(|k| k.name()))
            .field("after", &self.after)
            .finish()
    }
}

/// A history read kept for the subject's other resuming streams, as long
/// as the subject's fan-out task could hold it all (see `recent`).
pub(crate) struct Kept {
    seeder: Option<Seeder>,
    read: Vec<(u64, Bytes)>,
    bytes: usize,
}

impl Kept {
    pub(crate) fn new(seeder: Option<Seeder>) -> Self {
        Self {
            seeder,
            read: Vec::new(),
            bytes: 0,
        }
    }

    pub(crate) fn push(&mut self, seq: u64, frame: &Bytes) {
        if self.seeder.is_none() {
            return;
        }
        self.bytes += frame.len();
        self.read.push((seq, frame.clone()));
        if !could_hold(self.read.len(), self.bytes) {
            // Too much to hold: dropping the seeder lets the streams
            // waiting for this read go and read for themselves now.
            self.seeder = None;
            self.read = Vec::new();
        }
    }

    pub(crate) fn seed(self) {
        if let Some(seeder) = self.seeder {
            seeder.seed(self.read);
        }
    }
}

/// The sequences of a hit (tests of what uses the sharing too).
#[cfg(test)]
pub(crate) fn hit_sequences(lookup: Lookup) -> Vec<u64> {
    match lookup {
        Lookup::Hit(events) => events
            .iter()
            .filter_map(|d| d.position)
            .map(|p| p.1)
            .collect(),
        Lookup::Miss(_) => panic!("expected a hit"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A keeper that records what it was given and answers its waiters
    /// with a hit of what it holds, as a subject does.
    #[derive(Default)]
    struct Recorder {
        given: Mutex<Vec<(u64, Option<Vec<u64>>)>>,
        waiting: Mutex<Waiting>,
    }

    impl Keeper for Recorder {
        fn keep(&self, after: u64, read: Option<Vec<(u64, Bytes)>>, _epoch: u64) {
            let seqs = read.map(|r| r.iter().map(|(seq, _)| *seq).collect::<Vec<_>>());
            self.given.lock().unwrap().push((after, seqs.clone()));
            self.waiting.lock().unwrap().answer(after, || match &seqs {
                Some(seqs) => Lookup::Hit(seqs.iter().map(|&seq| delivery(seq)).collect()),
                None => Lookup::Miss(None),
            });
        }

        fn name(&self) -> &str {
            "herald.t.test"
        }
    }

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            frame: frame(seq),
            position: Some((1, seq)),
        }
    }

    fn frame(seq: u64) -> Bytes {
        Bytes::from(format!("data: {seq}\n\n"))
    }

    /// A recorder with a read under way from `after`: its seeder, and a
    /// stream waiting for it.
    fn read_with_a_waiter(after: u64) -> (Arc<Recorder>, Seeder, oneshot::Receiver<Lookup>) {
        let keeper = Arc::new(Recorder::default());
        let mut waiting = keeper.waiting.lock().unwrap();
        assert!(matches!(waiting.turn(after, true), Turn::Read));
        let Turn::Wait(answer) = waiting.turn(after, true) else {
            panic!("the second one waits");
        };
        drop(waiting);
        let seeder = Seeder::new(keeper.clone(), after, 0);
        (keeper, seeder, answer)
    }

    #[test]
    fn a_stream_holding_a_read_for_others_may_not_wait() {
        let seeder = Seeder::new(Arc::new(Recorder::default()), 7, 0);
        assert!(may_wait([&None, &None]));
        assert!(!may_wait([&None, &Some(seeder)]));
        let mut waiting = Waiting::default();
        assert!(matches!(waiting.turn(7, true), Turn::Read));
        assert!(matches!(waiting.turn(7, false), Turn::Alone));
        assert!(
            matches!(waiting.turn(8, false), Turn::Read),
            "another place"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_given_back_serves_its_waiters_at_once() {
        let (keeper, seeder, answer) = read_with_a_waiter(7);
        let mut kept = Kept::new(Some(seeder));
        for seq in 8..=10 {
            kept.push(seq, &frame(seq));
        }
        kept.seed();
        let started = tokio::time::Instant::now();
        assert_eq!(hit_sequences(wait(answer).await), [8, 9, 10]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(*keeper.given.lock().unwrap(), [(7, Some(vec![8, 9, 10]))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_too_large_to_hold_is_let_go_at_once() {
        let (keeper, seeder, answer) = read_with_a_waiter(7);
        let mut kept = Kept::new(Some(seeder));
        let most = crate::resume::recent::MAX_EVENTS as u64;
        for seq in 8..8 + most {
            kept.push(seq, &frame(seq));
        }
        assert!(keeper.given.lock().unwrap().is_empty(), "still kept");
        kept.push(8 + most, &frame(8 + most));
        assert_eq!(*keeper.given.lock().unwrap(), [(7, None)], "given up");
        let started = tokio::time::Instant::now();
        assert!(matches!(wait(answer).await, Lookup::Miss(None)));
        assert_eq!(started.elapsed(), Duration::ZERO);
        kept.seed(); // nothing left to give
        assert_eq!(keeper.given.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_frame_counts_by_its_bytes() {
        let (keeper, seeder, _answer) = read_with_a_waiter(7);
        let mut kept = Kept::new(Some(seeder));
        let big = Bytes::from(vec![b'x'; crate::resume::recent::MAX_BYTES / 2 + 1]);
        kept.push(8, &big);
        assert!(keeper.given.lock().unwrap().is_empty());
        kept.push(9, &big);
        assert_eq!(*keeper.given.lock().unwrap(), [(7, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_seeder_releases_its_waiters_at_once() {
        let (keeper, seeder, answer) = read_with_a_waiter(7);
        drop(seeder);
        let started = tokio::time::Instant::now();
        assert!(matches!(wait(answer).await, Lookup::Miss(None)));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(*keeper.given.lock().unwrap(), [(7, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_read_is_waited_for_no_longer_than_the_lookup_wait() {
        let (_keeper, _stuck, answer) = read_with_a_waiter(7);
        let started = tokio::time::Instant::now();
        assert!(matches!(wait(answer).await, Lookup::Miss(None)));
        assert_eq!(started.elapsed(), LOOKUP_WAIT);
    }
}
