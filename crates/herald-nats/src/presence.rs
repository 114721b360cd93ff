//! Presence over NATS: a [`Follower`] keeps a [`Directory`] in step with
//! the edges; the presence service answers from it, and herald-publish
//! reads it for receipts without a round trip. The messages and the state
//! are herald-domain's `presence`; what a follower sees is counted through
//! [`Observer`] (herald-core's metrics).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::connection::Losses;
use herald_domain::presence::directory::{Directory, Followup};
use herald_domain::presence::wire::{
    NODE_WILDCARD, NodeMessage, ReceiveError, SNAPSHOT_PREFIX, SYNC_SUBJECT, SnapshotPart,
    SyncRequest, unix_ms,
};

/// How often dead nodes are looked for and gauges refreshed.
const TICK: Duration = Duration::from_millis(100);

/// A follower is warm (its answers complete) once every edge answered and
/// at least this long has passed since it asked them all...
const WARMUP: Duration = Duration::from_secs(1);
/// ...or after this long, even if an edge never answers (it may be broken;
/// its users then count as offline), so one bad edge cannot keep a whole
/// service unready.
const MAX_WARMUP: Duration = Duration::from_secs(10);

/// What a follower sees, as it sees it: for its service's metrics.
pub trait Observer: Send + Sync + 'static {
    /// A node's snapshot was asked for after a gap, a restart or a new node.
    fn resynced(&self);
    /// A message named another node than its subject's, and was ignored.
    fn spoofed(&self);
    /// How long a change took from its edge to here.
    fn lag(&self, lag: Duration);
    /// `node` stopped heart-beating and was forgotten.
    fn expired(&self, node: &str);
    /// The state after each tick (every 100 ms).
    fn counted(&self, directory: &Directory);
}

/// Presence state, kept current by a background task.
#[derive(Clone)]
pub struct Follower {
    directory: Arc<RwLock<Directory>>,
    warm: Arc<AtomicBool>,
}

impl Follower {
    /// Subscribes, asks every edge for its snapshot, and keeps following
    /// until `shutdown`.
    pub async fn start(
        nats: async_nats::Client,
        losses: Losses,
        observer: impl Observer,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = format!("{SNAPSHOT_PREFIX}{}", nuid::next());
        let events = nats.subscribe(NODE_WILDCARD).await?;
        let snapshots = nats.subscribe(inbox.clone()).await?;
        let follower = Self {
            directory: Arc::default(),
            warm: Arc::default(),
        };
        let task = Task {
            follower: follower.clone(),
            nats,
            inbox,
            observer: Box::new(observer),
            started: Instant::now(),
        };
        tokio::spawn(task.run(events, snapshots, losses, shutdown));
        Ok(follower)
    }

    /// The current state; hold the guard briefly.
    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the state is complete after start.
    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire)
    }

    /// Waits until the state is complete after start.
    pub async fn warm(&self) {
        while !self.is_warm() {
            tokio::time::sleep(TICK).await;
        }
    }
}

struct Task {
    follower: Follower,
    nats: async_nats::Client,
    inbox: String,
    observer: Box<dyn Observer>,
    started: Instant,
}

impl Task {
    async fn run(
        self,
        mut events: async_nats::Subscriber,
        mut snapshots: async_nats::Subscriber,
        mut losses: Losses,
        shutdown: CancellationToken,
    ) {
        self.ask(None).await;
        let mut tick = tokio::time::interval(TICK);
        loop {
            let followup = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(message) = events.next() => self.on_node_message(&message.subject, &message.payload),
                Some(message) = snapshots.next() => self.on_snapshot(&message.payload),
                _ = tick.tick() => { self.tick(); Followup::Nothing }
                Ok(()) = losses.changed() => {
                    // Our own connection dropped: deltas may be missing.
                    self.write().distrust_all(Instant::now());
                    self.ask(None).await;
                    Followup::Nothing
                }
                else => return,
            };
            if let Followup::AskSnapshot(node) = followup {
                self.observer.resynced();
                self.ask(Some(node)).await;
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.follower
            .directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn on_node_message(&self, subject: &str, payload: &[u8]) -> Followup {
        let message = match NodeMessage::receive(subject, payload) {
            Ok(m) => m,
            Err(e @ ReceiveError::Malformed(_)) => {
                tracing::warn!(error = %e, "ignoring a malformed presence message");
                return Followup::Nothing;
            }
            Err(e @ ReceiveError::Spoofed { .. }) => {
                self.observer.spoofed();
                tracing::warn!(error = %e, "ignoring a presence message that speaks for another node");
                return Followup::Nothing;
            }
        };
        if let NodeMessage::Delta { sent_ms, .. } = &message {
            let lag = unix_ms().saturating_sub(*sent_ms);
            self.observer.lag(Duration::from_millis(lag));
        }
        self.write().on_message(message, Instant::now())
    }

    fn on_snapshot(&self, payload: &[u8]) -> Followup {
        match serde_json::from_slice::<SnapshotPart>(payload) {
            Ok(part) => self.write().on_snapshot_part(part, Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed presence snapshot");
                Followup::Nothing
            }
        }
    }

    fn tick(&self) {
        let mut directory = self.write();
        for node in directory.expire(Instant::now()) {
            tracing::info!(
                node,
                "presence: node stopped heart-beating; its connections are gone"
            );
            self.observer.expired(&node);
        }
        let elapsed = self.started.elapsed();
        let answered = directory.waiting() == 0 || elapsed >= MAX_WARMUP;
        if !self.follower.is_warm() && elapsed >= WARMUP && answered {
            self.follower.warm.store(true, Ordering::Release);
        }
        self.observer.counted(&directory);
    }

    /// Asks `node` (or every edge) for a snapshot, answered on our inbox.
    async fn ask(&self, node: Option<String>) {
        let request = serde_json::to_vec(&SyncRequest { node }).expect("serializable");
        let sent = self
            .nats
            .publish_with_reply(SYNC_SUBJECT, self.inbox.clone(), request.into())
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot ask for a presence snapshot; retried at the next heartbeat");
        }
    }
}
