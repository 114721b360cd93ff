//! The `Publisher` gRPC service.

use std::time::Instant;

use async_nats::jetstream;
use herald_core::history::{shard_of, stored_subject};
use herald_proto::v1::{PublishRequest, PublishResponse, publisher_server::Publisher};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::metrics::{Metrics, Outcome, Target};
use crate::validate::{Publication, TargetKind, validate};

/// Header carrying the id `Publish` returned, on every stored copy.
pub const EVENT_ID_HEADER: &str = "Herald-Event-Id";

/// Publishes validated events: persisted ones into the sharded history
/// streams (JetStream republishes them live), ephemeral ones on core NATS.
pub struct PublishService {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
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
        let ephemeral = request.ephemeral;
        let publication = validate(request, &self.config)?;
        let event_id = if ephemeral {
            self.publish_live(&publication).await?;
            String::new()
        } else {
            self.store(&publication).await?
        };
        let target = match publication.kind {
            TargetKind::Users => Target::User,
            TargetKind::Topic => Target::Topic,
        };
        self.metrics
            .events(target, publication.subjects.len() as u64);
        Ok(PublishResponse {
            event_id,
            receipts: Vec::new(),
        })
    }

    /// Core NATS: delivered to whoever listens now, never stored.
    async fn publish_live(&self, publication: &Publication) -> Result<(), Status> {
        let headers = publication.envelope.headers().unwrap_or_default();
        for subject in &publication.subjects {
            let data = publication.envelope.data.clone();
            self.nats
                .publish_with_headers(subject.clone(), headers.clone(), data)
                .await
                .map_err(|e| Status::unavailable(format!("NATS refused the event: {e}")))?;
        }
        // Surface a broken connection now rather than after the call returned.
        self.nats
            .flush()
            .await
            .map_err(|e| Status::unavailable(format!("NATS did not confirm the event: {e}")))
    }

    /// JetStream: returns once every copy is acknowledged as stored.
    async fn store(&self, publication: &Publication) -> Result<String, Status> {
        let event_id = match &publication.idempotency_key {
            Some(key) => key.clone(),
            None => nuid::next().to_string(),
        };
        let mut headers = publication.envelope.headers().unwrap_or_default();
        headers.insert(EVENT_ID_HEADER, event_id.as_str());
        let shards = self.config.history.history_shards;
        let mut acks = Vec::with_capacity(publication.subjects.len());
        // Send every copy first, then wait for the acks together: one round
        // trip for a publish to many users, not one per user.
        for subject in &publication.subjects {
            let mut headers = headers.clone();
            // JetStream stores a copy with a Msg-Id it saw within its
            // duplicate window once: a retried Publish with the same
            // idempotency key (hence event id) is not stored twice.
            headers.insert("Nats-Msg-Id", format!("{event_id}:{subject}").as_str());
            let stored = stored_subject(subject, shard_of(subject, shards));
            let ack = self
                .js
                .publish_with_headers(stored, headers, publication.envelope.data.clone())
                .await
                .map_err(|e| Status::unavailable(format!("cannot store the event: {e}")))?;
            acks.push(ack);
        }
        let acks = acks.into_iter().map(std::future::IntoFuture::into_future);
        for ack in futures::future::join_all(acks).await {
            ack.map_err(|e| {
                Status::unavailable(format!("history did not confirm the event: {e}"))
            })?;
        }
        Ok(event_id)
    }
}
