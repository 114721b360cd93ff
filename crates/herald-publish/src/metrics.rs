//! herald-publish's Prometheus metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a Publish call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
}

impl Outcome {
    /// How a call (or batch item) that ended with `result` is counted.
    pub fn of<T>(result: &Result<T, tonic::Status>) -> Self {
        result.as_ref().err().map_or(Self::Ok, Self::of_error)
    }

    /// How a call refused with `status` is counted.
    pub fn of_error(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument => Self::InvalidArgument,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            _ => Self::Unavailable,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Ok => "ok",
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::Unavailable => "unavailable",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

/// What a published event was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    User,
    Topic,
}

impl EncodeLabelValue for Target {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::User => "user",
            Self::Topic => "topic",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: Target,
}

/// A receipt's outcome, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReceiptOutcome(herald_proto::v1::Outcome);

impl EncodeLabelValue for ReceiptOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let name = self.0.as_str_name();
        let label = name
            .strip_prefix("OUTCOME_")
            .unwrap_or(name)
            .to_ascii_lowercase();
        std::fmt::Write::write_str(encoder, &label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReceiptLabels {
    outcome: ReceiptOutcome,
}

/// Handles to every publish metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<OutcomeLabels, Counter>,
    receipts: Family<ReceiptLabels, Counter>,
    events: Family<TargetLabels, Counter>,
    pub latency: Histogram,
    pub batch_latency: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            receipts: Family::default(),
            events: Family::default(),
            // 50µs .. ~3.3s
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            batch_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
        };
        let r = registry.sub_registry_with_prefix("herald_publish");
        r.register(
            "requests",
            "Publish calls and PublishBatch items, by outcome",
            m.requests.clone(),
        );
        r.register(
            "events",
            "Events put on NATS, by target kind",
            m.events.clone(),
        );
        r.register(
            "receipts",
            "Per-user receipts, by outcome (delivered, stored, fallback, dropped)",
            m.receipts.clone(),
        );
        r.register(
            "duration_seconds",
            "Time to validate and hand a Publish to NATS",
            m.latency.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Time to validate, send and confirm a whole PublishBatch",
            m.batch_latency.clone(),
        );
        m
    }

    pub fn request(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The counter of calls refused for a missing or wrong API token.
    pub fn refused(&self) -> Counter {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: Outcome::Unauthenticated,
            })
            .clone()
    }

    pub fn receipt(&self, outcome: herald_proto::v1::Outcome) {
        let labels = ReceiptLabels {
            outcome: ReceiptOutcome(outcome),
        };
        self.receipts.get_or_create(&labels).inc();
    }

    pub fn events(&self, target: Target, count: u64) {
        self.events
            .get_or_create(&TargetLabels { target })
            .inc_by(count);
    }
}
