//! `PublishBatch`: each request published as a single Publish would be, a
//! bad one failing alone, persisted ones stored in order before the
//! answer; and JetStream stores pipelined rather than one round trip each.

use std::time::Instant;

use herald_e2e::*;
use herald_proto::v1::{
    PublishBatchRequest, PublishRequest, PublishResult, publish_request::Target,
};
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::token::{Claims, Sign};

fn to_user(user: &str, data: &str) -> PublishRequest {
    PublishRequest {
        target: Some(Target::users([user])),
        data: data.to_owned(),
        ..Default::default()
    }
}

fn to_topic(topic: &str, data: &str) -> PublishRequest {
    PublishRequest {
        target: Some(Target::Topic(topic.to_owned())),
        data: data.to_owned(),
        ..Default::default()
    }
}

async fn open(edge: &Running, user: &str, topics: &[&str]) -> SseStream {
    let token = Claims::new(user).topics(&["*"]).hs256(SECRET);
    SseStream::open(&reqwest::Client::new(), &events_url(edge, topics), &token).await
}

async fn batch(
    publish: &Running,
    requests: Vec<PublishRequest>,
) -> Result<Vec<PublishResult>, tonic::Status> {
    let answer = publisher(publish)
        .await
        .publish_batch(PublishBatchRequest { requests })
        .await?;
    Ok(answer.into_inner().results)
}

#[tokio::test]
async fn each_good_request_is_published_and_each_bad_one_fails_alone() {
    let stack = Stack::start(edge_config("edge")).await;
    let mut alice = open(stack.edge(), "alice", &["news"]).await;
    let keyed = |data: &str| PublishRequest {
        idempotency_key: "order-7".into(),
        ..to_user("alice", data)
    };
    let requests = vec![
        to_user("alice", "a1"),
        to_user("", "no one"),
        to_topic("news", "t1"),
        to_user("alice", &"x".repeat(64 * 1024 + 1)),
        keyed("a2"),
        PublishRequest {
            offline: 9,
            ..to_user("alice", "bad policy")
        },
        keyed("a2 again"),
        to_user("alice", "a3"),
    ];
    let results = batch(stack.publish(), requests).await.unwrap();
    let errors: Vec<&str> = results.iter().map(|r| r.error.as_str()).collect();
    assert_eq!(results.len(), 8, "{errors:?}");
    for i in [0, 2, 4, 6, 7] {
        assert!(results[i].error.is_empty(), "{i}: {}", results[i].error);
        assert!(results[i].response.is_some(), "{i}");
    }
    assert!(
        errors[1].starts_with("INVALID_ARGUMENT: user_ids[0]"),
        "{}",
        errors[1]
    );
    assert!(
        errors[3].starts_with("INVALID_ARGUMENT: data is 65537 bytes"),
        "{}",
        errors[3]
    );
    assert!(
        errors[5].starts_with("INVALID_ARGUMENT: offline: 9"),
        "{}",
        errors[5]
    );
    assert!(results[1].response.is_none());
    let event_id = |i: usize| results[i].response.as_ref().unwrap().event_id.clone();
    assert_eq!(
        (event_id(4), event_id(6)),
        ("order-7".into(), "order-7".into())
    );
    assert_eq!(event_id(0).len(), 22, "persisted events have ids");
    let receipts = &results[0].response.as_ref().unwrap().receipts;
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].user_id, "alice");

    // Alice's own events in the order sent; the keyed retry stored once.
    let mut received = Vec::new();
    for _ in 0..4 {
        received.push(alice.next().await.data);
    }
    alice.assert_silent(QUIET).await;
    let own: Vec<&str> = received
        .iter()
        .map(String::as_str)
        .filter(|d| *d != "t1")
        .collect();
    assert_eq!(own, ["a1", "a2", "a3"]);
    assert!(received.contains(&"t1".to_owned()), "{received:?}");
    assert_eq!(
        stack
            .publish()
            .metric("herald_publish_requests_total{outcome=\"invalid_argument\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn a_large_batch_arrives_whole_and_in_order_per_user() {
    let stack = Stack::start(edge_config("edge")).await;
    let mut streams = Vec::new();
    for user in ["u0", "u1", "u2"] {
        streams.push(open(stack.edge(), user, &[]).await);
    }
    // Interleaved, with ephemeral events to a user no one follows.
    let mut requests = Vec::new();
    for i in 0..900 {
        requests.push(to_user(&format!("u{}", i % 3), &i.to_string()));
        if i % 100 == 0 {
            requests.push(PublishRequest {
                ephemeral: true,
                ..to_user("nobody", "x")
            });
        }
    }
    let results = batch(stack.publish(), requests).await.unwrap();
    assert!(results.iter().all(|r| r.error.is_empty()));
    for (u, stream) in streams.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..300 {
            got.push(stream.next().await.data.parse::<usize>().unwrap());
        }
        let want: Vec<usize> = (0..900).filter(|i| i % 3 == u).collect();
        assert_eq!(got, want, "u{u}");
        stream.assert_silent(QUIET).await;
    }
}

