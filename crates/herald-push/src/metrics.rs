//! herald-push-worker's Prometheus metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How sending to one device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceOutcome {
    Sent,
    /// FCM no longer knows the token; it was removed.
    Unregistered,
    /// FCM refused the message for good.
    Rejected,
    /// Every try failed with a retryable error.
    GaveUp,
}

/// How one queued event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOutcome {
    /// Sent to at least one device.
    Delivered,
    /// The user has no registered device.
    NoDevice,
    /// No device could be reached.
    Failed,
    /// Not a queue message this worker understands.
    Malformed,
}

impl EncodeLabelValue for DeviceOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Sent => "sent",
            Self::Unregistered => "unregistered",
            Self::Rejected => "rejected",
            Self::GaveUp => "gave_up",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

impl EncodeLabelValue for EventOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let label = match self {
            Self::Delivered => "delivered",
            Self::NoDevice => "no_device",
            Self::Failed => "failed",
            Self::Malformed => "malformed",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeviceLabels {
    outcome: DeviceOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    outcome: EventOutcome,
}

/// Handles to every worker metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    devices: Family<DeviceLabels, Counter>,
    events: Family<EventLabels, Counter>,
    pub retries: Counter,
    pub send_duration: Histogram,
    /// Registration API calls refused for a missing or wrong API token.
    pub refused: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            devices: Family::default(),
            events: Family::default(),
            retries: Counter::default(),
            refused: Counter::default(),
            // 5 ms .. ~20 s
            send_duration: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
        };
        let r = registry.sub_registry_with_prefix("herald_push");
        r.register(
            "events",
            "Queued events finished, by outcome",
            m.events.clone(),
        );
        r.register(
            "sends",
            "Pushes to one device finished, by outcome",
            m.devices.clone(),
        );
        r.register(
            "retries",
            "FCM calls that failed and were tried again",
            m.retries.clone(),
        );
        r.register(
            "api_refused",
            "Registration API calls refused for a missing or wrong API token",
            m.refused.clone(),
        );
        r.register(
            "send_duration_seconds",
            "Time of one FCM messages:send call",
            m.send_duration.clone(),
        );
        m
    }

    pub fn device(&self, outcome: DeviceOutcome) {
        self.devices.get_or_create(&DeviceLabels { outcome }).inc();
    }

    pub fn event(&self, outcome: EventOutcome) {
        self.events.get_or_create(&EventLabels { outcome }).inc();
    }
}
