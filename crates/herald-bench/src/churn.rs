//! Churn: streams come and go for a while (a fixed number live, a batch
//! replaced by new users at a steady pace, half of them also following one
//! of a few topics) while persisted events flow to random live users; then
//! every stream closes. Samples the server's resident memory all along and
//! once everything is gone: under steady churn it should stay flat, and
//! afterwards come back near where it started.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Server process id, to read its resident memory from /proc.
    #[arg(long)]
    pid: u32,
    /// Streams open at any moment.
    #[arg(long, default_value_t = 2_000)]
    live: usize,
    /// Streams closed and replaced by new users each round.
    #[arg(long, default_value_t = 100)]
    replace: usize,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 300)]
    every_ms: u64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// Persisted events per second, each to one random live user.
    #[arg(long, default_value_t = 160)]
    publish_rate: u64,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
    /// Seconds to wait after the last stream closed before the last
    /// sample: the edge counts its allocator's free memory every 30 s
    /// while resident memory stays put (herald-core `memory.rs`).
    #[arg(long, default_value_t = 40)]
    settle_secs: u64,
}

/// Topics half of the streams follow (one each).
const TOPICS: [&str; 4] = ["churn-0", "churn-1", "churn-2", "churn-3"];

#[derive(Debug, serde::Serialize)]
struct Figures {
    peer: crate::peer::Kind,
    scenario: &'static str,
    live: usize,
    secs: u64,
    connects: usize,
    failed_connects: usize,
    publishes: u64,
    /// Warm (one batch of streams served and closed), before the churn.
    baseline_rss_kib: u64,
    /// The anonymous part: heap and stacks, without the binary's pages.
    baseline_anon_kib: u64,
    /// `(seconds since the start, RSS KiB)` every `--sample-secs`.
    samples: Vec<(u64, u64)>,
    /// Highest sample.
    peak_rss_kib: u64,
    /// Growth after the first minute, in percent (the mean of the later
    /// half of those samples against the earlier): steady churn should
    /// not keep growing.
    /// None when the churn lasted too short for two such samples.
    growth_after_first_minute_percent: Option<f64>,
    /// `--settle-secs` after every stream closed.
    after_close_rss_kib: u64,
    after_close_anon_kib: u64,
}

