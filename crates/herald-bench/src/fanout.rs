//! Many streams on one topic (channel): memory and CPU per idle stream,
//! then deliveries per second as events fan out to all of them. Runs the
//! same against Herald and Nchan.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::Semaphore;

use crate::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server process ids, to read memory and CPU from /proc (repeatable:
    /// nginx's master and workers are summed).
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Seconds to hold the streams idle while measuring CPU.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Events to publish to the shared topic.
    #[arg(long, default_value_t = 200)]
    events: u64,
    /// Concurrent publish calls.
    #[arg(long, default_value_t = 8)]
    publishers: u64,
}

/// What one run measured; printed as one JSON line after `RESULT `.
#[derive(Debug, serde::Serialize)]
struct Figures {
    peer: crate::peer::Kind,
    connections: usize,
    open_secs: f64,
    kib_per_idle_stream: f64,
    idle_cpu_percent: f64,
    events: u64,
    deliveries: u64,
    expected: u64,
    deliveries_per_sec: f64,
}

pub async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let pss_before = pss_kib(&args.pids)?;
    let opened = Instant::now();
    let streams = open_all(target, args, &received).await?;
    let open_secs = opened.elapsed().as_secs_f64();
    eprintln!("opened {} streams in {open_secs:.1}s", args.connections);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let pss_idle = pss_kib(&args.pids)?;
    let cpu_before = cpu_ticks(&args.pids)?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu_percent = (cpu_ticks(&args.pids)? - cpu_before) as f64 / args.idle_secs as f64; // 100 ticks/s
    let kib_per_idle_stream =
        (pss_idle.saturating_sub(pss_before)) as f64 / args.connections as f64;
    eprintln!("{kib_per_idle_stream:.1} KiB per idle stream; idle CPU {idle_cpu_percent:.1}%");

    let expected = args.events * args.connections as u64;
    let started = Instant::now();
    publish_all(target, args).await?;
    let deadline = started + target.timeout;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let deliveries = received.load(Ordering::Relaxed);
    for stream in streams {
        stream.abort();
    }
    let figures = Figures {
        peer: target.peer,
        connections: args.connections,
        open_secs,
        kib_per_idle_stream,
        idle_cpu_percent,
        events: args.events,
        deliveries,
        expected,
        deliveries_per_sec: deliveries as f64 / elapsed,
    };
    eprintln!(
        "{deliveries}/{expected} deliveries in {elapsed:.2}s = {:.0}/s",
        figures.deliveries_per_sec
    );
    println!("RESULT {}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Opens every stream (at most 256 connecting at once), each counting the
/// events it receives.
async fn open_all(
    target: &Target,
    args: &Args,
    received: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let open = Arc::new(Semaphore::new(256));
    let mut streams = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = open.clone().acquire_owned().await?;
        let source = IpAddr::from([127, 0, 0, 1 + (i % usize::from(args.sources)) as u8]);
        let request = target.sse_request(&format!("bench-{i}"), Some("bench"))?;
        let received = received.clone();
        let edge = target.edge;
        streams.push(tokio::spawn(async move {
            let stream = crate::stream::open(edge, source, &request).await;
            drop(permit);
            let mut stream = stream?;
            crate::stream::for_each_data(&mut stream, |_| {
                received.fetch_add(1, Ordering::Relaxed);
            })
            .await;
            anyhow::Ok(())
        }));
    }
    let _all = open.acquire_many(256).await?;
    let failed: Vec<_> = streams.iter().filter(|s| s.is_finished()).collect();
    if !failed.is_empty() {
        bail!("{} streams failed to open", failed.len());
    }
    Ok(streams)
}

async fn publish_all(target: &Target, args: &Args) -> anyhow::Result<()> {
    let publisher = target.publisher().await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let mut publisher = publisher.clone();
        let next = next.clone();
        let total = args.events;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                publisher.publish_topic("bench", format!("e{i}")).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Memory of all `pids`, in KiB: the proportional set size, so memory
/// shared between processes (nginx workers share Nchan's shared memory
/// zone) is counted once, not once per process.
fn pss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter()
        .map(|pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
            let line = rollup
                .lines()
                .find(|l| l.starts_with("Pss:"))
                .context("no Pss")?;
            Ok(line
                .split_whitespace()
                .nth(1)
                .context("Pss value")?
                .parse::<u64>()?)
        })
        .sum()
}

/// User + system CPU time of all `pids`, in clock ticks (1/100 s).
fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            // Fields after the command name, which may contain spaces.
            let rest = stat.rsplit_once(')').context("stat format")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11).context("utime")?.parse()?;
            let stime: u64 = fields.get(12).context("stime")?.parse()?;
            Ok(utime + stime)
        })
        .sum()
}
