//! Unicast: many users with one stream each, events to random users at a
//! series of target rates. For each rate: the rate achieved, publish→receive
//! latency percentiles (HDR histogram), lost and duplicated events. The
//! highest rate whose p99 stays within `--p99-limit-ms` with nothing lost is
//! the sustained rate. With `--peer nats` the same traffic goes straight to
//! NATS (core publish, one subscription per user): the broker's ceiling.
//!
//! The coarse ramp (`--rates`) stops at the first rate that misses; the
//! ramp then refines between the last rate that held and that one, at
//! rates at most `--refine-gap` apart (10 %), so the sustained rate, and a
//! ratio of two, reads to within that gap. The refinement is bounded in
//! steps (`--refine-steps`) and time (`--refine-secs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::Target;
use crate::peer::Kind;
use crate::via::Via;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
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
    /// Run every rate, even after one missed (to report the p99 at each);
    /// no refinement then.
    #[arg(long)]
    every_rate: bool,
    /// After the first rate that misses, try rates between the last that
    /// held and it, each at most this factor above the one before.
    #[arg(long, default_value_t = 1.1)]
    refine_gap: f64,
    /// At most this many refining steps (0: none).
    #[arg(long, default_value_t = 12)]
    refine_steps: usize,
    /// No refining step starts after this many seconds of refining.
    #[arg(long, default_value_t = 180)]
    refine_secs: u64,
    /// Which repetition of the scenario this is (bench/run.sh's
    /// UNICAST_REPEAT), carried into the results.
    #[arg(long, default_value_t = 1)]
    round: u32,
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
    /// A step of the refinement after the coarse ramp missed.
    refine: bool,
    round: u32,
    /// CPU microseconds per event sent, per `--cpu-pid` name.
    cpu_us_per_event: std::collections::BTreeMap<String, f64>,
}

impl Step {
    fn held(&self, p99_limit_ms: u64) -> bool {
        crate::step_held(
            self.target_rate,
            self.achieved_rate,
            self.p99_ms,
            p99_limit_ms,
            self.lost,
        )
    }
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

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let top = args.rates.iter().max().copied().unwrap_or(0);
    let tally = Arc::new(Mutex::new(Tally {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        seen: Vec::new(),
        duplicated: 0,
    }));
    let readers = open_readers(target, args, &tally).await?;
    eprintln!("{} streams open", args.users);
    let (mut held, mut missed) = (None, None);
    for &rate in &args.rates {
        let step = step(target, args, &tally, rate, top, false).await?;
        if step.held(args.p99_limit_ms) {
            held = Some(rate);
        } else if !args.every_rate {
            missed = Some(rate);
            break;
        }
    }
    if let (Some(held), Some(missed)) = (held, missed) {
        let rates = refine_rates(held, missed, args.refine_gap, args.refine_steps);
        eprintln!("refining between {held}/s (held) and {missed}/s (missed): {rates:?}");
        let deadline = Instant::now() + Duration::from_secs(args.refine_secs);
        for rate in rates {
            if Instant::now() >= deadline {
                eprintln!("refinement out of time (--refine-secs) before {rate}/s");
                break;
            }
            if !step(target, args, &tally, rate, top, true)
                .await?
                .held(args.p99_limit_ms)
            {
                break;
            }
        }
    }
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// One rate: publishes, waits for stragglers, prints the step's line and
/// its `RESULT`. `top` is the highest rate any step runs at (refining
/// steps stay below the rate that missed).
async fn step(
    target: &Target,
    args: &Args,
    tally: &Arc<Mutex<Tally>>,
    rate: u64,
    top: u64,
    refine: bool,
) -> anyhow::Result<Step> {
    {
        let mut tally = tally.lock().unwrap();
        tally.latency_us.reset();
        tally.seen = vec![0; (top.max(rate) * args.secs + 1) as usize];
        tally.duplicated = 0;
    }
    let cpu_before = cpu_ticks(&args.cpu_pids)?;
    let (sent, errors, elapsed) = publish_at(target, args, rate).await?;
    // Let stragglers arrive: at most the p99 limit plus a second.
    tokio::time::sleep(Duration::from_millis(args.p99_limit_ms) + Duration::from_secs(1)).await;
    let cpu_after = cpu_ticks(&args.cpu_pids)?;
    // Clock ticks are 10 ms.
    let mut cpu_us_per_event = std::collections::BTreeMap::new();
    for ((name, a), (_, b)) in cpu_before.into_iter().zip(cpu_after) {
        *cpu_us_per_event.entry(name).or_insert(0.0) +=
            (b - a) as f64 * 10_000.0 / sent.max(1) as f64;
    }
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
            refine,
            round: args.round,
            cpu_us_per_event,
        }
    };
    eprintln!(
        "{}rate {rate}/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, lost {}, duplicated {}, CPU µs/event {:?}",
        if refine { "refine: " } else { "" },
        step.achieved_rate,
        step.p50_ms,
        step.p99_ms,
        step.p999_ms,
        step.lost,
        step.duplicated,
        step.cpu_us_per_event
    );
    println!("RESULT {}", serde_json::to_string(&step)?);
    Ok(step)
}

