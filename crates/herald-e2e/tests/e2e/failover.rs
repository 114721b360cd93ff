//! Failures under load on a 3-node cluster with history replicated 3 times:
//! an edge killed mid-stream, a NATS node restarted while publishing.

use std::time::Duration;

use futures::StreamExt;
use herald_e2e::*;
use herald_testing::NatsCluster;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_mid_stream_loses_nothing_for_a_client_that_moves() {
    let stack = Stack::builder()
        .cluster(3)
        .publish(replicated_publish("p"))
        .on(0)
        .start()
        .await;
    let publish = stack.publish();
    let replicated = ["--history-replicas", "3"];
    let mut doomed =
        EdgeProcess::start_with(&stack.nats.nodes[1].client_url(), None, &replicated).await;
    let doomed_addr = doomed.addr;
    let survivor = start_edge(&stack.nats.nodes[2].client_url(), replicated_edge("edge-3")).await;
    let token = Claims::new("alice").hs256(SECRET);
    let http = reqwest::Client::new();
    let mut stream =
        SseStream::open(&http, &format!("http://{doomed_addr}/v1/events"), &token).await;
    stack
        .nats
        .wait_for_interest(0, "n2", "herald.u.alice")
        .await;

    const EVENTS: usize = 2000;
    let mut client = publisher(publish).await;
    let publishing = tokio::spawn(async move {
        for i in 0..EVENTS {
            publish_to_users(&mut client, &["alice"], &i.to_string()).await;
        }
    });
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen.len() < EVENTS / 3 {
        let event = stream.next().await;
        seen.push(event.data.parse::<usize>().unwrap());
        last_id = event.id;
    }
    doomed.kill(); // SIGKILL, mid-stream
    while let Some(event) = stream.next_within(Duration::from_secs(2)).await {
        seen.push(event.data.parse::<usize>().unwrap()); // what was already on the wire
        last_id = event.id;
    }

    let moved = format!("{}/v1/events", survivor.url());
    let response = http
        .get(&moved)
        .bearer_auth(&token)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    let mut resumed = SseStream::from_response(response).await;
    while seen.len() < EVENTS {
        seen.push(resumed.next().await.data.parse::<usize>().unwrap());
    }
    publishing.await.unwrap();
    resumed.assert_silent(Duration::from_millis(300)).await;
    assert!(
        seen == (0..EVENTS).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_nats_node_loses_no_acknowledged_event() {
    // Publisher and edge on node 1; node 3 holds a replica of every stream
    // (and may lead some of them).
    let mut stack = Stack::builder()
        .cluster(3)
        .publish(replicated_publish("p"))
        .on(0)
        .edge(replicated_edge("edge-1"))
        .on(0)
        .start()
        .await;
    let (publish, edge) = (stack.publish.as_ref().unwrap(), &stack.edges[0]);
    let token = Claims::new("alice").hs256(SECRET);
    let http = reqwest::Client::new();
    let first = SseStream::open(&http, &events_url(edge, &[]), &token).await;
    drop(first);

    // Publish while node 3 (a replica of every stream) goes down and comes back.
    const EVENTS: usize = 600;
    let mut client = publisher(publish).await;
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    for i in 0..EVENTS {
        if i == EVENTS / 3 {
            stack.nats.nodes[2].kill();
        }
        if i == 2 * EVENTS / 3 {
            stack.nats.nodes[2].restart();
        }
        refused += publish_retrying(&mut client, &i.to_string()).await;
        acknowledged.push(i);
    }
    stack.nats.wait_for_mesh().await;
    assert_eq!(
        acknowledged.len(),
        EVENTS,
        "every event stored in the end ({refused} refusals on the way)"
    );

    // Every acknowledged event is in history: a client that has seen
    // nothing (position 0) gets them all back, resuming from its last id,
    // as EventSource would, if a replay is cut short while the cluster
    // settles after the restart.
    let mut cursor = herald_domain::cursor::Cursor::default();
    cursor.set(herald_domain::cursor::key("herald.u.alice"), 0);
    let mut last_id = cursor.encode();
    let mut got = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<&usize> = acknowledged.iter().filter(|i| !got.contains(*i)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} acknowledged events missing from history, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let request = http
            .get(events_url(edge, &[]))
            .bearer_auth(&token)
            .header("last-event-id", &last_id);
        let response = request.send().await.unwrap();
        if response.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut replay = SseStream::from_response(response).await;
        while let Some(event) = replay.next_within(Duration::from_secs(3)).await {
            got.insert(event.data.parse::<usize>().unwrap());
            last_id = event.id;
        }
    }
}

/// Publishes to alice as a careful caller does: a refused publish is
/// retried for a while (a stream whose leader was on a lost node has no
/// leader until one is elected). Returns how many tries were refused.
async fn publish_retrying(
    client: &mut herald_proto::v1::publisher_client::PublisherClient<tonic::transport::Channel>,
    data: &str,
) -> usize {
    for refused in 0..100 {
        let request = herald_proto::v1::PublishRequest {
            target: Some(herald_proto::v1::publish_request::Target::users(["alice"])),
            data: data.to_owned(),
            ..Default::default()
        };
        if client.publish(request).await.is_ok() {
            return refused;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("publishing {data:?} was refused for 10s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_loses_nothing_when_its_edge_loses_nats() {
    // The edge knows only node 2; when node 2 dies it reconnects elsewhere.
    let mut stack = Stack::builder()
        .cluster(3)
        .publish(replicated_publish("p"))
        .on(0)
        .edge(replicated_edge("edge-2"))
        .on(1)
        .start()
        .await;
    let (publish, edge) = (stack.publish.as_ref().unwrap(), &stack.edges[0]);
    let token = Claims::new("alice").hs256(SECRET);
    let http = reqwest::Client::new();
    let url = events_url(edge, &[]);
    let mut stream = SseStream::open(&http, &url, &token).await;
    stack
        .nats
        .wait_for_interest(0, "n2", "herald.u.alice")
        .await;

    const EVENTS: usize = 400;
    let mut client = publisher(publish).await;
    let publishing = tokio::spawn(async move {
        for i in 0..EVENTS {
            publish_retrying(&mut client, &i.to_string()).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (mut seen, mut last_id) = (Vec::new(), String::new());
    let mut killed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < EVENTS {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {EVENTS} events after 60s",
            seen.len()
        );
        if !killed && seen.len() >= EVENTS / 4 {
            stack.nats.nodes[1].kill(); // the edge's NATS node
            killed = true;
        }
        match stream.next_within(Duration::from_secs(5)).await {
            Some(event) => {
                seen.push(event.data.parse::<usize>().unwrap());
                last_id = event.id;
            }
            None => {
                // The edge ended the stream: resume, as EventSource would.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let request = http
                    .get(&url)
                    .bearer_auth(&token)
                    .header("last-event-id", &last_id);
                match request.send().await {
                    Ok(response) if response.status() == 200 => {
                        stream = SseStream::from_response(response).await
                    }
                    _ => {}
                }
            }
        }
    }
    publishing.await.unwrap();
    assert!(killed);
    assert!(
        seen == (0..EVENTS).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(
        edge.metric("herald_edge_closes_total{reason=\"server_error\"}")
            .await
            >= 1.0
    );
}

/// A rolling NATS upgrade under continuous publishing: each node in turn
/// enters lame duck mode, exits once its clients have moved (its grace
/// period), and is started again. Herald's connections move before their
/// servers close them (the edges' subscriptions made on another server
/// and confirmed first), so streams stay open and miss no event. The
/// target, at most 1 % of the streams closed, is measured at 10,000
/// streams by `bench/rolling.sh` (`HERALD_ROLLING_STREAMS`; 100 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_nats_restart_closes_no_stream_and_loses_nothing() {
    if !lean_subscriber("moving away from a server in lame duck mode") {
        return;
    }
    let streams: usize = std::env::var("HERALD_ROLLING_STREAMS")
        .map_or(100, |n| n.parse().expect("HERALD_ROLLING_STREAMS"));
    // Over the 5 s within which Herald's connections leave.
    let mut stack = Stack::builder()
        .cluster(3)
        .nats_config("lame_duck_grace_period: \"6s\"\n")
        .publish(replicated_publish("p"))
        .start()
        .await;
    let urls = stack.nats_url();
    let publish = stack.publish.as_ref().unwrap();
    // Processes of their own: each holds half the streams' sockets.
    let flags = ["--history-replicas", "3"];
    let edges = [
        EdgeProcess::start_with(&urls, None, &flags).await,
        EdgeProcess::start_with(&urls, None, &flags).await,
    ];
    let http = reqwest::Client::new();
    let mut client = publisher(publish).await;
    let mut readers = Vec::new();
    let opened = std::time::Instant::now();
    for i in 0..streams {
        let user = format!("u{i}");
        let token = Claims::new(&user).hs256(SECRET);
        let url = format!("http://{}/v1/events", edges[i % 2].addr);
        let mut stream = SseStream::open(&http, &url, &token).await;
        // Routed interest reaches every node a moment after the join:
        // one event through first.
        publish_to(&mut client, &user, "-1").await;
        assert_eq!(stream.next().await.data, "-1");
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(event) = stream.next_within(Duration::from_secs(120)).await {
                if event.data == "end" {
                    return (got, false);
                }
                got.push(event.data.parse::<usize>().unwrap());
            }
            (got, true)
        }));
    }
    println!("{streams} streams open in {:?}", opened.elapsed());

    let stop = tokio_util::sync::CancellationToken::new();
    let publishing = tokio::spawn({
        let (mut client, stop) = (client.clone(), stop.clone());
        async move {
            let mut sent = 0;
            while !stop.is_cancelled() {
                publish_to(
                    &mut client,
                    &format!("u{}", sent % streams),
                    &sent.to_string(),
                )
                .await;
                sent += 1;
            }
            sent
        }
    });
    let started = std::time::Instant::now();
    for node in 0..stack.nats.nodes.len() {
        stack.nats.nodes[node].lame_duck();
        stack.nats.nodes[node].exited(Duration::from_secs(30)).await;
        stack.nats.nodes[node].restart();
        stack.nats.wait_for_jetstream().await;
    }
    let took = started.elapsed();
    stop.cancel();
    let sent = publishing.await.unwrap();
    for i in 0..streams {
        publish_to(&mut client, &format!("u{i}"), "end").await;
    }
    let mut closed = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let (got, ended) = reader.await.unwrap();
        closed += usize::from(ended);
        let want: Vec<usize> = (i..sent).step_by(streams).collect();
        assert!(
            ended || got == want,
            "u{i}: {} of {} events",
            got.len(),
            want.len()
        );
    }
    let mut moves = Vec::new();
    // Why the edges ended streams, but for the readers' own goodbyes.
    let mut reasons = std::collections::BTreeMap::new();
    for edge in &edges {
        let metrics = metrics_at(edge.process().admin).await;
        let sample = |name: &str| sample_value(&metrics, name);
        moves.push(sample("herald_edge_nats_moves_total"));
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("herald_edge_closes_total{reason=\"") else {
                continue;
            };
            let (reason, count) = rest.split_once("\"} ").unwrap_or_default();
            if reason != "client_gone" {
                *reasons.entry(reason.to_owned()).or_insert(0.0) +=
                    count.parse::<f64>().unwrap_or(0.0);
            }
        }
        assert_eq!(
            sample("herald_edge_nats_connects_total"),
            1.0,
            "no reconnect"
        );
    }
    println!(
        "rolling: {streams} streams on 2 edges, 3 NATS nodes restarted in {took:?} while {sent} events were published; \
         {closed} streams closed ({:.2} %), none of the others missed an event; subscription moves per edge {moves:?}; edges' other close reasons {reasons:?}",
        closed as f64 * 100.0 / streams as f64
    );
    assert!(
        closed * 100 <= streams,
        "{closed} of {streams} streams closed"
    );
    assert!(moves.iter().all(|m| *m >= 1.0), "{moves:?}");
}

/// Publishes `data` to `user` persisted, retried with one idempotency key
/// until stored (a stream's leader may be moving).
async fn publish_to(
    client: &mut herald_proto::v1::publisher_client::PublisherClient<tonic::transport::Channel>,
    user: &str,
    data: &str,
) {
    let key = format!("{user}-{data}");
    for _ in 0..200 {
        let request = herald_proto::v1::PublishRequest {
            target: Some(herald_proto::v1::publish_request::Target::users([user])),
            data: data.to_owned(),
            idempotency_key: key.clone(),
            ..Default::default()
        };
        if client.publish(request).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("publishing {data:?} to {user} was refused for 20s");
}

/// The NATS node holding an edge's subscriptions killed (SIGKILL): new
/// streams open and hear events through another node within seconds,
/// though the edge was also given addresses where no server listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_streams_hear_events_soon_after_the_edges_nats_node_is_killed() {
    // Started by hand: the edge is also given addresses where no server
    // listens, which a stack does not do.
    let mut cluster = NatsCluster::start(3).await;
    let dead: Vec<String> = (0..5)
        .map(|_| format!("nats://127.0.0.1:{}", herald_testing::nats::free_port()))
        .collect();
    let urls = format!("{},{}", cluster.client_urls(), dead.join(","));
    let edge = start_edge(&urls, replicated_edge("edge-k")).await;
    let http = reqwest::Client::new();
    let token = Claims::new("first").hs256(SECRET);
    let _first = SseStream::open(&http, &events_url(&edge, &[]), &token).await;
    // The node whose client holds the first stream's subject.
    let mut holder = None;
    for (i, node) in cluster.nodes.iter().enumerate() {
        if node
            .client_subjects()
            .await
            .iter()
            .any(|s| s == "herald.u.first")
        {
            holder = Some(i);
        }
    }
    let holder = holder.expect("the edge's subscriptions on some node");
    let survivor = (holder + 1) % 3;
    let nats = async_nats::connect(cluster.nodes[survivor].client_url())
        .await
        .unwrap();

    cluster.nodes[holder].kill();
    let killed = std::time::Instant::now();
    let mut tries = 0;
    let heard = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no stream heard an event in 30 s"
        );
        tries += 1;
        let user = format!("late{tries}");
        let token = Claims::new(&user).hs256(SECRET);
        let response = http
            .get(events_url(&edge, &[]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            continue;
        }
        let mut stream = SseStream::from_response(response).await;
        nats.publish(format!("herald.u.{user}"), "hello".into())
            .await
            .unwrap();
        nats.flush().await.unwrap();
        if let Some(event) = stream.next_within(Duration::from_millis(500)).await {
            assert_eq!(event.data, "hello");
            break killed.elapsed();
        }
    };
    println!(
        "a new stream heard an event {heard:?} after its edge's NATS node was killed ({tries} tries)"
    );
    assert!(heard < Duration::from_secs(10), "{heard:?}");
}

