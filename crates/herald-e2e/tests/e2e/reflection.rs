//! Server reflection on every gRPC service (Publisher and Control on
//! herald-publish's port, Presence on its own), in both versions clients ask
//! for (`grpc.reflection.v1` and `v1alpha`), without the API token they
//! require for everything else: what `grpcurl list` and `grpcurl describe`
//! do, old grpcurl, Postman and evans included.

use herald_e2e::*;
use herald_testing::grpc::{self, Ask, Reflection};

const API_TOKEN: &str = "reflection-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_list_and_describe_through_v1_and_v1alpha() {
    let mut publish = publish_config();
    publish.api_token = Some(API_TOKEN.to_owned());
    let mut presence = herald_presence::Config::defaults("presence");
    presence.api_token = Some(API_TOKEN.to_owned());
    let stack = Stack::builder()
        .publish(publish)
        .presence(presence)
        .start()
        .await;
    let (publish, presence) = (stack.publish(), stack.presence());

    let publishes = [
        ("herald.v1.Control", "herald/v1/control.proto"),
        ("herald.v1.Publisher", "herald/v1/publish.proto"),
    ];
    let presences = [("herald.v1.Presence", "herald/v1/presence.proto")];
    for (running, own) in [(&publish, &publishes[..]), (&presence, &presences[..])] {
        let channel = grpc::channel(&running.addr.to_string()).await;
        for version in [Reflection::V1, Reflection::V1alpha] {
            let mut services = grpc::reflect(channel.clone(), version, Ask::Services)
                .await
                .unwrap_or_else(|e| panic!("{own:?} over {version:?}: {e}"));
            services.sort();
            let mut expected = vec![
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ];
            expected.extend(own.iter().map(|(service, _)| *service));
            assert_eq!(services, expected, "{version:?}");
            for (service, file) in own {
                let files = grpc::reflect(channel.clone(), version, Ask::FileOf(service))
                    .await
                    .unwrap_or_else(|e| panic!("{service} over {version:?}: {e}"));
                assert!(files.iter().any(|f| f == file), "{version:?}: {files:?}");
            }
        }
    }
}
