//! Lifecycle events (`--lifecycle-events`): every stream's connect and
//! disconnect, published as JSON on `herald.lifecycle.<user token>`, so a
//! backend can react to one user's streams (the aggregate is in the
//! metrics). A stream hands its event to a bounded queue and a task
//! publishes: opening and closing a stream never wait on NATS, and when
//! NATS cannot keep up, events are dropped and counted rather than held.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use herald_domain::control::LIFECYCLE_PREFIX;
use herald_domain::subject::encode_token;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::CloseReason;

/// Events waiting to be published; beyond, new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where a node's lifecycle events go; cheap to share.
pub(crate) struct Lifecycle {
    node: String,
    queue: mpsc::Sender<(String, Vec<u8>)>,
    dropped: Counter,
}

/// One stream's part: what its disconnect event repeats.
pub(crate) struct StreamLife {
    lifecycle: Arc<Lifecycle>,
    user: String,
    stream: String,
    topics: Vec<String>,
    opened: Instant,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user: &'a str,
    node: &'a str,
    stream: &'a str,
    topics: &'a [String],
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl Lifecycle {
    /// Publishes on `nats` until `stop`; `dropped` counts what did not fit.
    pub(crate) fn start(
        nats: async_nats::Client,
        node: String,
        dropped: Counter,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let (queue, mut events) = mpsc::channel::<(String, Vec<u8>)>(QUEUE);
        tokio::spawn(async move {
            loop {
                let (subject, payload) = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                if let Err(e) = nats.publish(subject, payload.into()).await {
                    tracing::debug!(error = %e, "cannot publish a lifecycle event");
                }
            }
        });
        Arc::new(Self {
            node,
            queue,
            dropped,
        })
    }

    /// Announces stream `id` of `user` following `topics`; what its
    /// disconnect needs is returned, for the stream to keep.
    pub(crate) fn connected(
        self: &Arc<Self>,
        user: &str,
        id: u64,
        topics: Vec<String>,
    ) -> StreamLife {
        let life = StreamLife {
            lifecycle: self.clone(),
            user: user.to_owned(),
            stream: format!("{}-{id}", self.node),
            topics,
            opened: Instant::now(),
        };
        life.send("connect", None);
        life
    }

    fn send(&self, user: &str, event: &Event<'_>) {
        let subject = format!("{LIFECYCLE_PREFIX}{}", encode_token(user));
        let payload = serde_json::to_vec(event).expect("plain struct");
        if self.queue.try_send((subject, payload)).is_err() {
            self.dropped.inc();
        }
    }
}

impl StreamLife {
    /// Announces the stream's end, for `reason`.
    pub(crate) fn disconnected(&self, reason: CloseReason) {
        self.send("disconnect", Some(reason));
    }

    fn send(&self, kind: &'static str, reason: Option<CloseReason>) {
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let event = Event {
            kind,
            user: &self.user,
            node: &self.lifecycle.node,
            stream: &self.stream,
            topics: &self.topics,
            at,
            duration_ms: reason.map(|_| self.opened.elapsed().as_millis() as u64),
            reason: reason.map(CloseReason::as_str),
        };
        self.lifecycle.send(&self.user, &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_what_the_contract_names() {
        let event = Event {
            kind: "disconnect",
            user: "a.b",
            node: "edge-1",
            stream: "edge-1-7",
            topics: &["news".to_owned()],
            at: "2026-12-07T03:00:00.000Z".into(),
            duration_ms: Some(1500),
            reason: Some("token_expired"),
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "disconnect", "user": "a.b", "node": "edge-1",
                "stream": "edge-1-7", "topics": ["news"], "at": "2026-12-07T03:00:00.000Z",
                "duration_ms": 1500, "reason": "token_expired"})
        );
    }
}
