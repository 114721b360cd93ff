//! One herald-presence replica: follows the edges, answers over gRPC
//! (behind the API token, with health and reflection) and NATS.

use herald_core::admin::Readiness;
use herald_core::api_token::ApiToken;
use herald_core::listener::{Listener, SocketMetrics};
use herald_core::nats::Losses;
use herald_core::presence::{Follower, FollowerMetrics};
use herald_core::reflection::with_reflection;
use herald_core::tls::ServerTls;
use herald_proto::v1::presence_server::PresenceServer as PresenceGrpc;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::PresenceService;

/// A presence replica, following the edges from the moment it is built.
pub struct PresenceServer {
    service: PresenceService,
    api_token: Option<String>,
    tls: Option<ServerTls>,
    nats: async_nats::Client,
    ready: Readiness,
    /// Stops following when the server stops.
    following: CancellationToken,
    /// The gRPC port's sockets.
    sockets: SocketMetrics,
}

impl PresenceServer {
    /// Subscribes to the edges' presence and asks each for its snapshot.
    pub async fn start(
        config: Config,
        nats: async_nats::Client,
        losses: Losses,
        registry: &mut Registry,
    ) -> Result<Self, async_nats::SubscribeError> {
        herald_core::nats::register_metrics(registry, &nats);
        let registry = registry.sub_registry_with_prefix("herald_presence");
        let following = CancellationToken::new();
        let follower = Follower::start(
            nats.clone(),
            losses,
            FollowerMetrics::register(registry),
            following.clone(),
        )
        .await?;
        let service = PresenceService {
            follower,
            max_users: config.max_users,
            metrics: Metrics::register(registry),
        };
        let sockets = SocketMetrics::register(registry);
        Ok(Self {
            service,
            api_token: config.api_token,
            tls: config.tls,
            nats,
            ready: Readiness::default(),
            following,
            sockets,
        })
    }

    /// Ready once the state is complete (every edge has answered).
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Serves until `shutdown`. The listener bounds every connection (see
    /// [`herald_core::serve`]). Never fails once started; the `Result` is
    /// kept for callers.
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let listener = listener.into().counting_in(self.sockets.clone());
        let responder =
            crate::responder::start(self.nats.clone(), self.service.clone(), shutdown.clone())
                .await;
        if let Err(e) = &responder {
            tracing::error!(error = %e, "cannot answer presence over NATS");
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<PresenceGrpc<PresenceService>>().await;
        let token = ApiToken::new(self.api_token.clone(), self.service.metrics.refused());
        let follower = self.service.follower.clone();
        let presence =
            InterceptedService::new(PresenceGrpc::new(self.service), move |r| token.check(r));

        let ready = self.ready.clone();
        let becoming_ready = tokio::spawn(async move {
            follower.warm().await;
            ready.set(true);
        });
        let ready = self.ready.clone();
        let stopping = async move {
            shutdown.cancelled().await;
            becoming_ready.abort();
            ready.set(false);
            health
                .set_not_serving::<PresenceGrpc<PresenceService>>()
                .await;
        };
        let tls = self.tls.map(|tls| tls.start(self.following.clone()));
        let routes = tonic::service::Routes::new(health_service).add_service(presence);
        let routes = with_reflection(
            routes,
            herald_proto::FILE_DESCRIPTOR_SET,
            herald_proto::v1::presence_server::SERVICE_NAME,
        );
        herald_core::serve::grpc(listener, tls, routes, stopping).await;
        self.following.cancel();
        Ok(())
    }
}
