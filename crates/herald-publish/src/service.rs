//! The `Publisher` gRPC service.

use std::time::Instant;

use herald_proto::v1::{PublishRequest, PublishResponse, publisher_server::Publisher};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::metrics::{Metrics, Outcome, Target};
use crate::validate::{TargetKind, validate};

/// Publishes validated events on core NATS.
///
/// Until the JetStream path lands, every event is live only: `event_id` is
/// empty and nothing is stored for replay, whatever `ephemeral` says.
pub struct PublishService {
    pub nats: async_nats::Client,
    pub config: Config,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl Publisher for PublishService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let started = Instant::now();
        let result = self.publish_inner(request.into_inner()).await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(s) if s.code() == tonic::Code::InvalidArgument => Outcome::InvalidArgument,
            Err(_) => Outcome::Unavailable,
        };
        self.metrics.request(outcome);
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}

impl PublishService {
    async fn publish_inner(&self, request: PublishRequest) -> Result<PublishResponse, Status> {
        let publication = validate(request, &self.config)?;
        let headers = publication.envelope.headers();
        for subject in &publication.subjects {
            let data = publication.envelope.data.clone();
            let sent = match &headers {
                Some(h) => {
                    self.nats
                        .publish_with_headers(subject.clone(), h.clone(), data)
                        .await
                }
                None => self.nats.publish(subject.clone(), data).await,
            };
            sent.map_err(|e| Status::unavailable(format!("NATS refused the event: {e}")))?;
        }
        // Surface a broken connection now rather than after the call returned.
        self.nats
            .flush()
            .await
            .map_err(|e| Status::unavailable(format!("NATS did not confirm the event: {e}")))?;
        let target = match publication.kind {
            TargetKind::Users => Target::User,
            TargetKind::Topic => Target::Topic,
        };
        self.metrics
            .events(target, publication.subjects.len() as u64);
        Ok(PublishResponse::default())
    }
}
