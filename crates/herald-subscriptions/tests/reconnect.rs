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

/// The pid of a running server, from the `[pid]` its log lines start with.
fn pid_of(server: &NatsServer) -> String {
    let log = server.log();
    let pid = log.strip_prefix('[').and_then(|l| l.split_once(']'));
    pid.expect("a [pid] log prefix").0.to_owned()
}

#[tokio::test]
async fn a_node_in_lame_duck_mode_is_left_before_it_closes_us_without_a_loss() {
    let cluster = NatsCluster::start(2).await;
    let c = connect(&cluster.nodes[0].client_url()).await;
    let sid = c.subs.subscribe("herald.t.ldm");
    c.subs.round_trip().await.unwrap();

    // SIGUSR2: lame duck mode; the server closes its clients only after a
    // 10 s grace period, so leaving sooner is this client's doing.
    let pid = pid_of(&cluster.nodes[0]);
    let sent = std::process::Command::new("kill")
        .args(["-USR2", &pid])
        .status();
    assert!(sent.unwrap().success());
    eventually(
        Duration::from_secs(8),
        "a move to the other node",
        || async {
            (c.subs.stats().moves == 1 && our_connection(&cluster.nodes[0]).await.is_none())
                .then_some(())
        },
    )
    .await;
    assert!(our_connection(&cluster.nodes[1]).await.is_some());
    let stats = c.subs.stats();
    assert!(stats.connected, "{stats:?}");
    assert_eq!(*c.losses.borrow(), 0, "made before broken: no loss");
    let nats = publisher(&cluster.nodes[1].client_url()).await;
    publish(&nats, "herald.t.ldm", b"moved").await;
    c.recorder.wait(sid, 1).await;
}

#[tokio::test]
async fn a_slow_callback_is_cut_off_as_a_slow_consumer_and_comes_back() {
    // A small pending limit, so the server gives up on us quickly.
    let server =
        NatsServer::start_with("max_payload: 64KB\nmax_pending: 256KB\nwrite_deadline: \"1s\"\n");
    let recorder = std::sync::Arc::new(Slow::default());
    let (tx, losses) = tokio::sync::watch::channel(0);
    let subs = herald_subscriptions::Subscriptions::connect(
        &[server.client_url()],
        &Default::default(),
        "herald-test subs",
        tx,
        recorder.clone(),
    )
    .await
    .unwrap();
    subs.subscribe("herald.t.flood");
    subs.round_trip().await.unwrap();
    // Well over what the kernel's socket buffers hold on loopback, sent
    // from a thread of its own: the stalled callback blocks its runtime.
    let url = server.client_url();
    let flood = std::thread::spawn(move || publish_raw(&url, "herald.t.flood", 32 * 1024, 1000));
    eventually(
        Duration::from_secs(20),
        "the slow consumer cut off and back",
        || async { (*losses.borrow() >= 2 && subs.stats().connected).then_some(()) },
    )
    .await;
    assert!(server.log().contains("Slow Consumer"), "{}", server.log());
    flood.join().unwrap();
}

/// Publishes `count` messages of `size` bytes through a plain socket.
fn publish_raw(url: &str, subject: &str, size: usize, count: usize) {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(url.trim_start_matches("nats://")).unwrap();
    let mut info = [0u8; 4096];
    let _ = socket.read(&mut info).unwrap();
    socket
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .unwrap();
    let one = [
        format!("PUB {subject} {size}\r\n").as_bytes(),
        &vec![b'f'; size],
        b"\r\n",
    ]
    .concat();
    for _ in 0..count {
        socket.write_all(&one).unwrap();
    }
}

/// Stalls on the first message, as a callback must not.
#[derive(Default)]
struct Slow(std::sync::atomic::AtomicBool);

impl herald_subscriptions::Deliver for Slow {
    fn deliver(
        &self,
        _: herald_subscriptions::Sid,
        _: &async_nats::Message,
        _: herald_subscriptions::Source,
    ) {
        if !self.0.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    fn refused(&self, sid: herald_subscriptions::Sid, refusal: &herald_subscriptions::Refusal) {
        panic!("sid {sid} refused: {refusal:?}");
    }
}

/// Re-subscribing is pipelined and then confirmed by one PONG, not
/// bounded by the connect timeout: 100,000 subscriptions come back after
/// a restart with a 300 ms connect timeout. Changes made while away wait
/// in the registry, coalesced (the registry's unit tests show the pairs
/// cancel out): the server ends up with exactly the live ones.
#[tokio::test]
async fn a_hundred_thousand_subscriptions_come_back_and_changes_made_meanwhile_coalesce() {
    const N: usize = 100_000;
    let mut server = NatsServer::start();
    let options = herald_subscriptions::Options {
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let c = connect_with(&server.client_url(), &Default::default(), options)
        .await
        .unwrap();
    let sids: Vec<_> = (0..N)
        .map(|i| c.subs.subscribe(&format!("herald.u.many{i}")))
        .collect();
    c.subs.round_trip().await.unwrap();

    server.kill();
    eventually(Duration::from_secs(10), "the loss noticed", || async {
        (!c.subs.stats().connected).then_some(())
    })
    .await;
    for _ in 0..50_000 {
        let churn = c.subs.subscribe("herald.u.churn");
        c.subs.unsubscribe(churn);
    }
    c.subs.unsubscribe(sids[0]);
    let late = c.subs.subscribe("herald.u.late");
    let restarted = std::time::Instant::now();
    server.restart();
    eventually(
        Duration::from_secs(60),
        "every subscription back",
        || async { (*c.losses.borrow() >= 2 && c.subs.stats().connected).then_some(()) },
    )
    .await;
    println!(
        "{N} subscriptions restored and confirmed {:?} after the restart began",
        restarted.elapsed()
    );
    let conn = our_connection(&server).await.unwrap();
    assert_eq!(conn["subscriptions"], N, "{}", conn["subscriptions"]);
    let nats = publisher(&server.client_url()).await;
    for subject in ["herald.u.many0", "herald.u.many99999", "herald.u.late"] {
        publish(&nats, subject, b"back").await;
    }
    c.recorder.wait(sids[N - 1], 1).await;
    c.recorder.wait(late, 1).await;
    assert!(c.recorder.of(sids[0]).is_empty());
    assert_eq!(c.subs.stats().connects, 2);
}

/// With the advertised servers ignored, a lost connection comes back to a
/// configured server only (the others may not be reachable from here).
#[tokio::test]
async fn advertised_servers_are_not_used_when_told_to_ignore_them() {
    let mut cluster = NatsCluster::start(2).await;
    let security = herald_nats::connection::NatsSecurity {
        nats_ignore_discovered_servers: true,
        ..Default::default()
    };
    let c = connect_with(
        &cluster.nodes[0].client_url(),
        &security,
        herald_subscriptions::Options::default(),
    )
    .await
    .unwrap();
    let sid = c.subs.subscribe("herald.t.here");
    c.subs.round_trip().await.unwrap();
    cluster.nodes[0].restart();
    eventually(
        Duration::from_secs(10),
        "back on the configured node",
        || async { (c.subs.stats().connects == 2 && c.subs.stats().connected).then_some(()) },
    )
    .await;
    assert!(our_connection(&cluster.nodes[0]).await.is_some());
    assert!(our_connection(&cluster.nodes[1]).await.is_none());
    let nats = publisher(&cluster.nodes[0].client_url()).await;
    publish(&nats, "herald.t.here", b"here").await;
    c.recorder.wait(sid, 1).await;
}
