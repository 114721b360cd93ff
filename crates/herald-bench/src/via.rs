//! How `unicast` hands Herald its events: one gRPC `Publish` per event,
//! `PublishBatch` with many, or HTTP `POST /v1/publish` (proto3 JSON), so
//! the three paths are measured by the same ramp.

use anyhow::{Context, bail};
use herald_proto::v1::{
    PublishBatchRequest, PublishRequest, publish_request::Target as PublishTarget,
};

use crate::Target;
use crate::peer::{HeraldClient, Kind, Publisher};

/// The path events take into herald-publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// One gRPC `Publish` per event.
    Grpc,
    /// gRPC `PublishBatch`, `--batch-size` events per call.
    Batch,
    /// HTTP `POST /v1/publish`, one event per request (HTTP/1.1 keep-alive).
    Http,
}

/// Sends events by one path; cheap to clone.
#[derive(Clone)]
pub enum Sender {
    /// What the peer offers (Nchan, NATS, or Herald's gRPC `Publish`).
    Peer(Publisher),
    Batch(HeraldClient),
    Http {
        http: reqwest::Client,
        url: String,
        authorization: Option<String>,
    },
}

impl Target {
    /// A sender by `via` (anything but `grpc` is Herald's only).
    pub async fn sender(&self, via: Via) -> anyhow::Result<Sender> {
        if via != Via::Grpc && self.peer != Kind::Herald {
            bail!("--via {via:?} is Herald's; other peers publish their own way");
        }
        Ok(match via {
            Via::Grpc => Sender::Peer(self.publisher().await?),
            Via::Batch => Sender::Batch(self.herald_publisher().await?),
            Via::Http => Sender::Http {
                http: reqwest::Client::builder()
                    .http1_only()
                    .timeout(self.timeout)
                    .build()?,
                url: format!("{}/v1/publish", self.publish.trim_end_matches('/')),
                authorization: self.api_token.as_ref().map(|t| format!("Bearer {t}")),
            },
        })
    }
}

impl Sender {
    /// Sends `events` (user, data); returns how many failed.
    pub async fn send(&mut self, events: Vec<(String, String)>, ephemeral: bool) -> u64 {
        match self {
            Self::Peer(publisher) => {
                let mut failed = 0;
                for (user, data) in events {
                    failed += u64::from(
                        publisher
                            .publish_user(&user, data, ephemeral)
                            .await
                            .is_err(),
                    );
                }
                failed
            }
            Self::Batch(client) => {
                let count = events.len() as u64;
                let requests = events
                    .into_iter()
                    .map(|(user, data)| request(user, data, ephemeral))
                    .collect();
                match client.publish_batch(PublishBatchRequest { requests }).await {
                    Ok(answer) => {
                        let results = answer.into_inner().results;
                        results.iter().filter(|r| !r.error.is_empty()).count() as u64
                    }
                    Err(_) => count,
                }
            }
            Self::Http {
                http,
                url,
                authorization,
            } => {
                let mut failed = 0;
                for (user, data) in events {
                    let sent = post(http, url, authorization.as_deref(), &user, data, ephemeral);
                    failed += u64::from(sent.await.is_err());
                }
                failed
            }
        }
    }

    /// Waits until everything sent has left this process.
    pub async fn flush(&self) -> anyhow::Result<()> {
        match self {
            Self::Peer(publisher) => publisher.flush().await,
            _ => Ok(()),
        }
    }
}

fn request(user: String, data: String, ephemeral: bool) -> PublishRequest {
    PublishRequest {
        target: Some(PublishTarget::users([user])),
        data,
        ephemeral,
        ..Default::default()
    }
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    authorization: Option<&str>,
    user: &str,
    data: String,
    ephemeral: bool,
) -> anyhow::Result<()> {
    let body =
        serde_json::json!({"users": {"userIds": [user]}, "data": data, "ephemeral": ephemeral});
    let mut request = http.post(url).json(&body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.context("POST /v1/publish")?;
    if !response.status().is_success() {
        bail!("herald-publish answered {}", response.status());
    }
    Ok(())
}
