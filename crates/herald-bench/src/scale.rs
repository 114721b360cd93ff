//! The scale run: `--streams` SSE streams over several edges, held by one
//! load-generator process per edge (`scale-agent`, spawned from this
//! binary). Phases, one JSON line each after `RESULT `: open (rate,
//! errors); idle through one or two heartbeat intervals (memory per
//! stream of the edges and load generators, CPU); a
//! topic fan-out burst (deliveries/s, p99, lost); a unicast ramp to random
//! users (achieved rate, p99, lost per step). Then one summary line,
//! `scale: <streams> streams, <KiB> KiB/stream, fan-out <deliveries/s> p99
//! <ms>, unicast <events/s> p99 <ms>, lost <n>`.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Target;
use crate::scale_agent::topic_of;
use crate::scale_agents::{Agents, Merged};
use crate::scale_args::Args;
use crate::scale_publish::{fan_out_burst, unicast_at};

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let cpu = crate::scale_agents::CpuGroups::new(args)?;
    let pss_before = crate::fanout::pss_kib(&args.edge_pids)?;
    let open_ticks = cpu.ticks()?;
    let started = Instant::now();
    let mut agents = Agents::spawn(target, args).await?;
    let opened = agents.opened();
    let open_secs = started.elapsed().as_secs_f64();
    emit(&serde_json::json!({
        "phase": "open", "streams": args.streams, "opened": opened.opened,
        "errors": opened.failed, "retried": opened.retried, "first_error": opened.first_error,
        "edges": args.edges.len(), "agents": agents.len(), "secs": open_secs,
        "per_sec": opened.opened as f64 / open_secs,
        "cpu_percent": cpu.percent_since(&open_ticks, open_secs)?,
    }))?;
    anyhow::ensure!(
        opened.opened > 0,
        "no stream opened: {}",
        opened.first_error.unwrap_or_default()
    );

    let kib = idle(args, &mut agents, &cpu, pss_before, opened.opened).await?;
    let fanout = fanout(target, args, &mut agents, &cpu).await?;
    let (unicast, unicast_lost) = unicast(target, args, &mut agents, &cpu).await?;
    let lost = fanout.lost + unicast_lost + opened.failed;
    println!(
        "scale: {} streams, {kib:.1} KiB/stream, fan-out {:.0} p99 {:.1}, unicast {:.0} p99 {:.1}, lost {lost}",
        opened.opened, fanout.per_sec, fanout.p99_ms, unicast.0, unicast.1
    );
    agents.quit().await;
    Ok(())
}

/// Longest wait for a phase's deliveries after its last publish: late
/// enough that a slow delivery is not counted lost, short enough that a
/// lost one does not stall the run.
const WAIT: Duration = Duration::from_secs(30);

fn emit(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("RESULT {}", serde_json::to_string(value)?);
    Ok(())
}

/// Holds every stream idle through `--idle-heartbeats` heartbeat
/// intervals (and a second more: the edges beat one slot of streams a
/// second); returns the edges' KiB per stream. Reports the memory of the
/// edges, the load generators (all of it, per stream), NATS and
/// herald-publish, and the streams that got the heartbeats.
async fn idle(
    args: &Args,
    agents: &mut Agents,
    cpu: &crate::scale_agents::CpuGroups,
    pss_before: u64,
    streams: u64,
) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pss = crate::fanout::pss_kib(&args.edge_pids)?;
    let kib = pss.saturating_sub(pss_before) as f64 / streams as f64;
    let load_kib = crate::fanout::pss_kib(&agents.pids())?;
    agents.mark(0).await?;
    let secs = args.idle_heartbeats * args.heartbeat_secs + 1;
    let ticks = cpu.ticks()?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let report = agents.report().await?;
    let beaten = match args.idle_heartbeats {
        1 => report.one_heartbeat,
        _ => report.two_heartbeats,
    };
    emit(&serde_json::json!({
        "phase": "idle", "secs": secs, "alive": report.alive,
        "heartbeats_each": args.idle_heartbeats, "heartbeaten": beaten,
        "one_heartbeat": report.one_heartbeat, "two_heartbeats": report.two_heartbeats,
        "kib_per_stream": kib, "edge_pss_mib": pss / 1024,
        "load_pss_mib": load_kib / 1024, "load_kib_per_stream": load_kib as f64 / streams as f64,
        "pss_mib": cpu.pss_mib()?, "memory": crate::scale_agents::meminfo(),
        "cpu_percent": cpu.percent_since(&ticks, secs as f64)?,
    }))?;
    Ok(kib)
}

