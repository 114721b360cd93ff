//! The edge's serve loop: accepts HTTP/1.1 and HTTP/2 (h2c, or by ALPN
//! under TLS) within the listener's bounds, and drains on shutdown.
//! Plain HTTP/1.1 streams are served without hyper ([`crate::http1::plain`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use herald_core::listener::{Accepted, Listener};
use herald_core::readiness::Readiness;
use herald_core::serve::{self, Http, Opening};
use herald_nats::connection::{LossCounter, NatsSecurity};
use prometheus_client::registry::Registry;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::Config;
use crate::drain::Drain;
use crate::fanout::fill::{Filler, HistoryReader};
use crate::fanout::{Fanout, NatsSubscriber, SubscriptionsCollector};
use crate::http1::beats::Beats;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::orders::follows::Follows;
use crate::orders::revocations::Revocations;
use crate::ratelimit::ConnectLimiter;
use crate::report::Reporter;
use crate::resume::reads::Reads;
use crate::resume::tails::Tails;
use crate::state::State;

/// How the edge reaches NATS.
pub struct Nats<'a> {
    /// Publishes presence, reads history. Its own reconnects (a NATS
    /// upgrade closes it) end no stream: live events do not come on it.
    pub client: async_nats::Client,
    /// What the subscription connection logs in with: the client's URLs,
    /// credentials and name.
    pub urls: &'a [String],
    pub security: &'a NatsSecurity,
    pub name: &'a str,
    /// What holds the streams' subjects on that connection: the lean
    /// subscriber, or async-nats to check it against.
    pub subscriber: NatsSubscriber,
}

/// One edge node, ready to serve.
pub struct Edge {
    state: Arc<State>,
    ready: Readiness,
    /// The main NATS client, whose connection readiness follows (with
    /// the subscription connection's).
    nats: async_nats::Client,
    /// Taken when serving starts.
    reporter: Option<Reporter>,
    /// Stops following the control buckets.
    following: CancellationToken,
}

impl Edge {
    /// Builds the edge on NATS and registers its metrics: `nats.client`
    /// publishes, requests and reads history; the streams' subjects are
    /// held on a second, lean connection logged in the same way. When
    /// that one may have missed live events (it lost its server), every
    /// open stream ends, and its client resumes from its cursor; a move
    /// away from a server in lame duck mode loses nothing and ends none.
    pub async fn connect(
        config: Config,
        nats: Nats<'_>,
        registry: &mut Registry,
    ) -> Result<Self, herald_subscriptions::ConnectError> {
        let metrics = Metrics::register(registry);
        let Nats {
            client,
            urls,
            security,
            name,
            subscriber,
        } = nats;
        herald_core::nats_metrics::register(registry, &client);
        let losses = LossCounter::new(0);
        let js = async_nats::jetstream::new(client.clone());
        let filler = Filler::new(HistoryReader {
            js: js.clone(),
            shards: config.history.history_shards,
            reads: Reads::for_replicas(config.history.history_replicas),
        });
        // A server in a named cluster: interest reaches the stream
        // leader's server a moment after a subscription. (A lone server
        // may advertise its own URL in `connect_urls`.)
        let in_cluster = client
            .server_info()
            .cluster
            .is_some_and(|name| !name.is_empty());
        let fanout = Fanout::connect(
            subscriber,
            urls,
            security,
            name,
            losses.clone(),
            metrics.clone(),
            filler,
            in_cluster,
        );
        let fanout = fanout.await?;
        registry.register_collector(Box::new(SubscriptionsCollector(fanout.stats_reader())));
        let admission = Admission::new(config.max_connections, config.max_connections_per_user);
        let reporter = Reporter::new(
            client.clone(),
            admission.clone(),
            config.node_id.clone(),
            config.regions[0].to_string(),
            config.presence_heartbeat,
            registry,
        );
        let following = CancellationToken::new();
        let lifecycle = config.lifecycle_events.then(|| {
            let dropped = metrics.lifecycle_dropped.clone();
            Lifecycle::start(
                client.clone(),
                config.node_id.clone(),
                dropped,
                following.clone(),
            )
        });
        let state = State {
            js,
            tails: Tails::new(config.history.history_shards, metrics.tail_reads.clone()),
            fanout,
            losses,
            admission,
            connects: ConnectLimiter::new(config.connect_rate),
            drain: Arc::new(Drain::new(config.drain_window)),
            metrics: Arc::new(metrics),
            next_id: AtomicU64::new(0),
            beats: Beats::new(config.heartbeat, config.write_timeout),
            revocations: Revocations::default(),
            follows: Follows::default(),
            lifecycle,
            config,
        };
        let state = Arc::new(state);
        crate::orders::follow_buckets(&state, &following).await;
        Ok(Self {
            state,
            ready: Readiness::default(),
            nats: client,
            reporter: Some(reporter),
            following,
        })
    }

