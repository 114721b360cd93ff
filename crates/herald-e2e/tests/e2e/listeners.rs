//! Every listener is bounded: connections that send no request head (or
//! half of one) are closed within `--header-timeout` of accept, whatever
//! the protocol; HTTP/2 connections with no open stream close after
//! `--idle-timeout`; heads over 16 KiB get 431; `--max-sockets` closes the
//! excess at once; and the edge's file descriptors return to their
//! baseline. The edge runs as its own process so its descriptors can be
//! counted; the other ports run in-process with short bounds.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use herald_core::listener::{Bounds, Listener};
use herald_core::readiness::Readiness;
use herald_e2e::*;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use herald_testing::{NatsServer, eventually};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
/// Scheduling slack on a loaded 2-core machine, plus the second a
/// connection that missed its deadline gets to take a GOAWAY.
const MARGIN: Duration = Duration::from_secs(4);
/// An HTTP/2 client preface and an empty SETTINGS frame: a connection
/// that speaks HTTP/2 and never opens a stream.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const HALF_HEAD: &[u8] = b"GET /v1/events HTTP/1.1\r\nHost: x\r\n";
const HALF_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Open files of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count()
}

/// Connects and sends `bytes`; returns the socket and when it connected.
async fn open(addr: SocketAddr, bytes: &'static [u8]) -> (TcpStream, Instant) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let connected = Instant::now();
    if !bytes.is_empty() {
        stream.write_all(bytes).await.expect("send");
    }
    (stream, connected)
}

