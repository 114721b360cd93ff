//! Fan-out: one NATS subscription per distinct user or topic on this node,
//! shared by all local streams that follow it.
//!
//! Each subject has one task that owns its subscription and its members, so
//! delivery takes no lock. The registry (a map of subject → task handle and
//! reference count) is touched only on connect and disconnect; when the
//! last member leaves, the handle is dropped, the task ends, and dropping
//! the subscription unsubscribes, so NATS interest follows real streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use herald_core::envelope::Envelope;
use herald_core::history::SEQUENCE_HEADER;
use tokio::sync::{mpsc, watch};

use crate::metrics::{CloseReason, Metrics};
use crate::session::Signal;
use crate::sse;

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
    pub queue: mpsc::Sender<Delivery>,
    pub signal: Arc<Signal>,
}

/// The subscription could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot subscribe to {0} on NATS")]
pub struct SubscribeError(String);

enum Command {
    Join(ConnId, Member),
    Leave(ConnId),
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
    subjects: Mutex<HashMap<String, Entry>>,
    metrics: Metrics,
}

impl Fanout {
    pub fn new(nats: async_nats::Client, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            nats,
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

    fn spawn(&self, subject: &str) -> Entry {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(None);
        let task = SubjectTask {
            subject: subject.to_owned(),
            key: herald_core::cursor::key(subject),
            nats: self.nats.clone(),
            inbox,
            members: HashMap::new(),
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
    inbox: mpsc::UnboundedReceiver<Command>,
    members: HashMap<ConnId, Member>,
    metrics: Metrics,
}

impl SubjectTask {
    async fn run(mut self, ready: watch::Sender<Option<bool>>) {
        let subscribed = self.nats.subscribe(self.subject.clone()).await;
        // The server must have our interest before the client hears that
        // its stream is open, or an event published meanwhile is missed.
        let flushed = herald_core::nats::round_trip(&self.nats).await;
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
                    Some(Command::Join(id, member)) => { self.members.insert(id, member); }
                    Some(Command::Leave(id)) => { self.members.remove(&id); }
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
        let metrics = &self.metrics;
        self.members
            .retain(|_, member| match member.queue.try_send(delivery.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Counted here, at once: an HTTP/2 stream that stopped
                    // reading ends only when its client reads it again or
                    // the connection closes (HTTP/1.1 ones are dropped now).
                    if member.signal.close(CloseReason::SlowConsumer) {
                        metrics.slow_consumer_closes.inc();
                    }
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    fn close_all(&mut self, reason: CloseReason) {
        for member in self.members.values() {
            let _ = member.signal.close(reason);
        }
        self.members.clear();
    }
}
