//! herald-push-worker: sends events that herald-publish queued for offline
//! users (`FALLBACK` policy) as mobile push through the FCM HTTP v1 API,
//! and keeps each user's device tokens.
//!
//! # Layout
//! - [`config`]: flags, env vars, validation, the retry policy.
//! - [`account`]: the Firebase service-account key file.
//! - [`worker`]: the queue consumer: send, retry, acknowledge.
//! - [`fcm`]: the FCM client (service-account sign-in, `messages:send`).
//! - [`https`]: the HTTPS client FCM is reached with.
//! - [`devices`]: device tokens in a JetStream key-value bucket.
//! - [`api`]: the device registration HTTP API.
//! - [`metrics`].

pub mod account;
pub mod api;
pub mod config;
pub mod devices;
pub mod fcm;
pub mod https;
pub mod metrics;
pub mod worker;

pub use config::{Args, Config};
pub use worker::Worker;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use herald_core::api_token::ApiToken;
use herald_nats::offline;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio_util::sync::CancellationToken;

/// Why the worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Devices(#[from] devices::DevicesError),
    #[error(transparent)]
    Fcm(#[from] fcm::FcmError),
}

/// The whole worker: queue consumer and registration API.
pub struct PushWorker {
    worker: Worker,
    js: jetstream::Context,
    /// The offline queue this worker empties: its region's.
    queue: String,
    api_token: Option<String>,
    tls: Option<herald_core::tls::ServerTls>,
    /// The API port's sockets.
    sockets: herald_core::listener::SocketMetrics,
}

impl PushWorker {
    /// Opens the device bucket; the error names what failed.
    pub async fn start(
        config: Config,
        nats: async_nats::Client,
        registry: &mut MetricsRegistry,
    ) -> Result<Self, StartError> {
        herald_core::nats_metrics::register(registry, &nats);
        let sockets = herald_core::listener::SocketMetrics::register(
            registry.sub_registry_with_prefix("herald_push"),
        );
        let js = jetstream::new(nats);
        let devices =
            devices::Registry::open(&js, config.devices_replicas, config.max_devices).await?;
        let worker = Worker {
            fcm: Arc::new(fcm::FcmClient::new(config.fcm)?),
            devices,
            retry: config.retry,
            metrics: metrics::Metrics::register(registry),
            concurrency: config.concurrency,
            drain_grace: config.drain_grace,
        };
        Ok(Self {
            worker,
            js,
            queue: offline::stream_name(&config.region),
            api_token: config.api_token,
            tls: config.tls,
            sockets,
        })
    }

    /// Serves the API and consumes the queue until `shutdown`. The queue
    /// is created by herald-publish; until it exists the worker waits.
    pub async fn serve(
        self,
        listener: impl Into<herald_core::listener::Listener>,
        ready: herald_core::readiness::Readiness,
        shutdown: CancellationToken,
    ) {
        let listener = listener.into().counting_in(self.sockets);
        let api_token = ApiToken::new(self.api_token, self.worker.metrics.refused.clone());
        let tls = self.tls.map(|tls| tls.start(shutdown.clone()));
        let api = tokio::spawn(api::serve(
            listener,
            tls,
            self.worker.devices.clone(),
            api_token,
            shutdown.clone(),
        ));
        ready.waiting_for(format!("the offline queue ({})", self.queue));
        ready.follow_nats(&self.js.client(), shutdown.clone());
        // Unready from the signal on, while events in hand finish.
        tokio::spawn({
            let (ready, shutdown) = (ready.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                ready.drain();
            }
        });
        let stream = tokio::select! {
            _ = shutdown.cancelled() => None,
            stream = wait_for_queue(&self.js, &self.queue) => Some(stream),
        };
        if let Some(stream) = stream {
            ready.warm();
            if let Err(e) = self.worker.run(stream, shutdown.clone()).await {
                tracing::error!(error = %e, "the push worker stopped");
            }
        }
        // Stopped, whether by a signal or not: no more events taken.
        ready.drain();
        let _ = api.await;
    }
}

async fn wait_for_queue(js: &jetstream::Context, queue: &str) -> jetstream::stream::Stream {
    let mut warned = false;
    loop {
        match js.get_stream(queue).await {
            Ok(stream) => return stream,
            Err(e) if !warned => {
                tracing::warn!(error = %e, stream = queue, "waiting for herald-publish to create the offline queue");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