/// The rates to try between `held` (the highest that held) and `missed`
/// (the first that missed), ascending and geometrically spaced: adjacent
/// rates, `held` and `missed` included, at most `gap` apart, unless that
/// takes more than `max` rates (then `max`, evenly spread).
fn refine_rates(held: u64, missed: u64, gap: f64, max: usize) -> Vec<u64> {
    if held == 0 || missed <= held || gap <= 1.0 || max == 0 {
        return Vec::new();
    }
    let span = missed as f64 / held as f64;
    let parts = ((span.ln() / gap.ln()).ceil() as usize).clamp(1, max + 1);
    let factor = span.powf(1.0 / parts as f64);
    let mut rates: Vec<u64> = (1..parts)
        .map(|k| (held as f64 * factor.powi(k as i32)).round() as u64)
        .filter(|&r| r > held && r < missed)
        .collect();
    rates.dedup();
    rates
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
        // Publishing starts on another connection as soon as this returns:
        // every SUB must have reached the server's interest by then, or
        // the first events to users it has not registered yet are dropped
        // (and counted lost). `flush` only writes the SUBs to the socket;
        // a message a connection sends itself after them comes back only
        // once the server has processed them.
        let started = Instant::now();
        for client in &clients {
            interest_registered(client).await?;
        }
        eprintln!(
            "NATS registered {} subscriptions in {:.1} ms after they were written",
            args.users,
            started.elapsed().as_secs_f64() * 1000.0
        );
        return Ok(readers);
    }
    let request = |i| target.sse_request(&format!("bench-{i}"), None);
    let on_data = |_| {
        let tally = tally.clone();
        move |data: &[u8]| tally.lock().unwrap().record(data)
    };
    let connecting = target.peer.connecting();
    crate::stream::open_many(
        target.edge,
        connecting,
        args.users,
        args.sources,
        request,
        on_data,
    )
    .await
}

/// Returns once the server has processed everything `client` sent
/// before: a message to a fresh inbox the client follows comes back only
/// after the server read the SUBs written ahead of it.
async fn interest_registered(client: &async_nats::Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut probe = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    client.flush().await?;
    tokio::time::timeout(Duration::from_secs(30), probe.next())
        .await
        .context("NATS did not echo the interest probe within 30 s")?
        .context("the interest probe's subscription ended")?;
    Ok(())
}

async fn nats_clients(url: &str, count: usize) -> anyhow::Result<Vec<async_nats::Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(async_nats::connect(url).await?);
    }
    Ok(clients)
}

/// CPU ticks of each named process (a name may count several), and of
/// this load generator as `load`: what publishing and reading cost the
/// machine is part of what each system leaves for itself.
fn cpu_ticks(pids: &[(String, u32)]) -> anyhow::Result<Vec<(String, u64)>> {
    let load = ("load".to_owned(), std::process::id());
    pids.iter()
        .chain(std::iter::once(&load))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rate at most `gap` above the one before, `held` and `missed`
    /// included.
    fn spaced(held: u64, rates: &[u64], missed: u64, gap: f64) -> bool {
        let all: Vec<u64> = [held]
            .into_iter()
            .chain(rates.iter().copied())
            .chain([missed])
            .collect();
        all.windows(2)
            .all(|w| w[0] < w[1] && w[1] as f64 <= w[0] as f64 * gap * 1.001)
    }

    #[test]
    fn a_doubling_is_refined_to_rates_ten_percent_apart() {
        let rates = refine_rates(20_000, 40_000, 1.1, 12);
        assert_eq!(rates.len(), 7, "{rates:?}");
        assert!(spaced(20_000, &rates, 40_000, 1.1), "{rates:?}");
        assert_eq!(rates[0], 21_810);
    }

    #[test]
    fn a_wider_gap_takes_more_rates_but_never_more_than_the_bound() {
        let rates = refine_rates(2_000, 5_000, 1.1, 12);
        assert_eq!(rates.len(), 9, "{rates:?}");
        assert!(spaced(2_000, &rates, 5_000, 1.1), "{rates:?}");
        let capped = refine_rates(1_000, 160_000, 1.1, 12);
        assert_eq!(capped.len(), 12, "{capped:?}");
        assert!(capped.windows(2).all(|w| w[0] < w[1]), "{capped:?}");
        assert!(*capped.last().unwrap() < 160_000);
    }

    #[test]
    fn nothing_to_refine_without_a_held_rate_or_room() {
        assert!(refine_rates(0, 1_000, 1.1, 12).is_empty());
        assert!(refine_rates(1_000, 1_000, 1.1, 12).is_empty());
        assert!(refine_rates(1_000, 1_050, 1.1, 12).is_empty());
        assert!(refine_rates(1_000, 2_000, 1.1, 0).is_empty());
        assert!(refine_rates(1_000, 2_000, 1.0, 12).is_empty());
    }

    #[test]
    fn small_rates_do_not_repeat() {
        let rates = refine_rates(10, 12, 1.01, 12);
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
        assert_eq!(rates, vec![11]);
    }
}
