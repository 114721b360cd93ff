//! Plain HTTP/1.1 streams are served by the edge's own head reader and
//! writer, not hyper (`connection: close`, which hyper would not send on a
//! keep-alive request, tells which path answered); hostile or unusual
//! heads on that reader are bounded and answered as hyper answers them,
//! and a client that stops reading is closed after `--write-timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use herald_e2e::*;
use herald_testing::token::{Claims, Sign};
use herald_testing::{NatsServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

async fn system() -> (Stack, EdgeProcess) {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let edge = EdgeProcess::start_with(&stack.nats_url(), None, &["--header-timeout", "2s"]).await;
    (stack, edge)
}

/// Reads from `tcp` until `done` says the text so far is complete, or the
/// server closes; returns the text and whether the server closed.
async fn read_until(tcp: &mut TcpStream, done: impl Fn(&str) -> bool) -> (String, bool) {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        if done(&String::from_utf8_lossy(&text)) {
            return (String::from_utf8_lossy(&text).into_owned(), false);
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "no complete answer in {WAIT:?}: {:?}",
                String::from_utf8_lossy(&text)
            ),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&text).into_owned(), true),
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` on a new connection and reads the answer until `done`.
async fn exchange(addr: SocketAddr, bytes: &[u8], done: impl Fn(&str) -> bool) -> (String, bool) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading all of a huge head.
    let _ = tcp.write_all(bytes).await;
    read_until(&mut tcp, done).await
}

/// A JSON error body is complete.
fn json_done(text: &str) -> bool {
    text.ends_with('}')
}

fn stream_head(token: &str) -> String {
    format!(
        "GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_plain_http1_stream_is_served_by_the_edge_itself() {
    let (stack, edge) = system().await;
    let publish = stack.publish();
    let admin = edge.process().admin;
    let token = Claims::new("alice").hs256(SECRET);
    let mut tcp = TcpStream::connect(edge.addr).await.unwrap();
    tcp.write_all(stream_head(&token).as_bytes()).await.unwrap();
    let (head, closed) = read_until(&mut tcp, |t| t.contains("\r\n\r\n")).await;
    assert!(!closed, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for header in [
        "content-type: text/event-stream\r\n",
        "cache-control: no-store\r\n",
        "transfer-encoding: chunked\r\n",
        "connection: close\r\n",
        "date: ",
    ] {
        assert!(head.contains(header), "{header:?} missing in {head}");
    }

    // Events arrive as chunks (publishes may precede the subscription).
    let mut client = publisher(publish).await;
    let mut received = String::new();
    let deadline = Instant::now() + WAIT;
    while !received.contains("data: hello\n") {
        assert!(
            Instant::now() < deadline,
            "no event in {WAIT:?}: {received:?}"
        );
        publish_ephemeral(&mut client, &["alice"], "hello").await;
        let mut buf = [0u8; 4096];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await
        {
            let n = read.unwrap();
            assert!(n > 0, "the stream closed: {received:?}");
            received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(metric_at(admin, "herald_edge_connections").await, 1.0);

    // A client that goes away while the stream idles is noticed.
    drop(tcp);
    eventually(WAIT, "the stream closed as client_gone", || async {
        let gone = metric_at(admin, "herald_edge_closes_total{reason=\"client_gone\"}").await;
        let open = metric_at(admin, "herald_edge_sockets_open").await;
        (gone == 1.0 && open == 0.0).then_some(())
    })
    .await;
    assert_eq!(metric_at(admin, "herald_edge_connections").await, 0.0);
}

#[tokio::test]
async fn refusals_on_the_plain_path_are_whole_and_close_the_connection() {
    let (_stack, edge) = system().await;
    let head = "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
    let (answer, closed) = exchange(edge.addr, head.as_bytes(), |_| false).await;
    assert!(closed);
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let length = format!("content-length: {}\r\n", body.len());
    assert!(answer.contains(&length), "{length:?} in {answer}");
    assert!(body.contains("missing_token"), "{body}");
}

#[tokio::test]
async fn hostile_heads_are_bounded_and_answered_as_hyper_answers() {
    let (_stack, edge) = system().await;
    let admin = edge.process().admin;

    // Over the 16 KiB cap: 431.
    let big = "a".repeat(17_000);
    let head = format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (answer, _) = exchange(edge.addr, head.as_bytes(), |t| t.contains("\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    // A garbage request line: 400, closed.
    let (answer, closed) = exchange(edge.addr, b"\x01\x02 garbage\r\n\r\n", |_| false).await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A POST with a body goes to hyper: 405, the connection kept.
    let post = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let (answer, closed) = exchange(edge.addr, post, json_done).await;
    assert!(!closed);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");

    // Pipelined requests go to hyper, which answers both in order.
    let two = b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    let (answer, _) = exchange(edge.addr, two, |t| t.contains("not_found") && json_done(t)).await;
    let first = answer.find("HTTP/1.1 401").expect("the first answered");
    let second = answer.find("HTTP/1.1 404").expect("the second answered");
    assert!(first < second, "{answer}");

    // A head that never completes is closed at the header deadline, and counted.
    let before = metric_at(admin, "herald_edge_header_timeouts_total").await;
    let mut tcp = TcpStream::connect(edge.addr).await.unwrap();
    let since = Instant::now();
    tcp.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until(&mut tcp, |_| false).await;
    let after = since.elapsed();
    assert!(closed && answer.is_empty(), "{answer}");
    assert!(
        after >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed early: {after:?}"
    );
    assert!(after <= HEADER_TIMEOUT + MARGIN, "closed late: {after:?}");
    assert_eq!(
        metric_at(admin, "herald_edge_header_timeouts_total").await,
        before + 1.0
    );
}

/// What a client that stopped reading holds on `edge`: its stream, its
/// socket, and the NATS subscription of `user`.
async fn held(edge: &Running, nats: &NatsServer, user: &str) -> (f64, f64, bool) {
    let subject = herald_domain::subject::UserId::parse(user)
        .unwrap()
        .subject();
    let streams = edge.metric("herald_edge_connections").await;
    let sockets = edge.metric("herald_edge_sockets_open").await;
    (
        streams,
        sockets,
        nats.client_subjects().await.contains(&subject),
    )
}

/// The case seen in the field: a client with a small receive buffer that
/// never reads, a token that expires after 8 s, 120 events of 60 KB. Its
/// stream is closed once its socket has taken nothing for the write
/// timeout (long before `exp`), counted, and everything it held is freed.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_frees_what_it_held() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    let mut config = edge_config("edge");
    config.write_timeout = WRITE_TIMEOUT;
    config.heartbeat = Duration::from_secs(1);
    config.max_connections_per_user = 1;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());

    let exp = herald_testing::token::now() + 8;
    let token = Claims::new("stuck").expires_at(exp).hs256(SECRET);
    let stuck = stalled_client(edge.addr, &token, "/v1/events").await;
    assert_eq!(held(edge, stack.nats(), "stuck").await, (1.0, 1.0, true));

    let mut client = publisher(publish).await;
    let payload = "x".repeat(60 * 1024);
    let started = Instant::now();
    for _ in 0..120 {
        publish_ephemeral(&mut client, &["stuck"], &payload).await;
    }
    let published = started.elapsed();
    let closed = eventually(WAIT, "the stalled stream closed", || async {
        let closes = edge
            .metric("herald_edge_closes_total{reason=\"write_timeout\"}")
            .await;
        (closes == 1.0).then(|| started.elapsed())
    })
    .await;
    println!("published in {published:?}, closed after {closed:?}");
    // The stall starts once the socket is full, at the earliest with the
    // first events; the heartbeat task finds it within a step (1 s) of
    // the timeout.
    assert!(closed >= WRITE_TIMEOUT, "closed after {closed:?}");
    let latest = published + WRITE_TIMEOUT + Duration::from_secs(1) + MARGIN;
    assert!(
        closed <= latest,
        "closed after {closed:?}, published in {published:?}"
    );
    eventually(WAIT, "the stream, socket and subscription gone", || async {
        (held(edge, stack.nats(), "stuck").await == (0.0, 0.0, false)).then_some(())
    })
    .await;
    for other in ["client_gone", "token_expired", "slow_consumer"] {
        let closes = format!("herald_edge_closes_total{{reason=\"{other}\"}}");
        assert_eq!(edge.metric(&closes).await, 0.0, "{other}");
    }

    // Its slot is free: the user, allowed one stream, connects again.
    let again = Claims::new("stuck").hs256(SECRET);
    let mut stream = herald_testing::sse::SseStream::open(
        &reqwest::Client::new(),
        &events_url(edge, &[]),
        &again,
    )
    .await;
    publish_ephemeral(&mut client, &["stuck"], "back").await;
    assert_eq!(stream.next().await.data, "back");
    drop(stuck);
}
