//! Serving the gRPC API: Publisher (behind the API token), health and reflection.

use herald_core::admin::Readiness;
use herald_core::api_token::ApiToken;
use herald_core::listener::{Listener, SocketMetrics};
use herald_core::nats::Losses;
use herald_core::presence::{Follower, FollowerMetrics};
use herald_core::reflection::with_reflection;
use herald_domain::subject::MAX_ID_LEN;
use herald_proto::v1::publisher_server::PublisherServer;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use herald_core::serve::Http;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::json_api::{self, JsonApi};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::PublishService;
use crate::streams::Streams;

/// Why herald-publish cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot follow presence: {0}")]
    Presence(#[from] async_nats::SubscribeError),
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
    /// Starts creating (or updating) the history streams and the offline
    /// queue in the background (see [`crate::streams`]), and following
    /// presence for receipts.
    pub async fn start(
        config: Config,
        nats: async_nats::Client,
        losses: Losses,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let js = async_nats::jetstream::new(nats.clone());
        let following = CancellationToken::new();
        let streams = Streams::pending();
        let preparing =
            streams
                .clone()
                .prepare(js.clone(), config.history.clone(), following.clone());
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
        herald_core::nats::register_metrics(registry, &nats);
        Ok(Self {
            service: PublishService {
                nats,
                js,
                config,
                metrics,
                presence,
                streams,
            },
            ready: Readiness::default(),
            following,
            sockets,
        })
    }

    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Whether the history streams and offline queue exist yet.
    pub fn streams(&self) -> Streams {
        self.service.streams.clone()
    }

    /// Serves until `shutdown`; in-flight calls finish first. The
    /// listener bounds every connection (see [`herald_core::serve`]).
    /// Never fails once started; the `Result` is kept for callers.
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let listener = listener.into().counting_in(self.sockets.clone());
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PublisherServer<PublishService>>()
            .await;
        let token = ApiToken::new(
            self.service.config.api_token.clone(),
            self.service.metrics.refused(),
        );
        // Refuse before decoding anything larger than the largest valid
        // request or batch (each batch item costs a tag and a length).
        let config = &self.service.config;
        let max_request = config.max_payload + config.max_users * (MAX_ID_LEN + 8) + 4096;
        let max_request = max_request.max(config.max_batch_bytes + config.max_batch * 6 + 16);
        let tls = config
            .tls
            .as_ref()
            .map(|tls| tls.start(self.following.clone()));
        let presence = self.service.presence.clone();
        let streams = self.service.streams.clone();
        let service = Arc::new(self.service);
        let json = JsonApi {
            service: service.clone(),
            token: token.clone(),
        };
        let publisher = PublisherServer::from_arc(service).max_decoding_message_size(max_request);
        let publisher = InterceptedService::new(publisher, move |r| token.check(r));

        // Ready once stored events can be stored and receipts are right
        // (presence complete).
        let ready = self.ready.clone();
        let becoming_ready = tokio::spawn(async move {
            streams.wait().await;
            presence.warm().await;
            ready.set(true);
        });
        let ready = self.ready.clone();
        let stopping = async move {
            shutdown.cancelled().await;
            becoming_ready.abort();
            ready.set(false);
            health
                .set_not_serving::<PublisherServer<PublishService>>()
                .await;
        };
        let following = self.following.clone();
        let routes = tonic::service::Routes::new(health_service).add_service(publisher);
        let routes = with_reflection(
            routes,
            herald_proto::FILE_DESCRIPTOR_SET,
            herald_proto::v1::publisher_server::SERVICE_NAME,
        );
        let http = Http::auto(&listener);
        let dispatch = Dispatch {
            grpc: routes.prepare(),
            json,
        };
        herald_core::serve::serve(listener, http, tls, move || dispatch.clone(), stopping).await;
        following.cancel();
        Ok(())
    }
}

/// One port, two APIs: the JSON API's paths (and any HTTP/1 request) go
/// to [`JsonApi`], everything else to the gRPC routes.
#[derive(Clone)]
struct Dispatch {
    grpc: tonic::service::Routes,
    json: JsonApi,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        if json_api::wants(&request) {
            let json = self.json.clone();
            return Box::pin(async move { Ok(json.handle(request).await) });
        }
        let mut grpc = self.grpc.clone();
        Box::pin(async move {
            use tonic::codegen::Service;
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut grpc, cx))
                .await?;
            grpc.call(request).await
        })
    }
}
