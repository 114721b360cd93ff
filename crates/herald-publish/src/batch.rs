//! `PublishBatch`: many events in one call. Each request is validated and
//! sent as a single `Publish` would be, all before any acknowledgement is
//! awaited, so the batch costs about one JetStream round trip; a bad
//! request fails alone, with its error in its result.

use herald_proto::result_error::error_text;
use herald_proto::v1::{PublishBatchResponse, PublishRequest, PublishResult};
use prost::Message;
use tonic::Status;

use crate::config::Config;
use crate::metrics::Outcome;
use crate::send::Sent;
use crate::service::PublishService;
use crate::validate::validate;

/// Why a whole batch was refused (nothing of it published).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchRefused {
    #[error("{count} requests in one batch; the limit is {max} (--max-batch)")]
    TooMany { count: usize, max: usize },
    #[error(
        "the batch's requests are {bytes} bytes encoded; the limit is {max} (--max-batch-bytes)"
    )]
    TooLarge { bytes: usize, max: usize },
}

impl From<BatchRefused> for Status {
    fn from(e: BatchRefused) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// Checks a batch against `--max-batch` and `--max-batch-bytes`.
pub fn check(requests: &[PublishRequest], config: &Config) -> Result<(), BatchRefused> {
    if requests.len() > config.max_batch {
        return Err(BatchRefused::TooMany {
            count: requests.len(),
            max: config.max_batch,
        });
    }
    let bytes: usize = requests.iter().map(Message::encoded_len).sum();
    if bytes > config.max_batch_bytes {
        return Err(BatchRefused::TooLarge {
            bytes,
            max: config.max_batch_bytes,
        });
    }
    Ok(())
}

impl PublishService {
    /// Publishes every request of a batch; the call fails only when the
    /// batch is over its limits or NATS is not connected (then nothing of
    /// it is published).
    pub async fn publish_batch_inner(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<PublishBatchResponse, Status> {
        check(&requests, &self.config)?;
        self.connected()?;
        // All sent first, in order, so stores to one subject keep the
        // caller's order and travel together; then all acks awaited.
        let mut pending: Vec<Result<Sent, Status>> = Vec::with_capacity(requests.len());
        for request in requests {
            let ephemeral = request.ephemeral;
            let sent = match validate(request, &self.config) {
                Ok(publication) => match self.can_store(&publication, ephemeral) {
                    Ok(()) => self.send(&publication, ephemeral).await,
                    Err(unavailable) => Err(unavailable),
                },
                Err(invalid) => Err(invalid.into()),
            };
            pending.push(sent);
        }
        let confirmed = pending
            .into_iter()
            .map(|sent| async move { sent?.confirmed().await });
        let results = futures::future::join_all(confirmed)
            .await
            .into_iter()
            .map(|result| self.result(result))
            .collect();
        Ok(PublishBatchResponse { results })
    }

    fn result(&self, result: Result<herald_proto::v1::PublishResponse, Status>) -> PublishResult {
        self.metrics.request(Outcome::of(&result));
        match result {
            Ok(response) => PublishResult {
                response: Some(response),
                error: String::new(),
            },
            Err(status) => PublishResult {
                response: None,
                error: error_text(&status),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::v1::publish_request::Target;

    fn request(data: &str) -> PublishRequest {
        PublishRequest {
            target: Some(Target::users(["a"])),
            data: data.into(),
            ..Default::default()
        }
    }

    #[test]
    fn limits_count_requests_and_encoded_bytes() {
        let config = Config {
            max_batch: 3,
            max_batch_bytes: 40,
            ..Config::defaults("t")
        };
        assert_eq!(check(&[request("x"), request("y")], &config), Ok(()));
        assert_eq!(
            check(&vec![request("x"); 4], &config),
            Err(BatchRefused::TooMany { count: 4, max: 3 })
        );
        let big = request(&"x".repeat(40));
        assert!(matches!(
            check(&[big], &config),
            Err(BatchRefused::TooLarge { max: 40, .. })
        ));
        assert_eq!(check(&[], &config), Ok(()), "an empty batch is no error");
    }
}
