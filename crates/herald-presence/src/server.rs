//! One herald-presence replica: follows the edges, answers over gRPC
//! (behind the API token, with health and reflection) and NATS.

use herald_core::api_token::ApiToken;
use herald_core::grpc::Grpc;
use herald_core::listener::{Listener, SocketMetrics};
use herald_core::presence_metrics::FollowerMetrics;
use herald_core::readiness::Readiness;
use herald_core::tls::ServerTls;
use herald_nats::connection::Losses;
use herald_nats::presence::Follower;
use herald_proto::v1::presence_server::{PresenceServer as PresenceGrpc, SERVICE_NAME};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
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
        herald_core::nats_metrics::register(registry, &nats);
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

    /// Ready once the state is complete (every edge has answered), while
    /// NATS is connected, until shutdown; gRPC health follows it.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Serves until `shutdown`. The listener bounds every connection (see
    /// [`herald_core::grpc`]). Never fails once started; the `Result` is
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
        let token = ApiToken::new(self.api_token.clone(), self.service.metrics.refused());
        let follower = self.service.follower.clone();
        // Ready once the state is complete (every edge has answered).
        self.ready.waiting_for("presence reports from every edge");
        let warm = async move { follower.warm().await };
        self.ready.follow_nats(&self.nats, self.following.clone());
        let presence =
            InterceptedService::new(PresenceGrpc::new(self.service), move |r| token.check(r));
        let grpc = Grpc {
            routes: Routes::new(presence),
            names: &[SERVICE_NAME],
            descriptors: herald_proto::FILE_DESCRIPTOR_SET,
            tls: self.tls,
            ready: self.ready,
        };
        grpc.serve(listener, warm, shutdown).await;
        self.following.cancel();
        Ok(())
    }
}
