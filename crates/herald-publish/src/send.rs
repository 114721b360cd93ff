//! Putting one validated event on NATS without waiting for JetStream:
//! every copy is sent at once and the acknowledgements come back as a
//! [`Sent`], so a batch (or many callers) keeps many stores in flight on
//! one connection instead of paying a round trip each.

use async_nats::jetstream::context::PublishAckFuture;
use herald_core::telemetry;
use herald_domain::subject::UserId;
use herald_nats::envelope::EVENT_ID_HEADER;
use herald_nats::history::{shard_of, stored_subject};
use herald_nats::offline;
use herald_proto::v1::{OfflinePolicy, Outcome as ReceiptOutcome, PublishResponse, Receipt};
use tonic::Status;
use tracing::Instrument;

use crate::metrics::Target;
use crate::service::PublishService;
use crate::validate::{Publication, TargetKind};

/// An event handed to NATS: its answer, once JetStream confirms each stored copy.
#[must_use = "the event is confirmed only once its acks are awaited"]
pub struct Sent {
    response: PublishResponse,
    /// Pending JetStream acks, each with the store it names in an error.
    acks: Vec<(PublishAckFuture, &'static str)>,
}

impl Sent {
    /// Waits for every JetStream ack; the first failure fails the event.
    pub async fn confirmed(self) -> Result<PublishResponse, Status> {
        let acks = self.acks.into_iter().map(|(ack, store)| async move {
            ack.await
                .map_err(|e| Status::unavailable(format!("{store} did not confirm the event: {e}")))
        });
        for ack in futures::future::join_all(acks).await {
            ack?;
        }
        Ok(self.response)
    }
}

impl PublishService {
    /// Sends every copy of `publication`: persisted copies into the
    /// history streams, live ones on core NATS, offline users' copies to
    /// the mobile-push queue. Copies sent in order on this connection are
    /// stored in that order, so events to one user or topic keep theirs.
    pub async fn send(&self, publication: &Publication, ephemeral: bool) -> Result<Sent, Status> {
        let receipts = self.receipts(publication, ephemeral);
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
        let mut acks = Vec::new();
        if ephemeral {
            kept.append(&mut dropped);
            self.publish_live(publication, &kept).await?;
        } else {
            self.store(publication, &event_id, &kept, &mut acks).await?;
            // A dropped user may have connected a moment ago: send live, keep nothing.
            self.publish_live(publication, &dropped).await?;
        }
        let fallback: Vec<&UserId> = publication
            .users
            .iter()
            .zip(&receipts)
            .filter(|(_, r)| r.outcome() == ReceiptOutcome::Fallback)
            .map(|(u, _)| u)
            .collect();
        self.enqueue_offline(publication, &event_id, &fallback, &mut acks)
            .await?;
        self.count(publication, &receipts);
        let response = PublishResponse { event_id, receipts };
        Ok(Sent { response, acks })
    }

    fn count(&self, publication: &Publication, receipts: &[Receipt]) {
        let target = match publication.kind {
            TargetKind::Users => Target::User,
            TargetKind::Topic => Target::Topic,
        };
        self.metrics
            .events(target, publication.subjects.len() as u64);
        for receipt in receipts {
            self.metrics.receipt(receipt.outcome());
        }
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
                let origin = self.config.region.origin(subject);
                self.nats
                    .publish_with_headers(origin, headers.clone(), data)
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

    /// JetStream: sends a copy per subject; its ack goes into `acks`.
    async fn store(
        &self,
        publication: &Publication,
        event_id: &str,
        subjects: &[&String],
        acks: &mut Vec<(PublishAckFuture, &'static str)>,
    ) -> Result<(), Status> {
        let span =
            telemetry::span(|| tracing::info_span!("herald.store", subjects = subjects.len()));
        let mut headers = publication.envelope.headers();
        headers.insert(EVENT_ID_HEADER, event_id);
        // The edges continue the trace from the stored (republished) copy.
        telemetry::inject_nats(&span, &mut headers);
        let shards = self.config.history.history_shards;
        let storing = async {
            for subject in subjects {
                let mut headers = headers.clone();
                // JetStream stores a copy with a Msg-Id it saw within its
                // duplicate window once: a retried Publish with the same
                // idempotency key (hence event id) is not stored twice.
                headers.insert("Nats-Msg-Id", format!("{event_id}:{subject}").as_str());
                let origin = self.config.region.origin(subject);
                let stored = stored_subject(&origin, shard_of(&origin, shards));
                let ack = self
                    .js
                    .publish_with_headers(stored, headers, publication.envelope.data.clone())
                    .await
                    .map_err(|e| Status::unavailable(format!("cannot store the event: {e}")))?;
                acks.push((ack, "history"));
            }
            Ok(())
        };
        storing.instrument(span).await
    }

    /// Puts the event on the offline queue of each of `users`, for the
    /// mobile-push worker; each copy's ack goes into `acks`.
    async fn enqueue_offline(
        &self,
        publication: &Publication,
        event_id: &str,
        users: &[&UserId],
        acks: &mut Vec<(PublishAckFuture, &'static str)>,
    ) -> Result<(), Status> {
        // An ephemeral event has no id; the queue still needs one to dedupe.
        let event_id = Some(event_id)
            .filter(|id| !id.is_empty())
            .map_or_else(|| nuid::next().to_string(), str::to_owned);
        for user in users {
            let mut headers = publication.envelope.headers();
            headers.insert(EVENT_ID_HEADER, event_id.as_str());
            headers.insert(offline::USER_HEADER, user.as_str());
            let subject = offline::subject(user, &self.config.region);
            headers.insert("Nats-Msg-Id", format!("{event_id}:{subject}").as_str());
            let ack = self
                .js
                .publish_with_headers(subject, headers, publication.envelope.data.clone())
                .await
                .map_err(|e| {
                    Status::unavailable(format!("cannot queue the event for mobile push: {e}"))
                })?;
            acks.push((ack, "the offline queue"));
        }
        Ok(())
    }
}
