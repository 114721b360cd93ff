//! Regions as they work today, on a supercluster of two 3-node clusters
//! joined by gateways (one JetStream domain): an event published in one
//! region reaches a stream in the other once; a topic event crosses once
//! however many follow it there; events nobody follows in a region do
//! not cross to it; a client that moves to the other region resumes what
//! it missed, and receipts in one region see streams in the other.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::sse::SseStream;
use herald_testing::supercluster::{NatsSupercluster, gateway_out_msgs};
use herald_testing::token::{Claims, Sign};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_to_the_region_that_follows_them_once_and_no_further() {
    let supercluster = NatsSupercluster::start(&["a", "b"], 3).await;
    let (a, b) = (supercluster.region("a"), supercluster.region("b"));
    let publish = start_publish(&a.client_urls(), replicated_publish("publish-a")).await;
    let edge_b = start_edge(&b.client_urls(), replicated_edge("edge-b")).await;
    let http = reqwest::Client::new();
    let alice = Claims::new("alice").hs256(SECRET);
    let mut alice = SseStream::open(&http, &events_url(&edge_b, &[]), &alice).await;
    let mut readers = Vec::new();
    for i in 0..5 {
        let token = Claims::new(format!("reader-{i}"))
            .topics(&["news"])
            .hs256(SECRET);
        readers.push(SseStream::open(&http, &events_url(&edge_b, &["news"]), &token).await);
    }
    let mut client = publisher(&publish).await;
    // Interest crosses the gateway a moment after the subscriptions:
    // until an event gets through.
    let mut heard = false;
    for _ in 0..60 {
        publish_ephemeral(&mut client, &["alice"], "ping").await;
        if alice
            .next_within(Duration::from_millis(300))
            .await
            .is_some()
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "alice's interest never reached region a");
    while alice
        .next_within(Duration::from_millis(300))
        .await
        .is_some()
    {}

    publish_to_users(&mut client, &["alice"], "stored in a").await;
    assert_eq!(alice.next().await.data, "stored in a");
    alice.assert_silent(Duration::from_millis(500)).await;

    // A topic event crosses once, not once per follower in region b.
    for reader in &mut readers {
        while reader
            .next_within(Duration::from_millis(100))
            .await
            .is_some()
        {}
    }
    let before = gateway_out_msgs(a, "b").await;
    const EVENTS: u64 = 50;
    for i in 0..EVENTS {
        let request = herald_proto::v1::PublishRequest {
            target: Some(herald_proto::v1::publish_request::Target::Topic(
                "news".into(),
            )),
            data: format!("news {i}"),
            ephemeral: true,
            ..Default::default()
        };
        client.publish(request).await.expect("publish");
    }
    for reader in &mut readers {
        for i in 0..EVENTS {
            assert_eq!(reader.next().await.data, format!("news {i}"));
        }
    }
    let crossed = gateway_out_msgs(a, "b").await - before;
    eprintln!("{EVENTS} topic events to 5 followers in b: {crossed} gateway messages a -> b");
    assert!(
        (EVENTS..EVENTS + 20).contains(&crossed),
        "{crossed} messages crossed for {EVENTS} events to 5 followers"
    );

    // Events for users with no stream in region b do not cross.
    let before = gateway_out_msgs(a, "b").await;
    for i in 0..EVENTS {
        publish_ephemeral(&mut client, &[&format!("nobody-{i}")], "unheard").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let crossed = gateway_out_msgs(a, "b").await - before;
    eprintln!("{EVENTS} events to users nobody in b follows: {crossed} gateway messages a -> b");
    assert!(
        crossed < 20,
        "{crossed} messages crossed for {EVENTS} events nobody in b follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_region_resumes_and_receipts_see_the_other_region() {
    let supercluster = NatsSupercluster::start(&["a", "b"], 3).await;
    let (a, b) = (supercluster.region("a"), supercluster.region("b"));
    let publish = start_publish(&a.client_urls(), replicated_publish("publish-a")).await;
    let edge_a = start_edge(&a.client_urls(), replicated_edge("edge-a")).await;
    let edge_b = start_edge(&b.client_urls(), replicated_edge("edge-b")).await;
    let http = reqwest::Client::new();
    let token = Claims::new("bob").hs256(SECRET);
    let mut client = publisher(&publish).await;

    // Bob on region a's edge gets one event, then his phone moves.
    let mut bob = SseStream::open(&http, &events_url(&edge_a, &[]), &token).await;
    publish_to_users(&mut client, &["bob"], "e1").await;
    let first = bob.next().await;
    assert_eq!(first.data, "e1");
    drop(bob);
    for data in ["e2", "e3"] {
        publish_to_users(&mut client, &["bob"], data).await;
    }
    // ... to region b's edge, with his last id: what he missed, once.
    let response = http
        .get(events_url(&edge_b, &[]))
        .bearer_auth(&token)
        .header("last-event-id", &first.id)
        .send()
        .await
        .unwrap();
    let mut bob = SseStream::from_response(response).await;
    assert_eq!(bob.next().await.data, "e2");
    assert_eq!(bob.next().await.data, "e3");

    // Publish in region a sees bob online in region b.
    let mut online = false;
    for _ in 0..100 {
        let response = publish_to_users(&mut client, &["bob"], "receipt").await;
        assert_eq!(bob.next().await.data, "receipt");
        if response.receipts[0].online {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "the receipt says bob is online, in region b");
}
