//! Takes events off the offline queue and sends each to every device of
//! its user. A queue message is acknowledged only once every device has a
//! terminal outcome (sent, unregistered, rejected, or out of tries); until
//! then the worker tells JetStream it is still working, and if it dies the
//! message is delivered again (at least once).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesError;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use herald_core::shutdown::within_grace;
use herald_domain::subject::UserId;
use herald_nats::envelope::{EVENT_HEADER, EVENT_ID_HEADER};
use herald_nats::offline;
use tokio_util::sync::CancellationToken;

use crate::config::RetryPolicy;
use crate::devices::Registry;
use crate::fcm::{FcmClient, PushMessage, SendOutcome};
use crate::metrics::{DeviceOutcome, EventOutcome, Metrics};

/// The durable consumer every worker replica shares.
pub const CONSUMER: &str = "herald-push";
/// JetStream redelivers a message not acknowledged (nor marked in
/// progress) within this time.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// While waiting to retry, the worker says "in progress" this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Pause before a message whose devices could not be read comes back.
const REGISTRY_RETRY: Duration = Duration::from_secs(5);

/// Why the worker cannot consume the queue.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot create the queue consumer: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    #[error("cannot read the queue: {0}")]
    Read(#[from] jetstream::consumer::StreamError),
}

/// The mobile-push worker.
#[derive(Clone)]
pub struct Worker {
    pub fcm: Arc<FcmClient>,
    pub devices: Registry,
    pub retry: RetryPolicy,
    pub metrics: Metrics,
    pub concurrency: usize,
    /// How long events in hand may take to finish once shutdown begins.
    pub drain_grace: Duration,
}

impl Worker {
    /// Consumes until `shutdown`; events in hand then get the drain grace
    /// to finish, and those cut are delivered again (not acknowledged).
    pub async fn run(
        self,
        stream: jetstream::stream::Stream,
        shutdown: CancellationToken,
    ) -> Result<(), ConsumeError> {
        let config = pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: i64::try_from(self.concurrency).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer = stream.get_or_create_consumer(CONSUMER, config).await?;
        let messages = consumer.messages().await?;
        // Boxed as `dyn Send` here, where its lifetimes are concrete:
        // through `within_grace`'s generic parameter the compiler fails to
        // prove it `Send` for the task that runs the worker (its
        // higher-ranked lifetime check gives up on the closure's futures).
        let consuming: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(
            messages
                .take_until(shutdown.clone().cancelled_owned())
                .for_each_concurrent(self.concurrency, |message| self.take(message)),
        );
        if within_grace(consuming, &shutdown, self.drain_grace)
            .await
            .is_none()
        {
            tracing::warn!(grace = ?self.drain_grace, "events still in hand at the end of the drain grace; JetStream delivers them again");
        }
        Ok(())
    }

    /// Handles one message the queue gave, or logs why it gave none.
    async fn take(&self, message: Result<jetstream::Message, MessagesError>) {
        match message {
            Ok(message) => self.handle(message).await,
            Err(e) => tracing::warn!(error = %e, "offline queue read failed; continuing"),
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let Some(user) = offline::user_of(&message.subject) else {
            tracing::warn!(subject = %message.subject, "not an offline-queue subject; dropped");
            self.finish(&message, EventOutcome::Malformed).await;
            return;
        };
        let devices = match self.devices.list(&user).await {
            Ok(devices) => devices,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read devices; the event comes back later");
                let _ = message.ack_with(AckKind::Nak(Some(REGISTRY_RETRY))).await;
                return;
            }
        };
        if devices.is_empty() {
            self.finish(&message, EventOutcome::NoDevice).await;
            return;
        }
        let push = push_message(&message);
        let sends = devices
            .iter()
            .map(|d| self.deliver(&message, &user, d, &push));
        let outcomes = futures::future::join_all(sends).await;
        let outcome = if outcomes.contains(&DeviceOutcome::Sent) {
            EventOutcome::Delivered
        } else {
            EventOutcome::Failed
        };
        self.finish(&message, outcome).await;
    }

    /// Sends to one device until a terminal outcome.
    async fn deliver(
        &self,
        message: &jetstream::Message,
        user: &UserId,
        device: &str,
        push: &PushMessage,
    ) -> DeviceOutcome {
        for attempt in 1..=self.retry.max_attempts {
            let started = std::time::Instant::now();
            let outcome = self.fcm.send(device, push).await;
            self.metrics
                .send_duration
                .observe(started.elapsed().as_secs_f64());
            let terminal = match outcome {
                SendOutcome::Sent => DeviceOutcome::Sent,
                SendOutcome::Unregistered => {
                    if let Err(e) = self.devices.remove(user, device).await {
                        tracing::warn!(error = %e, "cannot forget an unregistered device");
                    }
                    DeviceOutcome::Unregistered
                }
                SendOutcome::Rejected(reason) => {
                    tracing::warn!(reason, "FCM rejected a push");
                    DeviceOutcome::Rejected
                }
                SendOutcome::Retry {
                    reason,
                    retry_after,
                } => {
                    self.metrics.retries.inc();
                    if attempt == self.retry.max_attempts {
                        tracing::warn!(reason, attempt, "giving up on a push");
                        DeviceOutcome::GaveUp
                    } else {
                        tracing::debug!(reason, attempt, "push failed; retrying");
                        let pause = self.retry.pause(attempt, retry_after);
                        wait_in_progress(message, pause).await;
                        continue;
                    }
                }
            };
            self.metrics.device(terminal);
            return terminal;
        }
        unreachable!("max_attempts is at least 1")
    }

    /// Acknowledges (and waits for JetStream to confirm it), so the event
    /// is not sent again.
    async fn finish(&self, message: &jetstream::Message, outcome: EventOutcome) {
        self.metrics.event(outcome);
        if let Err(e) = message.double_ack().await {
            tracing::warn!(error = %e, "ack not confirmed; the event may be pushed again");
        }
    }
}

/// Sleeps `pause`, telling JetStream regularly that the message is still
/// being worked on so it is not handed to another worker meanwhile.
async fn wait_in_progress(message: &jetstream::Message, pause: Duration) {
    let mut left = pause;
    while !left.is_zero() {
        let _ = message.ack_with(AckKind::Progress).await;
        let step = left.min(PROGRESS_EVERY);
        tokio::time::sleep(step).await;
        left -= step;
    }
}

fn push_message(message: &jetstream::Message) -> PushMessage {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    PushMessage {
        event: header(EVENT_HEADER).unwrap_or_else(|| "message".to_owned()),
        event_id: header(EVENT_ID_HEADER).unwrap_or_default(),
        data: String::from_utf8_lossy(&message.payload).into_owned(),
    }
}
