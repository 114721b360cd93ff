//! Connecting to NATS the same way in every service.

use std::time::Duration;

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{url:?} is not a NATS URL: {source}")]
    BadUrl { url: String, source: std::io::Error },
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// Counts the moments after which live messages may have been missed: the
/// connection dropped, or the client discarded messages of a subscription
/// that fell behind. Core NATS does not redeliver, so whoever promises
/// "nothing lost" must react to a change (the edge ends its streams, whose
/// clients then resume from their cursors).
pub type Losses = tokio::sync::watch::Receiver<u64>;

/// Connects to the first reachable of `urls`, failing fast at start-up so a
/// wrong `--nats-url` is reported at once rather than retried forever.
/// Once connected, the client reconnects on its own (to any of `urls` and
/// the servers they advertise) for as long as needed.
pub async fn connect(
    urls: &[String],
    name: &str,
) -> Result<(async_nats::Client, Losses), ConnectError> {
    let addrs = urls
        .iter()
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|source| ConnectError::BadUrl {
                    url: url.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (losses_tx, losses) = tokio::sync::watch::channel(0u64);
    let losses_tx = std::sync::Arc::new(losses_tx);
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let losses = losses_tx.clone();
            async move {
                tracing::info!(%event, "nats connection event");
                if matches!(
                    event,
                    async_nats::Event::Disconnected | async_nats::Event::SlowConsumer(_)
                ) {
                    losses.send_modify(|n| *n += 1);
                }
            }
        })
        .connect(addrs.as_slice())
        .await?;
    Ok((client, losses))
}

/// Waits for one round trip to the server. The server handles a client's
/// operations in order, so once this returns it has processed everything
/// this client sent before, e.g. a new subscription. (`flush` only empties
/// the client's write buffer.) The request goes to a subject nobody serves,
/// so the server itself answers at once with "no responders".
pub async fn round_trip(client: &async_nats::Client) -> Result<(), async_nats::RequestError> {
    use async_nats::RequestErrorKind;
    let subject = format!(
        "_herald.ping.{}",
        client.new_inbox().rsplit('.').next().unwrap_or("x")
    );
    match client.request(subject, bytes::Bytes::new()).await {
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()), // someone answered: still a round trip
    }
}

/// Makes `client`'s connection visible on `/metrics`, read at each
/// scrape: `herald_nats_connected` (1 or 0), `herald_nats_connects_total`
/// (the first connection, then each reconnect) and messages in and out.
pub fn register_metrics(
    registry: &mut prometheus_client::registry::Registry,
    client: &async_nats::Client,
) {
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

        let connected = self.0.connection_state() == async_nats::connection::State::Connected;
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
