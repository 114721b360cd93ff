//! Many streams on one topic (channel). First idle: memory and CPU per
//! stream while only heartbeats flow. Then fan-out: events to the topic at
//! a series of rising rates, each with its deliveries per second and
//! publish→receive latency percentiles, until p99 passes `--p99-limit-ms`.
//! Runs the same against Herald and Nchan.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Server process ids, to read memory and CPU from /proc (repeatable:
    /// nginx's master and workers are summed).
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Users the streams belong to, in turn (default: one per stream).
    /// Fewer users than streams are a user's several tabs, which share the
    /// user's subject.
    #[arg(long)]
    users: Option<usize>,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Seconds to hold the streams idle while measuring CPU; longer than
    /// the heartbeat interval (15 s on both), so heartbeats are counted.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Events per second to the topic, tried in order.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,50,100,200,400")]
    rates: Vec<u64>,
    /// Measure idle streams only, no fan-out.
    #[arg(long)]
    idle_only: bool,
    /// Seconds at each rate.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Concurrent publish calls.
    #[arg(long, default_value_t = 8)]
    publishers: u64,
    /// p99 above this ends the ramp.
    #[arg(long, default_value_t = 100)]
    p99_limit_ms: u64,
    /// One stream in this many records latencies (all count deliveries):
    /// recording every one would make the load generator the bottleneck.
    #[arg(long, default_value_t = 16)]
    sample_every: usize,
}

impl Args {
    fn users(&self) -> usize {
        self.users
            .unwrap_or(self.connections)
            .clamp(1, self.connections.max(1))
    }
}

/// The idle measurement; printed as one JSON line after `RESULT `.
#[derive(Debug, serde::Serialize)]
struct Idle {
    peer: crate::peer::Kind,
    scenario: &'static str,
    connections: usize,
    users: usize,
    open_secs: f64,
    kib_per_idle_stream: f64,
    idle_cpu_percent: f64,
}

