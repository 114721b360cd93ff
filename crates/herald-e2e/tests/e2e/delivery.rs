//! Delivery under pressure and over HTTP/2: a slow consumer is closed and
//! counted without stalling anyone; h2c streams work like HTTP/1.1 ones.
//! And the edges of these suites really hold their subscriptions with the
//! subscriber the harness chose (`HERALD_E2E_NATS_SUBSCRIBER`).

use std::time::Duration;

use futures::StreamExt;
use herald_e2e::*;
use herald_testing::eventually;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_counted_while_others_keep_up() {
    let mut config = edge_config("edge");
    config.queue_capacity = 64;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());

    let mut slow = stalled_client(
        edge.addr,
        &Claims::new("slow").topics(&["firehose"]).hs256(SECRET),
        "/v1/events?topic=firehose",
    )
    .await;
    let fast_token = Claims::new("fast").topics(&["firehose"]).hs256(SECRET);
    let mut fast = SseStream::open(
        &reqwest::Client::new(),
        &events_url(edge, &["firehose"]),
        &fast_token,
    )
    .await;

    let mut client = publisher(publish).await;
    let payload = "x".repeat(8 * 1024);
    const EVENTS: usize = 3000;
    let reader = tokio::spawn(async move {
        for i in 0..EVENTS {
            let event = fast.next().await;
            assert_eq!(
                &event.data[..event.data.len().min(8)],
                &format!("{i:08}")[..],
                "event {i} in order"
            );
        }
        fast
    });
    for i in 0..EVENTS {
        publish_to_topic(&mut client, "firehose", &format!("{i:08}{payload}")).await;
    }
    let kept_up = tokio::time::timeout(Duration::from_secs(60), reader).await;
    let closes = edge.metrics().await;
    let _fast = kept_up
        .expect("fast reader kept up")
        .unwrap_or_else(|e| panic!("{e}; metrics:\n{closes}"));

    assert_eq!(
        edge.metric("herald_edge_slow_consumer_closes_total").await,
        1.0
    );
    assert_eq!(
        edge.metric("herald_edge_closes_total{reason=\"slow_consumer\"}")
            .await,
        1.0
    );
    // The stalled client's connection was dropped: reading now drains what
    // the kernel buffered and then hits the end.
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    drained
        .await
        .expect("the slow consumer's connection is closed");
    eventually(Duration::from_secs(5), "one open stream left", || async {
        (edge.metric("herald_edge_connections").await == 1.0).then_some(())
    })
    .await;
}

