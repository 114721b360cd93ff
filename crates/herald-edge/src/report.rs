//! Reports this edge's connections to presence: numbered deltas as they
//! happen, a heartbeat every interval, snapshots on request, and a last
//! word when the edge stops (see `herald_domain::presence::wire`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herald_domain::presence::wire::{
    NodeMessage, SYNC_SUBJECT, SyncRequest, is_snapshot_inbox, node_subject, snapshot_parts,
    unix_ms,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Delta};

/// Longest wait for the last delta and the "leaving" message at shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes one node's presence on NATS.
pub struct Reporter {
    nats: async_nats::Client,
    admission: Arc<Admission>,
    node: String,
    /// Its region (`--region`), told to followers.
    region: String,
    subject: String,
    /// Tells followers a restarted edge from its previous run.
    epoch: u64,
    interval: Duration,
    /// Snapshot requests not answered: their reply subject was not a
    /// follower's snapshot inbox.
    refused: Counter,
}

impl Reporter {
    /// Registers its counter in `registry` (as
    /// `herald_edge_presence_sync_refused_total`).
    pub fn new(
        nats: async_nats::Client,
        admission: Arc<Admission>,
        node: String,
        region: String,
        interval: Duration,
        registry: &mut Registry,
    ) -> Self {
        let refused = Counter::default();
        registry.register(
            "herald_edge_presence_sync_refused",
            "Presence snapshot requests ignored: the reply subject was not a snapshot inbox",
            refused.clone(),
        );
        Self {
            refused,
            subject: node_subject(&node),
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            nats,
            admission,
            node,
            region,
            interval,
        }
    }

    /// Subscribes to snapshot requests, then reports until `stop`, and
    /// says goodbye.
    pub async fn start(
        self,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let requests = self.nats.subscribe(SYNC_SUBJECT).await?;
        Ok(tokio::spawn(self.run(requests, stop)))
    }

    async fn run(self, mut requests: async_nats::Subscriber, stop: CancellationToken) {
        // `stop` ends the loop even inside a send: while NATS is down,
        // async-nats queues what is published, and once its queue is full
        // a publish waits until NATS is back (it held an edge's shutdown
        // for good once 5,000 closing streams had queued their deltas).
        tokio::select! {
            _ = stop.cancelled() => {}
            () = self.report(&mut requests) => {}
        }
        // With NATS unreachable the goodbye cannot go out; followers then
        // expire this node by its silence instead, so do not wait long.
        let goodbye = async {
            self.send_delta(self.admission.take_delta()).await;
            let leaving = NodeMessage::Leaving {
                node: self.node.clone(),
                epoch: self.epoch,
            };
            self.send(&leaving).await;
            let _ = self.nats.flush().await;
        };
        if tokio::time::timeout(GOODBYE_TIMEOUT, goodbye)
            .await
            .is_err()
        {
            tracing::warn!("could not tell presence this edge is leaving; it will expire");
        }
    }

    /// Deltas as connections come and go, heartbeats, and snapshots on request.
    async fn report(&self, requests: &mut async_nats::Subscriber) {
        let mut heartbeat = tokio::time::interval(self.interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.admission.changed() => self.send_delta(self.admission.take_delta()).await,
                _ = heartbeat.tick() => self.send_heartbeat().await,
                Some(request) = requests.next() => self.answer(request).await,
            }
        }
    }

    async fn send_delta(&self, delta: Option<Delta>) {
        let Some((seq, changes)) = delta else { return };
        let message = NodeMessage::Delta {
            node: self.node.clone(),
            epoch: self.epoch,
            seq,
            sent_ms: unix_ms(),
            changes,
        };
        self.send(&message).await;
    }

    async fn send_heartbeat(&self) {
        let message = NodeMessage::Heartbeat {
            node: self.node.clone(),
            region: self.region.clone(),
            epoch: self.epoch,
            seq: self.admission.seq(),
            interval_ms: self.interval.as_millis() as u64,
            connections: self.admission.open() as u64,
        };
        self.send(&message).await;
    }

    /// A lost message is repaired by followers (they see the gap at the
    /// next heartbeat and ask for a snapshot), so a failure is only logged.
    async fn send(&self, message: &NodeMessage) {
        let payload = serde_json::to_vec(message).expect("serializable");
        if let Err(e) = self
            .nats
            .publish(self.subject.clone(), payload.into())
            .await
        {
            tracing::warn!(error = %e, "cannot report presence");
        }
    }

    /// Sends a snapshot to a follower that asked this node (or every node).
    async fn answer(&self, request: async_nats::Message) {
        let Some(reply) = request.reply else { return };
        if !is_snapshot_inbox(&reply) {
            self.refused.inc();
            tracing::warn!(%reply, "ignoring a presence snapshot request whose reply subject is not a snapshot inbox");
            return;
        }
        match serde_json::from_slice::<SyncRequest>(&request.payload) {
            Ok(SyncRequest { node: Some(node) }) if node != self.node => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed presence snapshot request");
                return;
            }
        }
        let (pending, seq, users) = self.admission.snapshot();
        // Deltas up to `seq` go out first, so no follower waits for one
        // that the snapshot already holds.
        self.send_delta(pending).await;
        let interval_ms = self.interval.as_millis() as u64;
        for part in snapshot_parts(
            &self.node,
            &self.region,
            self.epoch,
            seq,
            interval_ms,
            users,
        ) {
            let payload = serde_json::to_vec(&part).expect("serializable");
            if let Err(e) = self.nats.publish(reply.clone(), payload.into()).await {
                tracing::warn!(error = %e, "cannot send a presence snapshot");
                return;
            }
        }
    }
}
