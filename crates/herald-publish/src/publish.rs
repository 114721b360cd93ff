//! The calls: `Publish` and `PublishBatch`, each counted, timed and
//! traced, for the gRPC `Publisher` service and the HTTP API alike. The
//! work itself is in [`crate::send`] and [`crate::batch`].

use std::time::Instant;

use herald_proto::v1::{
    PublishBatchRequest, PublishBatchResponse, PublishRequest, PublishResponse,
    publisher_server::Publisher,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::metrics::Outcome;
use crate::service::{PublishService, request_span};
use crate::validate::validate;

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
}
