//! Fan-out: one NATS subscription per distinct user or topic on this node,
//! shared by all local streams that follow it.
//!
//! Subscriptions live on one lean connection (herald-subscriptions) whose
//! reader hands each message to `Subjects`, which frames it once and
//! gives it to the subject's streams: an idle subject costs a map entry,
//! not a channel and a task. (`--nats-subscriber async-nats` holds them
//! on async-nats `Subscriber`s instead, to check the lean connection
//! against: see `link`.) The registry is touched on connect and
//! disconnect; when the last stream of a subject leaves, it unsubscribes,
//! so NATS interest follows real streams. A subscription the server
//! refuses fails the joins waiting for it and ends the streams holding
//! it, which their clients retry: no stream stays open and deaf.
//!
//! - `followed`: one subject followed here: its streams, the order of its
//!   live events, what it keeps for streams resuming it.
//! - [`gaps`]: the order of a subject's live events: a missed one is read
//!   from history ([`fill`]) before the next goes out.
//! - [`delivery`]: a framed event and the stream queues it goes into;
//!   [`queue`]: a stream's queue, empty of memory while idle.
//! - [`signal`]: how a stream is told to close.
//! - `link`, `mature`, `collector`: the lean connection or async-nats
//!   `Subscriber`s that hold the subscriptions, and their metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use herald_domain::subject::TOPIC_PREFIX;
use herald_nats::connection::{LossCounter, NatsSecurity};
use herald_subscriptions::{ConnectError, Deliver, Refusal, Sid, Source};

use crate::fanout::delivery::{ConnId, Member};
use crate::fanout::fill::Filler;
use crate::fanout::followed::Followed;
use crate::fanout::signal::Signal;
use crate::metrics::{CloseReason, Metrics};
use crate::resume::sharing::Lookup;

mod collector;
pub mod delivery;
pub mod fill;
mod followed;
pub mod gaps;
mod link;
mod mature;
pub mod queue;
pub mod signal;

pub use collector::SubscriptionsCollector;
use link::Link;
pub use link::{NatsSubscriber, StatsReader};

/// The subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// NATS did not answer (it is away, or slow).
    #[error("cannot subscribe to {0} on NATS")]
    Unavailable(String),
    /// NATS answered no (a permissions rule, a subscription limit).
    #[error("NATS refused the subscription to {0}")]
    Refused(String),
}

/// The registry of subjects followed on this node.
pub struct Fanout {
    subjects: Arc<Subjects>,
    subscriptions: Link,
    /// In a cluster: a new subscription's subject is read again a while
    /// after it is confirmed (see `Followed::settle`).
    settle: bool,
}

/// How long after a subscription is confirmed, in a cluster, its subject
/// is read for an event that interest reached too late for: routes carry
/// a new interest across the cluster within milliseconds.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Subjects by name (for streams) and by subscription (for the reader).
struct Subjects {
    registry: Mutex<Registry>,
    losses: tokio::sync::watch::Receiver<u64>,
    metrics: Metrics,
    /// Reads what a subject's live events skipped.
    filler: Filler,
}

#[derive(Default)]
struct Registry {
    sids: HashMap<Box<str>, Sid>,
    subjects: HashMap<Sid, Arc<Followed>>,
    /// Subjects streams joined after they opened (server-side follows,
    /// see `follows`), by stream: left with the stream's own.
    extras: HashMap<ConnId, Vec<Sid>>,
}

impl Fanout {
    /// Opens the subscription connection with `subscriber`; its losses
    /// count in `losses`, and `filler` reads events its subjects missed;
    /// `settle` in a cluster (see `SETTLE`).
    #[allow(clippy::too_many_arguments)]
    pub async fn connect(
        subscriber: NatsSubscriber,
        urls: &[String],
        security: &NatsSecurity,
        name: &str,
        losses: LossCounter,
        metrics: Metrics,
        filler: Filler,
        settle: bool,
    ) -> Result<Arc<Self>, ConnectError> {
        let subjects = Arc::new(Subjects {
            registry: Mutex::default(),
            losses: losses.subscribe(),
            metrics,
            filler,
        });
        tokio::spawn(close_on_loss(Arc::downgrade(&subjects), losses.subscribe()));
        let deliver = subjects.clone();
        let subscriptions =
            Link::connect(subscriber, urls, security, name, losses, deliver).await?;
        Ok(Arc::new(Self {
            subjects,
            subscriptions,
            settle,
        }))
    }

    /// Reads the subscription connection's figures, for metrics.
    pub fn stats_reader(&self) -> StatsReader {
        self.subscriptions.stats_reader()
    }

