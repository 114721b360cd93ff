//! Serving the gRPC API: Publisher and Control (behind the API token),
//! health and reflection, with the HTTP JSON API on the same port.

use std::sync::Arc;

use herald_core::api_token::ApiToken;
use herald_core::grpc::Grpc;
use herald_core::listener::{Listener, SocketMetrics};
use herald_core::presence_metrics::FollowerMetrics;
use herald_core::readiness::Readiness;
use herald_domain::subject::MAX_ID_LEN;
use herald_nats::connection::Losses;
use herald_nats::presence::Follower;
use herald_proto::v1::control_server::{self, ControlServer};
use herald_proto::v1::publisher_server::{self, PublisherServer};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

use crate::config::Config;
use crate::control::ControlService;
use crate::json_api::JsonApi;
use crate::metrics::Metrics;
use crate::service::PublishService;
use crate::streams::Streams;

/// Why herald-publish cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// NATS would refuse events that `--max-payload` lets callers send.
    #[error("{max_payload} exceeds the NATS server's max_payload of {server}")]
    MaxPayloadAboveNats { max_payload: usize, server: usize },
    #[error("cannot follow presence: {0}")]
    Presence(#[from] async_nats::SubscribeError),
}

impl StartError {
    /// The flag an operator should look at.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::MaxPayloadAboveNats { .. } => "--max-payload",
            Self::Presence(_) => "--nats-url",
        }
    }
}

/// One herald-publish instance.
pub struct PublishServer {
    service: PublishService,
    ready: Readiness,
    /// Stops following presence when the server stops.
    following: CancellationToken,
    /// The gRPC port's sockets.
    sockets: SocketMetrics,
}

impl PublishServer {
    /// Checks `--max-payload` against the NATS server's limit, then starts
    /// creating (or updating) the history streams and the offline queue in
    /// the background (see [`crate::streams`]), and following presence for
    /// receipts.
    pub async fn start(
        config: Config,
        nats: async_nats::Client,
        losses: Losses,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let server = nats.server_info().max_payload;
        if config.max_payload > server {
            let max_payload = config.max_payload;
            return Err(StartError::MaxPayloadAboveNats {
                max_payload,
                server,
            });
        }
        let js = async_nats::jetstream::new(nats.clone());
        let following = CancellationToken::new();
        let ready = Readiness::default();
        let streams = Streams::pending();
        let preparing = streams.clone().prepare(
            js.clone(),
            config.history.clone(),
            config.region.clone(),
            config.buckets.clone(),
            ready.clone(),
            following.clone(),
        );
        tokio::spawn(preparing);
        let presence = Follower::start(
            nats.clone(),
            losses,
            FollowerMetrics::register(registry.sub_registry_with_prefix("herald_publish_presence")),
            following.clone(),
        )
        .await?;
        let metrics = Metrics::register(registry);
        let sockets = SocketMetrics::register(registry.sub_registry_with_prefix("herald_publish"));
        herald_core::nats_metrics::register(registry, &nats);
        Ok(Self {
            service: PublishService {
                nats,
                js,
                config,
                metrics,
                presence,
                streams,
            },
            ready,
            following,
            sockets,
        })
    }

    /// Ready once the history streams exist and presence is complete,
    /// while NATS is connected, until shutdown; gRPC health follows it.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Whether the history streams and offline queue exist yet.
    pub fn streams(&self) -> Streams {
        self.service.streams.clone()
    }

    /// Serves until `shutdown`; in-flight calls finish first. The
    /// listener bounds every connection (see [`herald_core::grpc`]).
    /// Never fails once started; the `Result` is kept for callers.
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let listener = listener.into().counting_in(self.sockets.clone());
        let config = &self.service.config;
        let token = ApiToken::new(config.api_token.clone(), self.service.metrics.refused());
        let max_request = max_request(config);
        let tls = config.tls.clone();
        // Ready once stored events can be stored and receipts are right
        // (presence complete).
        let warm = {
            let (streams, presence) = (self.service.streams.clone(), self.service.presence.clone());
            let ready = self.ready.clone();
            async move {
                streams.wait().await;
                ready.waiting_for("presence reports from every edge");
                presence.warm().await;
            }
        };
        self.ready
            .follow_nats(&self.service.nats, self.following.clone());
        let service = Arc::new(self.service);
        let control = Arc::new(ControlService::new(service.clone()));
        let json = JsonApi {
            service: service.clone(),
            control: control.clone(),
            token: token.clone(),
        };
        let publisher = PublisherServer::from_arc(service).max_decoding_message_size(max_request);
        let check = token.clone();
        let publisher = InterceptedService::new(publisher, move |r| check.check(r));
        let control = ControlServer::from_arc(control).max_decoding_message_size(max_request);
        let control = InterceptedService::new(control, move |r| token.check(r));
        let grpc = Grpc {
            routes: Routes::new(publisher).add_service(control),
            names: &[publisher_server::SERVICE_NAME, control_server::SERVICE_NAME],
            descriptors: herald_proto::FILE_DESCRIPTOR_SET,
            tls,
            ready: self.ready,
        };
        grpc.serve_with(json, listener, warm, shutdown).await;
        self.following.cancel();
        Ok(())
    }
}

/// The largest request decoded: anything larger is refused before it is
/// read, larger than the largest valid request or batch (each batch item
/// costs a tag and a length).
fn max_request(config: &Config) -> usize {
    let single = config.max_payload + config.max_users * (MAX_ID_LEN + 8) + 4096;
    single.max(config.max_batch_bytes + config.max_batch * 6 + 16)
}
