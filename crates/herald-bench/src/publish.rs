//! Ephemeral against persisted, in one run: publish throughput and
//! publish→deliver latency through one edge to one stream.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_proto::v1::{PublishRequest, publish_request::Target as PublishTarget};

use crate::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events per mode.
    #[arg(long, default_value_t = 5000)]
    events: u64,
    /// Concurrent publish calls.
    #[arg(long, default_value_t = 8)]
    publishers: u64,
}

/// What one mode measured.
struct Figures {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
    received: u64,
}

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let ephemeral = measure(target, args, true).await?;
    let persisted = measure(target, args, false).await?;
    println!("mode        publishes/s   p50 µs   p99 µs   received");
    for (name, f) in [("ephemeral", &ephemeral), ("persisted", &persisted)] {
        println!(
            "{name:<10} {:>12.0} {:>8} {:>8} {:>10}",
            f.per_second, f.p50_us, f.p99_us, f.received
        );
    }
    println!(
        "persisted/ephemeral: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
        persisted.per_second / ephemeral.per_second,
        persisted.p50_us as f64 / ephemeral.p50_us.max(1) as f64,
        persisted.p99_us as f64 / ephemeral.p99_us.max(1) as f64
    );
    Ok(())
}

async fn measure(target: &Target, args: &Args, ephemeral: bool) -> anyhow::Result<Figures> {
    let user = format!(
        "bench-{}",
        if ephemeral { "ephemeral" } else { "persisted" }
    );
    let request = target.sse_request(&user, None)?;
    let mut stream =
        crate::stream::open(target.edge, IpAddr::from([127, 0, 0, 1]), &request).await?;
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let sink = latencies.clone();
    let reader = tokio::spawn(async move {
        crate::stream::for_each_data(&mut stream, |data| {
            let sent = std::str::from_utf8(data)
                .ok()
                .and_then(|s| s.split(' ').nth(1)?.parse::<u64>().ok());
            if let Some(sent) = sent {
                let latency = crate::now_micros().saturating_sub(sent).max(1);
                sink.lock().unwrap().saturating_record(latency);
            }
        })
        .await;
    });

    let client = target.herald_publisher().await?;
    let started = Instant::now();
    let per_task = args.events / args.publishers;
    let mut tasks = Vec::new();
    for t in 0..args.publishers {
        let mut client = client.clone();
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let request = PublishRequest {
                    target: Some(PublishTarget::users([&user])),
                    data: format!("{} {}", t * per_task + i, crate::now_micros()),
                    ephemeral,
                    ..Default::default()
                };
                client.publish(request).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let per_second = (per_task * args.publishers) as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + target.timeout;
    while latencies.lock().unwrap().len() < per_task * args.publishers && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader.abort();
    let latencies = latencies.lock().unwrap();
    Ok(Figures {
        per_second,
        p50_us: latencies.value_at_quantile(0.50),
        p99_us: latencies.value_at_quantile(0.99),
        received: latencies.len(),
    })
}
