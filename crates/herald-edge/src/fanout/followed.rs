//! One subject followed on this node: the streams that follow it, the
//! order of its live events (a gap is filled from history before the next
//! event goes out: see `gaps`), and what it keeps for streams resuming it
//! (their shared reads: see `sharing`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use herald_core::telemetry;
use herald_domain::subject::TOPIC_PREFIX;
use herald_nats::envelope::Envelope;
use herald_nats::history::{LAST_SEQUENCE_HEADER, SEQUENCE_HEADER};
use herald_subscriptions::Source;
use tokio::sync::watch;

use crate::fanout::delivery::{ConnId, Delivery, Member, Members, hand_out};
use crate::fanout::fill::{FillError, Filled, Filler};
use crate::fanout::gaps::{Event, Fill, Gaps, Next};
use crate::fanout::signal::Signal;
use crate::metrics::{CloseReason, GapOutcome, Metrics};
use crate::resume::recent::Recent;
use crate::resume::sharing::{self, Keeper, Lookup, Seeder, Turn, Waiting};
use crate::sse;

/// One subject's members and recent events.
pub struct Followed {
    name: Box<str>,
    /// The subject's cursor key.
    key: u32,
    /// Whether the NATS server is known to have the subscription.
    confirmed: AtomicBool,
    /// Whether the NATS server refused it: nothing will come.
    refused: AtomicBool,
    /// Counts NATS losses: what `recent` holds is void after one.
    losses: watch::Receiver<u64>,
    /// Reads what the live path missed.
    filler: Filler,
    state: Mutex<State>,
}

struct State {
    /// Streams that joined and have not left; slow consumers dropped from
    /// `members` still count until they leave.
    refs: usize,
    members: Members,
    recent: Recent,
    /// Streams waiting for a history read under way, by where it starts.
    waiting: Waiting,
    /// The loss count that `recent` and `newest` are good for.
    epoch: u64,
    /// The highest sequence stored on the subject that this node knows of
    /// (0: none), from live events and reads; see [`Followed::newest`].
    newest: u64,
    /// The last sequence handed on live, and what waits while a gap is
    /// filled; while the NATS subscriptions move between servers, an
    /// event may come twice, and this drops the second.
    gaps: Gaps<Delivery>,
    /// Whether `newest` is the subject's newest: a read after subscribing
    /// said so, and no live event can have been missed since.
    newest_known: bool,
}

