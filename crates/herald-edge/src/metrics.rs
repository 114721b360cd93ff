//! The edge's Prometheus metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a stream ended: the operators' answer to "did it close normally?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// NATS refused (or withdrew) the subscription behind the stream: a
    /// permissions rule or a subscription limit. Transient: the client
    /// comes back after its `retry:` and the edge asks NATS again.
    SubscriptionRefused,
    /// The client's socket took no bytes for `--write-timeout`: the client
    /// stopped reading, or vanished. Its connection is dropped.
    WriteTimeout,
    /// The app ended the user's streams (`Control.Disconnect`).
    Disconnected,
    /// The app revoked the stream's token (`Control.Revoke`).
    Revoked,
}

impl CloseReason {
    /// The metric label, also named in the stream's closing comment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::SlowConsumer => "slow_consumer",
            Self::TokenExpired => "token_expired",
            Self::Drain => "drain",
            Self::ServerError => "server_error",
            Self::SubscriptionRefused => "subscription_refused",
            Self::WriteTimeout => "write_timeout",
            Self::Disconnected => "disconnected",
            Self::Revoked => "revoked",
        }
    }
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why a connect was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Unauthorized,
    Forbidden,
    /// A page of an origin not in `--allowed-origins`.
    Origin,
    BadRequest,
    NodeFull,
    UserLimit,
    /// Over the per-user connect rate.
    ConnectRate,
    Draining,
    Unavailable,
    /// NATS refused a subscription the stream needs.
    SubscriptionRefused,
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Origin => "origin_not_allowed",
            Self::BadRequest => "bad_request",
            Self::NodeFull => "node_full",
            Self::UserLimit => "user_limit",
            Self::ConnectRate => "too_many_connects",
            Self::Draining => "draining",
            Self::Unavailable => "unavailable",
            Self::SubscriptionRefused => "subscription_refused",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

/// Where a resuming stream's missed events of one subject came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResumeSource {
    /// The subject's fan-out task held them.
    Memory,
    /// Read from the history stream.
    History,
}

impl EncodeLabelValue for ResumeSource {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Memory => "memory",
            Self::History => "history",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResumeLabels {
    source: ResumeSource,
}

/// How a gap on the live path ended (see `gaps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapOutcome {
    /// The missed events were read and handed on, in order.
    Filled,
    /// Reading them failed or took too long: the subject's streams ended.
    ReadFailed,
    /// More was missed, or held meanwhile, than a fill holds: the
    /// subject's streams ended.
    TooLarge,
}

impl EncodeLabelValue for GapOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Filled => "filled",
            Self::ReadFailed => "read_failed",
            Self::TooLarge => "too_large",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GapLabels {
    outcome: GapOutcome,
}

/// Why NATS refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Refusal(herald_subscriptions::RefusalReason);

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.0.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
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
#[derive(Debug, Clone)]
pub struct Metrics {
    pub connections: Gauge,
    pub connects: Counter,
    closes: Family<CloseLabels, Counter>,
    rejects: Family<RejectLabels, Counter>,
    pub delivered: Counter,
    pub slow_consumer_closes: Counter,
    /// Lifecycle events not published: NATS could not keep up.
    pub lifecycle_dropped: Counter,
    pub subscriptions: Gauge,
    refusals: Family<RefusalLabels, Counter>,
    resumes: Family<ResumeLabels, Counter>,
    /// Events sent to streams from a replay (resume), not live.
    pub replayed: Counter,
    /// `herald.reset` events: a cursor older than history.
    pub resets: Counter,
    /// Tails of history read once for many resumes (see `tails`).
    pub tail_reads: Counter,
    /// Gaps seen on the live path, by how they ended.
    gaps: Family<GapLabels, Counter>,
    /// Events read from history to fill gaps on the live path.
    pub gap_events_read: Counter,
    /// From `Publish` accepting an event to this edge handing it to its
    /// streams' queues.
    pub delivery_latency: Histogram,
    /// TCP connections on the SSE port: open, refused over
    /// `--max-sockets`, closed by the header or idle timeout.
    pub sockets: herald_core::listener::SocketMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: Gauge::default(),
            connects: Counter::default(),
            closes: Family::default(),
            rejects: Family::default(),
            delivered: Counter::default(),
            slow_consumer_closes: Counter::default(),
            lifecycle_dropped: Counter::default(),
            subscriptions: Gauge::default(),
            refusals: Family::default(),
            resumes: Family::default(),
            replayed: Counter::default(),
            resets: Counter::default(),
            tail_reads: Counter::default(),
            gaps: Family::default(),
            gap_events_read: Counter::default(),
            // 0.25 ms to 8 s.
            delivery_latency: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            sockets: Default::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `herald_edge_`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("herald_edge");
        let m = Self {
            sockets: herald_core::listener::SocketMetrics::register(r),
            ..Self::default()
        };
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
            "Streams found too slow and detached from delivery (counted at once; closes_total counts them when the stream ends)",
            m.slow_consumer_closes.clone(),
        );
        r.register(
            "lifecycle_events_dropped",
            "Lifecycle events (--lifecycle-events) dropped because NATS could not take them fast enough",
            m.lifecycle_dropped.clone(),
        );
        r.register(
            "nats_subscriptions",
            "NATS subscriptions held (one per distinct user or topic)",
            m.subscriptions.clone(),
        );
        r.register(
            "nats_subscription_refusals",
            "Subscriptions NATS refused or withdrew, by reason (permissions, max_subscriptions); their streams were ended",
            m.refusals.clone(),
        );
        r.register(
            "replayed_events",
            "Events sent to resuming streams from history or the fan-out's memory",
            m.replayed.clone(),
        );
        r.register(
            "resets",
            "herald.reset events sent: the client's cursor was older than history",
            m.resets.clone(),
        );
        r.register(
            "history_tail_reads",
            "History stream tails read once for many resuming streams",
            m.tail_reads.clone(),
        );
        r.register(
            "live_gaps",
            "Persisted events missed on the live path (their successor named them), by outcome: filled from history, or the subject's streams ended",
            m.gaps.clone(),
        );
        r.register(
            "live_gap_events_read",
            "Events read from history to fill gaps on the live path",
            m.gap_events_read.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "From Publish accepting an event to this edge handing it to its streams (publisher's clock)",
            m.delivery_latency.clone(),
        );
        r.register(
            "resumed_subjects",
            "Subjects resumed from a client's cursor, by where the missed events came from",
            m.resumes.clone(),
        );
        m
    }

    pub fn resumed(&self, source: ResumeSource) {
        self.resumes.get_or_create(&ResumeLabels { source }).inc();
    }

    pub fn refused(&self, reason: herald_subscriptions::RefusalReason) {
        let reason = Refusal(reason);
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub fn gap(&self, outcome: GapOutcome) {
        self.gaps.get_or_create(&GapLabels { outcome }).inc();
    }

    /// A gap's count so far, for tests.
    #[cfg(test)]
    pub fn gaps(&self, outcome: GapOutcome) -> u64 {
        self.gaps.get_or_create(&GapLabels { outcome }).get()
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes.get_or_create(&CloseLabels { reason }).inc();
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejects.get_or_create(&RejectLabels { reason }).inc();
    }
}
