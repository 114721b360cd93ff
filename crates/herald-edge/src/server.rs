//! The edge's serve loop: accepts HTTP/1.1 and HTTP/2 (h2c), and drains on
//! shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use herald_core::admin::Readiness;
use herald_core::nats::Losses;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::Config;
use crate::drain::Drain;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::presence::Reporter;
use crate::ratelimit::ConnectLimiter;

/// Response body type of every edge response.
pub type Body = BoxBody<Bytes, Infallible>;

/// How long idle HTTP connections get to close after the streams are gone.
const CONNECTION_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn full(bytes: Bytes) -> Body {
    BodyExt::boxed(Full::new(bytes))
}

/// State shared by every request on one edge.
pub struct State {
    pub config: Config,
    pub fanout: Arc<Fanout>,
    pub admission: Arc<Admission>,
    /// Per-user connect rate.
    pub connects: ConnectLimiter,
    pub drain: Arc<Drain>,
    pub metrics: Metrics,
    /// Changes when live events may have been missed.
    pub losses: Losses,
    /// History, for resuming from a cursor.
    pub js: async_nats::jetstream::Context,
    /// Source of connection ids.
    pub next_id: AtomicU64,
}

/// One edge node, ready to serve.
pub struct Edge {
    state: Arc<State>,
    ready: Readiness,
    /// Taken when serving starts.
    reporter: Option<Reporter>,
}

impl Edge {
    /// Builds the edge on a NATS connection and registers its metrics.
    /// `losses` tells when live events may have been missed: every open
    /// stream then ends, and its client resumes from its cursor.
    pub fn new(
        config: Config,
        nats: async_nats::Client,
        losses: Losses,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::register(registry);
        herald_core::nats::register_metrics(registry, &nats);
        let admission = Admission::new(config.max_connections, config.max_connections_per_user);
        let reporter = Reporter::new(
            nats.clone(),
            admission.clone(),
            config.node_id.clone(),
            config.presence_heartbeat,
            registry,
        );
        let state = State {
            js: async_nats::jetstream::new(nats.clone()),
            fanout: Fanout::new(nats, losses.clone(), metrics.clone()),
            losses,
            admission,
            connects: ConnectLimiter::new(config.connect_rate),
            drain: Arc::new(Drain::new(config.drain_window)),
            metrics,
            next_id: AtomicU64::new(0),
            config,
        };
        Self {
            state: Arc::new(state),
            ready: Readiness::default(),
            reporter: Some(reporter),
        }
    }

    /// Readiness for the admin port: true while serving, false while draining.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Serves until `shutdown`, then drains: refuses new streams, closes
    /// open ones over the drain window, and returns when all are gone or
    /// the grace period ends.
    pub async fn serve(mut self, listener: TcpListener, shutdown: CancellationToken) {
        let stop_reporting = CancellationToken::new();
        let reporter = self.reporter.take().expect("serve runs once");
        let reporting = match reporter.start(stop_reporting.clone()).await {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to presence requests; presence will not see this edge");
                None
            }
        };
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let tls = self.state.config.tls.as_ref();
        let tls = tls.map(|tls| tls.start(stop_reporting.clone()));
        let accept =
            |stream: TcpStream| self.spawn_connection(&builder, &graceful, tls.as_ref(), stream);

        self.ready.set(true);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = accept_loop(&listener, &accept) => {}
        }

        tracing::info!(open = self.state.admission.open(), "draining");
        self.ready.set(false);
        self.state.drain.start();
        let grace = tokio::time::sleep(self.state.config.drain_grace);
        tokio::select! {
            _ = grace => tracing::warn!(open = self.state.admission.open(), "drain grace ended with streams open"),
            _ = self.streams_gone() => {}
            _ = accept_loop(&listener, &accept) => {} // still answering 503 meanwhile
        }
        drop(listener);
        if tokio::time::timeout(CONNECTION_CLOSE_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some HTTP connections did not close in time");
        }
        stop_reporting.cancel();
        if let Some(task) = reporting {
            let _ = task.await;
        }
        tracing::info!("drained");
    }

    async fn streams_gone(&self) {
        while self.state.admission.open() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn_connection(
        &self,
        builder: &auto::Builder<TokioExecutor>,
        graceful: &GracefulShutdown,
        tls: Option<&TlsAcceptor>,
        stream: TcpStream,
    ) {
        let _ = stream.set_nodelay(true);
        let state = self.state.clone();
        let transport = CancellationToken::new();
        let kill = transport.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let http1 = req.version() < http::Version::HTTP_2;
            let transport = http1.then(|| transport.clone());
            let state = state.clone();
            // Boxed: hyper keeps the allocation of its service future for
            // the connection's whole life, and the route future is large;
            // a box is freed as soon as the response head is out (about
            // 3 KiB less per idle stream, measured with heaptrack).
            let route = Box::pin(crate::events::route(req, state, transport));
            async move { Ok::<_, Infallible>(route.await) }
        });
        let watcher = graceful.watcher();
        let Some(tls) = tls.cloned() else {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(until_killed(watcher.watch(connection.into_owned()), kill));
            return;
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    until_killed(watcher.watch(connection.into_owned()), kill).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}

/// Runs a connection until it ends, or until `kill` (a slow consumer on
/// HTTP/1.1) drops it.
async fn until_killed<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    kill: CancellationToken,
) {
    tokio::select! {
        result = connection => if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        },
        _ = kill.cancelled() => tracing::debug!("connection dropped (slow consumer)"),
    }
}

/// Accepts until the listener fails for good; transient errors (e.g. out of
/// file descriptors) are logged and retried after a pause.
async fn accept_loop(listener: &TcpListener, accept: &impl Fn(TcpStream)) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => accept(stream),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