/// A connect learns where it starts (each followed subject's newest stored
/// event) by a direct get, which any replica answers, not through the
/// JetStream API, even though history has three replicas: a burst of
/// connects would otherwise queue behind the stream leaders' API, which
/// nats-server stops taking past 10,000 requests queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_reads_its_start_from_any_replica() {
    let stack = Stack::builder()
        .cluster(3)
        .publish(replicated_publish("p"))
        .on(0)
        .edge(replicated_edge("e"))
        .on(1)
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["bob"], "before").await;

    let watcher = async_nats::connect(&stack.nats.nodes[2].client_url())
        .await
        .unwrap();
    let mut leader_reads = watcher.subscribe("$JS.API.STREAM.MSG.GET.>").await.unwrap();
    let mut direct_reads = watcher.subscribe("$JS.API.DIRECT.GET.>").await.unwrap();
    herald_nats::connection::round_trip(&watcher).await.unwrap();

    let token = Claims::new("bob").hs256(SECRET);
    let http = reqwest::Client::new();
    let _stream = SseStream::open(&http, &format!("{}/v1/events", edge.url()), &token).await;
    let direct = tokio::time::timeout(Duration::from_secs(5), direct_reads.next())
        .await
        .expect("the start is read by a direct get")
        .unwrap();
    assert!(
        direct.subject.as_str().contains("HERALD_H"),
        "a history read: {}",
        direct.subject
    );
    herald_nats::connection::round_trip(&watcher).await.unwrap();
    while let Ok(Some(read)) =
        tokio::time::timeout(Duration::from_millis(300), leader_reads.next()).await
    {
        assert!(
            !read.subject.as_str().contains("HERALD_H"),
            "a start read through the API: {}",
            read.subject
        );
    }
}
