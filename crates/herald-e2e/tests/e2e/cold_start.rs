//! A whole deployment started at once: a fresh 3-node cluster (JetStream
//! still electing its leaders), herald-publish on node 1 as its own
//! process, an edge on node 2, a few thousand streams, then events to all
//! of them at once. No publish may wait more than a second: while
//! herald-publish cannot store yet it says so at once (UNAVAILABLE, and
//! `/readyz` not ready), and every event accepted arrives. And the first
//! persisted events are stored within seconds of JetStream having a meta
//! leader, with gRPC health saying what `/readyz` says all along.

// By hand, not a `Stack`: the cluster starts fresh (a stack waits for
// JetStream) and herald-publish runs as a process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_e2e::*;
use herald_proto::v1::publisher_client::PublisherClient;
use herald_proto::v1::{PublishRequest, publish_request::Target};
use herald_testing::process::Service;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use herald_testing::{NatsCluster, eventually};
use tokio::sync::Mutex;
use tonic::transport::Channel;

const STREAMS: usize = 3000;
const PUBLISHERS: usize = 64;
const PATIENCE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publishes_after_a_cold_start_do_not_stall() {
    let cluster = NatsCluster::start_fresh(3).await;
    let listen = free_addr();
    let publish = spawn_publish(&cluster.nodes[0].client_url(), listen);
    eventually(Duration::from_secs(10), "the gRPC port", || async {
        tokio::net::TcpStream::connect(listen).await.ok()
    })
    .await;
    let edge = start_edge(&cluster.nodes[1].client_url(), edge_config("edge-2")).await;

    // At once: an answer within a second, whatever JetStream's state.
    let began = Instant::now();
    let client = PublisherClient::connect(format!("http://{listen}"))
        .await
        .unwrap();
    let ephemeral = timed(&client, request("early", true)).await;
    assert!(
        ephemeral.is_ok(),
        "ephemeral events need no JetStream: {ephemeral:?}"
    );
    let readyz_before = readyz(publish.admin).await;
    match timed(&client, request("early", false)).await {
        Ok(()) => {}
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert_eq!(readyz_before, 503, "refusing, so not ready");
        }
    }
    eprintln!("first answers within {:?}", began.elapsed());

    let arrivals = open_streams(&edge).await;
    let slowest_call = burst(&client).await;
    let delivered = arrivals.wait().await;
    assert_eq!(delivered.len(), STREAMS, "every event arrives");
    let slowest_delivery = delivered.iter().max().copied().unwrap_or_default();
    eprintln!("burst: slowest call {slowest_call:?}, slowest delivery {slowest_delivery:?}");
    assert!(slowest_call < PATIENCE, "{slowest_call:?}");
    assert!(slowest_delivery < PATIENCE, "{slowest_delivery:?}");

    // Ready once the history streams exist; persisted events then work.
    eventually(Duration::from_secs(60), "readiness", || async {
        (readyz(publish.admin).await == 200).then_some(())
    })
    .await;
    timed(&client, request("cold-1", false))
        .await
        .expect("a stored event once ready");
}

fn spawn_publish(nats_url: &str, listen: SocketAddr) -> Service {
    let listen = listen.to_string();
    let args = [
        "--nats-url",
        nats_url,
        "--listen",
        &listen,
        "--node-id",
        "p1",
        "--history-storage",
        "memory",
        "--history-replicas",
        "3",
    ];
    Service::spawn(&binary("herald-publish"), &args, &[])
}

fn request(user: &str, ephemeral: bool) -> PublishRequest {
    PublishRequest {
        target: Some(Target::users([user])),
        data: since_epoch().to_string(),
        ephemeral,
        ..Default::default()
    }
}

/// One Publish, which must answer (either way) within [`PATIENCE`].
async fn timed(
    client: &PublisherClient<Channel>,
    request: PublishRequest,
) -> Result<(), tonic::Status> {
    let started = Instant::now();
    let answer = client.clone().publish(request).await;
    assert!(
        started.elapsed() < PATIENCE,
        "a publish waited {:?}",
        started.elapsed()
    );
    answer.map(drop)
}

async fn readyz(admin: SocketAddr) -> u16 {
    let answer = reqwest::get(format!("http://{admin}/readyz")).await;
    answer.map_or(0, |r| r.status().as_u16())
}

