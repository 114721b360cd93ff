//! `regions`: two regions of a supercluster, an edge and herald-publish in
//! each (`--edge`/`--publish` in region a, `--second-edge`/`--second-publish`
//! in region b), with a WAN delay between them (bench/regions.sh). Opens
//! `--users` streams on each edge (each connect timed to its opening),
//! then publishes persisted events at `--rate`, timing publish calls and
//! deliveries: within a, from a to b's users, within b. Reads region a's
//! gateway counters (`--gatewayz`) around the cross-region phase (gateway
//! messages per event delivered in b) and around events for users no
//! stream follows (what crosses without interest), beside an idle window
//! of the same length (what crosses anyway).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};

use crate::peer::{HeraldClient, Kind};
use crate::{Target, now_micros};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Region b's edge.
    #[arg(long)]
    second_edge: SocketAddr,
    /// Region b's herald-publish (gRPC URL).
    #[arg(long)]
    second_publish: String,
    /// Region a's NATS monitoring `/gatewayz` URL.
    #[arg(long)]
    gatewayz: String,
    /// Region b's name, as region a's gateways call it.
    #[arg(long, default_value = "b")]
    to_region: String,
    /// Streams on each edge, one user each.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Events in each phase.
    #[arg(long, default_value_t = 1_000)]
    events: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

/// Percentiles of one series, in milliseconds.
#[derive(Debug, serde::Serialize)]
struct Spread {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    scenario: &'static str,
    users_per_region: usize,
    connect_a: Spread,
    connect_b: Spread,
    deliver_in_a: Spread,
    deliver_a_to_b: Spread,
    deliver_in_b: Spread,
    publish_in_a: Spread,
    publish_in_b: Spread,
    gateway_msgs_per_event_to_b: f64,
    gateway_msgs_without_interest: u64,
    /// Over as long with no event published: what crosses anyway.
    gateway_msgs_idle: u64,
    events_without_interest: usize,
    lost: usize,
}

