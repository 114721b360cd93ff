//! `/metrics` on every admin port: valid OpenMetrics text (parsed by a
//! strict parser, not string matching), the families operators rely on,
//! with the right types and Prometheus naming; and every close reason of
//! an SSE stream counted under its own label.

use std::collections::HashMap;
use std::time::Duration;

use herald_e2e::*;
use herald_testing::fcm::FakeFcm;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use openmetrics_parser::OpenMetricsType::{self, Counter, Gauge, Histogram};

/// Parses `/metrics` strictly; family name → type.
async fn families_of(service: &Running) -> HashMap<String, OpenMetricsType> {
    families(&service.metrics().await)
}

/// Every family is `herald_`-prefixed and histograms are in seconds; and
/// each of `wanted` is there with its type.
fn check(
    service: &str,
    got: &HashMap<String, OpenMetricsType>,
    wanted: &[(&str, OpenMetricsType)],
) {
    for (name, kind) in got {
        assert!(
            name.starts_with("herald_"),
            "{service}: {name} lacks the herald_ prefix"
        );
        if *kind == Histogram {
            assert!(
                name.ends_with("_seconds"),
                "{service}: histogram {name} is not in seconds"
            );
        }
        assert!(
            !name.ends_with("_total"),
            "{service}: family {name} repeats _total"
        );
    }
    for (name, kind) in wanted {
        assert_eq!(
            got.get(*name),
            Some(kind),
            "{service}: {name}; have {got:?}"
        );
    }
}

const NATS_FAMILIES: [(&str, OpenMetricsType); 4] = [
    ("herald_nats_connected", Gauge),
    ("herald_nats_connects", Counter),
    ("herald_nats_messages_in", Counter),
    ("herald_nats_messages_out", Counter),
];

#[tokio::test]
async fn every_admin_port_serves_valid_openmetrics_with_the_operators_families() {
    let fcm = FakeFcm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::builder()
        .publish(publish_config())
        .edge(edge_config("edge-1"))
        .presence(herald_presence::Config::defaults("presence-1"))
        .push(push_config(&fcm, dir.path()))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let (presence, push) = (stack.presence(), stack.push());

    // Some of everything: a stream, events, a resume that replays, a refusal.
    let http = reqwest::Client::new();
    let token = Claims::new("alice").hs256(SECRET);
    let events = events_url(edge, &[]);
    let mut stream = SseStream::open(&http, &events, &token).await;
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "one").await;
    let last_id = stream.next().await.id;
    publish_to_users(&mut client, &["alice"], "two").await;
    let request = http.get(&events).bearer_auth(&token);
    let response = request
        .header("last-event-id", last_id)
        .send()
        .await
        .unwrap();
    let mut resumed = SseStream::from_response(response).await;
    assert_eq!(resumed.next().await.data, "two");
    let refused = http.get(&events).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    drop(stream);
    herald_testing::eventually(Duration::from_secs(5), "a close", || async {
        (edge
            .metric("herald_edge_closes_total{reason=\"client_gone\"}")
            .await
            == 1.0)
            .then_some(())
    })
    .await;
    presence.wait_ready().await;
    assert_eq!(presence_of(presence, &["alice"]).await[0].0, 1);

    let mut edge_families = vec![
        ("herald_edge_connections", Gauge),
        ("herald_edge_connects", Counter),
        ("herald_edge_closes", Counter),
        ("herald_edge_rejects", Counter),
        ("herald_edge_events_delivered", Counter),
        ("herald_edge_slow_consumer_closes", Counter),
        ("herald_edge_nats_subscriptions", Gauge),
        ("herald_edge_nats_connected", Gauge),
        ("herald_edge_nats_connects", Counter),
        ("herald_edge_nats_pings", Counter),
        ("herald_edge_nats_messages_in", Counter),
        ("herald_edge_nats_messages_dropped", Counter),
        ("herald_edge_replayed_events", Counter),
        ("herald_edge_resets", Counter),
        ("herald_edge_resumed_subjects", Counter),
        ("herald_edge_delivery_latency_seconds", Histogram),
    ];
    edge_families.extend(NATS_FAMILIES);
    check("edge", &families_of(edge).await, &edge_families);
    let mut publish_families = vec![
        ("herald_publish_requests", Counter),
        ("herald_publish_events", Counter),
        ("herald_publish_receipts", Counter),
        ("herald_publish_duration_seconds", Histogram),
        ("herald_publish_presence_users_online", Gauge),
    ];
    publish_families.extend(NATS_FAMILIES);
    check("publish", &families_of(publish).await, &publish_families);
    let mut presence_families = vec![
        ("herald_presence_users_online", Gauge),
        ("herald_presence_nodes", Gauge),
        ("herald_presence_connections", Gauge),
        ("herald_presence_requests", Counter),
        ("herald_presence_request_duration_seconds", Histogram),
        ("herald_presence_event_lag_seconds", Histogram),
    ];
    presence_families.extend(NATS_FAMILIES);
    check("presence", &families_of(presence).await, &presence_families);
    // (Labelled families appear with their first sample; no push is sent here.)
    let mut push_families = vec![
        ("herald_push_retries", Counter),
        ("herald_push_api_refused", Counter),
        ("herald_push_send_duration_seconds", Histogram),
    ];
    push_families.extend(NATS_FAMILIES);
    check("push", &families_of(push).await, &push_families);

    // The values say what happened.
    assert_eq!(edge.metric("herald_edge_connections").await, 1.0);
    assert_eq!(edge.metric("herald_nats_connected").await, 1.0);
    assert!(edge.metric("herald_nats_connects_total").await >= 1.0);
    assert_eq!(edge.metric("herald_edge_replayed_events_total").await, 1.0);
    // The subscription connection carried the live event(s) to the fan-out.
    assert_eq!(edge.metric("herald_edge_nats_connected").await, 1.0);
    assert_eq!(edge.metric("herald_edge_nats_connects_total").await, 1.0);
    assert!(edge.metric("herald_edge_nats_messages_in_total").await >= 1.0);
    assert!(
        edge.metric("herald_edge_delivery_latency_seconds_count")
            .await
            >= 2.0
    );
    assert_eq!(
        edge.metric("herald_edge_rejects_total{reason=\"unauthorized\"}")
            .await,
        1.0
    );
    assert_eq!(publish.metric("herald_nats_connected").await, 1.0);
}

