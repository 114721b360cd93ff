//! What the scale run publishes: a topic burst, and unicast at a rate.
//! Event data is `<kind> <seq> <sent µs>` (see `scale_agent`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Target;
use crate::scale_agent::MAX_TOPIC_EVENTS;
use crate::scale_args::Args;

/// Publishes `--fanout-events` to each topic, numbered from 0 per topic,
/// as fast as `--publishers` concurrent calls go. Returns how many went
/// out; any failure ends the run.
pub(crate) async fn fan_out_burst(target: &Target, args: &Args) -> anyhow::Result<u64> {
    anyhow::ensure!(
        args.fanout_events <= MAX_TOPIC_EVENTS,
        "--fanout-events is at most {MAX_TOPIC_EVENTS}"
    );
    let topics = args.topics.max(1) as u64;
    let total = args.fanout_events * topics;
    let publisher = target.publisher().await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.publishers.min(total) {
        let (mut publisher, next) = (publisher.clone(), next.clone());
        tasks.spawn(async move {
            let mut sent = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(sent);
                }
                let (topic, seq) = (n % topics, n / topics);
                let data = format!("t {seq} {}", crate::now_micros());
                publisher
                    .publish_topic(&format!("scale-{topic}"), data)
                    .await?;
                sent += 1;
            }
        });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += done??;
    }
    Ok(sent)
}

/// Publishes persisted events to random users at `rate` for `--secs`,
/// numbered from 0; returns (sent, errors, seconds taken).
pub(crate) async fn unicast_at(
    target: &Target,
    args: &Args,
    rate: u64,
) -> anyhow::Result<(u64, u64, f64)> {
    let total = rate * args.secs;
    let callers = args.publishers.min(total).max(1);
    let publisher = target.publisher().await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs) + target.timeout;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (mut publisher, next, users) = (publisher.clone(), next.clone(), args.streams);
        tasks.spawn(async move {
            let (mut sent, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                // Event `seq` is due at its own time: callers share one pace.
                let due = started + Duration::from_secs_f64(seq as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let user = format!("scale-{}", fastrand::usize(0..users));
                let data = format!("u {seq} {}", crate::now_micros());
                match publisher.publish_user(&user, data, false).await {
                    Ok(()) => sent += 1,
                    Err(_) => errors += 1,
                }
            }
            (sent, errors)
        });
    }
    let (mut sent, mut errors) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (s, e) = done?;
        sent += s;
        errors += e;
    }
    Ok((sent, errors, started.elapsed().as_secs_f64()))
}
