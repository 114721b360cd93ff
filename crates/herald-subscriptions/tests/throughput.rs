//! Messages per second through `deliver` on one subject, printed (a
//! figure for the report, not an assertion: the machine is shared).

use std::time::{Duration, Instant};

const MESSAGES: u64 = 200_000;
use herald_testing::{NatsServer, eventually};

#[tokio::test]
async fn messages_per_second_through_deliver_on_one_subject() {
    let server = NatsServer::start();
    // Counting only: the recorder would measure its own cloning.
    let count = std::sync::Arc::new(Counter::default());
    let (tx, _losses) = tokio::sync::watch::channel(0);
    let subs = herald_subscriptions::Subscriptions::connect(
        &[server.client_url()],
        &Default::default(),
        "herald-test throughput",
        tx,
        count.clone(),
    )
    .await
    .unwrap();
    subs.subscribe("herald.t.firehose");
    subs.round_trip().await.unwrap();

    // A raw socket writing pre-built PUBs: async-nats, debug-built in
    // this process, would be the bottleneck, not the reader measured.
    let started = Instant::now();
    let publishing = tokio::spawn(publish_raw(server.client_url()));
    eventually(
        Duration::from_secs(60),
        "every message delivered",
        || async { (subs.stats().delivered >= MESSAGES).then_some(()) },
    )
    .await;
    let elapsed = started.elapsed();
    publishing.await.unwrap();
    let stats = subs.stats();
    let (first, last) = *count.1.lock().unwrap();
    let delivering = last.unwrap() - first.unwrap();
    println!(
        "{MESSAGES} messages of 128 bytes: {:.0} msgs/s through deliver (first to last), \
         {:.0} msgs/s from the first PUB; {} dropped, {} connects",
        MESSAGES as f64 / delivering.as_secs_f64(),
        MESSAGES as f64 / elapsed.as_secs_f64(),
        stats.dropped,
        stats.connects
    );
    assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), MESSAGES);
    assert_eq!(stats.connects, 1, "no slow-consumer disconnect");
}

async fn publish_raw(url: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("nats://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut info = [0u8; 4096];
    let _ = socket.read(&mut info).await.unwrap();
    let one = [&b"PUB herald.t.firehose 128\r\n"[..], &[b'e'; 128], b"\r\n"].concat();
    let mut all = br#"CONNECT {"verbose":false,"pedantic":false}"#.to_vec();
    all.extend_from_slice(b"\r\n");
    for _ in 0..MESSAGES {
        all.extend_from_slice(&one);
    }
    all.extend_from_slice(b"PING\r\n");
    socket.write_all(&all).await.unwrap();
    let mut pong = [0u8; 64];
    let _ = socket.read(&mut pong).await.unwrap();
}

/// Counts messages and notes when the first and the last arrived.
#[derive(Default)]
struct Counter(
    std::sync::atomic::AtomicU64,
    std::sync::Mutex<(Option<Instant>, Option<Instant>)>,
);

impl herald_subscriptions::Deliver for Counter {
    fn deliver(
        &self,
        _: herald_subscriptions::Sid,
        message: &async_nats::Message,
        _: herald_subscriptions::Source,
    ) {
        assert_eq!(message.payload.len(), 128);
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n == 1 || n == MESSAGES {
            let mut times = self.1.lock().unwrap();
            let now = Some(Instant::now());
            if n == 1 { times.0 = now } else { times.1 = now }
        }
    }

    fn refused(&self, sid: herald_subscriptions::Sid, refusal: &herald_subscriptions::Refusal) {
        panic!("sid {sid} refused: {refusal:?}");
    }
}
