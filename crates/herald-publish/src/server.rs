//! Serving the gRPC API: Publisher (behind the API token), health and reflection.

use herald_core::admin::Readiness;
use herald_core::api_token::ApiToken;
use herald_core::subject::MAX_ID_LEN;
use herald_proto::v1::publisher_server::PublisherServer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::PublishService;

/// One herald-publish instance.
pub struct PublishServer {
    service: PublishService,
    ready: Readiness,
}

impl PublishServer {
    pub fn new(config: Config, nats: async_nats::Client, registry: &mut Registry) -> Self {
        let metrics = Metrics::register(registry);
        let js = async_nats::jetstream::new(nats.clone());
        Self {
            service: PublishService {
                nats,
                js,
                config,
                metrics,
            },
            ready: Readiness::default(),
        }
    }

    /// Creates or updates the history streams; call before serving.
    pub async fn ensure_history(
        &self,
    ) -> Result<(), async_nats::jetstream::context::CreateStreamError> {
        self.service
            .config
            .history
            .ensure_streams(&self.service.js)
            .await
    }

    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Serves until `shutdown`; in-flight calls finish first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PublisherServer<PublishService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(herald_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("descriptors are generated at build time and valid");
        let token = ApiToken::new(
            self.service.config.api_token.clone(),
            self.service.metrics.refused(),
        );
        // Refuse before decoding anything larger than the largest valid request.
        let config = &self.service.config;
        let max_request = config.max_payload + config.max_users * (MAX_ID_LEN + 8) + 4096;
        let publisher = PublisherServer::new(self.service).max_decoding_message_size(max_request);
        let publisher = InterceptedService::new(publisher, move |r| token.check(r));

        let ready = self.ready.clone();
        let stopping = async move {
            shutdown.cancelled().await;
            ready.set(false);
            health
                .set_not_serving::<PublisherServer<PublishService>>()
                .await;
        };
        self.ready.set(true);
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(publisher)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopping,
            )
            .await
    }
}