    /// Adds a stream to `subject`, subscribing if it is the first; returns
    /// the subscription to [`Fanout::confirm`], and to [`Fanout::leave`]
    /// whatever happens next.
    pub fn join(&self, subject: &str, id: ConnId, member: Member) -> Sid {
        let mut registry = self.subjects.registry.lock().unwrap();
        let sid = match registry.sids.get(subject) {
            Some(sid) => *sid,
            None => self.subscribe(&mut registry, subject),
        };
        registry.subjects[&sid].join(id, member);
        sid
    }

    /// Returns once the NATS server has the subscription `sid`.
    pub async fn confirm(&self, sid: Sid) -> Result<(), SubscribeError> {
        let Some(joined) = self.subjects.get(sid) else {
            // Refused (and forgotten) since the join.
            return Err(SubscribeError::Refused(String::new()));
        };
        if joined.is_confirmed() {
            return Ok(());
        }
        // The server must have our interest before the client hears that
        // its stream is open, or an event published meanwhile is missed.
        // A refusal comes before the answer to this round trip.
        match self.subscriptions.round_trip().await {
            Ok(()) if joined.is_refused() => Err(SubscribeError::Refused(joined.name().into())),
            Ok(()) => {
                joined.confirm();
                if self.settle {
                    let metrics = self.subjects.metrics.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(SETTLE).await;
                        joined.settle(&metrics);
                    });
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(subject = joined.name(), error = %e, "cannot subscribe");
                Err(SubscribeError::Unavailable(joined.name().into()))
            }
        }
    }

    fn subscribe(&self, registry: &mut Registry, subject: &str) -> Sid {
        let sid = self.subscriptions.subscribe(subject);
        let losses = self.subjects.losses.clone();
        let fresh = Followed::new(subject, losses, self.subjects.filler.clone());
        registry.sids.insert(subject.into(), sid);
        registry.subjects.insert(sid, fresh);
        self.subjects.metrics.subscriptions.inc();
        sid
    }

    /// Removes a stream from the subscription `sid` joined, unsubscribing
    /// after the last one. By sid, not by subject: a refused subscription
    /// is forgotten at once, and the next stream of its subject makes a
    /// new one.
    pub fn leave(&self, sid: Sid, id: ConnId) {
        let mut registry = self.subjects.registry.lock().unwrap();
        self.leave_locked(&mut registry, sid, id);
    }

    /// Removes a stream that ends from the subscriptions it `joined` and
    /// from those it was made to follow since.
    pub fn leave_stream(&self, id: ConnId, joined: &[Sid]) {
        let mut registry = self.subjects.registry.lock().unwrap();
        for sid in joined {
            self.leave_locked(&mut registry, *sid, id);
        }
        for sid in registry.extras.remove(&id).unwrap_or_default() {
            self.leave_locked(&mut registry, sid, id);
        }
    }

    fn leave_locked(&self, registry: &mut Registry, sid: Sid, id: ConnId) {
        let Some(subject) = registry.subjects.get(&sid) else {
            return;
        };
        if subject.leave(id) {
            let subject = registry.subjects.remove(&sid).expect("just found");
            if registry.sids.get(subject.name()) == Some(&sid) {
                registry.sids.remove(subject.name());
            }
            self.subscriptions.unsubscribe(sid);
            self.subjects.metrics.subscriptions.dec();
        }
    }

    /// Adds open stream `id`, a member of `owner` (its user's subject), to
    /// `subject` as well, until [`Fanout::leave_extra`] or its end; `None`
    /// if it already follows `subject`, or has left `owner` (it is ending).
    pub fn join_extra(
        &self,
        owner: &str,
        subject: &str,
        id: ConnId,
        member: Member,
    ) -> Option<Sid> {
        let mut registry = self.subjects.registry.lock().unwrap();
        let registry = &mut *registry;
        let is_member = |name: &str| {
            let sid = registry.sids.get(name)?;
            Some(registry.subjects[sid].has_member(id))
        };
        if is_member(owner) != Some(true) || is_member(subject) == Some(true) {
            return None;
        }
        let sid = match registry.sids.get(subject) {
            Some(sid) => *sid,
            None => self.subscribe(registry, subject),
        };
        registry.subjects[&sid].join(id, member);
        registry.extras.entry(id).or_default().push(sid);
        Some(sid)
    }

    /// The subjects stream `id` was made to follow since it opened.
    pub fn extras(&self, id: ConnId) -> Vec<(Sid, String)> {
        let registry = self.subjects.registry.lock().unwrap();
        let Some(extras) = registry.extras.get(&id) else {
            return Vec::new();
        };
        let named = extras.iter().filter_map(|sid| {
            let subject = registry.subjects.get(sid)?;
            Some((*sid, subject.name().to_owned()))
        });
        named.collect()
    }

    /// Removes stream `id` from `sid`, one of its [`Fanout::extras`].
    pub fn leave_extra(&self, id: ConnId, sid: Sid) {
        let mut registry = self.subjects.registry.lock().unwrap();
        let Some(extras) = registry.extras.get_mut(&id) else {
            return;
        };
        let before = extras.len();
        extras.retain(|s| *s != sid);
        let left = extras.len() < before;
        if extras.is_empty() {
            registry.extras.remove(&id);
        }
        if left {
            self.leave_locked(&mut registry, sid, id);
        }
    }

    /// The streams that follow `subject` here.
    pub fn members_of(&self, subject: &str) -> Vec<(ConnId, Member)> {
        self.find(subject).map(|s| s.members()).unwrap_or_default()
    }

    /// The topics followed here whose names start with `prefix`, the
    /// first `limit` by name, with their stream counts. (A stream follows
    /// a topic on each region's origin subject: it counts once.)
    pub fn topics(&self, prefix: &str, limit: usize) -> Vec<(String, u64)> {
        let registry = self.subjects.registry.lock().unwrap();
        let mut topics: HashMap<String, u64> = HashMap::new();
        for (name, sid) in &registry.sids {
            let live = herald_domain::region::live_of(name);
            let Some(token) = live.strip_prefix(TOPIC_PREFIX) else {
                continue;
            };
            let Some(topic) = herald_domain::subject::decode_token(token) else {
                continue;
            };
            if topic.starts_with(prefix) {
                let streams = registry.subjects[sid].streams() as u64;
                let counted = topics.entry(topic).or_default();
                *counted = (*counted).max(streams);
            }
        }
        let mut topics: Vec<(String, u64)> = topics.into_iter().collect();
        topics.sort_unstable();
        topics.truncate(limit);
        topics
    }

    /// What this node holds after `after` for a stream of `subject` (see
    /// `Followed::lookup`); a subject nobody here follows holds nothing.
    pub async fn lookup(&self, subject: &str, after: u64, may_wait: bool) -> Lookup {
        match self.find(subject) {
            Some(subject) => subject.lookup(after, may_wait).await,
            None => Lookup::Miss(None),
        }
    }

    /// The subject if a stream here follows it.
    pub fn find(&self, subject: &str) -> Option<Arc<Followed>> {
        let registry = self.subjects.registry.lock().unwrap();
        let sid = registry.sids.get(subject);
        sid.map(|sid| registry.subjects[sid].clone())
    }

    /// The current NATS loss count: what a read started now is good for.
    pub fn epoch(&self) -> u64 {
        *self.subjects.losses.borrow()
    }

    /// The signal of every stream that follows a subject here, once each.
    pub fn streams(&self) -> Vec<Arc<Signal>> {
        self.subjects.streams()
    }
}

