//! The subscription connection's figures as metrics, read at each scrape.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::StatsReader;

/// The subscription connection's own figures, read at each scrape as
/// `herald_edge_nats_*` (the edge's main NATS client is `herald_nats_*`).
#[derive(Debug)]
pub struct SubscriptionsCollector(pub StatsReader);

impl prometheus_client::collector::Collector for SubscriptionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.read();
        let connected = ConstGauge::new(i64::from(stats.connected));
        let help = "1 while the subscription connection is connected to NATS, else 0";
        let metric = encoder.encode_descriptor(
            "herald_edge_nats_connected",
            help,
            None,
            connected.metric_type(),
        )?;
        connected.encode(metric)?;
        // Which subscriber holds the subjects (`--nats-subscriber`).
        let subscriber = [("subscriber", self.0.subscriber().as_str())];
        let help = "1, labelled with what holds the streams' subscriptions: lean or async-nats";
        let info = ConstGauge::new(1);
        let mut metric = encoder.encode_descriptor(
            "herald_edge_nats_subscriber",
            help,
            None,
            info.metric_type(),
        )?;
        info.encode(metric.encode_family(&subscriber)?)?;
        let counters = [
            (
                "herald_edge_nats_connects",
                "Subscription connections made: the first, then one per reconnect",
                stats.connects,
            ),
            (
                "herald_edge_nats_pings",
                "PINGs sent on the subscription connection: keep-alives and round trips",
                stats.pings,
            ),
            (
                "herald_edge_nats_messages_in",
                "Messages the subscription connection handed to the fan-out",
                stats.delivered,
            ),
            (
                "herald_edge_nats_messages_dropped",
                "Messages for subjects no longer followed, or unreadable",
                stats.dropped,
            ),
            (
                "herald_edge_nats_messages_oversized",
                "Messages over the accepted size, skipped (the connection stays)",
                stats.oversized,
            ),
            (
                "herald_edge_nats_moves",
                "Moves of the subscription connection to another server, made before leaving one in lame duck mode",
                stats.moves,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
