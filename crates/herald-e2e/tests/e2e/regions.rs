//! Regions, on a supercluster of two clusters joined by gateways (one node
//! each; three, with replicated history, where a region is lost),
//! Herald's services in each with `--region` (each region stores what is
//! published in it): an event published in one region reaches a stream in
//! the other once; a topic event crosses once however many follow it
//! there; events nobody follows in a region do not cross to it; a client
//! that moves to the other region resumes what it missed, and receipts in
//! one region see streams in the other, and presence asked in one region
//! shows the region of a stream in the other; a user offline everywhere
//! gets one push, with a push worker in each region. With every node of one region
//! stopped, the other keeps storing, delivering and resuming, and when
//! the lost region returns its events reach the streams that missed them
//! and its edges' streams show in presence again.

// Supercluster setups, by hand: a `Stack` is one node or one cluster.

use std::time::{Duration, Instant};

use herald_domain::region::Region;
use herald_e2e::*;
use herald_proto::v1::publish_request::Target;
use herald_proto::v1::{GetPresenceRequest, OfflinePolicy, Outcome, PublishRequest};
use herald_testing::eventually;
use herald_testing::fcm::FakeFcm;
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::supercluster::{NatsSupercluster, gateway_out_msgs};
use herald_testing::token::{Claims, Sign};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_to_the_region_that_follows_them_once_and_no_further() {
    let supercluster = NatsSupercluster::start(&["a", "b"], 1).await;
    let (a, b) = (supercluster.region("a"), supercluster.region("b"));
    let publish = start_publish(&a.client_urls(), regional_publish("publish-a", "a", 1)).await;
    let edge_b = start_edge(
        &b.client_urls(),
        regional_edge("edge-b", "b", &["a", "b"], 1),
    )
    .await;
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
    until_heard(&mut client, &mut alice, "alice").await;

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
    let supercluster = NatsSupercluster::start(&["a", "b"], 1).await;
    let (a, b) = (supercluster.region("a"), supercluster.region("b"));
    let publish = start_publish(&a.client_urls(), regional_publish("publish-a", "a", 1)).await;
    let edge_a = start_edge(
        &a.client_urls(),
        regional_edge("edge-a", "a", &["a", "b"], 1),
    )
    .await;
    let edge_b = start_edge(
        &b.client_urls(),
        regional_edge("edge-b", "b", &["a", "b"], 1),
    )
    .await;
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
    let mut bob = resume(&http, &edge_b, &token, &first.id).await;
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

    // Presence asked in region a shows his connection, and its region.
    let presence = start_presence(
        &a.client_urls(),
        herald_presence::Config::defaults("presence-a"),
    )
    .await;
    let mut presence = presence_client(&presence).await;
    let mut seen = None;
    for _ in 0..100 {
        let request = GetPresenceRequest {
            user_ids: vec!["bob".into()],
        };
        let answer = presence.get_presence(request).await.unwrap().into_inner();
        let bob = answer.users.into_iter().next().unwrap();
        if bob.online && bob.regions == ["b"] {
            seen = Some(bob);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob = seen.expect("presence in region a shows bob's stream in region b");
    assert_eq!((bob.connections, bob.nodes.len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_keeps_serving_when_the_other_is_lost_and_catches_up_when_it_returns() {
    let mut supercluster = NatsSupercluster::start(&["a", "b"], 3).await;
    let (a, b) = (supercluster.region("a"), supercluster.region("b"));
    let publish_a = start_publish(&a.client_urls(), regional_publish("publish-a", "a", 3)).await;
    let publish_b = start_publish(&b.client_urls(), regional_publish("publish-b", "b", 3)).await;
    let edge_a = start_edge(
        &a.client_urls(),
        regional_edge("edge-a", "a", &["a", "b"], 3),
    )
    .await;
    let edge_b = start_edge(
        &b.client_urls(),
        regional_edge("edge-b", "b", &["a", "b"], 3),
    )
    .await;
    let http = reqwest::Client::new();
    let token = Claims::new("carol").hs256(SECRET);
    let (mut from_a, mut from_b) = (publisher(&publish_a).await, publisher(&publish_b).await);

    // Carol, in region b, hears both regions.
    let mut carol = SseStream::open(&http, &events_url(&edge_b, &[]), &token).await;
    until_heard(&mut from_a, &mut carol, "carol").await;
    publish_to_users(&mut from_a, &["carol"], "a1").await;
    assert_eq!(carol.next().await.data, "a1");
    publish_to_users(&mut from_b, &["carol"], "b1").await;
    let b1 = carol.next().await;
    assert_eq!(b1.data, "b1");
    drop(carol);
    // Away, she misses one event of each region.
    publish_to_users(&mut from_a, &["carol"], "a2").await;
    publish_to_users(&mut from_b, &["carol"], "b2").await;

    // Region a is lost: all its NATS nodes stop.
    for node in &mut supercluster.region_mut("a").nodes {
        node.kill();
    }
    let lost = Instant::now();
    // Region b stores its own events at once, through the moment its
    // JetStream notices the loss (the meta group, which spans both
    // regions, loses its quorum) and after.
    let mut latencies = Vec::new();
    while lost.elapsed() < LOST_FOR {
        let started = Instant::now();
        let i = latencies.len();
        publish_to_users(&mut from_b, &["nobody"], &format!("during {i}")).await;
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    let slowest = latencies[latencies.len() - 1];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "region a lost for {LOST_FOR:?}: {} persisted publishes in b, p99 {p99:?}, slowest {slowest:?}",
        latencies.len()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "slowest publish {slowest:?} (the target: within 10 s of the loss)"
    );

    // Carol comes back to b: b's event is replayed; a's (a2) is out of
    // reach while a is away, and the stream stays open without it.
    let started = Instant::now();
    let mut carol = resume(&http, &edge_b, &token, &b1.id).await;
    let waited = started.elapsed();
    eprintln!("resumed in b with region a lost: {waited:?} to open");
    assert!(waited < Duration::from_secs(5), "{waited:?} to resume");
    assert_eq!(carol.next().await.data, "b2");
    publish_to_users(&mut from_b, &["carol"], "b3").await;
    let b3 = carol.next().await;
    assert_eq!(b3.data, "b3");

    // Dan connects to b while a is away: his stream cannot read where it
    // starts in a's history.
    let dan_token = Claims::new("dan").hs256(SECRET);
    let mut dan = SseStream::open(&http, &events_url(&edge_b, &[]), &dan_token).await;

    // Region a returns; Herald is not restarted.
    for node in &mut supercluster.region_mut("a").nodes {
        node.restart();
    }
    supercluster.wait_for_gateways().await;
    // a's next event would pass over a2, which this stream never had:
    // the stream ends instead, and its client resumes a2 then a3.
    let ended = r#"herald_edge_closes_total{reason="server_error"}"#;
    let ended_before = edge_b.metric(ended).await;
    let mut last = b3.id;
    let mut a3 = false;
    for _ in 0..60 {
        if publish(&mut from_a, Target::users(&["carol"]), "", "a3")
            .await
            .is_ok()
        {
            a3 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a3, "region a stores events again");
    while let Some(event) = carol.next_within(Duration::from_secs(10)).await {
        assert_ne!(event.data, "a3", "a3 must not pass over a2");
        last = event.id;
    }
    // Her stream ended (a3 came and was not passed on), not just fell silent.
    assert!(
        edge_b.metric(ended).await > ended_before,
        "carol's stream ended"
    );
    let mut carol = resume(&http, &edge_b, &token, &last).await;
    let events: Vec<String> = [carol.next().await, carol.next().await]
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(events, ["a2", "a3"]);
    carol.assert_silent(QUIET).await;

    // Dan's stream learns its start in a once a is back (his ids hold it),
    // so what a stores while he is away is resumed, though he never heard
    // from a.
    let in_a = herald_domain::cursor::key("herald.u.dan.a");
    let mut id = None;
    for _ in 0..40 {
        publish_to_users(&mut from_b, &["dan"], "from b").await;
        let event = dan.next().await;
        let cursor = herald_domain::cursor::Cursor::decode(&event.id).unwrap();
        if cursor.get(in_a).is_some() {
            id = Some(event.id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = id.expect("dan's stream learned where it starts in a");
    drop(dan);
    publish_to_users(&mut from_a, &["dan"], "from a, while away").await;
    let mut dan = resume(&http, &edge_b, &dan_token, &id).await;
    assert_eq!(dan.next().await.data, "from a, while away");

    // Presence recovers too: region a's edge, back on its NATS, serves a
    // stream that region b's receipts see.
    let frank = Claims::new("frank").hs256(SECRET);
    let mut frank = SseStream::open(&http, &events_url(&edge_a, &[]), &frank).await;
    let mut online = false;
    for _ in 0..100 {
        let response = publish_to_users(&mut from_b, &["frank"], "seen from b").await;
        if response.receipts[0].online {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        online,
        "b's receipts see frank's stream in a once a is back"
    );
    assert_eq!(frank.next().await.data, "seen from b");
}

/// How long region a stays lost: past the moment JetStream in region b
/// notices that its meta group lost its quorum.
const LOST_FOR: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_offline_everywhere_gets_one_push_and_one_online_elsewhere_none() {
    let supercluster = NatsSupercluster::start(&["a", "b"], 1).await;
    let (a, b) = (supercluster.region("a"), supercluster.region("b"));
    let publish = start_publish(&a.client_urls(), regional_publish("publish-a", "a", 1)).await;
    // Region b's herald-publish makes its offline queue.
    let publish_b = start_publish(&b.client_urls(), regional_publish("publish-b", "b", 1)).await;
    let edge_b = start_edge(
        &b.client_urls(),
        regional_edge("edge-b", "b", &["a", "b"], 1),
    )
    .await;
    // A push worker in each region, on one FCM.
    let fcm = FakeFcm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    for (region, cluster) in [("a", a), ("b", b)] {
        let mut config = push_config(&fcm, dir.path());
        config.region = Region::parse(region).unwrap();
        let worker = start_push(&cluster.client_urls(), config).await;
        worker.wait_ready().await;
        workers.push(worker);
    }
    let http = reqwest::Client::new();
    for user in ["dave", "erin"] {
        let url = format!("{}/v1/devices/{user}", workers[0].url());
        let body = serde_json::json!({ "token": format!("{user}-phone") });
        let answer = http.put(url).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), 204);
    }
    // Erin is online in region b; dave nowhere.
    let token = Claims::new("erin").hs256(SECRET);
    let mut erin = SseStream::open(&http, &events_url(&edge_b, &[]), &token).await;

    eventually(
        Duration::from_secs(10),
        "presence in a to see erin in b",
        || async {
            let online = publish.metric("herald_publish_presence_users_online").await;
            (online == 1.0).then_some(())
        },
    )
    .await;

    let request = PublishRequest {
        target: Some(Target::users(&["dave", "erin"])),
        data: "your order shipped".into(),
        offline: OfflinePolicy::Fallback as i32,
        ..Default::default()
    };
    let mut client = publisher(&publish).await;
    let response = client.publish(request).await.unwrap().into_inner();
    let receipts: Vec<(bool, Outcome)> = (response.receipts.iter())
        .map(|r| (r.online, r.outcome()))
        .collect();
    assert_eq!(
        receipts,
        [(false, Outcome::Fallback), (true, Outcome::Delivered)]
    );
    assert_eq!(erin.next().await.data, "your order shipped");
    eventually(Duration::from_secs(10), "dave's push", || async {
        (!fcm.sends().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET * 2).await;
    let sends = fcm.sends();
    assert_eq!(sends.len(), 1, "one push, to dave: {sends:?}");
    assert_eq!(sends[0].body["message"]["token"], "dave-phone");

    // Published in b, it is queued and pushed in b: once again.
    let request = PublishRequest {
        target: Some(Target::users(&["dave"])),
        data: "from b".into(),
        offline: OfflinePolicy::Fallback as i32,
        ..Default::default()
    };
    publisher(&publish_b).await.publish(request).await.unwrap();
    eventually(Duration::from_secs(10), "dave's push from b", || async {
        (fcm.sends().len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET * 2).await;
    let sends = fcm.sends();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(sends[1].body["message"]["data"]["herald_data"], "from b");
}
