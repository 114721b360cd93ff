//! The first vertical slice on a real 3-node NATS cluster: publish on node 1,
//! edges on nodes 2 and 3, and events reach exactly the right streams.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::token::{Claims, Sign};
use herald_testing::{eventually, route_interest, route_out_msgs};

#[tokio::test]
async fn events_reach_every_connection_of_their_user_and_no_one_else() {
    let stack = Stack::builder()
        .cluster(3)
        .publish(herald_publish::Config::defaults("p1"))
        .on(0)
        .edge(edge_config("edge-2"))
        .on(1)
        .edge(edge_config("edge-3"))
        .on(2)
        .start()
        .await;
    let (publish, edge2, edge3) = (stack.publish(), &stack.edges[0], &stack.edges[1]);
    let http = reqwest::Client::new();

    let alice = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    let bob = Claims::new("bob").topics(&["news"]).hs256(SECRET);
    let mut alice_tab2 = SseStream::open(&http, &events_url(edge2, &["news"]), &alice).await;
    let mut alice_tab3 = SseStream::open(&http, &events_url(edge3, &["news"]), &alice).await;
    let mut bob_tab2 = SseStream::open(&http, &events_url(edge2, &["news"]), &bob).await;
    let mut bob_tab3 = SseStream::open(&http, &events_url(edge3, &[]), &bob).await;
    for peer in ["n2", "n3"] {
        stack
            .nats
            .wait_for_interest(0, peer, "herald.u.alice")
            .await;
        stack.nats.wait_for_interest(0, peer, "herald.t.news").await;
    }

    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "for alice").await;
    for tab in [&mut alice_tab2, &mut alice_tab3] {
        let event = tab.next().await;
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            ("message", "for alice")
        );
        tab.assert_silent(QUIET).await; // exactly once
    }
    bob_tab2.assert_silent(QUIET).await;
    bob_tab3.assert_silent(QUIET).await;

    publish_to_topic(&mut client, "news", "headline").await;
    for follower in [&mut alice_tab2, &mut alice_tab3, &mut bob_tab2] {
        assert_eq!(follower.next().await.data, "headline");
        follower.assert_silent(QUIET).await;
    }
    bob_tab3.assert_silent(QUIET).await; // bob's second tab does not follow news
}

/// Ephemeral events measure interest routing alone: persisted ones first
/// travel to their history stream's leader, wherever it is placed.
#[tokio::test]
async fn events_cross_only_routes_to_nodes_with_interest() {
    let stack = Stack::builder()
        .cluster(3)
        .publish(herald_publish::Config::defaults("p1"))
        .on(0)
        .edge(edge_config("edge-3"))
        .on(2)
        .start()
        .await;
    let (publish, edge3) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    let n1 = &stack.nats.nodes[0];
    // Publish has asked edge-3 for its presence once; from now on the only
    // presence traffic is edge-3's own, towards node 1.
    eventually(
        Duration::from_secs(10),
        "publish to know edge-3",
        || async {
            let nodes = publish.metric("herald_publish_presence_nodes").await;
            (nodes == 1.0).then_some(())
        },
    )
    .await;
    publish.wait_ready().await;

    // Nobody follows "nobody": 1,000 events stay on node 1.
    let before = route_out_msgs(n1).await;
    for i in 0..1000 {
        publish_ephemeral(&mut client, &["nobody"], &format!("e{i}")).await;
    }
    let after = route_out_msgs(n1).await;
    assert_eq!(before.len(), 2, "two peers: {before:?}");
    for (peer, sent) in &after {
        assert_eq!(
            sent - before[peer],
            0,
            "events for an unconnected user crossed the route to {peer}"
        );
    }

    // carol is connected only at node 3: her events cross only that route.
    let carol = Claims::new("carol").hs256(SECRET);
    let mut stream =
        SseStream::open(&reqwest::Client::new(), &events_url(edge3, &[]), &carol).await;
    stack
        .nats
        .wait_for_interest(0, "n3", "herald.u.carol")
        .await;
    let before = route_out_msgs(n1).await;
    for i in 0..1000 {
        publish_ephemeral(&mut client, &["carol"], &format!("c{i}")).await;
    }
    for i in 0..1000 {
        assert_eq!(stream.next().await.data, format!("c{i}"));
    }
    let after = route_out_msgs(n1).await;
    assert_eq!(
        after["n3"] - before["n3"],
        1000,
        "each event crosses to node 3 once"
    );
    assert_eq!(after["n2"] - before["n2"], 0, "no event crosses to node 2");
}

#[tokio::test]
async fn the_last_stream_of_a_user_takes_its_subscription_with_it() {
    let stack = Stack::builder()
        .cluster(3)
        .edge(edge_config("edge-2"))
        .on(1)
        .start()
        .await;
    let (n2, edge2) = (&stack.nats.nodes[1], stack.edge());
    let http = reqwest::Client::new();
    let token = Claims::new("dave").hs256(SECRET);
    let count = |subjects: Vec<String>| subjects.iter().filter(|s| *s == "herald.u.dave").count();

    let tab1 = SseStream::open(&http, &events_url(edge2, &[]), &token).await;
    let tab2 = SseStream::open(&http, &events_url(edge2, &[]), &token).await;
    assert_eq!(
        count(n2.client_subjects().await),
        1,
        "two tabs share one NATS subscription"
    );
    stack.nats.wait_for_interest(0, "n2", "herald.u.dave").await;

    drop(tab1);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        count(n2.client_subjects().await),
        1,
        "one tab left: still subscribed"
    );

    drop(tab2);
    eventually(Duration::from_secs(5), "the subscription to go", || async {
        (count(n2.client_subjects().await) == 0).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "node 1 to forget the interest",
        || async {
            let interest = route_interest(&stack.nats.nodes[0]).await;
            (!interest
                .get("n2")
                .is_some_and(|s| s.contains("herald.u.dave")))
            .then_some(())
        },
    )
    .await;
    assert_eq!(edge2.metric("herald_edge_nats_subscriptions").await, 0.0);
    assert_eq!(edge2.metric("herald_edge_connections").await, 0.0);
}
