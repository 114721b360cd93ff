//! One subject followed on this node: the streams that follow it, and what
//! it keeps for streams resuming it.
//!
//! Streams resuming a subject from the same place share one history read:
//! the first that misses what the subject holds gets a [`Seeder`] and reads;
//! the others wait for that read (at most [`LOOKUP_WAIT`]) and are then
//! served from memory. A stream already holding a seeder never waits, so
//! two streams cannot each wait for the read the other holds.

use std::collections::{HashMap, hash_map};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_core::envelope::Envelope;
use herald_core::history::SEQUENCE_HEADER;
use herald_core::telemetry;
use herald_domain::subject::TOPIC_PREFIX;
use tokio::sync::{oneshot, watch};

use crate::delivery::{ConnId, Delivery, Member, hand_out};
use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::signal::Signal;
use crate::sse;

/// How long a resuming stream waits for another's history read.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// One subject's members and recent events.
pub struct Subject {
    name: Box<str>,
    /// The subject's cursor key.
    key: u32,
    /// Whether the NATS server is known to have the subscription.
    confirmed: AtomicBool,
    /// Counts NATS losses: what `recent` holds is void after one.
    losses: watch::Receiver<u64>,
    state: Mutex<State>,
}

struct State {
    /// Streams that joined and have not left; slow consumers dropped from
    /// `members` still count until they leave.
    refs: usize,
    members: HashMap<ConnId, Member>,
    recent: Recent,
    /// Streams waiting for a history read under way, by where it starts.
    waiting: HashMap<u64, Vec<oneshot::Sender<Lookup>>>,
    /// The loss count that `recent` is complete for.
    epoch: u64,
}

/// What the node already holds for a stream resuming a subject.
pub enum Lookup {
    /// Every event after the cursor, from memory.
    Hit(Vec<Delivery>),
    /// History must be read; hand the result to the seeder, if any, so
    /// that the next streams resuming from there are served from memory.
    Miss(Option<Seeder>),
}

impl Subject {
    pub fn new(name: &str, losses: watch::Receiver<u64>) -> Arc<Self> {
        let epoch = *losses.borrow();
        Arc::new(Self {
            name: name.into(),
            key: herald_domain::cursor::key(name),
            confirmed: AtomicBool::new(false),
            losses,
            state: Mutex::new(State {
                refs: 0,
                members: HashMap::new(),
                recent: Recent::default(),
                waiting: HashMap::new(),
                epoch,
            }),
        })
    }

    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    /// Adds a stream. Once two share the subject, its events are kept for
    /// the next ones resuming it.
    pub fn join(&self, id: ConnId, member: Member) {
        let mut state = self.state.lock().unwrap();
        state.refs += 1;
        state.members.insert(id, member);
        if state.members.len() > 1 {
            state.recent.start_recording();
        }
    }

    /// Removes a stream; returns whether none is left.
    pub fn leave(&self, id: ConnId) -> bool {
        let mut state = self.state.lock().unwrap();
        state.refs -= 1;
        state.members.remove(&id);
        state.refs == 0
    }

    /// Its streams' signals, each once however many subjects it follows.
    pub fn signals(&self, into: &mut HashMap<ConnId, Arc<Signal>>) {
        let state = self.state.lock().unwrap();
        for (id, member) in &state.members {
            into.entry(*id).or_insert_with(|| member.signal.clone());
        }
    }

    /// Frames a live event once and hands the same bytes to every member.
    pub fn deliver(&self, message: &async_nats::Message, metrics: &Metrics) {
        let envelope = Envelope::from_message(message);
        let delivery = Delivery {
            frame: sse::event(envelope.event.as_deref(), &envelope.data),
            position: sequence(message).map(|seq| (self.key, seq)),
        };
        let mut state = self.state.lock().unwrap();
        if let Some((_, seq)) = delivery.position
            && state.recent.is_recording()
        {
            state.sync_epoch(&self.losses);
            state.recent.record(seq, &delivery.frame);
        }
        // One span per event and node (not per stream), in the trace the
        // publisher started.
        let span = telemetry::span(|| {
            let span = tracing::info_span!(
                "herald.fanout",
                subject = %self.name,
                streams = state.members.len()
            );
            telemetry::continue_nats(&span, message.headers.as_ref());
            span
        });
        let _entered = span.enter();
        hand_out(&mut state.members, &delivery, metrics);
        drop(state);
        if let Some(age) = herald_core::envelope::age(message.headers.as_ref()) {
            metrics.delivery_latency.observe(age.as_secs_f64());
        }
    }