impl Subjects {
    fn get(&self, sid: Sid) -> Option<Arc<Followed>> {
        self.registry.lock().unwrap().subjects.get(&sid).cloned()
    }

    fn streams(&self) -> Vec<Arc<Signal>> {
        let registry = self.registry.lock().unwrap();
        let mut streams = HashMap::new();
        for subject in registry.subjects.values() {
            subject.signals(&mut streams);
        }
        streams.into_values().collect()
    }
}

/// Ends every open stream when live events may have been missed (core
/// NATS does not redeliver): their clients resume from their cursors.
async fn close_on_loss(subjects: Weak<Subjects>, mut losses: tokio::sync::watch::Receiver<u64>) {
    while losses.changed().await.is_ok() {
        let Some(subjects) = subjects.upgrade() else {
            return;
        };
        for signal in subjects.streams() {
            signal.close(CloseReason::ServerError);
        }
    }
}

impl Deliver for Subjects {
    fn deliver(&self, sid: Sid, message: &async_nats::Message, source: Source) {
        if let Some(subject) = self.get(sid) {
            subject.deliver(message, source, &self.metrics);
        }
    }

    /// Forgets the subscription (the next stream of its subject asks
    /// again), fails the joins waiting for it and ends its streams: their
    /// clients come back after the `retry:` hint.
    fn refused(&self, sid: Sid, refusal: &Refusal) {
        let refused = {
            let mut registry = self.registry.lock().unwrap();
            let Some(subject) = registry.subjects.get(&sid).cloned() else {
                return;
            };
            if registry.sids.get(subject.name()) == Some(&sid) {
                registry.sids.remove(subject.name());
            }
            subject
        };
        refused.refuse();
        self.metrics.refused(refusal.reason);
        let mut streams = HashMap::new();
        refused.signals(&mut streams);
        tracing::warn!(
            subject = %refusal.subject,
            reason = refusal.reason.as_str(),
            streams = streams.len(),
            "NATS refused a subscription; ending its streams"
        );
        for signal in streams.into_values() {
            signal.close(CloseReason::SubscriptionRefused);
        }
    }
}
