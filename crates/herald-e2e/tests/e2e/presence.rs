//! Presence on a real 3-node NATS cluster: edges report, replicas agree,
//! crashes expire, restarts resync, a burst converges exactly, and no one
//! speaks for an edge or steers its snapshots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_e2e::*;
use herald_presence::Config as PresenceConfig;
use herald_proto::v1::{GetPresenceRequest, GetPresenceResponse, StatsRequest, StatsResponse};
use herald_testing::eventually;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use prost::Message;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn edge(node: &str, heartbeat: Duration) -> herald_edge::Config {
    let mut config = edge_config(node);
    config.presence_heartbeat = heartbeat;
    config
}

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn stats(presence: &Running) -> (u64, u64) {
    let stats = presence_client(presence)
        .await
        .stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    (stats.connections, stats.users_online)
}

/// Waits until `presence` answers `expected` for `users`.
async fn until_presence(presence: &Running, users: &[&str], expected: &[(u32, Vec<String>)]) {
    eventually(WAIT, "presence to match", || async {
        (presence_of(presence, users).await == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn presence_reports_connections_per_user_and_node() {
    let beat = Duration::from_millis(500);
    let stack = Stack::builder()
        .cluster(3)
        .edge(edge("edge-1", beat))
        .on(0)
        .edge(edge("edge-2", beat))
        .on(1)
        .presence(PresenceConfig::defaults("pr"))
        .on(2)
        .start()
        .await;
    let (edge1, edge2, presence) = (&stack.edges[0], &stack.edges[1], stack.presence());
    let http = reqwest::Client::new();

    let alice = Claims::new("alice").hs256(SECRET);
    let bob = Claims::new("bob").hs256(SECRET);
    let alice_tab1 = SseStream::open(&http, &events_url(edge1, &[]), &alice).await;
    let _alice_tab2 = SseStream::open(&http, &events_url(edge2, &[]), &alice).await;
    let _bob_tab = SseStream::open(&http, &events_url(edge1, &[]), &bob).await;

    let users = ["alice", "bob", "carol"];
    let expected = [
        (2, nodes(&["edge-1", "edge-2"])),
        (1, nodes(&["edge-1"])),
        (0, nodes(&[])),
    ];
    until_presence(presence, &users, &expected).await;
    assert_eq!(stats(presence).await, (3, 2));

    // The same answer over NATS request/reply, for in-cluster callers.
    let nats = async_nats::connect(stack.nats.nodes[0].client_url())
        .await
        .unwrap();
    let request = GetPresenceRequest {
        user_ids: users.iter().map(|u| u.to_string()).collect(),
    };
    let reply = nats
        .request("herald.presence.query", request.encode_to_vec().into())
        .await
        .unwrap();
    let answer = GetPresenceResponse::decode(reply.payload).unwrap();
    let counts: Vec<_> = answer
        .users
        .iter()
        .map(|u| (u.connections, u.nodes.clone()))
        .collect();
    assert_eq!(counts, expected);
    let reply = nats
        .request("herald.presence.stats", "".into())
        .await
        .unwrap();
    let totals = StatsResponse::decode(reply.payload).unwrap();
    assert_eq!((totals.connections, totals.users_online), (3, 2));

    drop(alice_tab1);
    let expected = [
        (1, nodes(&["edge-2"])),
        (1, nodes(&["edge-1"])),
        (0, nodes(&[])),
    ];
    until_presence(presence, &users, &expected).await;
    assert_eq!(stats(presence).await, (2, 2));
    // Gauges follow within a tick.
    eventually(WAIT, "presence gauges", || async {
        let users = presence.metric("herald_presence_users_online").await;
        let edge1 = presence
            .metric("herald_presence_connections{node=\"edge-1\"}")
            .await;
        (users == 2.0 && edge1 == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn hostile_queries_get_a_clear_error() {
    let mut config = PresenceConfig::defaults("pr");
    config.api_token = Some("presence-token-0123456789".into());
    config.max_users = 3;
    let stack = Stack::builder().presence(config).start().await;
    let presence = stack.presence();
    let mut client = presence_client(presence).await;

    let refused = client.stats(StatsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let ask = |ids: &[&str]| {
        let mut request = tonic::Request::new(GetPresenceRequest {
            user_ids: ids.iter().map(|u| u.to_string()).collect(),
        });
        let auth = "Bearer presence-token-0123456789".parse().unwrap();
        request.metadata_mut().insert("authorization", auth);
        request
    };
    let huge = "x".repeat(300);
    for ids in [
        &["a", "b", "c", "d"][..],
        &[""],
        &["bad\nid"],
        &[huge.as_str()],
    ] {
        let status = client.get_presence(ask(ids)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{ids:?}");
    }
    // Wildcards are ordinary characters in a user id, never a pattern.
    let answer = client
        .get_presence(ask(&["*", ">", "a.>"]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.users.iter().all(|u| !u.online && u.connections == 0));

    let nats = async_nats::connect(stack.nats_url()).await.unwrap();
    let reply = nats
        .request("herald.presence.query", "\u{ff}garbage".into())
        .await
        .unwrap();
    let error = reply.headers.as_ref().and_then(|h| h.get("Herald-Error"));
    assert!(
        error.is_some_and(|e| e.as_str().contains("GetPresenceRequest")),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_killed_edge_goes_offline_on_every_replica_within_three_heartbeats() {
    let beat = Duration::from_secs(1);
    let stack = Stack::builder()
        .cluster(3)
        .presence(PresenceConfig::defaults("pr1"))
        .on(1)
        .presence(PresenceConfig::defaults("pr2"))
        .on(2)
        .start()
        .await;
    let replicas = &stack.presences;
    let mut edge = EdgeProcess::start_with(
        &stack.nats.nodes[0].client_url(),
        None,
        &["--node-id", "doomed", "--presence-heartbeat", "1s"],
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/events", edge.addr);
    let _alice = SseStream::open(&http, &url, &Claims::new("alice").hs256(SECRET)).await;
    let _bob = SseStream::open(&http, &url, &Claims::new("bob").hs256(SECRET)).await;
    let online = [(1, nodes(&["doomed"])), (1, nodes(&["doomed"]))];
    for replica in replicas {
        until_presence(replica, &["alice", "bob"], &online).await;
    }

    edge.kill();
    let killed = Instant::now();
    let offline = [(0, nodes(&[])), (0, nodes(&[]))];
    for replica in replicas {
        until_presence(replica, &["alice", "bob"], &offline).await;
    }
    let took = killed.elapsed();
    assert!(took < 3 * beat, "offline after {took:?}");
    for replica in replicas {
        assert_eq!(stats(replica).await, (0, 0));
    }
}

#[tokio::test]
async fn a_restarted_presence_is_complete_within_one_heartbeat() {
    let beat = Duration::from_secs(2);
    let stack = Stack::builder().edge(edge("edge-1", beat)).start().await;
    let (url, edge) = (stack.nats_url(), stack.edge());
    let http = reqwest::Client::new();
    let mut tabs = Vec::new();
    for user in ["alice", "bob", "bob"] {
        let token = Claims::new(user).hs256(SECRET);
        tabs.push(SseStream::open(&http, &events_url(edge, &[]), &token).await);
    }
    let presence = start_presence(&url, PresenceConfig::defaults("pr")).await;
    let expected = [(1, nodes(&["edge-1"])), (2, nodes(&["edge-1"]))];
    until_presence(&presence, &["alice", "bob"], &expected).await;
    presence.stop().await;

    let restarted = Instant::now();
    let presence = start_presence(&url, PresenceConfig::defaults("pr")).await;
    until_presence(&presence, &["alice", "bob"], &expected).await;
    let took = restarted.elapsed();
    assert!(took < beat, "complete after {took:?}");
    assert_eq!(stats(&presence).await, (3, 2));
    let readyz = format!("http://{}/readyz", presence.admin);
    eventually(WAIT, "presence to be ready", || async {
        (reqwest::get(&readyz).await.ok()?.status() == 200).then_some(())
    })
    .await;
}

/// A replica that lost NATS hears no reports: `/readyz` and gRPC health
/// both say so within a couple of seconds, and both recover with it.
#[tokio::test]
async fn readyz_and_health_say_not_serving_while_nats_is_down() {
    const PRESENCE: &str = "herald.v1.Presence";
    let mut stack = Stack::builder()
        .presence(PresenceConfig::defaults("pr"))
        .start()
        .await;
    let presence = &stack.presences[0];
    presence.until_readiness(&[PRESENCE], true, WAIT).await;

    stack.nats.nodes[0].kill();
    let took = presence
        .until_readiness(&[PRESENCE], false, Duration::from_secs(3))
        .await;
    eprintln!("NOT_SERVING and 503 {took:?} after the NATS server was killed");
    stack.nats.nodes[0].restart();
    let took = presence
        .until_readiness(&[PRESENCE], true, Duration::from_secs(15))
        .await;
    eprintln!("SERVING and 200 {took:?} after it was restarted");
}

/// 10,000 connects and disconnects, as fast as three edges' reporters can
/// send them, on three NATS nodes: both replicas end equal to the truth.
#[tokio::test]
async fn a_burst_of_ten_thousand_changes_converges_exactly() {
    let stack = Stack::builder()
        .cluster(3)
        .presence(PresenceConfig::defaults("pr1"))
        .on(0)
        .presence(PresenceConfig::defaults("pr2"))
        .on(2)
        .start()
        .await;
    let replicas = &stack.presences;
    let stop = CancellationToken::new();
    let mut admissions = Vec::new();
    for (i, node) in stack.nats.nodes.iter().enumerate() {
        let nats = async_nats::connect(node.client_url()).await.unwrap();
        let admission = herald_edge::admission::Admission::new(100_000, 100);
        let reporter = herald_edge::report::Reporter::new(
            nats,
            Arc::clone(&admission),
            format!("burst-{i}"),
            String::new(),
            Duration::from_millis(500),
            &mut prometheus_client::registry::Registry::default(),
        );
        reporter.start(stop.clone()).await.unwrap();
        admissions.push(admission);
    }

    let mut rng = fastrand::Rng::with_seed(42);
    let mut open: [Vec<(String, herald_edge::admission::Permit)>; 3] = Default::default();
    for _ in 0..10_000 {
        let node = rng.usize(0..3);
        if !open[node].is_empty() && rng.u8(0..10) < 4 {
            let i = rng.usize(0..open[node].len());
            open[node].swap_remove(i);
        } else {
            let user = format!("user-{}", rng.u32(0..2_000));
            if let Ok(permit) = admissions[node].admit(&user) {
                open[node].push((user, permit));
            }
        }
        if rng.u16(0..500) == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut truth: HashMap<String, u32> = HashMap::new();
    for (user, _) in open.iter().flatten() {
        *truth.entry(user.clone()).or_default() += 1;
    }
    let users: Vec<String> = (0..2_000).map(|i| format!("user-{i}")).collect();
    let expected: Vec<u32> = users
        .iter()
        .map(|u| truth.get(u).copied().unwrap_or(0))
        .collect();
    let total: u32 = expected.iter().sum();
    assert!(
        total > 1_000,
        "the burst leaves many connections open: {total}"
    );
    for replica in replicas {
        eventually(WAIT, "presence to converge", || async {
            let mut client = presence_client(replica).await;
            let mut counts = Vec::new();
            for chunk in users.chunks(1000) {
                let request = GetPresenceRequest {
                    user_ids: chunk.to_vec(),
                };
                let answer = client.get_presence(request).await.ok()?.into_inner();
                counts.extend(answer.users.iter().map(|u| u.connections));
            }
            (counts == expected).then_some(())
        })
        .await;
        assert_eq!(stats(replica).await, (u64::from(total), truth.len() as u64));
    }
    stop.cancel();
}

/// Whoever may publish presence can speak only for the node of the subject
/// it publishes on, and cannot steer an edge's snapshot to a subject of
/// its choosing (such as a user's stream, readable over SSE).
#[tokio::test]
async fn forged_presence_and_snapshot_requests_are_ignored() {
    let stack = Stack::builder()
        .edge(edge("edge-1", Duration::from_millis(500)))
        .presence(PresenceConfig::defaults("pr"))
        .start()
        .await;
    let (edge1, presence) = (stack.edge(), stack.presence());
    let url = stack.nats_url();
    let http = reqwest::Client::new();
    let alice = Claims::new("alice").hs256(SECRET);
    let _tab = SseStream::open(&http, &events_url(edge1, &[]), &alice).await;
    let online = [(1, nodes(&["edge-1"])), (0, nodes(&[]))];
    until_presence(presence, &["alice", "eve"], &online).await;

    // From its own node subject, a client claims to be edge-1: edge-1 is
    // leaving, and eve connected to it.
    let mallory = async_nats::connect(&url).await.unwrap();
    let forged = [
        serde_json::json!({"type": "leaving", "node": "edge-1", "epoch": u64::MAX}),
        serde_json::json!({"type": "delta", "node": "edge-1", "epoch": u64::MAX, "seq": 1,
            "sent_ms": 0, "changes": [["eve", 1]]}),
    ];
    for message in &forged {
        let payload = serde_json::to_vec(message).unwrap();
        mallory
            .publish("herald.presence.n.mallory", payload.into())
            .await
            .unwrap();
    }
    mallory.flush().await.unwrap();
    eventually(WAIT, "the forgeries to be counted", || async {
        let spoofed = presence
            .metric("herald_presence_spoofed_messages_total")
            .await;
        (spoofed == 2.0).then_some(())
    })
    .await;
    assert_eq!(presence_of(presence, &["alice", "eve"]).await, online);

    // A snapshot request answered on alice's stream would show mallory,
    // through alice's SSE, who is connected.
    let mut on_alice = mallory.subscribe("herald.u.alice").await.unwrap();
    let inbox = "herald.presence.snap.mallory";
    let mut snapshots = mallory.subscribe(inbox).await.unwrap();
    let ask = serde_json::to_vec(&serde_json::json!({"node": "edge-1"})).unwrap();
    mallory
        .publish_with_reply("herald.presence.sync", "herald.u.alice", ask.clone().into())
        .await
        .unwrap();
    mallory
        .publish_with_reply("herald.presence.sync", inbox, ask.into())
        .await
        .unwrap();
    // The edge handles requests in order and NATS keeps its messages in
    // order: once the proper snapshot is here, a misdirected one would be too.
    let snapshot = tokio::time::timeout(WAIT, snapshots.next())
        .await
        .expect("the edge answers a snapshot inbox")
        .unwrap();
    let part: serde_json::Value = serde_json::from_slice(&snapshot.payload).unwrap();
    assert_eq!(part["node"], "edge-1");
    let misdirected = futures::FutureExt::now_or_never(on_alice.next());
    assert!(misdirected.is_none(), "{misdirected:?}");
    assert_eq!(
        edge1
            .metric("herald_edge_presence_sync_refused_total")
            .await,
        1.0
    );
}
