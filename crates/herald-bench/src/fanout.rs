//! Many streams on one topic: memory per idle stream, deliveries per second.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald_proto::v1::{
    PublishRequest, publish_request::Target as PublishTarget, publisher_client::PublisherClient,
};
use tokio::sync::Semaphore;

use crate::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Edge process id, to read its memory from /proc.
    #[arg(long)]
    edge_pid: u32,
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
}

pub async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let rss_before = rss_kib(args.edge_pid)?;
    let opened = Instant::now();
    let open = Arc::new(Semaphore::new(256));
    let mut streams = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = open.clone().acquire_owned().await?;
        let source = IpAddr::from([127, 0, 0, 1 + (i % args.sources as usize) as u8]);
        let token = crate::token(&target.secret, &format!("bench-{i}"), &["bench"])?;
        let received = received.clone();
        let edge = target.edge;
        streams.push(tokio::spawn(async move {
            let stream = crate::stream::open(edge, source, &token, "topic=bench").await;
            drop(permit);
            let mut stream = stream?;
            crate::stream::for_each_data(&mut stream, |_| {
                received.fetch_add(1, Ordering::Relaxed);
            })
            .await;
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
        "opened {} streams in {open_secs:.1}s; edge RSS {rss_before} KiB -> {rss_idle} KiB = {:.1} KiB per idle stream",
        args.connections,
        (rss_idle - rss_before) as f64 / args.connections as f64
    );

    let expected = args.events * args.connections as u64;
    let started = Instant::now();
    publish_all(target, args).await?;
    let published = started.elapsed().as_secs_f64();
    let deadline = started + target.timeout;
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

async fn publish_all(target: &Target, args: &Args) -> anyhow::Result<()> {
    let client = PublisherClient::connect(target.publish.clone()).await?;
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
                    target: Some(PublishTarget::Topic("bench".into())),
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
