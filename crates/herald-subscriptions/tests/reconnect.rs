//! A lost server: `losses` counts the disconnect and the resubscription,
//! and every live subscription works again on the new connection.

mod common;

use std::time::Duration;

use common::*;
use herald_testing::{NatsCluster, NatsServer, eventually};

#[tokio::test]
async fn a_restarted_server_gets_every_subscription_back() {
    let mut server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    let sids: Vec<_> = (0..100)
        .map(|i| c.subs.subscribe(&format!("herald.u.back{i}")))
        .collect();
    c.subs.round_trip().await.unwrap();
    let gone = sids[0];
    c.subs.unsubscribe(gone);
    assert_eq!(*c.losses.borrow(), 0);

    server.restart();
    eventually(
        Duration::from_secs(10),
        "the disconnect and the resubscription counted",
        || async { (*c.losses.borrow() >= 2 && c.subs.stats().connected).then_some(()) },
    )
    .await;
    assert_eq!(c.subs.stats().connects, 2);
    // A subscription made after the restart goes out too.
    let late = c.subs.subscribe("herald.u.late");
    c.subs.round_trip().await.unwrap();
    let conn = our_connection(&server).await.unwrap();
    assert_eq!(conn["subscriptions"], 100, "99 restored + 1 new: {conn}");

    let nats = publisher(&server.client_url()).await;
    for i in 0..100 {
        publish(&nats, &format!("herald.u.back{i}"), b"after").await;
    }
    publish(&nats, "herald.u.late", b"after").await;
    for sid in &sids[1..] {
        c.recorder.wait(*sid, 1).await;
    }
    c.recorder.wait(late, 1).await;
    assert!(c.recorder.of(gone).is_empty());
}

#[tokio::test]
async fn a_killed_node_is_left_for_one_the_cluster_advertised() {
    let mut cluster = NatsCluster::start(3).await;
    // Only node A is configured; B and C are known from its INFO.
    let c = connect(&cluster.nodes[0].client_url()).await;
    let sid = c.subs.subscribe("herald.t.cluster");
    c.subs.round_trip().await.unwrap();

    cluster.nodes[0].kill();
    eventually(
        Duration::from_secs(10),
        "a reconnect to another node",
        || async { (*c.losses.borrow() >= 2 && c.subs.stats().connected).then_some(()) },
    )
    .await;
    let mut on = Vec::new();
    for node in &cluster.nodes[1..] {
        on.push(our_connection(node).await.is_some());
    }
    assert_eq!(on.iter().filter(|o| **o).count(), 1, "{on:?}");

    // Interest crosses the routes a moment later: publish until it lands.
    let nats = publisher(&cluster.nodes[1].client_url()).await;
    eventually(
        Duration::from_secs(10),
        "a message through the cluster",
        || async {
            publish(&nats, "herald.t.cluster", b"routed").await;
            (!c.recorder.of(sid).is_empty()).then_some(())
        },
    )
    .await;
}
