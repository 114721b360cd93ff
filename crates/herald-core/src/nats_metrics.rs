//! A service's NATS connection on `/metrics`, read from the client at
//! each scrape. herald-nats connects; the metrics live here, beside the
//! admin port that serves them, so herald-nats needs no metrics library.

use herald_nats::connection::is_connected;

/// Makes `client`'s connection visible on `/metrics`, read at each
/// scrape: `herald_nats_connected` (1 or 0), `herald_nats_connects_total`
/// (the first connection, then each reconnect) and messages in and out.
pub fn register(registry: &mut prometheus_client::registry::Registry, client: &async_nats::Client) {
    registry.register_collector(Box::new(ConnectionCollector(client.clone())));
}

#[derive(Debug)]
struct ConnectionCollector(async_nats::Client);

impl prometheus_client::collector::Collector for ConnectionCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use std::sync::atomic::Ordering::Relaxed;

        let connected = is_connected(&self.0);
        let gauge = ConstGauge::new(i64::from(connected));
        let metric = encoder.encode_descriptor(
            "herald_nats_connected",
            "1 while connected to a NATS server, else 0",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        let stats = self.0.statistics();
        let counters = [
            (
                "herald_nats_connects",
                "Connections made to NATS: the first, then one per reconnect",
                &stats.connects,
            ),
            (
                "herald_nats_messages_in",
                "Messages received from NATS",
                &stats.in_messages,
            ),
            (
                "herald_nats_messages_out",
                "Messages sent to NATS",
                &stats.out_messages,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
