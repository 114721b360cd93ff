//! Presence over NATS request/reply, for callers inside the cluster: the
//! replicas share a queue group, so one of them answers each request.
//! Bodies are the protobuf messages of the gRPC API.

use futures::StreamExt;
use herald_domain::presence::wire::{ERROR_HEADER, QUERY_SUBJECT, QUEUE_GROUP, STATS_SUBJECT};
use herald_proto::v1::GetPresenceRequest;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::metrics::Api;
use crate::service::PresenceService;

/// Subscribes to both subjects and answers until `shutdown`.
pub async fn start(
    nats: async_nats::Client,
    service: PresenceService,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let mut queries = nats
        .queue_subscribe(QUERY_SUBJECT, QUEUE_GROUP.into())
        .await?;
    let mut stats = nats
        .queue_subscribe(STATS_SUBJECT, QUEUE_GROUP.into())
        .await?;
    Ok(tokio::spawn(async move {
        loop {
            let (request, answer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(request) = queries.next() => {
                    let answer = answer_query(&service, &request.payload);
                    (request, answer)
                }
                Some(request) = stats.next() => {
                    (request, Ok(service.stats(Api::Nats).encode_to_vec()))
                }
                else => return,
            };
            let Some(reply) = request.reply else { continue };
            let sent = match answer {
                Ok(body) => nats.publish(reply, body.into()).await,
                Err(error) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(ERROR_HEADER, error.header().as_str());
                    nats.publish_with_headers(reply, headers, Default::default())
                        .await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot answer a presence request");
            }
        }
    }))
}

/// Why a query is refused; told to the caller in [`ERROR_HEADER`].
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the body is not a GetPresenceRequest: {0}")]
    Undecodable(#[from] prost::DecodeError),
    #[error("{}", .0.message())]
    Invalid(#[from] tonic::Status),
}

impl Refusal {
    /// The message on one line, as a header value must be.
    fn header(&self) -> String {
        self.to_string().replace(['\r', '\n'], " ")
    }
}

/// The encoded answer, or the reason the request is refused.
fn answer_query(service: &PresenceService, payload: &[u8]) -> Result<Vec<u8>, Refusal> {
    let request = GetPresenceRequest::decode(payload)?;
    let response = service.get_presence(Api::Nats, request)?;
    Ok(response.encode_to_vec())
}