/// Opens an SSE stream on an HTTP/2 connection made with the `h2` crate,
/// whose flow control the test controls: a small window, released only
/// for data the test reads.
async fn h2_stream(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    url: &str,
    token: &str,
) -> h2::RecvStream {
    let request = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, _) = client
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(request, true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_h2_stream_is_closed_while_its_sibling_keeps_up() {
    let mut config = edge_config("edge");
    config.queue_capacity = 64;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(64 * 1024)
        // As browsers do: a connection window far above one stream's, so an
        // unread stream cannot starve its siblings.
        .initial_connection_window_size(16 * 1024 * 1024)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let url = events_url(edge, &["firehose"]);
    let token = |user: &str| Claims::new(user).topics(&["firehose"]).hs256(SECRET);

    // Same connection: one stream never read, one read as fast as it comes.
    let mut unread = h2_stream(&mut h2, &url, &token("slow")).await;
    let mut fast = h2_stream(&mut h2, &url, &token("fast")).await;

    const EVENTS: usize = 2000;
    let reader = tokio::spawn(async move {
        let (mut text, mut events) = (Vec::new(), 0);
        while events < EVENTS {
            let chunk = tokio::time::timeout(Duration::from_secs(10), fast.data()).await;
            let chunk = chunk
                .expect("data within 10s")
                .expect("stream open")
                .unwrap();
            fast.flow_control().release_capacity(chunk.len()).unwrap();
            let scan_from = text.len().saturating_sub(6);
            text.extend_from_slice(&chunk);
            events += text[scan_from..]
                .windows(7)
                .filter(|w| w == b"data: 0")
                .count();
        }
        text
    });
    let mut client = publisher(publish).await;
    let payload = "x".repeat(4 * 1024);
    for i in 0..EVENTS {
        publish_to_topic(&mut client, "firehose", &format!("0{i:07}{payload}")).await;
    }
    let text = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("fast reader kept up")
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    let seq: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| &d[..8])
        .collect();
    let expected: Vec<String> = (0..EVENTS).map(|i| format!("0{i:07}")).collect();
    assert_eq!(seq, expected, "every event, in order");

    let metrics = edge.metrics().await;
    assert_eq!(
        sample_value(&metrics, "herald_edge_slow_consumer_closes_total"),
        1.0,
        "{metrics}"
    );

    // Read again, the unread stream yields what was queued and then ends
    // with the reason and a reconnect hint.
    let mut rest = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = unread.data().await {
            let chunk = chunk.unwrap();
            unread.flow_control().release_capacity(chunk.len()).unwrap();
            rest.extend_from_slice(&chunk);
        }
    });
    drained.await.expect("the detached stream ends once read");
    assert!(rest.ends_with(b": closing: slow_consumer\nretry: 2000\n\n"));
    eventually(
        Duration::from_secs(5),
        "the close to be counted by reason",
        || async {
            let closes = edge
                .metric("herald_edge_closes_total{reason=\"slow_consumer\"}")
                .await;
            (closes == 1.0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn streams_work_over_h2c_with_prior_knowledge() {
    let stack = Stack::start(edge_config("edge")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let token = Claims::new("alice").topics(&["news"]).hs256(SECRET);

    // Two streams multiplexed on one HTTP/2 connection.
    let mut tabs = Vec::new();
    for topics in [&["news"][..], &[][..]] {
        let response = h2
            .get(events_url(edge, topics))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        tabs.push(eventsource_stream::Eventsource::eventsource(
            response.bytes_stream(),
        ));
    }
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "over h2").await;
    for tab in &mut tabs {
        let event = tokio::time::timeout(Duration::from_secs(10), tab.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.data, "over h2");
    }
    publish_to_topic(&mut client, "news", "topic over h2").await;
    let event = tokio::time::timeout(Duration::from_secs(10), tabs[0].next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.data, "topic over h2");
}

#[tokio::test]
async fn first_bytes_arrive_at_once_and_heartbeats_follow() {
    let mut config = edge_config("edge-hb");
    config.heartbeat = Duration::from_millis(200);
    let stack = Stack::builder().edge(config).start().await;
    let edge = stack.edge();
    let token = Claims::new("alice").hs256(SECRET);
    let response = reqwest::Client::new()
        .get(events_url(edge, &[]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"retry: 2000\n: herald edge edge-hb\n\n");
    let mut seen = Vec::new();
    while seen.windows(12).filter(|w| w == b": heartbeat\n").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(2), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let stack = Stack::builder().edge(edge_config("edge")).start().await;
    let edge = stack.edge();
    let exp = herald_testing::token::now() + 2;
    let token = Claims::new("alice").expires_at(exp).hs256(SECRET);
    let response = reqwest::Client::new()
        .get(events_url(edge, &[]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.ends_with(": closing: token_expired\nretry: 2000\n\n"),
        "{text:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the close to be counted",
        || async {
            (edge
                .metric("herald_edge_closes_total{reason=\"token_expired\"}")
                .await
                == 1.0)
                .then_some(())
        },
    )
    .await;
}

/// What the edges report (in-process and as processes) and what NATS
/// sees agree with the harness's choice: both users' subjects on one
/// connection, which is the lean
/// subscriber's (its CONNECT carries Herald's version and it takes no
/// replies) or async-nats's (its version, and the inbox its round trips
/// are answered on).
#[tokio::test]
async fn the_edge_subscribes_with_the_subscriber_the_harness_chose() {
    let stack = Stack::builder().edge(edge_config("edge")).start().await;
    let edge = stack.edge();
    let http = reqwest::Client::new();
    let mut streams = Vec::new();
    for user in ["alice", "bob"] {
        let token = Claims::new(user).hs256(SECRET);
        streams.push(SseStream::open(&http, &events_url(edge, &[]), &token).await);
    }
    let chosen = nats_subscriber();
    let info = format!(
        "herald_edge_nats_subscriber{{subscriber=\"{}\"}}",
        chosen.as_str()
    );
    assert_eq!(edge.metric(&info).await, 1.0, "{chosen:?}");
    // Edges run as processes too.
    let process = EdgeProcess::start(&stack.nats_url(), None).await;
    let metrics = metrics_at(process.process().admin).await;
    assert_eq!(sample_value(&metrics, &info), 1.0, "{chosen:?}");

    let connz = stack.nats().monitor("/connz?subs=1").await;
    let holders: Vec<&serde_json::Value> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            let subjects = c["subscriptions_list"].as_array();
            subjects.is_some_and(|s| s.iter().any(|s| s.as_str() == Some("herald.u.alice")))
        })
        .collect();
    let [holder] = holders[..] else {
        panic!("one connection holds alice's subject: {connz}");
    };
    let subjects: Vec<&str> = holder["subscriptions_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(subjects.contains(&"herald.u.bob"), "{subjects:?}");
    // herald-subscriptions has the workspace's version, as this crate.
    let herald = env!("CARGO_PKG_VERSION");
    let inboxes = subjects.iter().filter(|s| s.starts_with("_INBOX")).count();
    match chosen {
        herald_edge::NatsSubscriber::Lean => {
            assert_eq!(holder["version"], herald, "{holder}");
            assert_eq!(inboxes, 0, "{subjects:?}");
        }
        herald_edge::NatsSubscriber::AsyncNats => {
            assert_ne!(holder["version"], herald, "{holder}");
            assert_eq!(inboxes, 1, "{subjects:?}");
        }
    }
}
