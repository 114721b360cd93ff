//! Fan-out: one NATS subscription per distinct user or topic on this node,
//! shared by all local streams that follow it.
//!
//! Each subject has one task that owns its subscription and its members, so
//! delivery takes no lock. The registry (a map of subject → task handle and
//! reference count) is touched only on connect and disconnect; when the
//! last member leaves, the handle is dropped, the task ends, and dropping
//! the subscription unsubscribes, so NATS interest follows real streams.
//!
//! A task also keeps its subject's newest persisted events ([`Recent`])
//! when several streams share it or a topic follower resumes, so that the
//! next streams resuming from the same place need not read history.

use std::collections::{HashMap, hash_map};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use herald_core::envelope::Envelope;
use herald_core::history::SEQUENCE_HEADER;
use herald_core::nats::{Losses, SharedRoundTrips};
use herald_core::subject::TOPIC_PREFIX;
use herald_core::telemetry;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{CloseReason, Metrics};
use crate::queue::{self, TrySendError};
use crate::recent::Recent;
use crate::session::Signal;
use crate::sse;

/// How long a resuming stream waits for another's history read.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// Identifies one stream on this node.
pub type ConnId = u64;

/// One event on its way to a stream: framed once, shared by all.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Bytes,
    /// The subject's cursor key and the event's stream sequence, for
    /// persisted events; `None` for ephemeral ones (no id, no replay).
    pub position: Option<(u32, u64)>,
}

/// What a subject task holds for one stream.
#[derive(Debug, Clone)]
pub struct Member {
    /// Bounded: when full, the stream is closed as a slow consumer.
    pub queue: queue::Sender<Delivery>,
    pub signal: Arc<Signal>,
}

/// The subscription could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot subscribe to {0} on NATS")]
pub struct SubscribeError(String);

enum Command {
    Join(ConnId, Member),
    Leave(ConnId),
    Lookup {
        after: u64,
        /// Whether the stream may wait for another's read (see `lookup`).
        may_wait: bool,
        reply: oneshot::Sender<Lookup>,
    },
    /// A history read's result; `None` if the reader gave up.
    Seed {
        after: u64,
        read: Option<Vec<(u64, Bytes)>>,
        /// The NATS loss count when the reader looked up.
        epoch: u64,
    },
}

/// What the node already holds for a stream resuming a subject.
pub enum Lookup {
    /// Every event after the cursor, from memory.
    Hit(Vec<Delivery>),
    /// History must be read; hand the result to the seeder, if any, so
    /// that the next streams resuming from there are served from memory.
    Miss(Option<Seeder>),
}

/// Gives a history read back to the subject's task, whose other streams
/// resuming from the same place wait for it; dropped unused, it lets them
/// read for themselves.
#[derive(Debug)]
pub struct Seeder {
    /// Taken when the result is sent.
    commands: Option<mpsc::UnboundedSender<Command>>,
    after: u64,
    epoch: u64,
}

impl Seeder {
    /// `read`: every event after the looked-up cursor, in order.
    pub fn seed(mut self, read: Vec<(u64, Bytes)>) {
        self.send(Some(read));
    }

    fn send(&mut self, read: Option<Vec<(u64, Bytes)>>) {
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Seed {
                after: self.after,
                read,
                epoch: self.epoch,
            });
        }
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.send(None);
    }
}

struct Entry {
    /// Streams on this node following the subject.
    refs: usize,
    commands: mpsc::UnboundedSender<Command>,
    /// `Some(true)` once subscribed, `Some(false)` if that failed.
    ready: watch::Receiver<Option<bool>>,
}

/// The registry of subjects followed on this node.
pub struct Fanout {
    nats: async_nats::Client,
    /// New subscriptions wait for these before their streams open.
    round_trips: SharedRoundTrips,
    losses: Losses,
    subjects: Mutex<HashMap<String, Entry>>,
    metrics: Metrics,
}

