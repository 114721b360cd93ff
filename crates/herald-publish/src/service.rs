//! The `Publisher` gRPC service: `Publish` and `PublishBatch`, each call
//! counted, timed and traced. The work itself is in [`crate::send`] and
//! [`crate::batch`], which the HTTP API calls too.

use std::time::Instant;

use async_nats::jetstream;
use herald_core::presence::Follower;
use herald_core::telemetry;
use herald_proto::v1::{
    OfflinePolicy, PublishBatchRequest, PublishBatchResponse, PublishRequest, PublishResponse,
    publisher_server::Publisher,
};
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use crate::config::Config;
use crate::metrics::{Metrics, Outcome};
use crate::streams::Streams;
use crate::validate::{Publication, validate};

/// Publishes validated events: persisted ones into the sharded history
/// streams (JetStream republishes them live), ephemeral ones on core NATS;
/// answers with a receipt per user, and queues offline users' copies for
/// mobile push under the `FALLBACK` policy.
pub struct PublishService {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub config: Config,
    pub metrics: Metrics,
    /// Who is connected, for receipts.
    pub presence: Follower,
    /// Whether the history streams and offline queue exist yet.
    pub streams: Streams,
}

#[tonic::async_trait]
impl Publisher for PublishService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let span = request_span(&request.metadata().clone().into_headers(), "Publish");
        let result = self
            .publish_one(request.into_inner())
            .instrument(span)
            .await;
        result.map(Response::new)
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let span = request_span(&request.metadata().clone().into_headers(), "PublishBatch");
        let requests = request.into_inner().requests;
        let result = self.publish_many(requests).instrument(span).await;
        result.map(Response::new)
    }
}

/// The call's span, child of the caller's `traceparent`.
pub(crate) fn request_span(headers: &http::HeaderMap, method: &'static str) -> Span {
    telemetry::span(|| {
        let span = tracing::info_span!("herald.publish", otel.kind = "server", rpc.method = method);
        telemetry::continue_http(&span, headers);
        span
    })
}

impl PublishService {
    /// One event, counted and timed (gRPC and HTTP both come here).
    pub async fn publish_one(&self, request: PublishRequest) -> Result<PublishResponse, Status> {
        let started = Instant::now();
        let result = self.publish_inner(request).await;
        self.metrics.request(Outcome::of(&result));
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// A batch, each item counted, the call timed.
    pub async fn publish_many(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<PublishBatchResponse, Status> {
        let started = Instant::now();
        let result = self.publish_batch_inner(requests).await;
        if let Err(status) = &result {
            self.metrics.request(Outcome::of_error(status));
        }
        self.metrics
            .batch_latency
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn publish_inner(&self, request: PublishRequest) -> Result<PublishResponse, Status> {
        let ephemeral = request.ephemeral;
        let publication = validate(request, &self.config)?;
        self.connected()?;
        self.can_store(&publication, ephemeral)?;
        self.send(&publication, ephemeral).await?.confirmed().await
    }

    /// Refused at once when the event needs JetStream (persisted, or
    /// queued for mobile push) before its streams exist; ephemeral events
    /// go out from the first second.
    pub fn can_store(&self, publication: &Publication, ephemeral: bool) -> Result<(), Status> {
        let needs_streams = !ephemeral || publication.offline == OfflinePolicy::Fallback;
        if needs_streams && !self.streams.ready() {
            return Err(Status::unavailable(
                "the history streams are not ready yet (JetStream is starting); retry shortly",
            ));
        }
        Ok(())
    }

    /// Refused at once when NATS is not connected: published now, the
    /// event would wait in the client's buffer for a reconnect that may
    /// never come.
    pub fn connected(&self) -> Result<(), Status> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(Status::unavailable("not connected to NATS; retry shortly"));
        }
        Ok(())
    }
}
