//! One trace across processes: a `Publish` carrying a W3C `traceparent`
//! goes through herald-publish (stored in JetStream), NATS, and the
//! fan-out on two edges; each process exports its spans over OTLP to a
//! receiver speaking the real protocol, and all share the caller's trace.

use std::collections::HashSet;
use std::time::Duration;

use herald_e2e::*;
use herald_proto::v1::publisher_client::PublisherClient;
use herald_proto::v1::{PublishRequest, publish_request::Target};
use herald_testing::NatsServer;
use herald_testing::otlp::{OtlpReceiver, ReceivedSpan};
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_publish_and_its_deliveries_share_one_trace_across_processes() {
    // NATS alone, not a `Stack`: Herald runs as processes here.
    let nats = NatsServer::start();
    let url = nats.client_url();
    let otlp = OtlpReceiver::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let listen = free_addr().to_string();
    let publish_args = [
        "--nats-url",
        &url,
        "--listen",
        &listen,
        "--node-id",
        "publish-1",
    ];
    let _publish = ServiceProcess::start("herald-publish", &publish_args, &env).await;
    let edges = [
        EdgeProcess::start_with_env(&url, None, &["--node-id", "edge-1"], &env).await,
        EdgeProcess::start_with_env(&url, None, &["--node-id", "edge-2"], &env).await,
    ];
    let token = Claims::new("alice").hs256(SECRET);
    let http = reqwest::Client::new();
    let mut streams = Vec::new();
    for edge in &edges {
        let events = format!("http://{}/v1/events", edge.addr);
        streams.push(SseStream::open(&http, &events, &token).await);
    }

    publish_traced(&listen, TRACE_ID).await;
    for stream in &mut streams {
        assert_eq!(stream.next().await.data, "traced");
    }

    let spans = herald_testing::eventually(
        Duration::from_secs(10),
        "the publish span and a fan-out span from each edge",
        || async {
            let spans: Vec<ReceivedSpan> = otlp
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == TRACE_ID)
                .collect();
            let published = spans.iter().any(|s| s.name == "herald.publish");
            let edges: HashSet<_> = spans
                .iter()
                .filter(|s| s.name == "herald.fanout")
                .map(|s| s.instance.as_str())
                .collect();
            (published && edges.len() == 2).then_some(spans)
        },
    )
    .await;
    let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
    let publish = named("herald.publish");
    assert_eq!(publish.service, "herald-publish");
    assert_eq!(publish.instance, "publish-1");
    assert_eq!(publish.parent_span_id, CALLER_SPAN, "the caller's child");
    let store = named("herald.store");
    assert_eq!(store.parent_span_id, publish.span_id);
    let fanouts: Vec<_> = spans.iter().filter(|s| s.name == "herald.fanout").collect();
    let instances: HashSet<_> = fanouts.iter().map(|s| s.instance.as_str()).collect();
    assert_eq!(instances, HashSet::from(["edge-1", "edge-2"]));
    for fanout in fanouts {
        assert_eq!(fanout.service, "herald-edge");
        assert_eq!(fanout.parent_span_id, store.span_id, "{fanout:?}");
    }
}

/// Publishes one traced event to alice through `publish_addr`.
async fn publish_traced(publish_addr: &str, trace_id: &str) {
    let mut client = PublisherClient::connect(format!("http://{publish_addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(PublishRequest {
        target: Some(Target::users(["alice"])),
        data: "traced".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{trace_id}-{CALLER_SPAN}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    client.publish(request).await.unwrap();
}

#[tokio::test]
async fn the_otel_variables_choose_protocol_service_name_and_sampler() {
    // NATS alone, not a `Stack`: Herald runs as processes here.
    let nats = NatsServer::start();
    let url = nats.client_url();
    let otlp = OtlpReceiver::start().await;

    // OTLP over HTTP with protobuf bodies, and our own service name.
    let listen = free_addr().to_string();
    let args = ["--nats-url", &url, "--listen", &listen];
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.http_endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "billing-publish"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let publish = ServiceProcess::start("herald-publish", &args, &env).await;
    publish_traced(&listen, TRACE_ID).await;
    let spans = herald_testing::eventually(Duration::from_secs(10), "spans over HTTP", || async {
        let spans = otlp.spans();
        spans
            .iter()
            .any(|s| s.name == "herald.store")
            .then_some(spans)
    })
    .await;
    assert!(spans.iter().all(|s| s.trace_id == TRACE_ID), "{spans:?}");
    assert!(
        spans.iter().all(|s| s.service == "billing-publish"),
        "{spans:?}"
    );
    drop(publish);

    // A sampler that keeps nothing: the call works, no span leaves.
    let before = otlp.spans().len();
    let listen = free_addr().to_string();
    let args = ["--nats-url", &url, "--listen", &listen];
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "always_off"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _publish = ServiceProcess::start("herald-publish", &args, &env).await;
    publish_traced(&listen, "0af7651916cd43dd8448eb211c80319c").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(otlp.spans().len(), before, "{:?}", otlp.spans());
}

#[tokio::test]
async fn an_unknown_otlp_protocol_stops_the_process_with_exit_code_2() {
    let output = std::process::Command::new(binary("herald-publish"))
        .args([
            "--nats-url",
            "nats://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("carrier-pigeon"), "{stderr}");
}