/// Delivery delays (µs) by phase; an event's data is `<phase> <sent µs>`.
type Deliveries = Arc<Mutex<[Vec<u64>; 3]>>;

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    if target.peer != Kind::Herald {
        bail!("regions runs Herald: --peer herald");
    }
    let deliveries: Deliveries = Arc::default();
    let connect_a = open(target, target.edge, "ra", args, &deliveries).await?;
    let connect_b = open(target, args.second_edge, "rb", args, &deliveries).await?;
    eprintln!("{} streams open in each region", args.users);
    // Interest crosses the gateways a moment after the subscriptions.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let b_target = Target {
        publish: args.second_publish.clone(),
        ..target.clone()
    };
    let (mut in_a, mut in_b) = (
        target.herald_publisher().await?,
        b_target.herald_publisher().await?,
    );
    let publish_in_a = phase(&mut in_a, 0, "ra", args).await?;
    settle(&deliveries, 0, args.events, target.timeout).await;
    let before = gateway_out(&args.gatewayz, &args.to_region).await?;
    phase(&mut in_a, 1, "rb", args).await?;
    settle(&deliveries, 1, args.events, target.timeout).await;
    let crossed = gateway_out(&args.gatewayz, &args.to_region).await? - before;
    let publish_in_b = phase(&mut in_b, 2, "rb", args).await?;
    settle(&deliveries, 2, args.events, target.timeout).await;

    // What crosses anyway (presence heartbeats, JetStream's own
    // traffic) over as long as the next phase takes, to tell apart.
    let window = Duration::from_secs_f64(args.events as f64 / args.rate as f64 + 1.0);
    let before = gateway_out(&args.gatewayz, &args.to_region).await?;
    tokio::time::sleep(window).await;
    let idle = gateway_out(&args.gatewayz, &args.to_region).await? - before;
    let before = gateway_out(&args.gatewayz, &args.to_region).await?;
    let started = Instant::now();
    phase(&mut in_a, 3, "nobody", args).await?;
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let unwanted = gateway_out(&args.gatewayz, &args.to_region).await? - before;

    let delivered = deliveries.lock().unwrap().clone();
    let lost = delivered
        .iter()
        .map(|d| args.events - d.len().min(args.events))
        .sum();
    let figures = Figures {
        scenario: "regions",
        users_per_region: args.users,
        connect_a: spread(connect_a),
        connect_b: spread(connect_b),
        deliver_in_a: spread(delivered[0].clone()),
        deliver_a_to_b: spread(delivered[1].clone()),
        deliver_in_b: spread(delivered[2].clone()),
        publish_in_a: spread(publish_in_a),
        publish_in_b: spread(publish_in_b),
        gateway_msgs_per_event_to_b: crossed as f64 / delivered[1].len().max(1) as f64,
        gateway_msgs_without_interest: unwanted,
        gateway_msgs_idle: idle,
        events_without_interest: args.events,
        lost,
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Opens `users` streams on `edge` for users `<prefix>-<i>`, 64 at a
/// time; each delivery is timed into its phase. Returns each connect's
/// time to its opening (µs).
async fn open(
    target: &Target,
    edge: SocketAddr,
    prefix: &str,
    args: &Args,
    deliveries: &Deliveries,
) -> anyhow::Result<Vec<u64>> {
    let connect = |i: usize| {
        let source = crate::stream::source(i, args.sources);
        let request = target.sse_request(&format!("{prefix}-{i}"), None);
        let deliveries = deliveries.clone();
        async move {
            let started = Instant::now();
            let mut sse = crate::stream::open(edge, source, &request?)
                .await
                .with_context(|| format!("stream {i} on {edge}"))?;
            let took = started.elapsed().as_micros() as u64;
            tokio::spawn(async move {
                crate::stream::for_each_data(&mut sse, |data| record(&deliveries, data)).await;
            });
            anyhow::Ok(took)
        }
    };
    let opening = futures::stream::iter((0..args.users).map(connect)).buffer_unordered(64);
    opening.try_collect().await
}

fn record(deliveries: &Deliveries, data: &[u8]) {
    let Some((phase, sent)) = std::str::from_utf8(data)
        .ok()
        .and_then(|d| d.split_once(' '))
    else {
        return;
    };
    let (Ok(phase), Ok(sent)) = (phase.parse::<usize>(), sent.parse::<u64>()) else {
        return;
    };
    if let Some(series) = deliveries.lock().unwrap().get_mut(phase) {
        series.push(now_micros().saturating_sub(sent));
    }
}

/// Publishes `--events` persisted events at `--rate` to random users
/// `<prefix>-<i>`, one call at a time; returns each call's time (µs).
async fn phase(
    client: &mut HeraldClient,
    phase: usize,
    prefix: &str,
    args: &Args,
) -> anyhow::Result<Vec<u64>> {
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(args.events);
    for n in 0..args.events {
        tokio::time::sleep_until(started + interval * n as u32).await;
        let request = herald_proto::v1::PublishRequest {
            target: Some(herald_proto::v1::publish_request::Target::users([format!(
                "{prefix}-{}",
                fastrand::usize(..args.users)
            )])),
            data: format!("{phase} {}", now_micros()),
            ..Default::default()
        };
        let call = Instant::now();
        client.publish(request).await?;
        calls.push(call.elapsed().as_micros() as u64);
    }
    Ok(calls)
}

/// Waits until phase `phase` has `events` deliveries, or `timeout`.
async fn settle(deliveries: &Deliveries, phase: usize, events: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while deliveries.lock().unwrap()[phase].len() < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages region a's server sent over its gateway to `to` so far.
async fn gateway_out(url: &str, to: &str) -> anyhow::Result<u64> {
    let gatewayz: serde_json::Value = reqwest::get(url).await?.json().await?;
    let sent = &gatewayz["outbound_gateways"][to]["connection"]["out_msgs"];
    sent.as_u64().context("no outbound gateway in /gatewayz")
}

fn spread(mut micros: Vec<u64>) -> Spread {
    micros.sort_unstable();
    let at = |q: f64| {
        let i = ((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1));
        micros.get(i).map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    Spread {
        count: micros.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: micros.last().map_or(f64::NAN, |&us| us as f64 / 1000.0),
    }
}
