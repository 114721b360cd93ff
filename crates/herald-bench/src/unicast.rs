//! Unicast: many users with one stream each, events to random users at a
//! series of target rates. For each rate: the rate achieved, publish→receive
//! latency percentiles (HDR histogram), lost and duplicated events. The
//! highest rate whose p99 stays within `--p99-limit-ms` with nothing lost is
//! the sustained rate. With `--peer nats` the same traffic goes straight to
//! NATS (core publish, one subscription per user): the broker's ceiling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::Target;
use crate::peer::Kind;
use crate::via::Via;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Users, one stream each.
    #[arg(long, default_value_t = 15_000)]
    users: usize,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Target publish rates to try, events per second, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,20000"
    )]
    rates: Vec<u64>,
    /// Seconds at each rate.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 64)]
    publishers: u64,
    /// Herald: publish ephemeral (core NATS) instead of persisted.
    #[arg(long)]
    ephemeral: bool,
    /// p99 above this ends the ramp; stragglers are awaited this long
    /// plus a second.
    #[arg(long, default_value_t = 50)]
    p99_limit_ms: u64,
    /// Run every rate, even after one missed (to report the p99 at each).
    #[arg(long)]
    every_rate: bool,
    /// Herald: how events enter herald-publish.
    #[arg(long, value_enum, default_value = "grpc")]
    via: Via,
    /// Events per call with `--via batch`.
    #[arg(long, default_value_t = 50)]
    batch_size: u64,
    /// `name=pid` of a process whose CPU per event to report (repeatable),
    /// e.g. `publish=1234`: user + system time over the step, over events sent.
    #[arg(long = "cpu-pid", value_parser = parse_named_pid)]
    cpu_pids: Vec<(String, u32)>,
}

/// Why a `--cpu-pid` is not `name=pid`.
#[derive(Debug, thiserror::Error)]
enum NamedPidError {
    #[error("expected name=pid")]
    NoName,
    #[error("{0}")]
    Pid(#[from] std::num::ParseIntError),
}

fn parse_named_pid(s: &str) -> Result<(String, u32), NamedPidError> {
    let (name, pid) = s.split_once('=').ok_or(NamedPidError::NoName)?;
    Ok((name.to_owned(), pid.parse()?))
}

/// What one rate measured; printed as one JSON line after `RESULT `.
#[derive(Debug, serde::Serialize)]
struct Step {
    peer: Kind,
    scenario: &'static str,
    ephemeral: bool,
    users: usize,
    target_rate: u64,
    achieved_rate: f64,
    sent: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    publish_errors: u64,
    via: Via,
    /// CPU microseconds per event sent, per `--cpu-pid` name.
    cpu_us_per_event: std::collections::BTreeMap<String, f64>,
}

/// What the readers share: latencies and which events arrived.
struct Tally {
    latency_us: Histogram<u64>,
    seen: Vec<u8>,
    duplicated: u64,
}

impl Tally {
    fn record(&mut self, data: &[u8]) {
        let Some((seq, sent)) = parse(data) else {
            return;
        };
        let now = crate::now_micros();
        let _ = self.latency_us.record(now.saturating_sub(sent).max(1));
        match self.seen.get_mut(seq as usize) {
            Some(seen) if *seen > 0 => self.duplicated += 1,
            Some(seen) => *seen = 1,
            None => {}
        }
    }
}

fn parse(data: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(data).ok()?;
    let (seq, sent) = text.split_once(' ')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

pub async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let max_events = args.rates.iter().max().copied().unwrap_or(0) * args.secs + 1;
    let tally = Arc::new(Mutex::new(Tally {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        seen: Vec::new(),
        duplicated: 0,
    }));
    let readers = open_readers(target, args, &tally).await?;
    eprintln!("{} streams open", args.users);
    for &rate in &args.rates {
        {
            let mut tally = tally.lock().unwrap();
            tally.latency_us.reset();
            tally.seen = vec![0; max_events as usize];
            tally.duplicated = 0;
        }
        let cpu_before = cpu_ticks(&args.cpu_pids)?;
        let (sent, errors, elapsed) = publish_at(target, args, rate).await?;
        // Let stragglers arrive: at most the p99 limit plus a second.
        tokio::time::sleep(Duration::from_millis(args.p99_limit_ms) + Duration::from_secs(1)).await;
        let cpu_after = cpu_ticks(&args.cpu_pids)?;
        // Clock ticks are 10 ms.
        let cpu_us_per_event = cpu_before
            .into_iter()
            .zip(cpu_after)
            .map(|((name, a), (_, b))| (name, (b - a) as f64 * 10_000.0 / sent.max(1) as f64))
            .collect();
        let step = {
            let tally = tally.lock().unwrap();
            let received = tally.seen.iter().filter(|s| **s > 0).count() as u64;
            let ms = |q: f64| tally.latency_us.value_at_quantile(q) as f64 / 1000.0;
            Step {
                peer: target.peer,
                scenario: "unicast",
                ephemeral: args.ephemeral,
                users: args.users,
                target_rate: rate,
                achieved_rate: sent as f64 / elapsed,
                sent,
                received,
                lost: sent.saturating_sub(received),
                duplicated: tally.duplicated,
                p50_ms: ms(0.50),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
                publish_errors: errors,
                via: args.via,
                cpu_us_per_event,
            }
        };
        eprintln!(
            "rate {rate}/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, lost {}, duplicated {}, CPU µs/event {:?}",
            step.achieved_rate,
            step.p50_ms,
            step.p99_ms,
            step.p999_ms,
            step.lost,
            step.duplicated,
            step.cpu_us_per_event
        );
        println!("RESULT {}", serde_json::to_string(&step)?);
        let (achieved, p99) = (step.achieved_rate, step.p99_ms);
        if !args.every_rate && !crate::step_held(rate, achieved, p99, args.p99_limit_ms, step.lost)
        {
            break;
        }
    }
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// One reader per user: an SSE stream (Herald, Nchan) or a NATS
/// subscription (the broker alone), each recording what it receives.
async fn open_readers(
    target: &Target,
    args: &Args,
    tally: &Arc<Mutex<Tally>>,
) -> anyhow::Result<crate::stream::Readers> {
    let mut readers = Vec::with_capacity(args.users);
    if target.peer == Kind::Nats {
        let clients = nats_clients(&target.publish, 8).await?;
        for i in 0..args.users {
            let mut subscriber = clients[i % clients.len()]
                .subscribe(format!("herald.u.bench-{i}"))
                .await?;
            let tally = tally.clone();
            readers.push(tokio::spawn(async move {
                while let Some(message) = subscriber.next().await {
                    tally.lock().unwrap().record(&message.payload);
                }
                anyhow::Ok(())
            }));
        }
        for client in &clients {
            client.flush().await?;
        }
        return Ok(readers);
    }
    let request = |i| target.sse_request(&format!("bench-{i}"), None);
    let on_data = |_| {
        let tally = tally.clone();
        move |data: &[u8]| tally.lock().unwrap().record(data)
    };
    crate::stream::open_many(target.edge, args.users, args.sources, request, on_data).await
}

async fn nats_clients(url: &str, count: usize) -> anyhow::Result<Vec<async_nats::Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(async_nats::connect(url).await?);
    }
    Ok(clients)
}