/// Each stream's first event's publish→deliver time, as they come.
struct Arrivals {
    latencies: Arc<Mutex<Vec<Duration>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Arrivals {
    async fn wait(self) -> Vec<Duration> {
        for reader in self.readers {
            reader.await.unwrap();
        }
        self.latencies.lock().await.clone()
    }
}

async fn open_streams(edge: &Running) -> Arrivals {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(STREAMS)));
    let http = reqwest::Client::new();
    let mut readers = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let token = Claims::new(format!("cold-{i}")).hs256(SECRET);
        let mut stream = SseStream::open(&http, &events_url(edge, &[]), &token).await;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            if let Some(event) = stream.next_within(Duration::from_secs(30)).await {
                let sent: u128 = event.data.parse().unwrap();
                let latency = Duration::from_micros((since_epoch() - sent) as u64);
                latencies.lock().await.push(latency);
            }
        }));
    }
    Arrivals { latencies, readers }
}

/// An ephemeral event to every stream's user from [`PUBLISHERS`] callers
/// at once; the slowest call.
async fn burst(client: &PublisherClient<Channel>) -> Duration {
    let tasks = (0..PUBLISHERS).map(|p| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in (p..STREAMS).step_by(PUBLISHERS) {
                let started = Instant::now();
                let answer = client
                    .clone()
                    .publish(request(&format!("cold-{i}"), true))
                    .await;
                answer.expect("an ephemeral publish");
                slowest = slowest.max(started.elapsed());
            }
            slowest
        })
    });
    let slowest = futures::future::join_all(tasks).await.into_iter();
    slowest.map(Result::unwrap).max().unwrap_or_default()
}

fn since_epoch() -> u128 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_micros()
}

/// A whole deployment started at once (herald-publish with the cluster,
/// before JetStream has a meta leader): the first persisted event is
/// stored soon after the meta leader appears, and all along gRPC health
/// says what `/readyz` says. The target is 3 s after the meta leader
/// (docs/operations.md); the bound here is loose so that a loaded machine
/// never fails it, and the figures are printed:
/// `cargo nextest run -p herald-e2e cold_start::stored_events --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_follow_the_meta_leader_within_seconds() {
    const PUBLISHER: &str = "herald.v1.Publisher";
    let cluster = NatsCluster::start_fresh(3).await;
    let listen = free_addr();
    let publish = spawn_publish(&cluster.nodes[0].client_url(), listen);
    let leader = tokio::spawn(async move {
        let at = meta_leader(&cluster).await;
        (cluster, at)
    });
    eventually(Duration::from_secs(10), "the gRPC port", || async {
        tokio::net::TcpStream::connect(listen).await.ok()
    })
    .await;
    let listening = Instant::now();
    let client = PublisherClient::connect(format!("http://{listen}"))
        .await
        .unwrap();

    let mut unready_seen = false;
    let stored = loop {
        assert!(
            listening.elapsed() < Duration::from_secs(60),
            "nothing stored in 60 s"
        );
        let readiness = readiness_at(publish.admin, listen, &[PUBLISHER]).await;
        let answer = client.clone().publish(request("fresh", false)).await;
        unready_seen |= readiness == Some(false);
        match answer {
            Ok(_) => break Instant::now(),
            // The bug this guards against: health said SERVING while
            // persisted publishes were refused.
            Err(status) => assert!(
                readiness != Some(true),
                "ready (readyz 200, health SERVING) yet refused: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(unready_seen, "not ready before the streams exist");
    eventually(Duration::from_secs(10), "ready everywhere", || async {
        (readiness_at(publish.admin, listen, &[PUBLISHER]).await == Some(true)).then_some(())
    })
    .await;
    let (_cluster, leader) = leader.await.unwrap();
    let after_leader = stored.saturating_duration_since(leader);
    eprintln!(
        "first stored event {after_leader:?} after the meta leader, {:?} after herald-publish listened",
        stored - listening,
    );
    assert!(after_leader < Duration::from_secs(10), "{after_leader:?}");
}

/// When the first node reports a JetStream meta leader (`/jsz`).
async fn meta_leader(cluster: &NatsCluster) -> Instant {
    eventually(
        Duration::from_secs(60),
        "a JetStream meta leader",
        || async {
            for node in &cluster.nodes {
                let jsz = node.monitor("/jsz").await;
                if !jsz["meta_cluster"]["leader"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
                {
                    return Some(Instant::now());
                }
            }
            None
        },
    )
    .await
}
