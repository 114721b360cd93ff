//! What a receipt costs. herald-publish answers online status from its own
//! presence state, without a network call; the alternative would be one
//! request/reply to herald-presence per Publish. This measures, in one
//! run, a persisted Publish to one user (receipt included) against that
//! round trip alone, so the ratio says what asking presence would add.

use std::time::Instant;

use hdrhistogram::Histogram;
use herald_proto::v1::{
    GetPresenceRequest, PublishRequest, publish_request::Target as PublishTarget,
};
use prost::Message;

use crate::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Calls of each kind, one after another.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// NATS URL, for the presence round trip.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let mut client = target.herald_publisher().await?;
    let nats = async_nats::connect(&args.nats_url).await?;
    let deadline = Instant::now() + target.timeout;
    let mut publishes = micros()?;
    let mut lookups = micros()?;
    let query = GetPresenceRequest {
        user_ids: vec!["bench-receipts".to_owned()],
    }
    .encode_to_vec();
    for i in 0..args.calls {
        if Instant::now() > deadline {
            break;
        }
        let request = PublishRequest {
            target: Some(PublishTarget::users(["bench-receipts"])),
            data: format!("receipt {i}"),
            ..Default::default()
        };
        let started = Instant::now();
        let response = client.publish(request).await?.into_inner();
        publishes.saturating_record(started.elapsed().as_micros() as u64);
        anyhow::ensure!(response.receipts.len() == 1, "one receipt expected");

        let started = Instant::now();
        nats.request("herald.presence.query", query.clone().into())
            .await?;
        lookups.saturating_record(started.elapsed().as_micros() as u64);
    }
    let (publish, lookup) = (percentiles(&publishes), percentiles(&lookups));
    println!("call                          p50 µs   p99 µs");
    println!(
        "Publish (receipt included)  {:>8} {:>8}",
        publish.0, publish.1
    );
    println!(
        "presence round trip         {:>8} {:>8}",
        lookup.0, lookup.1
    );
    println!(
        "a presence round trip per Publish would add {:.0}% at p50 and {:.0}% at p99",
        100.0 * lookup.0 as f64 / publish.0.max(1) as f64,
        100.0 * lookup.1 as f64 / publish.1.max(1) as f64
    );
    Ok(())
}

/// Call times in microseconds, up to a minute.
fn micros() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// p50 and p99, in microseconds.
fn percentiles(calls: &Histogram<u64>) -> (u64, u64) {
    (calls.value_at_quantile(0.50), calls.value_at_quantile(0.99))
}