    /// The events after `after`, from memory if held; else, with
    /// `may_wait`, another stream's history read from the same place.
    /// Call after joining, so that live events from then on reach the
    /// stream.
    pub async fn lookup(self: &Arc<Self>, after: u64, may_wait: bool) -> Lookup {
        let waiting = match self.try_lookup(after, may_wait) {
            Ok(lookup) => return lookup,
            Err(waiting) => waiting,
        };
        match tokio::time::timeout(LOOKUP_WAIT, waiting).await {
            Ok(Ok(lookup)) => lookup,
            // That read is stuck or gone: read for ourselves.
            _ => Lookup::Miss(None),
        }
    }

    /// The answer now, or where it will come.
    fn try_lookup(
        self: &Arc<Self>,
        after: u64,
        may_wait: bool,
    ) -> Result<Lookup, oneshot::Receiver<Lookup>> {
        let mut state = self.state.lock().unwrap();
        let epoch = state.sync_epoch(&self.losses);
        if let Some(hit) = state.held(self.key, after) {
            return Ok(hit);
        }
        // A topic's followers tend to come back together (their edge
        // died): keep what arrives for the next ones.
        if self.name.starts_with(TOPIC_PREFIX) {
            state.recent.start_recording();
        }
        if !state.recent.is_recording() {
            return Ok(Lookup::Miss(None));
        }
        match state.waiting.entry(after) {
            // Someone is reading from there already: wait for it.
            hash_map::Entry::Occupied(mut waiting) if may_wait => {
                let (reply, answer) = oneshot::channel();
                waiting.get_mut().push(reply);
                Err(answer)
            }
            hash_map::Entry::Occupied(_) => Ok(Lookup::Miss(None)),
            hash_map::Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                Ok(Lookup::Miss(Some(Seeder {
                    subject: Some(self.clone()),
                    after,
                    epoch,
                })))
            }
        }
    }

    /// Keeps a history read (unless NATS was lost since the lookup) and
    /// answers the streams waiting for it.
    fn seed(&self, after: u64, read: Option<Vec<(u64, Bytes)>>, epoch: u64) {
        let mut state = self.state.lock().unwrap();
        if let Some(read) = read
            && state.sync_epoch(&self.losses) == epoch
        {
            state.recent.seed(after, read);
        }
        for reply in state.waiting.remove(&after).unwrap_or_default() {
            let _ = reply.send(state.held(self.key, after).unwrap_or(Lookup::Miss(None)));
        }
    }
}

impl State {
    /// The events after `after`, if all are held.
    fn held(&self, key: u32, after: u64) -> Option<Lookup> {
        let events = self.recent.after(after)?;
        let deliveries = events
            .into_iter()
            .map(|(seq, frame)| Delivery {
                frame,
                position: Some((key, seq)),
            })
            .collect();
        Some(Lookup::Hit(deliveries))
    }

    /// The current loss count; what `recent` holds is dropped when it
    /// changed, since live events may have been missed.
    fn sync_epoch(&mut self, losses: &watch::Receiver<u64>) -> u64 {
        let now = *losses.borrow();
        if now != self.epoch {
            self.recent.clear();
            self.epoch = now;
        }
        now
    }
}

/// Gives a history read back to its subject, whose other streams resuming
/// from the same place wait for it; dropped unused, it lets them read for
/// themselves.
pub struct Seeder {
    /// Taken when the result is given.
    subject: Option<Arc<Subject>>,
    after: u64,
    /// The loss count when the reader looked up.
    epoch: u64,
}