/// A token that expires `secs` from now.
fn expiring_token(user: &str, secs: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    Claims::new(user).expires_at(exp).hs256(SECRET)
}

/// (A slow consumer's close is counted in `delivery.rs`, where one is made.)
#[tokio::test]
async fn each_close_reason_is_counted_under_its_label() {
    let mut config = edge_config("edge-1");
    // Streams close at spread-out times within the drain window; the admin
    // port (and so the counter) stays up until the last one has.
    config.drain_window = Duration::from_secs(3);
    let mut stack = Stack::builder().edge(config).start().await;
    let edge = &stack.edges[0];
    let http = reqwest::Client::new();
    let events = events_url(edge, &[]);
    let closes = |reason: &str| format!("herald_edge_closes_total{{reason=\"{reason}\"}}");
    let counted = |reason: &'static str, want: f64| {
        let (edge, sample) = (&edge, closes(reason));
        async move {
            herald_testing::eventually(Duration::from_secs(10), reason, || async {
                (edge.metric(&sample).await == want).then_some(())
            })
            .await
        }
    };

    // The client goes away.
    let token = Claims::new("gone").hs256(SECRET);
    drop(SseStream::open(&http, &events, &token).await);
    counted("client_gone", 1.0).await;

    // The token expires while the stream is open.
    let mut expiring = SseStream::open(&http, &events, &expiring_token("brief", 1)).await;
    assert!(expiring.next_within(Duration::from_secs(5)).await.is_none());
    counted("token_expired", 1.0).await;

    // The edge loses NATS: it cannot know what it missed.
    let mut cut_off = SseStream::open(&http, &events, &Claims::new("cut").hs256(SECRET)).await;
    stack.nats.nodes[0].kill();
    assert!(cut_off.next_within(Duration::from_secs(10)).await.is_none());
    counted("server_error", 1.0).await;
    stack.nats.nodes[0].restart();
    herald_testing::eventually(Duration::from_secs(10), "NATS back", || async {
        (edge.metric("herald_nats_connected").await == 1.0).then_some(())
    })
    .await;
    assert!(edge.metric("herald_nats_connects_total").await >= 2.0);
    herald_testing::eventually(Duration::from_secs(10), "subscriptions back", || async {
        (edge.metric("herald_edge_nats_connects_total").await >= 2.0).then_some(())
    })
    .await;

    // Nothing was counted twice or under another reason.
    for (reason, want) in [
        ("client_gone", 1.0),
        ("token_expired", 1.0),
        ("server_error", 1.0),
    ] {
        assert_eq!(edge.metric(&closes(reason)).await, want, "{reason}");
    }
    assert_eq!(edge.metric(&closes("drain")).await, 0.0);

    // The edge drains (SIGTERM).
    let mut draining = Vec::new();
    for i in 0..20 {
        let token = Claims::new(format!("drained-{i}")).hs256(SECRET);
        draining.push(SseStream::open(&http, &events, &token).await);
    }
    edge.signal_shutdown();
    herald_testing::eventually(Duration::from_secs(3), "a drain close", || async {
        (edge.metric(&closes("drain")).await >= 1.0).then_some(())
    })
    .await;
    for stream in &mut draining {
        assert!(stream.next_within(Duration::from_secs(5)).await.is_none());
    }
}
