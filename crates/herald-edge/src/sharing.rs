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

use crate::delivery::Delivery;
use crate::recent::could_hold;

/// How long a resuming stream waits for another's history read.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(5);

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
pub fn may_wait<'a>(held: impl IntoIterator<Item = &'a Option<Seeder>>) -> bool {
    held.into_iter().all(Option::is_none)
}

/// The reads under way on one subject, by where they start, with the
/// streams waiting for each.
#[derive(Default)]
pub struct Waiting(HashMap<u64, Vec<oneshot::Sender<Lookup>>>);

/// A stream's part in the reads from `after`.
pub enum Turn {
    /// Nobody reads from there yet: this stream reads for the others.
    Read,
    /// Someone does: wait for its answer.
    Wait(oneshot::Receiver<Lookup>),
    /// Someone does, but this stream may not wait: it reads for itself.
    Alone,
}

impl Waiting {
    pub fn turn(&mut self, after: u64, may_wait: bool) -> Turn {
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
    pub fn answer(&mut self, after: u64, answer: impl Fn() -> Lookup) {
        for reply in self.0.remove(&after).unwrap_or_default() {
            let _ = reply.send(answer());
        }
    }
}

/// The answer to a [`Turn::Wait`]: the read, or a miss if it is stuck or
/// was given up (the stream then reads for itself).
pub async fn wait(answer: oneshot::Receiver<Lookup>) -> Lookup {
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
pub struct Kept {
    seeder: Option<Seeder>,
    read: Vec<(u64, Bytes)>,
    bytes: usize,
}

impl Kept {
    pub fn new(seeder: Option<Seeder>) -> Self {
        Self {
            seeder,
            read: Vec::new(),
            bytes: 0,
        }
    }

    pub fn push(&mut self, seq: u64, frame: &Bytes) {
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

    pub fn seed(self) {
        if let Some(seeder) = self.seeder {
            seeder.seed(self.read);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;
    use crate::delivery::{ConnId, Member};
    use crate::queue;
    use crate::signal::Signal;
    use crate::subject::Subject;

    const TOPIC: &str = "herald.t.news";
    const USER: &str = "herald.u.alice";

    fn subject(name: &str) -> (Arc<Subject>, watch::Sender<u64>) {
        let (losses, watcher) = watch::channel(0);
        (Subject::new(name, watcher), losses)
    }

    /// Joins a stream; returns its queue's end.
    fn join(subject: &Subject, id: ConnId) -> queue::Receiver<Delivery> {
        let (queue, inbox) = queue::bounded(8);
        let signal = Signal::new(None);
        subject.join(id, Member { queue, signal });
        inbox
    }

    /// `TOPIC` with two streams, so that it keeps events.
    fn shared_subject() -> Arc<Subject> {
        let (subject, _) = subject(TOPIC);
        for id in 0..2 {
            let _ = join(&subject, id);
        }
        subject
    }

    fn frame(seq: u64) -> Bytes {
        Bytes::from(format!("data: {seq}\n\n"))
    }

    fn read(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Bytes)> {
        seqs.map(|seq| (seq, frame(seq))).collect()
    }

    fn seqs(lookup: Lookup) -> Vec<u64> {
        match lookup {
            Lookup::Hit(events) => events
                .iter()
                .filter_map(|d| d.position)
                .map(|p| p.1)
                .collect(),
            Lookup::Miss(_) => panic!("expected a hit"),
        }
    }

    #[test]
    fn a_stream_holding_a_read_for_others_may_not_wait() {
        let (topic, _losses) = subject(TOPIC);
        let seeder = Seeder::new(topic, 7, 0);
        assert!(may_wait([&None, &None]));
        assert!(!may_wait([&None, &Some(seeder)]));
    }

    #[tokio::test(start_paused = true)]
    async fn streams_resuming_from_one_place_share_one_read() {
        let (topic, _losses) = subject(TOPIC);
        let _streams = [join(&topic, 1), join(&topic, 2)];
        let Lookup::Miss(Some(seeder)) = topic.lookup(7, true).await else {
            panic!("the first resumer reads for the others");
        };
        let mut waiter = std::pin::pin!(topic.lookup(7, true));
        assert!(futures::poll!(&mut waiter).is_pending());
        // Holding a read itself, a stream must not wait for another's.
        assert!(matches!(topic.lookup(7, false).await, Lookup::Miss(None)));
        seeder.seed(read(8..=10));
        assert_eq!(seqs(waiter.await), [8, 9, 10]);
        assert_eq!(
            seqs(topic.lookup(8, true).await),
            [9, 10],
            "later ones from memory"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_given_up_releases_its_waiters_at_once() {
        let (topic, _losses) = subject(TOPIC);
        let Lookup::Miss(Some(seeder)) = topic.lookup(7, true).await else {
            panic!("a topic's first resumer reads for the others");
        };
        let mut waiter = std::pin::pin!(topic.lookup(7, true));
        assert!(futures::poll!(&mut waiter).is_pending());
        let started = tokio::time::Instant::now();
        drop(seeder);
        assert!(matches!(waiter.await, Lookup::Miss(None)));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_read_is_waited_for_no_longer_than_the_lookup_wait() {
        let (topic, _losses) = subject(TOPIC);
        let Lookup::Miss(Some(_stuck)) = topic.lookup(7, true).await else {
            panic!("a topic's first resumer reads for the others");
        };
        let started = tokio::time::Instant::now();
        assert!(matches!(topic.lookup(7, true).await, Lookup::Miss(None)));
        assert_eq!(started.elapsed(), LOOKUP_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_from_before_a_nats_loss_is_not_kept() {
        let (topic, losses) = subject(TOPIC);
        let Lookup::Miss(Some(seeder)) = topic.lookup(7, true).await else {
            panic!("a topic's first resumer reads for the others");
        };
        let mut waiter = std::pin::pin!(topic.lookup(7, true));
        assert!(futures::poll!(&mut waiter).is_pending());
        losses.send_modify(|n| *n += 1);
        seeder.seed(read(8..=10));
        assert!(matches!(waiter.await, Lookup::Miss(None)));
        assert!(matches!(topic.lookup(7, true).await, Lookup::Miss(Some(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_users_only_stream_keeps_nothing_for_others() {
        let (user, _losses) = subject(USER);
        let _stream = join(&user, 1);
        assert!(matches!(user.lookup(7, true).await, Lookup::Miss(None)));
        let _tab = join(&user, 2);
        assert!(matches!(user.lookup(7, true).await, Lookup::Miss(Some(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_the_edge_can_hold_serves_the_streams_waiting_for_it() {
        let subject = shared_subject();
        let Lookup::Miss(Some(seeder)) = subject.lookup(7, true).await else {
            panic!("the first resumer reads for the others");
        };
        let mut waiter = std::pin::pin!(subject.lookup(7, true));
        assert!(futures::poll!(&mut waiter).is_pending());
        let mut kept = Kept::new(Some(seeder));
        let last = 7 + crate::recent::MAX_EVENTS as u64;
        for seq in 8..=last {
            kept.push(seq, &frame(seq));
        }
        kept.seed();
        let Lookup::Hit(events) = waiter.await else {
            panic!("served from the read");
        };
        let seqs: Vec<u64> = events
            .iter()
            .filter_map(|d| d.position)
            .map(|p| p.1)
            .collect();
        assert_eq!(seqs, (8..=last).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_too_large_to_hold_is_not_kept_and_releases_its_waiters_at_once() {
        let subject = shared_subject();
        let Lookup::Miss(Some(seeder)) = subject.lookup(7, true).await else {
            panic!("the first resumer reads for the others");
        };
        // Polled once, the waiter's lookup is queued before anything the
        // reader sends after.
        let mut waiter = std::pin::pin!(subject.lookup(7, true));
        assert!(futures::poll!(&mut waiter).is_pending());
        let mut kept = Kept::new(Some(seeder));
        for seq in 8..8 + crate::recent::MAX_EVENTS as u64 {
            kept.push(seq, &frame(seq));
        }
        assert!(futures::poll!(&mut waiter).is_pending());
        // One more than a subject keeps: the reader lets go of the read
        // (and its memory) while it goes on reading for its own stream.
        kept.push(100, &frame(100));
        assert!(kept.seeder.is_none() && kept.read.is_empty());
        let started = tokio::time::Instant::now();
        let answer = waiter.await;
        assert!(matches!(answer, Lookup::Miss(None)));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "released at once, not after the lookup wait"
        );
        // Byte-wise too: a few large frames are not kept either.
        let Lookup::Miss(Some(seeder)) = subject.lookup(9, true).await else {
            panic!("a reader from another place");
        };
        let mut kept = Kept::new(Some(seeder));
        let big = Bytes::from(vec![b'x'; crate::recent::MAX_BYTES / 2 + 1]);
        kept.push(10, &big);
        assert!(kept.seeder.is_some());
        kept.push(11, &big);
        assert!(kept.seeder.is_none() && kept.read.is_empty());
    }
}