/// One live stream: its user, and the task reading it (aborting it closes
/// the connection).
struct Slot {
    user: String,
    reader: JoinHandle<()>,
}

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let mut next_user = 0usize;
    // The baseline is a warm server: one batch served and gone, so code
    // paths and one-time allocations count there rather than as growth.
    for slot in open_batch(target, args, &mut next_user, args.replace).await? {
        slot.reader.abort();
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let baseline = Memory::of(args.pid)?;
    let started = Instant::now();
    let mut connects = 0;
    let mut failed = 0;
    let mut slots: Vec<Slot> = Vec::with_capacity(args.live);
    for batch in (0..args.live)
        .collect::<Vec<_>>()
        .chunks(args.replace.max(1))
    {
        let opened = open_batch(target, args, &mut next_user, batch.len()).await?;
        failed += batch.len() - opened.len();
        connects += batch.len();
        slots.extend(opened);
    }
    let users = Arc::new(Mutex::new(users_of(&slots)));
    let publishing = publish(target, args, users.clone(), started).await?;

    let mut samples = vec![(0, Memory::of(args.pid)?.rss_kib)];
    let mut round = tokio::time::interval(Duration::from_millis(args.every_ms));
    while started.elapsed() < Duration::from_secs(args.secs) {
        round.tick().await;
        // The oldest streams go; new users take their place.
        let gone = args.replace.min(slots.len());
        for slot in slots.drain(..gone) {
            slot.reader.abort();
        }
        let opened = open_batch(target, args, &mut next_user, args.replace).await?;
        failed += args.replace - opened.len();
        connects += args.replace;
        slots.extend(opened);
        *users.lock().unwrap() = users_of(&slots);
        let secs = started.elapsed().as_secs();
        if secs >= samples.last().map_or(0, |s| s.0) + args.sample_secs {
            samples.push((secs, Memory::of(args.pid)?.rss_kib));
        }
    }
    let publishes = publishing.await??;
    for slot in slots {
        slot.reader.abort();
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let after_close = Memory::of(args.pid)?;
    println!(
        "RESULT {}",
        serde_json::to_string(&figures(
            target,
            args,
            connects,
            failed,
            publishes,
            baseline,
            samples,
            after_close,
        ))?
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn figures(
    target: &Target,
    args: &Args,
    connects: usize,
    failed_connects: usize,
    publishes: u64,
    baseline: Memory,
    samples: Vec<(u64, u64)>,
    after_close: Memory,
) -> Figures {
    let peak_rss_kib = samples.iter().map(|s| s.1).max().unwrap_or(0);
    // Samples after the first minute, their first half against their
    // second: means, since single samples swing by a few MB.
    let steady: Vec<u64> = samples.iter().filter(|s| s.0 >= 60).map(|s| s.1).collect();
    let (early, late) = steady.split_at(steady.len() / 2);
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let growth =
        (!early.is_empty()).then(|| (mean(late) - mean(early)) / mean(early).max(1.0) * 100.0);
    Figures {
        peer: target.peer,
        scenario: "churn",
        live: args.live,
        secs: args.secs,
        connects,
        failed_connects,
        publishes,
        baseline_rss_kib: baseline.rss_kib,
        baseline_anon_kib: baseline.anon_kib,
        samples,
        peak_rss_kib,
        growth_after_first_minute_percent: growth,
        after_close_rss_kib: after_close.rss_kib,
        after_close_anon_kib: after_close.anon_kib,
    }
}

fn users_of(slots: &[Slot]) -> Vec<String> {
    slots.iter().map(|s| s.user.clone()).collect()
}

/// Opens `count` streams for new users, together; returns the ones that
/// opened.
async fn open_batch(
    target: &Target,
    args: &Args,
    next_user: &mut usize,
    count: usize,
) -> anyhow::Result<Vec<Slot>> {
    let mut opening = Vec::with_capacity(count);
    for _ in 0..count {
        let n = *next_user;
        *next_user += 1;
        let user = format!("churn-{n}");
        let topic = (n % 2 == 1).then(|| TOPICS[n / 2 % TOPICS.len()]);
        let request = target.sse_request(&user, topic)?;
        let source = crate::stream::source(n, args.sources);
        let edge = target.edge;
        opening.push((
            user,
            tokio::spawn(async move { crate::stream::open(edge, source, &request).await }),
        ));
    }
    let mut slots = Vec::with_capacity(count);
    for (user, open) in opening {
        let Ok(mut sse) = open.await? else { continue };
        let reader = tokio::spawn(async move {
            crate::stream::for_each_data(&mut sse, |_| {}).await;
        });
        slots.push(Slot { user, reader });
    }
    Ok(slots)
}

/// Publishes persisted events to random live users at `--publish-rate`
/// until the churn ends; returns how many.
async fn publish(
    target: &Target,
    args: &Args,
    users: Arc<Mutex<Vec<String>>>,
    started: Instant,
) -> anyhow::Result<JoinHandle<anyhow::Result<u64>>> {
    let mut publisher = target.publisher().await?;
    let every = Duration::from_secs_f64(1.0 / args.publish_rate.max(1) as f64);
    let until = started + Duration::from_secs(args.secs);
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0;
        while Instant::now() < until {
            tick.tick().await;
            let user = {
                let users = users.lock().unwrap();
                users[fastrand::usize(..users.len())].clone()
            };
            publisher
                .publish_user(&user, format!("churn {sent}"), false)
                .await?;
            sent += 1;
        }
        Ok(sent)
    }))
}

/// Resident memory of a process, in KiB: all of it (`VmRSS`), and the
/// anonymous part (`RssAnon`: heap and stacks, not the binary's pages).
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    anon_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("no {name}"))?;
            Ok(line.split_whitespace().next().context("value")?.parse()?)
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            anon_kib: field("RssAnon:")?,
        })
    }
}