    /// Readiness for the admin port: ready while serving with both NATS
    /// connections up, unready for good once draining.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Serves until `shutdown`, then drains: refuses new streams, closes
    /// open ones over the drain window, and returns when all are gone or
    /// the grace period ends. The listener bounds every connection (see
    /// [`herald_core::serve`]); its sockets are counted in this edge's metrics.
    pub async fn serve(mut self, listener: impl Into<Listener>, shutdown: CancellationToken) {
        let listener = listener
            .into()
            .counting_in(self.state.metrics.sockets.clone());
        let stop_reporting = CancellationToken::new();
        let reporter = self.reporter.take().expect("serve runs once");
        let reporting = match reporter.start(stop_reporting.clone()).await {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to presence requests; presence will not see this edge");
                None
            }
        };
        let controlled = crate::orders::start(
            self.state.clone(),
            self.nats.clone(),
            stop_reporting.clone(),
        );
        let controlled = match controlled.await {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to control orders; Disconnect, Revoke and Follow will not reach this edge");
                None
            }
        };
        let forgetting = tokio::spawn({
            let state = self.state.clone();
            let stop = stop_reporting.clone();
            async move { state.connects.forget_refilled(stop).await }
        });
        let beating = tokio::spawn({
            let state = self.state.clone();
            let stop = stop_reporting.clone();
            async move { state.beats.run(stop).await }
        });
        let http = Http::auto(&listener);
        let tls = self.state.config.tls.as_ref();
        let tls = tls.map(|tls| tls.start(stop_reporting.clone()));
        let close_connections = CancellationToken::new();
        let accept = |accepted: Accepted| {
            self.spawn_connection(&http, tls.as_ref(), accepted, &close_connections)
        };

        // New clients go elsewhere while either connection is down (their
        // streams would open deaf, or be refused), and until revoked
        // tokens are known (they would be refused).
        let (nats, subscriptions) = (self.nats.clone(), self.state.fanout.stats_reader());
        let state = self.state.clone();
        let both_connected = move || {
            herald_nats::connection::is_connected(&nats)
                && subscriptions.read().connected
                && state.revocations.is_loaded()
        };
        self.ready
            .follow_connections(both_connected, stop_reporting.clone());
        self.ready.warm();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            never = serve::accept_each(&listener, &accept) => match never {},
        }

        tracing::info!(open = self.state.admission.open(), "draining");
        self.ready.drain();
        self.state.drain.start();
        let grace = tokio::time::sleep(self.state.config.drain_grace);
        let drained = async {
            let streams = self.state.fanout.streams();
            self.state.drain.close_over_window(streams).await;
            self.streams_gone().await;
        };
        tokio::select! {
            _ = grace => tracing::warn!(open = self.state.admission.open(), "drain grace ended with streams open"),
            _ = drained => {}
            // Still answering 503 meanwhile.
            never = serve::accept_each(&listener, &accept) => match never {},
        }
        // Plain streams run as tasks of their own, not as connections
        // that watch `close_connections`: their grace over, they are cut.
        let cutting = async {
            close_connections.cancelled().await;
            tokio::time::sleep(serve::CLOSE_GRACE).await;
            self.state.beats.cut_all();
            std::future::pending::<()>().await
        };
        tokio::select! {
            biased;
            () = serve::close(listener, &close_connections) => {}
            never = cutting => never,
        }
        stop_reporting.cancel();
        if let Some(task) = reporting {
            let _ = task.await;
        }
        if let Some(task) = controlled {
            let _ = task.await;
        }
        self.following.cancel();
        let _ = forgetting.await;
        let _ = beating.await;
        tracing::info!("drained");
    }

    async fn streams_gone(&self) {
        while self.state.admission.open() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn_connection(
        &self,
        http: &Http,
        tls: Option<&TlsAcceptor>,
        accepted: Accepted,
        close: &CancellationToken,
    ) {
        let state = self.state.clone();
        give_up_on_silent_peers(&accepted.stream, state.config.write_timeout);
        match tls {
            // Plain HTTP/1.1 streams skip hyper (see `plain`).
            None => {
                let serving =
                    crate::http1::plain::serve(accepted, state, http.clone(), close.clone());
                tokio::spawn(serving);
            }
            Some(tls) => {
                let opening = Opening::Tls(tls.clone());
                let transport = CancellationToken::new();
                let serving =
                    crate::service::serve(http, accepted, opening, state, transport, close.clone());
                tokio::spawn(serving);
            }
        }
    }
}

/// How long past `--write-timeout` the kernel keeps trying a peer that
/// acknowledges nothing: room for a lossy link's retransmissions, whose
/// back-off reaches several seconds, and for the edge's own write timeout
/// to end first a stream whose client is there but not reading (its
/// closed window is probed, and Linux 5.11+ gives up on that too).
const RETRANSMIT_ROOM: Duration = Duration::from_secs(30);

/// A peer that vanished without a reset (a phone off the network, a NAT
/// that forgot the flow) acknowledges nothing, while the socket still
/// takes the heartbeats sent to it: the kernel would retransmit them for
/// some 15 minutes (`tcp_retries2`), and the stream would hold its slot
/// and subjects all along. With `TCP_USER_TIMEOUT` it gives up once sent
/// data has gone unacknowledged for `--write-timeout` + [`RETRANSMIT_ROOM`],
/// and the stream ends as `client_gone`: a vanished peer is found within
/// `--heartbeat` + that (75 s by default).
fn give_up_on_silent_peers(stream: &tokio::net::TcpStream, write_timeout: Duration) {
    let timeout = write_timeout + RETRANSMIT_ROOM;
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_give_up_on_a_silent_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (_client, accepted) = tokio::join!(client, listener.accept());
        let (stream, _) = accepted.unwrap();
        give_up_on_silent_peers(&stream, Duration::from_secs(30));
        let set = socket2::SockRef::from(&stream).tcp_user_timeout().unwrap();
        assert_eq!(set, Some(Duration::from_secs(60)));
    }
}