impl Fanout {
    pub fn new(nats: async_nats::Client, losses: Losses, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            round_trips: SharedRoundTrips::new(nats.clone()),
            nats,
            losses,
            subjects: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Adds a stream to `subject`, subscribing if it is the first; returns
    /// once the NATS server has the subscription. Pair every call, even a
    /// failed one, with [`Fanout::leave`].
    pub async fn join(
        &self,
        subject: &str,
        id: ConnId,
        member: Member,
    ) -> Result<(), SubscribeError> {
        let mut ready = {
            let mut subjects = self.subjects.lock().unwrap();
            let entry = subjects
                .entry(subject.to_owned())
                .or_insert_with(|| self.spawn(subject));
            if entry.commands.is_closed() {
                // The task ended (its subscription closed); start a new one.
                let fresh = self.spawn(subject);
                entry.commands = fresh.commands;
                entry.ready = fresh.ready;
            }
            entry.refs += 1;
            let _ = entry.commands.send(Command::Join(id, member));
            entry.ready.clone()
        };
        match ready.wait_for(Option::is_some).await.map(|r| *r) {
            Ok(Some(true)) => Ok(()),
            _ => Err(SubscribeError(subject.to_owned())),
        }
    }

    /// Removes a stream from `subject`, unsubscribing after the last one.
    pub fn leave(&self, subject: &str, id: ConnId) {
        let mut subjects = self.subjects.lock().unwrap();
        let Some(entry) = subjects.get_mut(subject) else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            subjects.remove(subject); // drops the handle: the task ends
        } else {
            let _ = entry.commands.send(Command::Leave(id));
        }
    }

    /// Asks `subject`'s task for the events after `after`; call after
    /// joining, so that live events from then on reach the stream. With
    /// `may_wait`, waits for another stream's history read from the same
    /// place. A stream already holding a [`Seeder`] must not wait: two
    /// streams each holding the read the other waits for would stall.
    pub async fn lookup(&self, subject: &str, after: u64, may_wait: bool) -> Lookup {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .subjects
            .lock()
            .unwrap()
            .get(subject)
            .is_some_and(|entry| {
                entry
                    .commands
                    .send(Command::Lookup {
                        after,
                        may_wait,
                        reply,
                    })
                    .is_ok()
            });
        if !sent {
            return Lookup::Miss(None);
        }
        match tokio::time::timeout(LOOKUP_WAIT, answer).await {
            Ok(Ok(lookup)) => lookup,
            // That read is stuck or gone: read for ourselves.
            _ => Lookup::Miss(None),
        }
    }

    fn spawn(&self, subject: &str) -> Entry {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(None);
        let task = SubjectTask {
            subject: subject.to_owned(),
            key: herald_core::cursor::key(subject),
            nats: self.nats.clone(),
            round_trips: self.round_trips.clone(),
            commands: commands.downgrade(),
            inbox,
            members: HashMap::new(),
            recent: Recent::default(),
            waiting: HashMap::new(),
            losses: self.losses.clone(),
            epoch: *self.losses.borrow(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(task.run(ready_tx));
        Entry {
            refs: 0,
            commands,
            ready,
        }
    }
}

/// Gives `delivery` to every member: a reference-counted copy into each
/// queue, no lock, no allocation per member. A member whose queue is full
/// is a slow consumer: closed, and dropped from the subject.
pub fn hand_out(members: &mut HashMap<ConnId, Member>, delivery: &Delivery, metrics: &Metrics) {
    members.retain(|_, member| match member.queue.try_send(delivery.clone()) {
        Ok(()) => true,
        Err(TrySendError::Full) => {
            // Counted here, at once: an HTTP/2 stream that stopped reading
            // ends only when its client reads it again or the connection
            // closes (HTTP/1.1 ones are dropped now).
            if member.signal.close(CloseReason::SlowConsumer) {
                metrics.slow_consumer_closes.inc();
            }
            false
        }
        Err(TrySendError::Closed) => false,
    });
}

/// The stream sequence JetStream's RePublish put on a persisted event.
fn sequence(message: &async_nats::Message) -> Option<u64> {
    let headers = message.headers.as_ref()?;
    headers.get(SEQUENCE_HEADER)?.as_str().parse().ok()
}

/// Owns one subject's subscription and members.
struct SubjectTask {
    subject: String,
    /// The subject's cursor key.
    key: u32,
    nats: async_nats::Client,
    round_trips: SharedRoundTrips,
    /// Handed to seeders. Weak, or the task would keep its own inbox open
    /// and never end.
    commands: mpsc::WeakUnboundedSender<Command>,
    inbox: mpsc::UnboundedReceiver<Command>,
    members: HashMap<ConnId, Member>,
    recent: Recent,
    /// Streams waiting for a history read under way, by where it starts.
    waiting: HashMap<u64, Vec<oneshot::Sender<Lookup>>>,
    losses: Losses,
    /// The NATS loss count that `recent` is complete for.
    epoch: u64,
    metrics: Metrics,
}

impl SubjectTask {
    async fn run(mut self, ready: watch::Sender<Option<bool>>) {
        let subscribed = self.nats.subscribe(self.subject.clone()).await;
        // The server must have our interest before the client hears that
        // its stream is open, or an event published meanwhile is missed.
        let flushed = self.round_trips.wait().await;
        let mut subscription = match (subscribed, flushed) {
            (Ok(s), Ok(())) => s,
            (Err(e), _) => return self.fail(&ready, &e),
            (_, Err(e)) => return self.fail(&ready, &e),
        };
        self.metrics.subscriptions.inc();
        let _ = ready.send(Some(true));
        loop {
            tokio::select! {
                biased;
                command = self.inbox.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                message = subscription.next() => match message {
                    Some(message) => self.deliver(&message),
                    None => {
                        tracing::warn!(subject = %self.subject, "NATS subscription ended");
                        self.close_all(CloseReason::ServerError);
                        break;
                    }
                },
            }
        }
        self.metrics.subscriptions.dec();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Join(id, member) => {
                self.members.insert(id, member);
                if self.members.len() > 1 {
                    self.recent.start_recording();
                }
            }
            Command::Leave(id) => {
                self.members.remove(&id);
            }
            Command::Lookup {
                after,
                may_wait,
                reply,
            } => self.lookup(after, may_wait, reply),
            Command::Seed { after, read, epoch } => {
                if let Some(read) = read
                    && self.sync_epoch() == epoch
                {
                    self.recent.seed(after, read);
                }
                for reply in self.waiting.remove(&after).unwrap_or_default() {
                    let _ = reply.send(self.held(after).unwrap_or(Lookup::Miss(None)));
                }
            }
        }
    }

    fn lookup(&mut self, after: u64, may_wait: bool, reply: oneshot::Sender<Lookup>) {
        let epoch = self.sync_epoch();
        if let Some(hit) = self.held(after) {
            let _ = reply.send(hit);
            return;
        }
        // A topic's followers tend to come back together (their edge
        // died): keep what arrives for the next ones.
        if self.subject.starts_with(TOPIC_PREFIX) {
            self.recent.start_recording();
        }
        let commands = self.commands.upgrade();
        if !self.recent.is_recording() || commands.is_none() {
            let _ = reply.send(Lookup::Miss(None));
            return;
        }
        match self.waiting.entry(after) {
            // Someone is reading from there already: wait for it.
            hash_map::Entry::Occupied(mut waiting) if may_wait => waiting.get_mut().push(reply),
            hash_map::Entry::Occupied(_) => {
                let _ = reply.send(Lookup::Miss(None));
            }
            hash_map::Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                let seeder = Seeder {
                    commands,
                    after,
                    epoch,
                };
                let _ = reply.send(Lookup::Miss(Some(seeder)));
            }
        }
    }

