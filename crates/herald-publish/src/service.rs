//! The Publish API's state, and the checks every event passes before it
//! is sent: a leaf that the calls, the sending and batches build on.

use async_nats::jetstream;
use herald_core::telemetry;
use herald_nats::presence::Follower;
use herald_proto::v1::OfflinePolicy;
use tonic::Status;
use tracing::Span;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::streams::Streams;
use crate::validate::Publication;

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

/// The call's span, child of the caller's `traceparent`.
pub(crate) fn request_span(headers: &http::HeaderMap, method: &'static str) -> Span {
    telemetry::span(|| {
        let span = tracing::info_span!("herald.publish", otel.kind = "server", rpc.method = method);
        telemetry::continue_http(&span, headers);
        span
    })
}

impl PublishService {
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
        if !herald_nats::connection::is_connected(&self.nats) {
            return Err(Status::unavailable("not connected to NATS; retry shortly"));
        }
        Ok(())
    }
}
