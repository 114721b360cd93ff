//! The `Publisher` gRPC service.

use std::time::Instant;

use async_nats::jetstream;
use herald_core::envelope::EVENT_ID_HEADER;
use herald_core::history::{shard_of, stored_subject};
use herald_core::presence::Follower;
use herald_core::subject::UserId;
use herald_core::{offline, telemetry};
use herald_proto::v1::{
    OfflinePolicy, Outcome as ReceiptOutcome, PublishRequest, PublishResponse, Receipt,
    publisher_server::Publisher,
};
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use crate::config::Config;
use crate::metrics::{Metrics, Outcome, Target};
use crate::validate::{Publication, TargetKind, validate};

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
}

#[tonic::async_trait]
impl Publisher for PublishService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let started = Instant::now();
        let span = request_span(&request);
        let result = self
            .publish_inner(request.into_inner())
            .instrument(span)
            .await;
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

/// The call's span, child of the caller's `traceparent`.
fn request_span(request: &Request<PublishRequest>) -> Span {
    telemetry::span(|| {
        let span = tracing::info_span!(
            "herald.publish",
            otel.kind = "server",
            rpc.method = "Publish"
        );
        telemetry::continue_http(&span, &request.metadata().clone().into_headers());
        span
    })
}

impl PublishService {
    async fn publish_inner(&self, request: PublishRequest) -> Result<PublishResponse, Status> {
        let ephemeral = request.ephemeral;
        let publication = validate(request, &self.config)?;
        // Refused at once: published now, the event would wait in the
        // client's buffer for a reconnect that may never come.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(Status::unavailable("not connected to NATS; retry shortly"));
        }
        let receipts = self.receipts(&publication, ephemeral);
        let event_id = match &publication.idempotency_key {
            _ if ephemeral => String::new(),
            Some(key) => key.clone(),
            None => nuid::next().to_string(),
        };
        // Users dropped by policy get no stored copy; all others (and a topic) do.
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for (i, subject) in publication.subjects.iter().enumerate() {
            match receipts.get(i).map(Receipt::outcome) {
                Some(ReceiptOutcome::Dropped) => dropped.push(subject),
                _ => kept.push(subject),
            }
        }
        if ephemeral {
            kept.append(&mut dropped);
            self.publish_live(&publication, &kept).await?;
        } else {
            self.store(&publication, &event_id, &kept).await?;
            // A dropped user may have connected a moment ago: send live, keep nothing.
            self.publish_live(&publication, &dropped).await?;
        }
        let fallback: Vec<&UserId> = publication
            .users
            .iter()
            .zip(&receipts)
            .filter(|(_, r)| r.outcome() == ReceiptOutcome::Fallback)
            .map(|(u, _)| u)
            .collect();
        self.enqueue_offline(&publication, &event_id, &fallback)
            .await?;
        let target = match publication.kind {
            TargetKind::Users => Target::User,
            TargetKind::Topic => Target::Topic,
        };
        self.metrics
            .events(target, publication.subjects.len() as u64);
        for receipt in &receipts {
            self.metrics.receipt(receipt.outcome());
        }
        Ok(PublishResponse { event_id, receipts })
    }

    /// One receipt per user: online (from the presence follower's local
    /// state, no round trip) or what the policy does for an offline user.
    fn receipts(&self, publication: &Publication, ephemeral: bool) -> Vec<Receipt> {
        let directory = self.presence.directory();
        publication
            .users
            .iter()
            .map(|user| {
                let online = directory.is_online(user.as_str());
                let outcome = match publication.offline {
                    _ if online => ReceiptOutcome::Delivered,
                    OfflinePolicy::Fallback => ReceiptOutcome::Fallback,
                    OfflinePolicy::Drop => ReceiptOutcome::Dropped,
                    _ if ephemeral => ReceiptOutcome::Dropped,
                    _ => ReceiptOutcome::Stored,
                };
                Receipt {
                    user_id: user.as_str().to_owned(),
                    online,
                    outcome: outcome as i32,
                }
            })
            .collect()
    }

    /// Core NATS: delivered to whoever listens now, never stored.
    async fn publish_live(
        &self,
        publication: &Publication,
        subjects: &[&String],
    ) -> Result<(), Status> {
        if subjects.is_empty() {
            return Ok(());
        }
        let span = telemetry::span(|| {
            tracing::info_span!("herald.publish_live", subjects = subjects.len())
        });
        let mut headers = publication.envelope.headers();
        // The edges continue the trace from the message.
        telemetry::inject_nats(&span, &mut headers);
        let publishing = async {
            for subject in subjects {
                let data = publication.envelope.data.clone();
                self.nats
                    .publish_with_headers((*subject).clone(), headers.clone(), data)
                    .await
                    .map_err(|e| Status::unavailable(format!("NATS refused the event: {e}")))?;
            }
            // No flush: the NATS client writes buffered publishes
            // together, which carries a third more ephemeral events per
            // second (measured with herald-bench publish) than one flush
            // per call.
            Ok::<(), Status>(())
        };
        publishing.instrument(span).await
    }

    /// JetStream: returns once every copy is acknowledged as stored.
    async fn store(
        &self,
        publication: &Publication,
        event_id: &str,
        subjects: &[&String],
    ) -> Result<(), Status> {
        let span =
            telemetry::span(|| tracing::info_span!("herald.store", subjects = subjects.len()));
        let mut headers = publication.envelope.headers();
        headers.insert(EVENT_ID_HEADER, event_id);
        // The edges continue the trace from the stored (republished) copy.
        telemetry::inject_nats(&span, &mut headers);
        let shards = self.config.history.history_shards;
        let mut acks = Vec::with_capacity(subjects.len());
        // Send every copy first, then wait for the acks together: one round
        // trip for a publish to many users, not one per user.
        for subject in subjects {
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
        await_acks(acks, "history").instrument(span).await
    }

    /// Puts the event on the offline queue of each of `users`, for the
    /// mobile-push worker; returns once every copy is stored.
    async fn enqueue_offline(
        &self,
        publication: &Publication,
        event_id: &str,
        users: &[&UserId],
    ) -> Result<(), Status> {
        let mut acks = Vec::with_capacity(users.len());
        // An ephemeral event has no id; the queue still needs one to dedupe.
        let event_id = Some(event_id)
            .filter(|id| !id.is_empty())
            .map_or_else(|| nuid::next().to_string(), str::to_owned);
        for user in users {
            let mut headers = publication.envelope.headers();
            headers.insert(EVENT_ID_HEADER, event_id.as_str());
            headers.insert(offline::USER_HEADER, user.as_str());
            let subject = offline::subject(user);
            headers.insert("Nats-Msg-Id", format!("{event_id}:{subject}").as_str());
            let ack = self
                .js
                .publish_with_headers(subject, headers, publication.envelope.data.clone())
                .await
                .map_err(|e| {
                    Status::unavailable(format!("cannot queue the event for mobile push: {e}"))
                })?;
            acks.push(ack);
        }
        await_acks(acks, "the offline queue").await
    }
}

/// Waits for every JetStream ack; the first failure fails the call.
async fn await_acks(
    acks: Vec<jetstream::context::PublishAckFuture>,
    store: &str,
) -> Result<(), Status> {
    let acks = acks.into_iter().map(std::future::IntoFuture::into_future);
    for ack in futures::future::join_all(acks).await {
        ack.map_err(|e| Status::unavailable(format!("{store} did not confirm the event: {e}")))?;
    }
    Ok(())
}
