//! What a presence [`Follower`](herald_nats::presence::Follower) sees, as
//! metrics: users online, nodes, connections per node, the lag of changes,
//! resyncs, forgotten nodes and spoofed messages.

use std::time::Duration;

use herald_domain::presence::directory::Directory;
use herald_nats::presence::Observer;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

impl Observer for FollowerMetrics {
    fn resynced(&self) {
        self.resyncs.inc();
    }

    fn spoofed(&self) {
        self.spoofed.inc();
    }

    fn lag(&self, lag: Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    fn expired(&self, node: &str) {
        self.expired.inc();
        self.connections.remove(&NodeLabels {
            node: node.to_owned(),
        });
    }

    fn counted(&self, directory: &Directory) {
        self.users_online.set(directory.users_online() as i64);
        self.nodes.set(directory.node_connections().count() as i64);
        for (node, connections) in directory.node_connections() {
            let labels = NodeLabels {
                node: node.to_owned(),
            };
            self.connections
                .get_or_create(&labels)
                .set(connections as i64);
        }
    }
}
