//! herald-presence's own metrics (the follower registers the presence
//! gauges beside them).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Grpc,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Ok,
    InvalidArgument,
    Unauthenticated,
}

impl EncodeLabelValue for Api {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Grpc => "grpc",
            Self::Nats => "nats",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Ok => "ok",
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Labels {
    api: Api,
    outcome: Outcome,
}

/// Handles to presence request metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    /// Time to answer a GetPresence (either API).
    pub duration: Histogram,
}

impl Metrics {
    /// Registers under `registry` (already prefixed `herald_presence`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            // 10 µs to about 0.3 s.
            duration: Histogram::new(exponential_buckets(0.000_01, 2.0, 16)),
        };
        registry.register(
            "requests",
            "Presence requests, by API and outcome",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a GetPresence, either API",
            m.duration.clone(),
        );
        m
    }

    pub fn request(&self, api: Api, ok: bool) {
        let outcome = if ok {
            Outcome::Ok
        } else {
            Outcome::InvalidArgument
        };
        self.requests.get_or_create(&Labels { api, outcome }).inc();
    }

    /// The counter of gRPC calls refused for a missing or wrong API token.
    pub fn refused(&self) -> Counter {
        let labels = Labels {
            api: Api::Grpc,
            outcome: Outcome::Unauthenticated,
        };
        self.requests.get_or_create(&labels).clone()
    }
}
