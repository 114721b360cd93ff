//! Server reflection on both gRPC services, in both versions clients ask
//! for (`grpc.reflection.v1` and `v1alpha`), without the API token they
//! require for everything else: what `grpcurl list` and `grpcurl describe`
//! do, old grpcurl, Postman and evans included.

use herald_e2e::*;
use herald_testing::NatsServer;
use herald_testing::grpc::{self, Ask, Reflection};

const API_TOKEN: &str = "reflection-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_list_and_describe_through_v1_and_v1alpha() {
    let nats = NatsServer::start();
    let mut config = herald_publish::Config::defaults("p");
    config.api_token = Some(API_TOKEN.to_owned());
    let publish = start_publish(&nats.client_url(), config).await;
    let mut config = herald_presence::Config::defaults("presence");
    config.api_token = Some(API_TOKEN.to_owned());
    let presence = start_presence(&nats.client_url(), config).await;

    for (running, service, file) in [
        (&publish, "herald.v1.Publisher", "herald/v1/publish.proto"),
        (&presence, "herald.v1.Presence", "herald/v1/presence.proto"),
    ] {
        let channel = grpc::channel(&running.addr.to_string()).await;
        for version in [Reflection::V1, Reflection::V1alpha] {
            let mut services = grpc::reflect(channel.clone(), version, Ask::Services)
                .await
                .unwrap_or_else(|e| panic!("{service} over {version:?}: {e}"));
            services.sort();
            assert_eq!(
                services,
                [
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection",
                    service,
                ],
                "{version:?}"
            );
            let files = grpc::reflect(channel.clone(), version, Ask::FileOf(service))
                .await
                .unwrap_or_else(|e| panic!("{service} over {version:?}: {e}"));
            assert!(files.iter().any(|f| f == file), "{version:?}: {files:?}");
        }
    }
}
