//! The edge's Prometheus metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a stream ended: the operators' answer to "did it close normally?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum CloseReason {
    /// The client went away (its connection closed or a write to it failed).
    ClientGone,
    /// The client read too slowly and its queue filled up.
    SlowConsumer,
    /// The token's `exp` passed.
    TokenExpired,
    /// The edge is draining (SIGTERM).
    Drain,
    /// The edge lost the NATS subscription behind the stream.
    ServerError,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientGone => "client gone",
            Self::SlowConsumer => "slow consumer",
            Self::TokenExpired => "token expired",
            Self::Drain => "edge draining",
            Self::ServerError => "server error",
        }
    }
}

/// Why a connect was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum RejectReason {
    Unauthorized,
    Forbidden,
    BadRequest,
    NodeFull,
    UserLimit,
    Draining,
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabels {
    reason: CloseReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

/// Handles to every edge metric; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub connects: Counter,
    closes: Family<CloseLabels, Counter>,
    rejects: Family<RejectLabels, Counter>,
    pub delivered: Counter,
    pub slow_consumer_closes: Counter,
    pub subscriptions: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under `herald_edge_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("herald_edge");
        r.register("connections", "Open SSE streams", m.connections.clone());
        r.register("connects", "SSE streams opened", m.connects.clone());
        r.register("closes", "SSE streams closed, by reason", m.closes.clone());
        r.register(
            "rejects",
            "SSE connects refused, by reason",
            m.rejects.clone(),
        );
        r.register(
            "events_delivered",
            "Events handed to client streams",
            m.delivered.clone(),
        );
        r.register(
            "slow_consumer_closes",
            "Streams closed because the client read too slowly",
            m.slow_consumer_closes.clone(),
        );
        r.register(
            "nats_subscriptions",
            "NATS subscriptions held (one per distinct user or topic)",
            m.subscriptions.clone(),
        );
        m
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes.get_or_create(&CloseLabels { reason }).inc();
        if reason == CloseReason::SlowConsumer {
            self.slow_consumer_closes.inc();
        }
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejects.get_or_create(&RejectLabels { reason }).inc();
    }
}
