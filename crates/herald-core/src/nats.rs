//! Connecting to NATS the same way in every service.

use std::path::PathBuf;
use std::time::Duration;

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{url:?} is not a NATS URL: {source}")]
    BadUrl { url: String, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// How a service proves itself to NATS and checks the server: TLS and
/// credentials. Every flag is optional; none gives a plain connection.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsSecurity {
    /// PEM CA certificates to verify NATS servers with; turns TLS on.
    #[arg(long, env = "HERALD_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS (mutual TLS), with --nats-tls-key.
    #[arg(long, env = "HERALD_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of --nats-tls-cert.
    #[arg(long, env = "HERALD_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// NATS credentials file (user JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "HERALD_NATS_CREDS", conflicts_with = "nats_nkey")]
    pub nats_creds: Option<PathBuf>,

    /// File holding an NKey user seed (`SU…`) to authenticate with.
    #[arg(long, env = "HERALD_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
}

impl NatsSecurity {
    async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        let unreadable = |path: &PathBuf| {
            let path = path.clone();
            move |source| ConnectError::Unreadable { path, source }
        };
        if let Some(ca) = &self.nats_tls_ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options
                .require_tls(true)
                .add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(creds) = &self.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(unreadable(creds))?;
        }
        if let Some(path) = &self.nats_nkey {
            let seed = std::fs::read_to_string(path).map_err(unreadable(path))?;
            options = options.nkey(seed.trim().to_owned());
        }
        Ok(options)
    }
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
    security: &NatsSecurity,
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
    let options = security.apply(async_nats::ConnectOptions::new()).await?;
    let client = options
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
