//! Presence over NATS: a [`Follower`] keeps a [`Directory`] in step with
//! the edges; the presence service answers from it, and herald-publish
//! reads it for receipts without a round trip. The messages and the state
//! are herald-domain's `presence`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use herald_domain::presence::directory::{Directory, Followup};
use herald_domain::presence::wire::{
    NODE_WILDCARD, NodeMessage, ReceiveError, SNAPSHOT_PREFIX, SYNC_SUBJECT, SnapshotPart,
    SyncRequest, unix_ms,
};
use herald_nats::connection::Losses;

/// How often dead nodes are looked for and gauges refreshed.
const TICK: Duration = Duration::from_millis(100);

/// A follower is warm (its answers complete) once every edge answered and
/// at least this long has passed since it asked them all...
const WARMUP: Duration = Duration::from_secs(1);
/// ...or after this long, even if an edge never answers (it may be broken;
/// its users then count as offline), so one bad edge cannot keep a whole
/// service unready.
const MAX_WARMUP: Duration = Duration::from_secs(10);

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
        metrics: FollowerMetrics,
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
            metrics,
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
    metrics: FollowerMetrics,
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
                self.metrics.resyncs.inc();
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
                self.metrics.spoofed.inc();
                tracing::warn!(error = %e, "ignoring a presence message that speaks for another node");
                return Followup::Nothing;
            }
        };
        if let NodeMessage::Delta { sent_ms, .. } = &message {
            let lag = unix_ms().saturating_sub(*sent_ms);
            self.metrics.lag.observe(lag as f64 / 1000.0);
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
            self.metrics.expired.inc();
            self.metrics.connections.remove(&NodeLabels { node });
        }
        let elapsed = self.started.elapsed();
        let answered = directory.waiting() == 0 || elapsed >= MAX_WARMUP;
        if !self.follower.is_warm() && elapsed >= WARMUP && answered {
            self.follower.warm.store(true, Ordering::Release);
        }
        self.metrics
            .users_online
            .set(directory.users_online() as i64);
        self.metrics
            .nodes
            .set(directory.node_connections().count() as i64);
        for (node, connections) in directory.node_connections() {
            let labels = NodeLabels {
                node: node.to_owned(),
            };
            self.metrics
                .connections
                .get_or_create(&labels)
                .set(connections as i64);
        }
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// What a follower reports.
#[derive(Debug, Clone)]
pub struct FollowerMetrics {
    users_online: Gauge,
    nodes: Gauge,
    connections: Family<NodeLabels, Gauge>,
    lag: Histogram,
    resyncs: Counter,
    expired: Counter,
    spoofed: Counter,
}

impl FollowerMetrics {
    /// Registers under `registry`'s prefix (e.g. `herald_presence`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            users_online: Gauge::default(),
            nodes: Gauge::default(),
            connections: Family::default(),
            // 1 ms .. ~16 s
            lag: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            resyncs: Counter::default(),
            expired: Counter::default(),
            spoofed: Counter::default(),
        };
        let r = registry;
        r.register(
            "users_online",
            "Users with at least one connection",
            m.users_online.clone(),
        );
        r.register("nodes", "Edge nodes known to presence", m.nodes.clone());
        r.register(
            "connections",
            "Open connections, per edge node",
            m.connections.clone(),
        );
        r.register(
            "event_lag_seconds",
            "Time from an edge sending a presence change to presence applying it",
            m.lag.clone(),
        );
        r.register(
            "resyncs",
            "Snapshots asked of an edge after a gap, restart or new node",
            m.resyncs.clone(),
        );
        r.register(
            "expired_nodes",
            "Edge nodes forgotten after they stopped heart-beating",
            m.expired.clone(),
        );
        r.register(
            "spoofed_messages",
            "Presence messages ignored because they named another node than their subject's",
            m.spoofed.clone(),
        );
        m
    }
}