/// What the fan-out burst measured, for the summary.
struct FanOut {
    per_sec: f64,
    p99_ms: f64,
    lost: u64,
}

/// Publishes `--fanout-events` to every topic at once and waits until each
/// follower has them all (or the timeout).
async fn fanout(
    target: &Target,
    args: &Args,
    agents: &mut Agents,
    cpu: &crate::scale_agents::CpuGroups,
) -> anyhow::Result<FanOut> {
    let followers = (0..args.streams)
        .filter(|&i| topic_of(i, args.topics).is_some())
        .count() as u64;
    agents.mark(0).await?;
    let ticks = cpu.ticks()?;
    let started_us = crate::now_micros();
    let started = Instant::now();
    let sent = fan_out_burst(target, args).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    // Each topic's events reach its followers; the topics split them evenly.
    let expected = sent / args.topics.max(1) as u64 * followers;
    // A million streams' burst is ten times 100,000's: so is its drain.
    let wait = WAIT + Duration::from_secs(expected / 200_000);
    let report = agents
        .wait(target.timeout.min(wait), |r| r.topic_deliveries >= expected)
        .await?;
    let secs = (report.last_topic_us.saturating_sub(started_us)) as f64 / 1e6;
    let result = FanOut {
        per_sec: report.topic_deliveries as f64 / secs.max(1e-6),
        p99_ms: report.topic_ms(0.99),
        lost: expected.saturating_sub(report.topic_deliveries),
    };
    emit(&serde_json::json!({
        "phase": "fanout", "topics": args.topics, "events": sent, "followers": followers,
        "expected": expected, "deliveries": report.topic_deliveries, "lost": result.lost,
        "duplicated": report.topic_duplicates, "publish_secs": publish_secs, "secs": secs,
        "deliveries_per_sec": result.per_sec, "p50_ms": report.topic_ms(0.5),
        "p99_ms": result.p99_ms, "p999_ms": report.topic_ms(0.999),
        "cpu_percent": cpu.percent_since(&ticks, started.elapsed().as_secs_f64())?,
    }))?;
    Ok(result)
}

/// Events to random users at each `--rates` step, until a step does not
/// hold. Returns the best step held (rate, p99), or the first step's if
/// none held, and the events lost over all steps.
async fn unicast(
    target: &Target,
    args: &Args,
    agents: &mut Agents,
    cpu: &crate::scale_agents::CpuGroups,
) -> anyhow::Result<((f64, f64), u64)> {
    let (mut best, mut first, mut lost) = (None, None, 0);
    for &rate in &args.rates {
        let capacity = (rate * args.secs) as usize + 1;
        agents.mark(capacity).await?;
        let ticks = cpu.ticks()?;
        let started = Instant::now();
        let (sent, errors, publish_secs) = unicast_at(target, args, rate).await?;
        let report = agents
            .wait(target.timeout.min(WAIT), |r| r.unicast_received >= sent)
            .await?;
        let step_lost = sent.saturating_sub(report.unicast_received);
        lost += step_lost;
        let (achieved, p99) = (sent as f64 / publish_secs, report.unicast_ms(0.99));
        emit(&serde_json::json!({
            "phase": "unicast", "target_rate": rate, "achieved_rate": achieved, "sent": sent,
            "publish_errors": errors, "received": report.unicast_received, "lost": step_lost,
            "duplicated": report.unicast_duplicates, "p50_ms": report.unicast_ms(0.5),
            "p99_ms": p99, "p999_ms": report.unicast_ms(0.999),
            "cpu_percent": cpu.percent_since(&ticks, started.elapsed().as_secs_f64())?,
        }))?;
        first.get_or_insert((achieved, p99));
        if !crate::step_held(rate, achieved, p99, args.p99_limit_ms, step_lost) {
            break;
        }
        best = Some((achieved, p99));
    }
    let chosen = best.or(first).context("no unicast rate given")?;
    Ok((chosen, lost))
}

impl Merged {
    fn topic_ms(&self, q: f64) -> f64 {
        self.topic_latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn unicast_ms(&self, q: f64) -> f64 {
        self.unicast_latency.value_at_quantile(q) as f64 / 1000.0
    }
}