/// What one rate measured; one JSON line each.
#[derive(Debug, serde::Serialize)]
struct Step {
    peer: crate::peer::Kind,
    scenario: &'static str,
    connections: usize,
    target_rate: u64,
    achieved_rate: f64,
    sent: u64,
    deliveries: u64,
    expected: u64,
    lost: u64,
    deliveries_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

/// What the streams share: every delivery counted, sampled latencies.
struct Tally {
    deliveries: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let tally = Arc::new(Tally {
        deliveries: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let opening = open_all(target, args, &tally);
    let (streams, cost) = hold_idle(&args.pids, args.connections, args.idle_secs, opening).await?;
    let idle = Idle {
        peer: target.peer,
        scenario: "idle",
        connections: args.connections,
        users: args.users(),
        open_secs: cost.open_secs,
        kib_per_idle_stream: cost.kib_per_stream,
        idle_cpu_percent: cost.cpu_percent,
    };
    eprintln!(
        "{:.1} KiB per idle stream; idle CPU {:.2}%",
        idle.kib_per_idle_stream, idle.idle_cpu_percent
    );
    println!("RESULT {}", serde_json::to_string(&idle)?);

    let rates = if args.idle_only { &[][..] } else { &args.rates };
    let mut next = 0;
    for &rate in rates {
        let step = fan_out_at(target, args, &tally, rate, next).await?;
        next += step.sent;
        eprintln!(
            "rate {rate}/s: achieved {:.0}/s, {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, lost {}",
            step.achieved_rate,
            step.deliveries_per_sec,
            step.p50_ms,
            step.p99_ms,
            step.p999_ms,
            step.lost
        );
        println!("RESULT {}", serde_json::to_string(&step)?);
        let (achieved, p99) = (step.achieved_rate, step.p99_ms);
        if !crate::step_held(rate, achieved, p99, args.p99_limit_ms, step.lost) {
            break;
        }
    }
    for stream in streams {
        stream.abort();
    }
    Ok(())
}

/// Publishes to the topic at `rate` for `--secs`, numbering events from
/// `first`, and waits for the deliveries (at most the p99 limit plus a
/// second after the last publish).
async fn fan_out_at(
    target: &Target,
    args: &Args,
    tally: &Tally,
    rate: u64,
    first: u64,
) -> anyhow::Result<Step> {
    tally.latency_us.lock().unwrap().reset();
    let counted_before = tally.deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let sent = publish_at(target, args, rate, first).await?;
    let published = started.elapsed().as_secs_f64();
    let expected = sent * args.connections as u64;
    let grace = Duration::from_millis(args.p99_limit_ms) + Duration::from_secs(1);
    let deadline = Instant::now() + grace;
    let delivered = || tally.deliveries.load(Ordering::Relaxed) - counted_before;
    while delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deliveries = delivered();
    let elapsed = started.elapsed().as_secs_f64();
    let latency = tally.latency_us.lock().unwrap();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(Step {
        peer: target.peer,
        scenario: "fanout",
        connections: args.connections,
        target_rate: rate,
        achieved_rate: sent as f64 / published,
        sent,
        deliveries,
        expected,
        lost: expected.saturating_sub(deliveries),
        deliveries_per_sec: deliveries as f64 / elapsed,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
    })
}

/// Opens every stream (at most 256 connecting at once), each counting the
/// events it receives; every `--sample-every`th records latencies too.
async fn open_all(
    target: &Target,
    args: &Args,
    tally: &Arc<Tally>,
) -> anyhow::Result<crate::stream::Readers> {
    let users = args.users();
    let request = |i| target.sse_request(&format!("bench-{}", i % users), Some("bench"));
    let on_data = |i: usize| {
        let tally = tally.clone();
        let sampled = i.is_multiple_of(args.sample_every.max(1));
        move |data: &[u8]| {
            tally.deliveries.fetch_add(1, Ordering::Relaxed);
            if sampled && let Some(sent) = sent_at(data) {
                let now = crate::now_micros();
                let mut latency = tally.latency_us.lock().unwrap();
                let _ = latency.record(now.saturating_sub(sent).max(1));
            }
        }
    };
    let (edge, count, sources) = (target.edge, args.connections, args.sources);
    let connecting = target.peer.connecting();
    crate::stream::open_many(edge, connecting, count, sources, request, on_data).await
}

/// The send time in an event's data, `<seq> <micros>`.
fn sent_at(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.split_once(' ')?.1.parse().ok()
}

/// Publishes `rate × --secs` events to the topic, paced, from
/// `--publishers` concurrent callers; returns how many went out.
async fn publish_at(target: &Target, args: &Args, rate: u64, first: u64) -> anyhow::Result<u64> {
    let publisher = target.publisher().await?;
    let total = rate * args.secs;
    let callers = args.publishers.min(rate).max(1);
    let interval = Duration::from_secs_f64(callers as f64 / rate as f64);
    let deadline = Instant::now() + Duration::from_secs(args.secs) + target.timeout;
    let next = Arc::new(AtomicU64::new(first));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let mut publisher = publisher.clone();
        let share = total / callers + u64::from(c < total % callers);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0;
            while sent < share && Instant::now() < deadline {
                tick.tick().await;
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let data = format!("{seq} {}", crate::now_micros());
                publisher.publish_topic("bench", data).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await??;
    }
    publisher.flush().await?;
    Ok(sent)
}

/// What holding streams idle cost the servers.
pub(crate) struct IdleCost {
    pub open_secs: f64,
    /// Growth of the servers' PSS, per stream.
    pub kib_per_stream: f64,
    /// CPU over the idle time, percent of a core.
    pub cpu_percent: f64,
}

/// Opens `count` streams with `opening`, then measures `pids`' memory a
/// second later and their CPU over `idle_secs` with every stream idle.
pub(crate) async fn hold_idle<T>(
    pids: &[u32],
    count: usize,
    idle_secs: u64,
    opening: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, IdleCost)> {
    let pss_before = pss_kib(pids)?;
    let opened = Instant::now();
    let streams = opening.await?;
    let open_secs = opened.elapsed().as_secs_f64();
    eprintln!("opened {count} streams in {open_secs:.1}s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pss_idle = pss_kib(pids)?;
    let cpu_before = cpu_ticks(pids)?;
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cost = IdleCost {
        open_secs,
        kib_per_stream: pss_idle.saturating_sub(pss_before) as f64 / count.max(1) as f64,
        // 100 clock ticks per second: ticks per second is percent of a core.
        cpu_percent: (cpu_ticks(pids)? - cpu_before) as f64 / idle_secs.max(1) as f64,
    };
    Ok((streams, cost))
}

/// Memory of all `pids`, in KiB: the proportional set size, so memory
/// shared between processes (nginx workers share Nchan's shared memory
/// zone) is counted once, not once per process.
pub(crate) fn pss_kib(pids: &[u32]) -> anyhow::Result<u64> {
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
pub(crate) fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
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