#[tokio::test]
async fn a_batch_over_its_limits_is_refused_whole() {
    let config = herald_publish::Config {
        max_batch: 3,
        max_payload: 100,
        max_batch_bytes: 200,
        ..publish_config()
    };
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_config("edge"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut alice = open(edge, "alice", &[]).await;

    let four = vec![to_user("alice", "x"); 4];
    let refused = batch(publish, four).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("--max-batch"),
        "{}",
        refused.message()
    );
    let heavy = vec![to_user("alice", &"x".repeat(90)); 3];
    let refused = batch(publish, heavy).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("--max-batch-bytes"),
        "{}",
        refused.message()
    );
    alice.assert_silent(QUIET).await;

    let fits = vec![to_user("alice", "ok"); 3];
    assert!(
        batch(publish, fits)
            .await
            .unwrap()
            .iter()
            .all(|r| r.error.is_empty())
    );
    assert_eq!(alice.next().await.data, "ok");
}

/// With three replicas every store waits for a quorum: one round trip per
/// event would show. A batch, and single calls in flight together, must
/// take a small part of `events` sequential round trips.
#[tokio::test]
async fn stores_are_pipelined_not_one_round_trip_each() {
    let mut config = publish_config();
    config.history.history_replicas = 3;
    config.history.history_shards = 1;
    let stack = Stack::builder().cluster(3).publish(config).start().await;
    let publish = stack.publish();
    let mut client = publisher(publish).await;
    let sequential = 30;
    let started = Instant::now();
    for i in 0..sequential {
        publish_to_users(&mut client, &["alice"], &i.to_string()).await;
    }
    let round_trip = started.elapsed() / sequential;
    let events = 600;

    let started = Instant::now();
    let requests = (0..events)
        .map(|i| to_user("alice", &i.to_string()))
        .collect();
    let results = batch(publish, requests).await.unwrap();
    let batched = started.elapsed();
    assert!(results.iter().all(|r| r.error.is_empty()));

    let started = Instant::now();
    let calls = (0..events).map(|i| {
        let mut client = client.clone();
        async move { publish_to_users(&mut client, &["alice"], &i.to_string()).await }
    });
    futures::future::join_all(calls).await;
    let concurrent = started.elapsed();

    let serial = round_trip * events;
    eprintln!(
        "round trip {round_trip:?}; {events} events: batch {batched:?}, concurrent {concurrent:?}, serial would be {serial:?}"
    );
    assert!(
        batched < serial / 4,
        "batch {batched:?} vs serial {serial:?}"
    );
    // Single calls cost CPU of their own (600 gRPC calls in a debug
    // build), which a loaded machine stretches; half of serial still
    // shows that their stores do not wait for each other.
    assert!(
        concurrent < serial / 2,
        "concurrent {concurrent:?} vs serial {serial:?}"
    );
}
