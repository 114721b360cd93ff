//! Messages published by another client reach the callback with the sid
//! they were subscribed with: headers, empty and 1 MiB payloads, payloads
//! that look like protocol; unsubscribing stops them; 20,000 subscriptions
//! share one connection.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use herald_testing::NatsServer;

#[tokio::test]
async fn messages_reach_the_callback_whole_with_their_sid() {
    let server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    let nats = publisher(&server.client_url()).await;
    let a = c.subs.subscribe("herald.u.alice");
    let b = c.subs.subscribe("herald.u.bob");
    assert_ne!(a, b);
    c.subs.round_trip().await.unwrap();

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Sequence", "42");
    headers.append("Trace", "one");
    headers.append("Trace", "two");
    nats.publish_with_headers("herald.u.alice", headers, Bytes::from_static(b"hi"))
        .await
        .unwrap();
    nats.publish("herald.u.alice", Bytes::new()).await.unwrap();
    let big = Bytes::from(vec![b'x'; 1024 * 1024 - 200]);
    nats.publish("herald.u.bob", big.clone()).await.unwrap();
    let tricky = Bytes::from_static(b"\r\nMSG herald.u.bob 2 3\r\nabc\r\nPING\r\n");
    nats.publish_with_reply("herald.u.bob", "reply.here", tricky.clone())
        .await
        .unwrap();
    nats.flush().await.unwrap();

    let alice = c.recorder.wait(a, 2).await;
    assert_eq!(alice[0].subject.as_str(), "herald.u.alice");
    assert_eq!(&alice[0].payload[..], b"hi");
    let headers = alice[0].headers.as_ref().unwrap();
    assert_eq!(headers.get("Nats-Sequence").unwrap().as_str(), "42");
    let traces: Vec<&str> = headers.get_all("Trace").map(|v| v.as_str()).collect();
    assert_eq!(traces, ["one", "two"]);
    assert!(alice[1].payload.is_empty() && alice[1].headers.is_none());

    let bob = c.recorder.wait(b, 2).await;
    assert_eq!(bob[0].payload, big);
    assert_eq!(bob[1].payload, tricky);
    assert_eq!(bob[1].reply.as_deref(), Some("reply.here"));
    assert_eq!(c.recorder.of(a).len(), 2, "nothing crossed over");
    assert_eq!(c.subs.stats().delivered, 4);
}

#[tokio::test]
async fn unsubscribing_stops_delivery_and_server_interest() {
    let server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    let nats = publisher(&server.client_url()).await;
    let gone = c.subs.subscribe("herald.t.news");
    let kept = c.subs.subscribe("herald.t.news");
    c.subs.round_trip().await.unwrap();
    assert_eq!(c.subs.len(), 2);
    publish(&nats, "herald.t.news", b"1").await;
    c.recorder.wait(gone, 1).await;

    c.subs.unsubscribe(gone);
    c.subs.unsubscribe(gone); // twice: harmless
    assert_eq!(c.subs.len(), 1);
    c.subs.round_trip().await.unwrap();
    let conn = our_connection(&server).await.unwrap();
    assert_eq!(conn["subscriptions"], 1, "{conn}");
    publish(&nats, "herald.t.news", b"2").await;
    c.recorder.wait(kept, 2).await;
    assert_eq!(c.recorder.of(gone).len(), 1);
}

#[tokio::test]
async fn a_subject_that_would_change_the_sub_line_is_never_sent() {
    let server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    for hostile in ["", "a b", "a\r\nPUB x 1\r\ny", "tab\there"] {
        c.subs.subscribe(hostile);
    }
    assert!(c.subs.is_empty());
    c.subs.round_trip().await.unwrap();
    let conn = our_connection(&server).await.unwrap();
    assert_eq!(conn["subscriptions"], 0, "{conn}");
    assert_eq!(conn["in_msgs"], 0, "{conn}");
}

#[tokio::test]
async fn twenty_thousand_subscriptions_share_one_connection() {
    const N: usize = 20_000;
    let server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    let sids: Vec<_> = (0..N)
        .map(|i| c.subs.subscribe(&format!("herald.u.user{i}")))
        .collect();
    c.subs.round_trip().await.unwrap();
    assert_eq!(c.subs.len(), N);
    let conn = our_connection(&server).await.unwrap();
    assert_eq!(conn["subscriptions"], N, "{}", conn["subscriptions"]);

    let nats = publisher(&server.client_url()).await;
    for i in 0..N {
        nats.publish(format!("herald.u.user{i}"), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();
    herald_testing::eventually(Duration::from_secs(30), "a message for each", || async {
        (c.subs.stats().delivered as usize >= N).then_some(())
    })
    .await;
    let counts = c.recorder.counts();
    assert!(sids.iter().all(|sid| counts.get(sid) == Some(&1)));
}