/// How long after `since` the server closed `stream` (reading whatever it
/// sends meanwhile); `None` if still open after [`WAIT`].
async fn closed_after(mut stream: TcpStream, since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(since + WAIT, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `bytes` on a new connection and waits for the server to close it.
async fn close_time(addr: SocketAddr, bytes: &'static [u8]) -> Duration {
    let (stream, since) = open(addr, bytes).await;
    closed_after(stream, since)
        .await
        .unwrap_or_else(|| panic!("{addr} kept a connection sending {bytes:?} open"))
}

/// Opens `count` connections sending each of `kinds` in turn, 100 at a time.
async fn flood(
    addr: SocketAddr,
    count: usize,
    kinds: &[&'static [u8]],
) -> JoinSet<Option<Duration>> {
    let mut readers = JoinSet::new();
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        let opened =
            futures::future::join_all(batch.iter().map(|i| open(addr, kinds[i % kinds.len()])))
                .await;
        for (stream, since) in opened {
            readers.spawn(closed_after(stream, since));
        }
    }
    readers
}

fn events(edge: &EdgeProcess) -> String {
    format!("http://{}/v1/events", edge.addr)
}

async fn system(flags: &[&str]) -> (Stack, EdgeProcess) {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let edge = EdgeProcess::start_with(&stack.nats_url(), None, flags).await;
    (stack, edge)
}

/// Publishes `data` to `user` until `stream` receives it (the first
/// publishes may precede the edge's subscription).
async fn delivered(publish: &Running, stream: &mut SseStream, user: &str, data: &str) {
    let mut client = publisher(publish).await;
    publish_ephemeral(&mut client, &[user], data).await;
    let event = stream.next().await;
    assert_eq!(event.data, data);
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed_while_a_stream_is_served() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let (stack, edge) = system(&["--header-timeout", "2s"]).await;
    let publish = stack.publish();
    let pid = edge.process().pid();
    let admin = edge.process().admin;
    let baseline = fds(pid);
    let http = reqwest::Client::new();
    let mut alice =
        SseStream::open(&http, &events(&edge), &Claims::new("alice").hs256(SECRET)).await;
    delivered(publish, &mut alice, "alice", "before").await;

    let started = Instant::now();
    let mut silent = flood(edge.addr, 3_000, &[b""]).await;
    let mut half = flood(edge.addr, 3_000, &[HALF_HEAD, H2_PREFACE, HALF_PREFACE]).await;
    println!("6000 connections opened in {:?}", started.elapsed());

    // Served throughout: a new stream opens while the flood is held, and
    // both receive what is published until every flood socket is closed.
    let mut bob = SseStream::open(&http, &events(&edge), &Claims::new("bob").hs256(SECRET)).await;
    delivered(publish, &mut bob, "bob", "during").await;
    let mut client = publisher(publish).await;
    let mut tick = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    let mut times = Vec::new();
    while !silent.is_empty() || !half.is_empty() {
        tokio::select! {
            Some(done) = silent.join_next() => times.push(("silent", done.unwrap())),
            Some(done) = half.join_next() => times.push(("half-sent", done.unwrap())),
            _ = pace.tick() => {
                tick += 1;
                let data = format!("tick {tick}");
                publish_ephemeral(&mut client, &["alice"], &data).await;
                let event = alice.next_within(Duration::from_secs(5)).await;
                assert_eq!(event.map(|e| e.data), Some(data), "alice during the flood");
            }
        }
    }
    assert!(tick >= 4, "the flood lasted {tick} ticks");
    assert_eq!(times.len(), 6_000);
    for (kind, time) in &times {
        let time = time.unwrap_or_else(|| panic!("a {kind} connection was never closed"));
        assert!(
            time >= TIMEOUT - Duration::from_millis(50),
            "{kind} closed early: {time:?}"
        );
        assert!(time <= TIMEOUT + MARGIN, "{kind} closed late: {time:?}");
    }
    let slowest = times.iter().filter_map(|t| t.1).max().unwrap();
    println!("slowest close after {slowest:?}");
    assert_eq!(
        metric_at(admin, "herald_edge_header_timeouts_total").await,
        6_000.0
    );
    assert_eq!(
        metric_at(admin, "herald_edge_sockets_refused_total").await,
        0.0
    );
    delivered(publish, &mut bob, "bob", "after").await;

    drop((alice, bob, http));
    eventually(WAIT, "the edge's descriptors back to baseline", || async {
        let now = fds(pid);
        (now <= baseline).then_some(now)
    })
    .await;
}

#[tokio::test]
async fn the_socket_cap_closes_the_excess_at_once() {
    let (stack, edge) = system(&["--max-sockets", "20", "--header-timeout", "5s"]).await;
    let publish = stack.publish();
    let admin = edge.process().admin;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(open(edge.addr, b"").await.0);
    }
    eventually(WAIT, "20 sockets open", || async {
        (metric_at(admin, "herald_edge_sockets_open").await == 20.0).then_some(())
    })
    .await;
    for _ in 0..30 {
        let time = close_time(edge.addr, b"").await;
        assert!(
            time < Duration::from_secs(2),
            "excess closed after {time:?}"
        );
    }
    assert_eq!(
        metric_at(admin, "herald_edge_sockets_refused_total").await,
        30.0
    );
    let full = reqwest::Client::new().get(events(&edge)).send().await;
    assert!(full.is_err(), "no room for anyone while the cap is full");

    // The held sockets time out; then legitimate clients are served.
    eventually(WAIT, "the held sockets closed", || async {
        (metric_at(admin, "herald_edge_sockets_open").await == 0.0).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let mut alice =
        SseStream::open(&http, &events(&edge), &Claims::new("alice").hs256(SECRET)).await;
    delivered(publish, &mut alice, "alice", "after the excess").await;
    drop(held);
}

/// An h2c connection to `addr`, and when it ended.
async fn h2(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Instant>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    (client.ready().await.unwrap(), ended)
}

fn get(addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::get(format!("http://{addr}{path}"))
}

#[tokio::test]
async fn an_http2_connection_closes_once_idle_for_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let (_stack, edge) = system(&["--idle-timeout", "1s", "--heartbeat", "500ms"]).await;
    let (mut client, ended) = h2(edge.addr).await;
    let token = Claims::new("alice").hs256(SECRET);
    let request = get(edge.addr, "/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();

    // An open stream keeps its connection: heartbeats flow for 3 idle timeouts.
    let open_since = Instant::now();
    while open_since.elapsed() < 3 * IDLE {
        let chunk = tokio::time::timeout(WAIT, body.data()).await.unwrap();
        let chunk = chunk.expect("the stream stays open").unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert!(!ended.is_finished(), "closed with a stream open");

    // Without a stream it closes after the idle timeout, though the
    // client answers pings.
    drop(body);
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(WAIT, ended).await.unwrap().unwrap();
    let idle = ended - idle_since;
    assert!(
        idle >= IDLE - Duration::from_millis(100),
        "closed after {idle:?}"
    );
    assert!(idle <= IDLE + MARGIN, "closed after {idle:?}");
    drop(client);
}

#[tokio::test]
async fn heads_over_16_kib_get_431_on_both_protocols() {
    let (_stack, edge) = system(&[]).await;
    for (size, status) in [(15_000, 401), (17_000, 431), (200_000, 431)] {
        let big = "a".repeat(size);
        // HTTP/1.1
        let head = format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        let mut tcp = TcpStream::connect(edge.addr).await.unwrap();
        // The server may answer and close before reading all of a huge head.
        let _ = tcp.write_all(head.as_bytes()).await;
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let line = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "HTTP/1.1 head of {size} bytes: {line}"
        );
        // HTTP/2: h2 refuses a header block in over 5 CONTINUATION frames
        // outright (ENHANCE_YOUR_CALM), before its size is known.
        let (mut client, _) = h2(edge.addr).await;
        let request = get(edge.addr, "/v1/events")
            .header("x-big", &big)
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = tokio::time::timeout(WAIT, response).await.unwrap();
        match response {
            Ok(response) => assert_eq!(response.status(), status, "HTTP/2 head of {size} bytes"),
            Err(e) if size > 100_000 => {
                assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e}")
            }
            Err(e) => panic!("HTTP/2 head of {size} bytes: {e}"),
        }
    }
}

/// Short bounds for the in-process ports.
fn quick() -> Bounds {
    Bounds {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_sockets: 64,
    }
}

async fn bound_listener() -> (Listener, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    (Listener::new(tcp, quick()), addr)
}

/// Silent, half-sent HTTP/1.1 and HTTP/2-preface connections to `addr`
/// all close within the header timeout (+ margin); a silent one is not
/// closed before it (an HTTP/2-only port may refuse HTTP/1.1 at once).
async fn closes_the_silent(port: &str, addr: SocketAddr) {
    let timeout = quick().header_timeout;
    for bytes in [&b""[..], HALF_HEAD, H2_PREFACE, HALF_PREFACE] {
        let time = close_time(addr, bytes).await;
        assert!(
            time <= timeout + MARGIN,
            "{port}: a connection sending {bytes:?} closed after {time:?}"
        );
        if bytes.is_empty() {
            assert!(
                time >= timeout - Duration::from_millis(50),
                "{port}: {time:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_admin_port_closes_silent_connections() {
    let (listener, addr) = bound_listener().await;
    let stop = CancellationToken::new();
    let serving = stop.clone().cancelled_owned();
    let admin = tokio::spawn(herald_core::service::run_with_admin(
        listener,
        Registry::default(),
        Readiness::default(),
        serving,
    ));
    closes_the_silent("admin", addr).await;
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    stop.cancel();
    admin.await.unwrap();
}

#[tokio::test]
async fn the_push_api_closes_silent_connections_and_slow_bodies() {
    // By hand, not a `Stack`: the worker serves a listener this test binds.
    let nats = NatsServer::start();
    let fcm = herald_testing::fcm::FakeFcm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (client, _) =
        herald_nats::connection::connect(&[nats.client_url()], &Default::default(), "t")
            .await
            .unwrap();
    let worker = herald_push::PushWorker::start(
        push_config(&fcm, dir.path()),
        client,
        &mut Registry::default(),
    )
    .await
    .unwrap();
    let (listener, addr) = bound_listener().await;
    let stop = CancellationToken::new();
    let serving = tokio::spawn(worker.serve(listener, Readiness::default(), stop.clone()));
    closes_the_silent("push API", addr).await;

    // A body that does not arrive within the header timeout answers 408.
    let slow = b"PUT /v1/devices/alice HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"tok";
    let (mut stream, since) = open(addr, slow).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(since.elapsed() <= quick().header_timeout + MARGIN);

    let devices = reqwest::get(format!("http://{addr}/v1/devices/alice"))
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);
    stop.cancel();
    serving.await.unwrap();
}

/// A gRPC port closes the silent, serves a health check, and closes an
/// HTTP/2 connection idle after its request.
async fn grpc_port_is_bounded(port: &str, addr: SocketAddr) {
    closes_the_silent(port, addr).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest::default();
    health.check(request).await.unwrap();

    let (mut client, ended) = h2(addr).await;
    let (response, _) = client
        .send_request(get(addr, "/").body(()).unwrap(), true)
        .unwrap();
    drop(response.await.unwrap().into_body());
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(WAIT, ended).await.unwrap().unwrap();
    let idle = ended - idle_since;
    assert!(
        idle <= quick().idle_timeout + MARGIN,
        "{port}: idle connection closed after {idle:?}"
    );
}

#[tokio::test]
async fn the_grpc_ports_close_silent_and_idle_connections() {
    // By hand, not a `Stack`: the services serve listeners this test binds.
    let nats = NatsServer::start();
    let urls = [nats.client_url()];
    let security = Default::default();
    let connect = || herald_nats::connection::connect(&urls, &security, "t");

    let (client, losses) = connect().await.unwrap();
    let config = herald_publish::Config::defaults("p");
    let publish = herald_publish::PublishServer::start(
        config,
        client,
        losses.subscribe(),
        &mut Registry::default(),
    )
    .await
    .unwrap();
    let (listener, addr) = bound_listener().await;
    let stop = CancellationToken::new();
    let serving = tokio::spawn(publish.serve(listener, stop.clone()));
    grpc_port_is_bounded("publish", addr).await;
    stop.cancel();
    serving.await.unwrap().unwrap();

    let (client, losses) = connect().await.unwrap();
    let config = herald_presence::Config::defaults("presence");
    let presence = herald_presence::PresenceServer::start(
        config,
        client,
        losses.subscribe(),
        &mut Registry::default(),
    )
    .await
    .unwrap();
    let (listener, addr) = bound_listener().await;
    let stop = CancellationToken::new();
    let serving = tokio::spawn(presence.serve(listener, stop.clone()));
    grpc_port_is_bounded("presence", addr).await;
    stop.cancel();
    serving.await.unwrap().unwrap();
}

/// A TLS client trusting `ca`.
fn trusting(ca: &herald_testing::pki::TestCa) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn the_tls_handshake_counts_in_the_same_budget_from_accept() {
    // Long enough that a budget restarted after the handshake is told
    // apart from the one from accept despite scheduling slack.
    const TIMEOUT: Duration = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let ca = herald_testing::pki::TestCa::new("herald test CA");
    let issued = ca.server();
    let (cert, key) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let flags = [
        "--header-timeout",
        "4s",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    let (_stack, edge) = system(&flags).await;

    // Silent, or stuck in the middle of a ClientHello.
    for bytes in [&b""[..], b"\x16\x03\x01\x02\x00\x01"] {
        let time = close_time(edge.addr, bytes).await;
        assert!(time >= TIMEOUT - Duration::from_millis(50), "{time:?}");
        assert!(time <= TIMEOUT + MARGIN, "{time:?}");
    }

    // A handshake finished late leaves only the rest of the budget: the
    // client dawdles (as an attacker would) before its handshake.
    let connector = trusting(&ca);
    let tcp = TcpStream::connect(edge.addr).await.unwrap();
    let accepted = Instant::now();
    tokio::time::sleep(TIMEOUT * 3 / 4).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("handshake in time");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let time = accepted.elapsed();
    assert!(time >= TIMEOUT - Duration::from_millis(50), "{time:?}");
    assert!(time <= TIMEOUT * 3 / 2, "closed {time:?} after accept");
}

/// Runs herald-edge with `flags` (NATS is never reached: the bounds are
/// checked before binding); returns its exit code and stderr.
fn misconfigured_edge(flags: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(binary("herald-edge"))
        .args(["--jwt-secret", SECRET, "--nats-url", "nats://127.0.0.1:1"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(flags)
        .output()
        .expect("run herald-edge");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_bounds_exit_2_naming_the_flag() {
    let (code, stderr) = misconfigured_edge(&["--max-sockets", "0"]);
    assert_eq!(
        (code, stderr.trim()),
        (Some(2), "error: --max-sockets: must be at least 1")
    );
    let (code, stderr) = misconfigured_edge(&["--max-sockets", &usize::MAX.to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: --max-sockets: ") && stderr.contains("ulimit -n"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for flags in [
        ["--header-timeout", "0s"],
        ["--idle-timeout", "soon"],
        ["--max-sockets", "lots"],
    ] {
        let (code, stderr) = misconfigured_edge(&flags);
        assert_eq!(code, Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(flags[0]), "{flags:?}: {stderr}");
    }
}
