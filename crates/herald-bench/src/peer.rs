//! The system under test: Herald (SSE edge + gRPC Publish) or Nchan (nginx
//! module, SSE subscriber + HTTP publisher), driven the same way so their
//! figures compare.

use anyhow::{Context, bail};
use herald_proto::v1::{
    PublishRequest, publish_request::Target as PublishTarget, publisher_client::PublisherClient,
};
use tonic::metadata::MetadataValue;
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::Channel;

use crate::Target;

/// Which system `--edge` and `--publish` point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Herald,
    Nchan,
    /// NATS alone, no Herald: the broker's own ceiling (`--publish` is a
    /// NATS URL; subscribers are NATS subscriptions, not SSE streams).
    Nats,
}

impl Target {
    /// The raw HTTP/1.1 request that opens an SSE stream for `user`,
    /// following `topic` (Nchan: the topic's channel instead).
    pub fn sse_request(&self, user: &str, topic: Option<&str>) -> anyhow::Result<String> {
        self.resume_request(user, topic, None)
    }

    /// Like [`Target::sse_request`], resuming after `last_event_id`.
    pub fn resume_request(
        &self,
        user: &str,
        topic: Option<&str>,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<String> {
        let resume = last_event_id
            .map(|id| format!("last-event-id: {id}\r\n"))
            .unwrap_or_default();
        Ok(match self.peer {
            Kind::Herald => {
                if self.secret.is_empty() {
                    bail!("--secret (HERALD_JWT_SECRET) is required for Herald");
                }
                let topics: Vec<&str> = topic.into_iter().collect();
                let token = crate::token(&self.secret, user, &topics)?;
                let query = topic.map(|t| format!("topic={t}")).unwrap_or_default();
                format!(
                    "GET /v1/events?{query} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\n{resume}\r\n"
                )
            }
            Kind::Nats => bail!("--peer nats has no SSE streams"),
            Kind::Nchan => {
                let channel = channel(user, topic);
                format!(
                    "GET /sub?channel={channel} HTTP/1.1\r\nhost: nchan\r\naccept: text/event-stream\r\n{resume}\r\n"
                )
            }
        })
    }

    /// A publisher for this system.
    pub async fn publisher(&self) -> anyhow::Result<Publisher> {
        Ok(match self.peer {
            Kind::Herald => Publisher::Herald(self.herald_publisher().await?),
            Kind::Nchan => Publisher::Nchan {
                http: reqwest::Client::new(),
                base: self.publish.trim_end_matches('/').to_owned(),
            },
            Kind::Nats => Publisher::Nats(async_nats::connect(&self.publish).await?),
        })
    }
}

impl Target {
    /// A gRPC client of herald-publish that sends `--api-token` on every call.
    pub async fn herald_publisher(&self) -> anyhow::Result<HeraldClient> {
        let channel = Channel::from_shared(self.publish.clone())?
            .connect()
            .await
            .with_context(|| format!("herald-publish at {}", self.publish))?;
        let bearer = match &self.api_token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .context("--api-token is not a valid header value")?,
            ),
            None => None,
        };
        Ok(PublisherClient::with_interceptor(channel, Bearer(bearer)))
    }
}

/// herald-publish's client, with the API token.
pub type HeraldClient = PublisherClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <api token>` to each call, when one is set.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Nchan has channels only: a user's and a topic's are named apart.
fn channel(user: &str, topic: Option<&str>) -> String {
    match topic {
        Some(topic) => format!("t.{topic}"),
        None => format!("u.{user}"),
    }
}

/// Publishes events, one call each.
#[derive(Clone)]
pub enum Publisher {
    Herald(HeraldClient),
    Nchan { http: reqwest::Client, base: String },
    Nats(async_nats::Client),
}

impl Publisher {
    /// Waits until everything published has left this process (NATS
    /// buffers publishes; dropping the client would discard the rest).
    pub async fn flush(&self) -> anyhow::Result<()> {
        if let Self::Nats(client) = self {
            client.flush().await?;
        }
        Ok(())
    }

    /// One event to every follower of `topic`.
    pub async fn publish_topic(&mut self, topic: &str, data: String) -> anyhow::Result<()> {
        match self {
            Self::Herald(client) => {
                let target = PublishTarget::Topic(topic.to_owned());
                herald(client, target, data, false).await
            }
            Self::Nchan { http, base } => nchan(http, base, &channel("", Some(topic)), data).await,
            Self::Nats(client) => Ok(client
                .publish(format!("herald.t.{topic}"), data.into())
                .await?),
        }
    }

    /// One event to `user`'s streams; `ephemeral` skips Herald's history
    /// (Nchan always keeps its message buffer).
    pub async fn publish_user(
        &mut self,
        user: &str,
        data: String,
        ephemeral: bool,
    ) -> anyhow::Result<()> {
        match self {
            Self::Herald(client) => {
                let target = PublishTarget::users([user]);
                herald(client, target, data, ephemeral).await
            }
            Self::Nchan { http, base } => nchan(http, base, &channel(user, None), data).await,
            Self::Nats(client) => Ok(client
                .publish(format!("herald.u.{user}"), data.into())
                .await?),
        }
    }
}

async fn herald(
    client: &mut HeraldClient,
    target: PublishTarget,
    data: String,
    ephemeral: bool,
) -> anyhow::Result<()> {
    let request = PublishRequest {
        target: Some(target),
        data,
        ephemeral,
        ..Default::default()
    };
    client.publish(request).await?;
    Ok(())
}

async fn nchan(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    data: String,
) -> anyhow::Result<()> {
    let url = format!("{base}/pub?channel={channel}");
    let status = http.post(url).body(data).send().await?.status();
    if !status.is_success() {
        bail!("nchan publisher answered {status}");
    }
    Ok(())
}