impl Followed {
    pub fn new(name: &str, losses: watch::Receiver<u64>, filler: Filler) -> Arc<Self> {
        let epoch = *losses.borrow();
        Arc::new(Self {
            name: name.into(),
            key: herald_domain::cursor::key(name),
            confirmed: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            losses,
            filler,
            state: Mutex::new(State {
                refs: 0,
                members: Members::default(),
                recent: Recent::default(),
                waiting: Waiting::default(),
                epoch,
                newest: 0,
                gaps: Gaps::default(),
                newest_known: false,
            }),
        })
    }

    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    pub fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    pub fn refuse(&self) {
        self.refused.store(true, Ordering::Release);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sequence of the subject's newest stored event (0: none), if
    /// this node knows it: a stream joining now starts there without
    /// reading history (see `starts`).
    pub fn newest(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap();
        state.sync_epoch(&self.losses);
        state.newest_known.then_some(state.newest)
    }

    /// `newest`, read after the subscription was confirmed while the loss
    /// count was `epoch`; live events keep it current from then on, and
    /// the next one must follow it (or what it skipped is read).
    pub fn learn_newest(&self, newest: u64, epoch: u64) {
        let mut state = self.state.lock().unwrap();
        if state.sync_epoch(&self.losses) == epoch {
            state.newest = state.newest.max(newest);
            state.newest_known = true;
            state.gaps.learn(newest);
        }
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
        state.members.remove(id);
        state.refs == 0
    }

    /// Its streams, as the fan-out holds them (slow consumers dropped).
    pub fn members(&self) -> Vec<(ConnId, Member)> {
        let state = self.state.lock().unwrap();
        let members = state.members.iter();
        members.map(|(id, m)| (id, m.clone())).collect()
    }

    /// Whether stream `id` follows this subject.
    pub fn has_member(&self, id: ConnId) -> bool {
        self.state.lock().unwrap().members.contains(id)
    }

    /// How many streams follow it.
    pub fn streams(&self) -> usize {
        self.state.lock().unwrap().refs
    }

    /// Its streams' signals, each once however many subjects it follows.
    pub fn signals(&self, into: &mut HashMap<ConnId, Arc<Signal>>) {
        let state = self.state.lock().unwrap();
        for (id, member) in state.members.iter() {
            into.entry(id).or_insert_with(|| member.signal.clone());
        }
    }

    /// Frames a live event once and hands the same bytes to every member.
    /// A persisted event whose predecessor this node did not get waits
    /// while the missed ones are read from history (see `gaps`); an
    /// ephemeral one never waits (at most once, and in no order with
    /// persisted ones). While the subscriptions move between NATS servers
    /// (`source` is not `Only`), a persisted event already handed on is
    /// dropped by its sequence, and an ephemeral one from the server being
    /// left is dropped.
    pub fn deliver(
        self: &Arc<Self>,
        message: &async_nats::Message,
        source: Source,
        metrics: &Metrics,
    ) {
        let seq = sequence(message, SEQUENCE_HEADER);
        if seq.is_none() && source == Source::Predecessor {
            return;
        }
        let envelope = Envelope::from_message(message);
        let delivery = Delivery {
            frame: sse::event(envelope.event.as_deref(), &envelope.data),
            position: seq.map(|seq| (self.key, seq)),
        };
        let mut state = self.state.lock().unwrap();
        let delivery = match seq {
            None => delivery,
            Some(seq) => {
                state.sync_epoch(&self.losses);
                let event = Event {
                    seq,
                    prev: sequence(message, LAST_SEQUENCE_HEADER),
                    repeat: source != Source::Only,
                    bytes: delivery.frame.len(),
                    item: delivery,
                };
                match state.gaps.live(event) {
                    Next::Deliver(delivery) => delivery,
                    Next::Drop | Next::Held => return,
                    Next::Fill(fill) => {
                        drop(state);
                        self.fill(fill, metrics);
                        return;
                    }
                    Next::GiveUp => {
                        let why = "more events came meanwhile than a fill holds";
                        self.give_up(&mut state, GapOutcome::TooLarge, &why, metrics);
                        return;
                    }
                }
            }
        };
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
        state.hand_out(&delivery, metrics);
        drop(state);
        if let Some(age) = herald_nats::envelope::age(message.headers.as_ref()) {
            metrics.delivery_latency.observe(age.as_secs_f64());
        }
    }

    /// Reads whatever was stored after the last event handed on (see
    /// [`Gaps::settle`]), a while after the subscription was confirmed.
    pub fn settle(self: &Arc<Self>, metrics: &Metrics) {
        let mut state = self.state.lock().unwrap();
        state.sync_epoch(&self.losses);
        if let Some(fill) = state.gaps.settle() {
            drop(state);
            self.fill(fill, metrics);
        }
    }

    /// Reads what the live path missed in a task: never on the NATS
    /// connection's reader, which must not wait.
    fn fill(self: &Arc<Self>, fill: Fill, metrics: &Metrics) {
        let filled: Arc<dyn Filled> = self.clone();
        self.filler.start(filled, fill, metrics.clone());
    }

    /// Ends every stream of the subject: a gap could not be filled, and
    /// their clients resume from their cursors rather than skip events.
    fn give_up(
        &self,
        state: &mut State,
        outcome: GapOutcome,
        why: &dyn std::fmt::Display,
        metrics: &Metrics,
    ) {
        metrics.gap(outcome);
        // A stream joining now must read where it starts: what the node
        // knows may lie before events it never got.
        state.newest_known = false;
        tracing::warn!(
            subject = %self.name,
            streams = state.members.len(),
            %why,
            "events missed on the live path cannot be filled; ending the subject's streams"
        );
        for (_, member) in state.members.iter() {
            member.signal.close(CloseReason::ServerError);
        }
    }

    /// The events after `after`, from memory if held; else, with
    /// `may_wait`, another stream's history read from the same place.
    /// Call after joining, so that live events from then on reach the
    /// stream.
    pub async fn lookup(self: &Arc<Self>, after: u64, may_wait: bool) -> Lookup {
        match self.try_lookup(after, may_wait) {
            Ok(lookup) => lookup,
            Err(answer) => sharing::wait(answer).await,
        }
    }

    /// The answer now, or where it will come.
    fn try_lookup(
        self: &Arc<Self>,
        after: u64,
        may_wait: bool,
    ) -> Result<Lookup, tokio::sync::oneshot::Receiver<Lookup>> {
        let mut state = self.state.lock().unwrap();
        let epoch = state.sync_epoch(&self.losses);
        if let Some(hit) = held(&state.recent, self.key, after) {
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
        match state.waiting.turn(after, may_wait) {
            Turn::Wait(answer) => Err(answer),
            Turn::Alone => Ok(Lookup::Miss(None)),
            Turn::Read => Ok(Lookup::Miss(Some(Seeder::new(self.clone(), after, epoch)))),
        }
    }
}

impl Keeper for Followed {
    /// Keeps a history read (unless NATS was lost since the lookup) and
    /// answers the streams waiting for it.
    fn keep(&self, after: u64, read: Option<Vec<(u64, Bytes)>>, epoch: u64) {
        let mut state = self.state.lock().unwrap();
        if let Some(read) = read
            && state.sync_epoch(&self.losses) == epoch
        {
            state.recent.seed(after, read);
        }
        let State {
            waiting, recent, ..
        } = &mut *state;
        waiting.answer(after, || {
            held(recent, self.key, after).unwrap_or(Lookup::Miss(None))
        });
    }

    fn name(&self) -> &str {
        Followed::name(self)
    }
}

impl Filled for Followed {
    fn name(&self) -> &str {
        Followed::name(self)
    }

    /// Hands on the events read and those held meanwhile, in order; or, if
    /// the read failed, ends the subject's streams. An answer to a fill
    /// forgotten since (a NATS loss) changes nothing.
    fn filled(
        &self,
        id: u64,
        read: Result<Vec<(u64, Bytes)>, FillError>,
        metrics: &Metrics,
    ) -> Option<Fill> {
        let mut state = self.state.lock().unwrap();
        state.sync_epoch(&self.losses);
        let read = match read {
            Ok(read) => read,
            // A settle read is only a check, made while NATS may be
            // moving (a rolling restart): one that fails ends nothing,
            // and the subject's next event still shows a gap.
            Err(FillError::Read(_) | FillError::TimedOut) if state.gaps.is_settle(id) => {
                tracing::debug!(subject = %self.name, "a settle read failed; skipped");
                Vec::new()
            }
            Err(e) => {
                if state.gaps.failed(id) {
                    let outcome = match e {
                        FillError::TooLarge => GapOutcome::TooLarge,
                        FillError::Read(_) | FillError::TimedOut => GapOutcome::ReadFailed,
                    };
                    self.give_up(&mut state, outcome, &e, metrics);
                }
                return None;
            }
        };
        let read = read.into_iter().map(|(seq, frame)| {
            let position = Some((self.key, seq));
            (seq, Delivery { frame, position })
        });
        let released = state.gaps.filled(id, read.collect())?;
        metrics.gap(GapOutcome::Filled);
        for delivery in &released.events {
            state.hand_out(delivery, metrics);
        }
        released.next
    }
}

impl State {
    /// Hands `delivery` to every member, and keeps it for resumes.
    fn hand_out(&mut self, delivery: &Delivery, metrics: &Metrics) {
        if let Some((_, seq)) = delivery.position {
            self.newest = self.newest.max(seq);
            self.recent.record(seq, &delivery.frame);
        }
        hand_out(&mut self.members, delivery, metrics);
    }

    /// The current loss count; what `recent` holds is dropped when it
    /// changed, since live events may have been missed.
    fn sync_epoch(&mut self, losses: &watch::Receiver<u64>) -> u64 {
        let now = *losses.borrow();
        if now != self.epoch {
            self.recent.clear();
            self.newest_known = false;
            self.gaps.forget();
            self.epoch = now;
        }
        now
    }
}

/// The events after `after`, if all are held.
fn held(recent: &Recent, key: u32, after: u64) -> Option<Lookup> {
    let events = recent.after(after)?;
    let deliveries = events
        .into_iter()
        .map(|(seq, frame)| Delivery {
            frame,
            position: Some((key, seq)),
        })
        .collect();
    Some(Lookup::Hit(deliveries))
}

/// A sequence JetStream's RePublish put on a persisted event: its own
/// (`SEQUENCE_HEADER`), or its subject's previous one (`LAST_SEQUENCE_HEADER`).
fn sequence(message: &async_nats::Message, header: &str) -> Option<u64> {
    let headers = message.headers.as_ref()?;
    headers.get(header)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fanout::fill::FILL_TIMEOUT;
    use crate::fanout::fill::fake::Stored;
    use crate::fanout::queue;
    use crate::resume::sharing::{Kept, LOOKUP_WAIT, hit_sequences};

    const TOPIC: &str = "herald.t.news";
    const USER: &str = "herald.u.alice";

    fn subject(name: &str) -> (Arc<Followed>, watch::Sender<u64>) {
        subject_reading(name, Stored::stalled())
    }

    /// A subject whose missed events are read from `stored`.
    fn subject_reading(name: &str, stored: Arc<Stored>) -> (Arc<Followed>, watch::Sender<u64>) {
        let (losses, watcher) = watch::channel(0);
        (Followed::new(name, watcher, Filler::new(stored)), losses)
    }

    /// Joins a stream with a queue of `capacity`; returns its end.
    fn join(
        subject: &Followed,
        id: ConnId,
        capacity: usize,
    ) -> (queue::Receiver<Delivery>, Arc<Signal>) {
        let (queue, inbox) = queue::bounded(capacity);
        let signal = Signal::new(None, 0);
        let member = Member {
            queue,
            signal: signal.clone(),
        };
        subject.join(id, member);
        (inbox, signal)
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

    #[tokio::test]
    async fn an_event_is_framed_once_for_every_stream_and_kept_when_shared() {
        let (topic, _losses) = subject(TOPIC);
        let (mut first, _) = join(&topic, 1, 8);
        let (mut second, _) = join(&topic, 2, 8);
        topic.deliver(&persisted(8, "hello"), Source::Only, &Metrics::default());
        let (a, b) = (first.try_recv().unwrap(), second.try_recv().unwrap());
        assert_eq!(a.frame, "data: hello\n\n");
        assert_eq!(a.frame.as_ptr(), b.frame.as_ptr(), "one copy shared");
        assert_eq!(a.position, Some((herald_domain::cursor::key(TOPIC), 8)));
        topic.deliver(&persisted(9, "again"), Source::Only, &Metrics::default());
        // Complete from the first live event on: a client that got it
        // resumes from memory.
        assert_eq!(hit_sequences(topic.lookup(8, true).await), [9]);
    }

    fn ephemeral(data: &str) -> async_nats::Message {
        async_nats::Message {
            headers: None,
            ..persisted(0, data)
        }
    }

    #[tokio::test]
    async fn while_subscriptions_move_an_event_that_comes_twice_is_handed_on_once() {
        let (topic, _losses) = subject(TOPIC);
        let (mut stream, _) = join(&topic, 1, 16);
        let metrics = Metrics::default();
        // Before the move, and on the server left before the new one
        // confirmed: the old connection is the only one.
        topic.deliver(&persisted(1, "a"), Source::Only, &metrics);
        topic.deliver(&persisted(2, "b"), Source::Only, &metrics);
        // Moved: both connections carry what follows for a moment.
        topic.deliver(&persisted(2, "b"), Source::Successor, &metrics);
        topic.deliver(&persisted(3, "c"), Source::Successor, &metrics);
        topic.deliver(&persisted(3, "c"), Source::Predecessor, &metrics);
        topic.deliver(&ephemeral("live"), Source::Successor, &metrics);
        topic.deliver(&ephemeral("late"), Source::Predecessor, &metrics);
        topic.deliver(&persisted(4, "d"), Source::Predecessor, &metrics);
        topic.deliver(&persisted(4, "d"), Source::Successor, &metrics);
        let got: Vec<Bytes> = std::iter::from_fn(|| stream.try_recv())
            .map(|d| d.frame)
            .collect();
        let want = ["a", "b", "c", "live", "d"].map(|d| Bytes::from(format!("data: {d}\n\n")));
        assert_eq!(got, want);
        // Alone again, sequences are not second-guessed (a history stream
        // may have been recreated).
        topic.deliver(&persisted(1, "anew"), Source::Only, &metrics);
        assert_eq!(stream.try_recv().unwrap().frame, "data: anew\n\n");
    }

    /// Persisted event `seq`, stored after the subject's event `prev`.
    fn after(prev: u64, seq: u64) -> async_nats::Message {
        let mut message = persisted(seq, &seq.to_string());
        let headers = message.headers.as_mut().unwrap();
        headers.insert(LAST_SEQUENCE_HEADER, prev.to_string().as_str());
        message
    }

    /// The sequences queued for a stream so far.
    fn queued(stream: &mut queue::Receiver<Delivery>) -> Vec<u64> {
        std::iter::from_fn(|| stream.try_recv())
            .filter_map(|d| d.position)
            .map(|(_, seq)| seq)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_is_filled_from_history_before_later_events_go_out() {
        let stored = Stored::holding(TOPIC, [1, 2, 3, 6]);
        let (topic, _losses) = subject_reading(TOPIC, stored.clone());
        let (mut first, _) = join(&topic, 1, 16);
        let (mut second, _) = join(&topic, 2, 16);
        let metrics = Metrics::default();
        topic.deliver(&after(0, 1), Source::Only, &metrics);
        // 2 and 3 never came live: 4 names 3 as its predecessor.
        topic.deliver(&after(3, 4), Source::Only, &metrics);
        topic.deliver(&after(4, 5), Source::Only, &metrics);
        assert_eq!(queued(&mut first), [1], "later events wait for the read");
        assert_eq!(first.recv().await.unwrap().position.unwrap().1, 2);
        assert_eq!(queued(&mut first), [3, 4, 5]);
        assert_eq!(queued(&mut second), [1, 2, 3, 4, 5]);
        assert_eq!(
            *stored.reads.lock().unwrap(),
            [(TOPIC.to_owned(), 2), (TOPIC.to_owned(), 3)]
        );
        assert_eq!(metrics.gaps(GapOutcome::Filled), 1);
        assert_eq!(metrics.gap_events_read.get(), 2);
        // Direct again; and the events kept for resumes have no hole.
        topic.deliver(&after(5, 6), Source::Only, &metrics);
        assert_eq!(queued(&mut first), [6]);
        assert_eq!(hit_sequences(topic.lookup(1, true).await), [2, 3, 4, 5, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newest_learned_after_subscribing_is_where_live_events_must_follow() {
        let stored = Stored::holding(TOPIC, [5, 6]);
        let (topic, _losses) = subject_reading(TOPIC, stored);
        let (mut stream, _) = join(&topic, 1, 16);
        let metrics = Metrics::default();
        // The stream started at 5; 6 was stored before NATS routed the
        // subscription to the stream leader's server.
        topic.learn_newest(5, 0);
        topic.deliver(&after(6, 7), Source::Only, &metrics);
        assert_eq!(stream.recv().await.unwrap().position.unwrap().1, 6);
        assert_eq!(queued(&mut stream), [7]);
        // Without a last sequence the first event is taken as it comes.
        let (user, _losses) = subject(USER);
        let (mut stream, _) = join(&user, 1, 16);
        user.deliver(&after(6, 7), Source::Only, &metrics);
        assert_eq!(queued(&mut stream), [7]);
    }

    /// A settle read (a check made a second after subscribing) that
    /// history does not answer ends no stream: the next event goes out.
    #[tokio::test(start_paused = true)]
    async fn a_settle_read_that_fails_ends_nothing() {
        let (topic, _losses) = subject(TOPIC);
        let (mut stream, signal) = join(&topic, 1, 16);
        let metrics = Metrics::default();
        topic.deliver(&after(0, 1), Source::Only, &metrics);
        topic.settle(&metrics);
        tokio::time::sleep(FILL_TIMEOUT + Duration::from_secs(1)).await;
        assert_eq!(signal.reason(), None, "still open");
        topic.deliver(&after(1, 2), Source::Only, &metrics);
        assert_eq!(queued(&mut stream), [1, 2]);
        assert_eq!(metrics.gaps(GapOutcome::ReadFailed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fill_history_does_not_answer_ends_the_streams_after_its_timeout() {
        let (topic, _losses) = subject(TOPIC);
        let (mut stream, signal) = join(&topic, 1, 16);
        let metrics = Metrics::default();
        topic.deliver(&after(0, 1), Source::Only, &metrics);
        topic.deliver(&after(2, 3), Source::Only, &metrics);
        let started = tokio::time::Instant::now();
        signal.closed().await;
        assert_eq!(started.elapsed(), FILL_TIMEOUT);
        assert_eq!(signal.reason(), Some(CloseReason::ServerError));
        assert_eq!(queued(&mut stream), [1], "nothing skipped");
        assert_eq!(metrics.gaps(GapOutcome::ReadFailed), 1);
        // A stream joining now reads where it starts.
        assert_eq!(topic.newest(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn more_held_than_a_fill_holds_ends_the_streams_at_once() {
        let (topic, _losses) = subject(TOPIC);
        let (mut stream, signal) = join(&topic, 1, 1024);
        let metrics = Metrics::default();
        topic.deliver(&after(0, 1), Source::Only, &metrics);
        let last = 3 + crate::fanout::gaps::MAX_HELD as u64;
        for seq in 3..=last {
            topic.deliver(&after(seq - 1, seq), Source::Only, &metrics);
        }
        assert_eq!(signal.reason(), Some(CloseReason::ServerError));
        assert_eq!(metrics.gaps(GapOutcome::TooLarge), 1);
        assert_eq!(queued(&mut stream), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fill_answered_after_a_nats_loss_hands_nothing_on() {
        let stored = Stored::holding(TOPIC, [2]);
        let (topic, losses) = subject_reading(TOPIC, stored.clone());
        let (mut stream, _) = join(&topic, 1, 16);
        let metrics = Metrics::default();
        topic.deliver(&after(0, 1), Source::Only, &metrics);
        topic.deliver(&after(2, 3), Source::Only, &metrics);
        // The loss comes before the fill's task has run.
        losses.send_modify(|n| *n += 1);
        tokio::time::sleep(FILL_TIMEOUT * 2).await;
        assert_eq!(stored.reads.lock().unwrap().len(), 1, "it did read");
        assert_eq!(queued(&mut stream), [1]);
        assert_eq!(metrics.gaps(GapOutcome::Filled), 0);
    }

    #[tokio::test]
    async fn a_stream_whose_queue_is_full_is_closed_and_dropped() {
        let (topic, _losses) = subject(TOPIC);
        let (_slow, signal) = join(&topic, 1, 1);
        let (mut quick, _) = join(&topic, 2, 8);
        let metrics = Metrics::default();
        for seq in 1..=3 {
            topic.deliver(&persisted(seq, "x"), Source::Only, &metrics);
        }
        assert_eq!(signal.reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(metrics.slow_consumer_closes.get(), 1, "counted once");
        assert_eq!(std::iter::from_fn(|| quick.try_recv()).count(), 3);
        assert!(!topic.leave(1), "the quick stream still follows");
        assert!(topic.leave(2), "none left");
    }

    fn frame(seq: u64) -> Bytes {
        Bytes::from(format!("data: {seq}\n\n"))
    }

    fn read(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Bytes)> {
        seqs.map(|seq| (seq, frame(seq))).collect()
    }

    /// `TOPIC` with two streams, so that it keeps events.
    fn shared_subject() -> Arc<Followed> {
        let (subject, _) = subject(TOPIC);
        for id in 0..2 {
            let _ = join(&subject, id, 8);
        }
        subject
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
        assert_eq!(hit_sequences(waiter.await), [8, 9, 10]);
        assert_eq!(
            hit_sequences(topic.lookup(8, true).await),
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

    #[tokio::test(start_paused = true)]
    async fn a_read_the_edge_can_hold_serves_the_streams_waiting_for_it() {
        let subject = shared_subject();
        let Lookup::Miss(Some(seeder)) = subject.lookup(7, true).await else {
            panic!("the first resumer reads for the others");
        };
        let mut waiter = std::pin::pin!(subject.lookup(7, true));
        assert!(futures::poll!(&mut waiter).is_pending());
        let mut kept = Kept::new(Some(seeder));
        let last = 7 + crate::resume::recent::MAX_EVENTS as u64;
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
}