/// CPU ticks of each named process.
fn cpu_ticks(pids: &[(String, u32)]) -> anyhow::Result<Vec<(String, u64)>> {
    pids.iter()
        .map(|(name, pid)| Ok((name.clone(), crate::fanout::cpu_ticks(&[*pid])?)))
        .collect()
}

/// Publishes at `rate` for `--secs` to random users, numbering events
/// from 0, in calls of one event (or `--batch-size` with `--via batch`);
/// returns (sent, errors, seconds taken).
async fn publish_at(target: &Target, args: &Args, rate: u64) -> anyhow::Result<(u64, u64, f64)> {
    let total = rate * args.secs;
    let per_call = if args.via == Via::Batch {
        args.batch_size.max(1)
    } else {
        1
    };
    // Publisher p sends `share(p)` events, numbered from `offset(p)`: all
    // `total` of them, the remainder spread over the first publishers.
    let (each, extra) = (total / args.publishers, total % args.publishers);
    let share = |p: u64| each + u64::from(p < extra);
    let offset = |p: u64| p * each + p.min(extra);
    let interval = Duration::from_secs_f64((args.publishers * per_call) as f64 / rate as f64);
    let sender = target.sender(args.via).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs) + target.timeout;
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let mut sender = sender.clone();
        let (users, ephemeral) = (args.users, args.ephemeral);
        let (share, offset) = (share(p), offset(p));
        // Staggered: publisher p ticks p/publishers of an interval after
        // the first, so events leave evenly spaced rather than in bursts
        // of `publishers` (bursts that queue at every hop measure the
        // burst, not the path).
        let first = tokio::time::Instant::from_std(started)
            + interval.mul_f64(p as f64 / args.publishers as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let (mut sent, mut errors) = (0u64, 0u64);
            let mut k = 0;
            while k < share && Instant::now() <= deadline {
                tick.tick().await;
                let calls = (share - k).min(per_call);
                let events = (k..k + calls)
                    .map(|k| {
                        let user = format!("bench-{}", fastrand::usize(0..users));
                        (user, format!("{} {}", offset + k, crate::now_micros()))
                    })
                    .collect();
                let failed = sender.send(events, ephemeral).await;
                sent += calls - failed;
                errors += failed;
                k += calls;
            }
            (sent, errors)
        }));
    }
    let (mut sent, mut errors) = (0, 0);
    for task in tasks {
        let (s, e) = task.await?;
        sent += s;
        errors += e;
    }
    sender.flush().await?;
    Ok((sent, errors, started.elapsed().as_secs_f64()))
}
