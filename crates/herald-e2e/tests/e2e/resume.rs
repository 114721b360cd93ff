//! Nothing lost on reconnect: `Last-Event-ID` resume from JetStream history;
//! nor on the live path: an event the edge missed is read from history
//! before the next one goes out.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::NatsServer;
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::token::{Claims, Sign};

/// Opens alice's stream on `edge`, resuming from `last_id` if given.
async fn open(edge: &Running, topics: &[&str], last_id: Option<&str>) -> SseStream {
    open_as(edge, "alice", topics, last_id).await
}

/// Opens `user`'s stream on `edge`, resuming from `last_id` if given.
async fn open_as(edge: &Running, user: &str, topics: &[&str], last_id: Option<&str>) -> SseStream {
    SseStream::from_response(connect(edge, user, topics, last_id).await).await
}

/// The answer to `user`'s connect to `edge`, before its body is read.
async fn connect(
    edge: &Running,
    user: &str,
    topics: &[&str],
    last_id: Option<&str>,
) -> reqwest::Response {
    let token = Claims::new(user).topics(&["*"]).hs256(SECRET);
    let mut request = reqwest::Client::new()
        .get(events_url(edge, topics))
        .bearer_auth(token);
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_reconnect_gets_what_it_missed_once_and_in_order_on_any_edge() {
    let stack = Stack::builder()
        .publish(publish_config())
        .edge(edge_config("edge-1"))
        .edge(edge_config("edge-2"))
        .start()
        .await;
    let (publish, edge1, edge2) = (stack.publish(), &stack.edges[0], &stack.edges[1]);
    let mut client = publisher(publish).await;

    let mut stream = open(edge1, &["news"], None).await;
    for i in 0..3 {
        publish_to_users(&mut client, &["alice"], &format!("u{i}")).await;
        publish_to_topic(&mut client, "news", &format!("t{i}")).await;
    }
    let mut last_id = String::new();
    for i in 0..3 {
        for want in [format!("u{i}"), format!("t{i}")] {
            let event = stream.next().await;
            assert_eq!(event.data, want);
            assert!(!event.id.is_empty());
            last_id = event.id;
        }
    }
    drop(stream);

    // Missed while away, on both the user stream and the topic.
    for i in 3..6 {
        publish_to_users(&mut client, &["alice"], &format!("u{i}")).await;
        publish_to_topic(&mut client, "news", &format!("t{i}")).await;
    }
    let mut resumed = open(edge2, &["news"], Some(&last_id)).await;
    let mut users = Vec::new();
    let mut topics = Vec::new();
    for _ in 0..6 {
        let event = resumed.next().await;
        match &event.data[..1] {
            "u" => users.push(event.data),
            _ => topics.push(event.data),
        }
    }
    assert_eq!(users, ["u3", "u4", "u5"]);
    assert_eq!(topics, ["t3", "t4", "t5"]);
    resumed.assert_silent(QUIET).await; // no duplicates
    publish_to_users(&mut client, &["alice"], "live").await;
    assert_eq!(resumed.next().await.data, "live");
    resumed.assert_silent(QUIET).await;
}

/// The id in the first block of alice's stream, read off the wire (it has
/// no data, so it is no event); the stream is then dropped.
async fn opening_id(edge: &Running, topics: &[&str]) -> String {
    use futures::StreamExt;
    let mut body = connect(edge, "alice", topics, None).await.bytes_stream();
    let mut head = Vec::new();
    while !head.windows(2).any(|w| w == b"\n\n") {
        head.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    let block = head.split("\n\n").next().unwrap();
    let id = block.lines().find_map(|l| l.strip_prefix("id: "));
    id.unwrap_or_else(|| panic!("no id in the opening: {block:?}"))
        .to_owned()
}

/// A stream whose client left before any event reached it: the opening's
/// id holds where each followed subject stood, so what was stored on them
/// meanwhile is replayed, and what was stored before it opened is not.
#[tokio::test]
async fn a_client_that_got_no_event_resumes_from_the_opening_id() {
    let stack = Stack::start(edge_config("edge")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "old").await;
    publish_to_topic(&mut client, "news", "old").await;

    let id = opening_id(edge, &["news", "sport"]).await;
    use herald_domain::cursor::{Cursor, key};
    let cursor = Cursor::decode(&id).unwrap();
    let keys: Vec<u32> = cursor.entries().iter().map(|e| e.0).collect();
    let mut followed = ["herald.u.alice", "herald.t.news", "herald.t.sport"].map(key);
    followed.sort_unstable();
    assert_eq!(keys, followed, "one position per followed subject");
    assert_eq!(cursor.get(key("herald.t.sport")), Some(0), "no event yet");

    publish_to_users(&mut client, &["alice"], "u-missed").await;
    publish_to_topic(&mut client, "news", "n-missed").await;
    publish_to_topic(&mut client, "sport", "s-missed").await;
    let mut resumed = open(edge, &["news", "sport"], Some(&id)).await;
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        got.push(resumed.next().await.data);
    }
    got.sort();
    assert_eq!(got, ["n-missed", "s-missed", "u-missed"]);
    resumed.assert_silent(QUIET).await;
}

/// A second stream on a topic this node follows starts where the first
/// one's live events left it, without a read: an event the topic carried
/// live before the second stream opened is not replayed to it later.
#[tokio::test]
async fn a_start_learned_from_live_events_is_current() {
    let stack = Stack::start(edge_config("edge")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let mut first = open_as(edge, "bob", &["news"], None).await;
    publish_to_topic(&mut client, "news", "n1").await;
    assert_eq!(first.next().await.data, "n1");

    let id = opening_id(edge, &["news"]).await;
    publish_to_topic(&mut client, "news", "n2").await;
    assert_eq!(first.next().await.data, "n2");
    let mut resumed = open(edge, &["news"], Some(&id)).await;
    assert_eq!(resumed.next().await.data, "n2");
    resumed.assert_silent(QUIET).await;
}

#[tokio::test]
async fn ten_thousand_events_survive_random_reconnects() {
    let stack = Stack::builder()
        .publish(publish_config())
        .edge(edge_config("edge-1"))
        .edge(edge_config("edge-2"))
        .start()
        .await;
    let (publish, edges) = (stack.publish(), &stack.edges);
    const EVENTS: usize = 10_000;
    // The first stream opens before publishing starts; every later one
    // resumes from the last id it saw.
    let mut stream = Some(open(&edges[0], &[], None).await);
    let mut client = publisher(publish).await;
    let publishing = tokio::spawn(async move {
        for i in 0..EVENTS {
            publish_to_users(&mut client, &["alice"], &i.to_string()).await;
        }
    });

    let mut rng = fastrand::Rng::with_seed(7);
    let (mut received, mut last_id, mut reconnects) =
        (Vec::with_capacity(EVENTS), None::<String>, 0);
    while received.len() < EVENTS {
        let before = received.len();
        let edge = &edges[rng.usize(0..2)];
        let mut stream = match stream.take() {
            Some(first) => first,
            None => open(edge, &[], last_id.as_deref()).await,
        };
        let take = rng.usize(1..800);
        for _ in 0..take {
            let Some(event) = stream.next_within(Duration::from_secs(3)).await else {
                break;
            };
            received.push(event.data.parse::<usize>().unwrap());
            last_id = Some(event.id);
            if received.len() == EVENTS {
                break;
            }
        }
        reconnects += 1;
        if reconnects > 3 && received.len() == before {
            break; // no progress: report below what is missing
        }
        assert!(
            reconnects < 1000,
            "bounded: {} events after {reconnects} reconnects",
            received.len()
        );
    }
    publishing.await.unwrap();
    assert!(reconnects > 5, "the test reconnected {reconnects} times");
    let expected: Vec<usize> = (0..EVENTS).collect();
    let first_mismatch = received.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        received == expected,
        "{} received; first mismatch at {first_mismatch:?}: {:?}",
        received.len(),
        first_mismatch.map(|i| &received[i.saturating_sub(2)..(i + 3).min(received.len())])
    );
}

#[tokio::test]
async fn a_topic_audience_resuming_together_reads_history_once() {
    let stack = Stack::start(edge_config("edge-1")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    publish_to_topic(&mut client, "news", "t0").await;
    let last_id = {
        let mut stream = open_as(edge, "u0", &["news"], None).await;
        publish_to_topic(&mut client, "news", "t1").await;
        stream.next().await.id
    };
    // Missed by everyone while the audience was away.
    for i in 2..7 {
        publish_to_topic(&mut client, "news", &format!("t{i}")).await;
    }
    // All come back at once while events keep arriving: one reads
    // history, the others wait for it and are served from what the edge
    // kept, each with every event once, in order.
    const AUDIENCE: usize = 40;
    const LIVE: usize = 20;
    let publishing = tokio::spawn(async move {
        for i in 7..7 + LIVE {
            publish_to_topic(&mut client, "news", &format!("t{i}")).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let opens = (0..AUDIENCE).map(|i| {
        let (edge, last_id) = (&edge, &last_id);
        async move { open_as(edge, &format!("u{i}"), &["news"], Some(last_id)).await }
    });
    let mut audience = futures::future::join_all(opens).await;
    publishing.await.unwrap();
    let expected: Vec<_> = (2..7 + LIVE).map(|i| format!("t{i}")).collect();
    for (i, stream) in audience.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.push(stream.next().await.data);
        }
        assert_eq!(got, expected, "stream {i}");
    }
    futures::future::join_all(audience.iter_mut().map(|s| s.assert_silent(QUIET))).await;
    let from = |source: &str| format!("herald_edge_resumed_subjects_total{{source=\"{source}\"}}");
    // One read of the topic; u0's id also holds u0's own stream (from its
    // opening), which u0 resumes from history too.
    assert_eq!(edge.metric(&from("history")).await, 2.0);
    assert_eq!(edge.metric(&from("memory")).await, (AUDIENCE - 1) as f64);
}

#[tokio::test]
async fn users_resuming_together_share_a_read_of_the_history_tail_and_lose_nothing() {
    let stack = Stack::start(edge_config("edge-1")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    // Each user's events lie far apart in the history streams, between
    // everyone else's: single reads step over all of those.
    const USERS: usize = 400;
    let names: Vec<String> = (0..USERS).map(|i| format!("storm-{i}")).collect();
    let users: Vec<&str> = names.iter().map(String::as_str).collect();
    let opens = users.iter().map(|u| open_as(edge, u, &[], None));
    let mut streams = futures::future::join_all(opens).await;
    publish_to_users(&mut client, &users, "b0").await;
    let mut ids = Vec::new();
    for stream in &mut streams {
        ids.push(stream.next().await.id);
    }
    drop(streams);
    for i in 1..4 {
        publish_to_users(&mut client, &users, &format!("m{i}")).await;
    }
    // All back at once, while one more event arrives live.
    let everyone = names.clone();
    let live = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let users: Vec<&str> = everyone.iter().map(String::as_str).collect();
        publish_to_users(&mut client, &users, "m4").await;
    });
    let opens = users
        .iter()
        .zip(&ids)
        .map(|(u, id)| open_as(edge, u, &[], Some(id)));
    let mut streams = futures::future::join_all(opens).await;
    live.await.unwrap();
    let expected: Vec<String> = (1..5).map(|i| format!("m{i}")).collect();
    for (user, stream) in users.iter().zip(&mut streams) {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.push(stream.next().await.data);
        }
        assert_eq!(got, expected, "{user}");
    }
    futures::future::join_all(streams.iter_mut().map(|s| s.assert_silent(QUIET))).await;
    assert!(edge.metric("herald_edge_history_tail_reads_total").await >= 1.0);
    assert_eq!(edge.metric("herald_edge_resets_total").await, 0.0);
}

#[tokio::test]
async fn streams_resuming_shared_topics_in_opposite_orders_do_not_wait_on_each_other() {
    let stack = Stack::start(edge_config("edge-1")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    // A cursor with a position on both topics.
    let mut first = open_as(edge, "u0", &["a", "b"], None).await;
    publish_to_topic(&mut client, "a", "a0").await;
    publish_to_topic(&mut client, "b", "b0").await;
    first.next().await;
    let last_id = first.next().await.id;
    drop(first);
    for topic in ["a", "b"] {
        publish_to_topic(&mut client, topic, &format!("{topic}1")).await;
    }

    // Each stream reads one topic's history for the others and would wait
    // for the other topic's read: with the orders crossed, two streams
    // could each wait for the read the other holds (until a 5 s timeout).
    let started = std::time::Instant::now();
    let opens = (0..20).map(|i| {
        let topics = if i % 2 == 0 { ["a", "b"] } else { ["b", "a"] };
        let (edge, last_id) = (&edge, &last_id);
        async move { open_as(edge, &format!("u{i}"), &topics, Some(last_id)).await }
    });
    let mut streams = futures::future::join_all(opens).await;
    for stream in &mut streams {
        let mut got = vec![stream.next().await.data, stream.next().await.data];
        got.sort();
        assert_eq!(got, ["a1", "b1"]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "resuming took {:?}: streams waited on each other",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_cursor_older_than_history_gets_one_reset_then_live() {
    let mut config = herald_publish::Config::defaults("p");
    config.history.history_max_per_subject = 3;
    let mut edge_cfg = edge_config("edge");
    edge_cfg.history.history_max_per_subject = 3;
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_cfg)
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;

    let mut stream = open(edge, &[], None).await;
    publish_to_users(&mut client, &["alice"], "first").await;
    let first = stream.next().await;
    drop(stream);
    for i in 0..10 {
        publish_to_users(&mut client, &["alice"], &format!("gone{i}")).await;
    }
    let mut resumed = open(edge, &[], Some(&first.id)).await;
    let reset = resumed.next().await;
    assert_eq!(reset.event, "herald.reset");
    resumed.assert_silent(QUIET).await;
    publish_to_users(&mut client, &["alice"], "after").await;
    let live = resumed.next().await;
    assert_eq!(live.data, "after");
    drop(resumed);

    // The id after a reset resumes normally: no second reset.
    publish_to_users(&mut client, &["alice"], "missed").await;
    let mut again = open(edge, &[], Some(&live.id)).await;
    assert_eq!(again.next().await.data, "missed");
    again.assert_silent(QUIET).await;
}

#[tokio::test]
async fn hostile_cursors_get_400_or_clean_handling() {
    let stack = Stack::start(edge_config("edge")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let token = Claims::new("alice").hs256(SECRET);
    let http = reqwest::Client::new();
    let url = events_url(edge, &[]);

    let mut future = herald_domain::cursor::Cursor::default();
    future.set(herald_domain::cursor::key("herald.u.alice"), 1_000_000);
    // Within the 16 KiB head limit (larger heads get 431: listeners.rs).
    let huge = "A".repeat(12_000);
    for bad in [
        "garbage!",
        "AgA",
        "AQ",
        &huge,
        &future.encode(),
        "AQGU1sWFAgE=",
    ] {
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:.30}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_cursor", "{bad:.30}");
        if bad.len() < 2000 {
            let query = format!("{url}last_event_id={}", form_urlencoded_value(bad));
            let response = http.get(&query).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), 400, "query {bad:.30}");
        }
    }

    // Position 0 is "nothing seen yet": all of alice's history, then live.
    publish_to_users(&mut client, &["alice"], "stored").await;
    let mut zero = herald_domain::cursor::Cursor::default();
    zero.set(herald_domain::cursor::key("herald.u.alice"), 0);
    let mut from_zero = open(edge, &[], Some(&zero.encode())).await;
    assert_eq!(from_zero.next().await.data, "stored");
    from_zero.assert_silent(QUIET).await;
    drop(from_zero);

    // Bob's cursor on alice's stream names none of her subjects: she simply
    // starts live, and sees nothing of bob's.
    publish_to_users(&mut client, &["bob"], "bob's").await;
    let bob_token = Claims::new("bob").hs256(SECRET);
    let mut bob = SseStream::open(&http, &url, &bob_token).await;
    publish_to_users(&mut client, &["bob"], "bob's 2").await;
    let bobs_id = bob.next().await.id;
    let mut alice = open(edge, &[], Some(&bobs_id)).await;
    alice.assert_silent(QUIET).await;
    publish_to_users(&mut client, &["alice"], "alice's").await;
    assert_eq!(alice.next().await.data, "alice's");
}

fn form_urlencoded_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_resumes_from_its_cursor_and_loses_nothing() {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = edge_config("edge");
    config.queue_capacity = 32;
    // The 16 KiB events that fill the socket quickly add up to more than
    // one connect replays by default (1 MiB): this test is about the
    // cursor after a stall, not about the cap.
    config.replay.bytes = 32 << 20;
    let stack = Stack::start(config).await;
    let token = Claims::new("alice").hs256(SECRET);

    // A client that reads its response head and then stalls.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = socket.connect(stack.edge().addr).await.unwrap();
    let request =
        format!("GET /v1/events HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\n\r\n");
    raw.write_all(request.as_bytes()).await.unwrap();
    // The stream starts at the newest stored event when it opens (its
    // opening id; see `starts`), and the head goes out with that id: an
    // event published before the head arrives may lie before the start
    // (it did, 1 run in 6: event 0, and the resume then ended at 899).
    let mut bytes = Vec::new();
    let head = async {
        while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = raw.read_buf(&mut bytes).await.unwrap();
            assert!(read > 0, "the edge closed before the response head");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), head)
        .await
        .expect("the response head within 10 s");

    // Fewer than history keeps per user (1,000), so nothing may be missing.
    const EVENTS: usize = 900;
    let payload = "x".repeat(16 * 1024);
    let mut client = stack.publisher().await;
    for i in 0..EVENTS {
        publish_to_users(&mut client, &["alice"], &format!("{i:06}{payload}")).await;
    }
    assert_eq!(
        stack
            .edge()
            .metric("herald_edge_slow_consumer_closes_total")
            .await,
        1.0
    );

    // It reads again: what was buffered, then the end of the connection.
    tokio::time::timeout(Duration::from_secs(20), raw.read_to_end(&mut bytes))
        .await
        .expect("the connection was closed")
        .ok();
    let start = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let chunked = dechunk(&bytes[start..]);
    let mut before =
        eventsource_stream::Eventsource::eventsource(futures::stream::iter([Ok::<
            _,
            std::convert::Infallible,
        >(chunked)]));
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while let Some(Ok(event)) = before.next().await {
        seen.push(event.data[..6].parse::<usize>().unwrap());
        last_id = event.id;
    }
    assert!(
        seen.len() < EVENTS,
        "the stall cut the stream short ({} events)",
        seen.len()
    );
    assert!(
        seen == (0..seen.len()).collect::<Vec<_>>(),
        "before the stall: every event from the first once, in order"
    );

    // Resuming from the last complete event brings everything else.
    let mut resumed = open(stack.edge(), &[], Some(&last_id)).await;
    while seen.len() < EVENTS {
        let event = resumed.next_within(Duration::from_secs(10)).await;
        let n = seen.len();
        let event = event.unwrap_or_else(|| panic!("the replay stopped at {n} of {EVENTS}"));
        seen.push(event.data[..6].parse::<usize>().unwrap());
    }
    resumed.assert_silent(QUIET).await;
    assert!(
        seen == (0..EVENTS).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

/// Undoes HTTP/1.1 chunked transfer coding, keeping whole chunks only.
fn dechunk(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = input.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&input[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        let data = line_end + 2;
        if size == 0 || input.len() < data + size {
            break;
        }
        out.extend_from_slice(&input[data..data + size]);
        input = input.get(data + size + 2..).unwrap_or_default();
    }
    out
}

#[tokio::test]
async fn a_retried_publish_with_an_idempotency_key_is_stored_and_delivered_once() {
    let stack = Stack::start(edge_config("edge")).await;
    let mut stream = open(stack.edge(), &["news"], None).await;
    let mut client = stack.publisher().await;
    let request = |target, key: &str, data: &str| herald_proto::v1::PublishRequest {
        target: Some(target),
        data: data.to_owned(),
        idempotency_key: key.to_owned(),
        ..Default::default()
    };
    let users = || herald_proto::v1::publish_request::Target::users(["alice", "bob"]);
    let topic = || herald_proto::v1::publish_request::Target::Topic("news".into());

    let first = client
        .publish(request(users(), "order-42", "filled"))
        .await
        .unwrap()
        .into_inner();
    let retry = client
        .publish(request(users(), "order-42", "filled"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.event_id, "order-42");
    assert_eq!(retry.event_id, "order-42");
    client
        .publish(request(topic(), "news-1", "headline"))
        .await
        .unwrap();
    client
        .publish(request(topic(), "news-1", "headline"))
        .await
        .unwrap();
    client
        .publish(request(users(), "order-43", "next"))
        .await
        .unwrap();

    let received: Vec<String> = [
        stream.next().await,
        stream.next().await,
        stream.next().await,
    ]
    .into_iter()
    .map(|e| e.data)
    .collect();
    assert_eq!(received, ["filled", "headline", "next"]);
    stream.assert_silent(QUIET).await;
}

/// (event type, data) of the next `n` events.
async fn next_events(stream: &mut SseStream, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let event = stream.next().await;
        got.push((event.event, event.data));
    }
    got
}

fn message(data: &str) -> (String, String) {
    ("message".into(), data.into())
}

fn limit_reset() -> (String, String) {
    ("herald.reset".into(), r#"{"reason":"replay_limit"}"#.into())
}

#[tokio::test]
async fn a_resume_beyond_the_event_cap_gets_what_fits_then_one_reset_then_live() {
    let mut config = edge_config("edge");
    config.replay.events = 5;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let mut stream = open(edge, &["news"], None).await;
    publish_to_users(&mut client, &["alice"], "u0").await;
    publish_to_topic(&mut client, "news", "t0").await;
    stream.next().await;
    let last_id = stream.next().await.id;
    drop(stream);
    for i in 1..=4 {
        publish_to_users(&mut client, &["alice"], &format!("u{i}")).await;
        publish_to_topic(&mut client, "news", &format!("t{i}")).await;
    }

    // The user stream comes first: its 4 events, then 1 of the topic's;
    // the rest of the topic is one reset, positioned at its newest event.
    let mut resumed = open(edge, &["news"], Some(&last_id)).await;
    let got = next_events(&mut resumed, 6).await;
    let want = ["u1", "u2", "u3", "u4", "t1"].map(message);
    assert_eq!(got[..5], want);
    assert_eq!(got[5], limit_reset());
    resumed.assert_silent(QUIET).await;
    assert_eq!(edge.metric("herald_edge_resets_total").await, 1.0);
    assert_eq!(edge.metric("herald_edge_replayed_events_total").await, 6.0);
    // Live after the reset: both subjects.
    publish_to_users(&mut client, &["alice"], "u5").await;
    publish_to_topic(&mut client, "news", "t5").await;
    let (u5, t5) = (resumed.next().await, resumed.next().await);
    assert_eq!([u5.data.as_str(), t5.data.as_str()], ["u5", "t5"]);
    drop(resumed);
    // That id resumes with nothing to replay: no second reset.
    let mut again = open(edge, &["news"], Some(&t5.id)).await;
    again.assert_silent(QUIET).await;
}

#[tokio::test]
async fn a_resume_beyond_the_byte_cap_gets_what_fits_then_one_reset() {
    let mut config = edge_config("edge");
    // Room for two 1 KiB events, not three.
    config.replay.bytes = 2500;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let mut stream = open(edge, &[], None).await;
    publish_to_users(&mut client, &["alice"], "first").await;
    let last_id = stream.next().await.id;
    drop(stream);
    let big = |i: usize| format!("{i}{}", "x".repeat(1023));
    for i in 0..5 {
        publish_to_users(&mut client, &["alice"], &big(i)).await;
    }
    let mut resumed = open(edge, &[], Some(&last_id)).await;
    let got = next_events(&mut resumed, 3).await;
    assert_eq!(got, [message(&big(0)), message(&big(1)), limit_reset()]);
    resumed.assert_silent(QUIET).await;
}

#[tokio::test]
async fn events_the_edge_holds_count_against_the_cap_too() {
    let mut config = edge_config("edge");
    config.replay.events = 3;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    // Two streams on the topic: its fan-out task keeps the newest events.
    let mut watcher = open_as(edge, "u1", &["news"], None).await;
    let _other = open_as(edge, "u2", &["news"], None).await;
    for i in 0..10 {
        publish_to_topic(&mut client, "news", &format!("t{i}")).await;
    }
    let first = watcher.next().await;
    for _ in 1..10 {
        watcher.next().await;
    }
    let mut resumed = open_as(edge, "u3", &["news"], Some(&first.id)).await;
    let got = next_events(&mut resumed, 4).await;
    assert_eq!(got[..3], ["t1", "t2", "t3"].map(message));
    assert_eq!(got[3], limit_reset());
    resumed.assert_silent(QUIET).await;
    let memory = "herald_edge_resumed_subjects_total{source=\"memory\"}";
    assert_eq!(edge.metric(memory).await, 1.0);
    // The reset is positioned at the newest event held: live goes on from there.
    publish_to_topic(&mut client, "news", "live").await;
    assert_eq!(resumed.next().await.data, "live");
}

#[tokio::test]
async fn an_audience_resuming_more_than_the_edge_keeps_reads_for_itself_and_loses_nothing() {
    let stack = Stack::start(edge_config("edge-1")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let last_id = {
        let mut stream = open_as(edge, "u0", &["news"], None).await;
        publish_to_topic(&mut client, "news", "t0").await;
        stream.next().await.id
    };
    // More than a subject's fan-out task keeps (32 events): whoever reads
    // history first does not keep it for the others, who read for
    // themselves rather than wait for what would not be held.
    const MISSED: usize = 40;
    for i in 1..=MISSED {
        publish_to_topic(&mut client, "news", &format!("t{i}")).await;
    }
    const AUDIENCE: usize = 10;
    let opens = (0..AUDIENCE).map(|i| {
        let (edge, last_id) = (&edge, &last_id);
        async move { open_as(edge, &format!("u{i}"), &["news"], Some(last_id)).await }
    });
    let mut audience = futures::future::join_all(opens).await;
    let expected: Vec<_> = (1..=MISSED).map(|i| format!("t{i}")).collect();
    for (i, stream) in audience.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.push(stream.next().await.data);
        }
        assert_eq!(got, expected, "stream {i}");
    }
    futures::future::join_all(audience.iter_mut().map(|s| s.assert_silent(QUIET))).await;
    let from = |source: &str| format!("herald_edge_resumed_subjects_total{{source=\"{source}\"}}");
    // Each reads the topic; u0 also its own stream, held in its id.
    assert_eq!(edge.metric(&from("history")).await, (AUDIENCE + 1) as f64);
    assert_eq!(edge.metric(&from("memory")).await, 0.0);
}

/// Takes RePublish off the history stream holding `subject` (`on`: puts it
/// back as herald-publish made it): what is stored meanwhile never reaches
/// any edge live, as when a message is lost between JetStream and the edge.
async fn republish(nats: &NatsServer, subject: &str, on: bool) {
    use herald_nats::history::{shard_of, stream_name};
    let history = edge_config("any").history;
    let shard = shard_of(subject, history.history_shards);
    let client = async_nats::connect(nats.client_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut config = js
        .get_stream(stream_name(&Default::default(), shard))
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.republish = history
        .stream_config(&Default::default(), shard)
        .republish
        .filter(|_| on);
    let updated = js.update_stream(config).await.unwrap();
    assert_eq!(updated.config.republish.is_some(), on);
}

/// An event the edge's live subscription never got is read from history
/// before the next one goes out: each stream gets every event once, in
/// order, without reconnecting.
///
/// The gap is forced, deterministically, by taking RePublish off alice's
/// history stream (a stream update; nats-server applies it before it
/// answers): the next two events are stored but never emitted live, as
/// when the edge's interest had not yet reached the stream leader's
/// server, or a message was lost on a route. With RePublish back, the next
/// event names the last missed one as its subject's previous sequence
/// (`Nats-Last-Sequence`). Edge 1 knows alice's last sequence from an
/// event it delivered; edge 2 only from the resume of a stream that had
/// missed nothing (the newest event it read): both fill the gap.
#[tokio::test]
async fn an_event_missed_on_the_live_path_is_read_from_history_first() {
    let stack = Stack::builder()
        .publish(publish_config())
        .edge(edge_config("edge-1"))
        .edge(edge_config("edge-2"))
        .start()
        .await;
    let (publish, edge1, edge2) = (stack.publish(), &stack.edges[0], &stack.edges[1]);
    let mut client = publisher(publish).await;
    let mut live = open(edge1, &[], None).await;
    publish_to_users(&mut client, &["alice"], "u1").await;
    let first = live.next().await;
    assert_eq!(first.data, "u1");
    let mut resumed = open(edge2, &[], Some(&first.id)).await;

    republish(stack.nats(), "herald.u.alice", false).await;
    for data in ["u2", "u3"] {
        publish_to_users(&mut client, &["alice"], data).await;
    }
    live.assert_silent(QUIET).await; // stored, never live
    republish(stack.nats(), "herald.u.alice", true).await;
    publish_to_users(&mut client, &["alice"], "u4").await;

    for (edge, stream) in [(&edge1, &mut live), (&edge2, &mut resumed)] {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(stream.next().await.data);
        }
        assert_eq!(got, ["u2", "u3", "u4"]);
        stream.assert_silent(QUIET).await;
        let filled = "herald_edge_live_gaps_total{outcome=\"filled\"}";
        assert_eq!(edge.metric(filled).await, 1.0);
        let read = "herald_edge_live_gap_events_read_total";
        assert_eq!(edge.metric(read).await, 2.0);
    }
    publish_to_users(&mut client, &["alice"], "u5").await;
    assert_eq!(live.next().await.data, "u5");
    assert_eq!(resumed.next().await.data, "u5");
}

/// A gap larger than one fill reads (128 events) is not skipped either:
/// the stream ends with a come-back, and its client resumes from its last
/// id and gets every event once, in order.
#[tokio::test]
async fn a_gap_too_large_to_fill_ends_the_stream_and_its_resume_loses_nothing() {
    let stack = Stack::start(edge_config("edge")).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let mut stream = open(edge, &[], None).await;
    publish_to_users(&mut client, &["alice"], "0").await;
    let first = stream.next().await;

    const MISSED: usize = herald_edge::fanout::fill::MAX_EVENTS + 1;
    republish(stack.nats(), "herald.u.alice", false).await;
    for i in 1..=MISSED {
        publish_to_users(&mut client, &["alice"], &i.to_string()).await;
    }
    republish(stack.nats(), "herald.u.alice", true).await;
    let last = (MISSED + 1).to_string();
    publish_to_users(&mut client, &["alice"], &last).await;

    assert!(
        stream.next_within(Duration::from_secs(10)).await.is_none(),
        "ended"
    );
    let too_large = "herald_edge_live_gaps_total{outcome=\"too_large\"}";
    assert_eq!(edge.metric(too_large).await, 1.0);
    let ended = "herald_edge_closes_total{reason=\"server_error\"}";
    assert_eq!(edge.metric(ended).await, 1.0);
    let mut resumed = open(edge, &[], Some(&first.id)).await;
    let mut got = Vec::new();
    for _ in 1..=MISSED + 1 {
        got.push(resumed.next().await.data.parse::<usize>().unwrap());
    }
    assert_eq!(got, (1..=MISSED + 1).collect::<Vec<_>>());
    resumed.assert_silent(QUIET).await;
}