    /// The events after `after`, if all are held.
    fn held(&self, after: u64) -> Option<Lookup> {
        let events = self.recent.after(after)?;
        let deliveries = events
            .into_iter()
            .map(|(seq, frame)| Delivery {
                frame,
                position: Some((self.key, seq)),
            })
            .collect();
        Some(Lookup::Hit(deliveries))
    }

    /// The current NATS loss count; what `recent` holds is dropped when it
    /// changed, since live events may have been missed.
    fn sync_epoch(&mut self) -> u64 {
        let now = *self.losses.borrow();
        if now != self.epoch {
            self.recent.clear();
            self.epoch = now;
        }
        now
    }

    fn fail(&self, ready: &watch::Sender<Option<bool>>, error: &dyn std::error::Error) {
        tracing::error!(subject = %self.subject, %error, "cannot subscribe");
        let _ = ready.send(Some(false));
    }

    /// Frames the event once and hands the same bytes to every member.
    fn deliver(&mut self, message: &async_nats::Message) {
        let envelope = Envelope::from_message(message);
        let delivery = Delivery {
            frame: sse::event(envelope.event.as_deref(), &envelope.data),
            position: sequence(message).map(|seq| (self.key, seq)),
        };
        if let Some((_, seq)) = delivery.position
            && self.recent.is_recording()
        {
            self.sync_epoch();
            self.recent.record(seq, &delivery.frame);
        }
        // One span per event and node (not per stream), in the trace the
        // publisher started.
        let span = telemetry::span(|| {
            let span = tracing::info_span!(
                "herald.fanout",
                subject = %self.subject,
                streams = self.members.len()
            );
            telemetry::continue_nats(&span, message.headers.as_ref());
            span
        });
        let _entered = span.enter();
        hand_out(&mut self.members, &delivery, &self.metrics);
        if let Some(age) = herald_core::envelope::age(message.headers.as_ref()) {
            self.metrics.delivery_latency.observe(age.as_secs_f64());
        }
    }

    fn close_all(&mut self, reason: CloseReason) {
        for member in self.members.values() {
            let _ = member.signal.close(reason);
        }
        self.members.clear();
    }
}
