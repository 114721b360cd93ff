//! `herald-bench`: opens many SSE streams on one edge (spread over several
//! 127.0.0.x source addresses), measures the edge's memory per stream, then
//! publishes to a topic all streams follow and measures deliveries per
//! second. Every loop is bounded in count and time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use herald_proto::v1::{
    PublishRequest, publish_request::Target, publisher_client::PublisherClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(name = "herald-bench", about)]
struct Args {
    /// Edge SSE address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    edge: SocketAddr,
    /// Edge process id, to read its memory from /proc.
    #[arg(long)]
    edge_pid: u32,
    /// herald-publish gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    publish: String,
    /// The edge's HS256 secret.
    #[arg(long, env = "HERALD_JWT_SECRET")]
    secret: String,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Events to publish to the shared topic.
    #[arg(long, default_value_t = 200)]
    events: u64,
    /// Concurrent publish calls.
    #[arg(long, default_value_t = 8)]
    publishers: u64,
    /// Give up waiting for deliveries after this long.
    #[arg(long, default_value = "120", value_parser = |s: &str| s.parse().map(Duration::from_secs))]
    timeout: Duration,
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    topics: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let received = Arc::new(AtomicU64::new(0));
    let rss_before = rss_kib(args.edge_pid)?;

    let opened = Instant::now();
    let open = Arc::new(Semaphore::new(256));
    let mut streams = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = open.clone().acquire_owned().await?;
        let source = IpAddr::from([127, 0, 0, 1 + (i % args.sources as usize) as u8]);
        let token = token(&args.secret, i)?;
        let received = received.clone();
        let edge = args.edge;
        streams.push(tokio::spawn(async move {
            let stream = connect(edge, source, &token).await;
            drop(permit);
            let mut stream = stream?;
            count_events(&mut stream, &received).await;
            anyhow::Ok(())
        }));
    }
    while open.available_permits() < 256 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_secs = opened.elapsed().as_secs_f64();
    let failed = streams.iter().filter(|s| s.is_finished()).count();
    if failed > 0 {
        bail!("{failed} streams failed to open");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(args.edge_pid)?;
    println!(
        "opened {} streams in {open_secs:.1}s; edge RSS {} KiB -> {} KiB = {:.1} KiB per idle stream",
        args.connections,
        rss_before,
        rss_idle,
        (rss_idle - rss_before) as f64 / args.connections as f64
    );

    let expected = args.events * args.connections as u64;
    let started = Instant::now();
    publish_all(&args).await?;
    let published = started.elapsed().as_secs_f64();
    let deadline = started + args.timeout;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    println!(
        "published {} events in {published:.2}s; {got}/{expected} deliveries in {elapsed:.2}s = {:.0} deliveries/s",
        args.events,
        got as f64 / elapsed
    );
    println!("edge RSS after fan-out: {} KiB", rss_kib(args.edge_pid)?);
    for stream in streams {
        stream.abort();
    }
    Ok(())
}

fn token(secret: &str, i: usize) -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = Claims {
        sub: format!("bench-{i}"),
        exp,
        topics: vec!["bench".into()],
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

async fn connect(
    edge: SocketAddr,
    source: IpAddr,
    token: &str,
) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket
        .connect(edge)
        .await
        .with_context(|| format!("connect from {source}"))?;
    let request = format!(
        "GET /v1/events?topic=bench HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut head)).await??;
    if !head[..n].starts_with(b"HTTP/1.1 200") {
        bail!("edge answered {}", String::from_utf8_lossy(&head[..n]));
    }
    Ok(stream)
}

/// Counts `data: e` markers, carrying a partial marker across reads.
async fn count_events(stream: &mut tokio::net::TcpStream, received: &AtomicU64) {
    const MARK: &[u8] = b"data: e";
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry = 0usize;
    loop {
        let n = match stream.read(&mut buf[carry..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n + carry,
        };
        let found = buf[..n].windows(MARK.len()).filter(|w| *w == MARK).count();
        received.fetch_add(found as u64, Ordering::Relaxed);
        carry = (MARK.len() - 1).min(n);
        buf.copy_within(n - carry..n, 0);
    }
}

async fn publish_all(args: &Args) -> anyhow::Result<()> {
    let client = PublisherClient::connect(args.publish.clone()).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let mut client = client.clone();
        let next = next.clone();
        let total = args.events;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let request = PublishRequest {
                    target: Some(Target::Topic("bench".into())),
                    data: format!("e{i}"),
                    ..Default::default()
                };
                client.publish(request).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}