impl Seeder {
    /// `read`: every event after the looked-up cursor, in order.
    pub fn seed(mut self, read: Vec<(u64, Bytes)>) {
        self.give(Some(read));
    }

    fn give(&mut self, read: Option<Vec<(u64, Bytes)>>) {
        if let Some(subject) = self.subject.take() {
            subject.seed(self.after, read, self.epoch);
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
            .field("subject", &self.subject.as_ref().map(|s| &s.name))
            .field("after", &self.after)
            .finish()
    }
}

/// The stream sequence JetStream's RePublish put on a persisted event.
fn sequence(message: &async_nats::Message) -> Option<u64> {
    let headers = message.headers.as_ref()?;
    headers.get(SEQUENCE_HEADER)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CloseReason;
    use crate::queue;

    const TOPIC: &str = "herald.t.news";
    const USER: &str = "herald.u.alice";

    fn subject(name: &str) -> (Arc<Subject>, watch::Sender<u64>) {
        let (losses, watcher) = watch::channel(0);
        (Subject::new(name, watcher), losses)
    }

    /// Joins a stream with a queue of `capacity`; returns its end.
    fn join(
        subject: &Subject,
        id: ConnId,
        capacity: usize,
    ) -> (queue::Receiver<Delivery>, Arc<Signal>) {
        let (queue, inbox) = queue::bounded(capacity);
        let signal = Signal::new(None);
        let member = Member {
            queue,
            signal: signal.clone(),
        };
        subject.join(id, member);
        (inbox, signal)
    }

    fn read(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Bytes)> {
        seqs.map(|seq| (seq, Bytes::from(format!("data: {seq}\n\n"))))
            .collect()
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

    fn persisted(seq: u64, data: &str) -> async_nats::Message {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SEQUENCE_HEADER, seq.to_string().as_str());
        async_nats::Message {
            subject: TOPIC.into(),
            reply: None,
            payload: Bytes::from(data.to_owned()),
            headers: Some(headers),
            status: None,
            description: None,
            length: data.len(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streams_resuming_from_one_place_share_one_read() {
        let (topic, _losses) = subject(TOPIC);
        let _streams = [join(&topic, 1, 8), join(&topic, 2, 8)];
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
        let _stream = join(&user, 1, 8);
        assert!(matches!(user.lookup(7, true).await, Lookup::Miss(None)));
        let _tab = join(&user, 2, 8);
        assert!(matches!(user.lookup(7, true).await, Lookup::Miss(Some(_))));
    }

    #[tokio::test]
    async fn an_event_is_framed_once_for_every_stream_and_kept_when_shared() {
        let (topic, _losses) = subject(TOPIC);
        let (mut first, _) = join(&topic, 1, 8);
        let (mut second, _) = join(&topic, 2, 8);
        topic.deliver(&persisted(8, "hello"), &Metrics::default());
        let (a, b) = (first.try_recv().unwrap(), second.try_recv().unwrap());
        assert_eq!(a.frame, "data: hello\n\n");
        assert_eq!(a.frame.as_ptr(), b.frame.as_ptr(), "one copy shared");
        assert_eq!(a.position, Some((herald_domain::cursor::key(TOPIC), 8)));
        topic.deliver(&persisted(9, "again"), &Metrics::default());
        // Complete from the first live event on: a client that got it
        // resumes from memory.
        assert_eq!(seqs(topic.lookup(8, true).await), [9]);
    }

    #[tokio::test]
    async fn a_stream_whose_queue_is_full_is_closed_and_dropped() {
        let (topic, _losses) = subject(TOPIC);
        let (_slow, signal) = join(&topic, 1, 1);
        let (mut quick, _) = join(&topic, 2, 8);
        let metrics = Metrics::default();
        for seq in 1..=3 {
            topic.deliver(&persisted(seq, "x"), &metrics);
        }
        assert_eq!(signal.reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(metrics.slow_consumer_closes.get(), 1, "counted once");
        assert_eq!(std::iter::from_fn(|| quick.try_recv()).count(), 3);
        assert!(!topic.leave(1), "the quick stream still follows");
        assert!(topic.leave(2), "none left");
    }
}
