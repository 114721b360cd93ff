//! The system under test: Herald (SSE edge + gRPC Publish), Nchan (nginx
//! module, SSE subscriber + HTTP publisher) or Pushpin (GRIP proxy holding
//! SSE streams for an origin, HTTP publish API), driven the same way so
//! their figures compare.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Pushpin: `--edge` is its client port (streams are proxied to the
    /// GRIP origin, `herald-bench pushpin-origin`), `--publish` its HTTP
    /// control port (`POST /publish/`).
    Pushpin,
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
            // The same request for both: Pushpin hands it to the origin,
            // which names the channel in its GRIP answer.
            Kind::Nchan | Kind::Pushpin => {
                let channel = channel(user, topic);
                format!(
                    "GET /sub?channel={channel} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n{resume}\r\n",
                    self.peer.host()
                )
            }
        })
    }

    /// A publisher for this system.
    pub async fn publisher(&self) -> anyhow::Result<Publisher> {
        // Every publish is bounded: a server that stops answering (Nchan
        // out of shared memory did) fails its events, not the whole run.
        let http = || reqwest::Client::builder().timeout(self.timeout).build();
        Ok(match self.peer {
            Kind::Herald => Publisher::Herald(self.herald_publisher().await?),
            Kind::Nchan => Publisher::Nchan {
                http: http()?,
                base: self.publish.trim_end_matches('/').to_owned(),
            },
            Kind::Pushpin => Publisher::Pushpin {
                http: http()?,
                url: format!("{}/publish/", self.publish.trim_end_matches('/')),
                next_id: Arc::default(),
            },
            Kind::Nats => Publisher::Nats(async_nats::connect(&self.publish).await?),
        })
    }
}

impl Kind {
    /// The `host` header of a stream request.
    fn host(self) -> &'static str {
        match self {
            Kind::Herald => "edge",
            Kind::Nchan => "nchan",
            Kind::Pushpin => "pushpin",
            Kind::Nats => "nats",
        }
    }

    /// How many streams the bench opens at once (outside a storm, where
    /// all connect together). Pushpin 1.36's proxy queues at most 100 new
    /// requests to zurl, its client to the origin (a compiled-in
    /// high-water mark, `OUT_HWM` in zhttpmanager.cpp), and answers 502 to
    /// the rest: 256 connects at once had 20-180 of 300 refused. Its
    /// handler's queues are as short: with 64 at once on a busy machine
    /// it dropped messages ("received message out of sequence,
    /// canceling" in its log) and ended 5 and 23 of 15,000 idle streams
    /// in two full runs.
    pub fn connecting(self) -> usize {
        match self {
            Kind::Pushpin => 16,
            _ => crate::stream::CONNECTING,
        }
    }

    /// Whether a stream that comes back with `Last-Event-ID` gets what it
    /// missed. Pushpin keeps no history: replay is left to the origin
    /// (it sees the header), and the bench's origin has no store.
    pub fn replays(self) -> bool {
        self != Kind::Pushpin
    }
}

impl Target {
    /// A gRPC client of herald-publish that sends `--api-token` on every call.
    pub async fn herald_publisher(&self) -> anyhow::Result<HeraldClient> {
        let channel = Channel::from_shared(self.publish.clone())?
            .timeout(self.timeout) // each call, as every publish above
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
pub(crate) type HeraldClient = PublisherClient<InterceptedService<Channel, Bearer>>;

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

/// Nchan and Pushpin have channels only: a user's and a topic's are named apart.
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
    Nchan {
        http: reqwest::Client,
        base: String,
    },
    Pushpin {
        http: reqwest::Client,
        /// `POST /publish/` on Pushpin's control port.
        url: String,
        /// Event ids, shared by clones: each event goes out with an `id:`
        /// line, as Herald's and Nchan's do, so a client has a
        /// `Last-Event-ID` to come back with.
        next_id: Arc<AtomicU64>,
    },
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
            Self::Pushpin { http, url, next_id } => {
                let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
                pushpin(http, url, &channel("", Some(topic)), id, &data).await
            }
            Self::Nats(client) => Ok(client
                .publish(format!("herald.t.{topic}"), data.into())
                .await?),
        }
    }

    /// One event to `user`'s streams; `ephemeral` skips Herald's history
    /// (Nchan always keeps its message buffer; Pushpin keeps nothing).
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
            Self::Pushpin { http, url, next_id } => {
                let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
                pushpin(http, url, &channel(user, None), id, &data).await
            }
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

async fn pushpin(
    http: &reqwest::Client,
    url: &str,
    channel: &str,
    id: u64,
    data: &str,
) -> anyhow::Result<()> {
    let body = pushpin_item(channel, id, data);
    let response = http.post(url).json(&body).send().await?;
    if !response.status().is_success() {
        bail!("pushpin's publish API answered {}", response.status());
    }
    Ok(())
}

/// One event for Pushpin's publish API: the SSE bytes its streams on
/// `channel` get, as Herald and Nchan write them (`id:` and `data:`).
fn pushpin_item(channel: &str, id: u64, data: &str) -> serde_json::Value {
    let content = format!("id: {id}\ndata: {data}\n\n");
    serde_json::json!({"items": [{"channel": channel, "formats": {"http-stream": {"content": content}}}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushpin_item_is_one_sse_event_on_its_channel() {
        let item = pushpin_item("u.bench-7", 3, "12 1700000000");
        assert_eq!(
            item,
            serde_json::json!({"items": [{"channel": "u.bench-7", "formats": {"http-stream":
                {"content": "id: 3\ndata: 12 1700000000\n\n"}}}]})
        );
    }
}
