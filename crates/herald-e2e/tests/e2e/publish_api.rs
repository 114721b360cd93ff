//! The Publish API's surroundings: API token, health checking, reflection,
//! admin endpoints.

use std::time::Duration;

use herald_e2e::*;
use herald_proto::v1::publish_request::Target;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const API_TOKEN: &str = "publish-api-token-0123";

fn target() -> Target {
    Target::users(["alice"])
}

#[tokio::test]
async fn the_api_token_is_enforced() {
    let mut config = publish_config();
    config.api_token = Some(API_TOKEN.into());
    let stack = Stack::builder().publish(config).start().await;
    let publish = stack.publish();
    let mut client = publisher(publish).await;

    let status = publish_with(&mut client, None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("missing"), "{}", status.message());
    let status = publish_with(&mut client, Some("Bearer wrong-token-wrong-token"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let ok = publish_with(&mut client, Some(&format!("Bearer {API_TOKEN}")))
        .await
        .unwrap();
    assert_eq!(
        ok.event_id.len(),
        22,
        "persisted events have an id: {:?}",
        ok.event_id
    );
    assert_eq!(
        publish
            .metric("herald_publish_requests_total{outcome=\"unauthenticated\"}")
            .await,
        2.0
    );
    assert_eq!(
        publish
            .metric("herald_publish_requests_total{outcome=\"ok\"}")
            .await,
        1.0
    );
}

async fn publish_with(
    client: &mut herald_proto::v1::publisher_client::PublisherClient<tonic::transport::Channel>,
    authorization: Option<&str>,
) -> Result<herald_proto::v1::PublishResponse, tonic::Status> {
    let mut request = tonic::Request::new(herald_proto::v1::PublishRequest {
        target: Some(target()),
        data: "x".into(),
        ..Default::default()
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    client
        .publish(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn health_reflection_and_admin_are_served() {
    let mut stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    publish.wait_ready().await; // health is readiness: once presence is complete

    let channel = tonic::transport::Channel::from_shared(publish.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let request = HealthCheckRequest {
        service: "herald.v1.Publisher".into(),
    };
    let status = health.check(request).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"herald.v1.Publisher".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let admin = format!("http://{}", publish.admin);
    assert_eq!(
        reqwest::get(format!("{admin}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{admin}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = publish.metrics().await;
    assert_eq!(
        families(&metrics).get("herald_publish_duration_seconds"),
        Some(&openmetrics_parser::OpenMetricsType::Histogram),
        "{metrics}"
    );
    stack.publish.take().unwrap().stop().await;
}

#[tokio::test]
async fn publishing_while_nats_is_down_is_refused_at_once_then_works_again() {
    let mut stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish.as_ref().unwrap();
    let mut client = publisher(publish).await;
    let ephemeral = |data: &str| herald_proto::v1::PublishRequest {
        target: Some(target()),
        data: data.to_owned(),
        ephemeral: true,
        ..Default::default()
    };
    client.publish(ephemeral("before")).await.unwrap();

    stack.nats.nodes[0].kill();
    let refused = herald_testing::eventually(Duration::from_secs(5), "a refusal", || {
        let mut client = client.clone();
        async move { client.publish(ephemeral("while down")).await.err() }
    })
    .await;
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("NATS"), "{}", refused.message());
    // Refused without waiting, not after a timeout.
    let started = std::time::Instant::now();
    let again = client.publish(ephemeral("still down")).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(1));

    stack.nats.nodes[0].restart();
    herald_testing::eventually(Duration::from_secs(10), "publishing to work again", || {
        let mut client = client.clone();
        async move { client.publish(ephemeral("after")).await.ok() }
    })
    .await;
}

/// Health is readiness: a load balancer asking gRPC health or `/readyz`
/// stops sending calls while NATS is away (they would be refused), sends
/// them again once it is back, and hears `NOT_SERVING` as soon as a drain
/// begins.
#[tokio::test]
async fn health_follows_readiness_through_a_nats_outage_and_a_drain() {
    const PUBLISHER: &str = "herald.v1.Publisher";
    let mut stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish.as_ref().unwrap();
    publish
        .until_readiness(&[PUBLISHER], true, Duration::from_secs(10))
        .await;

    stack.nats.nodes[0].kill();
    let took = publish
        .until_readiness(&[PUBLISHER], false, Duration::from_secs(3))
        .await;
    eprintln!("NOT_SERVING and 503 {took:?} after the NATS server was killed");
    stack.nats.nodes[0].restart();
    let took = publish
        .until_readiness(&[PUBLISHER], true, Duration::from_secs(15))
        .await;
    eprintln!("SERVING and 200 {took:?} after it was restarted");

    let channel = tonic::transport::Channel::from_shared(publish.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut watching = HealthClient::new(channel)
        .watch(request)
        .await
        .unwrap()
        .into_inner();
    let first = watching.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    publish.signal_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(3), watching.message());
    let next = next.await.expect("a status within 3 s of SIGTERM");
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
}
